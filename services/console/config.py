"""The console's settings: where the services answer, the clinics' keys it calls
them with, and how staff sessions are signed and kept."""

from __future__ import annotations

import json

from pydantic import Field, SecretStr, field_validator

from chassis.config import ServiceSettings

DEV_SESSION_SECRET = "dev-console-session-secret-change-me-0123456789"  # noqa: S105 - a dev default, warned about


class Settings(ServiceSettings):
    http_port: int = Field(default=8005, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    intake_url: str = Field(
        default="http://127.0.0.1:8001", validation_alias="KAP_CONSOLE_INTAKE_URL"
    )
    scheduler_url: str = Field(
        default="http://127.0.0.1:8002", validation_alias="KAP_CONSOLE_SCHEDULER_URL"
    )
    notifier_url: str = Field(
        default="http://127.0.0.1:8003", validation_alias="KAP_CONSOLE_NOTIFIER_URL"
    )
    # Only for the Operations page's readiness: the console calls no webhooks API.
    webhooks_url: str = Field(
        default="http://127.0.0.1:8004", validation_alias="KAP_CONSOLE_WEBHOOKS_URL"
    )
    # Each clinic's API key, as JSON {"lisbon": "...", ...}: the console calls the services
    # as the clinic its signed-in staff member works at (their own keys, their own limits).
    clinic_keys: SecretStr = Field(
        default=SecretStr("{}"), validation_alias="KAP_CONSOLE_CLINIC_KEYS"
    )
    # Signs the session cookie and the forms' CSRF tokens; 32 characters at least.
    session_secret: SecretStr = Field(
        default=SecretStr(DEV_SESSION_SECRET), validation_alias="KAP_CONSOLE_SESSION_SECRET"
    )
    session_ttl_s: int = Field(
        default=8 * 3600, ge=60, validation_alias="KAP_CONSOLE_SESSION_TTL_S"
    )
    # Sign-in lock-out: this many failures within the window lock the account for it.
    lockout_failures: int = Field(default=5, ge=1, validation_alias="KAP_CONSOLE_LOCKOUT_FAILURES")
    lockout_s: int = Field(default=15 * 60, ge=1, validation_alias="KAP_CONSOLE_LOCKOUT_S")
    # Cookies only over HTTPS (production, behind TLS); a local try over http turns it off.
    secure_cookies: bool = Field(default=True, validation_alias="KAP_CONSOLE_SECURE_COOKIES")

    @field_validator("clinic_keys")
    @classmethod
    def _keys_are_a_map(cls, keys: SecretStr) -> SecretStr:
        parsed = json.loads(keys.get_secret_value())
        if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
            raise ValueError('a JSON object of clinic id -> API key, e.g. {"lisbon": "..."}')
        return keys

    @field_validator("session_secret")
    @classmethod
    def _secret_is_long(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < 32:
            raise ValueError("at least 32 characters")
        return secret

    def clinic_key_map(self) -> dict[str, str]:
        return dict(json.loads(self.clinic_keys.get_secret_value()))
