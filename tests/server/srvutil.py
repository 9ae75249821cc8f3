"""Small stdlib HTTP helpers for ua-server tests (the server under test is a real subprocess)."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
import urllib.parse


def md5hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def raw(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
        timeout: float = 30):
    """One HTTP request; returns (status, headers dict (lower-case), body bytes)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path + ("?" + u.query if u.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def call(h, route: str, body: dict | None = None, token: str | None = None):
    return h.api(route, body or {}, token=token)


def ok(h, route: str, body: dict | None = None, token: str | None = None):
    st, res = h.api(route, body or {}, token=token)
    assert st == 200, (route, st, res)
    return res


def err_type(res) -> str | None:
    return res.get("error", {}).get("type") if isinstance(res, dict) else None


def new_file(h, project: str | None = None, name: str = "f.bin", token: str | None = None,
             **extra) -> str:
    body = {"project": project or h.project_id, "name": name, **extra}
    return ok(h, "/file/new", body, token)["id"]


def put_part(h, fid: str, index: int, data: bytes, token: str | None = None,
             md5: str | None = None, send: bytes | None = None):
    """/upload then PUT; returns (status, body) of the PUT."""
    info = ok(h, f"/{fid}/upload", {"index": index, "size": len(data), "md5": md5 or md5hex(data)},
              token)
    headers = {k: v for k, v in info["headers"].items() if k.lower() != "content-length"}
    st, _, body = raw(info["url"], "PUT", send if send is not None else data, headers)
    return st, body


def upload(h, data_parts: list[bytes], name: str = "f.bin", project: str | None = None,
           token: str | None = None, close: bool = True, wait: bool = True) -> str:
    fid = new_file(h, project, name, token)
    for i, d in enumerate(data_parts, 1):
        st, body = put_part(h, fid, i, d, token)
        assert st == 200, (st, body)
    if close:
        ok(h, f"/{fid}/close", {}, token)
        if wait:
            wait_state(h, fid, "closed", token)
    return fid


def wait_state(h, fid: str, state: str, token: str | None = None, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = ok(h, f"/{fid}/describe", {}, token)
        if d["state"] == state or time.monotonic() > deadline:
            assert d["state"] == state, d
            return d
        time.sleep(0.05)


def wait_temp_part(h, fid: str, timeout: float = 5) -> None:
    """Wait until a PUT of ``fid`` has its temp part file on disk (the body is arriving)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((h.data_dir / "blobs" / fid).glob("*.tmp.*")):
            return
        time.sleep(0.02)
    raise AssertionError("no temp file appeared")


def requests_for(h, fid: str, route: str | None = None) -> list[dict]:
    return [r for r in h.requests() if r.get("file") == fid and (route is None or r["route"] == route)]


def dumps(v) -> bytes:
    return json.dumps(v).encode()
