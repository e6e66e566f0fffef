"""Keeps the benchmark harness from rotting: the request-path scenario runs for a
moment on this run's database, against real processes, and every row it
reports measured something without errors. (Speed is judged by `make bench`,
not here: a test machine is too noisy for targets.)"""

from __future__ import annotations

import os

from bench import breakdown
from bench.harness import format_table
from bench.scenarios import api, delivery, fairness, ratelimit
from bench.stack import FlintStack

SMOKE = api.Runs(duration=0.5, warmup=0.2, levels=(4,))


def test_request_path_scenario_measures_flint_and_its_baselines() -> None:
    database = os.environ.get("FLINT_TEST_DATABASE", "sqlite")
    rows = api.measure_database(database, SMOKE, postgres={})  # type: ignore[arg-type]

    expected = {"GetOrder gRPC app token", "CreateOrder idem+outbox", "GetOrder REST via Envoy"}
    if database == "postgresql":
        # Beside the bare server, the floor: one raw PostgreSQL read or transaction per call.
        expected |= {"GetOrder floor: 1 PG read", "CreateOrder floor: 1 PG txn"}
    assert {row.scenario for row in rows} == expected
    for row in rows:
        assert row.concurrency == 4
        assert row.flint.ops > 0, row
        assert row.flint.errors == 0, row
        assert 0 < row.flint.p50_ms <= row.flint.p99_ms, row
    if database == "postgresql":
        # Each row is compared with a baseline measured beside it.
        for row in rows:
            assert row.baseline is not None, row
            assert row.baseline.ops > 0, row
            assert row.ratio is not None
    table = format_table(rows)
    assert "GetOrder REST via Envoy" in table
    assert "ratio" in table.splitlines()[0]


def test_delivery_scenario_measures_the_worker_and_its_baseline() -> None:
    database = os.environ.get("FLINT_TEST_DATABASE", "sqlite")
    row = delivery.throughput(database, 40)  # type: ignore[arg-type]

    assert row.flint.ops == 40, row
    assert row.baseline is not None
    assert row.baseline.ops == 40
    assert row.baseline.errors == 0
    assert row.baseline_name == "raw signed POSTs (aiohttp)"
    assert float(row.notes["cpu ms/delivery"]) > 0


def test_fairness_scenario_measures_a_healthy_endpoint_idle_and_beside_a_hanging_one() -> None:
    database = os.environ.get("FLINT_TEST_DATABASE", "sqlite")
    row = fairness.fairness(database, samples=3, backlog=20)  # type: ignore[arg-type]

    assert row.flint.ops == 3, row
    assert row.flint.errors == 0, row
    assert row.baseline is not None
    assert row.baseline.ops == 3, row
    assert float(row.notes["p99_ratio"]) > 0
    # The hanging endpoint got some of its deliveries (its requests never end)
    # and still has the rest of its backlog, and the measured orders' events, pending.
    assert int(row.notes["hanging requests"]) >= 1
    assert int(row.notes["hanging still pending"]) == 20 + 3


def test_get_order_breakdown_measures_every_server_and_step() -> None:
    database = os.environ.get("FLINT_TEST_DATABASE", "sqlite")
    with FlintStack(database) as stack:  # type: ignore[arg-type]
        servers, steps = breakdown.measure(stack, calls=20, seconds=0.5, concurrency=4)

    names = ["Flint", "bare grpc.aio"]
    if database == "postgresql":
        names.append("floor: 1 raw PG read")
    assert [server.server for server in servers] == names
    assert all(s.ops_per_second > 0 and s.cpu_ms_per_call > 0 for s in servers), servers
    assert len(steps) == (5 if database == "postgresql" else 4)
    assert all(step.cpu_us > 0 for step in steps), steps


def test_rate_limit_scenario_measures_getorder_with_the_limiter_on_and_off() -> None:
    database = os.environ.get("FLINT_TEST_DATABASE", "sqlite")
    rows = ratelimit.measure(database, SMOKE, turns=1, level=4)  # type: ignore[arg-type]

    assert [row.scenario for row in rows] == [
        "GetOrder, rate limiter in process",
        "GetOrder, rate limiter Redis",
    ]
    for row in rows:
        assert row.flint.ops > 0, row
        assert row.flint.errors == 0, row
        assert row.baseline is not None
        assert row.baseline.ops > 0
        assert row.baseline_name == "limiter off"
        assert row.ratio is not None
