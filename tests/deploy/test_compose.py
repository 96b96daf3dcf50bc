"""docker-compose.yml cannot run here (no Docker engine), so it is checked instead:
by a real compose implementation's validator, and against what the services read."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chassis.config import ServiceSettings
from chassis.metrics import ServiceMetrics
from ops.acls import PARTNER, PRINCIPALS, password_variable
from services.console.config import Settings as ConsoleSettings
from services.intake.config import Settings as IntakeSettings
from services.notifier.config import Settings as NotifierSettings
from services.scheduler.config import Settings as SchedulerSettings
from services.webhooks.config import Settings as WebhooksSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: dict[str, type[ServiceSettings]] = {
    "intake": IntakeSettings,
    "scheduler": SchedulerSettings,
    "notifier": NotifierSettings,
    "webhooks": WebhooksSettings,
}
# Every process that logs in to a secured Kafka: the services and the console.
KAFKA_CLIENTS: dict[str, type[ServiceSettings]] = {**SETTINGS, "console": ConsoleSettings}


def compose(*args: str) -> str:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is needed to validate docker-compose.yml (make compose-tool)"
    result = subprocess.run(
        [tool, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    return yaml.safe_load(compose("config"))


def env_names(settings: type[ServiceSettings]) -> dict[str, bool]:
    """Every variable the settings read, and whether it is required."""
    return {
        str(field.validation_alias): field.is_required() for field in settings.model_fields.values()
    }


def test_compose_file_is_valid_for_a_real_compose_implementation() -> None:
    compose("config", "--quiet")


def test_cluster_profile_is_valid_with_three_brokers_replication_3_and_min_isr_2() -> None:
    config = yaml.safe_load(
        compose(
            "--env-file", str(ROOT / "compose" / "cluster.env"), "--profile", "cluster", "config"
        )
    )
    brokers = [name for name in config["services"] if name.startswith("kafka")]
    assert sorted(brokers) == ["kafka", "kafka-2", "kafka-3"]
    for name in brokers:
        env = config["services"][name]["environment"]
        assert str(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == "3"
        assert str(env["KAFKA_MIN_INSYNC_REPLICAS"]) == "2"
    assert config["services"]["scheduler"]["environment"]["KAP_TOPIC_REPLICATION_FACTOR"] == "3"


def test_the_local_three_brokers_are_configured_as_the_compose_cluster_profile() -> None:
    """`KAFKA_NODES=3 infra/kafka.sh` renders infra/kafka/cluster.properties.template: its
    replication and group settings must be the compose cluster profile's (KAFKA_X_Y is
    x.y), so the local quorum the tests run keeps data as the one compose deploys.
    Listener names and addresses differ on purpose (loopback ports against hostnames)."""
    config = yaml.safe_load(
        compose(
            "--env-file", str(ROOT / "compose" / "cluster.env"), "--profile", "cluster", "config"
        )
    )
    template = ROOT / "infra" / "kafka" / "cluster.properties.template"
    local = dict(
        line.split("=", 1)
        for line in template.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert local["default.replication.factor"] == "3"
    assert local["min.insync.replicas"] == "2"
    shared = [
        "process.roles",
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "auto.create.topics.enable",
        "group.initial.rebalance.delay.ms",
        "group.coordinator.append.linger.ms",
    ]
    for name in ("kafka", "kafka-2", "kafka-3"):
        env = config["services"][name]["environment"]
        assert len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == 3
        for prop in shared:
            value = str(env["KAFKA_" + prop.upper().replace(".", "_")]).lower()
            assert local[prop] == value, f"{name} {prop}: compose {value}, local {local[prop]}"


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_compose_sets_only_variables_the_service_reads_and_all_it_requires(
    resolved: dict[str, Any], service: str
) -> None:
    given = set(resolved["services"][service]["environment"])
    readable = env_names(SETTINGS[service])
    assert given <= set(readable), f"{service}: compose sets unread {given - set(readable)}"
    required = {name for name, is_required in readable.items() if is_required}
    assert required <= given, f"{service}: compose misses required {required - given}"


def test_the_notifier_signs_measure_links_with_the_secrets_intake_reads_them_with(
    resolved: dict[str, Any],
) -> None:
    secrets = {
        service: resolved["services"][service]["environment"].get("KAP_MEASURE_LINK_SECRETS")
        for service in ("intake", "notifier")
    }
    assert secrets["intake"]
    assert secrets["intake"] == secrets["notifier"]


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_scaled_services_have_no_fixed_names_or_host_ports(
    resolved: dict[str, Any], service: str
) -> None:
    definition = resolved["services"][service]
    assert "container_name" not in definition
    for port in definition.get("ports", []):
        published = port.get("published") if isinstance(port, dict) else None
        assert not published, f"{service} publishes a fixed host port {published}"


def test_services_wait_for_healthy_kafka_and_redis(resolved: dict[str, Any]) -> None:
    for service in SETTINGS:
        depends = resolved["services"][service]["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert "healthcheck" in resolved["services"][service]


def test_monitoring_profile_scrapes_every_service_and_its_dashboard_uses_real_metrics() -> None:
    config = yaml.safe_load(compose("--profile", "monitoring", "config"))
    assert {"prometheus", "grafana"} <= set(config["services"])
    monitoring = ROOT / "compose" / "monitoring"
    scrape = yaml.safe_load((monitoring / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in scrape["scrape_configs"]}
    for service, settings in SETTINGS.items():
        port = settings.model_fields["http_port"].default
        assert jobs[service] == {"names": [service], "type": "A", "port": port}
    dashboard = json.loads(
        (monitoring / "grafana" / "dashboards" / "kap-overview.json").read_text()
    )
    exposed = set(ServiceMetrics("test").exposition().decode().split())
    for panel in dashboard["panels"]:
        expr = panel["targets"][0]["expr"]
        kap_metrics = re.findall(r"kap_[a-z_]+", expr)
        for metric in kap_metrics:
            base = metric.removesuffix("_total")
            assert any(base in token for token in exposed), f"{panel['title']}: {metric}"


SECURE = ROOT / "compose" / "secure"
SERVER_PROPERTIES = SECURE / "server.properties"
ENV_REFERENCE = re.compile(r"\$\{env:(\w+)\}")


def secure_compose(*args: str) -> dict[str, Any]:
    return yaml.safe_load(compose("-f", str(ROOT / "compose" / "secure.yml"), *args, "config"))


def properties(path: Path) -> dict[str, str]:
    """A Java properties file's settings (comments, continuation lines)."""
    text = re.sub(r"\\\n\s*", "", path.read_text())
    pairs = [line.split("=", 1) for line in text.splitlines() if "=" in line]
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def resolved_for(environment: dict[str, Any]) -> dict[str, str]:
    """The broker's settings as a node with this environment reads them."""
    return {
        key: ENV_REFERENCE.sub(lambda m: str(environment[m.group(1)]), value)
        for key, value in properties(SERVER_PROPERTIES).items()
    }


