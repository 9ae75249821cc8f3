"""Every fault kind visibly happens, and the request log records it."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse

import pytest
from srvutil import call, err_type, md5hex, new_file, ok, put_part, raw, requests_for


@pytest.fixture
def faulty(ua_server):
    def set_spec(spec: str):
        assert ok(ua_server, "/admin/faults", {"spec": spec}) == {"spec": spec}
    yield set_spec
    set_spec("")


def _upload_info(h, fid, index, data):
    return ok(h, f"/{fid}/upload", {"index": index, "size": len(data), "md5": md5hex(data)})


def _last_put(h, fid):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        puts = requests_for(h, fid, "PUT /upload")
        if puts:
            return puts[-1]
        time.sleep(0.05)
    raise AssertionError("no PUT logged")


@pytest.mark.parametrize("kind,status,code", [
    ("put-500", 500, b"InternalError"),
    ("put-503", 503, b"SlowDown"),
    ("put-baddigest", 400, b"BadDigest"),
])
def test_put_status_faults(ua_server, faulty, kind, status, code):
    h = ua_server
    fid = new_file(h, name=f"{kind}.bin")
    faulty(f"{kind}=1")
    info = _upload_info(h, fid, 1, b"payload")
    st, headers, body = raw(info["url"], "PUT", b"payload", {"content-md5": info["headers"]["content-md5"]})
    assert st == status and code in body
    assert not headers.get("content-type", "").startswith("application/json")
    if kind == "put-503":
        assert headers["retry-after"] == "1"
    rec = _last_put(h, fid)
    assert rec["fault"] == kind and rec["status"] == status and rec["index"] == 1
    assert ok(h, f"/{fid}/describe")["parts"]["1"]["state"] == "pending"


def _put_raw(info, data, timeout=5.0):
    u = urllib.parse.urlsplit(info["url"])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.request("PUT", u.path + "?" + u.query, body=data,
                 headers={"content-md5": info["headers"]["content-md5"]})
    try:
        return conn.getresponse().status
    finally:
        conn.close()


def test_put_reset(ua_server, faulty):
    h = ua_server
    data = b"r" * (4 * 1024 * 1024)
    fid = new_file(h, name="reset.bin")
    faulty("put-reset=1")
    info = _upload_info(h, fid, 1, data)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _put_raw(info, data)
    rec = _last_put(h, fid)
    assert rec["fault"] == "put-reset" and rec["status"] == 0
    assert 0 < rec["bytes"] < len(data)
    assert ok(h, f"/{fid}/describe")["parts"]["1"]["state"] == "pending"
    faulty("")
    assert put_part(h, fid, 1, data)[0] == 200  # next try works; no temp file left behind
    assert not list((h.data_dir / "blobs" / fid).glob("*.tmp.*"))


def test_put_drop_after_store(ua_server, faulty):
    h = ua_server
    fid = new_file(h, name="drop.bin")
    faulty("put-drop-after-store=1")
    info = _upload_info(h, fid, 1, b"stored")
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _put_raw(info, b"stored")
    rec = _last_put(h, fid)
    assert rec["fault"] == "put-drop-after-store" and rec["status"] == 0
    assert ok(h, f"/{fid}/describe")["parts"]["1"]["state"] == "complete"


def test_put_stall_and_slow(ua_server, faulty):
    h = ua_server
    fid = new_file(h, name="stall.bin")
    faulty("put-stall=1")
    info = _upload_info(h, fid, 1, b"zzz")
    with pytest.raises((socket.timeout, TimeoutError, OSError)):
        _put_raw(info, b"zzz", timeout=1.0)
    rec = _last_put(h, fid)
    assert rec["fault"] == "put-stall" and rec["status"] == 0 and rec["ms"] >= 900
    faulty("put-slow=1")
    data = b"s" * (1024 * 1024)
    t0 = time.monotonic()
    assert put_part(h, fid, 1, data)[0] == 200
    assert time.monotonic() - t0 >= 0.3  # 1 MiB at 2 MiB/s
    rec = _last_put(h, fid)
    assert rec["fault"] == "put-slow" and rec["status"] == 200


@pytest.mark.parametrize("kind,status,etype", [
    ("api-500", 500, "InternalError"),
    ("api-503", 503, "ServiceUnavailable"),
    ("api-429", 429, "RateLimitConditional"),
])
def test_api_faults(ua_server, faulty, kind, status, etype):
    h = ua_server
    faulty(f"{kind}=1")
    st, res = call(h, "/system/whoami")
    assert st == status and err_type(res) == etype
    faulty("")
    recs = [r for r in h.requests() if r["route"] == "/system/whoami" and r["fault"] == kind]
    assert recs and recs[-1]["status"] == status


def test_fault_glob_limits_to_matching_files(ua_server, faulty):
    h = ua_server
    bad = new_file(h, name="doomed.fastq")
    good = new_file(h, name="fine.txt")
    faulty("put-500=1@doomed*,api-503=1@doomed*")
    assert put_part(h, good, 1, b"ok")[0] == 200
    ok(h, f"/{good}/close")
    st, res = call(h, f"/{bad}/describe")
    assert st == 503
    st, res = call(h, "/file/new", {"project": h.project_id, "name": "doomed.2"})
    assert st == 503
    faulty("put-500=1@doomed*")
    st, _ = put_part(h, bad, 1, b"no")
    assert st == 500
    assert _last_put(h, bad)["fault"] == "put-500"
    assert all(r["fault"] is None for r in requests_for(h, good))


def test_probabilistic_faults_are_seeded(make_server):
    h = make_server(fault="put-500=0.5", fault_seed=7)
    fid = new_file(h, name="p.bin")
    statuses = [put_part(h, fid, 1, b"x")[0] for _ in range(20)]
    assert 500 in statuses and 200 in statuses
    h2 = make_server(fault="put-500=0.5", fault_seed=7)
    fid2 = new_file(h2, name="p.bin")
    assert [put_part(h2, fid2, 1, b"x")[0] for _ in range(20)] == statuses


def test_bad_fault_spec_rejected(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "ua.server.cli", "serve", "--data-dir",
                        str(tmp_path / "d"), "--port", "0", "--fault", "put-boom=1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "unknown fault kind" in p.stderr


def test_put_reset_on_empty_part(ua_server, faulty):
    h = ua_server
    fid = new_file(h, name="empty-reset.bin")
    faulty("put-reset=1")
    info = _upload_info(h, fid, 1, b"")
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _put_raw(info, b"")
    rec = _last_put(h, fid)
    assert rec["fault"] == "put-reset" and rec["status"] == 0
    assert ok(h, f"/{fid}/describe")["parts"]["1"]["state"] == "pending"


def test_zz_faults_left_no_tracebacks(ua_server):
    """Runs last in this module: dropped/reset/stalled connections are not server errors."""
    assert "Traceback" not in ua_server.server_log(), ua_server.server_log()[-3000:]
