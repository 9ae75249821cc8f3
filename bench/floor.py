#!/usr/bin/env python3
"""The stack's floor: how fast could *any* uploader built on aiohttp go on this machine?

Issue 3 sets two targets relative to ``dx upload``: (a) ≥ 1.5× its MB/s on 2 GB of gzipped
FASTQ, (c) ≥ 5× its files/s on 1,000 files of 100 KiB. This script asks whether the
targets are reachable at all with the project's stack (aiohttp client and server, hashlib
MD5, ISA-L) when the client and the server share the machine's cores, by measuring an
uploader that does *nothing but the protocol's unavoidable work*, in one run next to the
real ``ua`` and ``dx upload``:

``floor`` client (a subprocess, like ua):
  many  per file: POST /file/new, POST /file-x/upload, PUT the part, POST /file-x/close —
        the four requests the DNAnexus protocol needs per file (ua makes 4.2 on average,
        dx 6). Two variants: ``floor-net`` sends bodies compressed and hashed before the
        clock starts (pure HTTP cost); ``floor`` reads, compresses (ISA-L level 1) and MD5s
        each file inside the timed loop (the least a compressing uploader must do).
  gz    per 75 MiB part (ua's default): MD5 of the range in a thread (1 MiB reads),
        POST /upload, PUT with ``sendfile`` (zero copy) — plus /file/new and /close.

``floor`` server (a subprocess): no database, no auth, no disk. JSON routes answer from
constants; a PUT's body is MD5'd (in a 2-thread pool, 1 MiB batches) and dropped. The MD5
stays because the protocol requires it: the client sends it, the storage must check it, and
end-to-end verification compares it.

So ``floor`` bounds ua from above on this machine: ua does all of it plus a real server
(SQLite, fsync'd part files, signed URLs, permission checks) and its own bookkeeping
(resume signature, verification, retries, progress). If floor / dx is below a target, no
implementation on this stack meets that target here — and dx would only get faster (its
requests are sequential, so it waits on every server round trip) if the server were as
cheap as the floor server.

    python bench/floor.py                      # full size (about 4 GB free in --work)
    python bench/floor.py --scale 0.25 --repeat 3
    python bench/floor.py --only many --repeat 5 --json bench/results/floor.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import DX, MiB, Server, git_rev, machine, measure, publish
from compare import best, prepare, run_tool, warm, links, row, check_ids

from ua.options import DEFAULT_CHUNK_SIZE

HERE = Path(__file__).resolve()


# --------------------------------------------------------------------------- floor server
def serve(port_file: str) -> None:
    from aiohttp import web

    pool = ThreadPoolExecutor(2, thread_name_prefix="md5")

    def md5_many(h, chunks):
        for c in chunks:
            h.update(c)

    files: dict[str, dict] = {}  # file ID -> {"name", "project", "parts": {index: {...}}}
    counter = iter(range(1, 1 << 62))
    params = {"minimumPartSize": 5 * MiB, "maximumPartSize": 5 * 1024 * MiB,
              "maximumFileSize": 5 * 1024 ** 4, "maximumNumParts": 10_000,
              "emptyLastPartAllowed": True}

    async def post(request: web.Request) -> web.Response:
        # Just enough of the API for the floor client and for dx upload (which also asks
        # for the project's fileUploadParameters and describes each file before /close).
        body = await request.json() if request.can_read_body else {}
        route = request.match_info["route"]
        obj, _, verb = route.partition("/")
        if route == "file/new":
            fid = f"file-{next(counter):024d}"
            files[fid] = {"name": body.get("name") or fid, "project": body.get("project"),
                          "parts": {}}
            return web.json_response({"id": fid})
        if verb == "upload":
            idx = body.get("index", 1)
            url = f"http://{request.host}/put/{obj}/{idx}"
            hdrs = {"content-length": str(body.get("size", 0))}
            if body.get("md5"):
                hdrs["content-md5"] = base64.b64encode(bytes.fromhex(body["md5"])).decode()
            return web.json_response({"url": url, "expires": 1 << 62, "headers": hdrs})
        if obj.startswith("project-") and verb == "describe":
            return web.json_response({"id": obj, "class": "project", "name": obj,
                                      "level": "ADMINISTER", "fileUploadParameters": params})
        if obj.startswith("file-") and verb == "describe":
            f = files.get(obj, {"name": obj, "project": None, "parts": {}})
            return web.json_response({
                "id": obj, "class": "file", "project": f["project"], "folder": "/",
                "name": f["name"], "state": "open", "hidden": False, "types": [], "tags": [],
                "properties": {}, "details": {}, "media": "", "created": 0, "modified": 0,
                "size": sum(p["size"] for p in f["parts"].values()), "parts": f["parts"],
                "createdBy": {"user": "user-floor"}, "sponsored": False, "links": [],
                "archivalState": "live"})
        return web.json_response({"id": obj})

    async def put(request: web.Request) -> web.Response:
        h = hashlib.md5()
        batch: list[bytes] = []
        size = n = 0
        loop = asyncio.get_running_loop()
        async for chunk in request.content.iter_any():
            batch.append(chunk)
            n += len(chunk)
            if n >= MiB:
                await loop.run_in_executor(pool, md5_many, h, batch)
                size += n
                batch, n = [], 0
        if batch:
            if n > 64 * 1024:
                await loop.run_in_executor(pool, md5_many, h, batch)
            else:
                md5_many(h, batch)
            size += n
        want = request.headers.get("content-md5")
        if want and base64.b64decode(want) != h.digest():
            return web.Response(status=400, text="BadDigest")
        f = files.get(request.match_info["file"])
        if f is not None:
            f["parts"][request.match_info["index"]] = {"size": size, "md5": h.hexdigest(),
                                                       "state": "complete"}
        return web.Response(headers={"ETag": h.hexdigest()})

    app = web.Application(client_max_size=1 << 40)
    app.router.add_post("/{route:.+}", post)
    app.router.add_put("/put/{file}/{index}", put)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        await site.start()
        Path(port_file).write_text(str(sock.getsockname()[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


class FloorServer:
    def __init__(self, work: Path) -> None:
        self.port_file = work / "floor.port"
        self.proc = subprocess.Popen([sys.executable, str(HERE), "--serve", str(self.port_file)])
        for _ in range(200):
            if self.port_file.exists() and self.port_file.read_text():
                break
            time.sleep(0.05)
        else:
            self.proc.kill()
            raise SystemExit("floor server did not start")
        self.url = f"http://127.0.0.1:{self.port_file.read_text()}"
        import psutil
        self.ps = psutil.Process(self.proc.pid)

    # the parts of common.Server that measure() uses
    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def request_count(self) -> int:
        return 0

    def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --------------------------------------------------------------------------- floor client
def _auth() -> dict[str, str]:
    """Headers for the real ua-server (``floor×ua-server``): DX_SECURITY_CONTEXT's token."""
    ctx = os.environ.get("DX_SECURITY_CONTEXT")
    if not ctx:
        return {}
    return {"Authorization": "Bearer " + json.loads(ctx)["auth_token"]}


