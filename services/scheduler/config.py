from __future__ import annotations

from pydantic import Field

from chassis.config import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = Field(default=8002, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    timer_poll_ms: int = Field(default=200, ge=10, validation_alias="KAP_TIMER_POLL_MS")
    # A publish made under a client's lock must end (acknowledged, or failed and
    # its producer dropped) well before the lock (store.LOCK_TIMEOUT_S, 30 s) can
    # expire; the save after it is fenced as well, but a stale holder's events
    # would already be out.
    kafka_request_timeout_ms: int = Field(
        default=10_000, ge=1_000, validation_alias="KAFKA_REQUEST_TIMEOUT_MS"
    )
