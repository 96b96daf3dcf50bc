"""Measures answered after enrolment (protocol rules 3 and 21): read, scored, published.

Pure: no I/O and no clock. A form's answers are checked item by item (every item
required, 0-3), scored as FHIR QuestionnaireResponses (LOINC totals), and become a
`MeasureAnswered`; any PHQ-9 item 9 above 0 also alerts staff, whatever the source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

from services.intake import domain
from services.intake.instruments import FORM, OPTIONS
from shared import events as ev

MISSING = "Choose an answer for this question."
NOT_AN_OPTION = "Choose one of the four answers."
VALUES = {str(value) for value, _ in OPTIONS}


@dataclass(frozen=True)
class FormReading:
    """What a submitted form held: the answers given (to show again) and what is wrong."""

    chosen: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def scores(self) -> domain.Scores | None:
        if self.errors:
            return None
        phq9, gad7 = (
            tuple(self.chosen[q.field(n)] for n in range(1, len(q.items) + 1)) for q in FORM
        )
        return domain.Scores(phq9=phq9, gad7=gad7)


def read_form(fields: Mapping[str, str]) -> FormReading:
    """Every item of every instrument on the form, in order; unknown fields are ignored."""
    reading = FormReading()
    for questionnaire in FORM:
        for number in range(1, len(questionnaire.items) + 1):
            name = questionnaire.field(number)
            given = fields.get(name)
            if given is None or given == "":
                reading.errors[name] = MISSING
            elif given not in VALUES:
                reading.errors[name] = NOT_AN_OPTION
            else:
                reading.chosen[name] = int(given)
    return reading


def responses(scores: domain.Scores, authored: datetime) -> tuple[ev.QuestionnaireResponse, ...]:
    return tuple(
        ev.QuestionnaireResponse(
            questionnaire=instrument,
            items=items,
            total=sum(items),
            loinc=ev.LOINC_TOTAL[instrument],
            authored=authored,
        )
        for instrument, items in (
            (ev.Instrument.PHQ9, scores.phq9),
            (ev.Instrument.GAD7, scores.gad7),
        )
    )


@dataclass(frozen=True)
class Answered:
    """Who answered which measure, and how it reached intake."""

    source: Literal["link", "staff"]
    measure_id: UUID | None = None
    point: ev.MeasurePoint | None = None
    entered_by: str | None = None


def answered(
    record: domain.ClientRecord, scores: domain.Scores, how: Answered, now: datetime
) -> list[ev.Event]:
    """The answer, preceded by the urgent alert when PHQ-9 item 9 is above 0 (rule 3)."""
    event = ev.MeasureAnswered(
        clinic_id=record.clinic_id,
        client_id=record.client_id,
        occurred_at=now,
        responses=responses(scores, now),
        source=how.source,
        measure_id=how.measure_id,
        point=how.point,
        entered_by=how.entered_by,
    )
    alert = domain.clinical_alert(record, scores, now, during="measure")
    return [alert, event] if alert else [event]


def summary(scores: domain.Scores) -> dict[str, object]:
    """What an answer tells the one who gave it (staff): totals, band, whether it alerted."""
    return {
        "phq9_total": scores.phq9_total,
        "phq9_band": scores.phq9_band.value,
        "gad7_total": scores.gad7_total,
        "clinical_alert": scores.phq9_item9 > 0,
    }
