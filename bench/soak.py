#!/usr/bin/env python3
"""Bounded soak: one long ``ua`` run against a local ua-server with ~5 % injected faults,
then proof that nothing was lost or corrupted.

    python bench/soak.py                              # 10 minutes / 20,000 files (defaults)
    python bench/soak.py --duration 120 --files 6000  # a 2-minute run
    python bench/soak.py --duration 30 --files 1500   # smoke

1. Generates ``--files`` deterministic files (mostly small text and FASTQ, some
   incompressible binary, a few multi-part FASTQ and already gzipped files).
2. Starts ``ua-server`` with ``--fault`` rules that break ~``--fault-rate`` of PUTs and of API
   calls (500, 503 + Retry-After, reset mid-body, drop after store, 429), seeded.
3. Runs ONE ``ua --json --recursive -s 5M`` over all of them; samples the RSS of ``ua`` every
   0.5 s (psutil) and the number of closed files (request log). When ``--duration`` expires
   ``ua`` gets SIGINT (its unfinished files must stay open and resumable).
4. Verifies: every file ua reported uploaded is closed and byte-identical (downloaded and,
   if ua compressed it, gunzipped as ONE gzip member); every other source has no object or
   one OPEN object; no source has two objects.
5. Clears the faults, re-runs ``ua`` to finish the rest, and verifies EVERY file.

Reports files/s, MB/s, retries, faults injected, the RSS of ua over time (and whether it
grew), lost and corrupt files. Exit status 0 only if nothing was lost or corrupt and RSS did
not grow. ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import aiohttp
import psutil
from isal import igzip

from common import Server

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
PER_DIR = 500


# ----------------------------------------------------------------------------- data
def _fastq_block(seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    i = 0
    while len(out) < 1 * MiB:
        i += 1
        seq = bytes(rng.choices(b"ACGTN", weights=[30, 30, 30, 30, 1], k=100))
        out += b"@SOAK:%d:%d 1:N:0:ACGT\n" % (i, rng.randrange(10 ** 6)) + seq + b"\n+\n" + \
            bytes(rng.choices(b"F:,#", weights=[20, 5, 2, 1], k=100)) + b"\n"
    return bytes(out)


def content(i: int, seed: int, block: bytes) -> tuple[str, bytes]:
    """(file name, bytes) of file number i: deterministic, so verification regenerates it."""
    rng = random.Random(seed * 1_000_003 + i)
    r = rng.random()
    if r < 0.68:  # tiny text, some empty
        n = rng.choice([0, 1, 17, rng.randrange(2048)])
        return f"f{i:06d}.txt", (b"line %d of file %d\n" % (i, i) * 200)[:n]
    if r < 0.93:  # small FASTQ
        n = rng.randrange(2048, 64 * 1024)
        off = rng.randrange(len(block) - n)
        return f"f{i:06d}.fastq", b"@file%d\n" % i + block[off:off + n]
    if r < 0.975:  # incompressible
        return f"f{i:06d}.bin", rng.randbytes(rng.randrange(64 * 1024, 512 * 1024))
    if r < 0.995:  # already gzipped: sent as is
        raw = block[:rng.randrange(1000, 200_000)] + b"%d" % i
        return f"f{i:06d}.fastq.gz", igzip.compress(raw, 1)
    n = rng.randrange(5 * MiB + 1, 8 * MiB)  # multi-part FASTQ
    reps = block * (n // len(block) + 1)
    return f"f{i:06d}.big.fastq", (b"@file%d\n" % i + reps)[:n]


def generate(src: Path, n: int, seed: int) -> tuple[dict[str, str], int]:
    """Write the files; returns ({realpath: sha256 of content}, total bytes)."""
    block = _fastq_block(seed)
    digests: dict[str, str] = {}
    total = 0
    for i in range(n):
        d = src / f"d{i // PER_DIR:03d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        name, data = content(i, seed, block)
        p = d / name
        p.write_bytes(data)
        digests[os.path.realpath(p)] = hashlib.sha256(data).hexdigest()
        total += len(data)
    return digests, total


# ----------------------------------------------------------------------------- ua run
def run_ua(server: Server, src: Path, duration: float | None, extra_env: dict,
           sample_every: float = 0.5, only: list[str] | None = None) -> dict:
    """One ``ua`` over the whole tree, or (``only``) over these files via a manifest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DX_")}
    env.update(server.env())
    env.update(extra_env)
    cmd = [sys.executable, "-m", "ua", "--json", "--override-file-limit", "-s", "5M", "-r", "8"]
    if only is None:
        cmd += ["--recursive", str(src)]
    else:
        manifest = src.parent / f"manifest-{time.time():.0f}.json"
        manifest.write_text(json.dumps({server.project: [
            {"path": p, "folder": "/" + os.path.relpath(os.path.dirname(p), src.parent),
             "name": os.path.basename(p)} for p in only]}))
        cmd += ["--manifest", str(manifest)]
    out_path = src.parent / f"ua-{time.time():.0f}.out"
    err_path = src.parent / f"ua-{time.time():.0f}.err"
    t0 = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=REPO)
        ps = psutil.Process(proc.pid)
        samples = []  # (seconds, rss MiB, closes so far)
        closes = 0
        interrupted = False
        while proc.poll() is None:
            time.sleep(sample_every)
            for r in server.new_requests():
                if r.get("route", "").endswith("/close") and r.get("status") == 200:
                    closes += 1
            try:
                rss = ps.memory_info().rss / MiB
            except psutil.Error:
                break
            if rss == 0:  # exited (zombie)
                continue
            samples.append((round(time.monotonic() - t0, 2), round(rss, 1), closes))
            if duration is not None and not interrupted and time.monotonic() - t0 >= duration:
                proc.send_signal(signal.SIGINT)
                interrupted = True
        proc.wait()
    seconds = time.monotonic() - t0
    objs = [json.loads(x) for x in out_path.read_text().splitlines() if x.strip()]
    return {"rc": proc.returncode, "seconds": seconds, "interrupted": interrupted,
            "files": [o for o in objs if o.get("type") == "file"],
            "summary": next((o for o in objs if o.get("type") == "summary"), None),
            "samples": samples, "stderr_tail": err_path.read_text(errors="replace")[-2000:]}


