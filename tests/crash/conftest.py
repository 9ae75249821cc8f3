"""The crash tier reuses the fault tier's helpers (tests/faults/faultkit.py, proxy.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "faults"))

from proxy import FaultProxy  # noqa: E402


@pytest.fixture
def fault_proxy():
    proxies: list[FaultProxy] = []

    def factory(server, **toxics) -> FaultProxy:
        p = FaultProxy(server.host, server.port, **toxics).start()
        proxies.append(p)
        return p

    yield factory
    for p in proxies:
        p.stop()
