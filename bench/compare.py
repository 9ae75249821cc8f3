#!/usr/bin/env python3
"""ua vs ``dx upload`` (dxpy) against one local ua-server, side by side in one run.

Scenarios (sizes scale with ``--scale``):

  gz     2 GB of already-gzipped FASTQ: both tools upload it as is.
  plain  2 GB of plain FASTQ: ua compresses (ISA-L level 1, its default); the machine's
         compression limit is measured in the same run (ISA-L level 1 of the same file on
         all cores, thread pool, 75 MiB chunks, pread + compress, MB/s of input); ``dx
         upload`` of the plain file (it does not compress) is shown for reference.
  many   1,000 files of 100 KiB: one command per tool with every path on the command line.

For each run: wall time, MB/s of input (files/s for ``many``), client CPU seconds per GB
(exact, ``wait4`` rusage), server CPU seconds per GB (psutil, during the run), peak RSS of
the client process tree (psutil, 20 ms samples). Each upload is checked (exit 0, one distinct
file ID per input) and, per scenario and tool, one file is downloaded with ``dx download``
and compared byte for byte (MD5; gunzipped for ua's compressed upload).

    python bench/compare.py                    # full size (needs ~26 GB free in --work)
    python bench/compare.py --scale 0.1        # quick
    python bench/compare.py --only gz,many --repeat 3 --json bench/results/x.json

Targets (issue 3, 2-core machine): gz ua >= 1.5x dx MB/s; plain ua >= 70 % of the limit;
many ua >= 5x dx files/s; ua peak RSS <= its stated memory bound
2 x (upload_threads + compress_threads) x chunk_size (ua/upload/pipeline.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (DX, GB, MB, UA, MiB, Run, Server, check_closed, check_ids, datagen, git_rev,
                    machine, md5_file, measure, verify_roundtrip, publish)

from ua.options import DEFAULT_CHUNK_SIZE, default_compress_threads

UA_UPLOAD_THREADS = 8  # ua's default (ua --help)


# --------------------------------------------------------------------------- data
def make_gz(path: Path, target: int) -> None:
    """Single-member gzip (ISA-L level 1, 2 threads) of tiled synthetic FASTQ, about
    ``target`` bytes compressed."""
    from isal import igzip_threaded, isal_zlib

    block = datagen.fastq_block(8 * MiB, seed=1)
    c = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
    ratio = len(block) / len(c.compress(block) + c.flush())
    raw_target = int(target * ratio)
    with igzip_threaded.open(path, "wb", compresslevel=1, threads=os.cpu_count() or 2) as fh:
        written = 0
        while written < raw_target:
            piece = block[: raw_target - written]
            fh.write(piece)
            written += len(piece)


def prepare(work: Path, scale: float, only: set[str]) -> dict:
    data = {}
    t0 = time.perf_counter()
    if "gz" in only:
        p = work / "reads_gz.fastq.gz"
        make_gz(p, int(2 * GB * scale))
        data["gz"] = p
    if "plain" in only:
        p = work / "reads_plain.fastq"
        datagen.write_fastq(str(p), int(2 * GB * scale), seed=2)
        data["plain"] = p
    if "many" in only:
        d = work / "many"
        n = max(10, round(1000 * scale))
        datagen.write_many(str(d), n, 100 * 1024, seed=3)
        data["many"] = sorted(d.iterdir())
    print(f"# data ready in {time.perf_counter() - t0:.1f} s under {work}", file=sys.stderr)
    return data


def links(src: Path, dest_dir: Path, tag: str) -> Path:
    """A hard link with a fresh name: same page-cache pages, but a new path, so ua's resume
    signature (size, mtime, path) does not find the earlier run's upload."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dst = dest_dir / f"{tag}_{src.name}"
    os.link(src, dst)
    return dst


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(16 * MiB):
                pass


