from __future__ import annotations

from pydantic import Field

from chassis.config import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = Field(default=8001, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    # Intake publishes right after an HTTP write is recorded and consumes nothing: a
    # short timeout answers the request promptly while the broker is away (its events
    # are left to the outbox relay).
    kafka_request_timeout_ms: int = Field(
        default=5_000, ge=1_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
    )
