"""Fault matrix: under every fault kind (server-side via ``--fault``/``POST /admin/faults``,
network-side via the FaultProxy) a batch of files — small, empty, multi-part random,
multi-part FASTQ compressed by ua, an already gzipped multi-part file — uploads completely and
byte-identically, and every failed attempt is accounted for as a retry.

A fault that never clears fails only the affected files (exit 1, stdout ``failed``), leaves
them OPEN and resumable, and a re-run after the fault clears completes them under the same
file ID, sending only the parts that were missing.
"""

from __future__ import annotations

import os

import pytest
from faultkit import (
    describe,
    download,
    faults_logged,
    find_files,
    make_batch,
    puts_by_part,
    run_ua_json,
    set_faults,
    single_member_gunzip,
    verify_results,
)
from proxy import RequestFault

CHUNK = ["-s", "5M"]  # the smallest part size ua accepts: multi-part files stay small
TRIES = ["-r", "15"]
FAILING_PUT_FAULTS = {"put-500", "put-503", "put-reset", "put-stall", "put-baddigest",
                      "put-drop-after-store"}


@pytest.fixture(scope="module")
def srv(ua_server):
    """The module's server, restarted with a fault seed: every POST /admin/faults re-seeds,
    so each case draws the same fault sequence."""
    ua_server.restart(fault_seed=20261121)
    yield ua_server
    set_faults(ua_server, "")


@pytest.fixture
def clean_faults(srv):
    yield
    set_faults(srv, "")


def _file_ids(files):
    return {f["id"] for f in files if f["id"]}


def _failed_puts(srv, fids, since):
    """PUTs of these files that did not succeed (a fault answered or dropped them, or the
    client gave up on them)."""
    return [r for r in srv.requests()[since:]
            if r["route"] == "PUT /upload" and r["file"] in fids and r["status"] != 200]


SERVER_CASES = [
    "put-500=0.35",
    "put-503=0.35",
    "put-reset=0.35",
    "put-slow=0.35",
    "put-stall=0.2",
    "put-baddigest=0.35",
    "put-drop-after-store=0.35",
    "api-500=0.15",
    "api-503=0.15",
    "api-429=0.15",
    "put-500=0.1,put-reset=0.1,put-drop-after-store=0.1,put-baddigest=0.1,api-503=0.05,api-500=0.05",
]


@pytest.mark.parametrize("spec", SERVER_CASES, ids=[s.split("=")[0] if s.count("=") == 1 else "mixed"
                                                    for s in SERVER_CASES])
def test_server_fault_batch_completes(srv, clean_faults, tmp_path, spec):
    sources = make_batch(tmp_path / "src", seed=len(spec))
    since = len(srv.requests())
    set_faults(srv, spec)
    # put-slow reads 2 MiB/s: the loopback socket buffers take MBs at once, so the answer
    # comes seconds after the last byte left ua — a production-like stall timeout, not 3 s
    env = {"UA_STALL_TIMEOUT": "30"} if spec.startswith("put-slow") else None
    p, files, summary = run_ua_json(srv, *CHUNK, *TRIES, *sources, env_extra=env, timeout=150)
    set_faults(srv, "")
    assert p.returncode == 0, p.stderr[-3000:]
    assert [f["state"] for f in files] == ["uploaded"] * len(sources), files
    assert summary["ok"] == len(sources) and summary["failed"] == 0
    assert any(f["parts"] >= 2 for f in files)
    verify_results(srv, files, sources)

    logged = faults_logged(srv, since)
    kinds = {item.split("=")[0] for item in spec.split(",")}
    assert set(logged) <= kinds
    assert logged, f"no {spec} fault was injected; the case proves nothing"
    retries = sum(f["retries"] for f in files)
    failed_puts = _failed_puts(srv, _file_ids(files), since)
    # every PUT a fault broke was retried exactly once more, and nothing else was retried.
    # Exception: aiohttp itself re-sends an idempotent PUT once when a reused connection is
    # dropped without an answer, if the body can be replayed (only an empty body can: ua
    # streams the others), and ua never sees that failure.
    silent = [r for r in failed_puts if r["status"] == 0 and r["bytes"] == 0]
    assert len(failed_puts) - len(silent) <= retries <= len(failed_puts), \
        (retries, failed_puts, logged)
    if spec.startswith("put-slow"):
        assert retries == 0  # slow is not broken
    else:
        assert len([r for r in failed_puts if r["fault"]]) >= 1 or not kinds & FAILING_PUT_FAULTS
    # each part was finally stored exactly once more than its failed tries (no stray PUTs)
    for f in files:
        ok_puts = puts_by_part(srv, f["id"], ok_only=True)
        assert set(ok_puts) == set(range(1, f["parts"] + 1)), (f, ok_puts)
    print(f"\nMATRIX server {spec}: files={len(files)} ok={summary['ok']} retries={retries} "
          f"faults={logged}")