# ----------------------------------------------------------------------------- verification
async def _api(session, server, route, body):
    for attempt in range(5):
        async with session.post(server.url + route, json=body, headers={
                "Authorization": f"Bearer {server.token}"}) as r:
            data = await r.json(content_type=None)
            if r.status == 200:
                return data
            if r.status not in (429, 500, 503):
                raise RuntimeError(f"{route}: {r.status} {data}")
        await asyncio.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"{route}: gave up")


async def list_objects(session, server) -> list[dict]:
    out, starting = [], None
    while True:
        body = {"scope": {"project": server.project, "folder": "/", "recurse": True},
                "state": "any", "limit": 1000,
                "describe": {"fields": {"name": True, "state": True, "properties": True,
                                        "parts": True}}}
        if starting:
            body["starting"] = starting
        res = await _api(session, server, "/system/findDataObjects", body)
        out += res["results"]
        starting = res.get("next")
        if not starting:
            return out


def _sig_path(obj: dict) -> str | None:
    sig = (obj["describe"].get("properties") or {}).get(".system-fileSignature")
    return sig.split(" ", 4)[4] if sig and sig.count(" ") >= 4 else None


async def verify(server: Server, digests: dict[str, str], *, must_be_done: bool,
                 reported_ok: set[str], concurrency: int = 16) -> dict:
    """Checks every source: see the module docstring. Returns counts and problems."""
    problems: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        # closing → closed happens in the background: wait for it
        for _ in range(100):
            objs = await list_objects(session, server)
            if not any(o["describe"]["state"] == "closing" for o in objs):
                break
            await asyncio.sleep(0.2)
        by_path: dict[str, list[dict]] = {}
        for o in objs:
            p = _sig_path(o)
            if p is not None:
                by_path.setdefault(p, []).append(o)
        stray = set(by_path) - set(digests)
        if stray:
            problems.append(f"{len(stray)} objects for unknown sources")
        sem = asyncio.Semaphore(concurrency)
        counts = {"closed_ok": 0, "open": 0, "missing": 0, "duplicate": 0, "corrupt": 0,
                  "reported_ok_not_closed": 0}

        async def check(path: str, want: str):
            found = by_path.get(path, [])
            if len(found) > 1:
                counts["duplicate"] += 1
                problems.append(f"duplicate objects for {path}: {[o['id'] for o in found]}")
            if not found:
                counts["missing"] += 1
                if must_be_done or path in reported_ok:
                    problems.append(f"LOST: {path} has no remote object")
                return
            o = found[0]
            state = o["describe"]["state"]
            if state != "closed":
                counts["open"] += 1
                if must_be_done or path in reported_ok:
                    counts["reported_ok_not_closed"] += path in reported_ok
                    problems.append(f"{path}: {o['id']} is {state}")
                return
            async with sem:
                d = await _api(session, server, f"/{o['id']}/download", {})
                async with session.get(d["url"]) as r:
                    blob = await r.read()
            data = blob
            name = o["describe"]["name"]
            if name.endswith(".gz") and not path.endswith(".gz"):
                dec = zlib.decompressobj(wbits=31)
                try:
                    data = dec.decompress(blob) + dec.flush()
                    if not dec.eof or dec.unused_data:
                        raise ValueError("not exactly one gzip member")
                except (zlib.error, ValueError) as exc:
                    counts["corrupt"] += 1
                    problems.append(f"CORRUPT: {path} ({o['id']}): {exc}")
                    return
            if hashlib.sha256(data).hexdigest() != want:
                counts["corrupt"] += 1
                problems.append(f"CORRUPT: {path} ({o['id']}): content differs")
                return
            counts["closed_ok"] += 1

        await asyncio.gather(*(check(p, w) for p, w in digests.items()))
    counts["problems"] = problems[:50]
    counts["problem_count"] = len(problems)
    return counts


