"""The webhook service's settings."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from chassis.config import ServiceSettings
from services.webhooks.domain import Network, RetryPolicy, parse_networks


class Settings(ServiceSettings):
    http_port: int = Field(default=8004, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    # The admin API (partners and their subscriptions): the admin key's SHA-256, hex, as
    # the scheduler's; unset, the admin routes refuse every call.
    admin_api_key_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", validation_alias="KAP_ADMIN_API_KEY_SHA256"
    )
    # Networks a partner's URL may resolve into although private, loopback or link-local
    # (comma-separated CIDRs): none in production; the tests and the demo allow loopback.
    webhook_allow_networks: str = Field(default="", validation_alias="KAP_WEBHOOK_ALLOW_NETWORKS")
    # A delivery with no answer within this long failed (real seconds).
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=60, validation_alias="KAP_WEBHOOK_TIMEOUT_S"
    )
    # Retries: after `first` to a ceiling doubling from `first` to `longest` (jitter: uniform);
    # an event with no 2xx for `give_up_after` goes to the partner's dead letters.
    webhook_retry_first_s: float = Field(
        default=5.0, gt=0, validation_alias="KAP_WEBHOOK_RETRY_FIRST_S"
    )
    webhook_retry_longest_s: float = Field(
        default=3600.0, gt=0, validation_alias="KAP_WEBHOOK_RETRY_LONGEST_S"
    )
    webhook_give_up_after_s: float = Field(
        default=24 * 3600.0, gt=0, validation_alias="KAP_WEBHOOK_GIVE_UP_AFTER_S"
    )
    # How long a client's event waits for a lower number still unread before it goes
    # without it (a number lost for good, or from before this service first read the client).
    webhook_gap_wait_s: float = Field(
        default=300.0, gt=0, validation_alias="KAP_WEBHOOK_GAP_WAIT_S"
    )
    # Deliveries in flight at once per partner, per replica.
    webhook_per_partner: int = Field(
        default=8, ge=1, le=256, validation_alias="KAP_WEBHOOK_PER_PARTNER"
    )
    webhook_poll_ms: int = Field(default=200, ge=10, validation_alias="KAP_WEBHOOK_POLL_MS")

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks_parse(cls, text: str) -> str:
        parse_networks(text)  # a ValueError names the part that is not a network
        return text

    def allowed_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.webhook_allow_networks)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            first=timedelta(seconds=self.webhook_retry_first_s),
            longest=timedelta(seconds=self.webhook_retry_longest_s),
            give_up_after=timedelta(seconds=self.webhook_give_up_after_s),
        )
