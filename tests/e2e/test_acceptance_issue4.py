"""Acceptance tests for issue 4 (resume and skip, diagnostics, metadata, throttle) that the
other tiers show only in part. `ua` runs as a subprocess against a live `ua-server`; what was
sent is counted from the server's request log (requests.jsonl); bytes are checked by
downloading them again. See docs/acceptance.md for the map of requirement → test.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from livesrv import _clean_env

MiB = 1024 * 1024
ID_RE = re.compile(r"^file-[0-9BFGJKPQVXYZbfgjkpqvxyz]{24}$")
FAST = {"UA_RETRY_BASE_DELAY": "0.001", "UA_STALL_TIMEOUT": "5", "UA_WAIT_ON_CLOSE_TIMEOUT": "20"}
BIG = 200 * MiB
CHUNK = 5 * MiB  # ua's smallest --chunk-size: 40 parts for 200 MB


# ----------------------------------------------------------------------------- helpers
def ua_popen(srv, *args, env_extra=None, cwd=None):
    env = _clean_env({**srv.env(), **FAST, **(env_extra or {})})
    return subprocess.Popen([sys.executable, "-m", "ua", *map(str, args)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def api_ok(srv, route, body=None):
    status, out = srv.api(route, body or {})
    assert status == 200, (route, out)
    return out


def wait_for(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def wait_quiet(srv, quiet=0.4, timeout=15.0):
    """Until the request log stops growing (a killed client's last requests are answered)."""
    deadline = time.monotonic() + timeout
    n, still = len(srv.requests()), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        m = len(srv.requests())
        if m != n:
            n, still = m, time.monotonic()
        elif time.monotonic() - still >= quiet:
            return n
    return n


def ok_puts(srv, since=0, fid=None):
    return [r for r in srv.requests()[since:] if r["route"] == "PUT /upload" and r["status"] == 200
            and (fid is None or r["file"] == fid)]


def complete_parts(srv, fid):
    d = api_ok(srv, f"/{fid}/describe")
    return d, {int(k) for k, v in d["parts"].items() if v["state"] == "complete"}


def remote_sha256(srv, fid):
    info = api_ok(srv, f"/{fid}/download")
    h = hashlib.sha256()
    n = 0
    with urllib.request.urlopen(urllib.request.Request(info["url"], headers=info.get("headers") or {})) as r:
        while True:
            b = r.read(4 * MiB)
            if not b:
                break
            h.update(b)
            n += len(b)
    return n, h.hexdigest()


def remote_bytes(srv, fid):
    info = api_ok(srv, f"/{fid}/download")
    with urllib.request.urlopen(urllib.request.Request(info["url"], headers=info.get("headers") or {})) as r:
        return r.read()


def wait_closed(srv, fid, timeout=20.0):
    return wait_for(lambda: (d := api_ok(srv, f"/{fid}/describe"))["state"] == "closed" and d,
                    timeout, f"{fid} closed")


def files_named(srv, name):
    out = api_ok(srv, "/system/findDataObjects",
                 {"scope": {"project": srv.project_id, "folder": "/", "recurse": True},
                  "name": name, "class": "file", "visibility": "either"})
    return out["results"]


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    p = tmp_path_factory.mktemp("big") / "big.bin"
    rng = random.Random(4242)
    h = hashlib.sha256()
    with open(p, "wb") as f:
        for _ in range(BIG // (8 * MiB)):
            b = rng.randbytes(8 * MiB)
            h.update(b)
            f.write(b)
    return p, h.hexdigest()


def _first_run_until_parts(srv, src, min_parts):
    """Start a throttled upload of ``src`` and return (Popen, fid) once the server has
    stored at least ``min_parts`` parts of it (polled from the request log)."""
    since = len(srv.requests())
    p = ua_popen(srv, "--do-not-compress", "-s", "5M", "--throttle", "40M", src)
    try:
        wait_for(lambda: len(ok_puts(srv, since)) >= min_parts or p.poll() is not None, 60,
                 f"{min_parts} stored parts")
    except BaseException:
        p.kill()
        raise
    assert p.poll() is None, "ua finished before the kill point: " + p.communicate()[1].decode()[-2000:]
    fids = {r["file"] for r in ok_puts(srv, since)}
    assert len(fids) == 1, fids
    return p, fids.pop(), since


def _rerun_and_check(srv, src, sha, fid, done):
    """The re-run PUTs exactly the parts that were not complete, prints the same ID, closes
    the file with the source's bytes, and leaves one remote object."""
    nparts = BIG // CHUNK
    assert 0 < len(done) < nparts, done
    mark = len(srv.requests())
    p = ua_popen(srv, "--do-not-compress", "-s", "5M", "--wait-on-close", src)
    out, err = p.communicate(timeout=120)
    out, err = out.decode(), err.decode()
    assert p.returncode == 0, err[-3000:]
    assert out == fid + "\n"
    sent = [r["index"] for r in srv.requests()[mark:] if r["route"] == "PUT /upload" and r["file"] == fid]
    assert sorted(sent) == sorted(set(range(1, nparts + 1)) - done), (sorted(sent), sorted(done))
    assert not [r for r in srv.requests()[mark:] if r["route"] == "/file/new"]
    assert "Will resume uploading to it." in err
    d = wait_closed(srv, fid)
    assert d["size"] == BIG
    assert remote_sha256(srv, fid) == (BIG, sha)
    assert [r["id"] for r in files_named(srv, src.name)] == [fid]


# ----------------------------------------------------------------------------- kill and resume
def test_sigkill_ua_mid_200mb_upload_then_rerun_sends_only_missing_parts(make_server, big_source):
    srv = make_server()
    src, sha = big_source
    p, fid, _ = _first_run_until_parts(srv, src, 8)
    p.send_signal(signal.SIGKILL)
    p.wait(20)
    err = p.stderr.read().decode()
    p.stdout.close(), p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    assert f"to file object {fid}" in err
    wait_quiet(srv)
    d, done = complete_parts(srv, fid)
    assert d["state"] == "open"  # never a closed partial file
    # every part the server acknowledged is still complete
    assert {r["index"] for r in ok_puts(srv, 0, fid)} <= done
    _rerun_and_check(srv, src, sha, fid, done)


def test_server_kill9_mid_200mb_upload_restart_then_rerun_sends_only_missing_parts(make_server,
                                                                                     big_source):
    srv = make_server()
    src, sha = big_source
    p, fid, _ = _first_run_until_parts(srv, src, 8)
    srv.kill()
    acked = {r["index"] for r in ok_puts(srv, 0, fid)}
    # ua meets a dead server: it must fail the file (not report success), exit 1
    out, err = p.communicate(timeout=90)
    assert p.returncode == 1, err.decode()[-3000:]
    assert out.decode() == "failed\n"
    srv.restart()
    d, done = complete_parts(srv, fid)
    assert d["state"] == "open"
    assert acked <= done  # kill -9 lost no part the server had acknowledged
    _rerun_and_check(srv, src, sha, fid, done)


def test_second_identical_run_uploads_nothing(ua_server, tmp_path):
    srv = ua_server
    d = tmp_path / "run"
    d.mkdir()
    srcs = []
    for i in range(40):
        f = d / f"s{i:03d}.txt"
        f.write_bytes(b"sample %d\n" % i * (i + 1))
        srcs.append(f.name)
    first = subprocess.run([sys.executable, "-m", "ua", *srcs], cwd=d, capture_output=True, text=True,
                           env=_clean_env({**srv.env(), **FAST}), timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    ids = first.stdout.splitlines()
    assert len(ids) == 40 and all(ID_RE.match(x) for x in ids)
    mark = len(srv.requests())
    second = subprocess.run([sys.executable, "-m", "ua", *srcs], cwd=d, capture_output=True, text=True,
                            env=_clean_env({**srv.env(), **FAST}), timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout == first.stdout
    routes = [r["route"] for r in srv.requests()[mark:]]
    assert "/file/new" not in routes and "PUT /upload" not in routes
    assert not [r for r in routes if r.endswith("/upload") or r.endswith("/close")], routes
    assert second.stderr.count("which is 100% complete. Will not resume uploading it.") == 40, second.stderr[-2000:]


# ----------------------------------------------------------------------------- changed during upload
def test_file_changed_during_upload_fails_clearly_and_others_are_unharmed(ua_server, tmp_path):
    srv = ua_server
    rng = random.Random(7)
    grown, rewritten, ok = tmp_path / "grown.bin", tmp_path / "rewritten.bin", tmp_path / "ok.txt"
    grown.write_bytes(rng.randbytes(10 * MiB))
    rewritten.write_bytes(rng.randbytes(10 * MiB))
    ok.write_bytes(b"fine\n" * 100)
    since = len(srv.requests())
    # The proxy holds every part-2 PUT for 2 s, so neither big file can finish before the
    # change below: deterministic, no timing race.
    from proxy import FaultProxy, RequestFault

    proxy = FaultProxy(srv.host, srv.port).start()
    proxy.set(faults=[RequestFault("delay", method="PUT", path_re=r"/upload/file-\w+/2\?", seconds=2.0)])
    try:
        p = ua_popen(srv, "--do-not-compress", "-s", "5M", "-u", "3", "--apiserver-host", proxy.host,
                     "--apiserver-port", proxy.port, ok, grown, rewritten)
        # once part 1 of each big file is stored (both uploads under way), change both on disk
        wait_for(lambda: len({r["file"] for r in ok_puts(srv, since) if r["index"] == 1 and r["bytes"] > 1000})
                 >= 2 or p.poll() is not None, 60, "part 1 of each big file stored")
        assert p.poll() is None
        assert not [r for r in srv.requests()[since:] if r["route"] == "PUT /upload" and r["index"] == 2]
    except BaseException:
        proxy.stop()
        raise
    with open(grown, "ab") as f:
        f.write(b"appended later\n")
    with open(rewritten, "r+b") as f:  # same size, new content and mtime
        f.seek(8 * MiB)
        f.write(b"X" * 4096)
    try:
        out, err = p.communicate(timeout=90)
    finally:
        proxy.stop()
    out, err = out.decode(), err.decode()
    assert p.returncode == 1, err[-3000:]
    lines = out.splitlines()
    assert ID_RE.match(lines[0]) and lines[1:] == ["failed", "failed"], out
    for name in ("grown.bin", "rewritten.bin"):
        msg = [ln for ln in err.splitlines() if name in ln and "changed during upload" in ln]
        assert len(msg) == 1, err[-3000:]
    assert remote_bytes(srv, lines[0]) == ok.read_bytes()  # --do-not-compress
    # neither changed file was closed
    for name in ("grown.bin", "rewritten.bin"):
        objs = files_named(srv, name)
        assert objs and all(api_ok(srv, f"/{o['id']}/describe")["state"] == "open" for o in objs)


# ----------------------------------------------------------------------------- metadata in dx describe
def test_metadata_is_visible_in_dx_describe(run_ua, dx, ua_server, tmp_path):
    (tmp_path / "m.txt").write_text("meta\n")
    p = run_ua("--property", "run=42", "--property", "lane=L001", "--tag", "raw", "--tag", "qc",
               "--type", "FASTQ", "--details", '{"sample": "S1", "n": [1, 2]}', "--visibility", "hidden",
               "-f", "/meta", "--do-not-resume", "m.txt", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    fid = p.stdout.strip()
    q = dx("describe", "--json", "--details", fid)
    assert q.returncode == 0, q.stderr
    d = json.loads(q.stdout)
    assert d["properties"]["run"] == "42" and d["properties"]["lane"] == "L001"
    assert sorted(d["tags"]) == ["qc", "raw"] and d["types"] == ["FASTQ"]
    assert d["details"] == {"sample": "S1", "n": [1, 2]}
    assert d["hidden"] is True and d["folder"] == "/meta" and d["name"] == "m.txt.gz"


# ----------------------------------------------------------------------------- throttle
def test_throttle_subprocess_never_faster_than_the_limit(ua_server, tmp_path):
    srv = ua_server
    since = len(srv.requests())
    src = tmp_path / "t.bin"
    src.write_bytes(random.Random(3).randbytes(6 * MiB))
    rate = 4 * MiB
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "ua", "--do-not-compress", "-s", "5M", "--throttle", "4M",
                        "-u", "4", src], capture_output=True, text=True, env=_clean_env({**srv.env(), **FAST}),
                       timeout=120)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert "Uploads are throttled to 4194304 bytes/sec." in p.stderr
    puts = sorted(r["t"] - r["ms"] / 1000 for r in srv.requests()[since:] if r["route"] == "PUT /upload")
    ends = sorted(r["t"] for r in srv.requests()[since:] if r["route"] == "PUT /upload")
    # the body bytes (6 MiB) flowed over at least (10 MiB − one burst piece) / rate seconds
    assert ends[-1] - puts[0] >= (6 * MiB - 256 * 1024) / rate * 0.9, (puts, ends)
    assert elapsed >= (6 * MiB - 256 * 1024) / rate
    assert remote_bytes(srv, p.stdout.strip()) == src.read_bytes()


# ----------------------------------------------------------------------------- file-count limit
def test_file_limit_and_override(run_ua, ua_server, tmp_path):
    """1001 files: refused (exit 2, one ERROR line, nothing created); with --override-file-limit
    the limit is lifted and the run proceeds to the project check. (Uploading 1001 files here
    would cost ~25 s; the lifted limit is shown by reaching the next check, and
    tests/client/test_sources.py::test_file_limit expands all 1001.)"""
    d = tmp_path / "many"
    d.mkdir()
    for i in range(1001):
        (d / f"f{i:04d}").write_text("")
    before = [r for r in ua_server.requests() if r["route"] == "/file/new"]
    p = run_ua("many", cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("ERROR:")]
    assert len(errors) == 1 and errors[0].startswith("ERROR: The number of files to upload is limited to 1000")
    p = run_ua("--override-file-limit", "-p", "no-such-project-xyz", "many", cwd=tmp_path)
    assert p.returncode == 3 and p.stdout == "", p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("ERROR:")]
    assert len(errors) == 1 and "does not represent a valid project name or ID" in errors[0]
    assert [r for r in ua_server.requests() if r["route"] == "/file/new"] == before


# ----------------------------------------------------------------------------- --verbose
def test_verbose_logs_every_api_call_with_status_duration_and_retries_masked(make_server, tmp_path):
    """Every request the server saw appears in ua's debug log with its route and status and a
    duration; retries are logged; no token or signed-URL query value is printed."""
    # which request a seeded fault hits depends on arrival order; with 20 files the chance that
    # no PUT (or no API call) is hit is below 1e-4, and a file failing 12 tries is ~1e-5
    srv = make_server(min_part_size=1, fault="api-500=0.15,put-500=0.4", fault_seed=11)
    for i in range(20):
        (tmp_path / f"v{i}.txt").write_bytes(b"verbose %d\n" % i * 50)
    p = subprocess.run([sys.executable, "-m", "ua", "-v", "-r", "12", *[f"v{i}.txt" for i in range(20)]],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=_clean_env({**srv.env(), **FAST}))
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    seen = sorted((r["method"], r["route"], r["status"]) for r in srv.requests())
    logged = []
    for m in re.finditer(r"DEBUG ua\.api: (POST|PUT) (\S+)(?: \(\d+ bytes(?:, \w+)?\))? -> (\d{3}) in \d+ ms", out):
        method, target, status = m.group(1), m.group(2), int(m.group(3))
        route = "PUT /upload" if method == "PUT" else target
        logged.append((method, route, status))
    assert len(seen) > 20 and sorted(logged) == seen
    faulted = [r for r in srv.requests() if r["fault"]]
    assert {r["route"] == "PUT /upload" for r in faulted} == {True, False}, "seeded faults did not hit both kinds"
    assert len(re.findall(r"DEBUG \S+: retry ", out)) >= len(faulted)
    assert srv.admin_token not in out
    for m in re.finditer(r"\?(\S+)", out):
        for pair in m.group(1).split("&"):
            if "=" in pair:
                assert pair.split("=", 1)[1].startswith("****"), pair


# ----------------------------------------------------------------------------- concurrent lookups
def test_resume_lookups_and_file_new_run_concurrently(ua_server, tmp_path):
    """32 files behind 50 ms of added latency each way (≥ 0.1 s per request). Preparing a file
    is a resume lookup then /file/new (≥ 0.2 s); one file after another, 32 would take
    ≥ 6.4 s. ua prepares up to 8 at once (within a window of at least 32 files in flight):
    the 32 lookups and /file/new calls, and the 32 PUTs (upload URL + PUT ≥ 0.2 s a file,
    parts of several files in flight together), must arrive within half of the sequential
    time (measured ~1.1 s). Arrival times come from the server's request log."""
    from proxy import FaultProxy

    srv = ua_server
    since = len(srv.requests())
    n, first, per_file = 32, 32, 0.2
    for i in range(n):
        (tmp_path / f"c{i:02d}.txt").write_bytes(b"c %d\n" % i)
    proxy = FaultProxy(srv.host, srv.port, latency=0.05).start()
    try:
        p = subprocess.run([sys.executable, "-m", "ua", "--apiserver-host", proxy.host, "--apiserver-port",
                            str(proxy.port), *[f"c{i:02d}.txt" for i in range(n)]], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, env=_clean_env({**srv.env(), **FAST}))
    finally:
        proxy.stop()
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(p.stdout.splitlines()) == n
    reqs = srv.requests()[since:]
    assert len([r for r in reqs if r["route"] == "/file/new"]) == n
    for route in ("/system/findDataObjects", "/file/new", "PUT /upload"):
        times = sorted(r["t"] for r in reqs if r["route"] == route)[:first]
        if route == "/system/findDataObjects" and len(times) < first:
            continue  # lookups batched into fewer calls: not one after another either
        span = times[-1] - times[0]
        print(f"{route}: first {len(times)} calls over {span:.2f}s")
        assert span < first * per_file / 2, f"{route}: first {first} calls over {span:.2f}s — sequential?"


# ----------------------------------------------------------------------------- stdin, memory bounded
_RSS_WRAPPER = ("import resource, subprocess, sys\n"
                "p = subprocess.run(sys.argv[1:])\n"
                "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
                "sys.exit(p.returncode)\n")


def test_stdin_is_streamed_in_parts_with_bounded_memory(make_server, tmp_path):
    """96 MiB through -i with 5 MiB parts, 2 upload and 1 compress thread: peak RSS of the ua
    process stays far below the input size (slots × chunk × 2 ≈ 30 MiB above the interpreter),
    the bytes arrive intact in 20 parts."""
    srv = make_server()
    size = 96 * MiB
    data = random.Random(5).randbytes(size)
    p = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "ua", "-i", "-n", "piped.bin",
                        "--do-not-compress", "-s", "5M", "-u", "2", "-c", "1", "stdin-label"], input=data,
                       capture_output=True, timeout=120, env=_clean_env({**srv.env(), **FAST}))
    err = p.stderr.decode()
    assert p.returncode == 0, err[-2000:]
    peak = int(re.search(r"MAXRSS_KB (\d+)", err).group(1)) * 1024
    fid = p.stdout.decode().strip()
    d = api_ok(srv, f"/{fid}/describe", {"fields": {"name": True, "parts": True}})
    assert d["name"] == "piped.bin" and len(d["parts"]) == 96 // 5 + 1
    assert remote_sha256(srv, fid) == (size, hashlib.sha256(data).hexdigest())
    print(f"ua peak RSS for {size >> 20} MiB from stdin: {peak / MiB:.0f} MiB")
    assert peak < 110 * MiB, f"peak RSS {peak / MiB:.0f} MiB for a {size >> 20} MiB stream"


