from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.intake import domain
from shared import events as ev

NOW = datetime(2026, 3, 27, 10, tzinfo=UTC)
CLEAR = domain.Screening(
    systolic_bp=120,
    diastolic_bp=80,
    pregnant_or_breastfeeding=False,
    active_psychosis_or_mania=False,
    substance_use_disorder_last_3_months=False,
    aneurysmal_vascular_disease_or_avm=False,
    intracerebral_haemorrhage_history=False,
)


def record(status: domain.IntakeStatus) -> domain.ClientRecord:
    return domain.ClientRecord(
        clinic_id="lisbon",
        client_id=uuid.uuid4(),
        correlation_id="j",
        status=status,
        contact=ev.Contact(name="A", email="a@example.org"),
        requested_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize(
    ("total", "band"),
    [
        (0, "minimal"),
        (4, "minimal"),
        (5, "mild"),
        (10, "moderate"),
        (15, "moderately_severe"),
        (19, "moderately_severe"),
        (20, "severe"),
        (27, "severe"),
    ],
)
def test_phq9_bands_follow_the_cut_points(total: int, band: str) -> None:
    assert domain.phq9_band(total) == band


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"systolic_bp": 141}, "uncontrolled_hypertension"),
        ({"diastolic_bp": 91}, "uncontrolled_hypertension"),
        ({"pregnant_or_breastfeeding": True}, "pregnancy_or_breastfeeding"),
        ({"active_psychosis_or_mania": True}, "active_psychosis_or_mania"),
        ({"substance_use_disorder_last_3_months": True}, "substance_use_disorder_last_3_months"),
        ({"aneurysmal_vascular_disease_or_avm": True}, "aneurysmal_vascular_disease_or_avm"),
        ({"intracerebral_haemorrhage_history": True}, "intracerebral_haemorrhage_history"),
    ],
)
def test_each_contraindication_blocks_enrolment(change: dict[str, object], reason: str) -> None:
    screened, event = domain.screen(
        record(domain.IntakeStatus.CONSULTATION_HELD), CLEAR.model_copy(update=change), NOW
    )
    assert event.eligible is False
    assert [c.value for c in event.contraindications] == [reason]
    scores = domain.Scores(phq9=(1,) * 9, gad7=(1,) * 7)
    with pytest.raises(domain.StepRefused, match="screened_ineligible"):
        domain.enrol(screened, scores, NOW, NOW)


def test_blood_pressure_of_exactly_140_over_90_is_not_a_contraindication() -> None:
    assert (
        domain.contraindications(CLEAR.model_copy(update={"systolic_bp": 140, "diastolic_bp": 90}))
        == ()
    )


def test_item_9_alert_is_raised_only_for_a_non_zero_answer() -> None:
    client = record(domain.IntakeStatus.SCREENED_ELIGIBLE)
    assert (
        domain.clinical_alert(client, domain.Scores(phq9=(3,) * 8 + (0,), gad7=(0,) * 7), NOW)
        is None
    )
    alert = domain.clinical_alert(client, domain.Scores(phq9=(0,) * 8 + (1,), gad7=(0,) * 7), NOW)
    assert alert is not None
    assert alert.phq9_item9 == 1


def test_screening_before_the_consultation_is_refused() -> None:
    with pytest.raises(domain.StepRefused, match="consultation_requested"):
        domain.screen(record(domain.IntakeStatus.CONSULTATION_REQUESTED), CLEAR, NOW)


def test_a_no_show_leaves_the_consultation_request_open() -> None:
    updated, _ = domain.hold_consultation(
        record(domain.IntakeStatus.CONSULTATION_REQUESTED), "no_show", NOW
    )
    assert updated.status == domain.IntakeStatus.CONSULTATION_REQUESTED


def test_preferred_times_move_into_the_clinic_zone_splitting_at_midnight() -> None:
    # Boston 19:00-21:00 on Monday is Lisbon 23:00-01:00 into Tuesday (UTC-4 vs UTC+0 in March
    # 2026 before Lisbon's DST change, after Boston's).
    windows = (ev.PreferredTime(weekday=0, start=time(19, 0), end=time(21, 0)),)
    moved = domain.preferred_times_in_clinic_zone(
        windows,
        ZoneInfo("America/New_York"),
        ZoneInfo("Europe/Lisbon"),
        datetime(2026, 3, 20, tzinfo=UTC),
    )
    assert moved == (
        ev.PreferredTime(weekday=0, start=time(23, 0), end=time(23, 59)),
        ev.PreferredTime(weekday=1, start=time(0, 0), end=time(1, 0)),
    )


def test_a_returning_client_is_screened_afresh_and_enrolled_with_a_fresh_consent() -> None:
    scores = domain.Scores(phq9=(1,) * 8 + (0,), gad7=(1,) * 7)
    enrolled, _ = domain.enrol(record(domain.IntakeStatus.SCREENED_ELIGIBLE), scores, NOW, NOW)
    later = NOW + timedelta(days=90)
    screened, event = domain.screen(enrolled, CLEAR, later)
    assert event.eligible
    assert screened.status is domain.IntakeStatus.SCREENED_ELIGIBLE
    with pytest.raises(domain.StepRefused, match="fresh consent"):
        domain.enrol(screened, scores, NOW, later)  # the first course's consent again
    again, enrolment = domain.enrol(screened, scores, later, later)
    assert again.status is domain.IntakeStatus.ENROLLED
    assert enrolment.consent_recorded_at == later