def _project() -> str:
    return os.environ.get("DX_PROJECT_CONTEXT_ID", "project-x")


@contextlib.asynccontextmanager
async def _api_session(url: str, concurrency: int):
    """A bare aiohttp session (no proxies from the environment, no cookies) and a ``post``
    that sends one JSON API call and returns the decoded answer."""
    import aiohttp

    auth = {"Content-Type": "application/json", **_auth()}
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency + 4), trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar()) as s:
        async def post(route: str, body: dict) -> dict:
            async with s.post(url + route, data=json.dumps(body).encode(), headers=auth) as r:
                r.raise_for_status()
                return await r.json()

        yield s, post


async def client_many(url: str, paths: list[str], concurrency: int, precompute: bool) -> None:
    from isal import igzip

    def encode(p: str) -> tuple[bytes, str]:
        with open(p, "rb") as fh:
            data = igzip.compress(fh.read(), 1)
        return data, hashlib.md5(data).hexdigest()

    bodies = [encode(p) for p in paths] if precompute else None
    sem = asyncio.Semaphore(concurrency)
    async with _api_session(url, concurrency) as (s, post):
        async def one(i: int, p: str) -> str:
            async with sem:
                if bodies is not None:
                    data, md5 = bodies[i]
                else:  # small: inline, as ua does for parts up to 256 KiB
                    data, md5 = encode(p)
                fid = (await post("/file/new", {"project": _project(), "name": os.path.basename(p),
                                                   "nonce": f"{os.getpid()}-{i}"}))["id"]
                up = await post(f"/{fid}/upload", {"index": 1, "size": len(data), "md5": md5})
                async with s.put(up["url"], data=data, headers=up["headers"]) as r:
                    r.raise_for_status()
                    await r.read()
                await post(f"/{fid}/close", {})
                return fid

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(i, p)) for i, p in enumerate(paths)]
    for t in tasks:
        print(t.result())


