"""What the notifier before the lease queue left in Redis, taken over once per clinic.

That version leased messages in `notifier:{c}:sending` (now the lease queue's
`leased`, with fencing tokens) and listed finished messages whose outcome event
was not yet published in a sorted set `notifier:{c}:outbox`, the event kept in the
message's `outcome` field. The unit of work's outbox has that name and is a hash:
left as it was, every write with an event in the clinic would fail (WRONGTYPE).
After a drained upgrade both are usually empty; a replica killed mid-send leaves
some. Its leased messages fall due at once (claimed, they are sent again, as after
a lease running out), and its unpublished events are published, then the old set
deleted (a crash in between publishes them again: same ids, dropped by readers).
"""

from __future__ import annotations

import json
import logging

from redis.asyncio import Redis

from chassis.events import EventPublisher
from services.notifier.keys import key, text
from services.notifier.queue import DeliveryQueue
from shared.envelope import Envelope
from shared.topics import BY_NAME

log = logging.getLogger(__name__)

_DUE_AT_ONCE = """
-- KEYS: the earlier leased set, due. Every member due at once; the earlier set gone.
local members = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, member in ipairs(members) do
  redis.call("ZADD", KEYS[2], "NX", 0, member)
end
redis.call("DEL", KEYS[1])
return #members
"""


async def take_over(
    redis: Redis, queue: DeliveryQueue, publisher: EventPublisher, clinic_id: str
) -> None:
    """Take over what the earlier version left in `clinic_id`'s keys (nothing, mostly)."""
    sending, outbox = key(clinic_id, "sending"), key(clinic_id, "outbox")
    async with redis.pipeline(transaction=False) as reads:
        reads.exists(sending)
        reads.type(outbox)
        leased, outbox_type = await reads.execute()
    if leased:
        moved = await redis.eval(_DUE_AT_ONCE, 2, sending, queue.leases.due_key(clinic_id))
        log.warning(
            "clinic %s: %s message(s) an earlier version leased, due again", clinic_id, moved
        )
    if text(outbox_type) != "zset":
        return
    ids = [text(i) for i in await redis.zrange(outbox, 0, -1)]
    async with redis.pipeline(transaction=False) as reads:
        for notification_id in ids:
            reads.hget(key(clinic_id, "msg", notification_id), "outcome")
        records = [json.loads(raw) for raw in await reads.execute() if raw is not None]
    await publisher.publish_all(
        [
            (
                BY_NAME[r["topic"]].event.model_validate(r["event"]),
                Envelope.model_validate(r["envelope"]),
            )
            for r in records
        ]
    )
    await redis.delete(outbox)
    log.warning(
        "clinic %s: %d outcome event(s) an earlier version left, published", clinic_id, len(records)
    )
