"""Every service writes through the one write step (issue 15): no transaction, WATCH or
lock of its own in services/, so no check-then-act outside chassis.unit_of_work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[3] / "services"

# What a write path of its own would need: a MULTI, a WATCH, a lock.
FORBIDDEN = {
    "a transaction pipeline": re.compile(r"pipeline\(\s*transaction\s*=\s*True"),
    "a bare pipeline (a MULTI by default)": re.compile(r"\.pipeline\(\s*\)"),
    "MULTI": re.compile(r"\.multi\(\)"),
    "WatchError": re.compile(r"\bWatchError\b"),
    "a WATCH on a raw pipeline": re.compile(r"\b(?:pipe|pipeline|p)\.watch\("),
    "a Redis lock": re.compile(r"\.lock\("),
}


def _sources() -> list[Path]:
    return sorted(p for p in SERVICES.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SERVICES)))
def test_a_service_module_has_no_write_path_of_its_own(path: Path) -> None:
    text = path.read_text()
    found = [what for what, pattern in FORBIDDEN.items() if pattern.search(text)]
    assert found == [], f"{path.relative_to(SERVICES)} uses {', '.join(found)}"


def test_the_check_sees_a_write_path_of_its_own() -> None:
    """The patterns catch what they are meant to (a check that cannot fail proves nothing)."""
    samples = [
        "async with self._redis.pipeline(transaction=True) as tx:",
        "tx.multi()",
        "except WatchError:",
        "lock = self.redis.lock(name)",
        "await pipe.watch(key)",
    ]
    for sample in samples:
        assert any(p.search(sample) for p in FORBIDDEN.values()), sample
