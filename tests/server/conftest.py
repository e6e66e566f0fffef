"""An in-process gRPC server, for tests that need a handler to misbehave
(monkeypatched domain code runs in the server's own threads)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc
import pytest

from flint.common.db import Database
from flint.server.app import RunningServer, start_server

T = TypeVar("T")


class InProcess:
    """Runs `start_server` on its own event loop thread."""

    def __init__(self, db: Database) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningServer = self.submit(start_server(db)).result(10)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.running.port}")

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        self.channel.close()
        self.submit(self.running.stop(0)).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def in_process(db: Database) -> Iterator[InProcess]:
    server = InProcess(db)
    yield server
    server.close()