PROXY_CASES = {
    "latency-50ms": dict(latency=0.05),
    "bandwidth-40MBps": dict(bandwidth=40e6),
    "stall-puts": dict(faults=[RequestFault("stall", method="PUT", count=3)]),
    "reset-puts-after-3000B": dict(faults=[RequestFault("reset", method="PUT", count=4,
                                                        reset_after=3000)]),
    "reset-api-after-60B": dict(faults=[RequestFault("reset", method="POST", count=5,
                                                     reset_after=60)]),
    "all-at-once": dict(latency=0.02, bandwidth=80e6, faults=[
        RequestFault("stall", method="PUT", count=1),
        RequestFault("reset", method="PUT", count=2, reset_after=70_000),
        RequestFault("reset", method="POST", count=2, reset_after=200)]),
}


@pytest.mark.parametrize("case", list(PROXY_CASES))
def test_network_fault_batch_completes(srv, clean_faults, fault_proxy, tmp_path, case):
    cfg = dict(PROXY_CASES[case])
    faults = cfg.pop("faults", [])
    sources = make_batch(tmp_path / "src", seed=100 + len(case))
    proxy = fault_proxy(srv, **cfg)
    proxy.set(faults=faults)
    since = len(srv.requests())
    p, files, summary = run_ua_json(srv, *CHUNK, *TRIES, *sources, proxy=proxy, timeout=150)
    proxy.clear()
    assert p.returncode == 0, p.stderr[-3000:]
    assert [f["state"] for f in files] == ["uploaded"] * len(sources), files
    verify_results(srv, files, sources)
    # the PUTs really went through the proxy (ua-server builds upload URLs from Host)
    assert proxy.stats.methods.get("PUT", 0) >= sum(f["parts"] for f in files)
    retries = sum(f["retries"] for f in files)
    for f in faults:
        assert f.fired > 0, f"{f} never fired; the case proves nothing"
    # every broken PUT was retried once: a stalled one never reached the server, a reset one
    # reached it in part (logged as a failed PUT), and nothing else was retried
    stalled = sum(f.fired for f in faults if f.method == "PUT" and f.kind == "stall")
    failed_puts = _failed_puts(srv, _file_ids(files), since)
    assert retries == stalled + len(failed_puts), (retries, stalled, failed_puts, faults)
    assert len(failed_puts) >= sum(f.fired for f in faults if f.method == "PUT" and f.kind == "reset")
    assert not faults_logged(srv, since)
    print(f"\nMATRIX proxy {case}: files={len(files)} ok={summary['ok']} retries={retries} "
          f"stalls={proxy.stats.stalls} resets={proxy.stats.resets} "
          f"requests={proxy.stats.requests} seconds={summary['seconds']}")


def _assert_open_resumable(srv, f, source_path):
    d = describe(srv, f["id"])
    assert d["state"] == "open", d
    sig = d["properties"][".system-fileSignature"]
    assert sig.endswith(" " + os.path.realpath(source_path))


