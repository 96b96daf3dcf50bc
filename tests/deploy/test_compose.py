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
from services.intake.config import Settings as IntakeSettings
from services.notifier.config import Settings as NotifierSettings
from services.scheduler.config import Settings as SchedulerSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: dict[str, type[ServiceSettings]] = {
    "intake": IntakeSettings,
    "scheduler": SchedulerSettings,
    "notifier": NotifierSettings,
}


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


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_compose_sets_only_variables_the_service_reads_and_all_it_requires(
    resolved: dict[str, Any], service: str
) -> None:
    given = set(resolved["services"][service]["environment"])
    readable = env_names(SETTINGS[service])
    assert given <= set(readable), f"{service}: compose sets unread {given - set(readable)}"
    required = {name for name, is_required in readable.items() if is_required}
    assert required <= given, f"{service}: compose misses required {required - given}"


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
