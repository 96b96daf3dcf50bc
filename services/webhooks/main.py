"""Composition root of the webhook service: the only place that reads settings."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI

from chassis.clock import Clock, SystemClock
from chassis.kafka import client_options
from chassis.service import ServiceRuntime, http_app, serve
from services.webhooks import api, handlers
from services.webhooks.config import Settings
from services.webhooks.delivery import Delivery, Sender
from services.webhooks.replay import Replayer
from services.webhooks.service import Webhooks
from services.webhooks.store import WebhookStore

SERVICE = handlers.SERVICE


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per POST: the log says it
    # Real time, whatever the deployment's scaled clock (the demo's): deliveries are paced
    # by the partner's own availability, and a receiver checks `webhook-timestamp`
    # against its own clock.
    clock = clock or SystemClock()
    runtime = ServiceRuntime.create(SERVICE, settings, clock)
    store = WebhookStore(runtime.redis)
    webhooks = Webhooks(
        store, runtime.unit_of_work, clock, timedelta(seconds=settings.webhook_gap_wait_s)
    )

    async def next_due(clinic_id: str) -> float | None:
        return await store.leases.earliest(clinic_id, clock)

    due = runtime.due_work("webhooks", [store.leases.due_key], next_due)
    sender = Sender(settings.allowed_networks(), timedelta(seconds=settings.webhook_timeout_s))
    delivery = Delivery(
        webhooks,
        store,
        runtime.unit_of_work,
        sender,
        due,
        clock,
        policy=settings.retry_policy(),
        per_partner=settings.webhook_per_partner,
        poll=timedelta(milliseconds=settings.webhook_poll_ms),
        stopping=runtime.supervisor.stopping,
        metrics=runtime.metrics,
    )
    runtime.memberships.append(
        handlers.register(runtime.broker, webhooks, settings, runtime.metrics)
    )
    runtime.workers.append(delivery.run)
    replayer = Replayer(webhooks, settings.kafka_bootstrap_servers, client_options(settings))
    routes = api.routes(
        webhooks,
        runtime.clinics,
        settings.admin_api_key_sha256,
        settings.allowed_networks(),
        replayer,
        clock.now,
    )
    return http_app(runtime, title="KAP webhooks", routers=[routes])


def run() -> None:
    settings = Settings()
    serve(create_app(settings), settings, SERVICE)
