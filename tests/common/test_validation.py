from __future__ import annotations

import pytest

from flint.common.errors import Code, FlintError
from flint.common.validation import update_paths, url_problem


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


def test_update_paths_are_the_mask_or_every_field_given_a_value():
    updatable = ("customer_email", "metadata")
    given = {"customer_email": "", "metadata": {"a": "b"}}
    assert update_paths([], updatable, "order", given) == {"metadata"}
    assert update_paths(["customer_email"], updatable, "order", given) == {"customer_email"}
    with pytest.raises(FlintError) as raised:
        update_paths(["metadata", "total"], updatable, "order", given)
    error = raised.value
    assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "UNKNOWN_FIELD_MASK_PATH")
    assert "'total' is not an updatable order field" in error.message


def test_an_update_that_would_set_nothing_is_refused():
    with pytest.raises(FlintError) as raised:
        update_paths([], ("active", "metadata"), "payment link", {"active": False, "metadata": {}})
    error = raised.value
    assert (error.code, error.reason) == (Code.INVALID_ARGUMENT, "FIELD_REQUIRED")
    assert [violation.field for violation in error.violations] == ["update_mask"]
