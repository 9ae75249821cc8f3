"""The request log is what the fault and crash tiers count PUTs with: every PUT must be
recorded with its file, part index and body bytes — also when the client goes away in the
middle of the body (a killed ua, a reset connection)."""

from __future__ import annotations

import hashlib
import socket
import time
import urllib.parse

from faultkit import make_batch, run_ua_json, set_faults


def _ok(h, route, body):
    st, res = h.api(route, body)
    assert st == 200, res
    return res


def test_put_aborted_by_the_client_is_logged_with_its_index(ua_server):
    h = ua_server
    fid = _ok(h, "/file/new", {"project": h.project_id, "name": "aborted.bin"})["id"]
    data = b"z" * (2 * 1024 * 1024)
    info = _ok(h, f"/{fid}/upload", {"index": 7, "size": len(data),
                                     "md5": hashlib.md5(data).hexdigest()})
    u = urllib.parse.urlsplit(info["url"])
    s = socket.create_connection((u.hostname, u.port))
    s.sendall((f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data[: len(data) // 2])
    time.sleep(0.3)
    s.close()
    deadline = time.monotonic() + 5
    recs = []
    while time.monotonic() < deadline and not recs:
        recs = [r for r in h.requests() if r["file"] == fid and r["route"] == "PUT /upload"]
        time.sleep(0.05)
    assert len(recs) == 1, recs
    assert recs[0]["status"] != 200
    assert recs[0]["index"] == 7, recs[0]
    assert recs[0]["bytes"] > 0, recs[0]


def test_permanent_api_fault_on_some_files_only(ua_server, tmp_path):
    """api-500 forever on /file/new and /file-x/* of bad* files: only they fail; the others
    upload; after the fault clears a re-run completes them with no duplicate object."""
    h = ua_server
    good = make_batch(tmp_path / "src", seed=77, big=False)
    bad = tmp_path / "src" / "bad-one.txt"
    bad.write_bytes(b"api fault\n" * 10)
    set_faults(h, "api-500=1.0@bad*")
    try:
        p, files, _ = run_ua_json(h, *good, bad)
    finally:
        set_faults(h, "")
    assert p.returncode == 1
    assert [f["state"] for f in files] == ["uploaded"] * len(good) + ["failed"]
    assert "500" in files[-1]["error"] or "nternal" in files[-1]["error"]
    p2, files2, _ = run_ua_json(h, *good, bad)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert files2[-1]["state"] == "uploaded"
    st, res = h.api("/system/findDataObjects", {"scope": {"project": h.project_id},
                                                "name": "bad-one.txt.gz"})
    assert len(res["results"]) == 1
