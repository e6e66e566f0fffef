"""The key-encryption key (KEK) outside the database: a dump alone holds no usable
secret, `flint keys rotate` re-wraps everything (resuming after a crash) so the
old KEK is no longer needed, and a missing or wrong KEK is one clear line."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.exc import SADeprecationWarning

from flint.common import envelope, platform_keys
from flint.common.auth import Principal, PrincipalKind
from flint.common.db import Database
from flint.common.envelope import KekError, KekRing
from flint.common.platform_keys import PlatformKey
from flint.devseed import SeedResult, dev_install, seed
from flint.events.sequencer import sequence_pending
from flint.installs import signing
from flint.installs.models import SigningKeyRecord
from flint.keys import (
    DEV_KEK_DIR,
    DEV_KEK_NAME,
    SEALED_COLUMNS,
    count_not_under,
    ensure_dev_kek,
    rewrap_all,
)
from flint.migrations import migrate
from flint.webhooks import service as webhooks
from flint.webhooks import signing as webhook_signing
from flint.webhooks.addresses import AddressRules
from flint.webhooks.fanout import fan_out
from flint.webhooks.models import WebhookSecretRecord
from tests.cli.conftest import COMMAND_TIMEOUT_SECONDS, FLINT, all_rows
from tests.conftest import flint_env
from tests.e2e.readme import section
from tests.webhooks.support import Receiver, receiver, running_worker

ISSUER = "http://127.0.0.1:8080"


def _flint(
    database_url: str, *args: str, cwd: Path | None = None, **kek: str
) -> subprocess.CompletedProcess[str]:
    """Runs `flint` with only the KEK variables given (FLINT_KEK_FILE=…, FLINT_KEK=…)."""
    env = {
        k: v
        for k, v in flint_env(database_url).items()
        if k not in (envelope.KEK_ENV, envelope.KEK_FILE_ENV)
    }
    env.update(kek)
    return subprocess.run(
        [str(FLINT), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def _forget_opened_secrets() -> None:
    """What a freshly started process knows: nothing opened yet."""
    platform_keys._cache.clear()
    signing._rings.clear()
    webhook_signing.decrypt.cache_clear()


@contextmanager
def _flush_objects_allowed() -> Iterator[None]:
    """create_endpoint and fan_out call `Session.flush(objects)`, deprecated in
    SQLAlchemy 2; the servers that run them do not turn warnings into errors."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The `objects` parameter", SADeprecationWarning)
        yield


@dataclass
class World:
    db: Database
    url: str
    kek_file: Path
    seeded: SeedResult
    endpoint_id: str
    whsec: str
    hooks: Receiver

    def install(self) -> str:
        tokens = dev_install(
            self.db,
            client_id=self.seeded.app.client_id,
            client_secret=self.seeded.client_secret,
            merchant_id=self.seeded.merchant.merchant.id,
            scope=" ".join(self.seeded.app.requested_scopes),
            environment="test",
            issuer=ISSUER,
        )
        return tokens.access_token


