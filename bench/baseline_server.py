"""The baseline the request-path scenarios are compared with: a bare grpc.aio
server with Flint's generated OrdersService stub that answers GetOrder and
CreateOrder with one Order message held in memory — no auth, no database.
Whatever Flint is slower by is the cost of what it really does.

With `--database-url` it is the *floor* instead: the least any server that
keeps its orders in that PostgreSQL database can do per call — GetOrder reads
the order's row by id, CreateOrder commits one transaction of three inserts
(key, order, event), each on a worker thread with its own connection, with raw
prepared psycopg statements. Nothing else: no auth, no tenancy, no validation.

    python -m bench.baseline_server --port 50100 --order-file order.bin [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import psycopg

from bench.stack import STOP_TIMEOUT_SECONDS, free_port
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import resources_pb2 as pb
from flint.supervisor import stop_process


class InMemoryOrders(orders_grpc.OrdersServiceServicer):
    def __init__(self, order: pb.Order) -> None:
        self._order = order

    async def GetOrder(self, request: Any, context: Any) -> pb.Order:
        return self._order

    async def CreateOrder(self, request: Any, context: Any) -> pb.Order:
        return self._order


FLOOR_TABLES = (
    "CREATE TABLE IF NOT EXISTS bench_floor_keys (key text PRIMARY KEY, response bytea)",
    "CREATE TABLE IF NOT EXISTS bench_floor_orders (id text PRIMARY KEY, body bytea)",
    "CREATE TABLE IF NOT EXISTS bench_floor_events (id text PRIMARY KEY, body bytea)",
)
# As many threads (and connections) as Flint's server runs handlers on.
FLOOR_THREADS = 16


class DatabaseFloor(orders_grpc.OrdersServiceServicer):
    def __init__(self, dsn: str, order: pb.Order) -> None:
        self._dsn = dsn
        self._order = order
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(FLOOR_THREADS)
        with psycopg.connect(dsn, autocommit=True) as connection:
            for statement in FLOOR_TABLES:
                connection.execute(statement)

    def _connection(self) -> psycopg.Connection[Any]:
        connection: psycopg.Connection[Any] | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = psycopg.connect(self._dsn, autocommit=True)
            self._local.connection = connection
        return connection

    def _read(self, order_id: str) -> pb.Order:
        row = (
            self._connection()
            .execute(
                "SELECT id, currency, total, customer_email FROM orders WHERE id = %s",
                (order_id,),
                prepare=True,
            )
            .fetchone()
        )
        if row is None:
            raise LookupError(order_id)
        return pb.Order(id=row[0], currency=row[1], total=row[2], customer_email=row[3])

    def _write(self) -> pb.Order:
        body = self._order.SerializeToString()
        connection = self._connection()
        with connection.transaction():
            for table in ("keys", "orders", "events"):
                connection.execute(
                    f"INSERT INTO bench_floor_{table} VALUES (%s, %s)",  # noqa: S608 - constants
                    (uuid.uuid4().hex, body),
                    prepare=True,
                )
        return self._order

    async def GetOrder(self, request: Any, context: Any) -> pb.Order:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._read, request.id)

    async def CreateOrder(self, request: Any, context: Any) -> pb.Order:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._write)


async def serve(port: int, order: pb.Order, database_url: str = "") -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    servicer: orders_grpc.OrdersServiceServicer = (
        DatabaseFloor(database_url, order) if database_url else InMemoryOrders(order)  # type: ignore[abstract]
    )
    orders_grpc.add_OrdersServiceServicer_to_server(servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"could not listen on 127.0.0.1:{port}")
    await server.start()
    print(f"baseline: gRPC listening on 127.0.0.1:{port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(1)


class BaselineServer:
    """Runs the baseline server (or, given a PostgreSQL URL, the floor) as a
    child process while in the `with` block."""

    def __init__(self, order: pb.Order, *, database_url: str = "") -> None:
        self._order = order
        # libpq's spelling of the URL, not SQLAlchemy's.
        self._database_url = database_url.replace("postgresql+psycopg://", "postgresql://")
        self._dir = tempfile.TemporaryDirectory(prefix="flint-baseline-")
        self.port = 0
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._child is None:
            raise RuntimeError("the baseline server is not running")
        return self._child.pid

    def __enter__(self) -> BaselineServer:
        order_file = Path(self._dir.name) / "order.bin"
        order_file.write_bytes(self._order.SerializeToString())
        self.port = free_port()
        self._child = subprocess.Popen(  # noqa: S603 - our own command line
            [
                sys.executable,
                "-m",
                "bench.baseline_server",
                "--port",
                str(self.port),
                "--order-file",
                str(order_file),
                *(["--database-url", self._database_url] if self._database_url else []),
            ],
            stdout=subprocess.DEVNULL,
        )
        with grpc.insecure_channel(self.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=30)
            except grpc.FutureTimeoutError:
                self.__exit__(None, None, None)
                raise RuntimeError("the baseline server did not start") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._child is not None:
            stop_process(self._child, STOP_TIMEOUT_SECONDS)
        self._dir.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--order-file", type=Path, required=True, help="a serialized Order")
    parser.add_argument("--database-url", default="", help="PostgreSQL: serve the floor")
    args = parser.parse_args()
    order = pb.Order.FromString(args.order_file.read_bytes())
    asyncio.run(serve(args.port, order, args.database_url))


if __name__ == "__main__":
    main()
