from __future__ import annotations

from pydantic import Field

from chassis.config import ServiceSettings
from chassis.unit_of_work import RELAY_GRACE_MS


class Settings(ServiceSettings):
    http_port: int = Field(default=8001, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    # Intake publishes right after an HTTP write is recorded and consumes nothing: a
    # short timeout answers the request promptly while the broker is away (its events
    # are left to the outbox relay).
    kafka_request_timeout_ms: int = Field(
        default=5_000, ge=1_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
    )
    # How long an event waits in the outbox before the relay takes it for lost by its
    # writer and publishes it (tests shorten it to see an outage end within seconds).
    relay_grace_ms: int = Field(default=RELAY_GRACE_MS, ge=0, validation_alias="KAP_RELAY_GRACE_MS")
