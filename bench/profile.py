"""Profiles `flint serve` under the request-path load with py-spy and prints the
frames it spends most time in (and keeps the collapsed stacks, which
flamegraph.pl or speedscope draw).

    python -m bench.profile get --database postgresql --seconds 15
    python -m bench.profile create --output build/bench/create.txt
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from bench.harness import Measurement
from bench.loadgen import GrpcLoad, measure_grpc
from bench.scenarios.api import CREATE_ORDER, GET_ORDER, _bearer, _seed_order, new_order_request
from bench.stack import FlintStack
from flint.commerce.v1 import orders_service_pb2 as orders_pb


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("call", choices=["get", "create"])
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--output", type=Path, default=None, help="collapsed stacks (.txt)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (CPU work)"
    )
    args = parser.parse_args()
    py_spy = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    )
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[dev]'")
    output = args.output or Path(f"build/bench/profile-{args.call}-{args.database}.txt")
    output.parent.mkdir(parents=True, exist_ok=True)
    with FlintStack(args.database) as stack:
        order = _seed_order(stack)
        if args.call == "get":
            method = GET_ORDER
            request = orders_pb.GetOrderRequest(id=order.id).SerializeToString()
        else:
            method = CREATE_ORDER
            request = new_order_request().SerializeToString()
        load = GrpcLoad(
            target=stack.grpc_target,
            method=method,
            request=request,
            metadata=_bearer(stack.app_token),
            idempotency_keys=args.call == "create",
            concurrency=args.concurrency,
            duration=args.seconds + 2,
            warmup=1,
        )
        measured: list[Measurement] = []
        loader = threading.Thread(target=lambda: measured.append(measure_grpc(load)))
        loader.start()
        record = [py_spy, "record", "--pid", str(stack.pids["grpc"]), "--duration"]
        options = [str(args.seconds), "--rate", "250", "--nonblocking", "--format", "raw"]
        if args.gil:
            options.append("--gil")
        subprocess.run([*record, *options, "--output", str(output)], check=True)  # noqa: S603
        loader.join()
    print(f"throughput under the profiler: {measured[0].throughput:.0f} ops/s")
    print(f"collapsed stacks: {output}\n")
    print(summarize(output.read_text(), args.top))


def summarize(collapsed: str, top: int) -> str:
    """The frames with the most samples: inclusive (anywhere on the stack) and
    self (on top of it), from py-spy's collapsed "frame;frame;frame count" lines."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
