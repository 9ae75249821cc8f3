"""Live-server fixtures shared by every test tier (see docs/ARCHITECTURE.md, "Test fixtures").

* ``ua_server`` (module scope) / ``make_server(**serve_opts)``: a real ``ua-server serve``
  subprocess on 127.0.0.1 with port 0, torn down after use. ``serve_opts`` become command line
  options: ``close_delay=2`` → ``--close-delay 2``; ``fault="put-500=1"``; ``min_part_size=1``;
  ``empty_last_part=False`` → ``--no-empty-last-part``.
* ``run_ua(*args, env=None, input=None, timeout=120, cwd=None)``: ``python -m ua`` subprocess.
* ``dx(*args, env=None, input=None, timeout=120, cwd=None)``: the stock ``dx`` from dxpy.
  With ``env=None`` both use ``ua_server.env()``. ``env`` is a dict of DX_* variables (as
  returned by ``handle.env()``) laid over the current environment with any inherited DX_*
  variables removed. Both return ``CompletedProcess`` with text stdout/stderr.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from livesrv import ServerHandle, _clean_env, _run

@pytest.fixture
def make_server(tmp_path_factory):
    handles: list[ServerHandle] = []

    def factory(**serve_opts) -> ServerHandle:
        d = tmp_path_factory.mktemp("uasrv") / "data"
        h = ServerHandle(d, serve_opts).start()
        handles.append(h)
        return h

    yield factory
    for h in handles:
        h.stop()


@pytest.fixture(scope="module")
def ua_server(tmp_path_factory):
    h = ServerHandle(tmp_path_factory.mktemp("uasrv") / "data").start()
    yield h
    h.stop()


@pytest.fixture
def run_ua(request):
    def run(*args, env=None, input=None, timeout=120, cwd=None):
        if env is None:
            env = request.getfixturevalue("ua_server").env()
        return _run([sys.executable, "-m", "ua", *map(str, args)], _clean_env(env), input,
                    timeout, cwd)
    return run


def _dx_cmd() -> list[str]:
    local = Path(sys.executable).parent / "dx"  # avoid pyenv shims (slow)
    if local.exists():
        return [str(local)]
    exe = shutil.which("dx")
    return [exe] if exe else [sys.executable, "-m", "dxpy.scripts.dx"]


@pytest.fixture
def dx(request):
    def run(*args, env=None, input=None, timeout=120, cwd=None):
        if env is None:
            env = request.getfixturevalue("ua_server").env()
        return _run([*_dx_cmd(), *map(str, args)], _clean_env(env), input, timeout, cwd)
    return run


@pytest.fixture
def fault_proxy():
    """``fault_proxy(server, **toxics)`` starts a FaultProxy (tests/faults/proxy.py) in front of
    a live ua-server and stops it after the test."""
    from proxy import FaultProxy

    proxies: list = []

    def factory(server, **toxics):
        p = FaultProxy(server.host, server.port, **toxics).start()
        proxies.append(p)
        return p

    yield factory
    for p in proxies:
        p.stop()


@pytest.fixture
def tls_cert(tmp_path):
    """A self-signed (key, cert) pair for 127.0.0.1, made with the openssl command."""
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl command not available")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


class TLSApps:
    """Serves aiohttp apps over TLS on 127.0.0.1 with the ``tls_cert`` pair."""

    def __init__(self, key, cert):
        import ssl

        self.key, self.cert = key, cert
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.runners: list = []

    async def start(self, app) -> int:
        """Serve ``app``; returns its port."""
        from aiohttp import web

        runner = web.AppRunner(app)
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ctx)
        await site.start()
        return site._server.sockets[0].getsockname()[1]


@pytest.fixture
async def tls_apps(tls_cert):
    apps = TLSApps(*tls_cert)
    yield apps
    for runner in apps.runners:
        await runner.cleanup()
