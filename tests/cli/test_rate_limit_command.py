"""`flint admin set-rate-limit`: the operator's per-caller override, run as a real
subprocess, and obeyed by the real gRPC server."""

from __future__ import annotations

import time

import grpc
from sqlalchemy import select

from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.common.db import Database
from flint.common.rate_limit_overrides import RateLimitOverrideRecord
from tests.cli.conftest import run_flint, run_json
from tests.conftest import bearer
from tests.errors import grpc_error


def _new_merchant(database_url: str) -> dict[str, str]:
    return run_json(
        database_url,
        "admin",
        "create-merchant",
        "--name",
        "Limited Shop",
        "--email",
        f"limited-{time.monotonic_ns()}@example.com",
        "--password",
        "correct horse battery staple",
    )


def test_set_rate_limit_limits_that_merchant_on_the_running_server(
    database_url: str, channel: grpc.Channel
):
    merchant = _new_merchant(database_url)
    set_limit = run_json(
        database_url,
        "admin",
        "set-rate-limit",
        "--merchant",
        merchant["merchant_id"],
        "--environment",
        "test",
        "--reads",
        "1",
        "--writes",
        "5",
    )
    assert set_limit == {
        "subject": f"merchant:{merchant['merchant_id']}:test",
        "reads_per_second": 1,
        "writes_per_second": 5,
    }
    orders = orders_grpc.OrdersServiceStub(channel)
    key = bearer(merchant["test_secret_key"])
    started = time.monotonic()
    codes = []
    for _ in range(4):
        try:
            orders.ListOrders(orders_pb.ListOrdersRequest(), metadata=key)
            codes.append("OK")
        except grpc.RpcError as error:
            codes.append(grpc_error(error).reason)
    elapsed = time.monotonic() - started
    assert 1 <= codes.count("OK") <= 2 + int(elapsed)
    assert "RATE_LIMITED" in codes


def test_default_removes_the_override(database_url: str, db: Database):
    merchant = _new_merchant(database_url)
    flags = ("--merchant", merchant["merchant_id"], "--environment", "live")
    run_json(database_url, "admin", "set-rate-limit", *flags, "--reads", "7", "--writes", "3")
    subject = f"merchant:{merchant['merchant_id']}:live"
    with db.read() as session:
        row = session.scalars(
            select(RateLimitOverrideRecord).where(RateLimitOverrideRecord.subject == subject)
        ).one()
        assert (row.reads_per_second, row.writes_per_second) == (7, 3)
    removed = run_json(database_url, "admin", "set-rate-limit", *flags, "--default")
    assert removed == {"subject": subject, "default": True, "removed": True}
    with db.read() as session:
        assert session.get(RateLimitOverrideRecord, subject) is None


def test_set_rate_limit_refuses_an_unknown_merchant(database_url: str):
    result = run_flint(
        database_url,
        "admin",
        "set-rate-limit",
        "--merchant",
        "mer_does_not_exist",
        "--environment",
        "test",
        "--reads",
        "5",
        "--writes",
        "5",
    )
    assert result.returncode == 1
    assert "RESOURCE_NOT_FOUND" in result.stderr


def test_set_rate_limit_refuses_a_merchant_without_environment(database_url: str):
    result = run_flint(
        database_url,
        "admin",
        "set-rate-limit",
        "--merchant",
        "mer_x",
        "--reads",
        "5",
        "--writes",
        "5",
    )
    assert result.returncode == 1
    assert "RATE_LIMIT_SUBJECT_INVALID" in result.stderr


def test_set_rate_limit_refuses_zero(database_url: str):
    merchant = _new_merchant(database_url)
    result = run_flint(
        database_url,
        "admin",
        "set-rate-limit",
        "--merchant",
        merchant["merchant_id"],
        "--environment",
        "test",
        "--reads",
        "0",
        "--writes",
        "5",
    )
    assert result.returncode == 1
    assert "RATE_LIMIT_OUT_OF_RANGE" in result.stderr


def test_set_rate_limit_needs_reads_and_writes_or_default(database_url: str):
    result = run_flint(
        database_url, "admin", "set-rate-limit", "--partner", "par_x", "--reads", "5"
    )
    assert result.returncode == 2
    assert "--writes" in result.stderr
