"""The stream hub keeps a slow consumer's memory bounded: its queue never grows
past the limit; it falls back to reading the database and still gets every
event once, in order."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from flint.commerce import orders
from flint.commerce.context import Actor, Tenant
from flint.commerce.lines import LineInput
from flint.common.db import Database
from flint.events import hub as hub_module
from flint.events.hub import Hub
from flint.events.presenter import Reader
from flint.events.sequencer import sequence_pending


def _create_orders(db: Database, merchant_id: str, count: int) -> list[str]:
    created = []
    for _ in range(count):
        with db.unit_of_work() as uow:
            order = orders.create_order(
                uow,
                Tenant(merchant_id, "test"),
                Actor("merchant", merchant_id),
                lines=[LineInput("Mug", 1, 1000)],
                currency="usd",
                customer_email="",
                metadata={},
            )
            uow.commit()
        created.append(order.id)
    sequence_pending(db)
    return created


def test_a_slow_subscriber_stays_bounded_and_catches_up(
    db: Database, new_merchant, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(hub_module, "QUEUE_LIMIT", 5)

    async def scenario() -> tuple[int, int, list[str], list[str]]:
        hub = Hub(db, poll_seconds=0.02)
        poller = asyncio.create_task(hub.run())
        stream = hub.follow(Reader(new_merchant.id, "test"), [], None, 30, lambda: True)
        first = asyncio.ensure_future(anext(stream))  # subscribes, then waits
        async with asyncio.timeout(60):
            while hub.subscriber_count == 0:
                await asyncio.sleep(0.01)
            (subscription,) = hub._subscribers
            created = await asyncio.to_thread(_create_orders, db, new_merchant.id, 20)
            # The consumer takes one event and then stalls while 19 more arrive.
            received = [(await first).object_id]
            while subscription.times_lagged == 0:
                await asyncio.sleep(0.01)
            while len(received) < len(created):
                received.append((await anext(stream)).object_id)
        await stream.aclose()
        poller.cancel()
        return subscription.peak, subscription.times_lagged, received, created

    peak, times_lagged, received, created = asyncio.run(scenario())
    assert times_lagged >= 1
    assert peak <= 5
    assert received == created  # every event once, in order, despite the lag


def test_a_revoked_reader_is_cut_off_even_while_events_keep_flowing(db: Database, new_merchant):
    """Access is checked at least once per heartbeat interval, not only when
    the stream is idle: a busy merchant's stream never goes idle."""

    async def scenario() -> tuple[bool, int]:
        hub = Hub(db, poll_seconds=0.02)
        poller = asyncio.create_task(hub.run())
        allowed = True
        stream = hub.follow(Reader(new_merchant.id, "test"), [], None, 0.5, lambda: allowed)
        first = asyncio.ensure_future(anext(stream))
        stop = threading.Event()

        def keep_writing() -> None:
            while not stop.is_set():
                _create_orders(db, new_merchant.id, 1)
                time.sleep(0.05)

        writer = asyncio.create_task(asyncio.to_thread(keep_writing))
        received = 0
        ended = False
        try:
            async with asyncio.timeout(60):
                await first
                received = 1
                allowed = False  # the credential is revoked
                revoked_at = time.monotonic()
                while time.monotonic() - revoked_at < 5:
                    try:
                        item = await anext(stream)
                    except StopAsyncIteration:
                        ended = True
                        break
                    assert not isinstance(item, int), "no heartbeat while events flow"
                    received += 1
        finally:
            stop.set()
            await writer
            await stream.aclose()
            poller.cancel()
        return ended, received

    ended, received = asyncio.run(scenario())
    assert received > 5  # events kept arriving after the revocation…
    assert ended  # …and the stream still ended


def test_the_hub_stops_when_cancelled_as_it_is_woken(db: Database):
    """A cancel that lands as the hub wakes must still end it (on Python 3.11
    asyncio.wait_for swallowed such a cancel, and the hub outlived the server)."""

    async def wake_and_cancel() -> bool:
        hub = Hub(db)
        running = asyncio.create_task(hub.run())
        await asyncio.sleep(0.3)  # polling, waiting to be woken
        hub.notify_threadsafe()
        await asyncio.sleep(0)  # the wake-up is scheduled before the cancel
        running.cancel()
        done, _ = await asyncio.wait({running}, timeout=3)
        if not done:
            running.cancel()  # once more, so the test itself leaves nothing behind
            await asyncio.wait({running}, timeout=3)
        return bool(done)

    assert asyncio.run(wake_and_cancel())
