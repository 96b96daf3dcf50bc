"""A partner's view of the KAP platform: read the public topics, nothing else.

Uses only aiokafka and jsonschema plus the published JSON Schemas (docs/schemas);
it imports nothing from the project, as a partner's code would not.

    python examples/partner_consumer.py --bootstrap 127.0.0.1:9092 --group partner-acme

On the secured platform (compose/secure.yml) a partner logs in as its SCRAM
principal, and may only use consumer groups named `partner-*`:

    KAFKA_SASL_PASSWORD=... python examples/partner_consumer.py --bootstrap kafka:19092 \
        --username partner --group partner-acme

Each message is printed as one JSON line with its CloudEvents attributes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
PUBLIC_TOPICS = ("public.client.stage-reached.v1", "public.appointment.status-changed.v1")


def load_validators(schemas: Path = SCHEMAS) -> dict[str, jsonschema.Draft202012Validator]:
    return {
        topic: jsonschema.Draft202012Validator(json.loads((schemas / f"{topic}.json").read_text()))
        for topic in PUBLIC_TOPICS
    }


async def public_events(
    bootstrap: str,
    group: str,
    *,
    from_beginning: bool = False,
    since: datetime | None = None,
    username: str | None = None,
    password: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Validated public events, committed after the caller has taken each one.

    A new group starts at the end (or the beginning, `from_beginning`); `since`
    replays from an instant instead, whatever the group committed. With a
    username, logs in with SASL/SCRAM-SHA-512 (the secured platform).
    """
    validators = load_validators()
    login: dict[str, Any] = {}
    if username:
        login = {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": username,
            "sasl_plain_password": password,
        }
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **login,
    )
    consumer.subscribe(PUBLIC_TOPICS, listener=_ReplayFrom(consumer, since) if since else None)
    await consumer.start()
    try:
        async for record in consumer:
            headers = {k: v.decode() for k, v in record.headers}
            payload = json.loads(record.value)
            # A tolerant reader: validation checks what we rely on; extra fields pass.
            validators[record.topic].validate(payload)
            yield {
                "topic": record.topic,
                "id": headers.get("ce_id"),
                "type": headers.get("ce_type"),
                "time": headers.get("ce_time"),
                "clinic": headers.get("ce_clinicid"),
                "data": payload,
            }
            await consumer.commit()
    finally:
        await consumer.stop()


class _ReplayFrom(ConsumerRebalanceListener):
    """On every assignment, seek each partition to its first record at or after `since`."""

    def __init__(self, consumer: AIOKafkaConsumer, since: datetime) -> None:
        self._consumer, self._ms = consumer, int(since.timestamp() * 1000)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        found = await self._consumer.offsets_for_times({tp: self._ms for tp in assigned})
        for tp, at in found.items():
            if at is None:  # nothing that recent yet: start at the end
                await self._consumer.seek_to_end(tp)
            else:
                self._consumer.seek(tp, at.offset)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--group", default="partner-example")
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument(
        "--since", type=datetime.fromisoformat, help="replay from this ISO instant (with zone)"
    )
    parser.add_argument("--username", help="SASL/SCRAM login; password: $KAFKA_SASL_PASSWORD")
    args = parser.parse_args()
    async for event in public_events(
        args.bootstrap,
        args.group,
        from_beginning=args.from_beginning,
        since=args.since,
        username=args.username,
        password=os.environ.get("KAFKA_SASL_PASSWORD"),
    ):
        print(json.dumps(event), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