# ----------------------------------------------------------------------------- main
def rss_report(samples: list) -> dict:
    if not samples:
        return {}
    rss = [s[1] for s in samples]
    q = max(1, len(rss) // 4)
    first = sorted(rss[:q])[len(rss[:q]) // 2]
    last = sorted(rss[-q:])[len(rss[-q:]) // 2]
    timeline = [samples[min(len(samples) - 1, round(k * (len(samples) - 1) / 10))]
                for k in range(11)]
    growth = (last - first) / first if first else 0.0
    return {"peak_mib": max(rss), "first_quarter_median_mib": first,
            "last_quarter_median_mib": last, "growth": round(growth, 3),
            "grew": last > first * 1.25 + 16, "timeline": timeline}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--files", type=int, default=20000, help="number of files (default 20000)")
    ap.add_argument("--fault-rate", type=float, default=0.05,
                    help="share of PUTs and of API calls answered with a fault (default 0.05)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--retry-base-delay", default="0.01",
                    help="UA_RETRY_BASE_DELAY for ua (default 0.01: 1/100 of production)")
    ap.add_argument("--work-dir", help="where to put files and the server (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args()

    work = Path(a.work_dir or tempfile.mkdtemp(prefix="ua-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src"
    f = a.fault_rate
    put_rules = [("put-500", 0.35), ("put-503", 0.2), ("put-reset", 0.2),
                 ("put-drop-after-store", 0.15), ("put-baddigest", 0.1)]
    api_rules = [("api-500", 0.4), ("api-503", 0.3), ("api-429", 0.3)]
    spec = ",".join(f"{k}={f * w:.4f}" for k, w in put_rules + api_rules)
    print(f"soak: {a.files} files, {a.duration:g} s, faults {spec}, work dir {work}", flush=True)
    t = time.monotonic()
    digests, total = generate(src, a.files, a.seed)
    print(f"generated {len(digests)} files, {total / 1e6:.1f} MB in {time.monotonic() - t:.1f} s",
          flush=True)
    server = Server(str(work), "--fault", spec, "--fault-seed", str(a.seed))
    report: dict = {"files": a.files, "bytes": total, "duration_limit": a.duration,
                    "fault_spec": spec, "command": " ".join(sys.argv)}
    ok = False
    try:
        env = {"UA_RETRY_BASE_DELAY": a.retry_base_delay}
        run1 = run_ua(server, src, a.duration, env)
        files = run1["files"]
        done = [x for x in files if x["state"] in ("uploaded", "already_uploaded")]
        bytes_done = sum(x["bytes_read"] for x in done)
        faults: dict[str, int] = {}
        for r in (json.loads(x) for x in (server.data_dir / "requests.jsonl").read_text().splitlines()
                  if x.strip()):
            if r.get("fault"):
                faults[r["fault"]] = faults.get(r["fault"], 0) + 1
        rss = rss_report(run1["samples"])
        report["run1"] = {
            "rc": run1["rc"], "seconds": round(run1["seconds"], 1),
            "interrupted": run1["interrupted"], "files_done": len(done),
            "files_failed": sum(x["state"] == "failed" for x in files),
            "files_cancelled": sum(x["state"] == "cancelled" for x in files),
            "files_per_s": round(len(done) / run1["seconds"], 1),
            "mb_per_s": round(bytes_done / 1e6 / run1["seconds"], 2),
            "retries": sum(x["retries"] for x in files), "faults_injected": faults,
            "rss": rss}
        if run1["rc"] not in (0, 1, 130) or not files:
            print(run1["stderr_tail"], file=sys.stderr)
        printable = dict(report["run1"])
        printable["rss"] = {k: v for k, v in rss.items() if k != "timeline"}
        print("run 1:", json.dumps(printable), flush=True)
        print("ua RSS over time (s, MiB, files closed):", rss.get("timeline"), flush=True)
        reported_ok = {os.path.realpath(x["path"]) for x in done}
        v1 = asyncio.run(verify(server, digests, must_be_done=False, reported_ok=reported_ok))
        report["verify_after_run1"] = v1
        print("after run 1:", {k: v for k, v in v1.items() if k != "problems"}, flush=True)

        # clear the faults and finish the rest (resume lookups only for unfinished files)
        asyncio.run(_clear_faults(server))
        rest = sorted(set(digests) - reported_ok)
        run2 = run_ua(server, src, None, env, only=rest) if rest else \
            {"rc": 0, "seconds": 0.0, "files": []}
        report["run2"] = {"rc": run2["rc"], "seconds": round(run2["seconds"], 1),
                          "uploaded": sum(x["state"] == "uploaded" for x in run2["files"]),
                          "already_uploaded": sum(x["state"] == "already_uploaded"
                                                  for x in run2["files"])}
        print("completion run:", report["run2"], flush=True)
        v2 = asyncio.run(verify(server, digests, must_be_done=True, reported_ok=set(digests)))
        report["verify_final"] = v2
        lost = v2["missing"] + v2["open"]
        corrupt = v2["corrupt"] + v1["corrupt"]
        report["lost"] = lost
        report["corrupt"] = corrupt
        report["duplicates"] = v1["duplicate"] + v2["duplicate"]
        ok = (lost == 0 and corrupt == 0 and report["duplicates"] == 0
              and v1["problem_count"] == 0 and v2["problem_count"] == 0
              and run2["rc"] == 0 and not rss.get("grew", False))
        report["ok"] = ok
        print(f"FINAL: files={a.files} closed_ok={v2['closed_ok']} lost={lost} corrupt={corrupt} "
              f"duplicates={report['duplicates']} rss_peak={rss.get('peak_mib')} MiB "
              f"rss_growth={rss.get('growth')} -> {'OK' if ok else 'FAILED'}", flush=True)
        for p in (v1["problems"] + v2["problems"])[:20]:
            print("  problem:", p)
    finally:
        server.stop()
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=1))
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


async def _clear_faults(server: Server) -> None:
    async with aiohttp.ClientSession() as s:
        await _api(s, server, "/admin/faults", {"spec": ""})


if __name__ == "__main__":
    sys.exit(main())
