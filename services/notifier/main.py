"""Composition root of the notifier service: the only place that reads settings."""

from __future__ import annotations

from fastapi import FastAPI

from chassis.clock import Clock
from chassis.service import ServiceRuntime, http_app, serve
from services.notifier.config import Settings
from shared.topics import Service

SERVICE: Service = "notifier"


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime.create(SERVICE, settings, clock)
    return http_app(runtime, title="KAP notifier")


def run() -> None:
    settings = Settings()
    serve(create_app(settings), settings, SERVICE)
