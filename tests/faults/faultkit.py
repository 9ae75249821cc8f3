"""Shared helpers for the fault, crash and security tiers (tests/faults, tests/crash,
tests/security): test data, running ``ua --json``, byte-exact verification against the server,
request-log accounting.

Importable as ``faultkit`` from any test: pyproject.toml puts tests/faults on pytest's
``pythonpath``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

from isal import igzip

MiB = 1024 * 1024
# The fastest retry delays the client offers (ua/api/retry.py) and a short stall detector
# (ua/api/transport.py) so fault tests take seconds.
FAST_ENV = {"UA_RETRY_BASE_DELAY": "0.001", "UA_STALL_TIMEOUT": "3"}


# ----------------------------------------------------------------------------- data
def fastq_bytes(n: int, seed: int) -> bytes:
    """Realistic, compressible FASTQ of about ``n`` bytes."""
    rng = random.Random(seed)
    out = bytearray()
    i = 0
    qual = b"FFFFFF:FF,FF#FFF:FFFFFFF,FFFF:FFFFFF:F"
    while len(out) < n:
        i += 1
        seq = bytes(rng.choice(b"ACGT") for _ in range(76)) if i % 8 == 0 else \
            bytes(rng.choices(b"ACGTN", weights=[30, 30, 30, 30, 1], k=76))
        out += b"@SIM:1:FCX:1:%d:%d:%d 1:N:0:ATCACG\n" % (i % 7, i, rng.randrange(99999))
        out += seq + b"\n+\n" + (qual * 2)[:76] + b"\n"
    return bytes(out[:n])


@functools.lru_cache(maxsize=4)
def _fastq_block(seed: int) -> bytes:
    return fastq_bytes(256 * 1024, seed)


def fast_fastq_bytes(n: int, seed: int) -> bytes:
    """Cheap FASTQ-like data (a block repeated with per-block and per-seed variation)."""
    rng = random.Random(seed)
    block = _fastq_block(seed % 3)
    out = bytearray()
    k = 0
    while len(out) < n:
        out += block.replace(b"@SIM", b"@S%02d" % (k % 100))
        k += 1
        if k % 3 == 0:
            out += rng.randbytes(64).hex().encode() + b"\n"
    return bytes(out[:n])


def make_batch(d: Path, seed: int, *, prefix: str = "", big: bool = True,
               random_mib: int = 10) -> dict[str, bytes]:
    """A batch of sources: small text, multi-part random (incompressible), multi-part FASTQ
    (compressed by ua), an already gzipped multi-part file (sent as is). Returns
    {local path: content}."""
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files = {
        f"{prefix}small.txt": b"small file %d\n" % seed * 37,
        f"{prefix}empty.dat": b"",
        f"{prefix}reads.fastq": fast_fastq_bytes((11 if big else 6) * MiB + 12345, seed),
    }
    if big:
        files[f"{prefix}random.bin"] = rng.randbytes(random_mib * MiB + 777)
        files[f"{prefix}already.fastq.gz"] = igzip.compress(rng.randbytes(5 * MiB + 4321), 0)
    out = {}
    for name, data in files.items():
        p = d / name
        p.write_bytes(data)
        out[str(p)] = data
    return out


# ----------------------------------------------------------------------------- running ua
def ua_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "ua", *map(str, args)]


def clean_env(extra: dict | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DX_")}
    env.update(extra or {})
    return env


def proxy_args(proxy) -> list[str]:
    return ["--apiserver-host", proxy.host, "--apiserver-port", str(proxy.port)]


def run_ua_json(server, *args, proxy=None, env_extra=None, timeout=120, cwd=None):
    """``ua --json ...``; returns (CompletedProcess, [file objects], summary object)."""
    env = clean_env({**server.env(), **FAST_ENV, **(env_extra or {})})
    cmd = ua_cmd("--json", *(proxy_args(proxy) if proxy else []), *args)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                       stdin=subprocess.DEVNULL)
    objs = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line:
            objs.append(json.loads(line))
    files = [o for o in objs if o.get("type") == "file"]
    summary = next((o for o in objs if o.get("type") == "summary"), None)
    return p, files, summary


def set_faults(server, spec: str) -> None:
    st, res = server.api("/admin/faults", {"spec": spec})
    assert st == 200 and res == {"spec": spec}, (st, res)


# ----------------------------------------------------------------------------- verification
def download(server, fid: str, token: str | None = None) -> bytes:
    st, body = server.api(f"/{fid}/download", {}, token=token)
    assert st == 200, (fid, st, body)
    with urllib.request.urlopen(body["url"], timeout=60) as r:
        return r.read()


def single_member_gunzip(blob: bytes) -> bytes:
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(blob) + d.flush()
    assert d.eof, "gzip member not terminated"
    assert d.unused_data == b"", "more than one gzip member"
    return out


def describe(server, fid: str, **extra) -> dict:
    st, body = server.api(f"/{fid}/describe", {"parts": True, "properties": True, **extra})
    assert st == 200, (fid, st, body)
    return body


def wait_closed(server, fid: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = describe(server, fid)
        if d["state"] == "closed" or time.monotonic() > deadline:
            assert d["state"] == "closed", d
            return d
        time.sleep(0.05)


def verify_uploaded(server, fid: str, source: bytes) -> dict:
    """The file is closed, every part's MD5 matches the stored bytes, and the bytes (gunzipped
    if ua compressed them, as ONE gzip member) equal the source."""
    d = wait_closed(server, fid)
    blob = download(server, fid)
    parts = d.get("parts") or {}
    if parts:
        assert sum(p["size"] for p in parts.values()) == len(blob)
    compressed_by_ua = d["name"].endswith(".gz") and not _is_gzip(source)
    got = single_member_gunzip(blob) if compressed_by_ua else blob
    assert len(got) == len(source) and hashlib.sha256(got).digest() == hashlib.sha256(source).digest(), \
        f"{fid} ({d['name']}): content differs from the source"
    return d


def _is_gzip(b: bytes) -> bool:
    return b[:2] == b"\x1f\x8b"


def verify_results(server, files: list[dict], sources: dict[str, bytes], *, ok_only=True):
    """Every file object of a ``--json`` run matches its source byte for byte."""
    by_path = {os.path.realpath(p): data for p, data in sources.items()}
    for f in files:
        if f["state"] in ("uploaded", "already_uploaded"):
            src = by_path[os.path.realpath(f["path"])]
            verify_uploaded(server, f["id"], src)
        elif ok_only:
            raise AssertionError(f"{f['path']} not uploaded: {f}")


def find_files(server, project: str | None = None, state: str = "any") -> list[dict]:
    st, body = server.api("/system/findDataObjects", {
        "scope": {"project": project or server.project_id, "folder": "/", "recurse": True},
        "state": state, "describe": {"fields": {"name": True, "folder": True, "state": True,
                                                "properties": True}}, "limit": 1000})
    assert st == 200, body
    return body["results"]


def puts_by_part(server, fid: str, ok_only: bool = False) -> dict[int, int]:
    """PUT requests seen per part index of a file (from requests.jsonl)."""
    out: dict[int, int] = {}
    for r in server.requests():
        if r.get("file") == fid and r.get("route") == "PUT /upload":
            if ok_only and r.get("status") != 200:
                continue
            out[r["index"]] = out.get(r["index"], 0) + 1
    return out


def faults_logged(server, since: int = 0) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in server.requests()[since:]:
        if r.get("fault"):
            out[r["fault"]] = out.get(r["fault"], 0) + 1
    return out


def state_snapshot(server) -> dict:
    """Everything a request could change: every row of every table of the server's SQLite DB
    (read-only connection; WAL lets it read while the server runs) and the blob tree (path,
    size). Equal snapshots before and after a request = no state change."""
    import sqlite3

    db = sqlite3.connect(f"file:{server.data_dir / 'meta.db'}?mode=ro", uri=True, timeout=10)
    try:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        out: dict = {t: sorted(map(repr, db.execute(f"SELECT * FROM {t}").fetchall()))
                     for t in tables}
    finally:
        db.close()
    blobs = server.data_dir / "blobs"
    out["#blobs"] = sorted((str(p.relative_to(blobs)), p.stat().st_size)
                           for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else []
    out["#outside"] = sorted(str(p.relative_to(server.data_dir.parent))
                             for p in server.data_dir.parent.rglob("*")
                             if not str(p).startswith(str(server.data_dir))
                             and not p.name.endswith("-server.log"))
    return out


def wait_quiet(server, quiet: float = 0.3, timeout: float = 10.0) -> int:
    """Wait until the request log stops growing (in-flight requests of a killed client have
    been answered or dropped); returns its length."""
    deadline = time.monotonic() + timeout
    n = len(server.requests())
    still = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        m = len(server.requests())
        if m != n:
            n, still = m, time.monotonic()
        elif time.monotonic() - still >= quiet:
            break
    return n


def objects_by_source(server, sources, project: str | None = None) -> dict[str, list[dict]]:
    """{source path: [file objects whose .system-fileSignature names that path]}."""
    out: dict[str, list[dict]] = {os.path.realpath(p): [] for p in sources}
    for r in find_files(server, project):
        sig = (r["describe"].get("properties") or {}).get(".system-fileSignature", "")
        for p in out:
            if sig.endswith(" " + p):
                out[p].append({"id": r["id"], **r["describe"]})
    return out


def complete_parts(server, fid: str) -> dict[int, str]:
    d = describe(server, fid)
    return {int(k): v.get("md5") for k, v in (d.get("parts") or {}).items()
            if v.get("state") == "complete"}


def puts_since(server, since: int) -> dict[tuple[str, int | None], int]:
    out: dict = {}
    for r in server.requests()[since:]:
        if r.get("route") == "PUT /upload":
            key = (r["file"], r["index"])
            out[key] = out.get(key, 0) + 1
    return out


def crash_batch(d: Path, seed: int) -> dict[str, bytes]:
    """The crash tests' batch: small, empty, 2-part FASTQ (compressed by ua), 2-part random."""
    out = make_batch(d, seed, big=False)
    p = d / "random.bin"
    data = random.Random(seed).randbytes(6 * MiB + 999)
    p.write_bytes(data)
    out[str(p)] = data
    return out
