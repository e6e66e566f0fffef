"""`flint dev`: one command to try a plugin end to end. It starts Flint (`flint
up`, as a child), seeds a test merchant and a partner, registers the sample
plugin (examples/thankyou_plugin) as the partner's app, starts the plugin with
that app's credentials, and prints what to open. Ctrl-C stops everything."""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from flint.apps.service import AppFields
from flint.common.config import Settings
from flint.common.db import Database
from flint.devseed import SeedResult, seed
from flint.supervisor import stop_process, wait_for_envoy, wait_for_http
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV

# The sample plugin lives in the repository, beside src/; `flint dev` runs from a clone.
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
PLUGIN = "thankyou_plugin"
PLUGIN_SCOPES = ("orders:read", "orders:write", "checkout:write", "refunds:write", "events:read")
STARTUP_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class DevOptions:
    http_port: int
    grpc_port: int
    hosted_port: int
    admin_port: int
    plugin_port: int
    state_dir: Path
    password: str

    @property
    def flint_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def plugin_url(self) -> str:
        return f"http://127.0.0.1:{self.plugin_port}"


class StartError(Exception):
    """A child did not come up; the message says which and where its log is."""


class _Children:
    """The child processes, stopped in reverse start order (the plugin before
    the Flint it calls)."""

    def __init__(self) -> None:
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, argv: list[str], log: Path, env: dict[str, str], cwd: Path | None = None
    ) -> None:
        with log.open("ab") as out:
            self.running[name] = subprocess.Popen(  # noqa: S603 - our own interpreter
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )

    def dead(self) -> str | None:
        return next((n for n, p in self.running.items() if p.poll() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.running.values()):
            stop_process(child, STOP_TIMEOUT_SECONDS)


@contextmanager
def _stop_on_signals() -> Iterator[list[bool]]:
    stopping = [False]

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping[0] = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_dev(options: DevOptions, out: TextIO = sys.stdout) -> int:
    if not (EXAMPLES_DIR / PLUGIN).is_dir():
        print(f"flint dev: the sample plugin is not at {EXAMPLES_DIR / PLUGIN}", file=sys.stderr)
        return 2
    state = options.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    env_file = state / "env"
    env_file.unlink(missing_ok=True)
    # Each run registers a new app, so the plugin starts with an empty store.
    (state / "thankyou.db").unlink(missing_ok=True)
    children = _Children()
    with _stop_on_signals() as stopping:

        def keep_waiting() -> bool:
            return not stopping[0] and children.dead() is None

        try:
            print(f"Starting Flint on {options.flint_url} (log: {state / 'flint.log'}) …", file=out)
            out.flush()
            _start_flint(children, options, state / "flint.log")
            if not wait_for_envoy(options.admin_port, STARTUP_TIMEOUT_SECONDS, keep_waiting):
                raise StartError(f"Flint did not start; see {state / 'flint.log'}")
            seeded = seed_with_plugin(
                Settings.from_env().database_url, options.plugin_url, options.password
            )
            support_token = secrets.token_urlsafe(24)
            _start_plugin(children, options, seeded, support_token, state)
            plugin_health = f"{options.plugin_url}/healthz"
            if not wait_for_http(plugin_health, STARTUP_TIMEOUT_SECONDS, keep_waiting):
                raise StartError(f"the sample plugin did not start; see {state / 'plugin.log'}")
            _write_env_file(env_file, options, seeded, support_token, state)
            print(_ready_message(options, seeded, env_file), file=out)
            out.flush()
            while keep_waiting():
                time.sleep(0.2)
            dead = children.dead()
            if dead is not None and not stopping[0]:
                print(f"flint dev: {dead} exited; see its log in {state}", file=sys.stderr)
                return 1
            return 0
        except StartError as error:
            if stopping[0]:
                return 0
            print(f"flint dev: {error}", file=sys.stderr)
            return 1
        finally:
            children.stop()
            env_file.unlink(missing_ok=True)


def _start_flint(children: _Children, options: DevOptions, log: Path) -> None:
    argv = [sys.executable, "-m", "flint", "up"]
    argv += ["--http-port", str(options.http_port), "--grpc-port", str(options.grpc_port)]
    argv += ["--hosted-port", str(options.hosted_port), "--admin-port", str(options.admin_port)]
    env = {
        **os.environ,
        "FLINT_PUBLIC_URL": options.flint_url,
        # The development switch: the sample plugin receives its test events on
        # http://127.0.0.1 (Flint's own ports stay refused).
        ALLOW_LOOPBACK_ENV: "1",
    }
    children.start("flint", argv, log, env=env)


def plugin_app(plugin_url: str) -> AppFields:
    """The sample plugin as an app: its callback as the redirect URI, the scopes it asks for."""
    return AppFields(
        name="Thank You Notes",
        description="Thanks your buyers when they pay. The sample plugin of `flint dev`.",
        redirect_uris=[f"{plugin_url}/oauth/callback"],
        requested_scopes=PLUGIN_SCOPES,
    )


def seed_with_plugin(database_url: str, plugin_url: str, password: str) -> SeedResult:
    """A merchant and a partner, and the sample plugin as the partner's app
    (fresh each run: secrets are shown once)."""
    db = Database(database_url)
    try:
        with db.unit_of_work() as uow:
            result = seed(uow, password=password, app=plugin_app(plugin_url))
            uow.commit()
    finally:
        db.dispose()
    return result


def plugin_command(
    *, flint_url: str, plugin_port: int, seeded: SeedResult, support_token: str, database: Path
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run the sample plugin as `seeded`'s app."""
    python_path = os.pathsep.join(p for p in (str(EXAMPLES_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": python_path,
        "FLINT_BASE_URL": flint_url,
        "FLINT_CLIENT_ID": seeded.app.client_id,
        "FLINT_CLIENT_SECRET": seeded.client_secret,
        "FLINT_APP_ID": seeded.app.id,
        "FLINT_PARTNER_KEY": seeded.partner.key.secret,
        "PLUGIN_URL": f"http://127.0.0.1:{plugin_port}",
        "PLUGIN_DATABASE": str(database),
        "PLUGIN_SUPPORT_TOKEN": support_token,
    }
    return [sys.executable, "-m", PLUGIN, "--port", str(plugin_port)], env


def _start_plugin(
    children: _Children, options: DevOptions, seeded: SeedResult, support_token: str, state: Path
) -> None:
    argv, env = plugin_command(
        flint_url=options.flint_url,
        plugin_port=options.plugin_port,
        seeded=seeded,
        support_token=support_token,
        database=state / "thankyou.db",
    )
    children.start("plugin", argv, state / "plugin.log", env=env, cwd=state)


def _write_env_file(
    path: Path, options: DevOptions, seeded: SeedResult, support_token: str, state: Path
) -> None:
    """What a second terminal needs (`source .flint-dev/env`), readable only by
    its owner; written last, so its presence means everything is up."""
    data = seeded.as_json()
    values = {
        "FLINT_BASE_URL": options.flint_url,
        "FLINT_TEST_KEY": data["test_secret_key"],
        "FLINT_MERCHANT_ID": data["merchant_id"],
        "FLINT_MERCHANT_EMAIL": data["merchant_email"],
        "FLINT_MERCHANT_PASSWORD": data["merchant_password"],
        "FLINT_PARTNER_KEY": data["partner_key"],
        "FLINT_APP_ID": data["app_id"],
        "PLUGIN_URL": options.plugin_url,
        "PLUGIN_SUPPORT_TOKEN": support_token,
        "PLUGIN_DATABASE": str(state / "thankyou.db"),
    }
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)  # also when a stale partial file had other permissions
        out.write("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
    partial.replace(path)


def _ready_message(options: DevOptions, seeded: SeedResult, env_file: Path) -> str:
    data = seeded.as_json()
    relative = os.path.relpath(env_file)
    return "\n".join(
        [
            "",
            f"Flint is up on {options.flint_url}; the sample plugin on {options.plugin_url}.",
            f"  merchant   {data['merchant_id']}  (test key {data['test_secret_key']})",
            f"  partner    {data['partner_id']}",
            f"  app        {data['app_id']}  Thank You Notes",
            "",
            f"Open {options.plugin_url} and click Install. Sign in as",
            f"  email     {data['merchant_email']}",
            f"  password  {data['merchant_password']}",
            "and Approve. Then follow README.md, Build your first plugin.",
            f"In another terminal: source {relative}   (logs are beside it)",
            "Press Ctrl-C to stop.",
            "",
        ]
    )
