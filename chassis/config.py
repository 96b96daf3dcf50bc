"""Settings every service reads from its environment (pydantic-settings).

Defaults work against the local infrastructure (`make infra-up`); docker-compose
sets the same variables. tests/test_compose.py keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Works locally and in tests; a deployment sets its own (docker-compose passes one through).
DEV_MEASURE_LINK_SECRET = "kap-dev-only-measure-link-secret"  # noqa: S105 (dev only)


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
    http_host: str = Field(default="127.0.0.1", validation_alias="KAP_HTTP_HOST")
    http_port: int = Field(default=8000, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    clinics_file: Path = Field(
        default=Path("config/clinics.json"), validation_alias="KAP_CLINICS_FILE"
    )
    kafka_request_timeout_ms: int = Field(
        default=40_000, ge=1_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
    )
    # SASL/SCRAM (the secured compose overlay): one principal per service.
    # How long an event waits in the outbox before the relay takes it for lost by its
    # writer and publishes it (tests shorten it to see an outage end within seconds).
    relay_grace_ms: int = Field(default=30_000, ge=0, validation_alias="KAP_RELAY_GRACE_MS")
    kafka_sasl_username: str | None = Field(default=None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias="KAFKA_SASL_PASSWORD"
    )
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

    def measure_link_secret_list(self) -> list[str]:
        raw = self.measure_link_secrets.get_secret_value()
        return [secret.strip() for secret in raw.split(",") if secret.strip()]

    @property
    def measure_link_secret_is_the_dev_default(self) -> bool:
        return self.measure_link_secret_list() == [DEV_MEASURE_LINK_SECRET]

    def kafka_sasl(self) -> tuple[str, str] | None:
        if self.kafka_sasl_username and self.kafka_sasl_password:
            return self.kafka_sasl_username, self.kafka_sasl_password.get_secret_value()
        return None
