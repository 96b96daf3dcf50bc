"""When messages go out, by the clinic's wall clock: the send window, the clinic's own
policy, and a daylight-saving change between a reminder and its session."""

from __future__ import annotations

import pytest

from shared import events as ev
from tests.integration.notifier.support import Rig, appointment, at, sent_at

pytestmark = pytest.mark.integration

BOSTON = {"timezone": "America/New_York"}
NARROW = {
    "sections": {
        "notifier": {"send_window": ["10:00", "18:00"], "reminder_leads": {"reminder_24h": "P1D"}}
    }
}


@pytest.mark.parametrize("clinic_spec", [BOSTON], indirect=True)
async def test_reminders_keep_clinic_wall_time_across_the_end_of_daylight_saving(
    rig: Rig,
) -> None:
    # Boston's clocks go back at 02:00 on Sunday 1 November 2026.
    rig.clock.set(at("2026-10-29T12:00-04:00"))
    ada = rig.person()
    client_id, _ = await rig.request(ada)
    session = appointment(ev.AppointmentKind.CONSULTATION, at("2026-11-01T10:00-05:00"), 30)
    await rig.publish(ev.ConsultationBooked(**rig.fields(client_id), appointment=session))
    subjects = {m["Subject"] for m in await rig.mails(ada.email, 2)}
    assert "Your consultation is booked: Sunday 1 November 2026, 10:00 EST" in subjects

    # 24 h before on the calendar is Saturday 10:00 EDT (25 real hours before);
    # 2 h before is 08:00, before the window opens, so it goes at 09:00 EST.
    expected = [
        ("2026-10-31T10:00-04:00", "Reminder: your appointment on"),
        ("2026-11-01T09:00-05:00", "Your appointment is coming up:"),
    ]
    for count, (when, subject) in enumerate(expected, start=3):
        await rig.step_to(at(when))
        latest = (await rig.mails(ada.email, count))[-1]
        assert latest["Subject"] == f"{subject} Sunday 1 November 2026, 10:00 EST"
        assert sent_at(latest) == at(when)


@pytest.mark.parametrize("clinic_spec", [NARROW], indirect=True)
async def test_news_in_the_evening_waits_for_the_clinics_own_send_window(rig: Rig) -> None:
    evening = at("2026-03-23T19:30+00:00")
    rig.clock.set(evening)
    ada = rig.person()
    client_id, _ = await rig.request(ada)  # a reply to the client's own request goes at once
    await rig.publish(ev.ScreeningCompleted(**rig.fields(client_id), eligible=True))
    session = appointment(ev.AppointmentKind.CONSULTATION, at("2026-03-25T09:00+00:00"), 30)
    await rig.publish(ev.ConsultationBooked(**rig.fields(client_id), appointment=session))
    await rig.settled()
    assert {m["Subject"] for m in rig.mailbox.to(ada.email)} == {
        f"Your consultation request at {rig.clinic.name}",
        "Your consultation is booked: Wednesday 25 March 2026, 09:00 WET",
    }

    await rig.step_to(at("2026-03-24T09:59:59+00:00"))
    assert len(rig.mailbox.to(ada.email)) == 2
    await rig.step_to(at("2026-03-24T10:00+00:00"))
    news = (await rig.mails(ada.email, 4))[2:]
    assert {m["Subject"] for m in news} == {
        f"An update from {rig.clinic.name}",
        "Reminder: your appointment on Wednesday 25 March 2026, 09:00 WET",
    }
    assert {sent_at(m) for m in news} == {at("2026-03-24T10:00+00:00")}
    kinds = {n["kind"] for n in await rig.notifications(client_id)}
    assert "reminder_2h" not in kinds  # this clinic switched it off