async def client_gz(url: str, path: str, concurrency: int, part: int) -> None:
    from ua.api.filebody import FileRange, FileRangePayload, range_md5

    size = os.path.getsize(path)
    pool = ThreadPoolExecutor(2, thread_name_prefix="md5")
    sem = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    st = os.stat(path)
    async with _api_session(url, concurrency) as (s, post):
        fid = (await post("/file/new", {"project": _project(), "name": os.path.basename(path)}))["id"]

        async def one(index: int, off: int, n: int) -> None:
            async with sem:
                rng = FileRange.of(path, off, n, st)
                md5 = await loop.run_in_executor(pool, range_md5, rng)
                up = await post(f"/{fid}/upload", {"index": index, "size": n, "md5": md5})
                fd = rng.open()
                body = FileRangePayload(rng, fd, use_sendfile=True, bump=lambda: None,
                                        pause=lambda: None)
                try:
                    async with s.put(up["url"], data=body, headers=up["headers"],
                                     skip_auto_headers=("Content-Type",)) as r:
                        r.raise_for_status()
                        await r.read()
                finally:
                    body.close_fd()
                if body.path_used != "sendfile":
                    raise SystemExit(f"floor client: part {index} went {body.path_used}")

        async with asyncio.TaskGroup() as tg:
            for i, off in enumerate(range(0, size, part)):
                tg.create_task(one(i + 1, off, min(part, size - off)))
        await post(f"/{fid}/close", {})
    print(fid)
    pool.shutdown()


# --------------------------------------------------------------------------- driver
def floor_cmd(url: str, mode: str, paths: list[Path], concurrency: int, cwd: Path,
              precompute: bool = False) -> list[str]:
    lst = cwd / "paths.txt"
    lst.write_text("\n".join(str(p) for p in paths) + "\n")
    return [sys.executable, str(HERE), "--client", mode, "--url", url, "--paths", str(lst),
            "--concurrency", str(concurrency)] + (["--precompute"] if precompute else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only", default="gz,many")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--url", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--paths", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--precompute", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.serve)
        return 0
    if a.client:
        paths = Path(a.paths).read_text().split()
        if a.client == "many":
            asyncio.run(client_many(a.url, paths, a.concurrency, a.precompute))
        else:
            asyncio.run(client_gz(a.url, paths[0], a.concurrency, DEFAULT_CHUNK_SIZE))
        return 0

    only = set(a.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="ua-floor-", dir=a.work))
    res: dict = {"machine": machine(), "git": git_rev(), "scale": a.scale, "repeat": a.repeat,
                 "argv": sys.argv[1:], "scenarios": {}}
    server = floor = None
    try:
        data = prepare(work, a.scale, only)
        server = Server(str(work))
        floor = FloorServer(work)
        for name in ("gz", "many"):
            if name not in only:
                continue
            srcs = data[name] if name == "many" else [data[name]]
            warm(srcs)
            nbytes = sum(p.stat().st_size for p in srcs)
            variants = ["ua", "dx", "floor", "floor×ua-server", "dx×floor-server"] + (
                ["floor-net", "floor c32"] if name == "many" else [])
            rows: dict[str, list[dict]] = {v: [] for v in variants}
            for k in range(a.repeat):
                for t, v in enumerate(variants):
                    d = work / "runs" / f"{name}-{t}-{k}"
                    paths = [links(s, d, f"t{t}r{k}") for s in srcs]
                    if v in ("ua", "dx"):
                        r = run_tool(v, paths, server, [], d, server.new_project(f"{name}{t}{k}"))
                        check_ids(r, len(paths), f"{name}/{v}")
                    elif v == "floor×ua-server":  # the floor client against the real server
                        env = server.env_in(server.new_project(f"{name}{t}{k}"))
                        r = measure(floor_cmd(server.url, name, paths, 8, d), env, server,
                                    cwd=str(d))
                        check_ids(r, len(paths), f"{name}/{v}")
                    elif v == "dx×floor-server":  # dx when the server costs (almost) nothing
                        env = server.env_in(server.new_project(f"{name}{t}{k}"))
                        env["DX_APISERVER_PORT"] = floor.url.rsplit(":", 1)[1]
                        r = measure(DX + ["upload", "--brief", "--no-progress"] +
                                    [str(p.relative_to(d)) for p in paths], env, floor,
                                    cwd=str(d))
                        check_ids(r, len(paths), f"{name}/{v}")
                    else:
                        conc = 32 if v.endswith("c32") else 8
                        env = {k_: v_ for k_, v_ in os.environ.items() if not k_.startswith("DX_")}
                        r = measure(floor_cmd(floor.url, name, paths, conc, d,
                                              precompute=v == "floor-net"), env, floor,
                                    cwd=str(d))
                    if r.rc != 0:
                        raise SystemExit(f"floor client failed:\n{r.stderr[-2000:]}")
                    rw = row(name, v, r, nbytes, len(paths))
                    rows[v].append(rw)
                    print(f"  {name:5s} {v:10s} run {k}: {rw['wall_s']:7.2f} s "
                          f"{rw['MB_per_s']:7.1f} MB/s {rw['files_per_s']:7.1f} files/s  client "
                          f"{rw['client_cpu_s']:5.2f} s CPU, server {rw['server_cpu_s']:5.2f} s",
                          file=sys.stderr)
                    shutil.rmtree(d, ignore_errors=True)
            res["scenarios"][name] = {"runs": rows, "best": {v: best(rs) for v, rs in rows.items()}}
    finally:
        if floor is not None:
            floor.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    publish(res, report, a.json)
    return 0


