"""Builds and runs the gRPC server (grpc.aio): Flint services, health, reflection."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import OperationalError

from flint.accounts import signin_throttle
from flint.accounts.servicer import AccountsServicer
from flint.accounts.v1 import accounts_service_pb2
from flint.apps.servicer import AppsServicer
from flint.apps.v1 import apps_service_pb2
from flint.billing import cycles
from flint.billing.servicer import BillingServicer
from flint.billing.v1 import billing_service_pb2
from flint.billing.vault import CardVault, TestVault
from flint.commerce import checkout, refunds
from flint.commerce.processor import Processor
from flint.commerce.servicer import (
    CheckoutSessionsServicer,
    InvoicesServicer,
    OrdersServicer,
    PaymentLinksServicer,
    PayServicer,
    RefundsServicer,
)
from flint.commerce.v1 import (
    checkout_service_pb2,
    invoices_service_pb2,
    orders_service_pb2,
    pay_service_pb2,
    payment_links_service_pb2,
    refunds_service_pb2,
)
from flint.common.config import Settings
from flint.common.db import Database
from flint.common.idempotency import PURGE_JOB, purge_expired
from flint.common.jobs import JobResult, guarded, supervise
from flint.common.logs import log_event
from flint.common.ratelimit import Limiter, limiter_from_env
from flint.events.hub import Hub
from flint.events.retention import JOB as JOB_EVENT_RETENTION
from flint.events.retention import purge_expired_events
from flint.events.sequencer import Sequencer
from flint.events.servicer import EventsServicer
from flint.events.v1 import events_service_pb2
from flint.installs.servicer import InstallsServicer, OAuthServicer
from flint.installs.v1 import installs_service_pb2
from flint.server.acquirer import acquirer_from_env, builtin_acquirer
from flint.server.ratelimit import RateLimits, switched_off
from flint.server.rpc import Pipeline
from flint.webhooks.fanout import fan_out
from flint.webhooks.servicer import WebhooksServicer
from flint.webhooks.v1 import webhooks_service_pb2

logger = logging.getLogger("flint.server")

SERVICE_FILES = (
    accounts_service_pb2.DESCRIPTOR,
    apps_service_pb2.DESCRIPTOR,
    installs_service_pb2.DESCRIPTOR,
    orders_service_pb2.DESCRIPTOR,
    checkout_service_pb2.DESCRIPTOR,
    payment_links_service_pb2.DESCRIPTOR,
    invoices_service_pb2.DESCRIPTOR,
    refunds_service_pb2.DESCRIPTOR,
    pay_service_pb2.DESCRIPTOR,
    events_service_pb2.DESCRIPTOR,
    webhooks_service_pb2.DESCRIPTOR,
    billing_service_pb2.DESCRIPTOR,
)
SERVICE_NAMES = tuple(
    service.full_name for file in SERVICE_FILES for service in file.services_by_name.values()
)
DEFAULT_GRACE_SECONDS = 10.0
# Threads that run the synchronous (database) part of handlers, in two pools,
# so that writes waiting on the card processor, row locks or commits can never
# take every thread from reads (or the other way round).
# Writes may wait long: many threads.
DEFAULT_WORKER_THREADS = 16
# Reads wait only on short indexed queries and are otherwise Python work under
# the GIL: a few threads keep the core busy; more only contend for the GIL
# (GetOrder ran 10-20 % faster on 2 threads than on 16 shared; 4 leave room for
# a slow query).
DEFAULT_READ_THREADS = 4
# Request metadata a call may carry (see the server options).
MAX_METADATA_BYTES = 64 * 1024
# How long `stop` waits for the event hub to close its LISTEN connection.
HUB_STOP_SECONDS = 5.0


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: Any
    executor: ThreadPoolExecutor
    read_executor: ThreadPoolExecutor
    sequencer: Sequencer
    hub_task: asyncio.Task[None]
    processor: Processor
    vault: CardVault

    async def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Reports NOT_SERVING, then lets in-flight calls finish within `grace`."""
        await self.health.enter_graceful_shutdown()
        self.hub_task.cancel()
        await self.server.stop(grace)
        # The hub closes its LISTEN connection as it ends; whoever closes the loop
        # after this must not find it still pending.
        await asyncio.wait({self.hub_task}, timeout=HUB_STOP_SECONDS)
        self.sequencer.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.read_executor.shutdown(wait=False, cancel_futures=True)


