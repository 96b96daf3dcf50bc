"""A configuration mistake keeps the last good configuration (issue 14, fault 7).

A clinics file caught half-written (an editor saving, a deploy copying) used to
raise JSONDecodeError or ValidationError from every lookup, errors the
dead-letter middleware classes as permanent: every message handled meanwhile
went to the DLQ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chassis.clinics import Clinic, ClinicDirectory, PerVersion
from chassis.metrics import ServiceMetrics
from tests.helpers import write_clinics


def _touch_later(path: Path) -> None:
    """A new mtime even on a file system with coarse timestamps."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_a_half_written_file_keeps_the_last_good_clinics(tmp_path: Path) -> None:
    path = write_clinics(tmp_path / "clinics.json")
    directory = ClinicDirectory(path)
    assert directory.get("lisbon") is not None

    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    _touch_later(path)

    clinic = directory.get("lisbon")
    assert clinic is not None
    assert clinic.timezone == "Europe/Lisbon"
    assert {c.id for c in directory.all()} == {"lisbon", "boston"}


def test_an_invalid_entry_keeps_the_last_good_clinics(tmp_path: Path) -> None:
    path = write_clinics(tmp_path / "clinics.json")
    directory = ClinicDirectory(path)
    assert directory.get("boston") is not None

    entries = json.loads(path.read_text())
    entries[1]["timezone"] = ""  # one bad entry: the whole file waits for a fix
    path.write_text(json.dumps(entries))
    _touch_later(path)

    assert directory.get("boston") is not None
    assert directory.get("boston").timezone == "America/New_York"  # type: ignore[union-attr]


def test_errors_are_counted_and_logged_once_per_version_of_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_clinics(tmp_path / "clinics.json")
    metrics = ServiceMetrics("scheduler")
    directory = ClinicDirectory(path, metrics=metrics)
    directory.all()
    path.write_text("[{")
    _touch_later(path)
    for _ in range(3):
        directory.all()
    assert _sample(metrics, "kap_configuration_errors_total") == 1.0
    assert [r for r in caplog.records if r.levelname == "ERROR"], "a mistake is logged loudly"
    assert not directory.healthy

    write_clinics(path)
    _touch_later(path)
    assert directory.get("lisbon") is not None
    assert directory.healthy


def test_a_file_never_good_raises_a_configuration_error_not_a_permanent_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "clinics.json"
    from chassis.clinics import ConfigurationError  # new with the fix

    path.write_text('[{"id": "lisbon", "na')
    directory = ClinicDirectory(path)
    with pytest.raises(ConfigurationError):
        directory.get("lisbon")


def _sample(metrics: ServiceMetrics, name: str) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"no sample {name}")


def test_a_file_completed_within_the_same_timestamp_tick_is_read_again(tmp_path: Path) -> None:
    """A reader that caught the file half-written must not wait for the next mtime change.

    File times move in coarse ticks: the writer's last write can land in the
    same tick as the half it was read at, so an unchanged mtime proves nothing
    after a failed read.
    """
    path = tmp_path / "clinics.json"
    write_clinics(path)
    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    caught_at = path.stat().st_mtime_ns
    directory = ClinicDirectory(path)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the half file raises
        directory.all()

    path.write_text(whole)
    os.utime(path, ns=(caught_at, caught_at))  # the same tick
    assert {c.id for c in directory.all()} == {"lisbon", "boston"}


def test_what_is_derived_from_a_clinic_is_made_once_per_version(tmp_path: Path) -> None:
    """PerVersion (issue 19): the notifier validated its section and the scheduler
    serialised its calendar on every event. Made once per clinic version; a new version
    of the file is derived afresh, and a derivation that fails is not kept."""
    path = write_clinics(tmp_path / "clinics.json")
    directory = ClinicDirectory(path)
    made: list[str] = []

    def timezone_of(clinic: Clinic) -> str:
        made.append(clinic.timezone)
        if clinic.timezone == "Asia/Tokyo":
            raise ValueError("not this one")
        return clinic.timezone

    derived = PerVersion(timezone_of)
    lisbon = directory.get("lisbon")
    assert lisbon is not None
    assert [derived(lisbon), derived(lisbon), derived(directory.get("lisbon"))] == [
        "Europe/Lisbon"
    ] * 3
    assert made == ["Europe/Lisbon"]

    entries = json.loads(path.read_text())
    for entry in entries:
        if entry["id"] == "lisbon":
            entry["timezone"] = "Asia/Tokyo"
    path.write_text(json.dumps(entries))
    _touch_later(path)
    moved = directory.get("lisbon")
    assert moved is not None
    assert moved.timezone == "Asia/Tokyo"
    for _ in range(2):
        with pytest.raises(ValueError, match="not this one"):
            derived(moved)
    assert made == ["Europe/Lisbon", "Asia/Tokyo", "Asia/Tokyo"]
