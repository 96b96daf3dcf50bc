"""One measure of a course's schedule as the course keeps it (how it is planned: domain.measures).

`planned_at` is when the measure was first planned: a dose booked less than the
policy's hours ahead opens its measure then, not in the past.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

from shared.events import Instrument, MeasurePoint

# pending: its timer waits for `opens_at`; sent: MeasureDue published; answered: answered
# before it fell due, so not sent; lapsed: closed before its timer fired, so not sent.
MeasureState = Literal["pending", "sent", "answered", "lapsed"]


class ScheduledMeasure(BaseModel):
    model_config = ConfigDict(frozen=True)

    measure_id: UUID
    point: MeasurePoint
    instruments: tuple[Instrument, ...]
    opens_at: AwareDatetime
    closes_at: AwareDatetime
    planned_at: AwareDatetime
    appointment_id: UUID | None = None
    dose_number: int | None = None
    state: MeasureState = "pending"