async def start_server(
    db: Database,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    worker_threads: int = DEFAULT_WORKER_THREADS,
    read_threads: int = DEFAULT_READ_THREADS,
    issuer: str | None = None,
    processor: Processor | None = None,
    limiter: Limiter | None = None,
) -> RunningServer:
    # The acquirer FLINT_ACQUIRER names, else the built-in test processor
    # (live payments refused); a processor passed in (tests) is used as given.
    acquirer = builtin_acquirer(processor) if processor is not None else acquirer_from_env()
    processor = acquirer.processor
    issuer = issuer or Settings.from_env().public_url
    executor = ThreadPoolExecutor(max_workers=worker_threads, thread_name_prefix="flint-rpc")
    read_executor = ThreadPoolExecutor(max_workers=read_threads, thread_name_prefix="flint-read")
    server = grpc.aio.server(
        # Refuse a port another server holds instead of silently sharing it.
        options=[
            ("grpc.so_reuseport", 0),
            # Metadata up to 64 KiB, always (soft = hard: no random refusals in
            # between). Envoy refuses requests whose headers and URL pass 16 KiB
            # (431) and adds a copy of the path, so whatever it lets through fits
            # here instead of failing as RESOURCE_EXHAUSTED (a 429 clients retry).
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ],
    )
    hub = Hub(db)
    # The shared store FLINT_RATE_LIMIT_URL names (flint up starts one for
    # several replicas), else this process's memory.
    limits = None if switched_off() else RateLimits(db, limiter or limiter_from_env())
    if limits is None:
        log_event(logger, "rate_limits_off", level=logging.WARNING, switch="FLINT_RATE_LIMITS")
    pipeline = Pipeline(
        db, SERVICE_FILES, reads=read_executor, writes=executor, issuer=issuer, limits=limits
    )
    for servicer, file, service in (
        (AccountsServicer(db), accounts_service_pb2, "AccountsService"),
        (AppsServicer(db), apps_service_pb2, "AppsService"),
        (InstallsServicer(db), installs_service_pb2, "InstallsService"),
        (OAuthServicer(db, issuer=issuer), installs_service_pb2, "OAuthService"),
        (OrdersServicer(db), orders_service_pb2, "OrdersService"),
        (CheckoutSessionsServicer(db), checkout_service_pb2, "CheckoutSessionsService"),
        (PaymentLinksServicer(db), payment_links_service_pb2, "PaymentLinksService"),
        (InvoicesServicer(db), invoices_service_pb2, "InvoicesService"),
        (RefundsServicer(db, processor), refunds_service_pb2, "RefundsService"),
        (PayServicer(db, processor), pay_service_pb2, "PayService"),
        (BillingServicer(db, acquirer.vault), billing_service_pb2, "BillingService"),
        (EventsServicer(db, hub), events_service_pb2, "EventsService"),
        (WebhooksServicer(db), webhooks_service_pb2, "WebhooksService"),
    ):
        pipeline.add_servicer(server, servicer, file.DESCRIPTOR.services_by_name[service])

    # Health checks and reflection are infrastructure anyone may call: they are
    # served outside the pipeline.
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not listen on {host}:{port}")
    await server.start()
    hub_task = asyncio.create_task(hub.run())
    sequencer = Sequencer(db, consumers=[fan_out], on_sequenced=hub.notify_threadsafe)
    sequencer.start()
    return RunningServer(
        server,
        bound,
        health_servicer,
        executor,
        read_executor,
        sequencer,
        hub_task,
        processor,
        acquirer.vault,
    )


SWEEP_INTERVAL_SECONDS = 15.0


def _sweep(
    db: Database,
    processor: Processor,
    vault: CardVault | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """One pass of every upkeep job at `now`. Each job does its items one by one
    (see flint.common.jobs) and is itself guarded, so neither a bad row nor a
    job that crashes outright stops the others."""
    at = now or db.clock()
    vault = vault or TestVault(processor)
    crashed = JobResult(failed=1)
    expiry = guarded(checkout.EXPIRY_JOB, lambda: checkout.expire_due_sessions(db, at), crashed)
    keys = guarded(PURGE_JOB, lambda: purge_expired(db, at), crashed)
    events = guarded(JOB_EVENT_RETENTION, lambda: purge_expired_events(db, at), crashed)
    signins = guarded(
        signin_throttle.PURGE_JOB, lambda: signin_throttle.purge_history(db, at), crashed
    )
    # Refunds whose process died between reserving and settling.
    recovery = guarded(
        refunds.RECOVERY_JOB,
        lambda: refunds.recover_stale_refunds(db, processor, now=at),
        crashed,
    )
    # App billing: expiries, period ends and payment retries due now.
    billed = guarded(
        "app_billing", lambda: cycles.run_cycles(db, vault, at), cycles.RunResult(errors=1)
    ).as_dict()
    return {
        "checkout_sessions_expired": expiry.done,
        "idempotency_keys_purged": keys.done,
        "refunds_recovered": recovery.done,
        **billed,
        "events_purged": events.done,
        "signin_history_purged": signins.done,
        "job_items_failed": sum(job.failed for job in (expiry, keys, events, signins, recovery)),
        "job_items_set_aside": sum(
            job.set_aside for job in (expiry, keys, events, signins, recovery)
        ),
    }


async def _maintenance(
    db: Database,
    executor: ThreadPoolExecutor,
    processor: Processor,
    vault: CardVault,
    interval: float = SWEEP_INTERVAL_SECONDS,
) -> None:
    """Expires checkout sessions past their time, settles refunds a crashed process
    left pending, forgets idempotency keys past 24 h and runs app billing. Every
    replica sweeps; the sweep skips rows another one holds (a refund is settled
    once, under its order's lock)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            done = await loop.run_in_executor(executor, _sweep, db, processor, vault)
            if any(done.values()):
                log_event(logger, "maintenance", **done)
        except OperationalError as error:
            log_event(logger, "maintenance_failed", level=logging.WARNING, error=str(error.orig))
        await asyncio.sleep(interval)


async def serve(db: Database, *, host: str, port: int, grace: float, sweep: bool = True) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully. With `sweep`
    off, the upkeep jobs do not run here (another replica, or a test that
    drives them itself, owns their timing)."""
    running = await start_server(db, host=host, port=port)
    log_event(logger, "grpc_listening", address=f"{host}:{running.port}")
    print(f"flint: gRPC listening on {host}:{running.port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    sweeper = (
        asyncio.create_task(
            supervise(
                "maintenance",
                lambda: _maintenance(db, running.executor, running.processor, running.vault),
            )
        )
        if sweep
        else None
    )
    await stopping.wait()
    if sweeper is not None:
        sweeper.cancel()
    log_event(logger, "grpc_stopping", grace_seconds=grace)
    await running.stop(grace)
    db.dispose()
    log_event(logger, "grpc_stopped")
