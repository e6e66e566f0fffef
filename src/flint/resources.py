"""Files Flint needs at run time. An installed wheel carries them inside the
`flint` package; a source checkout has them at the repository top level."""

from __future__ import annotations

from pathlib import Path

import flint

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _find(package_relative: str, repo_relative: str) -> Path:
    # A checkout's own file wins (an editable install may hold a stale copy).
    candidate = _REPO_ROOT / repo_relative
    if candidate.is_file():
        return candidate
    # `flint` is a namespace package: the one merged directory in a wheel.
    for base in flint.__path__:
        candidate = Path(base) / package_relative
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{package_relative} is missing from the flint package")


def descriptor_set_path() -> Path:
    """The FileDescriptorSet (with imports) that Envoy's transcoder reads."""
    return _find("descriptor_set.binpb", "gen/flint/descriptor_set.binpb")


def envoy_template_path() -> Path:
    return _find("envoy/envoy.yaml.j2", "envoy/envoy.yaml.j2")
