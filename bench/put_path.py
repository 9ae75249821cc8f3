#!/usr/bin/env python3
"""Client CPU of PUTting parts as they are on disk: bytes bodies vs FileRange bodies.

Uploads ``--total`` bytes of one local file as ``--part-size`` parts, ``--concurrency`` in
flight, to a fresh local ``ua-server`` (subprocess), through ``DXClient.file_upload`` +
``put_part`` — the calls the pipeline makes for an already-compressed input — once per mode:

* ``bytes``: each part read with ``os.pread`` into a fresh bytes object in a thread (today's
  pipeline), MD5 of those bytes, PUT of the buffer;
* ``filerange``: MD5 through one reused 1 MiB buffer (``range_md5``), PUT of a ``FileRange``
  (sendfile on this plain-HTTP loopback connection);
* ``buffered``: the same FileRange with sendfile turned off (the HTTPS/proxy fallback path,
  here over plain HTTP).

With ``--md5 pre`` every MD5 is computed before the clock starts, so only read + PUT count.
Client CPU is this process's user+system time (all threads, ``getrusage``) during the upload
phase; the server runs in its own process. The source file is read once first so every mode
starts from the page cache.

    python bench/put_path.py --total 2GB --part-size 75MiB --concurrency 8 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import Server, parse_si_size as parse_size  # noqa: E402

from ua.api import APIConfig, DXClient  # noqa: E402
from ua.api.filebody import FileRange, range_md5  # noqa: E402


def cpu() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def make_source(path: Path, total: int) -> None:
    if path.exists() and path.stat().st_size == total:
        return
    with open(path, "wb") as fh:
        left = total
        while left:
            n = min(left, 64 * 2**20)
            fh.write(os.urandom(n))
            left -= n


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(8 * 2**20)
        while fh.readinto(buf):
            pass


async def upload(server: Server, path: Path, total: int, part: int, conc: int, mode: str,
                 pre_md5: bool) -> dict:
    env = server.env()
    token = json.loads(env["DX_SECURITY_CONTEXT"])["auth_token"]
    host, port = env["DX_APISERVER_HOST"], int(env["DX_APISERVER_PORT"])
    cfg = APIConfig("http", host, port, token)
    st = os.stat(path)
    ranges = [(off, min(part, total - off)) for off in range(0, total, part)]
    pool = ThreadPoolExecutor(conc)  # like the pipeline's read / cpu pools
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY)
    md5s: dict[int, str] = {}
    if pre_md5:
        for i, (off, n) in enumerate(ranges, 1):
            md5s[i] = await loop.run_in_executor(pool, range_md5, FileRange.of(path, off, n, st))
    async with DXClient(cfg, connections=conc * 2, sendfile=mode != "buffered") as api:
        fid = await api.file_new(project=server.project, name=f"{mode}.bin", folder="/bench")
        sem = asyncio.Semaphore(conc)

        async def one(i: int, off: int, n: int) -> None:
            async with sem:
                if mode == "bytes":
                    raw = await loop.run_in_executor(pool, os.pread, fd, n, off)
                    md5 = md5s.get(i) or await loop.run_in_executor(
                        pool, lambda: hashlib.md5(raw).hexdigest())
                    body = raw
                else:
                    body = FileRange.of(path, off, n, st)
                    md5 = md5s.get(i) or await loop.run_in_executor(pool, range_md5, body)
                url, headers = await api.file_upload(fid, i, n, md5)
                await api.put_part(url, headers, body)
                del body

        u0, s0, f0 = cpu()
        srv0 = server.cpu()
        t0 = time.monotonic()
        await asyncio.gather(*(one(i, off, n) for i, (off, n) in enumerate(ranges, 1)))
        wall = time.monotonic() - t0
        u1, s1, f1 = cpu()
        srv1 = server.cpu()
        paths = dict(api.transport.put_paths)
        desc = await api.file_describe(fid, {"parts": True})
    os.close(fd)
    pool.shutdown()
    bad = [i for i, (off, n) in enumerate(ranges, 1)
           if desc["parts"].get(str(i), {}).get("state") != "complete"
           or desc["parts"][str(i)]["size"] != n]
    if bad:
        raise SystemExit(f"{mode}: parts not stored: {bad[:5]}")
    gb = total / 1e9
    return {"mode": mode, "md5": "pre" if pre_md5 else "inline", "wall_s": round(wall, 3),
            "MB_s": round(total / 1e6 / wall, 1), "client_user_s": round(u1 - u0, 3),
            "client_sys_s": round(s1 - s0, 3),
            "client_cpu_s_per_GB": round((u1 - u0 + s1 - s0) / gb, 3),
            "minor_faults": f1 - f0, "server_cpu_s_per_GB": round((srv1 - srv0) / gb, 3),
            "put_paths": paths}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--total", type=parse_size, default=parse_size("2GB"))
    ap.add_argument("--part-size", type=parse_size, default=parse_size("75MiB"))
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--modes", default="bytes,filerange,buffered")
    ap.add_argument("--md5", choices=("inline", "pre"), default="inline")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--dir", default=None, help="where the source file and server data go")
    ap.add_argument("--json", default=None, help="write all runs to this JSON file")
    a = ap.parse_args()
    work = Path(a.dir or tempfile.gettempdir())
    src = work / f"ua-put-path-{a.total}.bin"
    make_source(src, a.total)
    runs = []
    try:
        for rep in range(a.repeat):
            for mode in a.modes.split(","):
                warm(src)
                server = Server(str(work))
                try:
                    r = asyncio.run(upload(server, src, a.total, a.part_size, a.concurrency,
                                           mode, a.md5 == "pre"))
                finally:
                    server.stop()
                r["repeat"] = rep
                runs.append(r)
                print(json.dumps(r), flush=True)
    finally:
        if a.dir is None:
            src.unlink(missing_ok=True)
    print("\nmode       client CPU s/GB (median)  MB/s (best)  minor faults (median)")
    for mode in a.modes.split(","):
        rs = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["client_cpu_s_per_GB"])
        med = rs[len(rs) // 2]
        print(f"{mode:10} {med['client_cpu_s_per_GB']:>24} {max(r['MB_s'] for r in rs):>12} "
              f"{med['minor_faults']:>22}")
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
