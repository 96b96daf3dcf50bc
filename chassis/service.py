"""The one way a KAP service is assembled and run.

`ServiceRuntime` holds what every service has (settings, clock, broker, Redis,
publisher, the one write step and its outbox relay); `http_app` wraps a
service's routes with health, readiness and the broker's lifecycle; `serve`
runs it under uvicorn, which drains in-flight work and commits on SIGTERM
before the process exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import PlainTextResponse
from faststream.kafka import KafkaBroker
from redis.asyncio import Redis

from chassis.buckets import BucketOwners
from chassis.clinic_registry import ClinicRegistryView
from chassis.clinics import ClinicDirectory
from chassis.clock import Clock, clock_from
from chassis.config import DEV_STAFF_TOKEN_SECRET, ServiceSettings
from chassis.due_index import DueIndex, NextDue
from chassis.due_work import DueWork
from chassis.events import EventPublisher
from chassis.http import install_error_handlers
from chassis.kafka import (
    GroupMembership,
    apply_topics,
    check_topics,
    client_options,
    configured_topics,
    make_broker,
)
from chassis.logs import configure_logging
from chassis.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from chassis.redis_client import connect_redis, eviction_policies
from chassis.staff_tokens import StaffTokens
from chassis.unit_of_work import UnitOfWork
from chassis.workers import Supervisor, Worker
from shared.topics import AUDIT_TOPICS, CLINIC_CHANGES, CLINIC_REGISTRY, Service, produced_by

WORKER_STOP_S = 10.0

log = logging.getLogger(__name__)


@dataclass
class ServiceRuntime:
    name: Service
    settings: ServiceSettings
    clock: Clock
    broker: KafkaBroker
    redis: Redis
    publisher: EventPublisher
    clinics: ClinicDirectory
    metrics: ServiceMetrics
    unit_of_work: UnitOfWork

    @classmethod
    def create(
        cls, name: Service, settings: ServiceSettings, clock: Clock | None = None
    ) -> ServiceRuntime:
        """Build every client without connecting any (that happens at start-up)."""
        metrics = ServiceMetrics(name)
        broker = make_broker(settings, name, settings.kafka_request_timeout_ms, metrics)
        redis = connect_redis(
            settings.redis_url,
            settings.redis_mode,
            max_connections=settings.redis_max_connections,
            pool_timeout_s=settings.redis_pool_timeout_s,
        )
        publisher = EventPublisher(broker, name, produced_by(name), metrics)
        clinics: ClinicDirectory = ClinicDirectory(settings.clinics_file, metrics=metrics)
        if settings.clinics_source == "topic":
            clinics = ClinicRegistryView(
                settings.kafka_bootstrap_servers,
                settings.clinics_topic,
                security=client_options(settings),
                metrics=metrics,
            )
        runtime = cls(
            name=name,
            settings=settings,
            clock=clock or clock_from(settings),
            broker=broker,
            redis=redis,
            publisher=publisher,
            metrics=metrics,
            clinics=clinics,
            unit_of_work=UnitOfWork(
                redis,
                name,
                publisher,
                settings.relay_grace_ms,
                settings.due_buckets,
                metrics=metrics,
            ),
        )
        if isinstance(clinics, ClinicRegistryView):
            registry = clinics

            async def clinic_registry() -> None:
                await registry.run(runtime.supervisor.stopping)

            runtime.workers.append(clinic_registry)
        # Every service writes through the unit of work; its relay publishes what a
        # writer that died between its write and its publish left in an outbox, found
        # through the outbox's due index in the buckets this replica owns.
        runtime.workers.append(
            runtime.unit_of_work.relay(runtime.relay_work(), runtime.supervisor.stopping)
        )
        return runtime

    workers: list[Worker] = field(default_factory=list)
    # One per subscription (chassis.kafka.subscribe), for readiness.
    memberships: list[GroupMembership] = field(default_factory=list)
    supervisor: Supervisor = field(default_factory=Supervisor)

    def due_work(
        self, kind: str, sources: list[Callable[[str], str]], next_due: NextDue
    ) -> DueWork:
        """One timer kind's due work: its index (hinted by the unit of work after each write
        to one of `sources`, the clinic's due sets), its buckets shared with the other
        replicas, and its sweep over every clinic."""
        settings = self.settings
        index = DueIndex(self.redis, kind, settings.due_buckets, sources)
        self.unit_of_work.index_due(index)
        owners = BucketOwners(self.redis, kind, settings.due_buckets, settings.due_lease_ms)
        clinic_ids = lambda: [clinic.id for clinic in self.clinics.all()]  # noqa: E731
        return DueWork(index, owners, clinic_ids, next_due, settings.due_sweep_s, self.metrics)

    def relay_work(self) -> DueWork:
        """The outbox relay's due work: the outbox's own index (marked by the unit of work
        with each write that queues outputs), its buckets and its sweep."""
        return self.unit_of_work.outbox.relay_work(
            lambda: [clinic.id for clinic in self.clinics.all()],
            self.settings.due_lease_ms,
            self.settings.due_sweep_s,
            self.metrics,
        )

    async def start(self) -> None:
        topics = configured_topics(self.settings)
        records = (
            dataclasses.replace(CLINIC_REGISTRY, name=self.settings.clinics_topic),
            CLINIC_CHANGES,
            *(audit for audit in AUDIT_TOPICS if self.name in audit.producers),
        )
        security = client_options(self.settings)
        bootstrap = self.settings.kafka_bootstrap_servers
        if self.settings.create_topics:
            replication = self.settings.topic_replication_factor
            await apply_topics(bootstrap, replication, topics, security, records)
        await check_topics(bootstrap, topics, security, records)
        await self.broker.start()
        self.supervisor.start(self.workers)

    async def stop(self) -> None:
        # Background loops first (they publish through the broker), then the
        # broker, which finishes in-flight handlers and commits before closing.
        await self.supervisor.stop(WORKER_STOP_S)
        await self.broker.stop()
        await self.redis.aclose()

    async def readiness(self) -> dict[str, bool]:
        checks = {"kafka": False, "redis": False, "consumers": False}
        # Every background loop runs (one waiting to restart after an error is down).
        # A broken clinics file is not checked here: the last good one serves, and
        # failing every replica's readiness for a typo would be an outage.
        checks["workers"] = not self.supervisor.down
        if isinstance(self.clinics, ClinicRegistryView):
            # Not ready until the registry is read up to where it ended at start: a
            # replica serving before then would answer 404 for clinics that exist.
            checks["clinics"] = self.clinics.caught_up
        # Any failure to answer means not ready; the reason is in the client's log.
        with contextlib.suppress(Exception):
            checks["kafka"] = bool(await self.broker.ping(timeout=2.0))
        with contextlib.suppress(Exception):
            checks["redis"] = bool(await self.redis.ping())
        checks["redis_noeviction"] = await self._redis_keeps_everything()
        # Every subscription's consumer runs and has joined its group once: not "holds
        # partitions now", which is false for the whole of every rebalance (a replica
        # joining or leaving) and always for a replica beyond the partition count.
        consumers = [getattr(s, "consumer", None) for s in self.broker.subscribers]
        started = all(c is not None for c in consumers)
        checks["consumers"] = started and all(m.joined for m in self.memberships)
        return checks

    async def _redis_keeps_everything(self) -> bool:
        """Refuse readiness on an evicting Redis: it would drop handled marks and
        effect records under memory pressure, and exactly-once with them."""
        try:
            policies = await eviction_policies(self.redis)
        except Exception:
            return False  # Redis away: the "redis" check says so
        evicting = sorted({p for p in policies if p != "noeviction"})
        if evicting:
            log.warning("redis maxmemory-policy is %s; set noeviction", ", ".join(evicting))
        return not evicting


def health_routes(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/readyz", summary="Kafka and Redis answer")
    async def readyz(response: Response) -> dict[str, object]:
        checks = await runtime.readiness()
        ready = all(checks.values())
        response.status_code = 200 if ready else 503
        return {"ready": ready, "checks": checks}

    return router


def http_app(runtime: ServiceRuntime, *, title: str, routers: Sequence[APIRouter] = ()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=title, version="1", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health_routes(runtime))
    for router in routers:
        app.include_router(router)
    app.state.runtime = runtime
    app.state.clinics = runtime.clinics
    app.state.staff_tokens = StaffTokens(runtime.settings.staff_token_secret_list())
    if runtime.settings.staff_token_secret_list() == [DEV_STAFF_TOKEN_SECRET]:
        log.warning("KAP_STAFF_TOKEN_SECRETS is the development default: set it in deployment")
    return app


def settle_heap() -> None:
    """Take what the process has built so far out of the cyclic collector's sight.

    A service's modules, classes, pydantic schemas and composed objects (about 110,000
    tracked objects) live as long as the process, yet every full collection walks them
    all, the event loop stopped meanwhile: 64 ms each, every few hundred write steps,
    a quarter of a 1,000-booster burst's time (issue 19). Frozen (gc.freeze), they are
    never walked again; what is made from here on is collected as before. Collected
    first, so no garbage is kept."""
    gc.collect()
    gc.freeze()


def serve(app: FastAPI, settings: ServiceSettings, service: str) -> None:
    configure_logging(service, settings.log_level)
    settle_heap()  # the app is composed: what lives as long as the process is built
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        # libuv's event loop: a callback's own overhead is a fraction of asyncio's, and a
        # time-bound message's hand-over waits for whatever callbacks run before it.
        loop="uvloop",
        timeout_graceful_shutdown=20,
    )
