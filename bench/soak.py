"""Soak: `flint up --replicas 2 --workers 2` on PostgreSQL under moderate load
for SOAK_SECONDS (default 600), then checks that nothing went wrong:

- no request failed;
- no child's memory, open file descriptors or PostgreSQL connections grew
  beyond a tolerance between the middle and the last third of the run (the
  first third is warm-up: pools fill, caches load);
- counts reconcile exactly: orders created = order.created events = events
  seen on the stream = deliveries succeeded (and webhook-ids received) per
  endpoint.

Load: orders created through REST (Envoy) with Idempotency-Keys at SOAK_RATE
per second, two webhook endpoints on a local receiver, one open SSE stream.

    make soak                       # 10 minutes
    SOAK_SECONDS=120 make soak      # a short run

The database is a fresh one on FLINT_SOAK_POSTGRES_ADMIN_URL's server (default
the local test server), dropped afterwards. Exits 1 if a check fails."""

from __future__ import annotations

import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.stack import free_port

ADMIN_URL = os.environ.get("FLINT_SOAK_POSTGRES_ADMIN_URL", "postgresql://root@127.0.0.1:5432/test")
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "15"))  # orders per second
SAMPLE_SECONDS = float(os.environ.get("SOAK_SAMPLE_SECONDS", "5"))
CLIENTS = 4
# Allowed growth from the middle third of the run to the last (median of each).
RSS_TOLERANCE = float(os.environ.get("SOAK_RSS_TOLERANCE", "0.20"))  # fraction
RSS_SLACK_KB = 16 * 1024  # allocator noise on a small process
FD_SLACK = 10
CONNECTION_SLACK = 4
DRAIN_SECONDS = 120.0
STARTUP_SECONDS = 180.0


# --- the receiver ----------------------------------------------------------------


@dataclass
class Receiver:
    """Counts webhook-ids per endpoint path, and every request."""

    ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.requests += 1
                    receiver.ids[self.path].add(self.headers["webhook-id"])
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


# --- the stream -------------------------------------------------------------------


@dataclass
class Follower:
    """One SSE stream through Envoy, reconnecting from its last cursor."""

    url: str
    key: str
    seen: set[str] = field(default_factory=set)
    # The cursor of the last event the stream carried.
    last_cursor: str = ""
    # Set by the first message (a heartbeat at the latest): the server has
    # subscribed the stream, so every later commit reaches it.
    ready: threading.Event = field(default_factory=threading.Event)
    reconnects: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        after = ""
        while not self.stop.is_set():
            try:
                with (
                    httpx.Client(base_url=self.url, timeout=httpx.Timeout(30, read=30)) as http,
                    http.stream(
                        "GET",
                        "/v1/events:stream",
                        params={"heartbeat_seconds": 1, "after": after},
                        headers={"Authorization": f"Bearer {self.key}"},
                    ) as response,
                ):
                    for line in response.iter_lines():
                        if self.stop.is_set():
                            return
                        if not line.startswith("data:"):
                            continue
                        self.ready.set()
                        item = json.loads(line[5:])
                        event = item.get("event")
                        if event:
                            after = self.last_cursor = event["cursor"]
                            if event["type"] == "order.created":
                                self.seen.add(event["object_id"])
                        elif "heartbeat" in item and not after:
                            after = item["heartbeat"].get("cursor", "")
            except httpx.HTTPError:
                if not self.stop.is_set():
                    self.reconnects += 1
                    time.sleep(0.5)


# --- the processes -----------------------------------------------------------------


