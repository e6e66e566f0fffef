"""Reading the README and running its shell blocks, for the tests that keep it true."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
FLINT = str(Path(sys.executable).parent / "flint")


def code_blocks(text: str, language: str = "sh") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def section(title: str, level: int = 2) -> str:
    """A `##` section (or, with level=3, a `###` subsection) up to the next
    heading of the same or a higher level."""
    marks = "#" * level
    start = README.index(f"\n{marks} {title}\n") + 1
    ends = [README.find(f"\n{'#' * n} ", start) for n in range(2, level + 1)]
    end = min((e for e in ends if e != -1), default=-1)
    return README[start : end if end != -1 else None]


class Shell:
    """Runs README blocks one after another in bash, keeping exported variables.
    Only the port of the README's Flint (8080), the flint path and any extra
    `replacements` (text in the README -> text to run) are swapped."""

    def __init__(
        self,
        workdir: Path,
        http_port: int,
        env: dict[str, str],
        replacements: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.env = env
        self.state = workdir / "state.sh"
        self.replacements = {
            "127.0.0.1:8080": f"127.0.0.1:{http_port}",
            ".venv/bin/flint": FLINT,
            **(replacements or {}),
        }

    def substitute(self, text: str) -> str:
        for old, new in self.replacements.items():
            text = text.replace(old, new)
        return text

    def run(self, block: str) -> str:
        runnable = self.substitute(block)
        script = "\n".join(
            [
                "set -euo pipefail",
                f"cd {self.workdir}",
                f"[ -f {self.state} ] && source {self.state}",
                runnable,
                f"export -p > {self.state}",
            ]
        )
        # Output goes to files, not pipes: a block may leave a process running
        # in the background (`… &`), which would hold a pipe open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            result = subprocess.run(
                ["bash", "-c", script],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=60,
                check=False,
            )
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        assert result.returncode == 0, f"{block}\n{stdout}\n{stderr}"
        return stdout
