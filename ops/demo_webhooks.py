"""The demo's partner: the example webhook receiver, subscribed to two clinics.

`subscribe` creates the partner over the webhook service's admin API, pointing at
examples/webhook_receiver.py served on this machine (which verifies every request
with the `standardwebhooks` library and records it), and notes where the public
topics ended then. `counts` waits until every public event of the two clinics
written since is in the receiver's record, then counts from that record alone:
delivered (distinct verified ids answered 2xx), bad signatures, out of order,
another clinic's; and as missing, the events on the topics that never came.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from aiokafka import TopicPartition

from ops.reading import assigned, read_to_end
from ops.stack import ROOT, free_port
from shared.envelope import HEADER_CLINIC, HEADER_ID
from shared.topics import ALL

ADMIN_KEY = "demo-webhooks-admin-key"  # the demo's only; a deployment sets its own digest
PUBLIC = [t.name for t in ALL if t.public]
DRAIN_S = 90.0  # how long the demo waits for the last deliveries


def receiver_module() -> ModuleType:
    """examples/webhook_receiver.py, loaded as a partner would run it."""
    path = ROOT / "examples" / "webhook_receiver.py"
    spec = importlib.util.spec_from_file_location("webhook_receiver", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Partner:
    id: str
    clinics: list[str]
    record: Path
    server: Any  # the receiver's ThreadingHTTPServer
    since: dict[TopicPartition, int]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def subscribe(
    webhooks_url: str, clinics: list[str], bootstrap: str, workdir: Path
) -> Partner:
    port = free_port()
    async with assigned(bootstrap, PUBLIC, None, False) as (consumer, partitions):
        since = dict(await consumer.end_offsets(partitions)) if partitions else {}
    async with httpx.AsyncClient(base_url=webhooks_url, timeout=10) as client:
        created = await client.post(
            "/partners",
            headers={"X-Admin-Key": ADMIN_KEY},
            json={
                "name": "demo partner",
                "url": f"http://127.0.0.1:{port}/hooks",
                "event_types": PUBLIC,
                "clinics": clinics,
            },
        )
        created.raise_for_status()
    partner = created.json()
    record = workdir / "webhooks.jsonl"
    server = receiver_module().serve(port, [partner["secret"]], record=record, echo=False)
    return Partner(partner["id"], clinics, record, server, since)


def received(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


async def counts(partner: Partner, bootstrap: str) -> dict[str, int]:
    """Wait (up to DRAIN_S) until each public event of the partner's clinics written since it
    subscribed was received verified; then the counts, from the receiver's record."""
    records = await read_to_end(bootstrap, PUBLIC, partner.since)
    expected = set()
    for record in records:
        headers = {k: v.decode() for k, v in record.headers or ()}
        if headers.get(HEADER_CLINIC) in partner.clinics:
            expected.add(headers[HEADER_ID])
    deadline = time.monotonic() + DRAIN_S
    while True:
        lines = received(partner.record)
        delivered = {r["webhook_id"] for r in lines if r["verified"]}
        if expected <= delivered or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    return {
        "webhooks_expected": len(expected),
        "webhooks_delivered": len(delivered),
        "webhooks_missing": len(expected - delivered),
        "webhook_signatures_bad": sum(not r["verified"] for r in lines),
        "webhooks_out_of_order": sum(bool(r["out_of_order"]) for r in lines),
        "webhooks_foreign_clinic": sum(r["clinicid"] not in partner.clinics for r in lines),
    }
