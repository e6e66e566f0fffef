"""A gRPC replica killed (SIGKILL) under load through Envoy: clients see success
or a retryable error, never a half-written order; writes retried under their
Idempotency-Key make one order; `flint up` starts the replica again."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import select

from flint.commerce.models import OrderRecord
from flint.common.db import Database
from flint.common.events import EventRecord
from tests.conftest import MerchantCreds, wait_until
from tests.scale.stack import Stack, running_stack

CLIENTS = 6
LOAD_SECONDS_BEFORE_KILL = 2.0
LOAD_SECONDS_AFTER_KILL = 4.0
# (HTTP status, reason) a client may meet, all of which say "try again".
RETRYABLE = {
    (503, "UPSTREAM_UNAVAILABLE"),  # Envoy: the replica went away mid-request
    (503, "DATABASE_UNAVAILABLE"),
    (409, "IDEMPOTENCY_KEY_IN_USE"),  # the dead replica's claim holds the key a while
}

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(db: Database, database_url: str, tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with running_stack(
        database_url, tmp_path_factory.mktemp("kill"), replicas=3, workers=0
    ) as running:
        yield running


@dataclass
class Load:
    url: str
    key: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Idempotency-Key -> the order id the client was given.
    succeeded: dict[str, str] = field(default_factory=dict)
    # Keys still failing (retryably) when the load stopped: their outcome is open.
    unsettled: set[str] = field(default_factory=set)
    answers: Counter[tuple[int, str]] = field(default_factory=Counter)
    # Keys that met any error, on their write or on the read after it.
    troubled: set[str] = field(default_factory=set)

    def client(self, number: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        body = {"currency": "usd", "line_items": [{"name": "Mug", "quantity": 1, "unit_amount": 1}]}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                key = f"kill-{number}-{n}"
                n += 1
                while True:
                    response = http.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
                    if response.status_code == 200:
                        order_id = response.json()["id"]
                        # A read through Envoy right after: retried on another replica too.
                        read = http.get(f"/v1/orders/{order_id}")
                        self._note(key, read)
                        with self.lock:
                            self.succeeded[key] = order_id
                        break
                    self._note(key, response)
                    if self.stop.is_set():
                        with self.lock:
                            self.unsettled.add(key)
                        break
                    time.sleep(0.1)

    def _note(self, key: str, response: httpx.Response) -> None:
        if response.status_code == 200:
            answer = (200, "")
        else:
            with self.lock:
                self.troubled.add(key)
            details = response.json().get("details", [])
            reason = next((d["reason"] for d in details if "reason" in d), "")
            answer = (response.status_code, reason)
        with self.lock:
            self.answers[answer] += 1


def test_a_replica_killed_under_load_loses_nothing(
    stack: Stack, db: Database, new_merchant: MerchantCreds
):
    load = Load(stack.url, new_merchant.test_key)
    clients = [threading.Thread(target=load.client, args=(n,)) for n in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        time.sleep(LOAD_SECONDS_BEFORE_KILL)  # the load runs for a while: this is its length
        victim = stack.replica(stack.grpc_ports[1])
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = len(load.succeeded)
        time.sleep(LOAD_SECONDS_AFTER_KILL)
    finally:
        load.stop.set()
        for client in clients:
            client.join(60)
    # Envoy routed around the dead replica: writes kept succeeding.
    assert len(load.succeeded) > killed_at
    # Clients saw success or a retryable error, nothing else…
    assert set(load.answers) - {(200, "")} <= RETRYABLE, load.answers
    # …and only for calls caught in flight on the dying replica (one per client at
    # most): Envoy sent everything else to the live ones.
    assert len(load.troubled) <= CLIENTS, (load.troubled, load.answers)
    assert len(load.unsettled) <= CLIENTS
    # The supervisor started the replica again.
    wait_until(lambda: 'process_restarted process="grpc-2"' in stack.log(), timeout=30)

    # Nothing half-written: one order per key that succeeded, each with exactly one
    # order.created event; a key whose outcome stayed open made at most one order.
    with db.read() as session:
        stored = set(
            session.scalars(
                select(OrderRecord.id).where(OrderRecord.merchant_id == new_merchant.id)
            ).all()
        )
        events = Counter(
            session.scalars(
                select(EventRecord.object_id).where(
                    EventRecord.merchant_id == new_merchant.id,
                    EventRecord.type == "order.created",
                )
            ).all()
        )
    given = set(load.succeeded.values())
    assert len(given) == len(load.succeeded)  # no two keys were given one order
    assert given <= stored
    assert len(stored - given) <= len(load.unsettled)
    assert events == Counter(stored)
