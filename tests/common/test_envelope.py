"""Envelope encryption under the key-encryption key (KEK): sealing, what refuses
to open, re-wrapping, and how the KEK is read from the environment."""

from __future__ import annotations

import os
import stat

import pytest

from flint.common import envelope
from flint.common.envelope import KekError, KekRing


def _ring(*lines: str) -> KekRing:
    return envelope.parse_ring("\n".join(lines), "test")


@pytest.fixture
def ring() -> KekRing:
    return _ring(envelope.new_kek_line())


def test_a_sealed_value_opens_with_its_ring_and_purpose(ring: KekRing):
    sealed = envelope.seal(b"the secret", "webhook_secret:we_1:1", ring)
    assert b"the secret" not in sealed.encode()
    assert envelope.kek_id_of(sealed) == ring.current
    assert envelope.open_sealed(sealed, "webhook_secret:we_1:1", ring) == b"the secret"


def test_each_seal_uses_its_own_data_key(ring: KekRing):
    first = envelope.seal(b"same", "p", ring)
    second = envelope.seal(b"same", "p", ring)
    assert first.split(".")[2] != second.split(".")[2]
    assert first.split(".")[3] != second.split(".")[3]


def test_a_value_moved_to_another_row_does_not_open(ring: KekRing):
    sealed = envelope.seal(b"the secret", "webhook_secret:we_1:1", ring)
    with pytest.raises(KekError, match="moved or altered"):
        envelope.open_sealed(sealed, "webhook_secret:we_2:1", ring)


def test_an_altered_ciphertext_does_not_open(ring: KekRing):
    sealed = envelope.seal(b"the secret", "p", ring)
    head, body = sealed.rsplit(".", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(KekError, match="altered"):
        envelope.open_sealed(f"{head}.{flipped}", "p", ring)


def test_a_wrong_kek_with_the_same_id_is_refused_clearly(ring: KekRing):
    sealed = envelope.seal(b"the secret", "p", ring)
    other = envelope.new_kek_line().split(":", 1)[1]
    impostor = _ring(f"{ring.current}:{other}")
    with pytest.raises(KekError, match=f"key-encryption key {ring.current} does not open"):
        envelope.open_sealed(sealed, "p", impostor)


def test_a_kek_that_does_not_hold_the_sealing_key_is_refused_clearly(ring: KekRing):
    sealed = envelope.seal(b"the secret", "p", ring)
    other = _ring(envelope.new_kek_line())
    with pytest.raises(KekError, match=f"sealed with key-encryption key {ring.current}"):
        envelope.open_sealed(sealed, "p", other)


def test_rewrap_moves_the_data_key_to_the_current_kek_and_keeps_the_ciphertext(ring: KekRing):
    sealed = envelope.seal(b"the secret", "p", ring)
    new_line = envelope.new_kek_line()
    old_line = envelope.format_ring(ring).strip()
    rotating = _ring(new_line, old_line)
    rewrapped = envelope.rewrap(sealed, "p", rotating)
    assert envelope.kek_id_of(rewrapped) == rotating.current != ring.current
    assert rewrapped.split(".")[3] == sealed.split(".")[3]
    # The new KEK alone opens it; the old one alone no longer does.
    assert envelope.open_sealed(rewrapped, "p", _ring(new_line)) == b"the secret"
    with pytest.raises(KekError):
        envelope.open_sealed(rewrapped, "p", ring)


def test_the_ring_puts_the_current_key_first_and_keeps_the_others_as_retired():
    first, second = envelope.new_kek_line(), envelope.new_kek_line()
    ring = envelope.parse_ring(f"# comment\n{first}\n\n{second}  # old\n", "test")
    assert ring.current == first.split(":")[0]
    assert ring.retired == [second.split(":")[0]]
    assert envelope.parse_ring(f"{first},{second}", "test") == ring


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("no-separator", "must be `<id>:<base64"),
        ("bad id!:AAAA", "must be `<id>:<base64"),
        ("k1:not base64!", "is not base64"),
        ("k1:AAAA", "must be 32 bytes, not 3"),
    ],
)
def test_a_malformed_kek_is_refused_with_the_reason(text: str, message: str):
    with pytest.raises(KekError, match=message):
        envelope.parse_ring(text, "FLINT_KEK")


def test_the_same_kek_id_twice_is_refused():
    line = envelope.new_kek_line()
    with pytest.raises(KekError, match="appears twice"):
        envelope.parse_ring(f"{line}\n{line}", "test")


def test_no_kek_configured_is_one_clear_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(envelope.KEK_ENV, raising=False)
    monkeypatch.delenv(envelope.KEK_FILE_ENV, raising=False)
    with pytest.raises(KekError, match="no key-encryption key: set FLINT_KEK_FILE") as caught:
        envelope.kek_ring()
    assert "\n" not in str(caught.value)


def test_both_kek_variables_set_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv(envelope.KEK_ENV, envelope.new_kek_line())
    monkeypatch.setenv(envelope.KEK_FILE_ENV, str(tmp_path / "kek"))
    with pytest.raises(KekError, match="not both"):
        envelope.kek_ring()


def test_a_missing_kek_file_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.delenv(envelope.KEK_ENV, raising=False)
    monkeypatch.setenv(envelope.KEK_FILE_ENV, str(tmp_path / "absent"))
    with pytest.raises(KekError, match="absent: No such file"):
        envelope.kek_ring()


def test_the_kek_file_is_reread_when_it_changes(monkeypatch: pytest.MonkeyPatch, tmp_path):
    path = tmp_path / "kek"
    first = _ring(envelope.new_kek_line())
    envelope.write_ring_file(path, first)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monkeypatch.delenv(envelope.KEK_ENV, raising=False)
    monkeypatch.setenv(envelope.KEK_FILE_ENV, str(path))
    assert envelope.kek_ring() == first
    second = _ring(envelope.new_kek_line(), envelope.format_ring(first).strip())
    envelope.write_ring_file(path, second)
    assert envelope.kek_ring() == second
