"""A service's one consumer offers each message to its handlers' topic filters in turn:
each filter must be a coroutine, since FastStream runs a plain function in a worker
thread (a thread hop per handler per message: measured, the notifier fell seconds
behind the scheduler's topics in make demo)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from chassis.kafka import _from
from shared import topics


async def test_a_topic_filter_is_a_coroutine_that_matches_only_its_topic() -> None:
    is_from = _from(topics.SESSION_COMPLETED)
    assert inspect.iscoroutinefunction(is_from)
    on = SimpleNamespace(raw_message=SimpleNamespace(topic=topics.SESSION_COMPLETED.name))
    off = SimpleNamespace(raw_message=SimpleNamespace(topic=topics.SESSION_MISSED.name))
    assert await is_from(on)
    assert not await is_from(off)
