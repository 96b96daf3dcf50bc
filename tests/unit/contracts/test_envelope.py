from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.envelope import Envelope, EnvelopeError, derived_event_id


def envelope() -> Envelope:
    return Envelope(
        id="root-1",
        source="/kap/intake",
        type="kap.intake.client.enrolled.v1",
        time=datetime(2026, 3, 27, 10, tzinfo=UTC),
        subject="client-1",
        clinic_id="lisbon",
        correlation_id="journey-1",
    )


def test_envelope_round_trips_through_kafka_headers() -> None:
    original = envelope()
    headers = original.to_headers()
    assert ("ce_specversion", b"1.0") in headers
    assert ("ce_time", b"2026-03-27T10:00:00Z") in headers
    assert Envelope.from_headers(headers) == original


def test_derived_event_keeps_the_journey_and_names_its_cause() -> None:
    cause = envelope()
    derived = cause.caused(
        role="course", source="/kap/scheduler", type="t", time=datetime(2026, 3, 28, tzinfo=UTC)
    )
    assert derived.correlation_id == cause.correlation_id
    assert derived.causation_id == cause.id
    assert derived.subject == cause.subject
    assert derived.clinic_id == cause.clinic_id


def test_derived_ids_are_deterministic_so_a_replay_reproduces_them() -> None:
    assert derived_event_id("e1", "course") == derived_event_id("e1", "course")
    assert derived_event_id("e1", "course") != derived_event_id("e1", "reminder")
    assert derived_event_id("e1", "course") != derived_event_id("e2", "course")


def test_missing_envelope_headers_are_named() -> None:
    headers = [(k, v) for k, v in envelope().to_headers() if k not in ("ce_id", "ce_clinicid")]
    with pytest.raises(EnvelopeError, match="ce_id, ce_clinicid"):
        Envelope.from_headers(headers)


def test_an_unknown_specversion_is_refused() -> None:
    headers = dict(envelope().to_headers())
    headers["ce_specversion"] = b"0.3"
    with pytest.raises(EnvelopeError, match="specversion"):
        Envelope.from_headers(headers)
