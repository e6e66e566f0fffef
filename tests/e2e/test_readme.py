"""The README's opening commands and its quickstart, run as written (only the
ports are swapped for free ones), so the README cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.conftest import flint_env
from tests.e2e.readme import FLINT, README, REPO, code_blocks, section


def test_readme_opens_with_the_two_commands():
    first = code_blocks(README)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make run", "make test"]


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


def test_readme_event_catalog_matches_the_code():
    from flint.events.catalog import CATALOG

    table = section("Events").split("### Event catalog", 1)[1]
    rows = re.findall(r"^\| `([a-z_.]+)` \| `([a-z_.]+)` \| (.+?) \|$", table, flags=re.MULTILINE)
    assert rows == [(e.name, e.object_type, e.description) for e in CATALOG]


def test_readme_scope_catalog_matches_the_code():
    from flint.common.scopes import CATALOG

    listed = set(re.findall(r"`([a-z_]+:(?:read|write))`", section("API")))
    assert {scope.name for scope in CATALOG} <= listed
