"""CloudEvents 1.0 envelope, carried as Kafka headers in binary content mode.

The payload is the event's JSON; everything about the message (who, when, why)
travels in `ce_*` headers so a consumer can route, deduplicate and trace without
parsing the body. Clinic, correlation and causation are CloudEvents extensions,
hence lowercase alphanumeric names.

Every event on a `public.` topic also carries `clientsequence`: 1, 2, 3... per client
(its subject) across all the public topics, given by the producer's write step
(chassis.unit_of_work), so a partner can put a client's events in order across
topics and see a gap. Internal events carry none. An event a staff member's request
caused (through the console) carries `actor`: their pseudonymous id and role
(chassis.staff_tokens); public events never do. `structured` gives an event in
CloudEvents structured JSON, as webhooks deliver it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"

# Derived ids are UUIDv5 in this namespace, so a replayed cause yields the same id.
EVENT_ID_NAMESPACE = uuid.UUID("5b7c2f4e-3a51-4d0c-9a43-0e6c1f2d8b17")

HEADER_ID = "ce_id"
HEADER_SOURCE = "ce_source"
HEADER_TYPE = "ce_type"
HEADER_SPECVERSION = "ce_specversion"
HEADER_TIME = "ce_time"
HEADER_SUBJECT = "ce_subject"
HEADER_CLINIC = "ce_clinicid"
HEADER_CORRELATION = "ce_correlationid"
HEADER_CAUSATION = "ce_causationid"
HEADER_SEQUENCE = "ce_clientsequence"
HEADER_ACTOR = "ce_actor"
HEADER_CONTENT_TYPE = "content-type"

REQUIRED_HEADERS = (
    HEADER_ID,
    HEADER_SOURCE,
    HEADER_TYPE,
    HEADER_SPECVERSION,
    HEADER_TIME,
    HEADER_SUBJECT,
    HEADER_CLINIC,
    HEADER_CORRELATION,
)


class EnvelopeError(ValueError):
    """A message whose headers do not form a valid envelope."""


def derived_event_id(cause_id: str, role: str) -> str:
    """The id of the event that `cause_id` produces in `role`; stable across replays."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{cause_id}/{role}"))


def new_event_id() -> str:
    return str(uuid.uuid4())


class Envelope(BaseModel):
    """Who sent a message, about which client of which clinic, and why."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    source: str = Field(min_length=1, description="URI reference of the producing service")
    type: str = Field(min_length=1, description="Event type: `kap.` and the topic's name")
    time: AwareDatetime
    subject: str = Field(min_length=1, description="The client id; also the Kafka key")
    clinic_id: str = Field(min_length=1)
    correlation_id: str = Field(min_length=1, description="One id per client journey")
    causation_id: str | None = Field(default=None, description="The event that caused this one")
    sequence: int | None = Field(
        default=None, ge=1, description="Public events: the client's 1, 2, 3... across topics"
    )
    actor: str | None = Field(
        default=None,
        max_length=200,
        description="The staff member whose request caused it (`staff:<id>/<role>`)",
    )
    specversion: str = SPEC_VERSION

    def caused(self, *, role: str, source: str, type: str, time: datetime) -> Self:
        """The envelope of an event this one causes: same journey, deterministic id."""
        return self.model_copy(
            update={
                "id": derived_event_id(self.id, role),
                "source": source,
                "type": type,
                "time": time.astimezone(UTC),
                "causation_id": self.id,
                "sequence": None,
                "actor": None,  # the reaction's own: not the cause's staff member
            }
        )

    def to_headers(self) -> list[tuple[str, bytes]]:
        headers = {
            HEADER_ID: self.id,
            HEADER_SOURCE: self.source,
            HEADER_TYPE: self.type,
            HEADER_SPECVERSION: self.specversion,
            HEADER_TIME: self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            HEADER_SUBJECT: self.subject,
            HEADER_CLINIC: self.clinic_id,
            HEADER_CORRELATION: self.correlation_id,
            HEADER_CONTENT_TYPE: CONTENT_TYPE,
        }
        if self.causation_id:
            headers[HEADER_CAUSATION] = self.causation_id
        if self.sequence is not None:
            headers[HEADER_SEQUENCE] = str(self.sequence)
        if self.actor is not None:
            headers[HEADER_ACTOR] = self.actor
        return [(name, value.encode()) for name, value in headers.items()]

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]]
    ) -> Self:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        text = {
            name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            for name, value in pairs
        }
        missing = [name for name in REQUIRED_HEADERS if not text.get(name)]
        if missing:
            raise EnvelopeError(f"missing envelope header(s): {', '.join(missing)}")
        if text[HEADER_SPECVERSION] != SPEC_VERSION:
            raise EnvelopeError(f"unsupported ce_specversion {text[HEADER_SPECVERSION]!r}")
        try:
            return cls(
                id=text[HEADER_ID],
                source=text[HEADER_SOURCE],
                type=text[HEADER_TYPE],
                time=datetime.fromisoformat(text[HEADER_TIME]),
                subject=text[HEADER_SUBJECT],
                clinic_id=text[HEADER_CLINIC],
                correlation_id=text[HEADER_CORRELATION],
                causation_id=text.get(HEADER_CAUSATION) or None,
                sequence=int(text[HEADER_SEQUENCE]) if text.get(HEADER_SEQUENCE) else None,
                actor=text.get(HEADER_ACTOR) or None,
            )
        except ValueError as error:
            raise EnvelopeError(f"invalid envelope: {error}") from error


def structured(envelope: Envelope, data: Mapping[str, object]) -> dict[str, object]:
    """The event in CloudEvents structured JSON (what a webhook's body carries): the
    envelope's attributes, extensions included, with the event as `data`."""
    attributes: dict[str, object] = {
        "specversion": envelope.specversion,
        "id": envelope.id,
        "source": envelope.source,
        "type": envelope.type,
        "time": envelope.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "subject": envelope.subject,
        "datacontenttype": CONTENT_TYPE,
        "clinicid": envelope.clinic_id,
        "correlationid": envelope.correlation_id,
    }
    if envelope.causation_id:
        attributes["causationid"] = envelope.causation_id
    if envelope.sequence is not None:
        attributes["clientsequence"] = envelope.sequence
    return {**attributes, "data": dict(data)}
