"""Composition root of the scheduler service: the only place that reads settings."""

from __future__ import annotations

import functools

from fastapi import FastAPI

from chassis.clinic_registry import Send
from chassis.clock import Clock
from chassis.due_work import DueWork
from chassis.leases import LeaseQueue
from chassis.service import ServiceRuntime, http_app, serve
from ops.clinic_registry import MESSAGE_KINDS, SECTION_CHECKS, built_in_templates
from services.scheduler import (
    admin_api,
    client_api,
    handlers,
    offer_api,
    outcomes_api,
    templates_api,
)
from services.scheduler.api import routes
from services.scheduler.config import Settings
from services.scheduler.measure_timers import measure_timer
from services.scheduler.offers import offer_timer
from services.scheduler.scheduler import Scheduler
from services.scheduler.store import SchedulerStore
from services.scheduler.timers import booster_timer
from shared.topics import Service

SERVICE: Service = "scheduler"


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime.create(SERVICE, settings, clock)
    scheduler = scheduler_for(runtime)
    scheduler.public_url = settings.public_url
    runtime.memberships.append(handlers.register(runtime.broker, scheduler, settings))
    poll_s, stopping = settings.timer_poll_ms / 1000, runtime.supervisor.stopping
    work = due_works(runtime, scheduler.store)
    runtime.workers.append(booster_timer(scheduler, work["booster"], poll_s, stopping))
    runtime.workers.append(measure_timer(scheduler, work["measure"], poll_s, stopping))
    runtime.workers.append(offer_timer(scheduler, work["offer"], poll_s, stopping))
    routers = [
        routes(scheduler),
        client_api.routes(scheduler),
        *offer_api.routes(scheduler),
        outcomes_api.routes(scheduler),
        admin_api.routes(
            _registry_send(runtime),
            SECTION_CHECKS,
            settings.admin_api_key_sha256,
            settings.clinics_topic,
        ),
        templates_api.routes(
            _registry_send(runtime),
            SECTION_CHECKS,
            settings.clinics_topic,
            MESSAGE_KINDS,
            built_in_templates,
            from_registry=settings.clinics_source == "topic",
        ),
    ]
    return http_app(runtime, title="KAP scheduler", routers=routers)


def _registry_send(runtime: ServiceRuntime) -> Send:
    async def send(topic: str, key: bytes, value: bytes) -> None:
        # The broker's producer: idempotent, acks=all, and awaited until acknowledged.
        await runtime.broker.publish(value, topic, key=key)

    return send


def due_works(runtime: ServiceRuntime, store: SchedulerStore) -> dict[str, DueWork]:
    """Each timer kind's due index over its lease queue (boosters, measures, offers)."""
    queues: dict[str, LeaseQueue] = {
        "booster": store.boosters,
        "measure": store.measures,
        "offer": store.waitlist.expiries,
    }
    return {
        kind: runtime.due_work(
            f"sched-{kind}", [queue.due_key], functools.partial(queue.earliest, clock=runtime.clock)
        )
        for kind, queue in queues.items()
    }


def scheduler_for(runtime: ServiceRuntime) -> Scheduler:
    """The scheduler's operations on the runtime's Redis, broker, clinics and clock."""
    return Scheduler(
        store=SchedulerStore(runtime.redis),
        clinics=runtime.clinics,
        publisher=runtime.publisher,
        unit_of_work=runtime.unit_of_work,
        clock=runtime.clock,
        metrics=runtime.metrics,
    )


def run() -> None:
    settings = Settings()
    serve(create_app(settings), settings, SERVICE)
