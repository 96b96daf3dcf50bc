"""The client is told when their course pauses, resumes or ends, and when a check-in is refused:
in neutral words, with no reason, measurement or note (rule 14)."""

from __future__ import annotations

import pytest

from services.notifier.model import MessageKind, PlannedMessage
from services.notifier.templates import TemplateSet
from shared import events as ev
from tests.unit.notifier.samples import (
    COURSE,
    DOSE_1,
    EMAIL,
    NOW,
    SMS,
    check_in,
    course_changes,
    event_fields,
    plan,
)


def only(event: ev.Event, prefs: object = EMAIL) -> PlannedMessage:
    (message,) = plan(event, prefs)  # type: ignore[arg-type]
    return message


def text_of(message: PlannedMessage) -> str:
    return TemplateSet().render(message, client_name="Maria Silva").text


@pytest.mark.parametrize(
    ("event", "kind"),
    list(
        zip(
            course_changes(),
            (
                MessageKind.COURSE_PAUSED,
                MessageKind.COURSE_RESUMED,
                MessageKind.COURSE_ENDED,
                MessageKind.CHECK_IN_REFUSED,
            ),
            strict=True,
        )
    ),
    ids=lambda x: getattr(x, "value", type(x).__name__),
)
def test_each_step_plans_one_client_message_inside_the_send_window(
    event: ev.Event, kind: MessageKind
) -> None:
    for prefs, channel in ((EMAIL, "email"), (SMS, "sms")):
        message = only(event, prefs)
        assert (message.kind, message.channel, message.recipient) == (kind, channel, "client")
        assert message.send_at == NOW  # Monday 10:00 in Lisbon: inside the window


def test_a_passed_check_in_tells_the_client_nothing() -> None:
    assert plan(check_in(True)) == []


@pytest.mark.parametrize(
    "refused_for",
    [
        (ev.CheckInRefusal.NO_RIDE_HOME,),
        (ev.CheckInRefusal.BLOOD_PRESSURE_OVER_LIMIT,),
        (ev.CheckInRefusal.NOT_FASTING, ev.CheckInRefusal.NO_RIDE_HOME),
    ],
)
def test_a_refused_check_in_says_a_new_time_will_be_found_and_never_why(
    refused_for: tuple[ev.CheckInRefusal, ...],
) -> None:
    for prefs in (EMAIL, SMS):
        message = only(check_in(False, *refused_for), prefs)
        assert message.appointment_id == DOSE_1.appointment_id
        text = text_of(message)
        assert "we will contact you to find a new time" in text.lower()
        shown = " ".join([text, *map(str, message.context.values())]).lower()
        for word in ("blood", "pressure", "ride", "fasting", "158", "refus"):
            assert word not in shown


def test_an_ended_course_reads_the_same_whatever_the_reason() -> None:
    texts = set()
    for code in ev.CourseEndCode:
        ended = ev.CourseEnded(
            **event_fields(),
            course_id=COURSE,
            reason=code,
            sessions_released=1,
            medicine_sessions_completed=2,
            detail="clinician note",
        )
        message = only(ended)
        assert "reason" not in message.context
        assert "detail" not in message.context
        texts.add(text_of(message))
    assert len(texts) == 1
    assert "has ended" in texts.pop()


def test_a_resumed_course_lists_its_new_times_in_clinic_time() -> None:
    resumed = next(e for e in course_changes() if isinstance(e, ev.CourseResumed))
    text = text_of(only(resumed))
    assert "- Wednesday 1 April 2026, 10:00 WEST: medicine session (180 minutes)" in text
    assert "- Thursday 2 April 2026, 10:00 WEST: integration session (60 minutes)" in text
    assert "Friday 24 April 2026" in text
    sms = text_of(only(resumed, SMS))
    assert "Wednesday 1 April 2026, 10:00 WEST" in sms


def test_a_paused_course_says_how_many_appointments_were_released() -> None:
    paused = next(e for e in course_changes() if isinstance(e, ev.CoursePaused))
    assert "Your 3 upcoming appointments have been released" in text_of(only(paused))


def test_a_resumption_that_books_nothing_new_keeps_the_booked_times() -> None:
    lifted = ev.CourseResumed(
        **event_fields(), course_id=COURSE, window_ends_on=DOSE_1.starts_at.date()
    )
    assert "Your booked appointments stand as they are." in text_of(only(lifted))
    assert "Your booked times stand." in text_of(only(lifted, SMS))
