"""Settings every service reads from its environment (pydantic-settings).

Defaults work against the local infrastructure (`make infra-up`); docker-compose
sets the same variables. tests/test_compose.py keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.topics import ALL, LIFECYCLE_PARTITIONS

# Works locally and in tests; a deployment sets its own (docker-compose passes one through).
DEV_MEASURE_LINK_SECRET = "kap-dev-only-measure-link-secret"  # noqa: S105 (dev only)
DEV_STAFF_TOKEN_SECRET = "dev-staff-token-secret-change-me-0123456789"  # noqa: S105 - a dev default, warned about


KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class ServiceSettings(BaseSettings):
    """What every service reads; a service's own Settings adds to it."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    # `cluster`: REDIS_URL names any node of a Redis Cluster (TLS and AUTH from the URL).
    redis_mode: Literal["standalone", "cluster"] = Field(
        default="standalone", validation_alias="REDIS_MODE"
    )
    # One process's Redis connections (standalone; a cluster client keeps its own per
    # node). A task wanting one when all are taken waits up to `redis_pool_timeout_s`
    # (chassis.redis_client): redis-py's own pool of 100 raised instead, and a burst of
    # concurrent steps failed deliveries and stalled batches (issue 19).
    redis_max_connections: int = Field(
        default=128, ge=8, validation_alias="KAP_REDIS_MAX_CONNECTIONS"
    )
    redis_pool_timeout_s: float = Field(
        default=10.0, gt=0, validation_alias="KAP_REDIS_POOL_TIMEOUT_S"
    )
    http_host: str = Field(default="127.0.0.1", validation_alias="KAP_HTTP_HOST")
    http_port: int = Field(default=8000, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    clinics_file: Path = Field(
        default=Path("config/clinics.json"), validation_alias="KAP_CLINICS_FILE"
    )
    # Where the clinics come from: the file above (read and re-read by every pod), or the
    # compacted registry topic (chassis.clinic_registry), written by `kapctl clinics`
    # and the scheduler's admin API. `file` stays the default until deployments have
    # imported their file (`kapctl clinics import`).
    clinics_source: Literal["file", "topic"] = Field(
        default="file", validation_alias="KAP_CLINICS_SOURCE"
    )
    clinics_topic: str = Field(
        default="clinics.registry.v1", min_length=1, validation_alias="KAP_CLINICS_TOPIC"
    )
    # Due work (chassis.due_work): timers and deliveries are found through a due index of
    # this many buckets, each worked by one replica at a time under a lease of
    # `due_lease_ms` (real time: a stopped replica's buckets are taken after it), and
    # every clinic is swept once per `due_sweep_s` for what a lost hint left behind.
    due_buckets: int = Field(default=16, ge=1, le=1024, validation_alias="KAP_DUE_BUCKETS")
    due_lease_ms: int = Field(default=5_000, ge=100, validation_alias="KAP_DUE_LEASE_MS")
    due_sweep_s: float = Field(default=60.0, gt=0, validation_alias="KAP_DUE_SWEEP_S")
    kafka_request_timeout_ms: int = Field(
        default=40_000, ge=1_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
    )
    # How long an event waits in the outbox before the relay takes it for lost by its
    # writer and publishes it (tests shorten it to see an outage end within seconds).
    relay_grace_ms: int = Field(default=30_000, ge=0, validation_alias="KAP_RELAY_GRACE_MS")
    # Kafka security (chassis.kafka.kafka_security turns these into the clients' options).
    # Unset, the protocol is SASL_PLAINTEXT with a SASL login (the secured compose
    # overlay: one principal per service) and PLAINTEXT without, as before it was a setting.
    kafka_security_protocol: KafkaProtocol | None = Field(
        default=None, validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(default=None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias="KAFKA_SASL_PASSWORD"
    )
    # TLS: the broker's certificate is checked against this CA file, or the system's CAs
    # (a managed cluster's public certificate) when unset; cert and key log in by mTLS.
    kafka_ssl_ca_file: FilePath | None = Field(default=None, validation_alias="KAFKA_SSL_CA_FILE")
    kafka_ssl_cert_file: FilePath | None = Field(
        default=None, validation_alias="KAFKA_SSL_CERT_FILE"
    )
    kafka_ssl_key_file: FilePath | None = Field(default=None, validation_alias="KAFKA_SSL_KEY_FILE")
    # Topics (chassis.kafka.configured_topics). Created at start unless a platform team
    # manages them (Terraform, a managed cluster's console): then a service only checks
    # that each exists with the configured partitions, and refuses to start otherwise.
    create_topics: bool = Field(default=True, validation_alias="KAP_CREATE_TOPICS")
    # Partitions of each client-keyed topic when it is created. A topic never changes
    # its count in place: a client's order rests on its key's partition, so a
    # re-partition is a new topic version (docs/production.md, "Re-partitioning").
    topic_partitions: int = Field(
        default=LIFECYCLE_PARTITIONS, ge=1, le=10_000, validation_alias="KAP_TOPIC_PARTITIONS"
    )
    # Per topic, as JSON: {"scheduler.session.scheduled.v1": 24}.
    topic_partitions_by_topic: dict[str, int] = Field(
        default_factory=dict, validation_alias="KAP_TOPIC_PARTITIONS_BY_TOPIC"
    )
    # How long the lifecycle and clinical topics keep their events: the clinic group's
    # records retention (Kafka is the record; Redis is rebuilt from it). Public topics
    # keep their own shorter retention. Production: tiered storage (docs/production.md).
    record_retention_days: int = Field(
        default=7 * 365, ge=1, validation_alias="KAP_RECORD_RETENTION_DAYS"
    )
    # The consumer group (chassis.kafka.subscribe). Static membership (KIP-345): a
    # replica with a stable name (a StatefulSet pod's) rejoins after a restart within
    # the session timeout without moving anyone's partitions. Unset: dynamic members.
    consumer_group_instance_id: str | None = Field(
        default=None, min_length=1, validation_alias="KAP_CONSUMER_GROUP_INSTANCE_ID"
    )
    consumer_session_timeout_ms: int = Field(
        default=10_000, ge=1_000, validation_alias="KAP_CONSUMER_SESSION_TIMEOUT_MS"
    )
    # Short, so a joining replica's rebalance ends in about a second.
    consumer_heartbeat_interval_ms: int = Field(
        default=500, ge=100, validation_alias="KAP_CONSUMER_HEARTBEAT_INTERVAL_MS"
    )
    consumer_max_poll_interval_ms: int = Field(
        default=300_000, ge=1_000, validation_alias="KAP_CONSUMER_MAX_POLL_INTERVAL_MS"
    )
    # The most records one batch takes (chassis.batches): one commit per batch.
    consumer_max_records: int = Field(
        default=500, ge=1, validation_alias="KAP_CONSUMER_MAX_RECORDS"
    )
    # How many of a batch's records are handled at once (chassis.batches): each holds
    # up to two Redis connections for its step; more gains nothing on a few cores.
    consumer_concurrency: int = Field(default=16, ge=1, validation_alias="KAP_CONSUMER_CONCURRENCY")
    otel_exporter: Literal["none", "console"] = Field(
        default="none", validation_alias="KAP_OTEL_EXPORTER"
    )
    log_level: str = Field(default="INFO", validation_alias="KAP_LOG_LEVEL")
    topic_replication_factor: int = Field(
        default=1, ge=1, validation_alias="KAP_TOPIC_REPLICATION_FACTOR"
    )
    # The scaled clock: simulated time runs `clock_scale` times faster than real
    # time, from `clock_origin` (simulated) at `clock_anchor` (real). All services
    # of one deployment share these three values, so they agree on "now".
    clock_scale: float = Field(default=1.0, gt=0, validation_alias="KAP_CLOCK_SCALE")
    clock_origin: AwareDatetime | None = Field(default=None, validation_alias="KAP_CLOCK_ORIGIN")
    clock_anchor: AwareDatetime | None = Field(default=None, validation_alias="KAP_CLOCK_ANCHOR")
    # Measure links (chassis.measure_links): the notifier signs them, intake reads them,
    # so both must be given the same list. Comma-separated; the first signs, every one
    # verifies (rotation: put the new secret first, drop the old once its links expired).
    measure_link_secrets: SecretStr = Field(
        default=SecretStr(DEV_MEASURE_LINK_SECRET), validation_alias="KAP_MEASURE_LINK_SECRETS"
    )

    # Staff tokens (chassis.staff_tokens): the console signs them, every service verifies
    # them, so all are given the same list. Comma-separated; the first signs.
    staff_token_secrets: SecretStr = Field(
        default=SecretStr(DEV_STAFF_TOKEN_SECRET), validation_alias="KAP_STAFF_TOKEN_SECRETS"
    )

    @model_validator(mode="after")
    def _kafka_security_is_whole(self) -> ServiceSettings:
        # Refused at start, naming the variable: a half-configured login otherwise shows
        # up later as a connection that hangs or a broker log line nobody reads.
        protocol = self.kafka_protocol()
        if protocol.startswith("SASL_"):
            for name, value in (
                ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
            ):
                if not value:
                    raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {name}")
        elif self.kafka_sasl_username or self.kafka_sasl_password:
            raise ValueError(
                f"KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD are set but"
                f" KAFKA_SECURITY_PROTOCOL={protocol} does not log in with SASL"
                " (SASL_PLAINTEXT or SASL_SSL)"
            )
        if not protocol.endswith("SSL"):
            for name, path in (
                ("KAFKA_SSL_CA_FILE", self.kafka_ssl_ca_file),
                ("KAFKA_SSL_CERT_FILE", self.kafka_ssl_cert_file),
                ("KAFKA_SSL_KEY_FILE", self.kafka_ssl_key_file),
            ):
                if path is not None:
                    raise ValueError(
                        f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use"
                        " TLS (SSL or SASL_SSL)"
                    )
        if self.kafka_ssl_key_file is not None and self.kafka_ssl_cert_file is None:
            raise ValueError("KAFKA_SSL_KEY_FILE needs KAFKA_SSL_CERT_FILE (its certificate)")
        return self

    @model_validator(mode="after")
    def _topics_and_consumer_are_sound(self) -> ServiceSettings:
        known = {topic.name for topic in ALL}
        for name, count in self.topic_partitions_by_topic.items():
            if name not in known:
                raise ValueError(f"KAP_TOPIC_PARTITIONS_BY_TOPIC names no topic: {name}")
            if count < 1:
                raise ValueError(f"KAP_TOPIC_PARTITIONS_BY_TOPIC: {name} needs 1 or more")
        if self.consumer_heartbeat_interval_ms * 3 > self.consumer_session_timeout_ms:
            # Kafka's own rule of thumb: a member missing one heartbeat stays in the group.
            raise ValueError(
                "KAP_CONSUMER_HEARTBEAT_INTERVAL_MS must be at most a third of"
                " KAP_CONSUMER_SESSION_TIMEOUT_MS"
            )
        return self

    def kafka_bootstrap_list(self) -> list[str]:
        """`KAFKA_BOOTSTRAP_SERVERS` as the list of `host:port` it names (comma-separated)."""
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]

    def kafka_protocol(self) -> KafkaProtocol:
        if self.kafka_security_protocol is not None:
            return self.kafka_security_protocol
        login = self.kafka_sasl_username or self.kafka_sasl_password
        return "SASL_PLAINTEXT" if login else "PLAINTEXT"

    def measure_link_secret_list(self) -> list[str]:
        raw = self.measure_link_secrets.get_secret_value()
        return [secret.strip() for secret in raw.split(",") if secret.strip()]

    def staff_token_secret_list(self) -> list[str]:
        raw = self.staff_token_secrets.get_secret_value()
        return [secret.strip() for secret in raw.split(",") if secret.strip()]

    @property
    def measure_link_secret_is_the_dev_default(self) -> bool:
        return self.measure_link_secret_list() == [DEV_MEASURE_LINK_SECRET]
