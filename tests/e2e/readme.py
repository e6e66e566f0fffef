"""Reading the README and running its shell blocks, for the tests that keep it true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
FLINT = str(Path(sys.executable).parent / "flint")


def code_blocks(text: str, language: str = "sh") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


class Shell:
    """Runs README blocks one after another in bash, keeping exported variables.
    Only the port of the README's Flint (8080) and the flint path are swapped."""

    def __init__(self, workdir: Path, http_port: int, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.env = env
        self.state = workdir / "state.sh"

    def run(self, block: str) -> str:
        runnable = block.replace("127.0.0.1:8080", f"127.0.0.1:{self.http_port}")
        runnable = runnable.replace(".venv/bin/flint", FLINT)
        script = "\n".join(
            [
                "set -euo pipefail",
                f"cd {self.workdir}",
                f"[ -f {self.state} ] && source {self.state}",
                runnable,
                f"export -p > {self.state}",
            ]
        )
        result = subprocess.run(
            ["bash", "-c", script],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"{block}\n{result.stdout}\n{result.stderr}"
        return result.stdout
