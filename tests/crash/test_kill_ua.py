"""SIGKILL of ``ua`` at seeded random points (after k completed PUTs, or after a random delay),
each followed by a re-run that must

* complete every file with bytes identical to the source,
* leave exactly ONE remote object per source (no duplicate, open or closed),
* reuse the interrupted file IDs and PUT only the parts that were not complete at the kill
  (counted per (file, index) in the server's request log),

and the interrupted run itself must never have left a closed partial file: anything closed
right after the kill is byte-identical to its source.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
from faultkit import (
    FAST_ENV,
    clean_env,
    complete_parts,
    crash_batch,
    objects_by_source,
    proxy_args,
    puts_since,
    run_ua_json,
    ua_cmd,
    verify_results,
    verify_uploaded,
    wait_quiet,
)

SEED = 5150
POINTS = 14
_rng = random.Random(SEED)
# (trigger, value): ("puts", k) = kill once k part PUTs have been stored; ("delay", s)
KILL_POINTS = [("puts", _rng.randint(0, 5)) if _rng.random() < 0.6 else
               ("delay", round(_rng.uniform(0.1, 1.4), 2)) for _ in range(POINTS)]
CHUNK = ["-s", "5M"]


def _stored_puts(server, since):
    return sum(1 for r in server.requests()[since:]
               if r.get("route") == "PUT /upload" and r.get("status") == 200)


def _kill_ua_at(server, proxy, sources, trigger, value, since):
    env = clean_env({**server.env(), **FAST_ENV})
    p = subprocess.Popen(ua_cmd("--json", *CHUNK, *proxy_args(proxy), *sources), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        while p.poll() is None:
            if trigger == "delay" and time.monotonic() - t0 >= value:
                break
            if trigger == "puts" and _stored_puts(server, since) >= value:
                break
            if time.monotonic() - t0 > 60:
                raise AssertionError("ua neither finished nor reached the kill point")
            time.sleep(0.005)
        finished_first = p.poll() is not None
        if not finished_first:
            p.send_signal(signal.SIGKILL)
        p.wait(20)
    finally:
        out, err = p.communicate()
    return finished_first, p.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("point", range(POINTS), ids=[f"{t}={v}" for t, v in KILL_POINTS])
def test_sigkill_ua_then_rerun(ua_server, fault_proxy, tmp_path, point):
    srv = ua_server
    trigger, value = KILL_POINTS[point]
    sources = crash_batch(tmp_path / "src", seed=SEED + point)
    # ~10 MB/s: the batch takes about a second, so the kill lands mid-upload
    proxy = fault_proxy(srv, bandwidth=10e6)
    since = len(srv.requests())
    finished_first, rc, out, err = _kill_ua_at(srv, proxy, sources, trigger, value, since)
    assert rc == (0 if finished_first else -signal.SIGKILL), (rc, err[-2000:])
    wait_quiet(srv)

    # right after the kill: no closed partial file, at most one object per source
    before = objects_by_source(srv, sources)
    resumable = {}
    for path, objs in before.items():
        assert len(objs) <= 1, (path, objs)
        for o in objs:
            if o["state"] in ("closing", "closed"):
                verify_uploaded(srv, o["id"], sources_by_real(sources)[path])
            else:
                resumable[o["id"]] = complete_parts(srv, o["id"])
    mark = len(srv.requests())

    proxy.set(bandwidth=None)
    p, files, summary = run_ua_json(srv, *CHUNK, *sources, proxy=proxy)
    assert p.returncode == 0, p.stderr[-3000:]
    verify_results(srv, files, sources)
    after = objects_by_source(srv, sources)
    for path, objs in after.items():
        assert len(objs) == 1, f"{path}: {len(objs)} remote objects after the re-run"
        if before[path]:
            assert objs[0]["id"] == before[path][0]["id"], "the re-run did not resume"
    puts = puts_since(srv, mark)
    for fid, done in resumable.items():
        resent = sorted(i for (f, i), n in puts.items() if f == fid and i in done and n)
        assert not resent, f"{fid}: complete parts {resent} were uploaded again"
    states = sorted(f["state"] for f in files)
    print(f"\nCRASH ua {trigger}={value}: finished_first={finished_first} "
          f"open_after_kill={len(resumable)} parts_kept={sum(map(len, resumable.values()))} "
          f"rerun_states={states}")


def sources_by_real(sources):
    return {os.path.realpath(p): d for p, d in sources.items()}
