from __future__ import annotations

from pydantic import Field

from chassis.config import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = Field(default=8002, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    # Where clients reach the scheduler's offer route: the base of the link in an offer.
    public_url: str = Field(
        default="http://127.0.0.1:8002", validation_alias="KAP_SCHEDULER_PUBLIC_URL"
    )
    timer_poll_ms: int = Field(default=200, ge=10, validation_alias="KAP_TIMER_POLL_MS")
    # How long a publish may wait for the broker before it fails; the change it
    # publishes is recorded before (chassis.unit_of_work), so a failure only delays it.
    kafka_request_timeout_ms: int = Field(
        default=10_000, ge=1_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
    )
    # The operators' admin API (services.scheduler.admin_api): the admin key's SHA-256
    # (`sha256sum` of the key, hex); unset, the admin routes refuse every call.
    admin_api_key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", validation_alias="KAP_ADMIN_API_KEY_SHA256"
    )
