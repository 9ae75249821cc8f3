"""The address ua-server advertises (dx-env, the "listening on" line) for the one it binds."""

from __future__ import annotations

import pytest

from ua.server.cli import connect_host


@pytest.mark.parametrize("bind, want", [
    ("127.0.0.1", "127.0.0.1"),
    ("0.0.0.0", "127.0.0.1"),   # wildcard: clients on this machine use loopback
    ("::", "127.0.0.1"),
    ("", "127.0.0.1"),
    ("::1", "[::1]"),           # an IPv6 literal goes into URLs in brackets
    ("[::1]", "[::1]"),
    ("uploads.example.org", "uploads.example.org"),
])
def test_connect_host(bind, want):
    assert connect_host(bind) == want
