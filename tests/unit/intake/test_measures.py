"""Measures answered after enrolment: the form's reading, scoring in FHIR terms, the alert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake import domain, measures
from services.intake.api import MeasureIn
from services.intake.instruments import FORM, GAD7, OPTIONS, PHQ9
from shared import events as ev

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
PHQ9_ANSWERS = (2, 2, 3, 1, 2, 2, 1, 1, 0)
GAD7_ANSWERS = (1, 2, 2, 1, 1, 2, 1)


def filled(phq9: tuple[int, ...] = PHQ9_ANSWERS, gad7: tuple[int, ...] = GAD7_ANSWERS) -> dict:
    fields = {f"phq9_{n}": str(v) for n, v in enumerate(phq9, start=1)}
    fields.update({f"gad7_{n}": str(v) for n, v in enumerate(gad7, start=1)})
    return fields


def record() -> domain.ClientRecord:
    return domain.ClientRecord(
        clinic_id="lisbon",
        client_id=uuid.uuid4(),
        correlation_id="journey",
        status=domain.IntakeStatus.ENROLLED,
        contact=ev.Contact(name="Ada Example", email="ada@example.org"),
        requested_at=NOW,
        updated_at=NOW,
    )


def test_the_form_shows_the_standard_instruments_with_their_item_counts_and_options() -> None:
    assert [q.instrument for q in FORM] == [ev.Instrument.PHQ9, ev.Instrument.GAD7]
    for questionnaire in FORM:
        assert len(questionnaire.items) == ev.INSTRUMENT_ITEMS[questionnaire.instrument]
        assert questionnaire.stem.startswith(
            "Over the last 2 weeks, how often have you been bothered by"
        )
    assert OPTIONS == (
        (0, "Not at all"),
        (1, "Several days"),
        (2, "More than half the days"),
        (3, "Nearly every day"),
    )
    assert PHQ9.items[8].startswith("Thoughts that you would be better off dead")
    assert GAD7.items[0] == "Feeling nervous, anxious or on edge"


def test_a_complete_form_is_scored_as_fhir_questionnaire_responses_with_loinc_totals() -> None:
    scores = measures.read_form(filled()).scores
    assert scores is not None
    phq9, gad7 = measures.responses(scores, NOW)
    assert (phq9.questionnaire, phq9.items, phq9.total, phq9.loinc) == (
        ev.Instrument.PHQ9,
        PHQ9_ANSWERS,
        14,
        "44261-6",
    )
    assert (gad7.questionnaire, gad7.total, gad7.loinc) == (ev.Instrument.GAD7, 10, "70274-6")
    assert phq9.authored == NOW
    assert measures.summary(scores) == {
        "phq9_total": 14,
        "phq9_band": "moderate",
        "gad7_total": 10,
        "clinical_alert": False,
    }


def test_every_missing_item_is_named_and_the_given_answers_are_kept() -> None:
    fields = filled()
    del fields["phq9_9"]
    fields["gad7_3"] = ""
    reading = measures.read_form(fields)
    assert reading.scores is None
    assert reading.errors == {"phq9_9": measures.MISSING, "gad7_3": measures.MISSING}
    assert reading.chosen["phq9_1"] == 2
    assert "phq9_9" not in reading.chosen


@pytest.mark.parametrize("bad", ["4", "-1", "x", "1.0", " 1", "٣", "10"])
def test_an_answer_outside_0_to_3_is_refused_for_its_item(bad: str) -> None:
    reading = measures.read_form({**filled(), "gad7_7": bad})
    assert reading.errors == {"gad7_7": measures.NOT_AN_OPTION}


def test_fields_that_are_not_items_are_ignored() -> None:
    reading = measures.read_form({**filled(), "phq9_10": "3", "name": "Ada"})
    assert reading.errors == {}
    assert reading.scores is not None


def test_a_positive_item_9_alerts_staff_before_the_answer_is_published() -> None:
    scores = measures.read_form(filled(phq9=(0, 0, 0, 0, 0, 0, 0, 0, 2))).scores
    assert scores is not None
    measure_id = uuid.uuid4()
    how = measures.Answered(source="link", measure_id=measure_id)
    alert, answer = measures.answered(record(), scores, how, NOW)
    assert isinstance(alert, ev.ClinicalAlertRaised)
    assert (alert.reason, alert.raised_during, alert.phq9_item9) == (
        "phq9_item9_positive",
        "measure",
        2,
    )
    assert isinstance(answer, ev.MeasureAnswered)
    assert (answer.source, answer.measure_id) == ("link", measure_id)


def test_no_alert_when_item_9_is_0() -> None:
    scores = measures.read_form(filled()).scores
    assert scores is not None
    how = measures.Answered(source="staff", entered_by="nurse.ana")
    [answer] = measures.answered(record(), scores, how, NOW)
    assert isinstance(answer, ev.MeasureAnswered)
    assert answer.entered_by == "nurse.ana"


def staff(**fields: Any) -> dict[str, Any]:
    return {"phq9": list(PHQ9_ANSWERS), "gad7": list(GAD7_ANSWERS), "entered_by": "a1", **fields}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phq9": [1] * 8}, "phq9"),
        ({"phq9": [*PHQ9_ANSWERS[:8], 4]}, "phq9"),
        ({"gad7": [0] * 8}, "gad7"),
        ({"gad7": [-1] * 7}, "gad7"),
        ({"entered_by": "nurse ana"}, "entered_by"),
        ({"entered_by": ""}, "entered_by"),
        ({"point": "someday"}, "point"),
        ({"measure_id": "not-a-uuid"}, "measure_id"),
        ({"score": 3}, "score"),
    ],
)
def test_staff_entry_refuses_bad_input_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        MeasureIn.model_validate(staff(**change))
    assert field in {str(part) for error in refused.value.errors() for part in error["loc"]}


def test_staff_entry_without_entered_by_is_refused() -> None:
    body = staff()
    del body["entered_by"]
    with pytest.raises(ValidationError):
        MeasureIn.model_validate(body)
