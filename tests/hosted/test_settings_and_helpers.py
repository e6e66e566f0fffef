"""Settings validation and the small security helpers, without HTTP."""

from __future__ import annotations

import pytest

from flint.hosted.authorize import add_query
from flint.hosted.security import csp_origin, safe_next
from flint.hosted.settings import HostedSettings, SettingsError
from tests.hosted.conftest import hosted_settings


@pytest.mark.parametrize(
    ("public_url", "secure"),
    [
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
        ("https://pay.example.com", True),
        ("http://flint.internal:8080", True),
    ],
)
def test_cookies_are_secure_unless_the_public_host_is_loopback(
    public_url: str, secure: bool
) -> None:
    assert hosted_settings(public_url=public_url).cookies_secure is secure


def test_missing_internal_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="FLINT_INTERNAL_KEY"):
        hosted_settings(internal_key="")


@pytest.mark.parametrize(
    "public_url",
    ["127.0.0.1:8080", "ftp://example.com", "https://example.com/flint", "https://x.com/?a=1"],
)
def test_public_url_must_be_a_bare_http_origin(public_url: str) -> None:
    with pytest.raises(SettingsError):
        hosted_settings(public_url=public_url)


def test_short_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="FLINT_HOSTED_SECRET"):
        hosted_settings(secret_key="short")


def test_from_env_reads_secrets_from_the_environment_only() -> None:
    settings = HostedSettings.from_env(
        grpc_target="127.0.0.1:50051",
        environ={
            "FLINT_INTERNAL_KEY": "fik_abc",
            "FLINT_HOSTED_SECRET": "x" * 40,
            "FLINT_PUBLIC_URL": "https://pay.example.com/",
        },
    )
    assert settings.internal_key == "fik_abc"
    assert settings.secret_key == "x" * 40
    assert settings.issuer == "https://pay.example.com"
    assert "fik_abc" not in repr(settings)
    assert "x" * 40 not in repr(settings)


@pytest.mark.parametrize(
    ("uri", "origin"),
    [
        ("https://app.example.com/cb?x=1", "https://app.example.com"),
        ("http://localhost:3000/callback", "http://localhost:3000"),
        ("http://[::1]:3000/cb", "http://[::1]:3000"),
        ("HTTPS://App.Example.com/cb", "https://App.Example.com"),
        ("com.example.app:/oauth", "com.example.app:"),
        ("https://a.example;script-src *.evil/cb", None),
        ("https://a.example cb", None),
        ("https://:443/cb", None),
    ],
)
def test_csp_origin_of_redirect_uris(uri: str, origin: str | None) -> None:
    assert csp_origin(uri) == origin


@pytest.mark.parametrize(
    "value",
    ["/hosted/", "/oauth/authorize?client_id=a&state=%2F%2Fx", "/pay/cs_123"],
)
def test_safe_next_keeps_site_paths(value: str) -> None:
    assert safe_next(value) == value


def test_add_query_keeps_the_existing_query_verbatim_and_drops_fragments() -> None:
    assert (
        add_query("https://a.example/cb?x=a%20b&y", {"code": "c d", "state": ""})
        == "https://a.example/cb?x=a%20b&y&code=c+d"
    )
    assert add_query("https://a.example/cb#frag", {"code": "c"}) == "https://a.example/cb?code=c"
