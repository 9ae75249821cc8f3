"""Pure tests of the retry policy numbers and of masking."""

from __future__ import annotations

from hypothesis import given, strategies as st

from ua.api.errors import (
    BadDigest,
    BadResponse,
    ConnectError,
    ConnectionLost,
    InvalidInput,
    TransientAPIError,
    TransientHTTPError,
    make_api_error,
)
from ua.api.retry import RetryPolicy, is_always_retry
from ua.api.transport import mask_token, mask_url, parse_retry_after

P = RetryPolicy(base_delay=1.0)


def test_dxpy_delay_schedule():
    exc = TransientAPIError("InternalError", "x", 500)
    assert P.api_delay(exc, 1) == 1
    for n in range(2, 12):
        m = min(n, 8)
        for _ in range(20):
            d = P.api_delay(exc, n)
            assert 2 ** (m - 2) <= d <= 2 ** (m - 1)


def test_retry_after_formula_and_cap():
    exc = TransientAPIError("ServiceUnavailable", "x", 503, retry_after=4)
    assert P.api_delay(exc, 1) == 4
    assert P.api_delay(exc, 3) == 4 + int(0.25 * 2 * 4)
    big = TransientAPIError("ServiceUnavailable", "x", 503, retry_after=3600)
    assert P.api_delay(big, 1) == 60
    assert P.part_delay(big, 1) == 60


def test_scaled_delays():
    fast = RetryPolicy(base_delay=0.01)
    assert fast.api_delay(TransientAPIError("InternalError", "x", 500), 1) == 0.01


@given(st.integers(min_value=1, max_value=50))
def test_part_backoff_capped(attempt):
    d = P.part_delay(ConnectionLost("x"), attempt)
    assert 0 <= d <= P.part_backoff_cap


def test_api_retry_classes():
    assert P.api_should_retry(TransientAPIError("InternalError", "x", 500), False)
    assert P.api_should_retry(TransientHTTPError(429, "x"), False)
    assert P.api_should_retry(ConnectError("x"), False)
    assert not P.api_should_retry(ConnectionLost("x"), False)
    assert P.api_should_retry(ConnectionLost("x"), True)
    assert P.api_should_retry(BadResponse("x"), True)
    assert not P.api_should_retry(InvalidInput("InvalidInput", "x", 422), True)
    assert not P.api_should_retry(ValueError("bug"), True)


def test_part_retry_classes():
    assert P.part_should_retry(BadDigest("BadDigest", "x", 400))
    assert P.part_should_retry(TransientHTTPError(400, "<xml/>"))
    assert not P.part_should_retry(make_api_error(422, "InvalidState", "closed"))
    assert isinstance(make_api_error(503, "ServiceUnavailable", "x"), TransientAPIError)


def test_always_retry_routes():
    assert is_always_retry("/file/new")
    assert is_always_retry("/file-abc/upload")
    assert is_always_retry("/project-abc/describe")
    assert is_always_retry("/system/findDataObjects")
    assert not is_always_retry("/project-abc/removeObjects")
    assert not is_always_retry("/project/new")


def test_masking():
    url = "https://u:pw@store.example/upload/file-x/1?sig=abcdef&expires=123"
    m = mask_url(url)
    assert "abcdef" not in m and "pw" not in m and "123" not in m
    assert m.startswith("https://****@store.example/upload/file-x/1?sig=****")
    assert mask_token("supersecrettoken1234") == "****1234"
    assert mask_token("short") == "****"
    assert mask_token(None) == "<none>"


def test_parse_retry_after():
    assert parse_retry_after("5") == 5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after(None) is None
