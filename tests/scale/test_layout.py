"""`flint up --replicas N --workers M`: which ports the replicas get, and the
flags that make no stack, refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from flint import supervisor
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


def test_several_replicas_without_redis_server_are_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setattr(supervisor.shutil, "which", lambda _name: None)
    with pytest.raises(LayoutError) as refused:
        supervisor.rate_limit_store(str(tmp_path))
    assert "apt-get install redis-server" in str(refused.value)
    assert "FLINT_RATE_LIMIT_URL" in str(refused.value)


def test_the_private_rate_limit_store_listens_on_a_private_socket_and_saves_nothing(
    tmp_path: Path,
):
    command, url = supervisor.rate_limit_store(str(tmp_path))
    assert url == f"unix://{tmp_path}/ratelimit.sock"
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags["--port"] == "0"
    assert flags["--unixsocketperm"] == "700"
    assert flags["--save"] == ""
    assert flags["--appendonly"] == "no"
