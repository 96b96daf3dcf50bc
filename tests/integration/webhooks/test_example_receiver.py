"""The partner's example receiver (examples/webhook_receiver.py) against the real webhook
service: it verifies what KAP signs, sees a client's events in number order although
they were published out of it, sees a replay as repeats, and refuses a forged request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from chassis.events import EventPublisher
from ops.stack import free_port
from tests.helpers import load_example
from tests.integration.webhooks.test_delivery import (  # noqa: F401 - fixtures used by name
    ADMIN,
    PUBLIC,
    Client,
    clinic_ids,
    scheduler_events,
    settings,
    until,
    webhooks,
)

pytestmark = pytest.mark.integration


def recorded(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def forged_headers(webhook_id: str, body: str) -> dict[str, str]:
    """Well-formed Standard Webhooks headers, signed with a secret that is not the partner's."""
    stamp = str(int(time.time()))
    wrong = b"not the partner's secret, 32 bytes"
    mac = hmac.new(wrong, f"{webhook_id}.{stamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "content-type": "application/cloudevents+json",
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


async def test_the_example_receiver_verifies_orders_and_refuses_a_forgery(
    webhooks: httpx.AsyncClient,  # noqa: F811 - the imported fixture
    scheduler_events: EventPublisher,  # noqa: F811 - the imported fixture
    clinic_ids: tuple[str, str],  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    started = datetime.now(UTC) - timedelta(seconds=5)
    port, record = free_port(), tmp_path / "record.jsonl"
    url = f"http://127.0.0.1:{port}/hooks"
    created = await webhooks.post(
        "/partners",
        headers=ADMIN,
        json={"name": "example", "url": url, "event_types": PUBLIC, "clinics": [clinic_ids[0]]},
    )
    assert created.status_code == 201, created.text
    partner = created.json()
    server = load_example("webhook_receiver").serve(port, [partner["secret"]], record=record)
    try:
        client = Client(scheduler_events, clinic_ids[0])
        await client.publish(3, 1, 2, 4)  # out of number order, across topics
        ours = set(client.events.values())
        verified = lambda: [r for r in recorded(record) if r["verified"]]  # noqa: E731
        await until(lambda: {r["webhook_id"] for r in verified()} >= ours, "each event received")

        # A replay sends them again with the same webhook-ids: repeats, not out of order.
        replay = await webhooks.post(
            f"/partners/{partner['id']}/replay",
            headers=ADMIN,
            json={"since": started.isoformat()},
        )
        assert replay.status_code == 200, replay.text
        assert replay.json()["queued"] == len(ours)
        await until(lambda: sum(r["repeat"] for r in verified()) >= len(ours), "the replay")

        body = json.dumps({"id": "forged", "type": "kap.public.client.stage-reached.v1"})
        async with httpx.AsyncClient() as http:
            forged = await http.post(url, content=body, headers=forged_headers("forged", body))
        assert forged.status_code == 401
    finally:
        server.shutdown()

    lines = recorded(record)
    assert [r for r in lines if not r["verified"]] == [
        {
            "webhook_id": "forged",
            "verified": False,
            "repeat": False,
            "out_of_order": False,
            "clinicid": None,
            "subject": None,
            "clientsequence": None,
            "type": None,
        }
    ]
    genuine = [r for r in lines if r["verified"]]
    assert not [r for r in genuine if r["out_of_order"]], "out of order"
    first_time = [r for r in genuine if not r["repeat"]]
    assert [r["clientsequence"] for r in first_time] == [1, 2, 3, 4]
    assert {r["webhook_id"] for r in first_time} == ours
    assert {r["subject"] for r in genuine} == {str(client.id)}
    assert {r["clinicid"] for r in genuine} == {clinic_ids[0]}
    assert {r["webhook_id"] for r in genuine if r["repeat"]} == ours
