"""The clinic's scheduling configuration: hours, therapists, rooms, closures and course policy.

Loaded from the clinic's JSON configuration and changed through the HTTP API, so every model
validates itself and rejects unknown fields (a typo in a config file must not pass silently).
Wall-clock times (`time`, `date`) are clinic-local; instants are aware and normalised to UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from itertools import pairwise
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    field_validator,
    model_validator,
)

from shared.events import (
    AppointmentKind,
    BoosterPlan,
    ClinicId,
    Instrument,
    MeasurePoint,
    TimeZoneName,
)

Weekday = Annotated[int, Field(ge=0, le=6, description="0 = Monday")]
ResourceId = Annotated[str, Field(min_length=1, max_length=64)]
IntegrationPattern = Literal["after_every_dose", "after_doses_1_2_then_every_second"]


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeRange(Config):
    """A clinic-local wall-clock range within one day, [start, end); never crosses midnight."""

    start: time
    end: time

    @model_validator(mode="after")
    def _ordered_wall_times(self) -> Self:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("wall-clock times carry no zone: the clinic's time zone applies")
        if self.start >= self.end:
            raise ValueError("start must be before end (a range cannot cross midnight)")
        return self


class WeeklyHours(RootModel[dict[Weekday, tuple[TimeRange, ...]]]):
    """Local ranges per weekday (JSON keys "0".."6", 0 = Monday); an absent weekday is closed."""

    model_config = ConfigDict(frozen=True)

    @field_validator("root")
    @classmethod
    def _sorted_without_overlap(
        cls, days: dict[int, tuple[TimeRange, ...]]
    ) -> dict[int, tuple[TimeRange, ...]]:
        tidy: dict[int, tuple[TimeRange, ...]] = {}
        for weekday, ranges in days.items():
            ordered = tuple(sorted(ranges, key=lambda r: r.start))
            for earlier, later in pairwise(ordered):
                if later.start < earlier.end:
                    raise ValueError(f"ranges overlap on weekday {weekday}")
            if ordered:
                tidy[weekday] = ordered
        return tidy

    def on(self, weekday: int) -> tuple[TimeRange, ...]:
        return self.root.get(weekday, ())


# The clinic's hours and a therapist's availability have the same shape.
OpeningHours = WeeklyHours


class Interval(Config):
    """A span of real time, [starts_at, ends_at), stored in UTC."""

    starts_at: AwareDatetime
    ends_at: AwareDatetime

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _in_utc(cls, instant: datetime) -> datetime:
        return instant.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.starts_at >= self.ends_at:
            raise ValueError("starts_at must be before ends_at")
        return self


class Therapist(Config):
    """Time off is a list of aware instants, not local dates: a half-day absence or a
    multi-day leave are both one interval, and an instant means the same in every zone."""

    id: ResourceId
    display_name: str = Field(min_length=1, max_length=200)
    availability: WeeklyHours
    time_off: tuple[Interval, ...] = ()


class Room(Config):
    """A treatment room with a recliner; only medicine sessions need one."""

    id: ResourceId
    name: str = Field(min_length=1, max_length=200)


class CheckInPolicy(Config):
    """Check-in before a medicine session and its record (protocol rules 16, 17).

    Blood pressure passes at the limit (140/90 passes, 141/90 or 140/91 does not),
    as "above 140/90" blocks at screening. Heart rate is recorded, not judged: the
    protocol sets it no limit, so staff read it with the rest.
    """

    systolic_limit: int = Field(default=140, ge=90, le=220, description="mmHg, inclusive")
    diastolic_limit: int = Field(default=90, ge=50, le=140, description="mmHg, inclusive")
    opens_minutes_before: int = Field(
        default=120, ge=0, le=24 * 60, description="Earliest check-in before the session starts"
    )
    completion_requires_checkin: bool = Field(
        default=True, description="A medicine session is completed only after a passed check-in"
    )
    min_monitoring_minutes: int = Field(
        default=120, ge=0, le=24 * 60, description="From dosing to discharge, at least"
    )


SCHEDULED_POINTS = frozenset(
    {
        MeasurePoint.PRE_DOSE,
        MeasurePoint.END_OF_COURSE,
        MeasurePoint.MONTH_1,
        MeasurePoint.MONTH_3,
        MeasurePoint.MONTH_6,
    }
)


class MeasurePolicy(Config):
    """The schedule of PHQ-9/GAD-7 measures (protocol rules 3, 21; domain.measures).

    Leave a point out of `points` to switch it off (none: no measures asked); the
    enrolment measure is intake's, not scheduled here.
    """

    points: frozenset[MeasurePoint] = SCHEDULED_POINTS
    instruments: tuple[Instrument, ...] = Field(
        default=(Instrument.PHQ9, Instrument.GAD7), min_length=1
    )
    pre_dose_hours: int = Field(
        default=48, ge=1, le=24 * 14, description="Opens this long before each dose's start"
    )
    end_of_course_days: int = Field(
        default=7, ge=1, le=60, description="Open this long from the last dose's completion"
    )
    follow_up_local_time: time = Field(
        default=time(9, 0), description="Clinic-local time the 1, 3 and 6 month measures open"
    )
    follow_up_days: int = Field(default=14, ge=1, le=60, description="How long a follow-up is open")

    @field_validator("points")
    @classmethod
    def _scheduled_points(cls, points: frozenset[MeasurePoint]) -> frozenset[MeasurePoint]:
        if wrong := points - SCHEDULED_POINTS:
            raise ValueError(f"not scheduled points: {sorted(wrong)} (enrolment is intake's)")
        return points

    @field_validator("instruments")
    @classmethod
    def _instruments_once(cls, instruments: tuple[Instrument, ...]) -> tuple[Instrument, ...]:
        if len(set(instruments)) != len(instruments):
            raise ValueError("each instrument at most once")
        return instruments


class CoursePolicy(Config):
    """The clinic's course rules; defaults are the protocol's (docs: kap-protocol.md)."""

    consultation_minutes: int = Field(default=30, ge=5, le=240)
    preparation_sessions: int = Field(default=1, ge=1, le=5)
    preparation_minutes: int = Field(default=60, ge=5, le=480)
    medicine_sessions: int = Field(default=6, ge=1, le=12)
    medicine_minutes: int = Field(default=180, ge=30, le=480)
    min_hours_between_doses: int = Field(
        default=48, ge=0, le=24 * 14, description="Start to start, in real hours"
    )
    max_doses_per_week: int = Field(
        default=2, ge=1, le=7, description="Per clinic-local calendar week, Monday to Sunday"
    )
    course_window_days: int = Field(default=21, ge=1, le=42)
    integration_minutes: int = Field(default=60, ge=5, le=480)
    integration_days_after: tuple[int, int] = Field(
        default=(1, 3), description="Earliest and latest clinic-local day after each dose"
    )
    integration_pattern: IntegrationPattern = "after_every_dose"
    cancellation_window_hours: int = Field(default=48, ge=0, le=24 * 14)
    min_notice_hours: int = Field(
        default=24,
        ge=0,
        le=24 * 14,
        description="A re-planned or moved session starts at least this long after the change, "
        "unless staff allow short notice",
    )
    slot_step_minutes: int = Field(default=15, ge=5, le=60)
    course_in_consultation_times: bool = Field(
        default=False,
        description="Plan the course inside the weekly windows given for the consultation "
        "when the client set no availability of their own (off: those windows are often "
        "shorter than a medicine session)",
    )
    booster: BoosterPlan = BoosterPlan()
    booster_due_local_time: time = time(9, 0)
    booster_booking_days: tuple[int, int] = Field(
        default=(0, 7),
        description="Clinic-local days from a booster's due date: the first and last day its "
        "session may be booked on",
    )
    book_boosters: bool = Field(
        default=True,
        description="Book each booster's sessions when it falls due (off: announced only)",
    )
    checkin: CheckInPolicy = CheckInPolicy()
    review_after_no_shows: int = Field(
        default=2, ge=1, le=12, description="Consecutive medicine no-shows before a review hold"
    )
    offer_expiry_hours: int = Field(
        default=24, ge=1, le=24 * 7, description="How long a freed slot is offered to one client"
    )
    consultation_no_show_rebooks: int = Field(
        default=1, ge=0, le=3, description="Consultation no-shows rebooked before the waitlist"
    )
    earliest_search_days: int = Field(
        default=365, ge=28, le=730, description="How far ahead the earliest date is searched"
    )
    measures: MeasurePolicy = MeasurePolicy()

    @field_validator("integration_days_after")
    @classmethod
    def _integration_days_ordered(cls, days: tuple[int, int]) -> tuple[int, int]:
        # Day 0 is excluded: a course has at most one session per client per local day.
        earliest, latest = days
        if not 1 <= earliest <= latest <= 14:
            raise ValueError("integration days must satisfy 1 <= earliest <= latest <= 14")
        return days

    @field_validator("booster_booking_days")
    @classmethod
    def _booster_days_ordered(cls, days: tuple[int, int]) -> tuple[int, int]:
        first, last = days
        if not 0 <= first <= last <= 28:
            raise ValueError("booster booking days must satisfy 0 <= first <= last <= 28")
        return days

    @field_validator("slot_step_minutes")
    @classmethod
    def _step_divides_an_hour(cls, minutes: int) -> int:
        # So the grid stays on round local times when a DST change shifts the clock an hour.
        if 60 % minutes:
            raise ValueError("slot_step_minutes must divide 60")
        return minutes

    @model_validator(mode="after")
    def _doses_fit_the_window(self) -> Self:
        shortest_days = (self.medicine_sessions - 1) * self.min_hours_between_doses / 24
        if shortest_days >= self.course_window_days:
            raise ValueError("the doses cannot fit the course window at the minimum spacing")
        return self

    def integration_follows(self, dose_number: int) -> bool:
        if self.integration_pattern == "after_every_dose":
            return True
        return dose_number <= 2 or dose_number % 2 == 0

    def minutes_of(self, kind: AppointmentKind) -> int:
        match kind:
            case AppointmentKind.CONSULTATION:
                return self.consultation_minutes
            case AppointmentKind.PREPARATION:
                return self.preparation_minutes
            case AppointmentKind.MEDICINE:
                return self.medicine_minutes
            case AppointmentKind.INTEGRATION:
                return self.integration_minutes
        raise ValueError(f"the course policy sets no length for {kind} sessions")


class ClinicCalendar(Config):
    clinic_id: ClinicId
    timezone: TimeZoneName
    opening_hours: WeeklyHours
    therapists: tuple[Therapist, ...] = ()
    rooms: tuple[Room, ...] = ()
    closures: frozenset[date] = Field(default=frozenset(), description="Closed local dates")
    policy: CoursePolicy = CoursePolicy()

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        for what, ids in (
            ("therapist", [t.id for t in self.therapists]),
            ("room", [r.id for r in self.rooms]),
        ):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{what} ids must be unique")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances per key
