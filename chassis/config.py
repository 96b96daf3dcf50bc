"""Settings every service reads from its environment (pydantic-settings).

Defaults work against the local infrastructure (`make infra-up`); docker-compose
sets the same variables. tests/test_compose.py keeps the two in step.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AwareDatetime, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    http_host: str = Field(default="127.0.0.1", validation_alias="KAP_HTTP_HOST")
    http_port: int = Field(default=8000, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    clinics_file: Path = Field(
        default=Path("config/clinics.json"), validation_alias="KAP_CLINICS_FILE"
    )
    kafka_request_timeout_ms: int = Field(
        default=40_000, ge=1_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
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
