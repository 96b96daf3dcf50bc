"""A publish under a client's lock ends before the lock can expire (issue 14, fault 4)."""

from __future__ import annotations

from services.scheduler.config import Settings
from services.scheduler.store import LOCK_TIMEOUT_S


def test_the_publish_deadline_is_well_inside_the_client_lock() -> None:
    publish_s = Settings().kafka_request_timeout_ms / 1000
    assert publish_s * 2 <= LOCK_TIMEOUT_S
