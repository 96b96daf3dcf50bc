"""Composition root of the intake service: the only place that reads settings."""

from __future__ import annotations

from fastapi import FastAPI

from chassis.clock import Clock
from chassis.service import ServiceRuntime, http_app, serve
from services.intake.api import routes
from services.intake.config import Settings
from services.intake.service import IntakeService
from services.intake.store import IntakeStore
from shared.topics import Service

SERVICE: Service = "intake"


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime.create(SERVICE, settings, clock)
    store = IntakeStore(runtime.redis)
    intake = IntakeService(store, runtime.unit_of_work, runtime.publisher, runtime.clock)
    return http_app(runtime, title="KAP intake", routers=[routes(intake)])


def run() -> None:
    settings = Settings()
    serve(create_app(settings), settings, SERVICE)