# --------------------------------------------------------------------------- limit
def compression_limit(path: Path, chunk: int = DEFAULT_CHUNK_SIZE, threads: int | None = None,
                      level: int = 1) -> dict:
    """ISA-L level-``level`` raw deflate of every ``chunk`` of ``path`` on ``threads``
    threads (default: all cores): wall MB/s of input (pread + compress, what any compressing
    uploader must at least do) and the compress-only CPU rate per core."""
    from isal import isal_zlib

    threads = threads or os.cpu_count() or 1
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)

    def work(off: int) -> tuple[int, float, int]:
        raw = os.pread(fd, min(chunk, size - off), off)
        t = time.thread_time()
        c = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
        out = len(c.compress(raw)) + len(c.flush(isal_zlib.Z_SYNC_FLUSH))
        return len(raw), time.thread_time() - t, out

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            res = list(pool.map(work, range(0, size, chunk)))
        wall = time.perf_counter() - t0
    finally:
        os.close(fd)
    cpu = sum(r[1] for r in res)
    out = sum(r[2] for r in res)
    return {"threads": threads, "bytes": size, "wall_s": round(wall, 3),
            "MB_per_s": round(size / wall / MB, 1),
            "compress_cpu_s": round(cpu, 3), "MB_per_cpu_s": round(size / cpu / MB, 1),
            "ratio": round(size / out, 3)}


# --------------------------------------------------------------------------- runs
def row(name: str, tool: str, r: Run, nbytes: int, nfiles: int) -> dict:
    gb = nbytes / GB
    return {"scenario": name, "tool": tool, "files": nfiles, "bytes": nbytes,
            "wall_s": round(r.wall, 3), "MB_per_s": round(nbytes / r.wall / MB, 1),
            "files_per_s": round(nfiles / r.wall, 1),
            "client_cpu_s": round(r.cpu, 2), "client_user_s": round(r.cpu_user, 2),
            "client_sys_s": round(r.cpu_sys, 2),
            "client_cpu_s_per_GB": round(r.cpu / gb, 2),
            "server_cpu_s": round(r.server_cpu, 2),
            "busiest_thread_cpu_s_per_GB": round(r.busiest_thread_cpu / gb, 2),
            "server_cpu_s_per_GB": round(r.server_cpu / gb, 2),
            "client_cpu_ms_per_file": round(1000 * r.cpu / nfiles, 2),
            "server_cpu_ms_per_file": round(1000 * r.server_cpu / nfiles, 2),
            "peak_rss_MiB": round(r.peak_rss / MiB, 1), "maxrss_MiB": round(r.maxrss / MiB, 1),
            "requests": r.requests, "rc": r.rc, "cmd": " ".join(r.cmd[1:2] + r.cmd[2:6])}


def run_tool(tool: str, paths: list[Path], server: Server, extra: list[str], cwd: Path,
             project: str) -> Run:
    env = server.env_in(project)
    args = [str(p.relative_to(cwd)) for p in paths]
    if tool == "ua":
        cmd = UA + extra + (["--override-file-limit"] if len(args) > 1000 else []) + args
    else:
        cmd = DX + ["upload", "--brief", "--no-progress"] + extra + args
    return measure(cmd, env, server, cwd=str(cwd))


