"""Shared helpers for the pipeline tests (in-process ``upload_files`` against a live
``ua-server`` subprocess; the files are downloaded back and compared byte for byte)."""

from __future__ import annotations

import asyncio
import random
import zlib
from collections import Counter
from pathlib import Path

from ua.api import APIConfig, DXClient
from ua.api.retry import RetryPolicy
from ua.upload.model import FileSource, FileTask, NullSubscriber

FAST = RetryPolicy(base_delay=0.01)


def client(server, *, stall_timeout: float | None = None, token: str | None = None) -> DXClient:
    cfg = APIConfig("http", server.host, server.port, token or server.admin_token)
    return DXClient(cfg, connections=16, policy=FAST, stall_timeout=stall_timeout)


def task(server, path: Path, *, name: str | None = None, folder: str = "/t",
         project: str | None = None) -> FileTask:
    return FileTask(label=str(path), source=FileSource.PATH, project=project or server.project_id,
                    folder=folder, name=name or path.name, local_path=str(path))


def fastq(n_reads: int, seed: int = 0) -> bytes:
    """Synthetic FASTQ: random 100 bp reads with binned qualities (fast to generate)."""
    r = random.Random(seed)
    bases = bytes.maketrans(bytes(range(256)), b"ACGT" * 64)
    quals = bytes.maketrans(bytes(range(256)), b"FFFFFFFFFFFF:,,#" * 16)
    out = []
    for i in range(n_reads):
        seq = r.randbytes(100).translate(bases)
        qual = r.randbytes(100).translate(quals)
        out.append(b"@SIM:1:FCX:1:%d:%d 1:N:0:1\n%s\n+\n%s\n" % (i, r.randint(1, 9999), seq, qual))
    return b"".join(out)


def single_member(blob: bytes) -> bytes:
    """Decode exactly one gzip member and insist nothing follows it."""
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(blob) + d.flush()
    assert d.eof and d.unused_data == b"", "not exactly one gzip member"
    return out


async def download_all(api: DXClient, ids: list[str]) -> list[bytes]:
    sem = asyncio.Semaphore(8)

    async def one(fid):
        async with sem:
            return await api.download(fid)

    return await asyncio.gather(*(one(f) for f in ids))


def puts(server, file_id: str) -> Counter:
    """Successful PUTs per part index of one file, from the server's request log."""
    return Counter(r["index"] for r in server.requests()
                   if r["route"] == "PUT /upload" and r["file"] == file_id
                   and 200 <= r["status"] < 300)


class Recorder(NullSubscriber):
    def __init__(self):
        self.messages: list[str] = []
        self.read = 0
        self.sent = 0
        self.retries: list[tuple] = []
        self.done = []
        self.started = []

    def on_file_started(self, task, total_bytes, file_id):
        self.started.append((task.label, total_bytes, file_id))

    def on_file_message(self, task, message):
        self.messages.append(message)

    def on_bytes_read(self, task, raw_bytes):
        self.read += raw_bytes

    def on_bytes_sent(self, task, wire_bytes):
        self.sent += wire_bytes

    def on_retry(self, task, part_index, attempt, reason):
        self.retries.append((task.label, part_index, attempt, reason))

    def on_file_done(self, result):
        self.done.append(result)
