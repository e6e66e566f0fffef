"""The built wheel is a complete, working `flint`: it is built from this checkout,
installed into a fresh virtualenv that cannot see the checkout, and run from a
directory outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 180


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    site_packages: Path
    workdir: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def flint(self) -> Path:
        return self.venv / "bin" / "flint"


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would point Python at the checkout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FLINT_DATABASE_URL")
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    wheel_dir = root / "wheels"
    # The build backend (hatchling) is a dev dependency, so no index is needed.
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(wheel_dir),
            str(REPO_ROOT),
        ],
        env=clean_env(),
    )
    wheels = list(wheel_dir.glob("flint-*.whl"))
    assert len(wheels) == 1, wheels

    venv = root / "venv"
    base_python = getattr(sys, "_base_executable", None) or str(
        Path(sys.base_prefix) / "bin" / "python3"
    )
    run([base_python, "-m", "venv", "--without-pip", str(venv)], env=clean_env())
    python = venv / "bin" / "python"
    # This project's pip installs into the new interpreter's environment.
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            str(wheels[0]),
        ],
        env=clean_env(),
    )
    site_packages = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            env=clean_env(),
        ).stdout.strip()
    )
    assert site_packages.is_dir()
    # Dependencies come from this virtualenv's site-packages, added as a plain path:
    # .pth files inside it (the editable install of flint) are not processed.
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    workdir = root / "elsewhere"
    workdir.mkdir()
    return Installed(wheels[0], venv, site_packages, workdir)


def test_wheel_holds_code_generated_code_and_runtime_files(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "flint = flint.cli:main" in wheel.read(entry_points).decode()
    for expected in (
        "flint/cli.py",
        "flint/__main__.py",
        "flint/supervisor.py",
        "flint/envoy/__init__.py",
        "flint/envoy/envoy.yaml.j2",
        "flint/descriptor_set.binpb",
        "flint/apps/v1/apps_service_pb2.py",
        "flint/apps/v1/apps_service_pb2_grpc.py",
        "flint/accounts/v1/accounts_service_pb2.py",
        "flint/migrations/env.py",
        "flint/migrations/script.py.mako",
        "flint/py.typed",
    ):
        assert expected in names, expected
    assert any(n.startswith("flint/migrations/versions/") and n.endswith(".py") for n in names)
    assert not [n for n in names if n.startswith(("src/", "gen/", "tests/", "proto/"))]


def test_installed_commands_run_outside_the_checkout(installed, fresh_database_url):
    env = clean_env(FLINT_DATABASE_URL=fresh_database_url)
    cwd = installed.workdir

    helped = run([str(installed.flint), "--help"], env=env, cwd=cwd)
    for command in ("up", "serve", "envoy", "migrate", "admin", "dev"):
        assert command in helped.stdout

    migrated = run([str(installed.flint), "migrate"], env=env, cwd=cwd)
    assert "up to date" in migrated.stdout

    initialised = run([str(installed.flint), "admin", "init", "--json"], env=env, cwd=cwd)
    admin_key = json.loads(initialised.stdout)["admin_key"]
    assert admin_key.startswith("fak_")
    assert len(admin_key) == len("fak_") + 40

    scratch = cwd / "tmp"
    scratch.mkdir()
    validated = run(
        [str(installed.flint), "envoy", "--mode", "validate"],
        env={**env, "TMPDIR": str(scratch)},
        cwd=cwd,
    )
    assert "OK" in validated.stdout + validated.stderr

    # Without FLINT_DATABASE_URL, the database is ./flint.db in the working directory.
    run([str(installed.flint), "migrate"], env=clean_env(), cwd=cwd)
    assert (cwd / "flint.db").is_file()


def test_installed_package_is_self_contained(installed):
    probe = """
import json, sys
import flint, flint.cli, flint.resources as r
import flint.apps.v1.apps_service_pb2 as apps_pb2
print(json.dumps({
    "descriptor": str(r.descriptor_set_path()),
    "template": str(r.envoy_template_path()),
    "cli": flint.cli.__file__,
    "generated": apps_pb2.__file__,
    "service": apps_pb2.DESCRIPTOR.services_by_name["AppsService"].full_name,
    "flint_path": list(flint.__path__),
    "sys_path": sys.path,
}))
"""
    result = run([str(installed.python), "-c", probe], env=clean_env(), cwd=installed.workdir)
    found = json.loads(result.stdout)
    package = installed.site_packages / "flint"
    for key in ("descriptor", "template", "cli", "generated"):
        assert Path(found[key]).is_relative_to(package), (key, found[key])
    assert Path(found["template"]) == package / "envoy" / "envoy.yaml.j2"
    assert Path(found["descriptor"]) == package / "descriptor_set.binpb"
    assert found["service"] == "flint.apps.v1.AppsService"
    # The editable install of the checkout did not leak in.
    for checkout in (REPO_ROOT / "src", REPO_ROOT / "gen"):
        assert str(checkout) not in found["sys_path"]
        assert str(checkout / "flint") not in found["flint_path"]
    assert found["flint_path"][0] == str(package)


def test_installed_template_matches_the_repository(installed):
    packaged = installed.site_packages / "flint" / "envoy" / "envoy.yaml.j2"
    assert packaged.read_bytes() == (REPO_ROOT / "envoy" / "envoy.yaml.j2").read_bytes()
    packaged_descriptors = installed.site_packages / "flint" / "descriptor_set.binpb"
    assert (
        packaged_descriptors.read_bytes()
        == (REPO_ROOT / "gen" / "flint" / "descriptor_set.binpb").read_bytes()
    )


def test_source_checkout_uses_the_repository_envoy_template():
    # In the development (editable) install, editing envoy/envoy.yaml.j2 must take
    # effect without reinstalling: the checkout's file is the one in use.
    result = run(
        [
            sys.executable,
            "-c",
            "import flint.resources as r; print(r.envoy_template_path())",
        ],
        env=clean_env(),
        cwd=REPO_ROOT,
    )
    assert Path(result.stdout.strip()) == REPO_ROOT / "envoy" / "envoy.yaml.j2", result.stdout
