"""The baseline the request-path scenarios are compared with: a bare grpc.aio
server with Flint's generated OrdersService stub that answers GetOrder and
CreateOrder with one Order message held in memory — no interceptors, no auth,
no database. Whatever Flint is slower by is the cost of what it really does.

    python -m bench.baseline_server --port 50100 --order-file order.bin
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

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


async def serve(port: int, order: pb.Order) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    orders_grpc.add_OrdersServiceServicer_to_server(InMemoryOrders(order), server)  # type: ignore[abstract]
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
    """Runs the baseline server as a child process while in the `with` block."""

    def __init__(self, order: pb.Order) -> None:
        self._order = order
        self._dir = tempfile.TemporaryDirectory(prefix="flint-baseline-")
        self.port = 0
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

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
    args = parser.parse_args()
    order = pb.Order.FromString(args.order_file.read_bytes())
    asyncio.run(serve(args.port, order))


if __name__ == "__main__":
    main()
