"""`flint dev` when something cannot start: it says which process and where its
log is, exits 1, and leaves nothing running."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from flint.supervisor import wait_for_http
from tests.conftest import flint_env, free_port
from tests.e2e.readme import FLINT


def test_a_plugin_that_cannot_start_stops_flint_too(database_url: str, db: object, tmp_path: Path):
    http_port, admin_port = free_port(), free_port()
    with socket.socket() as taken:  # the plugin's port is in use
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        plugin_port = taken.getsockname()[1]
        argv = [FLINT, "dev", "--http-port", str(http_port), "--admin-port", str(admin_port)]
        argv += ["--plugin-port", str(plugin_port), "--grpc-port", str(free_port())]
        argv += ["--hosted-port", str(free_port())]
        result = subprocess.run(
            argv,
            cwd=tmp_path,
            env=flint_env(database_url),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "flint dev: " in result.stderr
    assert "plugin.log" in result.stderr
    assert not (tmp_path / ".flint-dev" / "env").exists()
    assert not wait_for_http(f"http://127.0.0.1:{admin_port}/ready", 1)
