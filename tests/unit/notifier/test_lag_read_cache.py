"""The schedule-lag gate reads each uncommitted record once (lag._Read): what it keeps
answers later asks exactly as reading again would."""

from __future__ import annotations

from services.notifier.lag import _Read
from services.notifier.lag_records import Change


def change(n: int) -> Change:
    return Change(b"client", frozenset({f"appt-{n}"}), ("lisbon", f"event-{n}", "client"))


def test_what_was_read_answers_again_and_forgets_what_was_committed() -> None:
    read = _Read(since=10, upto=10)
    read.add((offset, 1_000 + offset, change(offset)) for offset in range(10, 15))
    read.upto = 15
    assert [c.event for c in read.changes(10, 15, older_than_ms=1_013)] == [
        ("lisbon", "event-10", "client"),
        ("lisbon", "event-11", "client"),
        ("lisbon", "event-12", "client"),
    ]
    read.forget_before(12)  # the group committed up to 12 meanwhile
    assert [c.event for c in read.changes(12, 15, older_than_ms=10_000)] == [
        ("lisbon", "event-12", "client"),
        ("lisbon", "event-13", "client"),
        ("lisbon", "event-14", "client"),
    ]
    read.add([(14, 1_014, change(99)), (15, 1_015, change(15))])  # 14 again: not twice
    assert [c.event[1] for c in read.changes(12, 16, older_than_ms=10_000) if c.event] == [
        "event-12",
        "event-13",
        "event-14",
        "event-15",
    ]
