"""Envelope encryption of the secrets Flint must read back, under a key-encryption
key (KEK) that lives outside the database.

A database dump or a read replica must not be enough to mint access tokens or
sign webhooks, so every reversible secret (token-signing private keys, webhook
signing secrets, the platform keys behind page tokens and stored idempotent
responses) is sealed: encrypted with its own random 256-bit data key (AES-GCM),
and that data key encrypted (wrapped) with the KEK. The associated data names
the row and purpose, so a sealed value copied into another row does not open.

A sealed value is one string: `fe1.<kek id>.<wrapped data key>.<ciphertext>`
(both parts base64url of nonce + AES-GCM output). Rotating the KEK re-wraps the
data key only; the ciphertext stays as it is.

The KEK comes from `FLINT_KEK_FILE` (a file) or `FLINT_KEK` (the keys
themselves), never both: one key per line (or comma-separated in the variable)
as `<id>:<base64 of 32 bytes>`, the current key first, retired ones after it
(still opened, never used to seal). A file is re-read when it changes, so
running processes follow `flint keys rotate` without a restart."""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEK_ENV = "FLINT_KEK"
KEK_FILE_ENV = "FLINT_KEK_FILE"
PREFIX = "fe1"
KEY_BYTES = 32
NONCE_BYTES = 12
_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


class KekError(Exception):
    """The key-encryption key is missing, malformed or does not open a value.
    The message is one line an operator can act on."""


@dataclass(frozen=True)
class KekRing:
    """The KEKs this process knows: `current` seals, every one of them opens."""

    current: str
    keys: dict[str, bytes] = field(repr=False)

    @property
    def retired(self) -> list[str]:
        return [kek_id for kek_id in self.keys if kek_id != self.current]


def new_kek_line() -> str:
    """A fresh KEK in the `<id>:<base64>` form the file and variable hold."""
    key = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
    return f"kek_{secrets.token_hex(8)}:{key}"


def parse_ring(text: str, source: str) -> KekRing:
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for raw in re.split(r"[\n,]", text):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        kek_id, sep, encoded = entry.partition(":")
        kek_id = kek_id.strip()
        if not sep or not _ID.match(kek_id):
            raise KekError(f"{source}: each key must be `<id>:<base64 of 32 bytes>`")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise KekError(f"{source}: key {kek_id} is not base64") from None
        if len(key) != KEY_BYTES:
            raise KekError(f"{source}: key {kek_id} must be {KEY_BYTES} bytes, not {len(key)}")
        if kek_id in keys:
            raise KekError(f"{source}: key id {kek_id} appears twice")
        keys[kek_id] = key
        order.append(kek_id)
    if not order:
        raise KekError(f"{source} holds no key")
    return KekRing(order[0], keys)


def format_ring(ring: KekRing) -> str:
    ordered = [ring.current, *ring.retired]
    return "".join(f"{k}:{base64.b64encode(ring.keys[k]).decode()}\n" for k in ordered)


def write_ring_file(path: Path, ring: KekRing) -> None:
    """Replaces the file atomically (readers see the old or the new ring, never
    half of one), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, format_ring(ring).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


_lock = threading.Lock()
# (what the ring was read from, the ring): one entry, replaced when that changes.
_cached: dict[str, tuple[object, KekRing]] = {}


def kek_ring() -> KekRing:
    """The KEK ring named by the environment, re-read when the file changes."""
    inline = os.environ.get(KEK_ENV, "").strip()
    file_name = os.environ.get(KEK_FILE_ENV, "").strip()
    if inline and file_name:
        raise KekError(f"set {KEK_FILE_ENV} or {KEK_ENV}, not both")
    if not inline and not file_name:
        raise KekError(
            f"no key-encryption key: set {KEK_FILE_ENV} (a file) or {KEK_ENV} "
            "(see the README, Key management)"
        )
    if inline:
        stamp: object = ("env", inline)
    else:
        try:
            info = os.stat(file_name)
        except OSError as error:
            raise KekError(f"{KEK_FILE_ENV}={file_name}: {error.strerror}") from None
        stamp = ("file", file_name, info.st_mtime_ns, info.st_size, info.st_ino)
    with _lock:
        hit = _cached.get("ring")
        if hit is not None and hit[0] == stamp:
            return hit[1]
    if inline:
        ring = parse_ring(inline, KEK_ENV)
    else:
        try:
            text = Path(file_name).read_text()
        except OSError as error:
            raise KekError(f"{KEK_FILE_ENV}={file_name}: {error.strerror}") from None
        ring = parse_ring(text, f"{KEK_FILE_ENV}={file_name}")
    with _lock:
        _cached["ring"] = (stamp, ring)
    return ring


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _wrap_aad(kek_id: str, aad: str) -> bytes:
    return f"flint.dek\0{kek_id}\0{aad}".encode()


def _wrap(ring: KekRing, dek: bytes, aad: str) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    wrapped = AESGCM(ring.keys[ring.current]).encrypt(nonce, dek, _wrap_aad(ring.current, aad))
    return f"{PREFIX}.{ring.current}.{_b64(nonce + wrapped)}"


def _split(sealed: str) -> tuple[str, bytes, bytes]:
    parts = sealed.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise KekError("not a sealed value")
    try:
        return parts[1], _unb64(parts[2]), _unb64(parts[3])
    except (binascii.Error, ValueError):
        raise KekError("not a sealed value") from None


def kek_id_of(sealed: str) -> str:
    return _split(sealed)[0]


def _unwrap(ring: KekRing, kek_id: str, wrapped: bytes, aad: str) -> bytes:
    key = ring.keys.get(kek_id)
    if key is None:
        raise KekError(
            f"a secret is sealed with key-encryption key {kek_id}, which the configured "
            f"KEK ({', '.join(ring.keys)}) does not hold"
        )
    try:
        return AESGCM(key).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(kek_id, aad)
        )
    except InvalidTag:
        raise KekError(
            f"key-encryption key {kek_id} does not open a secret sealed with it "
            "(wrong key material, or a value moved or altered in the database)"
        ) from None


def seal(plaintext: bytes, aad: str, ring: KekRing | None = None) -> str:
    """Encrypts `plaintext` under a fresh data key wrapped with the current KEK;
    `aad` names the row and purpose the value belongs to."""
    ring = ring or kek_ring()
    dek = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(NONCE_BYTES)
    body = AESGCM(dek).encrypt(nonce, plaintext, aad.encode())
    return f"{_wrap(ring, dek, aad)}.{_b64(nonce + body)}"


def open_sealed(sealed: str, aad: str, ring: KekRing | None = None) -> bytes:
    ring = ring or kek_ring()
    kek_id, wrapped, body = _split(sealed)
    dek = _unwrap(ring, kek_id, wrapped, aad)
    try:
        return AESGCM(dek).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], aad.encode())
    except InvalidTag:
        raise KekError("a sealed value was altered or moved to another row") from None


def rewrap(sealed: str, aad: str, ring: KekRing | None = None) -> str:
    """The same ciphertext with its data key wrapped by the current KEK."""
    ring = ring or kek_ring()
    kek_id, wrapped, body = _split(sealed)
    dek = _unwrap(ring, kek_id, wrapped, aad)
    return f"{_wrap(ring, dek, aad)}.{_b64(body)}"
