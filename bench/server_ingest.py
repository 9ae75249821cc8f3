#!/usr/bin/env python3
"""Loopback PUT ingest of ua-server: MB/s and server CPU seconds per GB, MD5 verification on.

Starts ``ua-server serve`` as a subprocess on a fresh data dir, then an aiohttp client keeps
``--concurrency`` part uploads in flight (each: POST /file-x/upload, then PUT of the part with
its content-md5) until ``--total`` bytes were sent. Server CPU comes from psutil (user+system
of the server process, all threads). Every part is hashed, written, fsynced and renamed by the
server exactly as in normal operation.

    python bench/server_ingest.py --total 4GiB --part-size 32MiB --concurrency 4
    python bench/server_ingest.py --data-dir /dev/shm/uabench   # take the disk out of the picture
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Server, parse_si_size as size  # noqa: E402

async def run(url: str, token: str, project: str, total: int, part_size: int, conc: int,
              files: int, chunk: int) -> tuple[float, int]:
    payload = os.urandom(part_size)
    md5 = hashlib.md5(payload).hexdigest()
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    nparts = max(1, total // part_size)
    conn = aiohttp.TCPConnector(limit=conc * 2)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False) as s:
        fids = []
        for i in range(files):
            async with s.post(f"{url}/file/new", headers=auth,
                              data=json.dumps({"project": project, "name": f"bench-{i}.bin"})) as r:
                fids.append((await r.json())["id"])
        queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        for k in range(nparts):
            queue.put_nowait((fids[k % files], k // files + 1))
        sent = 0
        view = memoryview(payload)

        async def pieces():
            for off in range(0, part_size, chunk):
                yield view[off:off + chunk]

        async def worker():
            nonlocal sent
            while True:
                try:
                    fid, index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = {"index": index, "size": part_size, "md5": md5}
                async with s.post(f"{url}/{fid}/upload", headers=auth, data=json.dumps(body)) as r:
                    info = await r.json()
                hdrs = {k: v for k, v in info["headers"].items() if k.lower() != "content-length"}
                if chunk:
                    # Python 3.11's asyncio transport copies a large write into a bytearray and
                    # memmoves it after every send(); feeding <=chunk-sized pieces avoids that.
                    hdrs["Content-Length"] = str(part_size)
                    data = pieces()
                else:
                    data = payload
                async with s.put(info["url"], data=data, headers=hdrs) as r:
                    if r.status != 200:
                        raise SystemExit(f"PUT failed: {r.status} {await r.text()}")
                    await r.read()
                sent += part_size

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        return time.perf_counter() - t0, sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--total", type=size, default=size("4GiB"))
    ap.add_argument("--part-size", type=size, default=size("32MiB"))
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--files", type=int, default=4, help="spread parts over this many files")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="parent dir for the server data dir (default: system temp dir)")
    ap.add_argument("--client-chunk", type=size, default=size("1MiB"),
                    help="client writes the body in pieces of this size (0: one bytes object)")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    a = ap.parse_args()

    parent = a.data_dir
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    srv = Server(str(parent) if parent else None)
    url, token, project, work = srv.url, srv.token, srv.project, srv.work
    try:
        ps = srv.ps
        c0 = ps.cpu_times()
        me0 = psutil.Process().cpu_times()
        wall, sent = asyncio.run(run(url, token, project, a.total, a.part_size, a.concurrency,
                                     a.files, a.client_chunk))
        c1 = ps.cpu_times()
        me1 = psutil.Process().cpu_times()
        client_cpu = (me1.user - me0.user) + (me1.system - me0.system)
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        res = {"bytes": sent, "seconds": round(wall, 3), "MB_per_s": round(sent / wall / 1e6, 1),
               "server_cpu_s": round(cpu, 2), "server_cpu_s_per_GB": round(cpu / (sent / 1e9), 2),
               "server_user_s": round(c1.user - c0.user, 2),
               "server_sys_s": round(c1.system - c0.system, 2),
               "client_cpu_s": round(client_cpu, 2), "part_size": a.part_size, "concurrency": a.concurrency, "cpus": os.cpu_count(),
               "data_dir": str(work)}
        if a.json:
            print(json.dumps(res))
        else:
            print(f"ingest: {sent / 2**20:.0f} MiB in {wall:.2f} s = {res['MB_per_s']} MB/s; "
                  f"server CPU {cpu:.2f} s ({res['server_cpu_s_per_GB']} s/GB; "
                  f"user {res['server_user_s']} sys {res['server_sys_s']}); client CPU {client_cpu:.2f} s; "
                  f"parts {a.part_size / 2**20:.0f} MiB x{a.concurrency} in flight; "
                  f"{os.cpu_count()} CPUs; data dir {work}")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
