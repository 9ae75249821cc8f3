"""Fewer requests per file: one signature listing per project instead of one findDataObjects
per file, and verification describes grouped into /system/describeDataObjects — with the
resume decisions unchanged. `ua` runs as a subprocess against a live ua-server; requests are
counted from the server's request log."""

from __future__ import annotations

import collections
import subprocess
import sys
import time

from livesrv import _clean_env

from ua.upload import resume as resume_mod

MiB = 1024 * 1024
FAST = {"UA_RETRY_BASE_DELAY": "0.001", "UA_STALL_TIMEOUT": "10"}


def routes(reqs) -> collections.Counter:
    c: collections.Counter = collections.Counter()
    for r in reqs:
        route = r["route"]
        if route.startswith("/file-"):
            route = "/file-x/" + route.rsplit("/", 1)[1]
        c[route] += 1
    return c


def run(srv, cwd, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ua", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=_clean_env({**srv.env(), **FAST}))


def test_rerun_of_many_files_lists_signatures_once(make_server, tmp_path):
    srv = make_server()
    names = [f"s{i:02d}.txt" for i in range(12)]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(b"line %d\n" % i * (i + 1))
    first = run(srv, tmp_path, "--do-not-compress", *names)
    assert first.returncode == 0, first.stderr[-2000:]
    ids = first.stdout.splitlines()
    assert len(set(ids)) == 12
    since = len(srv.requests())
    again = run(srv, tmp_path, "--do-not-compress", *names)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines() == ids
    assert again.stderr.count("Will not resume uploading it") == 12
    c = routes(srv.requests()[since:])
    assert c["/system/findDataObjects"] == 1, c
    assert c["/file/new"] == 0 and c["PUT /upload"] == 0, c


def test_open_file_found_by_the_listing_resumes_with_only_missing_parts(make_server, tmp_path):
    """A 3-part file interrupted after its first part, re-run together with 11 new files:
    the listing finds it open, its parts are described again, only the missing parts are
    sent, same ID; the new files upload; a third run sends nothing."""
    srv = make_server()
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (15 * MiB // 256))
    env = _clean_env({**srv.env(), **FAST})
    p = subprocess.Popen([sys.executable, "-m", "ua", "--do-not-compress", "-s", "5M",
                          "-u", "1", "--throttle", "4M", "big.bin"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(r["route"] == "PUT /upload" and r["status"] == 200 for r in srv.requests()):
                break
            time.sleep(0.02)
        else:
            raise AssertionError("no part stored within 60 s")
    finally:
        p.kill()
        p.communicate()
    time.sleep(0.3)
    (found,) = srv.api("/system/findDataObjects", {
        "scope": {"project": srv.project_id}, "name": "big.bin",
        "describe": {"fields": {"parts": True, "state": True}}})[1]["results"]
    fid = found["id"]
    assert found["describe"]["state"] == "open"
    done = [k for k, v in found["describe"]["parts"].items() if v["state"] == "complete"]
    assert 1 <= len(done) < 3

    names = [f"n{i:02d}.txt" for i in range(11)]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(b"new %d\n" % i)
    since = len(srv.requests())
    second = run(srv, tmp_path, "--do-not-compress", "-s", "5M", "big.bin", *names)
    assert second.returncode == 0, second.stderr[-2000:]
    out = second.stdout.splitlines()
    assert out[0] == fid and len(set(out)) == 12
    assert "Will resume uploading to it" in second.stderr
    reqs = srv.requests()[since:]
    c = routes(reqs)
    assert c["/system/findDataObjects"] == 1, c
    assert c["/file/new"] == 11, c
    big_puts = sorted(r["index"] for r in reqs if r["route"] == "PUT /upload" and r["file"] == fid)
    assert big_puts == sorted(i for i in (1, 2, 3) if str(i) not in done)
    got = srv.api(f"/{fid}/describe", {"fields": {"parts": True, "size": True}})[1]
    assert sum(v["size"] for v in got["parts"].values()) == big.stat().st_size

    since = len(srv.requests())
    third = run(srv, tmp_path, "--do-not-compress", "-s", "5M", "big.bin", *names)
    assert third.returncode == 0 and third.stdout.splitlines() == out
    c = routes(srv.requests()[since:])
    assert c["/system/findDataObjects"] == 1 and c["/file/new"] == 0 and c["PUT /upload"] == 0


def test_verification_describes_are_grouped_under_load(make_server, tmp_path):
    """200 small files: every file is verified before /close, but not with 200 describes."""
    srv = make_server()
    names = [f"v{i:03d}.txt" for i in range(200)]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(b"v %d\n" % i)
    since = len(srv.requests())
    p = run(srv, tmp_path, "--do-not-compress", *names)
    assert p.returncode == 0, p.stderr[-2000:]
    c = routes(srv.requests()[since:])
    assert c["/file-x/close"] == 200
    singles, batches = c["/file-x/describe"], c["/system/describeDataObjects"]
    assert batches >= 1 and singles + batches < 200, c


def test_listing_page_budget_and_index():
    assert resume_mod.scan_page_budget(1) == 1
    assert resume_mod.scan_page_budget(50) == 1
    assert resume_mod.scan_page_budget(51) == 2
    assert resume_mod.scan_page_budget(1000) == 20
    sig = "10 1700000000 0 5242880 /data/a.txt"
    idx = resume_mod.SignatureIndex([
        {"id": "file-a", "describe": {"state": "closed", "properties": {
            resume_mod.SIGNATURE_PROPERTY: sig}}},
        {"id": "file-b", "describe": {"state": "open", "properties": {
            resume_mod.SIGNATURE_PROPERTY: sig}}},
        {"id": "file-c", "describe": {"state": "closed", "properties": {}}},
        {"id": "file-d"},  # not described: ignored
    ])
    assert [r["id"] for r in idx.lookup(sig)] == ["file-a", "file-b"]
    assert idx.lookup("other") == []