def children_of(root: int) -> dict[int, str]:
    """pid -> role (grpc-1, worker-2, hosted, envoy) of every process under `root`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    roles: dict[int, str] = {}
    for pid, parent in parents.items():
        if parent != root:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        name = next((v[14:].decode() for v in environ if v.startswith(b"FLINT_PROCESS=")), "")
        roles[pid] = name or "envoy"
    return roles


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Samples:
    rss: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    fds: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    connections: list[int] = field(default_factory=list)


def sample(root: int, database_url: str, into: Samples) -> None:
    for pid, role in children_of(root).items():
        try:
            into.rss[role].append(rss_kb(pid))
            into.fds[role].append(open_fds(pid))
        except OSError:
            pass  # exited between listing and reading
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchone()
    into.connections.append(int(row[0]) - 1 if row else 0)  # not this one


# --- the load ----------------------------------------------------------------------


@dataclass
class Load:
    url: str
    key: str
    created: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self, number: int) -> None:
        interval = CLIENTS / RATE
        line = {"name": "Soak", "quantity": 1, "unit_amount": 1}
        body = {"currency": "usd", "line_items": [line]}
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            n = 0
            next_at = time.monotonic()
            while not self.stop.is_set():
                key = f"soak-{number}-{n}"
                n += 1
                try:
                    response = http.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
                except httpx.HTTPError as error:
                    with self.lock:
                        self.errors.append(f"{key}: {error!r}")
                else:
                    with self.lock:
                        if response.status_code == 200:
                            self.created.add(response.json()["id"])
                        else:
                            self.errors.append(f"{key}: {response.status_code} {response.text}")
                next_at += interval
                self.stop.wait(max(0.0, next_at - time.monotonic()))


# --- the run -------------------------------------------------------------------------


def flint(database_url: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "flint", *args, "--json"],
        env={**os.environ, "FLINT_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def middle_and_last_third(values: list[int]) -> tuple[float, float]:
    """Medians of the middle and the last third of a run. The first third is
    warm-up: connection pools fill and caches load there, and that is not a leak."""
    third = max(1, len(values) // 3)
    return statistics.median(values[third : 2 * third] or values), statistics.median(
        values[-third:]
    )


def growth_failures(samples: Samples) -> list[str]:
    failures = []

    def thirds(values: list[int]) -> tuple[float, float]:
        return middle_and_last_third(values)

    for role, values in sorted(samples.rss.items()):
        first, last = thirds(values)
        if last > first * (1 + RSS_TOLERANCE) + RSS_SLACK_KB:
            failures.append(f"{role}: memory grew from {first:.0f} kB to {last:.0f} kB")
    for role, values in sorted(samples.fds.items()):
        first, last = thirds(values)
        if last > first + FD_SLACK:
            failures.append(f"{role}: open files grew from {first:.0f} to {last:.0f}")
    first, last = thirds(samples.connections)
    if last > first + CONNECTION_SLACK:
        failures.append(f"PostgreSQL connections grew from {first:.0f} to {last:.0f}")
    return failures


def describe_events(database_url: str, order_ids: list[str]) -> list[str]:
    """Each order's order.created event: cursor, commit time and when it was numbered
    relative to its neighbours (to tell a stream gap from a late event)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT object_id, id, cursor, created_at FROM events"
            " WHERE type = 'order.created' AND object_id = ANY(%s) ORDER BY cursor",
            (order_ids,),
        ).fetchall()
    return [
        f"{order} event {event} cursor {cursor} at {at:%H:%M:%S.%f}"
        for order, event, cursor, at in rows
    ]


