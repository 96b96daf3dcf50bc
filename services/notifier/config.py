from __future__ import annotations

from pydantic import Field

from chassis.config import ServiceSettings


class Settings(ServiceSettings):
    http_port: int = Field(default=8003, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