@pytest.fixture
def world(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    kek_file = tmp_path / "kek"
    envelope.write_ring_file(kek_file, envelope.parse_ring(envelope.new_kek_line(), "new"))
    monkeypatch.delenv(envelope.KEK_ENV, raising=False)
    monkeypatch.setenv(envelope.KEK_FILE_ENV, str(kek_file))
    _forget_opened_secrets()
    db = Database(fresh_database_url)
    try:
        migrate(db)
        with receiver() as hooks:
            with db.unit_of_work() as uow, _flush_objects_allowed():
                seeded = seed(uow, password="correct horse battery")
                uow.session.flush()
                endpoint = webhooks.create_endpoint(
                    uow,
                    Principal(PrincipalKind.PARTNER, seeded.partner.partner.id),
                    seeded.app.id,
                    webhooks.EndpointFields(
                        url=hooks.url, enabled_events=["install.created"], environments=["test"]
                    ),
                    rules=AddressRules(allow_loopback=True),
                )
                uow.commit()
            yield World(
                db,
                fresh_database_url,
                kek_file,
                seeded,
                endpoint.endpoint.id,
                endpoint.secret,
                hooks,
            )
    finally:
        _forget_opened_secrets()
        db.dispose()


def _sealed_values(world: World) -> list[tuple[Any, str, str]]:
    """(column, value, aad) of every sealed value in the database."""
    found = []
    with world.db.read() as session:
        for sealed in SEALED_COLUMNS:
            for row in session.scalars(select(sealed.model)):
                found.append((sealed, getattr(row, sealed.column.key), sealed.aad(row)))
    return found


def _key_candidates(text: str) -> set[bytes]:
    """Every run of base64 in `text` that decodes to an AES key size."""
    found = set()
    for token in re.findall(r"[A-Za-z0-9+/_=-]{20,}", text):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                raw = decode(token + "=" * (-len(token) % 4))
            except (binascii.Error, ValueError):
                continue
            if len(raw) in (16, 24, 32):
                found.add(raw)
    return found


def test_a_database_dump_alone_reveals_no_usable_secret(world: World):
    access_token = world.install()
    sealed = _sealed_values(world)
    # A positive control: the dump does hold the sealed secrets, which the KEK opens.
    assert {c.model for c, _, _ in sealed} == {c.model for c in SEALED_COLUMNS}
    (whsec_row,) = [(v, a) for c, v, a in sealed if c.model is WebhookSecretRecord]
    assert envelope.open_sealed(*whsec_row).decode() == world.whsec
    pems = [envelope.open_sealed(v, a) for c, v, a in sealed if c.model is SigningKeyRecord]
    pem_body = b"".join(pems[0].splitlines()[1:3]).decode()

    rows = all_rows(world.url)
    text = "\n".join(str(value) for table in rows.values() for row in table for value in row)
    assert "PRIVATE KEY" not in text
    assert pem_body not in text
    assert "whsec_" not in text
    assert world.whsec.removeprefix("whsec_") not in text
    assert world.seeded.client_secret not in text
    assert access_token.split(".")[2] not in text  # the token itself is not kept either

    # Whatever key-sized value the dump holds, none opens a sealed value (as its
    # KEK or as a data key) nor decrypts anything as a Fernet key.
    candidates = _key_candidates(text)
    assert candidates  # the dump is full of ids, hashes and sealed blobs: try them all
    platform = [envelope.open_sealed(v, a) for c, v, a in sealed if c.model is PlatformKey]
    assert len(platform) == len(platform_keys.KEY_NAMES)
    assert not candidates & set(platform)  # the page-token and idempotency keys are not there
    values = [str(v) for table in rows.values() for row in table for v in row]
    for key in candidates:
        for _, value, aad in sealed:
            kek_id = envelope.kek_id_of(value)
            with pytest.raises(KekError):
                envelope.open_sealed(value, aad, KekRing(kek_id, {kek_id: key}))
        if len(key) == 32:
            fernet = Fernet(base64.urlsafe_b64encode(key))
            for value in values:
                with pytest.raises((InvalidToken, ValueError, TypeError)):
                    fernet.decrypt(value.encode())


def test_rotation_rewraps_every_secret_and_the_old_kek_is_no_longer_needed(world: World):
    old_ring = envelope.kek_ring()
    before = {v: a for _, v, a in _sealed_values(world)}

    result = _flint(world.url, "keys", "rotate", "--json", FLINT_KEK_FILE=str(world.kek_file))
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["kek_id"] != old_ring.current
    assert done["retired"] == [old_ring.current]
    assert done["rewrapped"] == len(before)
    assert stat.S_IMODE(os.stat(world.kek_file).st_mode) == 0o600
    new_ring = envelope.parse_ring(world.kek_file.read_text(), "file")
    assert list(new_ring.keys) == [done["kek_id"]]  # the old KEK is gone from the file
    assert count_not_under(world.db, done["kek_id"]) == 0
    for _, value, aad in _sealed_values(world):
        with pytest.raises(KekError):
            envelope.open_sealed(value, aad, old_ring)

    # A process that knows only the new KEK signs tokens and webhooks.
    _forget_opened_secrets()
    assert envelope.kek_ring() == new_ring
    access_token = world.install()
    with world.db.read() as session:
        claims = signing.decode_access_token(
            session, access_token, now=world.db.clock(), issuer=ISSUER
        )
    assert claims["iss"] == ISSUER
    with _flush_objects_allowed():
        sequence_pending(world.db, [fan_out])
    with running_worker(world.db):
        (request,) = world.hooks.wait_for(1)
    headers = request.headers
    expected = webhook_signing.signature(
        world.whsec, headers["webhook-id"], int(headers["webhook-timestamp"]), request.body
    )
    assert headers["webhook-signature"] == expected

    # Running it again is a fresh rotation, not a failure.
    again = _flint(world.url, "keys", "rotate", "--json", FLINT_KEK_FILE=str(world.kek_file))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["retired"] == [done["kek_id"]]


def test_an_interrupted_rotation_resumes_under_the_same_new_kek(world: World):
    old = envelope.kek_ring()
    new_line = envelope.new_kek_line()
    crashed = envelope.parse_ring(f"{new_line}\n{envelope.format_ring(old)}", "file")
    # The crash: the file was rewritten and only the platform keys re-wrapped.
    envelope.write_ring_file(world.kek_file, crashed)
    with world.db.unit_of_work() as uow:
        for row in uow.session.scalars(select(PlatformKey)):
            row.value = envelope.rewrap(row.value, platform_keys.aad(row.name), crashed)
        uow.commit()
    left = count_not_under(world.db, crashed.current)
    assert left > 0

    result = _flint(world.url, "keys", "rotate", "--json", FLINT_KEK_FILE=str(world.kek_file))
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout)
    assert done == {
        "kek_id": crashed.current,
        "resumed": True,
        "rewrapped": left,
        "retired": [old.current],
    }
    assert list(envelope.parse_ring(world.kek_file.read_text(), "file").keys) == [crashed.current]
    assert count_not_under(world.db, crashed.current) == 0


