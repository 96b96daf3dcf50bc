"""Composition root of the intake service: the only place that reads settings."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from chassis.clock import Clock
from chassis.measure_links import MeasureLinks
from chassis.service import ServiceRuntime, http_app, serve
from services.intake import form
from services.intake.api import routes
from services.intake.config import Settings
from services.intake.limits import RateLimiter
from services.intake.measuring import FormLimits, MeasureForms
from services.intake.service import IntakeService
from services.intake.store import IntakeStore
from shared.topics import Service

SERVICE: Service = "intake"
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = ServiceRuntime.create(SERVICE, settings, clock)
    store = IntakeStore(runtime.redis)
    intake = IntakeService(store, runtime.unit_of_work, runtime.publisher, runtime.clock)
    limiter = RateLimiter(runtime.redis, settings.rate_window_s)
    forms = MeasureForms(
        intake,
        MeasureLinks(settings.measure_link_secret_list()),
        runtime.clinics,
        limiter,
        FormLimits(settings.form_rate_per_address, settings.form_rate_per_client),
        runtime.clock,
    )
    if settings.measure_link_secret_is_the_dev_default:
        log.warning("KAP_MEASURE_LINK_SECRETS is the development default: set it in deployment")
    api = routes(
        intake,
        limiter,
        settings.consultation_rate_per_address,
        settings.consultation_rate_per_client,
    )
    return http_app(runtime, title="KAP intake", routers=[api, form.routes(forms)])


def run() -> None:
    settings = Settings()
    serve(create_app(settings), settings, SERVICE)
