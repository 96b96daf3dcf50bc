"""The clinic rules the auditor holds the events to: time zone, course policy, reminder policy.

Only the *values* come from the services (their policy models carry the
protocol's defaults and validate a clinic's overrides); every check using them
is computed in ops/audit_checks.py from the topics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ops import demo_clinics
from services.notifier.model import ClinicSettings
from services.scheduler.domain.clinic import CoursePolicy


@dataclass(frozen=True)
class ClinicRules:
    tz: ZoneInfo
    policy: CoursePolicy
    notices: ClinicSettings


def _rules(clinic_id: str, timezone: str, entry: dict[str, Any]) -> ClinicRules:
    scheduler = entry.get("scheduler") or {}
    notifier = {k: v for k, v in (entry.get("notifier") or {}).items() if k != "templates"}
    notices = ClinicSettings.model_validate(
        # The name only matters for message text; the auditor reads no text.
        {"clinic_id": clinic_id, "name": "clinic", "timezone": timezone, **notifier}
    )
    return ClinicRules(
        ZoneInfo(timezone), CoursePolicy.model_validate(scheduler.get("policy") or {}), notices
    )


def load(clinics_file: Path | None = None) -> dict[str, ClinicRules]:
    """Every clinic of `clinics_file`, plus the demo's clinics it does not name."""
    entries: list[dict[str, Any]] = []
    if clinics_file is not None and clinics_file.exists():
        entries = json.loads(clinics_file.read_text())
    rules = {e["id"]: _rules(e["id"], e["timezone"], e) for e in entries}
    for clinic_id, spec in demo_clinics.CLINICS.items():
        rules.setdefault(clinic_id, _rules(clinic_id, spec["timezone"], {}))
    return rules


def of(rules: dict[str, ClinicRules], clinic_id: str) -> ClinicRules:
    """A clinic's rules; an unknown clinic is held to the protocol's defaults in UTC."""
    if clinic_id not in rules:
        rules[clinic_id] = _rules(clinic_id or "unknown", "UTC", {})
    return rules[clinic_id]
