"""The console's pure rules: who may do what, passwords, times in the clinic's zone."""

from __future__ import annotations

import pytest

from chassis.staff_tokens import Role
from services.console.domain import (
    Action,
    StaffMember,
    hash_password,
    password_matches,
)
from services.console.pages import shown_in


def member(role: Role, group_admin: bool = False) -> StaffMember:
    return StaffMember(
        email="a@lisbon.example",
        name="A",
        role=role,
        clinics=("lisbon",),
        group_admin=group_admin,
        password_hash=hash_password("pw-123456"),
    )


def test_a_front_desk_books_but_records_nothing_clinical() -> None:
    desk = member(Role.FRONT_DESK)
    assert desk.may(Action.REQUEST_CONSULTATION)
    for clinical in (Action.RECORD_CONSULTATION, Action.RECORD_SCREENING, Action.ENROL):
        assert not desk.may(clinical)
        assert member(Role.CLINICIAN).may(clinical)
        assert member(Role.CLINIC_ADMIN).may(clinical)


def test_only_a_group_admin_works_at_another_clinic() -> None:
    group = ("lisbon", "boston")
    assert not member(Role.CLINIC_ADMIN).works_at("boston", group)
    assert member(Role.CLINIC_ADMIN, group_admin=True).works_at("boston", group)
    assert not member(Role.CLINIC_ADMIN, group_admin=True).works_at("elsewhere", group)


def test_passwords_are_argon2id_and_checked() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert password_matches(hashed, "correct horse")
    assert not password_matches(hashed, "wrong")
    assert not password_matches("not-a-hash", "correct horse")


@pytest.mark.parametrize(
    ("instant", "zone", "shown"),
    [
        # Lisbon moves its clocks forward on 29 March 2026 at 01:00 UTC.
        ("2026-03-29T00:30:00+00:00", "Europe/Lisbon", "Sun 29 Mar 2026, 00:30 (Europe/Lisbon)"),
        ("2026-03-29T01:30:00+00:00", "Europe/Lisbon", "Sun 29 Mar 2026, 02:30 (Europe/Lisbon)"),
        # Sydney moves its clocks back on 5 April 2026 at 16:00 UTC (the 4th).
        (
            "2026-04-04T15:30:00+00:00",
            "Australia/Sydney",
            "Sun 05 Apr 2026, 02:30 (Australia/Sydney)",
        ),
        (
            "2026-04-04T16:30:00+00:00",
            "Australia/Sydney",
            "Sun 05 Apr 2026, 02:30 (Australia/Sydney)",
        ),
        (None, "Europe/Lisbon", "—"),
    ],
)
def test_times_are_shown_on_the_clinics_wall_clock_across_daylight_saving(
    instant: str | None, zone: str, shown: str
) -> None:
    assert shown_in(instant, zone) == shown


def test_a_local_time_is_read_on_the_clinics_clock_and_a_skipped_one_refused() -> None:
    from services.console.pages import local_instant

    assert local_instant("2026-12-01T10:00", "Europe/Lisbon") == "2026-12-01T10:00:00+00:00"
    assert local_instant("2026-07-01T10:00", "Europe/Lisbon") == "2026-07-01T10:00:00+01:00"
    # 29 March 2026 in Lisbon: 01:00 jumps to 02:00, so 01:30 is no time there.
    with pytest.raises(ValueError, match="does not exist"):
        local_instant("2026-03-29T01:30", "Europe/Lisbon")
    # 5 April 2026 in Sydney: 02:30 happens twice; the first (daylight) one is taken.
    assert local_instant("2026-04-05T02:30", "Australia/Sydney") == "2026-04-05T02:30:00+11:00"
    with pytest.raises(ValueError, match="a date and a time"):
        local_instant("tomorrow", "Europe/Lisbon")


def test_the_chart_draws_each_measure_by_shape_with_its_value() -> None:
    from services.console.chart import measures_svg

    measures = [
        {"authored": "2026-04-01T23:30:00+00:00", "phq9": 18, "gad7": 12},
        {"authored": "2026-04-20T10:00:00+00:00", "phq9": 9, "gad7": None},
    ]
    svg = measures_svg(measures, "A <chart>", "Europe/Lisbon")
    assert svg.count('<circle class="phq9"') == 2
    assert svg.count('<rect class="gad7"') == 1  # no GAD-7 the second time: no point
    assert "PHQ-9 18" in svg
    assert "PHQ-9 9" in svg
    assert "GAD-7 12" in svg
    assert "A &lt;chart&gt;" in svg  # the title escaped
    assert "02 Apr" in svg  # 23:30 UTC on the 1st is the 2nd in Lisbon (summer time)
    assert measures_svg([], "none", "Europe/Lisbon") == ""
