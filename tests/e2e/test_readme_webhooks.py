"""The README's webhooks walkthrough, run as written against `flint up`: the
example receiver verifying signed deliveries, the event stream, a replay after
an outage, and `flint listen`. Each shell step's output is compared with the
block the README shows after it (`…` there stands for ids and times)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV
from tests.conftest import flint_env, free_port
from tests.e2e.conftest import running_flint_up
from tests.e2e.readme import REPO, Shell, section
from tests.e2e.test_readme_commerce import blocks_with_outputs

ELIDED = "…"
WAIT_SECONDS = 30
RECEIVER = REPO / "examples" / "webhook_receiver.py"


def shows(expected: str, output: str) -> bool:
    """Whether `output` is `expected`, line for line, where each `…` stands for
    some text on its line."""
    lines = [
        ".+?".join(re.escape(part) for part in line.split(ELIDED))
        for line in expected.strip().splitlines()
    ]
    return re.fullmatch("\n".join(lines), output.strip()) is not None


def is_look(block: str) -> bool:
    """A step that only waits a moment and reads what has arrived: rerun until
    it shows what the README says (the README's short sleep is for a person)."""
    return block.lstrip().startswith("sleep ")


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def pids(workdir: Path) -> dict[str, int]:
    """The background processes the README steps started, by pid file."""
    return {path.name: int(path.read_text()) for path in workdir.glob("*.pid")}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The steps' directory; whatever they left running is stopped afterwards."""
    yield tmp_path
    for pid in pids(tmp_path).values():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"webhook_receiver.py" in cmdline or b"listen" in cmdline:
            os.kill(pid, signal.SIGTERM)


@pytest.fixture
def flint_up(database_url: str, db: object, tmp_path: Path) -> Iterator[int]:
    """As the walkthrough starts it: with the development switch, since its
    receiver is on http://127.0.0.1."""
    switch = {ALLOW_LOOPBACK_ENV: "1"}
    with running_flint_up(database_url, tmp_path / "up.log", switch) as http_port:
        yield http_port


def test_webhooks_walkthrough_works_as_written(flint_up: int, database_url: str, workdir: Path):
    pairs = blocks_with_outputs(section("Webhooks walkthrough", level=3))
    assert len(pairs) == 16
    receiver_port, listen_port = free_port(), free_port()
    env = flint_env(database_url) | {
        "PATH": os.environ["PATH"],
        "FLINT_PUBLIC_URL": f"http://127.0.0.1:{flint_up}",
        # `flint listen` keeps its secret and position under ~/.flint/listen/.
        "HOME": str(workdir / "home"),
    }
    shell = Shell(
        workdir,
        flint_up,
        env,
        replacements={
            "127.0.0.1:3000": f"127.0.0.1:{receiver_port}",
            "--port 3000": f"--port {receiver_port}",
            "127.0.0.1:3001": f"127.0.0.1:{listen_port}",
            "--port 3001": f"--port {listen_port}",
            ".venv/bin/python": sys.executable,
            "examples/webhook_receiver.py": str(RECEIVER),
        },
    )
    for block, expected in pairs:
        before = pids(workdir)
        output = shell.run(block)
        if expected is not None:
            wanted = shell.substitute(expected)
            deadline = time.monotonic() + WAIT_SECONDS
            while is_look(block) and not shows(wanted, output) and time.monotonic() < deadline:
                output = shell.run(block)
            assert shows(wanted, output), f"{block}\n--- shown:\n{output}\n--- README:\n{wanted}"
        # A person starts the next step seconds later; the test waits for what
        # that gives: stopped processes gone, started ones ready.
        after = pids(workdir)
        for name, pid in before.items():
            if after.get(name) != pid:
                eventually(lambda pid=pid: not alive(pid), f"{name} ({pid}) to stop")
        if "webhook_receiver.py" in block and "&" in block:
            for port in (receiver_port, listen_port):
                if f"--port {port}" in shell.substitute(block):
                    eventually(lambda port=port: listening(port), f"a receiver on {port}")
        if "flint listen --forward-to" in block:
            listen_log = workdir / "listen.log"
            eventually(lambda log=listen_log: "Ready!" in log.read_text(), "flint listen ready")

    # The right events were verified, each once: the endpoint's receiver got
    # the first order's, the 2nd and 3rd by the replay (in either order), and
    # the fourth's; the receiver behind `flint listen` the fourth's.
    token = json.loads((workdir / "app.json").read_text())["access_token"]
    response = httpx.get(
        f"http://127.0.0.1:{flint_up}/v1/events",
        params={"types": "order.created"},
        headers={"authorization": f"Bearer {token}"},
    )
    events = response.json()["events"]
    assert len(events) == 4
    lines = [
        f"verified order.created {e['id']} (object {e['object_id']}, version 1)" for e in events
    ]
    received = (workdir / "receiver.log").read_text().splitlines()
    assert received[0] == lines[0]
    assert sorted(received[1:3]) == sorted(lines[1:3])
    assert received[3:] == lines[3:]
    assert (workdir / "listen-receiver.log").read_text().splitlines() == lines[3:]
    forwards = [line for line in (workdir / "listen.log").read_text().splitlines() if "-->" in line]
    assert len(forwards) == 1
    assert f"[{events[3]['id']}]" in forwards[0]
    missed = json.loads((workdir / "missed.json").read_text())["events"]
    assert [e["id"] for e in missed] == [e["id"] for e in events[1:3]]
