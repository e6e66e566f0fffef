"""What every benchmark scenario returns, and the table `make bench` prints.

A scenario measures Flint and, in the same run on the same machine, its
baseline; rows carry both so the ratio (what we track) is printed beside the
absolute numbers (which vary between machines)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentiles_ms(latencies_s: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of latencies given in seconds, in milliseconds."""
    if not latencies_s:
        return 0.0, 0.0
    if len(latencies_s) == 1:
        return latencies_s[0] * 1000, latencies_s[0] * 1000
    cuts = statistics.quantiles(latencies_s, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


@dataclass
class Measurement:
    """One load run: `ops` operations completed in `seconds` wall time."""

    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int = 0

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


@dataclass
class Row:
    scenario: str
    database: str  # "postgresql" | "sqlite" | "-"
    concurrency: int | None
    flint: Measurement
    baseline: Measurement | None = None
    baseline_name: str = ""
    # Human-readable target, e.g. "QPS >= 0.50x"; `met` is None when nothing is required.
    target: str = ""
    met: bool | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.throughput:
            return None
        return self.flint.throughput / self.baseline.throughput


def format_table(rows: list[Row]) -> str:
    header = (
        "scenario",
        "db",
        "conc",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "baseline",
        "base ops/s",
        "base p99",
        "ratio",
        "target",
        "met",
        "notes",
    )
    lines = [header]
    for row in rows:
        base = row.baseline
        lines.append(
            (
                row.scenario,
                row.database,
                "-" if row.concurrency is None else str(row.concurrency),
                f"{row.flint.throughput:,.0f}",
                f"{row.flint.p50_ms:.2f}",
                f"{row.flint.p99_ms:.2f}",
                row.baseline_name or "-",
                "-" if base is None else f"{base.throughput:,.0f}",
                "-" if base is None else f"{base.p99_ms:.2f}",
                "-" if row.ratio is None else f"{row.ratio:.2f}",
                row.target or "-",
                {True: "yes", False: "NO", None: "-"}[row.met],
                ", ".join(f"{k}={v}" for k, v in row.notes.items()),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    ]
    out.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(out)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