def report(res: dict) -> str:
    m = res["machine"]
    out = [f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, aiohttp "
           f"{m['aiohttp']}, dxpy {m['dxpy']}; load {m['loadavg']} at start, {res['load_end']} "
           f"at end; scale {res['scale']}, best of {res['repeat']}; ua {res['git']}; "
           f"{m['utc']} UTC", "",
           "| scenario | uploader | rate | client CPU | server CPU | ÷ dx | target |",
           "|---|---|---:|---:|---:|---:|---|"]
    targets = {"gz": 1.5, "many": 5.0}
    for name, s in res["scenarios"].items():
        b = s["best"]
        unit, key = ("files/s", "files_per_s") if name == "many" else ("MB/s", "MB_per_s")
        per = ("client_cpu_ms_per_file", "server_cpu_ms_per_file", "ms/file") if name == "many" \
            else ("client_cpu_s_per_GB", "server_cpu_s_per_GB", "s/GB")
        for v, r in b.items():
            ratio = r[key] / b["dx"][key]
            out.append(f"| {name} | {v} | {r[key]:.1f} {unit} | {r[per[0]]:.2f} {per[2]} | "
                       f"{r[per[1]]:.2f} {per[2]} | {ratio:.2f}× | "
                       f"{'≥ %.1f×' % targets[name] if v != 'dx' else ''} |")
    out.append("")
    out.append("Like for like (both uploaders against the same server):")
    for name, s in res["scenarios"].items():
        b = s["best"]
        key = "files_per_s" if name == "many" else "MB_per_s"
        pairs = [("ua-server", "ua", "dx"), ("ua-server", "floor×ua-server", "dx"),
                 ("floor server", "floor", "dx×floor-server")]
        runs = s["runs"]
        for srv, a_, d_ in pairs:
            if a_ in b and d_ in b:
                med = statistics.median(x[key] for x in runs[a_]) / \
                    statistics.median(x[key] for x in runs[d_])
                out.append(f"- {name}, {srv}: {a_} ÷ {d_} = {b[a_][key] / b[d_][key]:.2f}× "
                           f"best, {med:.2f}× median (target ≥ {targets[name]:.1f}×)")
    out.append("")
    out.append("floor: the protocol's unavoidable work on aiohttp (no database, no disk, no "
               "auth on the server; no resume, verification or retries on the client); "
               "floor-net: the same with bodies compressed and hashed before the clock starts; "
               "c32: 32 files in flight instead of 8; floor×ua-server: the floor client against the "
               "real ua-server (what any client could reach with this server); dx×floor-server: dx "
               "upload against the floor server (dx when the server costs almost nothing).")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
