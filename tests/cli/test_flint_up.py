"""`flint up`: migrations, the gRPC server and Envoy started as children, served
together, and stopped together on SIGINT/SIGTERM with no process left behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest

from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV
from tests.cli.conftest import FLINT, run_json
from tests.conftest import bearer, flint_env, free_port
from tests.errors import rest_error

STARTUP_DEADLINE_SECONDS = 60.0
STOP_DEADLINE_SECONDS = 20.0
# A child that dies during startup must be noticed well before the supervisor's
# 30 s readiness timeout runs out.
FAILED_START_DEADLINE_SECONDS = 15.0


# --- processes, read from /proc -------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    start_time: str
    cmdline: str


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    return stat[stat.rindex(")") + 2 :].split()


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def all_processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) for every process."""
    result: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            # After "(comm) ": state, ppid, …; starttime is field 22 of stat.
            result[int(entry.name)] = (int(fields[1]), fields[19])
    return result


def descendants(root: int) -> list[ProcessInfo]:
    table = all_processes()
    found: list[ProcessInfo] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start_time) in table.items():
            if ppid == parent:
                found.append(ProcessInfo(pid, start_time, _cmdline(pid)))
                frontier.append(pid)
    return found


def is_alive(process: ProcessInfo) -> bool:
    fields = _stat_fields(process.pid)
    if fields is None or fields[19] != process.start_time:
        return False  # gone (or the pid was reused by another process)
    return fields[0] not in ("Z", "X")


def processes_mentioning(*needles: str) -> list[str]:
    matches = []
    for pid in all_processes():
        cmdline = _cmdline(pid)
        if any(needle in cmdline for needle in needles):
            matches.append(f"{pid}: {cmdline}")
    return matches


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


# --- running `flint up` --------------------------------------------------------------


