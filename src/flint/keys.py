"""Operating the key-encryption key (KEK): the development key `flint up` makes,
the start-up check that the KEK opens this database's secrets, and
`flint keys rotate` (a new KEK, every sealed value re-wrapped, the old KEK
retired).

Rotation is resumable: the KEK file is rewritten first with the new key in front
and the old ones kept behind it (retired: they still open, never seal), then
each sealed row is re-wrapped in its own transaction, and only when no row is
left under a retired key is the file rewritten without them. A crash anywhere
leaves a file that opens every row; running `flint keys rotate` again picks up
where it stopped instead of making yet another key."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import InstrumentedAttribute

from flint.common import envelope, platform_keys
from flint.common.db import Database
from flint.common.envelope import KekError, KekRing
from flint.common.platform_keys import PlatformKey
from flint.installs import signing
from flint.installs.models import SigningKeyRecord
from flint.webhooks import signing as webhook_signing
from flint.webhooks.models import WebhookSecretRecord

DEV_KEK_DIR = ".flint"
DEV_KEK_NAME = "kek"


@dataclass(frozen=True)
class SealedColumn:
    """A column holding sealed values, and what each row's value is bound to."""

    model: type[Any]
    column: InstrumentedAttribute[str]
    key: Sequence[InstrumentedAttribute[Any]]
    aad: Callable[[Any], str]


# Every sealed column: `flint keys rotate` re-wraps exactly these, and the dump
# test proves nothing else holds a secret.
SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn(
        PlatformKey, PlatformKey.value, (PlatformKey.name,), lambda r: platform_keys.aad(r.name)
    ),
    SealedColumn(
        SigningKeyRecord,
        SigningKeyRecord.private_sealed,
        (SigningKeyRecord.kid,),
        lambda r: signing.aad(r.kid),
    ),
    SealedColumn(
        WebhookSecretRecord,
        WebhookSecretRecord.ciphertext,
        (WebhookSecretRecord.endpoint_id, WebhookSecretRecord.version),
        lambda r: webhook_signing.aad(r.endpoint_id, r.version),
    ),
)


def _not_under(sealed: SealedColumn, kek_id: str) -> Any:
    return ~sealed.column.startswith(f"{envelope.PREFIX}.{kek_id}.", autoescape=True)


def count_not_under(db: Database, kek_id: str) -> int:
    """Sealed values whose data key is not wrapped by `kek_id`."""
    total = 0
    with db.read() as session:
        for sealed in SEALED_COLUMNS:
            total += len(
                session.execute(select(*sealed.key).where(_not_under(sealed, kek_id))).all()
            )
    return total


def rewrap_all(db: Database, ring: KekRing) -> int:
    """Re-wraps every sealed value to `ring.current`, one row per transaction (a
    crash loses at most one row's work, and writers are never held up long).
    Returns how many rows changed."""
    changed = 0
    for sealed in SEALED_COLUMNS:
        with db.read() as session:
            keys = session.execute(
                select(*sealed.key).where(_not_under(sealed, ring.current))
            ).all()
        for key in keys:
            with db.unit_of_work() as uow:
                row = uow.session.get(sealed.model, tuple(key), with_for_update=True)
                if row is None:
                    continue  # deleted meanwhile
                value = getattr(row, sealed.column.key)
                if envelope.kek_id_of(value) == ring.current:
                    continue  # a writer sealed it afresh meanwhile
                setattr(row, sealed.column.key, envelope.rewrap(value, sealed.aad(row), ring))
                uow.commit()
                changed += 1
    return changed


@dataclass(frozen=True)
class Rotation:
    kek_id: str
    resumed: bool
    rewrapped: int
    retired: list[str]
    # True when the KEK is in FLINT_KEK: the operator removes retired keys there.
    retired_in_env: bool


def rotate(db: Database) -> Rotation:
    """`flint keys rotate`: see the module docstring."""
    ring = envelope.kek_ring()
    file_name = os.environ.get(envelope.KEK_FILE_ENV, "").strip()
    resumed = bool(ring.retired)
    if not file_name:
        if not resumed:
            raise KekError(
                f"{envelope.KEK_ENV} holds one key: put a new one first "
                f"(`flint keys generate`), keep the old one after it, and run again; "
                f"or keep the KEK in a file ({envelope.KEK_FILE_ENV}) and let this command "
                "write it"
            )
    elif not resumed:
        new = envelope.parse_ring(envelope.new_kek_line(), "new key")
        ring = KekRing(new.current, {**new.keys, **ring.keys})
        envelope.write_ring_file(Path(file_name), ring)
    rewrapped = rewrap_all(db, ring)
    left = count_not_under(db, ring.current)
    if left:
        # A writer sealed with a retired key it had cached: run again.
        raise KekError(f"{left} sealed values are still under a retired key: run again")
    retired = ring.retired
    if file_name and retired:
        envelope.write_ring_file(
            Path(file_name), KekRing(ring.current, {ring.current: ring.keys[ring.current]})
        )
    return Rotation(ring.current, resumed, rewrapped, retired, retired_in_env=not file_name)


def check_kek(db: Database) -> None:
    """Fails with one clear line when the configured KEK is missing or does not
    open this database's secrets, before a server starts taking requests."""
    with db.read() as session:
        rows = session.execute(select(PlatformKey.name, PlatformKey.value)).all()
        kid = session.scalar(select(SigningKeyRecord.kid).limit(1))
    if not rows and kid is None:
        return  # nothing sealed yet (`flint migrate` has not run)
    ring = envelope.kek_ring()
    for name, value in rows:
        envelope.open_sealed(value, platform_keys.aad(name), ring)


def dev_kek_path(database_url: str) -> Path:
    """Beside the SQLite file, or under the working directory for PostgreSQL."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / DEV_KEK_DIR / DEV_KEK_NAME
    return Path.cwd() / DEV_KEK_DIR / DEV_KEK_NAME


def ensure_dev_kek(database_url: str, *, create: bool, out: TextIO | None = None) -> Path | None:
    """`flint up` and `flint dev` stay one command: with no KEK configured they
    use (creating on first run, mode 0600) a development key file beside the
    database, and say so. Other commands use that file quietly when it exists,
    so `flint admin …` works against the same development database. Sets
    FLINT_KEK_FILE for this process and the children it starts."""
    if os.environ.get(envelope.KEK_ENV) or os.environ.get(envelope.KEK_FILE_ENV):
        return None
    out = out or sys.stderr
    path = dev_kek_path(database_url)
    if not path.exists():
        if not create:
            return None
        ring = envelope.parse_ring(envelope.new_kek_line(), "new key")
        envelope.write_ring_file(path, ring)
        print(f"flint: created a development key-encryption key at {path}", file=out)
    if create:
        print(
            f"flint: WARNING: using the development key-encryption key {path}; in "
            f"production set {envelope.KEK_FILE_ENV} or {envelope.KEK_ENV} and keep the "
            "key away from the database and its backups",
            file=out,
        )
    os.environ[envelope.KEK_FILE_ENV] = str(path)
    return path
