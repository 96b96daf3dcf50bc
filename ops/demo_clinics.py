"""The demo's clinics: three time zones, two daylight-saving changes inside the demo period."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from chassis.clinic_registry import registry_producer, write_clinic
from chassis.config import ServiceSettings
from chassis.kafka import apply_topics
from chassis.redis_client import connect_redis
from ops.clinic_registry import SECTION_CHECKS
from shared.topics import CLINIC_CHANGES, CLINIC_REGISTRY

WEEKDAYS_8_TO_19 = {str(d): [{"start": "08:00", "end": "19:00"}] for d in range(5)}
SATURDAY_MORNING = {"5": [{"start": "09:00", "end": "13:00"}]}
# One clinic also sees people on Saturdays, one consultation a week (09:00-09:30): the demo's
# waitlist forms there (ops/demo_waitlist.py), and its offers stay open three clinic days
# (three real seconds at the demo's pace) so the demo's client can take one.
SATURDAY_DESK = "lisbon"
SATURDAY_DESK_HOURS = {"5": [{"start": "09:00", "end": "09:30"}]}
SATURDAY_DESK_POLICY = {"offer_expiry_hours": 72}


def _calendar(therapists: int, rooms: int, *, saturday_desk: bool = False) -> dict[str, Any]:
    team = [
        {"id": f"t-{n}", "display_name": f"Therapist {n}", "availability": WEEKDAYS_8_TO_19}
        for n in range(1, therapists + 1)
    ]
    # One part-timer who works Tuesdays and Thursdays only.
    team.append(
        {
            "id": "t-part-time",
            "display_name": "Part-time therapist",
            "availability": {
                "1": [{"start": "09:00", "end": "17:00"}],
                "3": [{"start": "09:00", "end": "17:00"}],
            },
        }
    )
    calendar: dict[str, Any] = {
        "opening_hours": {**WEEKDAYS_8_TO_19, **SATURDAY_MORNING},
        "therapists": team,
        "rooms": [{"id": f"recliner-{n}", "name": f"Recliner {n}"} for n in range(1, rooms + 1)],
    }
    if saturday_desk:
        desk = {"id": "t-saturday", "display_name": "Saturday consultations"}
        team.append({**desk, "availability": SATURDAY_DESK_HOURS})
        calendar["policy"] = SATURDAY_DESK_POLICY
    return calendar


CLINICS: dict[str, dict[str, Any]] = {
    # Clocks go forward on 29 March 2026.
    "lisbon": {"name": "Lisbon Integrative Care", "timezone": "Europe/Lisbon"},
    # Already on summer time (8 March); no change in the demo period.
    "boston": {"name": "Back Bay Wellness", "timezone": "America/New_York"},
    # Clocks go back on 5 April 2026.
    "sydney": {"name": "Harbour Mind Clinic", "timezone": "Australia/Sydney"},
}


def for_run(run: str) -> dict[str, dict[str, Any]]:
    """The demo's clinics under ids of one run (`lisbon-<run>`, ...): every key with their
    hash tags is this run's, never left by an earlier run on the same Redis and Kafka."""
    return {f"{clinic_id}-{run}": spec for clinic_id, spec in CLINICS.items()}


def api_key(clinic_id: str) -> str:
    return f"demo-{clinic_id}-key"


def write(
    path: Path,
    clinics: dict[str, dict[str, Any]] = CLINICS,
    *,
    therapists: int = 4,
    rooms: int = 3,
    saturday_desk: str | None = None,
) -> Path:
    """The clinics file: `clinics` (id -> name and time zone), each with its calendar; the
    clinic `saturday_desk` names also takes one consultation on Saturdays (the demo's)."""
    entries = [
        {
            "id": clinic_id,
            **spec,
            "api_key_sha256": hashlib.sha256(api_key(clinic_id).encode()).hexdigest(),
            "staff_email": f"care-team@{clinic_id}.clinic.example",
            "scheduler": _calendar(therapists, rooms, saturday_desk=clinic_id == saturday_desk),
        }
        for clinic_id, spec in clinics.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2))
    return path


async def reset(redis_url: str, clinic_ids: Iterable[str] = CLINICS) -> int:
    """Forget the demo clinics' state from earlier runs (their calendars fill up otherwise).

    Every key of a clinic carries its `{clinic_id}` hash tag, so one pattern
    finds them all, whichever service wrote them.
    """
    redis = connect_redis(redis_url, ServiceSettings().redis_mode, decode=False)
    removed = 0
    try:
        for clinic_id in clinic_ids:
            keys = [key async for key in redis.scan_iter(match=f"*{{{clinic_id}}}*", count=1000)]
            for start in range(0, len(keys), 500):
                removed += await redis.delete(*keys[start : start + 500])
        return removed
    finally:
        await redis.aclose()


async def register(
    bootstrap: str, entries: list[dict[str, Any]], registry: str = CLINIC_REGISTRY.name
) -> int:
    """Write the clinics file's entries into the clinic registry (the compacted topic the services
    read with KAP_CLINICS_SOURCE=topic), each clinic checked first, as `kapctl clinics
    import` does. The registry keeps the latest record per clinic: a demo run rewrites
    its clinics, never adds to them."""
    await apply_topics(
        bootstrap, topics=(), records=(replace(CLINIC_REGISTRY, name=registry), CLINIC_CHANGES)
    )
    async with registry_producer(bootstrap) as send:
        for entry in entries:
            await write_clinic(send, entry, SECTION_CHECKS, "make demo", registry=registry)
    return len(entries)
