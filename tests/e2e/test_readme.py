"""The README's opening commands and its quickstart, run as written (only the
ports are swapped for free ones), so the README cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import flint_env, free_port

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
FLINT = str(Path(sys.executable).parent / "flint")


def code_blocks(text: str, language: str = "sh") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_readme_opens_with_the_two_commands():
    first = code_blocks(README)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make run", "make test"]


@pytest.fixture
def flint_up(database_url: str, db, tmp_path: Path) -> Iterator[int]:
    http_port = free_port()
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                FLINT,
                "up",
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(free_port()),
                "--hosted-port",
                str(free_port()),
                "--admin-port",
                str(free_port()),
            ],
            env=flint_env(database_url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "Flint is up." not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield http_port
    finally:
        process.terminate()
        process.wait(30)


def test_quickstart_works_as_written(flint_up: int, database_url: str, tmp_path: Path):
    blocks = [b for b in code_blocks(section("Quickstart")) if b.strip() != "make run"]
    assert len(blocks) >= 5
    script = ["set -euo pipefail", f"cd {REPO}"]
    for index, block in enumerate(blocks):
        runnable = block.replace("127.0.0.1:8080", f"127.0.0.1:{flint_up}")
        script += [f"echo '@@@ block {index}'", runnable.replace(".venv/bin/flint", FLINT)]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=flint_env(database_url) | {"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = re.split(r"@@@ block \d+\n", result.stdout)[1:]
    by_command = dict(zip(blocks, outputs, strict=True))

    def output_of(fragment: str) -> str:
        return next(out for block, out in by_command.items() if fragment in block)

    assert "Seeded a test merchant, a partner and an example app" in output_of("dev seed")
    created = json.loads(output_of('"name": "Loyalty Stars"'))
    assert created["client_secret"].startswith("fcs_")
    assert created["redirect_uris"][1] == "http://localhost:3000/callback"
    listed = json.loads(output_of("page_size=10"))
    assert listed["apps"][0]["name"] == "Loyalty Stars"
    patched = json.loads(output_of("update_mask=description"))
    assert patched["description"] == "Now with tiers"
    error = output_of('"name": "Bad"')
    assert error.startswith("HTTP/1.1 400")
    body = json.loads(error.split("\n\n", 1)[1])
    assert body["details"][0]["reason"] == "INSECURE_URL"
    assert [v["reason"] for v in body["details"][1]["field_violations"]] == [
        "INSECURE_URL",
        "UNKNOWN_SCOPE",
    ]
