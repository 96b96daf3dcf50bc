"""The notifier's settings: its environment, and each clinic's `notifier` section.

A clinic's section (in the clinics file) may set `send_window` (["09:00", "20:00"]),
`reminder_leads` ({"reminder_24h": "P1D", "reminder_2h": "PT2H"}; leave a kind
out to switch it off), `instructions_lead`, `grace`, `intake_record_path` and
`templates` ({kind: {part: template source}}); what it leaves out is the
protocol's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr

from chassis.clinic_registry import ClinicRefused
from chassis.clinics import Clinic
from chassis.config import ServiceSettings
from chassis.measure_links import MeasureLinks
from services.notifier.model import ClinicSettings
from services.notifier.templates import PART_FILES, TemplateRenderError, TemplateSet

TEMPLATES = "templates"


class Settings(ServiceSettings):
    http_port: int = Field(default=8003, ge=0, le=65535, validation_alias="KAP_HTTP_PORT")
    smtp_host: str = Field(default="127.0.0.1", validation_alias="KAP_SMTP_HOST")
    smtp_port: int = Field(default=1025, ge=1, le=65535, validation_alias="KAP_SMTP_PORT")
    mail_from: str = Field(default="notifications@kap.example", validation_alias="KAP_MAIL_FROM")
    sms_api_url: str = Field(default="http://127.0.0.1:8025", validation_alias="KAP_SMS_API_URL")
    sms_account_sid: str = Field(default="AC-local", validation_alias="KAP_SMS_ACCOUNT_SID")
    sms_auth_token: SecretStr = Field(
        default=SecretStr("local-token"), validation_alias="KAP_SMS_AUTH_TOKEN"
    )
    sms_from: str = Field(default="+15005550006", validation_alias="KAP_SMS_FROM")
    # Real time between looks for due messages; what is due is judged on the
    # injected clock, which may run faster (the demo's scaled clock).
    # At most this long between looks; delivery otherwise sleeps until the next
    # message falls due on the injected clock (and is woken by new plans).
    delivery_poll_ms: int = Field(default=200, ge=10, validation_alias="KAP_DELIVERY_POLL_MS")
    # Reminders and instructions wait while a scheduler event has waited unhandled
    # this long (real time, as Kafka's record times): the change it brings may make
    # them untrue. 0 switches the gate off. Clinical alerts never wait.
    schedule_lag_bound_ms: int = Field(
        default=5_000, ge=0, validation_alias="KAP_SCHEDULE_LAG_BOUND_MS"
    )
    # Measure requests (issue 17): the link to intake's form, `{base}/m/{token}`, signed
    # with the secrets every service reads (chassis.config.ServiceSettings).
    public_base_url: str = Field(
        default="http://127.0.0.1:8001", min_length=1, validation_alias="KAP_PUBLIC_BASE_URL"
    )
    measure_link_ttl_hours: int = Field(
        default=72, ge=1, le=24 * 30, validation_alias="KAP_MEASURE_LINK_TTL_HOURS"
    )

    def measure_links(self) -> MeasureLinks:
        """The signer; a secret shorter than 16 characters is refused at start."""
        return MeasureLinks(self.measure_link_secret_list())


def clinic_settings(clinic: Clinic) -> ClinicSettings:
    """The clinic's notification policy; raises ValidationError for a bad section."""
    section = {k: v for k, v in clinic.section("notifier").items() if k != TEMPLATES}
    return ClinicSettings.model_validate(
        {"clinic_id": clinic.id, "name": clinic.name, "timezone": clinic.timezone, **section}
    )


def template_overrides(clinic: Clinic) -> Mapping[str, Mapping[str, str]]:
    overrides: Any = clinic.section("notifier").get(TEMPLATES, {})
    return overrides if isinstance(overrides, dict) else {}


def check_section(clinic: Clinic) -> None:
    """Refuses a `notifier` section the notifier could not use: its policy, and its
    template overrides, compiled as delivery compiles them (chassis.clinic_registry)."""
    clinic_settings(clinic)
    try:
        TemplateSet(template_overrides(clinic))
    except TemplateRenderError as error:
        # Named by the part, as the override is written ("html"), not by its file.
        part = next((p for p, f in PART_FILES.items() if f == error.part), error.part)
        where = ("notifier", TEMPLATES, error.kind, part)
        raise ClinicRefused([(where, str(error))]) from error
