"""Composition root of the clinic console: the only place that reads settings."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from chassis.clock import Clock
from chassis.kafka import client_options
from chassis.service import ServiceRuntime, http_app, serve
from chassis.staff_tokens import StaffTokens
from services.console import operations, pages
from services.console.backends import Services
from services.console.config import DEV_SESSION_SECRET, Settings
from services.console.staff import Policy, Staff
from services.console.store import ConsoleStore
from shared.events import StaffSignIn
from shared.topics import STAFF_SIGN_INS, Service

SERVICE: Service = "console"
STATIC = pages.TEMPLATES.parent / "static"
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call to a service
    runtime = ServiceRuntime.create(SERVICE, settings, clock)

    async def audit(record: StaffSignIn) -> None:
        # The broker's producer: idempotent, acks=all, awaited until acknowledged.
        key = str(record.staff_id).encode()
        await runtime.broker.publish(
            record.model_dump_json().encode(), STAFF_SIGN_INS.name, key=key
        )

    staff = Staff(
        ConsoleStore(runtime.redis),
        runtime.unit_of_work,
        Policy(settings.session_ttl_s, settings.lockout_failures, settings.lockout_s),
        audit,
        runtime.clock.now,
    )
    services = Services(
        settings.intake_url,
        settings.scheduler_url,
        settings.notifier_url,
        settings.clinic_key_map(),
        StaffTokens(settings.staff_token_secret_list()),
    )
    secret = settings.session_secret.get_secret_value()
    if secret == DEV_SESSION_SECRET:
        log.warning("KAP_CONSOLE_SESSION_SECRET is the development default: set it in deployment")

    def every_clinic() -> tuple[str, ...]:
        return tuple(c.id for c in runtime.clinics.all() if services.serves(c.id))

    def zone_of(clinic_id: str) -> str:
        clinic = runtime.clinics.get(clinic_id)
        return clinic.timezone if clinic is not None else "UTC"

    def operations_pages(kit: pages.Kit) -> APIRouter:
        kafka = operations.Kafka(settings.kafka_bootstrap_servers, client_options(settings))
        urls = {
            "intake": settings.intake_url,
            "scheduler": settings.scheduler_url,
            "notifier": settings.notifier_url,
            "webhooks": settings.webhooks_url,
        }
        return operations.routes(kit, kafka, urls, runtime.readiness)

    router = pages.routes(
        staff,
        services,
        secret,
        every_clinic,
        zone_of,
        settings.secure_cookies,
        runtime.clock.now,
        more=[operations_pages],
    )
    app = http_app(runtime, title="KAP console", routers=[router])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.staff = staff
    return app


def run() -> None:
    settings = Settings()
    serve(create_app(settings), settings, SERVICE)