@pytest.fixture(scope="module")
def secured() -> dict[str, Any]:
    return secure_compose()


def test_secure_overlay_gives_every_service_its_own_principal_created_by_kafka_acls(
    secured: dict[str, Any],
) -> None:
    services = secured["services"]
    acls_env = services["kafka-acls"]["environment"]
    assert services["kafka-acls"]["entrypoint"] == ["bash", "/secure/acls.sh"]
    # Every principal but the partner's is a process of this deployment, logging in as itself.
    assert set(PRINCIPALS) - {PARTNER} == set(KAFKA_CLIENTS)
    for service, settings in KAFKA_CLIENTS.items():
        env = services[service]["environment"]
        assert env["KAFKA_SASL_USERNAME"] == service
        assert env["KAFKA_SASL_PASSWORD"] == acls_env[password_variable(service)]
        assert set(env) <= set(env_names(settings))
        assert services[service]["depends_on"]["kafka-acls"] == {
            "condition": "service_completed_successfully"
        }
    assert {password_variable(p) for p in PRINCIPALS} <= set(acls_env)
    script = (SECURE / "acls.sh").read_text()
    for principal in PRINCIPALS:
        assert f'user {principal} "${{{password_variable(principal)}:-' in script


def test_secure_overlay_points_services_and_acls_at_the_scram_listener(
    secured: dict[str, Any],
) -> None:
    broker = resolved_for(secured["services"]["kafka"]["environment"])
    protocol_map = broker["listener.security.protocol.map"]
    protocols = dict(pair.split(":") for pair in protocol_map.split(","))
    advertised = dict(entry.split("://") for entry in broker["advertised.listeners"].split(","))
    scram = {
        address
        for name, address in advertised.items()
        if protocols[name] == "SASL_PLAINTEXT"
        and broker[f"listener.name.{name.lower()}.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    }
    assert scram == {"kafka:19092"}
    for service in KAFKA_CLIENTS:
        env = secured["services"][service]["environment"]
        assert set(env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) <= scram
    assert secured["services"]["kafka-acls"]["environment"]["KAFKA_BOOTSTRAP"] == "kafka:19092"
    # No listener is left unauthenticated, and nothing is allowed without an ACL.
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}
    assert broker["allow.everyone.if.no.acl.found"] == "false"
    assert broker["super.users"] == "User:admin"


def test_secure_nodes_run_the_server_properties_the_local_test_broker_runs() -> None:
    config = secure_compose(
        "--env-file", str(ROOT / "compose" / "cluster.env"), "--profile", "cluster"
    )
    settings = properties(SERVER_PROPERTIES)
    # Security is written in the file; the environment only says where a node runs.
    templated = {key for key, value in settings.items() if ENV_REFERENCE.search(value)}
    assert all(key.endswith(".sasl.jaas.config") for key in templated & security_keys(settings))
    nodes = [name for name in config["services"] if re.fullmatch(r"kafka(-\d)?", name)]
    assert sorted(nodes) == ["kafka", "kafka-2", "kafka-3"]
    volumes = set()
    for name in nodes:
        node = config["services"][name]
        assert f"{SECURE}:/secure:ro" in node["volumes"]
        data = [v for v in node["volumes"] if v.endswith(":/var/lib/kafka/data:rw")]
        volumes |= {v.split(":")[0] for v in data}
        start = node["entrypoint"][-1]
        assert "kafka-storage.sh format" in start
        assert "--config /secure/server.properties" in start
        assert "name=admin,password=$$KAP_ADMIN_PASSWORD" in start
        assert "exec /opt/kafka/bin/kafka-server-start.sh /secure/server.properties" in start
        assert "/secure/admin.properties" in node["healthcheck"]["test"][-1]
        resolved_for(node["environment"])  # every variable the file reads is set
    assert len(volumes) == 3
    assert not volumes & {"kafka-data", "kafka-2-data", "kafka-3-data"}
    bootstrap = config["services"]["kafka-acls"]["environment"]["KAFKA_BOOTSTRAP"]
    assert bootstrap == "kafka:19092,kafka-2:19092,kafka-3:19092"
    # The local secured broker (infra/kafka.sh, KAFKA_SECURE=1) runs the same file
    # and sets every variable it reads.
    script = (ROOT / "infra" / "kafka.sh").read_text()
    assert 'CONFIG="$REPO_ROOT/compose/secure/server.properties"' in script
    for variable in set(ENV_REFERENCE.findall(SERVER_PROPERTIES.read_text())):
        assert re.search(rf"\b{variable}=", script), variable


def security_keys(settings: dict[str, str]) -> set[str]:
    markers = ("sasl", "security", "authorizer", "super.users", "allow.everyone", "listener.name")
    return {key for key in settings if any(marker in key for marker in markers)}


def test_the_console_reads_what_compose_sets_and_waits_for_the_services(
    resolved: dict[str, Any],
) -> None:
    console = resolved["services"]["console"]
    readable = env_names(ConsoleSettings)
    assert set(console["environment"]) <= set(readable)
    assert {n for n, required in readable.items() if required} <= set(console["environment"])
    for service in ("intake", "scheduler", "notifier"):
        assert console["depends_on"][service]["condition"] == "service_healthy"
        assert console["environment"][f"KAP_CONSOLE_{service.upper()}_URL"].startswith(
            f"http://{service}:"
        )
    assert "8005/readyz" in " ".join(console["healthcheck"]["test"])
    ConsoleSettings(**{k: str(v) for k, v in console["environment"].items()})  # type: ignore[arg-type]


def test_the_console_signs_staff_tokens_with_the_secrets_every_service_verifies_with(
    resolved: dict[str, Any],
) -> None:
    secrets = {
        service: resolved["services"][service]["environment"].get("KAP_STAFF_TOKEN_SECRETS")
        for service in ("console", "intake", "scheduler", "notifier", "webhooks")
    }
    assert secrets["console"]
    assert set(secrets.values()) == {secrets["console"]}
