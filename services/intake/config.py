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
    # Requests allowed per window (real seconds, not the clinic's clock), counted in the
    # clinic's Redis slot; 0 turns one off. The measure form counts opening and sending.
    rate_window_s: int = Field(default=60, ge=1, le=3600, validation_alias="KAP_RATE_WINDOW_S")
    form_rate_per_address: int = Field(
        default=30, ge=0, validation_alias="KAP_FORM_RATE_PER_ADDRESS"
    )
    form_rate_per_client: int = Field(default=20, ge=0, validation_alias="KAP_FORM_RATE_PER_CLIENT")
    consultation_rate_per_address: int = Field(
        default=30, ge=0, validation_alias="KAP_CONSULTATION_RATE_PER_ADDRESS"
    )
    # Per person (their e-mail address, digested in the key), whatever address they call from.
    consultation_rate_per_client: int = Field(
        default=5, ge=0, validation_alias="KAP_CONSULTATION_RATE_PER_CLIENT"
    )
