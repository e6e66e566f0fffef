from __future__ import annotations

import pytest

from flint.common.validation import url_problem


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/cb",
        "https://example.com:8443/oauth/callback?x=1",
        "http://localhost:3000/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:8080/cb",
    ],
)
def test_accepted_urls(url):
    assert url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/cb", "INSECURE_URL"),
        ("http://localhost.evil.com/cb", "INSECURE_URL"),
        ("http://127.0.0.1.nip.io/cb", "INSECURE_URL"),
        ("https://user:pass@example.com/", "INVALID_URL"),
        ("https://example.com/#x", "INVALID_URL"),
        ("https://example.com/#", "INVALID_URL"),
        ("https:///nohost", "INVALID_URL"),
        ("https://example.com:99999/", "INVALID_URL"),
        ("https://exa mple.com/", "INVALID_URL"),
        ("javascript:alert(1)", "INVALID_URL"),
        ("//example.com/cb", "INVALID_URL"),
        ("https://example.com/" + "a" * 2048, "FIELD_TOO_LONG"),
    ],
)
def test_refused_urls(url, reason):
    problem = url_problem(url)
    assert problem is not None
    assert problem[0] == reason
