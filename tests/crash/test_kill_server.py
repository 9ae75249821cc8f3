"""kill -9 of ``ua-server`` at seeded random points while ``ua`` uploads through the fault
proxy (which keeps a stable address across server restarts). The server comes back after a
random outage; ``ua`` either rides through with its retries or fails some files. Either way:

* every file ``ua`` reported uploaded is closed and byte-identical,
* a file ``ua`` reported failed is not closed (open and resumable, or never created),
* a re-run completes everything byte-identically, with ONE object per source, the same file
  IDs, and no PUT for a part that was already complete.
"""

from __future__ import annotations

import json
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
    describe,
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

SEED = 4242
POINTS = 8
_rng = random.Random(SEED)
# (trigger, outage seconds, does ua retry slowly enough to ride through the outage?)
KILL_POINTS = [(("puts", _rng.randint(1, 5)) if _rng.random() < 0.6 else
                ("delay", round(_rng.uniform(0.2, 1.5), 2)),
                round(_rng.uniform(0.05, 1.0), 2), i % 2 == 0) for i in range(POINTS)]
CHUNK = ["-s", "5M"]
# slower retries than the other fault tests, so ua can ride through a server restart
RIDE_THROUGH = {**FAST_ENV, "UA_RETRY_BASE_DELAY": "0.05"}


@pytest.fixture(scope="module")
def srv(ua_server):
    yield ua_server
    if not ua_server.running:
        ua_server.restart()


def _stored_puts(server, since):
    return sum(1 for r in server.requests()[since:]
               if r.get("route") == "PUT /upload" and r.get("status") == 200)


@pytest.mark.parametrize("point", range(POINTS),
                         ids=[f"{t}={v}-down{d}s-{'ride' if r else 'fail'}"
                              for (t, v), d, r in KILL_POINTS])
def test_kill_server_mid_upload_then_rerun(srv, fault_proxy, tmp_path, point):
    (trigger, value), downtime, ride = KILL_POINTS[point]
    sources = crash_batch(tmp_path / "src", seed=SEED + point)
    by_real = {os.path.realpath(p): d for p, d in sources.items()}
    proxy = fault_proxy(srv, bandwidth=10e6)
    since = len(srv.requests())
    env = clean_env({**srv.env(), **(RIDE_THROUGH if ride else FAST_ENV)})
    p = subprocess.Popen(ua_cmd("--json", *CHUNK, "-r", "10" if ride else "2", *proxy_args(proxy),
                                *sources),
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    t0 = time.monotonic()
    killed = False
    try:
        while p.poll() is None and time.monotonic() - t0 < 60:
            if (trigger == "delay" and time.monotonic() - t0 >= value) or \
                    (trigger == "puts" and _stored_puts(srv, since) >= value):
                srv.kill()
                killed = True
                time.sleep(downtime)
                srv.restart()
                proxy.upstream = (srv.host, srv.port)
                break
            time.sleep(0.005)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        if not srv.running:
            srv.restart()
            proxy.upstream = (srv.host, srv.port)
    out, err = out.decode(), err.decode()
    if p.returncode == 3:  # the outage hit ua's start-up calls: nothing was started
        assert out == "" and "Unable to connect" in err, err[-2000:]
        files = []
    else:
        assert p.returncode in (0, 1), (p.returncode, err[-3000:])
        files = [json.loads(x) for x in out.splitlines() if x.strip()]
        files = [f for f in files if f.get("type") == "file"]
        assert len(files) == len(sources), (out, err[-2000:])
    # what ua claimed is true
    for f in files:
        if f["state"] in ("uploaded", "already_uploaded"):
            verify_uploaded(srv, f["id"], by_real[os.path.realpath(f["path"])])
        else:
            assert f["state"] == "failed", f
            if f["id"]:
                assert describe(srv, f["id"])["state"] == "open", f
    wait_quiet(srv)

    before = objects_by_source(srv, sources)
    resumable = {}
    for path, objs in before.items():
        assert len(objs) <= 1, (path, objs)
        for o in objs:
            if o["state"] == "open":
                resumable[o["id"]] = complete_parts(srv, o["id"])
            else:
                verify_uploaded(srv, o["id"], by_real[path])
    mark = len(srv.requests())
    proxy.set(bandwidth=None)
    p2, files2, _ = run_ua_json(srv, *CHUNK, *sources, proxy=proxy)
    assert p2.returncode == 0, p2.stderr[-3000:]
    verify_results(srv, files2, sources)
    after = objects_by_source(srv, sources)
    for path, objs in after.items():
        assert len(objs) == 1, f"{path}: {len(objs)} remote objects after the re-run"
        if before[path]:
            assert objs[0]["id"] == before[path][0]["id"]
    puts = puts_since(srv, mark)
    for fid, done in resumable.items():
        resent = sorted(i for (f, i), n in puts.items() if f == fid and i in done and n)
        assert not resent, f"{fid}: complete parts {resent} were uploaded again"
    print(f"\nCRASH server {trigger}={value} down={downtime}s ride={ride}: killed={killed} "
          f"first_run={sorted(f['state'] for f in files)} rc={p.returncode} "
          f"open_after={len(resumable)} parts_kept={sum(map(len, resumable.values()))}")
