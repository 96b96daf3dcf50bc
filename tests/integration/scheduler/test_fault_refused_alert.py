"""Issue 14, fault 10: a completion refused for want of a ride home still raises its alert.

PHQ-9 item 9 above zero alerts staff at once (protocol rule 3), whatever becomes
of the session: the refusal (no confirmed ride, rule 8) used to come first and
the answer was lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scheduler.domain.schedule import Refused
from shared import events as ev
from shared import topics
from tests.builders.scheduler import PASSING_CHECKIN
from tests.helpers import topic_messages
from tests.integration.scheduler.world import world

pytestmark = pytest.mark.integration


async def test_a_completion_refused_for_no_ride_home_still_raises_the_clinical_alert(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    # The catalogue gives the clinical alert topic to intake only (see the next test),
    # so this scheduler declares it itself; Kafka is real either way.
    declare = (topics.CLINICAL_ALERT_RAISED,)
    async with world(kafka_bootstrap, redis_url, tmp_path, declare=declare) as w:
        schedule = await w.booked_client()
        assert schedule.course is not None
        dose = next(
            a for a in schedule.course.plan.appointments if a.kind == ev.AppointmentKind.MEDICINE
        )
        w.clock.advance(dose.starts_at - w.clock.now())
        await w.scheduler.check_in(w.clinic, dose.appointment_id, PASSING_CHECKIN)
        checked_in = await w.load(schedule.client_id)
        w.clock.advance(dose.ends_at - w.clock.now())

        with pytest.raises(Refused, match="ride home"):
            await w.scheduler.complete(
                w.clinic,
                dose.appointment_id,
                ride_home_confirmed=False,
                phq9_total=19,
                phq9_item9=2,
            )

        client = str(schedule.client_id)
        alerts = await topic_messages(
            kafka_bootstrap, topics.CLINICAL_ALERT_RAISED.name, key=client, wait_s=10
        )
        completions = await topic_messages(
            kafka_bootstrap, topics.SESSION_COMPLETED.name, key=client, wait_s=1
        )
        saved = await w.load(schedule.client_id)
    assert [(a["value"]["phq9_item9"], a["value"]["raised_during"]) for a in alerts] == [
        (2, "session")
    ]
    assert completions == []  # the completion itself stays refused
    assert saved.course == checked_in.course


def test_the_scheduler_may_publish_clinical_alerts() -> None:
    assert topics.CLINICAL_ALERT_RAISED in topics.produced_by("scheduler")
