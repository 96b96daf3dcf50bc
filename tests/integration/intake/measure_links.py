"""What the measure tests share: a client intake knows, and a link to one of their measures."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from chassis.config import ServiceSettings
from chassis.measure_links import MeasureLink, MeasureLinks
from tests.helpers import auth


async def new_client(intake: httpx.AsyncClient, unique: str, clinic: str = "lisbon") -> str:
    response = await intake.post(
        f"/v1/clinics/{clinic}/consultation-requests",
        json={"name": "Ada Example", "email": f"measure.{unique}.{uuid.uuid4().hex[:6]}@ex.org"},
        headers=auth(clinic),
    )
    assert response.status_code == 202, response.text
    return str(response.json()["client_id"])


def link_for(
    settings: ServiceSettings,
    client_id: str,
    *,
    clinic: str = "lisbon",
    measure_id: uuid.UUID | None = None,
    valid_for: timedelta = timedelta(hours=72),
    expires_at: datetime | None = None,
) -> tuple[str, uuid.UUID]:
    """A token as the notifier mints it (same secrets), and the measure it names."""
    measure = measure_id or uuid.uuid4()
    expires = expires_at or datetime.now(UTC) + valid_for
    link = MeasureLink(clinic, uuid.UUID(client_id), measure, expires)
    return MeasureLinks(settings.measure_link_secret_list()).mint(link), measure


def answers(item9: int = 0, **changed: str) -> dict[str, str]:
    """Every item answered: PHQ-9 total 8 + item 9, GAD-7 total 14."""
    fields = {f"phq9_{n}": "1" for n in range(1, 9)}
    fields["phq9_9"] = str(item9)
    fields.update({f"gad7_{n}": "2" for n in range(1, 8)})
    fields.update(changed)
    return fields
