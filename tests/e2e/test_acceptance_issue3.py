"""Acceptance test for issue 3's end-to-end claim, literally: ONE `ua` subprocess run against a
live `ua-server` uploads FASTQ files (compressed by ua, one of them multi-part), an already
gzipped FASTQ (sent as is), an empty file (never compressed, as the Upload Agent) and 200
small files; every file is downloaded again (server download URL, and `dx download` for the
multi-part ones) and compared byte for byte —
after `gzip -dc` for what ua compressed — and every `.gz` ua produced must be ONE gzip member
that a single-member decoder reads to the end. stdout: one ID per input in input order, exit 0.
See docs/acceptance.md.
"""

from __future__ import annotations

import gzip
import random
import re
import subprocess
import zlib

ID_RE = re.compile(r"^file-[0-9BFGJKPQVXYZbfgjkpqvxyz]{24}$")
MiB = 1024 * 1024
FAST = {"UA_RETRY_BASE_DELAY": "0.001"}


_ACGT = bytes(b"ACGT"[i % 4] for i in range(256))
_QUAL = bytes(b"FFFF:,#F"[i % 8] for i in range(256))


def fastq(n_reads: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = []
    for i in range(n_reads):
        seq = rng.randbytes(100).translate(_ACGT)
        qual = rng.randbytes(100).translate(_QUAL)
        out.append(b"@SEQ%d.%d 1:N:0:ACGT\n%s\n+\n%s\n" % (seed, i, seq, qual))
    return b"".join(out)


def single_member(blob: bytes) -> bytes:
    """Decode with a decoder that stops after the first gzip member; it must reach the end."""
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(blob) + d.flush()
    assert d.eof, "gzip member not terminated"
    assert d.unused_data == b"", f"{len(d.unused_data)} bytes after the first gzip member"
    return out


def gzip_dc(blob: bytes) -> bytes:
    p = subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def download(srv, fid: str) -> bytes:
    import urllib.request

    status, info = srv.api(f"/{fid}/download", {})
    assert status == 200, info
    with urllib.request.urlopen(urllib.request.Request(info["url"], headers=info.get("headers") or {})) as r:
        return r.read()


def test_one_run_fastq_gz_multipart_empty_and_200_small_files(make_server, run_ua, dx, tmp_path):
    # small minimum part size so that ~5 MB chunks of FASTQ (compressing to ~2 MB) stay parts
    srv = make_server(min_part_size=MiB)
    src = tmp_path / "run"
    (src / "small").mkdir(parents=True)
    base = fastq(1000, 1)
    reads = (base * (22 * MiB // len(base) + 1))[: 21 * MiB + 4321]
    assert len(reads) == 21 * MiB + 4321  # 5 input chunks of 5 MiB → 5 compressed parts
    (src / "reads.fastq").write_bytes(reads)
    pre = gzip.compress(fastq(5000, 2) + random.Random(2).randbytes(10 * MiB), 1)
    assert len(pre) > 10 * MiB  # 3 parts as is
    (src / "already.fastq.gz").write_bytes(pre)
    (src / "empty.txt").write_bytes(b"")
    small = {}
    for i in range(200):
        data = fastq(1 + i % 5, 100 + i)
        small[f"s{i:03d}.fastq"] = data
        (src / "small" / f"s{i:03d}.fastq").write_bytes(data)

    p = run_ua("-s", "5M", "--recursive", "-f", "/acc3", "reads.fastq", "already.fastq.gz", "empty.txt",
               "small", env=dict(srv.env(), **FAST), cwd=src, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    ids = p.stdout.splitlines()
    assert len(ids) == 203 and all(ID_RE.match(x) for x in ids), p.stdout[:500]
    assert len(set(ids)) == 203
    assert re.search(r"^203 of 203 files uploaded;", p.stderr, re.M), p.stderr[-500:]

    found = srv.api("/system/findDataObjects", {"scope": {"project": srv.project_id, "folder": "/acc3",
                                                          "recurse": True},
                                                "describe": {"fields": {"name": True, "folder": True,
                                                                        "state": True, "parts": True}}})[1]
    desc = {r["id"]: r["describe"] for r in found["results"]}
    assert set(desc) == set(ids)
    expect = [("reads.fastq.gz", "/acc3"), ("already.fastq.gz", "/acc3"), ("empty.txt", "/acc3")] + \
             [(f"{n}.gz", "/acc3/small") for n in sorted(small)]
    assert [(desc[i]["name"], desc[i]["folder"]) for i in ids] == expect  # stdout in input order

    # the multi-part ones really are multi-part
    assert len(desc[ids[0]]["parts"]) == 5
    assert len(desc[ids[1]]["parts"]) == 3

    blob = download(srv, ids[0])
    assert gzip_dc(blob) == reads
    assert single_member(blob) == reads
    assert download(srv, ids[1]) == pre  # already gzipped: uploaded as is, not gzipped again
    # an empty file is never compressed (as the Upload Agent: upload-agent.md §4.2)
    assert download(srv, ids[2]) == b""
    for fid, name in zip(ids[3:], sorted(small)):
        blob = download(srv, fid)
        assert single_member(blob) == small[name], name
    assert gzip_dc(download(srv, ids[200])) == small["s197.fastq"]

    # and the stock dx client reads the same bytes
    out = tmp_path / "dx-out"
    out.mkdir()
    q = dx("download", ids[0], ids[1], "-o", str(out) + "/", env=srv.env())
    assert q.returncode == 0, q.stderr
    assert gzip_dc((out / "reads.fastq.gz").read_bytes()) == reads
    assert (out / "already.fastq.gz").read_bytes() == pre
    for i in ids:
        assert desc[i]["state"] in ("closing", "closed")


def test_progress_on_a_terminal_draws_tqdm_bars(make_server, tmp_path):
    """--progress with stderr on a pty: an overall bar (bytes, rate and ETA) plus a bar for the
    file in flight, redrawn in place; stdout (a pipe) still gets only the file ID."""
    import os
    import pty
    import sys

    from livesrv import _clean_env

    srv = make_server()
    src = tmp_path / "bars.bin"
    src.write_bytes(random.Random(8).randbytes(10 * MiB))
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "ua", "--progress", "--do-not-compress", "-s", "5M",
                          "--throttle", "5M", src], stdout=subprocess.PIPE, stderr=slave,
                         stdin=subprocess.DEVNULL, env=_clean_env({**srv.env(), **FAST}))
    os.close(slave)
    tty = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        tty += chunk
    os.close(master)
    out = p.stdout.read().decode()
    p.stdout.close()
    assert p.wait(30) == 0, tty[-2000:]
    assert ID_RE.match(out.strip()) and out.count("\n") == 1
    text = tty.decode("utf-8", "replace")
    overall = re.findall(r"(\d)/1 files: +(\d+)%\|[^|]*\| *[\d.]+M/10\.0M \[\d\d:\d\d<\d\d:\d\d, +[\d.]+MB/s\]",
                         text)
    assert len(overall) >= 3 and ("1", "100") in overall, text[-2000:]
    assert re.search(r"bars\.bin: +\d+%\|", text), [x for x in text.split("\r") if "bars" in x][:3]
    assert "\r" in text.replace("\r\n", "")  # redrawn in place
    assert "was uploaded successfully" in text and "1 of 1 file uploaded" in text
