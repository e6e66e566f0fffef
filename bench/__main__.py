"""`make bench` (python -m bench): runs every scenario, prints the table, writes
it to build/bench/latest.md and exits 1 when a target is not met.

    BENCH_QUICK=1 python -m bench            # a few seconds per scenario (smoke)
    python -m bench api delivery             # only these scenario modules (also: streams, fairness)
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import Measurement, Row, format_table

SCENARIOS = ("api", "delivery", "streams", "ratelimit", "fairness")
OUTPUT = Path("build/bench/latest.md")


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} × {cpu}, Python {platform.python_version()}, {platform.system()}"


def run_scenarios(names: list[str], quick: bool) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        started = time.monotonic()
        print(f"bench: running {name} …", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"bench.scenarios.{name}")
            rows += module.run(quick)
        except Exception as error:
            # One broken scenario must not hide the others' results: it shows
            # in the table as a missed target (and `make bench` fails).
            traceback.print_exc()
            rows.append(failed_row(name, error))
        print(f"bench: {name} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def failed_row(name: str, error: Exception) -> Row:
    return Row(
        f"{name} (did not run)",
        "-",
        None,
        Measurement(ops=0, seconds=0, p50_ms=0, p99_ms=0, errors=1),
        target="runs",
        met=False,
        notes={"error": f"{type(error).__name__}: {error}"[:120]},
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS), metavar="SCENARIO")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    started = time.monotonic()
    rows = run_scenarios(args.scenarios, quick)
    table = format_table(rows)
    missed = [row for row in rows if row.met is False]
    report = "\n".join(
        [
            f"# Flint benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
            + (" (BENCH_QUICK: smoke run, not a measurement)" if quick else ""),
            "",
            f"Machine: {machine()}. Took {time.monotonic() - started:.0f} s.",
            "",
            "```",
            table,
            "```",
            "",
            f"{len(missed)} target(s) not met." if missed else "Every target met.",
            "",
        ]
    )
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