def scenario(name: str, srcs: list[Path], server: Server, work: Path, repeat: int,
             tools: list[tuple[str, str, list[str]]], verify: str, nbytes: int) -> dict:
    """Runs every (label, tool, extra args) ``repeat`` times, interleaved; returns rows."""
    rows: dict[str, list[dict]] = {label: [] for label, _, _ in tools}
    firsts: dict[str, tuple[str, Path]] = {}
    for k in range(repeat):
        for t, (label, tool, extra) in enumerate(tools):
            d = work / "runs" / f"{name}-t{t}-r{k}"
            paths = [links(s, d, f"t{t}r{k}") for s in srcs]
            project = server.new_project(f"{name}-t{t}-r{k}")  # every run: an empty project
            r = run_tool(tool, paths, server, extra, d, project)
            ids = check_ids(r, len(paths), f"{name}/{label} run {k}")
            check_closed(r, server, ids, f"{name}/{label} run {k}")
            rw = row(name, label, r, nbytes, len(paths))
            rows[label].append(rw)
            firsts.setdefault(label, (ids[0], paths[0]))
            print(f"  {name:5s} {label:10s} run {k}: {rw['wall_s']:8.2f} s "
                  f"{rw['MB_per_s']:8.1f} MB/s {rw['files_per_s']:8.1f} files/s  client "
                  f"{rw['client_cpu_s']:6.2f} s CPU, server {rw['server_cpu_s']:6.2f} s CPU, "
                  f"peak RSS {rw['peak_rss_MiB']:7.1f} MiB, {rw['requests']} requests",
                  file=sys.stderr)
            shutil.rmtree(d, ignore_errors=True)  # links only; the source stays
    checks = []
    if verify != "none":
        for label, tool, _ in tools:
            if verify == "ua" and tool != "ua":
                continue
            fid, path = firsts[label]
            src = srcs[0]
            extra = next(e for lb, _, e in tools if lb == label)
            gunzip = tool == "ua" and name in ("plain", "many") and \
                "--do-not-compress" not in extra
            t0 = time.perf_counter()
            checks.append(verify_roundtrip(fid, src, server.env(), gunzip=gunzip,
                                           local_md5=_md5_cache(src)))
            print(f"  verified {label}: {checks[-1]} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr)
    return {"runs": rows, "verified": checks}


_MD5: dict[Path, str] = {}


def _md5_cache(p: Path) -> str:
    if p not in _MD5:
        _MD5[p] = md5_file(p)
    return _MD5[p]


def best(rows: list[dict]) -> dict:
    """Fastest run's wall numbers; CPU and RSS as the median / max over the runs."""
    b = dict(min(rows, key=lambda r: r["wall_s"]))
    for key in ("client_cpu_s_per_GB", "server_cpu_s_per_GB", "client_cpu_ms_per_file",
                "server_cpu_ms_per_file", "busiest_thread_cpu_s_per_GB"):
        b[key] = round(statistics.median(r[key] for r in rows), 2)
    b["peak_rss_MiB"] = max(r["peak_rss_MiB"] for r in rows)
    b["n"] = len(rows)
    b["walls"] = [r["wall_s"] for r in rows]
    return b


# --------------------------------------------------------------------------- report
def report(res: dict) -> str:
    bound = res["rss_bound_MiB"]
    lines = []
    m = res["machine"]
    lines.append(f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_GiB']} GiB, Python "
                 f"{m['python']}, isal {m['isal']}, aiohttp {m['aiohttp']}, dxpy {m['dxpy']}; "
                 f"load {m['loadavg']} at start, {res['load_end']} at end; scale "
                 f"{res['scale']}, repeat {res['repeat']}; ua {res['git']}; {m['utc']} UTC")
    lines.append("")
    lines.append("| scenario | tool | input | wall s | MB/s | files/s | client CPU s/GB | "
                 "server CPU s/GB | CPU ceiling | client peak RSS MiB | target | result |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    ncpu = m["nproc"] or 1
    sc = res["scenarios"]

    def fmt(name: str, label: str, target: str = "", verdict: str = "") -> None:
        b = sc[name]["best"][label]
        inp = f"{b['bytes'] / MB:,.0f} MB" if name != "many" else \
            f"{b['files']} × {b['bytes'] / b['files'] / 1024:.0f} KiB"
        cpu_gb = b["client_cpu_s_per_GB"] + b["server_cpu_s_per_GB"]
        if name == "many":
            ceil = f"{ncpu * 1000 / (b['client_cpu_ms_per_file'] + b['server_cpu_ms_per_file']):.0f} files/s"
        else:
            ceil = f"{ncpu * 1000 / cpu_gb:.0f} MB/s"
        lines.append(f"| {name} | {label} | {inp} | {b['wall_s']:.2f} | {b['MB_per_s']:.1f} | "
                     f"{b['files_per_s']:.1f} | {b['client_cpu_s_per_GB']:.2f} | "
                     f"{b['server_cpu_s_per_GB']:.2f} | {ceil} | {b['peak_rss_MiB']:.0f} | "
                     f"{target} | {verdict} |")

    verdicts = []
    if "gz" in sc:
        ua, dx = sc["gz"]["best"]["ua"], sc["gz"]["best"]["dx"]
        ratio = ua["MB_per_s"] / dx["MB_per_s"]
        ok = ratio >= 1.5
        verdicts.append(("gz: ua/dx MB/s", f"{ratio:.2f}×", "≥ 1.5×", ok))
        fmt("gz", "ua", "ua ≥ 1.5× dx", f"{ratio:.2f}× {'met' if ok else 'MISSED'}")
        fmt("gz", "dx")
    if "plain" in sc:
        lim = res["compression_limit"]
        ua = sc["plain"]["best"]["ua"]
        frac = ua["MB_per_s"] / lim["MB_per_s"]
        ok = frac >= 0.70
        verdicts.append(("plain: ua / compression limit (measured wall)", f"{100 * frac:.0f} %",
                         "≥ 70 %", ok))
        cpu_lim = (m["nproc"] or 1) * lim["MB_per_cpu_s"]
        verdicts.append((f"plain: ua / CPU-rate limit ({m['nproc']} × {lim['MB_per_cpu_s']:.0f} "
                         "MB/s per core)", f"{100 * ua['MB_per_s'] / cpu_lim:.0f} %", "≥ 70 %",
                         ua["MB_per_s"] / cpu_lim >= 0.70))
        for label, b in sc["plain"]["best"].items():
            if label.startswith("ua "):
                f2 = b["MB_per_s"] / lim["MB_per_s"]
                verdicts.append((f"plain: {label} / compression limit (measured wall)",
                                 f"{100 * f2:.0f} %", "≥ 70 %", f2 >= 0.70))
        fmt("plain", "ua", "≥ 70 % of limit", f"{100 * frac:.0f} % {'met' if ok else 'MISSED'}")
        for label in sc["plain"]["best"]:
            if label != "ua":
                fmt("plain", label, "(reference)")
        lines.append(f"| plain | ISA-L L1 limit ({lim['threads']} threads) | "
                     f"{lim['bytes'] / MB:,.0f} MB | {lim['wall_s']:.2f} | {lim['MB_per_s']:.1f} "
                     f"| | {1e9 / MB / lim['MB_per_cpu_s']:.2f} (compress only) | | "
                     f"{ncpu * lim['MB_per_cpu_s']:.0f} MB/s | | | |")
    if "many" in sc:
        ua, dx = sc["many"]["best"]["ua"], sc["many"]["best"]["dx"]
        ratio = ua["files_per_s"] / dx["files_per_s"]
        ok = ratio >= 5
        verdicts.append(("many: ua/dx files/s", f"{ratio:.2f}×", "≥ 5×", ok))
        fmt("many", "ua", "ua ≥ 5× dx", f"{ratio:.2f}× {'met' if ok else 'MISSED'}")
        fmt("many", "dx")
    peak = max((b["peak_rss_MiB"] for s in sc.values() for lb, b in s["best"].items()
                if lb == "ua"), default=0)
    ok = peak <= bound
    verdicts.append(("ua peak RSS vs bound", f"{peak:.0f} MiB", f"≤ {bound:.0f} MiB", ok))
    lines.append("")
    lines.append(f"ua memory bound (pipeline.py): 2 × (upload_threads {res['ua_upload_threads']} "
                 f"+ compress_threads {res['ua_compress_threads']}) × chunk "
                 f"{res['ua_chunk_MiB']:.0f} MiB = **{bound:.0f} MiB**; measured ua peak RSS "
                 f"(process tree) **{peak:.0f} MiB** → {'met' if ok else 'MISSED'}")
    for name, s_ in sc.items():
        for label, b in s_["best"].items():
            if label.startswith("ua "):
                opts = label.split()[1:]
                c = res["ua_compress_threads"]
                for i, o in enumerate(opts[:-1]):
                    if o in ("-c", "--compress-threads"):
                        c = int(opts[i + 1])
                bnd = 2 * (res["ua_upload_threads"] + c) * res["ua_chunk_MiB"]
                okb = b["peak_rss_MiB"] <= bnd
                verdicts.append((f"{name}: {label} peak RSS vs its bound", f"{b['peak_rss_MiB']:.0f} MiB",
                                 f"≤ {bnd:.0f} MiB", okb))
    for name in ("gz", "plain"):
        for label, b in sc.get(name, {}).get("best", {}).items():
            if b.get("busiest_thread_cpu_s_per_GB"):
                t = b["busiest_thread_cpu_s_per_GB"]
                cpu_gb = b["client_cpu_s_per_GB"] + b["server_cpu_s_per_GB"]
                lines.append(f"{name}/{label}: busiest client thread {t:.2f} CPU-s/GB → at most "
                             f"{1000 / t:.0f} MB/s from that thread; idle-machine bound "
                             f"min(that, CPU ceiling) = {min(1000 / t, ncpu * 1000 / cpu_gb):.0f} MB/s")
    if "many" in sc:
        for label in ("ua", "dx"):
            b = sc["many"]["best"][label]
            lines.append(f"many/{label}: client {b['client_cpu_ms_per_file']:.1f} ms CPU/file, "
                         f"server {b['server_cpu_ms_per_file']:.1f} ms CPU/file, "
                         f"{b['requests']} API+PUT requests ({b['requests'] / b['files']:.1f}/file)")
    lines.append(f"CPU ceiling = {ncpu} CPUs / (client + server CPU seconds per unit): the rate "
                 "at which client and server together would use every core of this machine "
                 "(they share it); no amount of concurrency goes beyond it.")
    lines.append("")
    lines.append("| check | measured | target | |")
    lines.append("|---|---:|---:|---|")
    for what, got, target, ok in verdicts:
        lines.append(f"| {what} | {got} | {target} | {'met' if ok else 'MISSED'} |")
    if res.get("verified"):
        lines.append("")
        lines.append("Round trips (dx download, MD5): " + "; ".join(res["verified"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="size/count factor (0.1: quick)")
    ap.add_argument("--only", default="gz,plain,many", help="comma list of gz,plain,many")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool (best wall reported)")
    ap.add_argument("--work", default=None,
                    help="parent dir for data and the server data dir (default: /tmp; "
                         "must be on the disk you want to measure)")
    ap.add_argument("--verify", choices=["all", "ua", "none"], default="all",
                    help="round-trip one file per scenario and tool (all), ua only, or none")
    ap.add_argument("--ua-args", default="", help="extra ua options, e.g. '-c 2'")
    ap.add_argument("--alt", action="append", default=[], metavar="SCENARIO:ARGS",
                    help="also run ua with these options as an extra row in that scenario, "
                         "e.g. 'plain:-c 2' (repeatable)")
    ap.add_argument("--json", default=None, help="write all numbers to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temp data (debugging)")
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    unknown = only - {"gz", "plain", "many"}
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}")

    work = Path(tempfile.mkdtemp(prefix="ua-compare-", dir=a.work))
    res: dict = {"machine": machine(), "git": git_rev(), "scale": a.scale, "repeat": a.repeat,
                 "argv": sys.argv[1:], "scenarios": {}, "verified": []}
    c_threads = default_compress_threads()
    ua_extra = a.ua_args.split()
    for i, opt in enumerate(ua_extra):
        if opt in ("-c", "--compress-threads") and i + 1 < len(ua_extra):
            c_threads = int(ua_extra[i + 1])
    res["ua_upload_threads"] = UA_UPLOAD_THREADS
    res["ua_compress_threads"] = c_threads
    res["ua_chunk_MiB"] = DEFAULT_CHUNK_SIZE / MiB
    res["rss_bound_MiB"] = 2 * (UA_UPLOAD_THREADS + c_threads) * DEFAULT_CHUNK_SIZE / MiB
    server = None
    try:
        data = prepare(work, a.scale, only)
        server = Server(str(work))
        print(f"# ua-server {server.url}, data dir {server.data_dir}", file=sys.stderr)
        alts: dict[str, list[str]] = {}
        for spec in a.alt:
            scen, _, args = spec.partition(":")
            alts.setdefault(scen, []).append(args)
        for name in ("gz", "plain", "many"):
            if name not in only:
                continue
            srcs = data[name] if name == "many" else [data[name]]
            warm(srcs)
            nbytes = sum(p.stat().st_size for p in srcs)
            tools = [("ua", "ua", ua_extra)]
            tools += [(f"ua {x}", "ua", ua_extra + x.split()) for x in alts.get(name, [])]
            tools += [("dx", "dx", [])]
            if name == "plain":
                res["compression_limit"] = compression_limit(srcs[0])
                lim = res["compression_limit"]
                print(f"  plain ISA-L L1 limit: {lim}", file=sys.stderr)
            out = scenario(name, srcs, server, work, a.repeat, tools, a.verify, nbytes)
            if name == "plain":  # the limit once more after the runs: report the better one
                lim2 = compression_limit(srcs[0])
                print(f"  plain ISA-L L1 limit (after): {lim2}", file=sys.stderr)
                res["compression_limit_after"] = lim2
                if lim2["MB_per_s"] > res["compression_limit"]["MB_per_s"]:
                    res["compression_limit"], res["compression_limit_after"] = \
                        lim2, res["compression_limit"]
            res["scenarios"][name] = {"runs": out["runs"],
                                      "best": {k: best(v) for k, v in out["runs"].items()}}
            res["verified"] += out["verified"]
    finally:
        if server is not None:
            server.stop(keep=a.keep)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    publish(res, report, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
