"""The scheduler: its doors over one write step.

Reactions to events (reactions.py), the clinic's requests (requests.py,
course_requests.py, booster_requests.py), the booster and measure timers
(timers.py, measure_timers.py), the measures answered (measure_answers.py), the
waitlist's offers (offers.py) and the outcomes' publication (outcome_requests.py)
each decide in pure code and record through changes.ScheduleChanges, i.e.
chassis.unit_of_work; none holds a Redis type of its own beyond the pipeline a
decision's writes are queued on.
"""

from __future__ import annotations

from services.scheduler.booster_requests import BoosterRequests
from services.scheduler.course_requests import CourseRequests
from services.scheduler.measure_answers import MeasureAnswers
from services.scheduler.measure_timers import MeasureTimers
from services.scheduler.offers import Offers
from services.scheduler.outcome_requests import OutcomeRequests
from services.scheduler.reactions import Reactions
from services.scheduler.timers import BoosterTimers


class Scheduler(
    Reactions,
    CourseRequests,
    BoosterRequests,
    BoosterTimers,
    MeasureTimers,
    MeasureAnswers,
    Offers,
    OutcomeRequests,
):
    pass
