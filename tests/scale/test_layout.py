"""`flint up --replicas N --workers M`: which ports the replicas get, and the
flags that make no stack, refused before anything starts."""

from __future__ import annotations

import pytest

from flint.supervisor import LayoutError, replica_ports
from tests.cli.conftest import run_flint


def test_replicas_take_consecutive_ports_from_the_one_given():
    assert replica_ports([50051], 3) == (50051, 50052, 50053)


def test_one_replica_by_default():
    assert replica_ports([50051], None) == (50051,)


def test_ports_given_one_by_one_make_one_replica_each():
    assert replica_ports([7001, 7005], None) == (7001, 7005)
    assert replica_ports([7001, 7005], 2) == (7001, 7005)


def test_replicas_that_do_not_match_the_ports_given_are_refused():
    with pytest.raises(LayoutError, match="does not match"):
        replica_ports([7001, 7005], 3)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--replicas", "0"], "--replicas must be at least 1"),
        (["--workers", "-1"], "--workers must be 0 or more"),
        (
            ["--grpc-port", "7001", "--grpc-port", "7002", "--replicas", "3"],
            "--replicas 3 does not match the 2 --grpc-port values given",
        ),
    ],
    ids=["zero-replicas", "negative-workers", "replicas-not-matching-ports"],
)
def test_up_refuses_a_layout_that_makes_no_stack(database_url: str, flags, message):
    result = run_flint(database_url, "up", *flags)
    assert result.returncode == 2, result.stderr
    assert f"flint: {message}" in result.stderr
