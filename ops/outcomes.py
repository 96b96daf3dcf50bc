"""Clinics' outcomes as the scheduler reports them: the cohort table, and a chart.

Reads `GET /v1/clinics/{clinic}/outcomes` of the scheduler with each clinic's
key; imports no service. The chart is the mean PHQ-9 at baseline, at the end of
the course and 1, 3 and 6 months after, each with its 95% interval, one line
per clinic; a clinic whose courses number under 10 is drawn dashed and marked:
its figures are the clinic's own and are never published.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

POINTS = ("baseline", "end_of_course", "month_1", "month_3", "month_6")
LABELS = ("Baseline", "End of course", "1 month", "3 months", "6 months")
# PHQ-9 severity by its cut points 5/10/15/20 (protocol rule 3), shaded behind the lines.
BANDS = (
    (0, 5, "minimal"),
    (5, 10, "mild"),
    (10, 15, "moderate"),
    (15, 20, "moderately severe"),
    (20, 27, "severe"),
)


async def fetch_outcomes(url: str, clinic_id: str, api_key: str) -> dict[str, Any]:
    """The clinic's outcomes from the scheduler's API (raises on an error answer)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        answer = await client.get(
            f"/v1/clinics/{clinic_id}/outcomes", headers={"X-API-Key": api_key}
        )
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found


def _estimate(found: dict[str, Any] | None, signed: bool = False) -> str:
    if not found:
        return "-"
    interval = found.get("ci95")
    bounds = f" ({interval[0]:.1f} to {interval[1]:.1f})" if interval else ""
    return f"{found['mean']:{'+' if signed else ''}.1f}{bounds}"


def table_lines(outcomes: dict[str, Any]) -> list[str]:
    """The cohort table as text: one line per cohort month and measure point."""
    lines = [
        f"clinic {outcomes['clinic_id']} ({outcomes['timezone']}): "
        f"{outcomes['courses_in_progress']} course(s) in progress; cohorts under "
        f"{outcomes['minimum_cohort']} are never published",
        f"{'month':<8} {'point':<14} {'started':>7} {'ended':>5} {'measured':>8} "
        f"{'awaiting':>8}  {'mean change (95% CI)':<24} {'response':>8} {'remission':>9}  status",
    ]
    for row in outcomes["cohorts"]:
        shown = _estimate(row["change"], signed=True)
        status = "suppressed" if row["suppressed"] else "final" if row["final"] else "open"
        lines.append(
            f"{row['month']:<8} {row['point']:<14} {row['clients_started']:>7} "
            f"{row['ended_early']:>5} {row['clients_measured']:>8} {row['awaiting']:>8}  "
            f"{shown:<24} {row['response_rate']:>8.0%} {row['remission_rate']:>9.0%}  {status}"
        )
    if not outcomes["cohorts"]:
        lines.append("(no course has ended yet)")
    means = ", ".join(
        f"{s['point']} {_estimate(s['phq9'])} n={s['phq9']['n'] if s['phq9'] else 0}"
        for s in outcomes["by_point"]
    )
    lines.append(f"mean PHQ-9 by point: {means}")
    return lines


def _series(outcomes: dict[str, Any]) -> tuple[list[float], list[float], list[float], list[int]]:
    """Means, distances down and up to the interval's bounds, and n, at each point."""
    by_point = {s["point"]: s["phq9"] for s in outcomes["by_point"]}
    means, down, up, counts = [], [], [], []
    for point in POINTS:
        found = by_point.get(point)
        mean = found["mean"] if found else math.nan
        low, high = (found or {}).get("ci95") or (mean, mean)
        means.append(mean)
        down.append(mean - low)
        up.append(high - mean)
        counts.append(found["n"] if found else 0)
    return means, down, up, counts


def write_chart(outcomes_by_clinic: Mapping[str, dict[str, Any]], path: Path) -> Path:
    """A PNG of each clinic's mean PHQ-9 by measure point with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=(10, 6), dpi=120)
    for low, high, name in BANDS:
        axes.axhspan(low, high, color="0.5", alpha=0.04 + 0.025 * BANDS.index((low, high, name)))
        axes.text(4.45, (low + high) / 2, name, va="center", ha="left", fontsize=8, color="0.35")
    count = len(outcomes_by_clinic)
    counts_at: list[list[str]] = [[] for _ in POINTS]
    for index, (clinic_id, outcomes) in enumerate(outcomes_by_clinic.items()):
        means, down, up, counts = _series(outcomes)
        shift = (index - (count - 1) / 2) * 0.08  # side by side, so intervals do not overlap
        small = any(s["suppressed"] for s in outcomes["by_point"])
        started = outcomes["by_point"][0]["clients_started"]
        label = f"{clinic_id}: {started} course(s) ended" + (
            " (under 10: never published)" if small else ""
        )
        axes.errorbar(
            [x + shift for x in range(len(POINTS))], means, yerr=[down, up], marker="o",
            markersize=6, linewidth=2, capsize=5, linestyle="--" if small else "-", label=label,
        )  # fmt: skip
        for at, n in zip(counts_at, counts, strict=True):
            at.append(str(n))
    ticks = [f"{label}\nn = {' / '.join(n)}" for label, n in zip(LABELS, counts_at, strict=True)]
    axes.set_xticks(range(len(POINTS)), ticks, fontsize=10)
    axes.set_xlim(-0.4, 5.3)
    axes.set_ylim(0, 27)
    axes.set_ylabel("Mean PHQ-9 (bars: 95% interval)", fontsize=10)
    axes.set_title("PHQ-9 by measure point, courses ended (completed or ended early)")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, fontsize=9, frameon=False,
        title="n under each point: clients measured there"
        + (", per clinic in this order" if count > 1 else ""),
        title_fontsize=8,
    )  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


async def write_outcomes_chart(scheduler_url: str, api_keys: Mapping[str, str], path: Path) -> Path:
    """Fetch each clinic's outcomes (clinic id -> its API key) and write their chart."""
    found = {
        clinic: await fetch_outcomes(scheduler_url, clinic, key) for clinic, key in api_keys.items()
    }
    return write_chart(found, path)
