"""A client's PHQ-9 and GAD-7 over time, drawn on the server as SVG (no script).

Two series on one time axis, each on its own scale (PHQ-9 0-27, GAD-7 0-21, as a
share of its maximum): PHQ-9 as filled circles on a solid line, GAD-7 as squares on
a dashed one, so they differ by shape and stroke, not by colour alone; every point
also carries its value as text, and the page gives the same figures as a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 20, 40
SCALES = {"phq9": 27, "gad7": 21}


def measures_svg(measures: Sequence[dict[str, Any]], title: str, zone: str) -> str:
    """The chart of `measures` (each with `authored`, `phq9`, `gad7`), oldest first, its
    dates on the clinic's calendar (`zone`)."""
    points = sorted((m for m in measures if m.get("authored")), key=lambda m: str(m["authored"]))
    if not points:
        return ""
    times = [datetime.fromisoformat(str(m["authored"])).timestamp() for m in points]
    span = max(times[-1] - times[0], 1.0)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (inner_w * (t - times[0]) / span if len(points) > 1 else inner_w / 2)

    def y(value: float, scale: int) -> float:
        return TOP + inner_h * (1 - value / scale)

    parts = [
        '<svg class="chart" role="img" aria-labelledby="chart-title"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<line x1="{LEFT}" y1="{TOP + inner_h}" x2="{WIDTH - RIGHT}" y2="{TOP + inner_h}"'
        ' stroke="#4a5360"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + inner_h}" stroke="#4a5360"/>',
        f'<text x="4" y="{TOP + 4}" font-size="11">max</text>',
        f'<text x="4" y="{TOP + inner_h}" font-size="11">0</text>',
    ]
    for series, dashed, marker in (("phq9", False, "circle"), ("gad7", True, "square")):
        scale = SCALES[series]
        placed = [
            (x(t), y(float(m[series]), scale), m[series])
            for t, m in zip(times, points, strict=True)
            if m.get(series) is not None
        ]
        if not placed:
            continue
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in placed)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<polyline class="{series}" points="{line}" fill="none" stroke="#0b5cad"'
            f' stroke-width="2"{dash}/>'
        )
        for px, py, value in placed:
            if marker == "circle":
                parts.append(
                    f'<circle class="{series}" cx="{px:.1f}" cy="{py:.1f}" r="4" fill="#0b5cad"/>'
                )
            else:
                parts.append(
                    f'<rect class="{series}" x="{px - 4:.1f}" y="{py - 4:.1f}" width="8" height="8"'
                    ' fill="#fff" stroke="#0b5cad" stroke-width="2"/>'
                )
            label = "PHQ-9" if series == "phq9" else "GAD-7"
            parts.append(
                f'<text x="{px + 6:.1f}" y="{py - 6:.1f}" font-size="11">{label} {value}</text>'
            )
    for t, m in zip(times, points, strict=True):
        authored = datetime.fromisoformat(str(m["authored"])).astimezone(ZoneInfo(zone))
        parts.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - 16}" font-size="11"'
            f' text-anchor="middle">{authored:%d %b}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
