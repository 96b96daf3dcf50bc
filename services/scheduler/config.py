from __future__ import annotations

from pydantic import Field

from chassis.config import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = Field(default=8002, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    timer_poll_ms: int = Field(default=200, ge=10, validation_alias="KAP_TIMER_POLL_MS")