# ----------------------------------------------------------------------------- same signature
def test_same_signature_rejected_per_project_and_through_symlinks(run_ua, ua_server, tmp_path):
    """Two local paths of one file to the SAME project are rejected before anything is created
    (also when --recursive meets a symlink to a file it already has); the same file to two
    different projects is allowed, and a re-run resumes each in its own project."""
    srv = ua_server
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("same\n")
    os.symlink(tmp_path / "t" / "a.txt", tmp_path / "t" / "b-link.txt")
    file_news = lambda: len([r for r in srv.requests() if r["route"] == "/file/new"])  # noqa: E731
    before = file_news()
    p = run_ua("--recursive", "t", cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == "", p.stderr
    assert p.stderr.splitlines() == [
        'ERROR: File "t/b-link.txt" and "t/a.txt" have same Signature. You cannot upload two files with same '
        "signature to same project without using '--do-not-resume' flag"]
    assert file_news() == before

    status, body = srv.api("/project/new", {"name": "same-signature-second"})
    assert status == 200
    other = body["id"]
    p = run_ua("-p", srv.project_id, "-p", other, "t/a.txt", "./t/a.txt", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    a, b = p.stdout.splitlines()
    assert [api_ok(srv, f"/{x}/describe")["project"] for x in (a, b)] == [srv.project_id, other]
    assert file_news() == before + 2
    p2 = run_ua("-p", srv.project_id, "-p", other, "t/a.txt", "./t/a.txt", cwd=tmp_path)
    assert p2.returncode == 0 and p2.stdout == p.stdout
    assert file_news() == before + 2


def test_rerun_while_the_first_upload_is_still_closing_reports_it_uploaded(make_server, tmp_path):
    srv = make_server(close_delay=30)
    (tmp_path / "c.txt").write_text("closing\n")
    env = dict(srv.env(), **FAST)
    first = subprocess.run([sys.executable, "-m", "ua", "c.txt"], cwd=tmp_path, capture_output=True, text=True,
                           env=_clean_env(env), timeout=60)
    assert first.returncode == 0, first.stderr
    fid = first.stdout.strip()
    assert api_ok(srv, f"/{fid}/describe")["state"] == "closing"
    mark = len(srv.requests())
    second = subprocess.run([sys.executable, "-m", "ua", "c.txt"], cwd=tmp_path, capture_output=True, text=True,
                            env=_clean_env(env), timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert "Will not resume uploading it." in second.stderr
    routes = [r["route"] for r in srv.requests()[mark:]]
    assert "/file/new" not in routes and "PUT /upload" not in routes
    assert api_ok(srv, f"/{fid}/describe")["state"] == "closing"


# ----------------------------------------------------------------------------- malformed manifests
def test_malformed_manifests_one_error_line_exit_2_nothing_created(run_ua, ua_server, tmp_path):
    pid = ua_server.project_id
    (tmp_path / "a.txt").write_text("a\n")
    cases = [
        ("{oops", "ERROR: An error occurred while trying to parse the manifest file 'm.json': "),
        ("[1, 2]", "ERROR: The manifest file 'm.json' does not contain a valid JSON hash."),
        (json.dumps({pid: {"path": "a.txt"}}),
         f"ERROR: The manifest file 'm.json' does not contain a valid JSON hash value for project '{pid}'."),
        (json.dumps({pid: [{"path": 5, "folder": "/", "name": "x"}]}),
         f"ERROR: The manifest file 'm.json' contains an invalid entry for project '{pid}' at index '0'."),
        (json.dumps({pid: [{"path": "a.txt", "folder": "/", "name": "ok"},
                           {"path": "nope.txt", "folder": "/", "name": "x"}]}),
         "ERROR: Local file 'nope.txt' does not exist"),
    ]
    before = len([r for r in ua_server.requests() if r["route"] == "/file/new"])
    for text, message in cases:
        (tmp_path / "m.json").write_text(text)
        p = run_ua("-m", "m.json", cwd=tmp_path)
        assert p.returncode == 2 and p.stdout == "", (text, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (text, p.stderr)
    assert len([r for r in ua_server.requests() if r["route"] == "/file/new"]) == before
