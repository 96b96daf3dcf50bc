"""Where the tests find real Kafka and Redis, in this order:

1. the services named by KAFKA_BOOTSTRAP_SERVERS / REDIS_URL;
2. containers, when a Docker daemon answers (testcontainers);
3. the project's local processes (infra/kafka.sh, infra/redis.sh), started on demand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KAFKA_IMAGE = "apache/kafka:4.1.1"
REDIS_IMAGE = "redis:7.4"


@dataclass(frozen=True)
class Endpoint:
    address: str
    origin: str  # "environment", "testcontainers" or "local"


def docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        return bool(client.ping())
    except Exception:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(script: str, action: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "infra" / script), action],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        output = f"{result.stdout}{result.stderr}".strip()
        raise RuntimeError(f"infra/{script} {action} failed: {output}")


def _local(script: str) -> None:
    _run(script, "up")


@contextlib.contextmanager
def kafka() -> Iterator[Endpoint]:
    if address := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield Endpoint(address, "environment")
    elif docker_answers():
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        port = _free_port()
        container = (
            DockerContainer(KAFKA_IMAGE)
            .with_bind_ports(9092, port)
            .with_env("KAFKA_NODE_ID", "1")
            .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
            .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
            .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
            .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
            .with_env(
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
            )
            .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
            .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        )
        with container:
            wait_for_logs(container, "Kafka Server started", timeout=120)
            yield Endpoint(f"127.0.0.1:{port}", "testcontainers")
    else:
        _local("kafka.sh")
        yield Endpoint(f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}", "local")


@contextlib.contextmanager
def redis() -> Iterator[Endpoint]:
    if url := os.environ.get("REDIS_URL"):
        yield Endpoint(url, "environment")
    elif docker_answers():
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        container = (
            DockerContainer(REDIS_IMAGE)
            .with_exposed_ports(6379)
            .with_command("redis-server --appendonly yes")
        )
        with container:
            wait_for_logs(container, "Ready to accept connections", timeout=60)
            port = container.get_exposed_port(6379)
            yield Endpoint(
                f"redis://{container.get_container_host_ip()}:{port}/0", "testcontainers"
            )
    else:
        _local("redis.sh")
        yield Endpoint(f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0", "local")


def restart_local(script: str, action: str) -> None:
    """Stop or start one of the project's local processes (fault tests)."""
    _run(script, action)


SECURE_KAFKA_PORTS = (19094, 19095)  # client (SASL/SCRAM), controller


@contextlib.contextmanager
def secure_kafka(admin_password: str) -> Iterator[str]:
    """A fresh local broker running compose/secure/server.properties (`KAFKA_SECURE=1
    infra/kafka.sh`), formatted with this admin password; stopped afterwards.

    Always the local process: it is the repository's own secured configuration under
    test, so Java and Maven are required (the script says how to install them).
    """
    port, controller_port = SECURE_KAFKA_PORTS
    env = {
        **os.environ,
        "KAFKA_SECURE": "1",
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        "KAP_ADMIN_PASSWORD": admin_password,
    }
    _run("kafka.sh", "down", env)  # a broker left over by an interrupted run
    shutil.rmtree(ROOT / ".infra" / "kafka-secure" / "data", ignore_errors=True)
    _run("kafka.sh", "up", env)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _run("kafka.sh", "down", env)


CLUSTER_STATE = ROOT / ".infra" / "kafka-cluster-tests"


@dataclass(frozen=True)
class KafkaCluster:
    """The local quorum of `KAFKA_NODES=3 infra/kafka.sh` on ports from `base_port`."""

    base_port: int
    nodes: int = 3

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port(n)}" for n in range(1, self.nodes + 1))

    def port(self, node: int) -> int:
        return self.base_port + 2 * (node - 1)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_NODES": str(self.nodes),
            "KAFKA_PORT": str(self.base_port),
            "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
            # Apart from `make cluster-demo`'s cluster, which this fixture wipes otherwise.
            "KAFKA_CLUSTER_STATE": str(CLUSTER_STATE),
        }

    def pid(self, node: int) -> int:
        """The pid of a node the script started (for a fault test's SIGKILL)."""
        pidfile = CLUSTER_STATE / f"node-{node}" / "kafka.pid"
        return int(pidfile.read_text().strip())

    def up(self) -> None:
        """Start every node that is not running (also restarts one that was killed)."""
        _run("kafka.sh", "up", self.env())

    def down(self) -> None:
        _run("kafka.sh", "down", self.env())


@contextlib.contextmanager
def kafka_cluster(base_port: int) -> Iterator[KafkaCluster]:
    """A fresh local three-node quorum (`KAFKA_NODES=3 infra/kafka.sh`), stopped afterwards.

    Always local processes, like secure_kafka: the script's own cluster is under test.
    """
    cluster = KafkaCluster(base_port)
    cluster.down()  # nodes left over by an interrupted run
    shutil.rmtree(CLUSTER_STATE, ignore_errors=True)
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


def local_kafka_version() -> str | None:
    """The version of the locally assembled broker, from its jar's name."""
    libs = ROOT / ".infra" / "kafka" / "libs"
    for jar in sorted(libs.glob("kafka_2.13-*.jar")):
        return jar.stem.removeprefix("kafka_2.13-")
    return None


@dataclass(frozen=True)
class TlsKafka:
    """The local broker of `KAFKA_TLS=1 infra/kafka.sh`: its two listeners and its CA."""

    ssl_bootstrap: str  # TLS only
    sasl_ssl_bootstrap: str  # SASL_SSL: SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN
    ca_file: Path
    user: str
    password: str


@contextlib.contextmanager
def tls_kafka(port: int, user: str, password: str) -> Iterator[TlsKafka]:
    """A fresh TLS broker (new CA, certificate and SCRAM user) on `port` (SSL), `port + 1`
    (SASL_SSL) and `port + 2` (controller); stopped afterwards.

    Always the local process, like secure_kafka: the script's own listeners are under test.
    """
    env = {
        **os.environ,
        "KAFKA_TLS": "1",
        "KAFKA_PORT": str(port),
        "KAFKA_SASL_PORT": str(port + 1),
        "KAFKA_CONTROLLER_PORT": str(port + 2),
        "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        "KAFKA_TLS_USER": user,
        "KAFKA_TLS_PASSWORD": password,
    }
    state = ROOT / ".infra" / "kafka-tls"
    _run("kafka.sh", "down", env)  # a broker left over by an interrupted run
    shutil.rmtree(state, ignore_errors=True)
    _run("kafka.sh", "up", env)
    try:
        yield TlsKafka(
            f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}", state / "certs" / "ca.pem", user, password
        )
    finally:
        _run("kafka.sh", "down", env)