def reconcile(database_url: str, merchant_id: str, endpoints: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with psycopg.connect(database_url) as conn:

        def one(sql: str, *params: object) -> int:
            row = conn.execute(sql, params).fetchone()
            return int(row[0]) if row else 0

        counts["orders in the database"] = one(
            "SELECT count(*) FROM orders WHERE merchant_id = %s", merchant_id
        )
        counts["order.created events"] = one(
            "SELECT count(*) FROM events WHERE merchant_id = %s AND type = 'order.created'",
            merchant_id,
        )
        for path, endpoint_id in endpoints.items():
            counts[f"deliveries succeeded {path}"] = one(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = %s"
                " AND event_type = 'order.created' AND status = 'succeeded'",
                endpoint_id,
            )
    return counts


def main() -> int:
    name = f"flint_soak_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    workdir = Path(tempfile.mkdtemp(prefix="flint-soak-"))
    http_port, hosted_port, admin_port = free_port(), free_port(), free_port()
    grpc_ports = [free_port(), free_port()]
    log = (workdir / "up.log").open("wb")
    up = subprocess.Popen(  # noqa: S603 - our own command
        [
            sys.executable,
            "-m",
            "flint",
            "up",
            "--http-port",
            str(http_port),
            "--hosted-port",
            str(hosted_port),
            "--admin-port",
            str(admin_port),
            *[f"--grpc-port={port}" for port in grpc_ports],
            "--workers",
            "2",
        ],
        env={**os.environ, "FLINT_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{http_port}"
    receiver = Receiver()
    server = receiver.serve()
    follower: Follower | None = None
    load: Load | None = None
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while b"Flint is up" not in (workdir / "up.log").read_bytes():
            if up.poll() is not None or time.monotonic() > deadline:
                print((workdir / "up.log").read_text(errors="replace"), file=sys.stderr)
                return 1
            time.sleep(0.2)
        seeded = flint(database_url, "dev", "seed")
        flint(
            database_url,
            "dev",
            "install",
            "--client-id",
            seeded["client_id"],
            "--client-secret",
            seeded["client_secret"],
            "--merchant",
            seeded["merchant_id"],
            "--scope",
            "orders:read events:read",
        )
        endpoints: dict[str, str] = {}
        with httpx.Client(base_url=url, timeout=30) as http:
            for path in ("/a", "/b"):
                response = http.post(
                    f"/v1/apps/{seeded['app_id']}/webhook_endpoints",
                    headers={"Authorization": f"Bearer {seeded['partner_key']}"},
                    json={
                        "url": f"http://127.0.0.1:{server.server_address[1]}{path}",
                        "enabled_events": ["order.created"],
                        "environments": ["ENVIRONMENT_TEST"],
                    },
                )
                response.raise_for_status()
                endpoints[path] = response.json()["id"]
        follower = Follower(url, seeded["test_secret_key"])
        threading.Thread(target=follower.run, daemon=True).start()
        # "From now" means from when the server subscribed it: load only after that.
        if not follower.ready.wait(30):
            print("soak: the event stream did not open", file=sys.stderr)
            return 1
        load = Load(url, seeded["test_secret_key"])
        clients = [threading.Thread(target=load.client, args=(n,)) for n in range(CLIENTS)]
        samples = Samples()
        print(
            f"soak: {SECONDS:.0f} s at {RATE:g} orders/s; replicas 2, workers 2; "
            f"database {name}; logs {workdir}",
            flush=True,
        )
        started = time.monotonic()
        for client in clients:
            client.start()
        while time.monotonic() - started < SECONDS:
            sample(up.pid, database_url, samples)
            elapsed = time.monotonic() - started
            print(
                f"  {elapsed:5.0f} s  orders {len(load.created):6d}  errors {len(load.errors)}"
                f"  delivered {receiver.requests:6d}  streamed {len(follower.seen):6d}"
                f"  pg connections {samples.connections[-1]}",
                flush=True,
            )
            time.sleep(SAMPLE_SECONDS)
        load.stop.set()
        for client in clients:
            client.join(60)

        created = len(load.created)
        drain_until = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < drain_until:
            done = len(follower.seen) >= created and all(
                len(receiver.ids[path]) >= created for path in endpoints
            )
            if done:
                break
            time.sleep(0.5)
        counts = {"orders created (client)": created}
        counts.update(reconcile(database_url, seeded["merchant_id"], endpoints))
        counts["order.created seen on the stream"] = len(follower.seen & load.created)
        for path in endpoints:
            counts[f"webhook-ids received {path}"] = len(receiver.ids[path])

        failures = [f"{len(load.errors)} requests failed: {load.errors[:3]}"] * bool(load.errors)
        failures += [
            f"{what} = {count}, expected {created}"
            for what, count in counts.items()
            if count != created
        ]
        failures += growth_failures(samples)
        missed = sorted(load.created - follower.seen)
        if missed:
            failures.append(
                f"missed on the stream (its last cursor {follower.last_cursor}): "
                f"{describe_events(database_url, missed[:5])}"
            )

        print("\nreconciliation")
        for what, count in counts.items():
            print(f"  {what:40s} {count}")
        print("\nper process (middle third → last third of the run, medians)")
        for role in sorted(samples.rss):
            rss = middle_and_last_third(samples.rss[role])
            fds = middle_and_last_third(samples.fds[role])
            print(
                f"  {role:10s} rss {rss[0] / 1024:6.1f} → {rss[1] / 1024:6.1f} MB"
                f"   open fds {fds[0]:.0f} → {fds[1]:.0f}"
            )
        connections = middle_and_last_third(samples.connections)
        print(f"  PostgreSQL connections {connections[0]:.0f} → {connections[1]:.0f}")
        print(f"  stream reconnects {follower.reconnects}")
        if failures:
            print("\nSOAK FAILED\n  " + "\n  ".join(failures))
            return 1
        print("\nsoak passed: no errors, no growth, counts reconcile")
        return 0
    finally:
        if load is not None:
            load.stop.set()
        if follower is not None:
            follower.stop.set()
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
        log.close()
        server.shutdown()
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    raise SystemExit(main())