def test_rewrap_leaves_values_already_under_the_current_kek_alone(world: World):
    ring = envelope.kek_ring()
    assert rewrap_all(world.db, ring) == 0
    assert count_not_under(world.db, ring.current) == 0


def test_serving_without_a_kek_is_one_clear_line(world: World):
    result = _flint(world.url, "serve", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "no key-encryption key: set FLINT_KEK_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_kek_that_does_not_hold_the_databases_key_is_refused_at_start(world: World):
    result = _flint(world.url, "worker", FLINT_KEK=envelope.new_kek_line())
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"key-encryption key {envelope.kek_ring().current}" in result.stderr
    assert "does not hold" in result.stderr


def test_a_kek_with_the_right_id_but_wrong_material_is_refused_at_start(world: World):
    kek_id = envelope.kek_ring().current
    other = envelope.new_kek_line().split(":", 1)[1]
    result = _flint(world.url, "migrate", FLINT_KEK=f"{kek_id}:{other}")
    assert result.returncode == 1
    assert "does not open" in result.stderr
    assert "Traceback" not in result.stderr


def test_rotation_with_a_single_key_in_the_variable_says_what_to_do(world: World):
    line = world.kek_file.read_text().strip()
    result = _flint(world.url, "keys", "rotate", FLINT_KEK=line)
    assert result.returncode == 1
    assert "put a new one first" in result.stderr


def test_rotation_with_keys_in_the_variable_rewraps_and_names_the_key_to_remove(world: World):
    old_line = world.kek_file.read_text().strip()
    new_line = envelope.new_kek_line()
    result = _flint(world.url, "keys", "rotate", FLINT_KEK=f"{new_line},{old_line}")
    assert result.returncode == 0, result.stderr
    assert f"Remove the retired keys ({old_line.split(':')[0]}) from FLINT_KEK" in result.stdout
    assert count_not_under(world.db, new_line.split(":")[0]) == 0


def test_flint_up_makes_a_private_development_kek_beside_the_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # Empty counts as unset; setenv (not delenv) so the variable that
    # ensure_dev_kek sets is put back after the test.
    monkeypatch.setenv(envelope.KEK_ENV, "")
    monkeypatch.setenv(envelope.KEK_FILE_ENV, "")
    url = f"sqlite:///{tmp_path / 'flint.db'}"
    # Not for other commands: they only use one that exists.
    assert ensure_dev_kek(url, create=False) is None
    path = ensure_dev_kek(url, create=True)
    assert path == tmp_path / ".flint" / "kek"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.environ[envelope.KEK_FILE_ENV] == str(path)
    err = capsys.readouterr().err
    assert "created a development key-encryption key" in err
    assert "WARNING: using the development key-encryption key" in err
    first = path.read_text()
    monkeypatch.setenv(envelope.KEK_FILE_ENV, "")
    assert ensure_dev_kek(url, create=False) == path  # reused, never replaced
    assert path.read_text() == first
    assert "WARNING" not in capsys.readouterr().err


def test_flint_up_without_a_kek_creates_the_development_key_and_warns(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'flint.db'}"
    # --workers -1 stops the stack before it starts anything: what ran is main's setup.
    result = _flint(url, "up", "--workers", "-1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "WARNING: using the development key-encryption key" in result.stderr
    path = tmp_path / ".flint" / "kek"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert envelope.parse_ring(path.read_text(), "dev").current.startswith("kek_")


def test_a_configured_kek_wins_over_the_development_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(envelope.KEK_FILE_ENV, "")
    monkeypatch.setenv(envelope.KEK_ENV, envelope.new_kek_line())
    assert ensure_dev_kek(f"sqlite:///{tmp_path / 'flint.db'}", create=True) is None
    assert not (tmp_path / ".flint").exists()


def test_the_readme_names_the_kek_variables_and_commands():
    text = section("Key management", level=3)
    for name in (
        envelope.KEK_FILE_ENV,
        envelope.KEK_ENV,
        "flint keys rotate",
        "flint keys generate",
    ):
        assert f"`{name}" in text, name
    assert f"{DEV_KEK_DIR}/{DEV_KEK_NAME}" in text
