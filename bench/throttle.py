#!/usr/bin/env python3
"""Throttle accuracy of ``ua --throttle RATE`` against a local ua-server (issue 4 d).

For each rate, ua uploads ``--files`` plain files (sent as they are, ``--do-not-compress``,
so bytes on the wire = file bytes) sized so the upload takes about ``--seconds`` at the
target rate. The measured rate is taken from the server's request log: the PUT bodies'
bytes divided by the span from the first PUT's start (``t - ms``) to the last PUT's end.
The whole-process rate (bytes / ua wall time, including start-up and API calls) is shown
too. Target: within 10 % of the requested rate (K/M/G are powers of 1024, as in ua).

    python bench/throttle.py                          # 2M and 8M, ~12 s each
    python bench/throttle.py --rates 2M,8M,32M --files 4 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from common import MiB, UA, Server, check_ids, datagen, machine, measure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ua.options import parse_size  # noqa: E402  (the exact parser ua uses)


def one(server: Server, work: Path, rate_text: str, files: int, seconds: float,
        chunk: str | None) -> dict:
    rate = parse_size(rate_text)
    total = int(rate * seconds)
    per = total // files
    d = work / f"thr-{rate_text}"
    d.mkdir()
    block = datagen.fastq_block(min(per, 8 * MiB), seed=7)
    paths = []
    for i in range(files):
        p = d / f"t{i}.fastq"
        with open(p, "wb") as fh:
            n = 0
            while n < per:
                piece = block[: per - n]
                fh.write(piece)
                n += len(piece)
        paths.append(p.name)
    extra = ["--chunk-size", chunk] if chunk else []
    skip = server.request_count()
    r = measure(UA + ["--throttle", rate_text, "--do-not-compress"] + extra + paths,
                server.env(), server, cwd=str(d))
    check_ids(r, files, f"throttle {rate_text}")
    puts = [q for q in server.requests(skip) if q["method"] == "PUT" and q["status"] == 200]
    sent = sum(q["bytes"] for q in puts)
    start = min(q["t"] - q["ms"] / 1000 for q in puts)
    end = max(q["t"] for q in puts)
    span = end - start
    measured = sent / span
    err = measured / rate - 1
    shutil.rmtree(d, ignore_errors=True)
    return {"rate": rate_text, "target_Bps": rate, "files": files, "bytes": sent,
            "puts": len(puts), "put_span_s": round(span, 3), "measured_Bps": round(measured),
            "error_pct": round(100 * err, 2), "wall_s": round(r.wall, 3),
            "wall_Bps": round(sent / r.wall), "wall_error_pct": round(100 * (sent / r.wall / rate - 1), 2),
            "client_cpu_s": round(r.cpu, 2), "ok": abs(err) <= 0.10}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="2M,8M")
    ap.add_argument("--files", type=int, default=1, help="files per run (they share the limit)")
    ap.add_argument("--seconds", type=float, default=12.0, help="target upload duration (>= 10)")
    ap.add_argument("--chunk-size", default=None, help="ua --chunk-size (default: ua's)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ua-throttle-", dir=a.work))
    rows = []
    server = Server(str(work))
    try:
        for rate in a.rates.split(","):
            row = one(server, work, rate.strip(), a.files, a.seconds, a.chunk_size)
            rows.append(row)
            print(f"  {row}", file=sys.stderr)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    m = machine()
    lines = [f"Throttle accuracy ({m['nproc']} CPUs, load {m['loadavg']}, {m['utc']} UTC); "
             f"{a.files} file(s) per run, --do-not-compress",
             "",
             "| --throttle | target MiB/s | bytes sent | PUTs | PUT span s | measured MiB/s | "
             "error | ua wall s | wall-clock MiB/s | within 10 % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['rate']} | {r['target_Bps'] / MiB:.2f} | {r['bytes']:,} | {r['puts']} "
                     f"| {r['put_span_s']:.2f} | {r['measured_Bps'] / MiB:.3f} | "
                     f"{r['error_pct']:+.1f} % | {r['wall_s']:.2f} | {r['wall_Bps'] / MiB:.3f} "
                     f"({r['wall_error_pct']:+.1f} %) | {'met' if r['ok'] else 'MISSED'} |")
    text = "\n".join(lines)
    print(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"machine": m, "rows": rows}, indent=1) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