@dataclass
class Up:
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    tmp_dir: Path
    http_port: int
    grpc_port: int
    hosted_port: int
    admin_port: int
    children: list[ProcessInfo] = field(default_factory=list)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def output(self) -> str:
        return f"stdout:\n{self.stdout()}\nstderr:\n{self.stderr_path.read_text(errors='replace')}"

    def wait_until_up(self) -> str:
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            text = self.stdout()
            if "Flint is up" in text and "Ctrl-C" in text:
                return text
            if self.popen.poll() is not None:
                raise AssertionError(f"flint up exited {self.popen.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"flint up did not start in time:\n{self.output()}")

    def wait_for_exit(self, deadline_seconds: float) -> int:
        try:
            return self.popen.wait(deadline_seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"flint up still running {deadline_seconds} s later:\n{self.output()}"
            ) from None


@contextmanager
def flint_up(
    database_url: str,
    tmp_path: Path,
    grpc_port: int | None = None,
    *extra: str,
    env: dict[str, str] | None = None,
) -> Iterator[Up]:
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    up = Up(
        popen=None,  # type: ignore[arg-type]
        stdout_path=tmp_path / "up.out",
        stderr_path=tmp_path / "up.err",
        tmp_dir=tmp_dir,
        http_port=free_port(),
        grpc_port=grpc_port or free_port(),
        hosted_port=free_port(),
        admin_port=free_port(),
    )
    # TMPDIR keeps Envoy's rendered config under tmp_path, so its command line
    # names a path unique to this test.
    env = {
        **flint_env(database_url),
        "TMPDIR": str(tmp_dir),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with up.stdout_path.open("wb") as out, up.stderr_path.open("wb") as err:
        up.popen = subprocess.Popen(
            [
                str(FLINT),
                "up",
                "--http-port",
                str(up.http_port),
                "--grpc-port",
                str(up.grpc_port),
                "--hosted-port",
                str(up.hosted_port),
                "--admin-port",
                str(up.admin_port),
                *extra,
            ],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=err,
            # Its own process group, so cleanup can reach every child.
            start_new_session=True,
        )
    try:
        yield up
    finally:
        if up.popen.poll() is None:
            os.killpg(up.popen.pid, signal.SIGTERM)
            try:
                up.popen.wait(STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(up.popen.pid, signal.SIGKILL)
                up.popen.wait()
        for child in up.children:
            if is_alive(child):
                os.kill(child.pid, signal.SIGKILL)


@pytest.fixture
def up_database_url(database_url: str, tmp_path: Path) -> str:
    """A fresh SQLite file (so `flint up` migrates from nothing), or the session's
    PostgreSQL database."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'flint.db'}"
    return database_url


def check_serving(up: Up, database_url: str) -> None:
    """The startup banner names the addresses, and both of them answer."""
    banner = up.wait_until_up()
    assert re.search(rf"REST.*http://127\.0\.0\.1:{up.http_port}\b", banner), banner
    assert re.search(rf"gRPC\s+127\.0\.0\.1:{up.grpc_port}\b", banner), banner

    seeded = run_json(database_url, "dev", "seed")
    with httpx.Client(base_url=f"http://127.0.0.1:{up.http_port}", timeout=10) as client:
        response = client.get(
            "/v1/apps", headers={"Authorization": f"Bearer {seeded['partner_key']}"}
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    apps = response.json()["apps"]
    assert [app["id"] for app in apps] == [seeded["app_id"]]
    assert apps[0]["name"] == "Demo Loyalty"
    assert apps[0]["client_id"] == seeded["client_id"]

    with grpc.insecure_channel(f"127.0.0.1:{up.grpc_port}") as channel:
        listed = apps_grpc.AppsServiceStub(channel).ListApps(
            apps_pb.ListAppsRequest(), metadata=bearer(seeded["partner_key"]), timeout=10
        )
    assert [app.id for app in listed.apps] == [seeded["app_id"]]


def record_children(up: Up) -> None:
    up.children = descendants(up.popen.pid)
    commands = [child.cmdline for child in up.children]
    assert any("serve" in cmd and f"--port {up.grpc_port}" in cmd for cmd in commands), commands
    # Envoy gets its config inline; its admin port identifies it.
    assert any("envoy" in cmd and f"port_value: {up.admin_port}" in cmd for cmd in commands), (
        commands
    )


def check_everything_stopped(up: Up) -> None:
    alive = [f"{c.pid}: {c.cmdline}" for c in up.children if is_alive(c)]
    assert alive == [], f"children outlived flint up: {alive}"
    leftovers = processes_mentioning(f"--port {up.grpc_port}", f"port_value: {up.admin_port}")
    assert leftovers == [], leftovers
    for port in (up.grpc_port, up.http_port, up.admin_port):
        assert refuses_connections(port), f"port {port} still accepts connections"


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_serves_and_stops_everything_on_signal(up_database_url, tmp_path, signum):
    with flint_up(up_database_url, tmp_path) as up:
        check_serving(up, up_database_url)
        record_children(up)
        os.kill(up.popen.pid, signum)  # only the supervisor, not its process group
        code = up.wait_for_exit(STOP_DEADLINE_SECONDS)
        assert code == 0, up.output()
        check_everything_stopped(up)


@pytest.mark.e2e
def test_up_stops_cleanly_on_ctrl_c_to_the_whole_process_group(up_database_url, tmp_path):
    # A terminal's Ctrl-C sends SIGINT to every process in the foreground group at
    # once: the children see it at the same moment as the supervisor.
    with flint_up(up_database_url, tmp_path) as up:
        up.wait_until_up()
        record_children(up)
        os.killpg(up.popen.pid, signal.SIGINT)
        code = up.wait_for_exit(STOP_DEADLINE_SECONDS)
        assert code == 0, up.output()
        assert "Traceback" not in up.output()
        check_everything_stopped(up)


@pytest.mark.e2e
def test_up_fails_promptly_and_leaves_nothing_when_a_child_cannot_start(up_database_url, tmp_path):
    # Another program already holds the gRPC port, so `flint serve` dies at once.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with flint_up(up_database_url, tmp_path, grpc_port=taken) as up:
            try:
                code = up.popen.wait(FAILED_START_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"flint up did not notice within {FAILED_START_DEADLINE_SECONDS} s that "
                    f"its gRPC server could not start:\n{up.output()}"
                )
            assert code != 0, up.output()
            assert "Flint is up" not in up.stdout()
            # It failed for the right reason: the port could not be bound.
            assert f":{taken}" in up.stderr_path.read_text(), up.output()
            assert processes_mentioning(str(up.tmp_dir), f"--port {taken}") == []
            for port in (up.http_port, up.admin_port):
                assert refuses_connections(port)


# --- webhook targets ------------------------------------------------------------------


def create_endpoint(up: Up, partner_key: str, app_id: str, url: str, *environments: str):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=f"http://127.0.0.1:{up.http_port}", timeout=10) as client:
        return client.post(
            f"/v1/apps/{app_id}/webhook_endpoints",
            headers={"Authorization": f"Bearer {partner_key}"},
            json={
                "url": url,
                "enabled_events": ["order.paid"],
                "environments": list(environments or ("ENVIRONMENT_TEST",)),
            },
        )


def assert_refused_target(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    details = rest_error(response)
    assert details.reason == "ADDRESS_NOT_ALLOWED", response.text
    assert details.fields == ["webhook_endpoint.url"]


@pytest.mark.e2e
def test_up_refuses_webhook_endpoints_on_loopback_by_default(up_database_url, tmp_path):
    """The issue's attack: an endpoint on Envoy's admin port, read back through attempts."""
    with flint_up(up_database_url, tmp_path) as up:
        up.wait_until_up()
        seeded = run_json(up_database_url, "dev", "seed")
        key, app = seeded["partner_key"], seeded["app_id"]
        for url in (
            f"http://127.0.0.1:{up.admin_port}/config_dump",
            f"http://localhost:{free_port()}/hooks",
            f"http://[::ffff:127.0.0.1]:{free_port()}/hooks",
        ):
            assert_refused_target(create_endpoint(up, key, app, url))


@pytest.mark.e2e
def test_up_with_the_development_switch_still_refuses_its_own_ports(up_database_url, tmp_path):
    with flint_up(up_database_url, tmp_path, env={ALLOW_LOOPBACK_ENV: "1"}) as up:
        up.wait_until_up()
        seeded = run_json(up_database_url, "dev", "seed")
        key, app = seeded["partner_key"], seeded["app_id"]
        for port in (up.admin_port, up.http_port, up.hosted_port, up.grpc_port):
            assert_refused_target(create_endpoint(up, key, app, f"http://127.0.0.1:{port}/x"))
        receiver = f"http://127.0.0.1:{free_port()}/hooks"
        # Never for an endpoint that receives live events.
        live = create_endpoint(up, key, app, receiver, "ENVIRONMENT_TEST", "ENVIRONMENT_LIVE")
        assert_refused_target(live)
        accepted = create_endpoint(up, key, app, receiver)
        assert accepted.status_code == 200, accepted.text
