"""Arithmetic on sorted, disjoint spans of UTC epoch seconds.

The planner works in integer seconds: comparing and adding ints is several times cheaper
than doing the same with aware datetimes, and every instant here is UTC anyway.
"""

from __future__ import annotations

from collections.abc import Iterable

Span = tuple[int, int]
Spans = tuple[Span, ...]


def merge(spans: Iterable[Span]) -> Spans:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((start, end) for start, end in merged)


def intersect(a: Spans, b: Spans) -> Spans:
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def subtract(free: Spans, busy: Spans) -> Spans:
    """`free` without `busy`; busy spans must be sorted by start but may overlap."""
    if not busy:
        return free
    out: list[Span] = []
    j = 0
    for start, end in free:
        while j < len(busy) and busy[j][1] <= start:
            j += 1
        k = j
        while k < len(busy) and busy[k][0] < end:
            if busy[k][0] > start:
                out.append((start, busy[k][0]))
            start = max(start, busy[k][1])
            k += 1
        if start < end:
            out.append((start, end))
    return tuple(out)


def covers(free: Spans, start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in free)


def earliest_fit(free: Spans, not_before: int, length: int, origin: int, step: int) -> int | None:
    """The first start on the grid origin + k*step with [start, start+length) inside `free`."""
    for a, b in free:
        start = max(a, not_before)
        start += -(start - origin) % step
        if start + length <= b:
            return start
    return None


def latest_fit(free: Spans, not_before: int, length: int, origin: int, step: int) -> int | None:
    """The last start on the grid origin + k*step with [start, start+length) inside `free`."""
    for a, b in reversed(free):
        start = b - length
        start -= (start - origin) % step
        if start >= max(a, not_before):
            return start
    return None
