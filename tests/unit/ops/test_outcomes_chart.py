"""kapctl outcomes: the cohort table as text, and the PHQ-9 chart as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ops import outcomes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def estimate(mean: float, half: float, n: int) -> dict[str, Any]:
    return {"n": n, "mean": mean, "ci95": [mean - half, mean + half]}


def clinic_outcomes(clinic_id: str, started: int, means: list[float | None]) -> dict[str, Any]:
    """What the scheduler's GET /outcomes answers, for one cohort month."""
    points = outcomes.POINTS
    by_point = [
        {
            "point": point,
            "clients_started": started,
            "phq9": estimate(mean, 1.5 + index * 0.4, started - index) if mean else None,
            "suppressed": started < 10,
        }
        for index, (point, mean) in enumerate(zip(points, means, strict=True))
    ]
    row = {
        "month": "2026-04",
        "point": "end_of_course",
        "clients_started": started,
        "ended_early": 1,
        "clients_measured": started - 1,
        "awaiting": 0,
        "baseline": estimate(means[0] or 0, 1.5, started - 1),
        "score": estimate(means[1] or 0, 1.7, started - 1),
        "change": estimate((means[1] or 0) - (means[0] or 0), 1.9, started - 1),
        "response_rate": 0.6,
        "remission_rate": 0.3,
        "final": True,
        "suppressed": started < 10,
    }
    return {
        "clinic_id": clinic_id,
        "timezone": "Europe/Lisbon",
        "minimum_cohort": 10,
        "courses_in_progress": 2,
        "cohorts": [row],
        "by_point": by_point,
    }


def test_the_table_prints_each_cohort_with_its_interval_and_status() -> None:
    lines = outcomes.table_lines(clinic_outcomes("lisbon", 12, [16.2, 7.9, 8.4, None, None]))
    assert "2 course(s) in progress" in lines[0]
    row = lines[2]
    assert row.split()[:6] == ["2026-04", "end_of_course", "12", "1", "11", "0"]
    assert "-8.3 (-10.2 to -6.4)" in row
    assert "60%" in row
    assert "30%" in row
    assert row.endswith("final")
    assert "baseline 16.2 (14.7 to 17.7) n=12" in lines[-1]
    assert "month_3 - n=0" in lines[-1]


def test_a_small_cohort_is_marked_suppressed_in_the_table() -> None:
    lines = outcomes.table_lines(clinic_outcomes("boston", 9, [15.0, 9.0, None, None, None]))
    assert lines[2].endswith("suppressed")


def test_the_chart_is_a_png_with_a_line_per_clinic(tmp_path: Path) -> None:
    clinics = {
        "lisbon": clinic_outcomes("lisbon", 12, [16.2, 7.9, 8.4, 9.1, 9.8]),
        "boston": clinic_outcomes("boston", 9, [14.8, 8.8, 9.5, None, None]),
        "sydney": clinic_outcomes("sydney", 11, [17.1, 9.4, 10.2, 10.6, None]),
    }
    path = outcomes.write_chart(clinics, tmp_path / "charts" / "outcomes.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000  # drawn, not an empty canvas


def test_a_clinic_with_no_course_ended_yet_still_gets_a_chart(tmp_path: Path) -> None:
    empty = clinic_outcomes("boston", 0, [None, None, None, None, None])
    empty["cohorts"] = []
    assert "(no course has ended yet)" in outcomes.table_lines(empty)
    path = outcomes.write_chart({"boston": empty}, tmp_path / "empty.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
