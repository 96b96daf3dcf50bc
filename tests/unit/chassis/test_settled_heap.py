"""A service process hides what it built before serving from the cyclic collector.

Its modules, classes and schemas live as long as the process; walked by every full
collection, they stopped the event loop for 64 ms every few hundred write steps
(issue 19). `serve` freezes them (gc.freeze) before uvicorn runs.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest
from fastapi import FastAPI

from chassis import service
from chassis.config import ServiceSettings


def test_serve_freezes_what_the_process_built_before_it_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen_when_served: list[int] = []

    def run(app: FastAPI, **options: Any) -> None:
        frozen_when_served.append(gc.get_freeze_count())

    monkeypatch.setattr(service.uvicorn, "run", run)
    monkeypatch.setattr(service, "configure_logging", lambda *args: None)
    gc.unfreeze()
    try:
        service.serve(FastAPI(), ServiceSettings(), "intake")
    finally:
        gc.unfreeze()  # the test process's heap is not a service's
    # The test process has imported the services (several 10,000s objects): frozen all.
    assert len(frozen_when_served) == 1
    assert frozen_when_served[0] > 10_000