def test_permanent_server_fault_fails_only_affected_files_then_resumes(srv, clean_faults,
                                                                      tmp_path):
    good = make_batch(tmp_path / "src", seed=7, big=False)
    bad = tmp_path / "src" / "bad-reads.fastq"
    bad.write_bytes(b"@r\nACGT\n+\nFFFF\n" * 400_000)  # 6.4 MB: two parts
    bad2 = tmp_path / "src" / "bad-small.txt"
    bad2.write_bytes(b"doomed\n")
    args = [*good, bad, bad2]
    set_faults(srv, "put-500=1.0@bad*")
    p, files, summary = run_ua_json(srv, *CHUNK, "-r", "3", *args)
    assert p.returncode == 1, p.stderr[-3000:]
    states = {os.path.basename(f["path"]): f["state"] for f in files}
    assert states == {**{os.path.basename(g): "uploaded" for g in good},
                      "bad-reads.fastq": "failed", "bad-small.txt": "failed"}
    assert summary["failed"] == 2 and summary["exit_code"] == 1
    verify_results(srv, [f for f in files if f["state"] == "uploaded"], good)
    failed = {os.path.basename(f["path"]): f for f in files if f["state"] == "failed"}
    for name, f in failed.items():
        assert f["id"], f  # the remote object exists and is reported for resumption
        assert "500" in (f["error"] or "") or "nternal" in (f["error"] or ""), f
        _assert_open_resumable(srv, f, tmp_path / "src" / name)
        assert f["retries"] >= 2 * 1  # -r 3: 3 attempts per part, 2 retries
    # plain stdout: one line per input file, "failed" for the two
    set_faults(srv, "")
    p2, files2, summary2 = run_ua_json(srv, *CHUNK, "-r", "3", *args)
    assert p2.returncode == 0, p2.stderr[-3000:]
    again = {os.path.basename(f["path"]): f for f in files2}
    for name, f in failed.items():
        assert again[name]["id"] == f["id"] and again[name]["state"] == "uploaded"
    for g in good:
        assert again[os.path.basename(g)]["state"] == "already_uploaded"
    verify_results(srv, files2, {**good, str(bad): bad.read_bytes(), str(bad2): bad2.read_bytes()})
    # no duplicate objects for any source
    sigs = [r["describe"]["properties"].get(".system-fileSignature") for r in find_files(srv)]
    for src in args:
        assert sum(1 for s in sigs if s and s.endswith(" " + os.path.realpath(src))) == 1


def test_permanent_part_fault_resume_sends_only_missing_parts(srv, clean_faults, fault_proxy,
                                                              tmp_path):
    """Part 3 of every file never gets through the network (reset forever): files with at
    least three parts fail and stay open with parts 1-2 complete; after the fault clears a
    re-run sends exactly part 3 (plus nothing else) to the same file IDs."""
    sources = make_batch(tmp_path / "src", seed=33)
    proxy = fault_proxy(srv)
    forever = RequestFault("reset", method="PUT", path_re=r"^/upload/[^/]+/3\?", reset_after=1000)
    proxy.set(faults=[forever])
    p, files, summary = run_ua_json(srv, *CHUNK, "-r", "2", *sources, proxy=proxy)
    assert p.returncode == 1
    affected = [f for f in files if f["parts"] >= 3]
    assert affected and all(f["state"] == "failed" for f in affected), files
    assert all(f["state"] == "uploaded" for f in files if f["parts"] < 3), files
    before = {}
    for f in affected:
        d = describe(srv, f["id"])
        assert d["state"] == "open"
        assert {k: v["state"] for k, v in d["parts"].items()}.get("1") == "complete"
        assert d["parts"]["3"]["state"] != "complete"
        before[f["id"]] = puts_by_part(srv, f["id"])
    proxy.clear()
    p2, files2, _ = run_ua_json(srv, *CHUNK, "-r", "2", *sources, proxy=proxy)
    assert p2.returncode == 0, p2.stderr[-3000:]
    verify_results(srv, files2, sources)
    for f in affected:
        f2 = next(x for x in files2 if x["path"] == f["path"])
        assert f2["id"] == f["id"] and f2["parts_skipped"] == f["parts"] - 1, f2
        after = puts_by_part(srv, f["id"])
        new = {i: after.get(i, 0) - before[f["id"]].get(i, 0) for i in after}
        assert {i: n for i, n in new.items() if n} == {3: 1}, new


def test_compressed_resume_keeps_one_gzip_member(srv, clean_faults, fault_proxy, tmp_path):
    """A FASTQ compressed by ua, interrupted after some parts and finished by a second run,
    is still ONE gzip member whose CRC covers parts sent by both runs."""
    src = tmp_path / "reads.fastq"
    data = make_batch(tmp_path / "x", seed=5)[str(tmp_path / "x" / "reads.fastq")]
    src.write_bytes(data)
    proxy = fault_proxy(srv)
    proxy.set(faults=[RequestFault("reset", method="PUT", path_re=r"^/upload/[^/]+/2\?",
                                   reset_after=500)])
    p, files, _ = run_ua_json(srv, *CHUNK, "-r", "1", src, proxy=proxy)
    assert p.returncode == 1 and files[0]["state"] == "failed"
    proxy.clear()
    p, files, _ = run_ua_json(srv, *CHUNK, src, proxy=proxy)
    assert p.returncode == 0 and files[0]["parts_skipped"] >= 1
    assert single_member_gunzip(download(srv, files[0]["id"])) == data
