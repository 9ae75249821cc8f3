"""HTTP(S)_PROXY and NO_PROXY are honoured (looked up once per host by ua/api/transport.py).

The "proxy" is the fault tier's loopback TCP relay in front of a live ua-server: an HTTP proxy
receives absolute-form requests, which the relay passes on unchanged and aiohttp's server
accepts. ua is pointed at an API port where nothing listens, so it can only succeed by going
through the proxy."""

from __future__ import annotations

import socket
import subprocess
import sys

from livesrv import _clean_env


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    return port


def _run(srv, cwd, extra_env, *args):
    env = _clean_env({**srv.env(), "DX_APISERVER_PORT": str(_dead_port()),
                      "UA_RETRY_BASE_DELAY": "0.001", **extra_env})
    for k in ("http_proxy", "https_proxy", "no_proxy", "HTTPS_PROXY", "NO_PROXY"):
        env.pop(k, None)
    env.update(extra_env)
    return subprocess.run([sys.executable, "-m", "ua", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_uploads_through_http_proxy_and_no_proxy_bypasses_it(make_server, fault_proxy, tmp_path):
    srv = make_server()
    proxy = fault_proxy(srv)
    (tmp_path / "via-proxy.txt").write_bytes(b"through the proxy\n" * 100)
    p = _run(srv, tmp_path, {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}"},
             "--do-not-compress", "via-proxy.txt")
    assert p.returncode == 0, p.stderr[-2000:]
    fid = p.stdout.strip()
    assert srv.api(f"/{fid}/describe")[1]["state"] in ("closing", "closed")
    # every request went through the proxy in absolute form: the API calls and the PUT
    methods = {m for m, path in proxy.stats.paths if path.startswith("http://127.0.0.1:")}
    assert {"POST", "PUT"} <= methods, proxy.stats.paths  # upload URLs keep the API's port

    # NO_PROXY for the API host: ua goes direct, to the dead port, and reports the server
    # unreachable (exit 3) instead of using the proxy.
    p = _run(srv, tmp_path, {"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}",
                             "NO_PROXY": "127.0.0.1"}, "-r", "1", "via-proxy.txt")
    assert p.returncode == 3, (p.returncode, p.stderr[-2000:])
    assert p.stdout == ""
