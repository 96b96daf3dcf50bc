"""Composition root of the intake service: the only place that reads settings."""

from __future__ import annotations

from fastapi import FastAPI

from chassis.clock import Clock
from chassis.service import ServiceRuntime, http_app, serve
from services.intake.api import routes
from services.intake.config import Settings
from services.intake.service import IntakeService
from services.intake.store import LOCK_TIMEOUT_S, IntakeStore
from shared.topics import Service

SERVICE: Service = "intake"


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime.create(SERVICE, settings, clock)
    # A lock outlives every publish deadline (two may run under it: an alert
    # and the step's event), so a slow broker cannot let a retry in beside it.
    publish_s = settings.kafka_request_timeout_ms / 1000
    store = IntakeStore(runtime.redis, lock_timeout_s=max(LOCK_TIMEOUT_S, 3 * publish_s + 5))
    intake = IntakeService(store, runtime.publisher, runtime.clock)
    return http_app(runtime, title="KAP intake", routers=[routes(intake)])


def run() -> None:
    settings = Settings()
    serve(create_app(settings), settings, SERVICE)
