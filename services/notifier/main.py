"""Composition root of the notifier service: the only place that reads settings."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI

from chassis.clock import Clock
from chassis.kafka import client_options, group_id
from chassis.service import ServiceRuntime, http_app, serve
from chassis.unit_of_work import UnitOfWork
from services.notifier import api, handlers
from services.notifier.alerts import Alerts
from services.notifier.channels import EmailChannel, SmsChannel
from services.notifier.config import Settings
from services.notifier.contacts import Contacts
from services.notifier.delivery import Delivery, notifier_due_work
from services.notifier.lag import ScheduleLag
from services.notifier.measures import MeasureRequests
from services.notifier.plans import PlanStore
from services.notifier.queue import DeliveryQueue

SERVICE = handlers.SERVICE


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    # httpx logs every request at INFO: a line per SMS, our own "sent" line says it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    runtime = ServiceRuntime.create(SERVICE, settings, clock)
    contacts, plans = Contacts(runtime.redis), PlanStore(runtime.redis)
    alerts = Alerts(runtime.redis, runtime.unit_of_work, runtime.publisher)
    measures = MeasureRequests(
        runtime.redis,
        settings.measure_links(),
        settings.public_base_url,
        timedelta(hours=settings.measure_link_ttl_hours),
    )
    queue = DeliveryQueue(runtime.redis)
    due = notifier_due_work(
        queue,
        runtime.unit_of_work,
        runtime.clinics,
        runtime.clock,
        buckets=settings.due_buckets,
        lease_ms=settings.due_lease_ms,
        sweep_s=settings.due_sweep_s,
        metrics=runtime.metrics,
    )
    delivery = Delivery(
        queue,
        contacts,
        plans,
        runtime.clinics,
        senders={
            "email": EmailChannel(settings.smtp_host, settings.smtp_port, settings.mail_from),
            "sms": SmsChannel(
                settings.sms_api_url,
                settings.sms_account_sid,
                settings.sms_auth_token.get_secret_value(),
                settings.sms_from,
            ),
        },
        publisher=runtime.publisher,
        unit_of_work=runtime.unit_of_work,
        clock=runtime.clock,
        poll_s=settings.delivery_poll_ms / 1000,
        metrics=runtime.metrics,
        schedule_lag=schedule_lag(settings, runtime.clock, runtime.unit_of_work),
        stopping=runtime.supervisor.stopping,
        alerts=alerts,
        measures=measures,
        due=due,
    )
    membership = handlers.register(
        runtime.broker,
        handlers.Deps(
            plans=plans,
            unit_of_work=runtime.unit_of_work,
            clinics=runtime.clinics,
            clock=runtime.clock,
            due_now=delivery.wake,
            alerts=alerts,
            measures=measures,
        ),
        settings,
        runtime.metrics,
    )
    runtime.memberships.append(membership)
    runtime.workers.append(delivery.run)
    return http_app(
        runtime, title="KAP notifier", routers=[api.routes(plans, alerts, runtime.clock)]
    )


def schedule_lag(
    settings: Settings, clock: Clock | None = None, unit_of_work: UnitOfWork | None = None
) -> ScheduleLag | None:
    """The gate on time-bound sends: this service's group on the scheduler's topics, with the
    bound also read on the service clock, and what the handlers applied already (their
    handled marks in `unit_of_work`) not waited for."""
    if settings.schedule_lag_bound_ms == 0:
        return None
    options = client_options(settings)
    return ScheduleLag(
        settings.kafka_bootstrap_servers,
        group_id(SERVICE),
        settings.schedule_lag_bound_ms / 1000,
        options,
        clock=clock,
        applied=unit_of_work.handled if unit_of_work is not None else None,
    )


def run() -> None:
    settings = Settings()
    serve(create_app(settings), settings, SERVICE)
