#!/usr/bin/env python3
"""ua-server CPU per API request and per small file (loopback, fixed concurrency).

Starts ``ua-server serve --data-dir TMP --host 127.0.0.1 --port 0`` on a fresh data dir, then an
aiohttp client keeps ``--concurrency`` requests in flight through the per-small-file sequence a
good uploader makes, one request kind per phase so each kind's server CPU is measured alone:

  new       POST /file/new {project, folder, name, nonce, parents: true, properties}
  upload    POST /file-x/upload {index: 1, size, md5}
  put       PUT  <url> with the returned headers, --file-size bytes (default 100 KiB)
  close     POST /file-x/close
  file      all four in a row per file (the figure that matters: server CPU ms per file)
  describe  POST /system/describeDataObjects, 100 IDs per call, {parts: true, state: true}
  find      POST /system/findDataObjects {class: file, properties: {".system-fileSignature":
            true}, scope: {project, folder: "/", recurse: true}, visibility: either,
            describe: {fields: {state, name, folder, properties}}, limit: 1000}, following
            ``next`` until the end; ms per call (one page of up to 1,000 files)

Server CPU is user+system of the server process (all threads) from psutil, read before and
after each phase; ``--repeat`` runs every phase that many times on the same server and reports
the median. ``--background N`` first fills a second project with N files carrying the same
property key, so the lookups show whether they scale with the whole database.

    python bench/server_api.py                       # 1,000 files, concurrency 8
    python bench/server_api.py --files 2000 --repeat 3 --json
    python bench/server_api.py --profile /tmp/prof   # py-spy raw profile of the server
    UA_BENCH_SERVER_PYFLAGS="-m cProfile -o /tmp/s.prof" python bench/server_api.py --only file

Large parts (CPU s/GB of the PUT data path): ``bench/server_ingest.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


class Client:
    def __init__(self, srv: Server, session: aiohttp.ClientSession, conc: int):
        self.srv = srv
        self.s = session
        self.conc = conc
        self.auth = {"Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"}

    async def api(self, route: str, body: dict) -> dict:
        async with self.s.post(self.srv.url + route, data=json.dumps(body),
                               headers=self.auth) as r:
            out = await r.json(content_type=None)
            if r.status != 200:
                raise SystemExit(f"{route}: HTTP {r.status} {out}")
            return out

    async def put(self, info: dict, payload: bytes) -> None:
        async with self.s.put(info["url"], data=payload, headers=info["headers"]) as r:
            if r.status != 200:
                raise SystemExit(f"PUT: HTTP {r.status} {await r.text()}")
            await r.read()

    async def pool(self, items: list, fn) -> list:
        """fn(item) for every item, ``conc`` at a time; results in item order."""
        out: list = [None] * len(items)
        it = iter(enumerate(items))

        async def worker():
            for i, x in it:
                out[i] = await fn(x)

        await asyncio.gather(*(worker() for _ in range(self.conc)))
        return out

    # --- the per-file steps --------------------------------------------------------------
    def new_body(self, project: str, i: int, tag: str) -> dict:
        name = f"{tag}-{i:06d}.fastq.gz"
        return {"project": project, "folder": f"/bench/{tag}", "name": name, "parents": True,
                "nonce": uuid.uuid4().hex,
                "properties": {".system-fileSignature": f"102400 1700000000 0 78643200 "
                                                        f"/data/{tag}/{name}",
                               ".ua-layout": "gzip-single-member-v1"}}

    async def new(self, project: str, i: int, tag: str) -> str:
        return (await self.api("/file/new", self.new_body(project, i, tag)))["id"]

    async def upload(self, fid: str, payload: bytes, md5: str) -> dict:
        return await self.api(f"/{fid}/upload", {"index": 1, "size": len(payload), "md5": md5})

    async def close(self, fid: str) -> None:
        await self.api(f"/{fid}/close", {})


async def bench(srv: Server, a) -> dict[str, list[float]]:
    payload = os.urandom(a.file_size)
    md5 = hashlib.md5(payload).hexdigest()
    conn = aiohttp.TCPConnector(limit=a.concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    res: dict[str, list[float]] = {}  # kind -> [server CPU ms per unit, per repeat]
    wall: dict[str, list[float]] = {}
    sysms: dict[str, list[float]] = {}  # the kernel's share of res
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        c = Client(srv, s, a.concurrency)
        project = srv.project

        async def phase(kind: str, n_units: int, coro):
            if a.only and kind not in a.only:
                return await coro
            t0, w0, s0 = srv.cpu(), time.perf_counter(), srv.sys_cpu()
            out = await coro
            t1, w1, s1 = srv.cpu(), time.perf_counter(), srv.sys_cpu()
            res.setdefault(kind, []).append((t1 - t0) * 1000 / n_units)
            sysms.setdefault(kind, []).append((s1 - s0) * 1000 / n_units)
            wall.setdefault(kind, []).append(n_units / (w1 - w0))
            return out

        if a.background:
            other = (await c.api("/project/new", {"name": "background"}))["id"]
            n = a.background
            print(f"filling a second project with {n} files ...", file=sys.stderr)
            fids = await c.pool(list(range(n)), lambda i: c.new(other, i, "bg"))

        # warm-up: imports, caches, connections
        fids = await c.pool(list(range(20)), lambda i: c.new(project, i, "warm"))
        infos = await c.pool(fids, lambda f: c.upload(f, payload, md5))
        await c.pool(infos, lambda info: c.put(info, payload))
        await c.pool(fids, c.close)

        all_fids: list[str] = []
        for rep in range(a.repeat):
            n = a.files
            tag = f"r{rep}"
            fids = await phase("new", n, c.pool(list(range(n)), lambda i: c.new(project, i, tag)))
            infos = await phase("upload", n, c.pool(fids, lambda f: c.upload(f, payload, md5)))
            await phase("put", n, c.pool(infos, lambda info: c.put(info, payload)))
            await phase("close", n, c.pool(fids, c.close))
            all_fids += fids

            async def one_file(i: int) -> str:
                fid = await c.new(project, i, tag + "f")
                info = await c.upload(fid, payload, md5)
                await c.put(info, payload)
                await c.close(fid)
                return fid

            all_fids += await phase("file", n, c.pool(list(range(n)), one_file))

            if a.only and not {"describe100", "find1000", "find_exact"} & set(a.only):
                continue
            # describe in batches of 100, of the open files a resume would check
            batches = [all_fids[i:i + 100] for i in range(0, len(all_fids), 100)]
            opts = {"parts": True, "state": True}

            async def describe(batch):
                out = await c.api("/system/describeDataObjects",
                                  {"objects": [{"id": f, "describe": opts} for f in batch]})
                assert len(out["results"]) == len(batch)

            await phase("describe100", len(batches), c.pool(batches, describe))

            find_body = {"class": "file", "properties": {".system-fileSignature": True},
                         "scope": {"project": project, "folder": "/", "recurse": True},
                         "visibility": "either",
                         "describe": {"fields": {"state": True, "name": True, "folder": True,
                                                 "properties": True}},
                         "limit": 1000}
            pages = [0]

            async def find_all(_):
                body = dict(find_body)
                got = 0
                while True:
                    out = await c.api("/system/findDataObjects", body)
                    got += len(out["results"])
                    pages[0] += 1
                    if not out.get("next"):
                        return got
                    body["starting"] = out["next"]

            pages[0] = 0
            t0, w0 = srv.cpu(), time.perf_counter()
            got = await c.pool(list(range(a.find_calls)), find_all)
            t1 = srv.cpu()
            res.setdefault("find1000", []).append((t1 - t0) * 1000 / pages[0])
            wall.setdefault("find1000", []).append(pages[0] / (time.perf_counter() - w0))
            assert all(g == got[0] for g in got), got

            # one exact-value lookup per file (the per-file resume lookup of a simple client)
            # files r{last}-000000 … of this round's "new" phase: a.files of them
            sample = range(min(a.files, 200))

            async def find_exact(i):
                body = {"class": "file", "properties": {
                            ".system-fileSignature": f"102400 1700000000 0 78643200 "
                                                     f"/data/{tag}/{tag}-{i:06d}.fastq.gz"},
                        "scope": {"project": project, "folder": "/", "recurse": True},
                        "visibility": "either", "describe": {"fields": {"state": True}},
                        "limit": 2}
                out = await c.api("/system/findDataObjects", body)
                assert len(out["results"]) == 1, out

            await phase("find_exact", len(sample),
                        c.pool(list(range(len(sample))), find_exact))
    return res, wall, sysms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000, help="files per phase (default 1000)")
    ap.add_argument("--file-size", type=int, default=100 * 1024)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1, help="run every phase N times, report the median")
    ap.add_argument("--find-calls", type=int, default=20, help="full findDataObjects walks per repeat")
    ap.add_argument("--background", type=int, default=0,
                    help="first fill another project with N files (same property key)")
    ap.add_argument("--data-dir", default=None, help="parent of the server data dir")
    ap.add_argument("--profile", default=None,
                    help="record a py-spy raw profile of the server to this path")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--only", default="", help="comma-separated kinds to measure and run "
                    "(the four steps always run, the lookups only if listed); default all")
    a = ap.parse_args()
    a.only = [k for k in a.only.split(",") if k]

    srv = Server(a.data_dir)
    spy = None
    try:
        if a.profile:
            spy = subprocess.Popen(["py-spy", "record", "-p", str(srv.proc.pid), "-f", "raw",
                                    "-o", a.profile, "-r", "250"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        t0 = time.perf_counter()
        res, wall, sysms = asyncio.run(bench(srv, a))
        total = time.perf_counter() - t0
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        srv.stop()

    med = {k: round(statistics.median(v), 3) for k, v in res.items()}
    rate = {k: round(statistics.median(v), 1) for k, v in wall.items()}
    kern = {k: round(statistics.median(v), 3) for k, v in sysms.items()}
    out = {"server_cpu_ms": med, "server_sys_ms": kern, "per_s": rate, "files": a.files, "file_size": a.file_size,
           "concurrency": a.concurrency, "repeat": a.repeat, "background": a.background,
           "cpus": os.cpu_count(), "load1": round(os.getloadavg()[0], 2),
           "seconds": round(total, 1)}
    if a.json:
        print(json.dumps(out))
        return
    units = {"new": "per call", "upload": "per call", "put": "per PUT", "close": "per call",
             "file": "per file (new+upload+PUT+close)", "describe100": "per call (100 files)",
             "find1000": "per page (<=1000 files)", "find_exact": "per call"}
    print(f"ua-server API cost: {a.files} files x{a.repeat}, {a.file_size} B each, "
          f"concurrency {a.concurrency}, {os.cpu_count()} CPUs, load {out['load1']}")
    print(f"{'kind':<12} {'server CPU ms':>14} {'of it sys':>10} {'req/s':>8}  unit")
    for k in ["new", "upload", "put", "close", "file", "describe100", "find1000", "find_exact"]:
        if k in med:
            print(f"{k:<12} {med[k]:>14.3f} {kern.get(k, 0):>10.3f} {rate[k]:>8.1f}  {units[k]}")


if __name__ == "__main__":
    main()
