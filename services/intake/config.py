from __future__ import annotations

from pydantic import Field

from chassis.config import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = Field(default=8001, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    # Intake publishes inside HTTP requests and consumes nothing: a short timeout
    # turns an absent broker into a prompt 503 instead of a hanging request.
    kafka_request_timeout_ms: int = Field(
        default=5_000, ge=1_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
    )
