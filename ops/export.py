"""A client's whole history, read back from the topics, for a records request.

Kafka is the record (issue 18): every event about a client is keyed by the client's id,
so their history is every record with that key on the catalogue's topics and on their
dead-letter topics (what a service refused is part of what was said about them). Read
with no consumer group, nothing committed; every topic is read to its current end, so
the cost grows with the topics, not the client (a records request is rare).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ops.reading import read_to_end
from shared.topics import ALL


def topic_names() -> list[str]:
    """Where a client's events live: the catalogue and its dead-letter topics."""
    return [name for topic in ALL for name in (topic.name, topic.dead_letters)]


def entry(record: Any) -> dict[str, Any]:
    """One record as exported: where it sits, Kafka's time, its headers and its value."""
    raw = record.value or b""
    try:
        value: Any = json.loads(raw)
    except ValueError:  # a dead letter may be anything; kept as text, not dropped
        value = raw.decode(errors="replace")
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "appended_at": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(),
        "headers": {k: v.decode(errors="replace") for k, v in record.headers},
        "value": value,
    }


async def client_history(
    bootstrap: str, client_id: str, *, security: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every record keyed by `client_id`, in the order Kafka appended them (its record time,
    then topic and offset: one client's records of one topic share a partition, so each
    topic's own order is kept exactly)."""
    names = topic_names()
    raw = await read_to_end(bootstrap, names, security=security)
    wanted = client_id.encode()
    mine = sorted(
        (r for r in raw if r.key == wanted), key=lambda r: (r.timestamp, r.topic, r.offset)
    )
    return {
        "client_id": client_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "topics_read": names,
        "events": [entry(r) for r in mine],
    }
