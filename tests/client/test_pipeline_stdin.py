"""FileSource.STDIN: size unknown in advance, parts kept until acknowledged."""

from __future__ import annotations

import gzip
import io
import random

import pytest
from pipeline_helpers import Recorder, client, download_all, fastq, single_member

from ua.upload.model import FileSource, FileState, FileTask, UploadSettings
from ua.upload.pipeline import upload_files

KiB = 1024


def stdin_task(srv, name="reads.fastq"):
    return FileTask(label=name, source=FileSource.STDIN, project=srv.project_id, folder="/in",
                    name=name)


class Trickle(io.RawIOBase):
    """A pipe-like stream: short reads of random sizes."""

    def __init__(self, data: bytes, seed: int = 0):
        self.data = memoryview(data)
        self.pos = 0
        self.rnd = random.Random(seed)

    def readable(self):
        return True

    def read(self, n=-1):
        if self.pos >= len(self.data):
            return b""
        k = min(n if n > 0 else len(self.data), self.rnd.randint(1, 40000))
        out = bytes(self.data[self.pos:self.pos + k])
        self.pos += len(out)
        return out


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from livesrv import ServerHandle

    h = ServerHandle(tmp_path_factory.mktemp("uasrv") / "data",
                     {"min_part_size": 64 * KiB, "fault": "put-500=0.15,put-reset=0.05",
                      "fault_seed": 3}).start()
    yield h
    h.stop()


async def test_stdin_compressed_multipart_with_faults(srv):
    data = fastq(5000, seed=7)  # ~1.2 MB → ~19 parts of 64 KiB raw
    rec = Recorder()
    async with client(srv) as api:
        (res,) = await upload_files(api, [stdin_task(srv)],
                                    UploadSettings(chunk_size=64 * KiB, tries=8),
                                    rec, stdin=Trickle(data))
        assert res.state is FileState.UPLOADED, res.error
        (blob,) = await download_all(api, [res.file_id])
    assert res.remote_name == "reads.fastq.gz" and res.parts == -(-len(data) // (64 * KiB))
    assert single_member(blob) == data
    assert rec.started == [("reads.fastq", None, res.file_id)]
    assert res.bytes_read == len(data)
    assert res.retries >= 1  # failed PUTs were re-sent from the bytes kept in memory


async def test_stdin_exact_multiple_no_empty_last_part(make_server):
    srv = make_server(min_part_size=64 * KiB, empty_last_part=False)
    data = random.Random(2).randbytes(4 * 64 * KiB)
    async with client(srv) as api:
        (res,) = await upload_files(api, [stdin_task(srv, "raw.bin")],
                                    UploadSettings(chunk_size=64 * KiB, compress=False),
                                    stdin=io.BytesIO(data))
        assert res.state is FileState.UPLOADED, res.error
        desc = await api.file_describe(res.file_id, parts=True)
        (blob,) = await download_all(api, [res.file_id])
    assert sorted(desc["parts"]) == ["1", "2", "3", "4"] and blob == data


async def test_stdin_already_gzipped_is_not_gzipped_again(srv):
    data = gzip.compress(b"already\n" * 40000)
    async with client(srv) as api:
        (res,) = await upload_files(api, [stdin_task(srv, "r.fastq.gz")],
                                    UploadSettings(chunk_size=64 * KiB),
                                    stdin=io.BytesIO(data))
        assert res.state is FileState.UPLOADED, res.error
        (blob,) = await download_all(api, [res.file_id])
    assert res.remote_name == "r.fastq.gz" and blob == data


@pytest.mark.parametrize("compress", [True, False])
async def test_empty_stdin(srv, compress):
    async with client(srv) as api:
        (res,) = await upload_files(api, [stdin_task(srv, "nothing.txt")],
                                    UploadSettings(compress=compress), stdin=io.BytesIO(b""))
        assert res.state is FileState.UPLOADED, res.error
        (blob,) = await download_all(api, [res.file_id])
    if compress:
        assert res.remote_name == "nothing.txt.gz" and single_member(blob) == b""
    else:
        assert res.remote_name == "nothing.txt" and blob == b""


async def test_stop_while_stdin_is_idle_returns_promptly(srv):
    """Ctrl-C while the producer is silent: the run returns CANCELLED at once (the blocked
    read lives in a daemon thread), and the remote file stays open."""
    import asyncio
    import os
    import time

    import threading

    r, w = os.pipe()
    payload = random.Random(3).randbytes(150 * KiB)  # two parts and a bit, then silence
    threading.Thread(target=os.write, args=(w, payload), daemon=True).start()
    stream = open(r, "rb", buffering=0)
    stop = asyncio.Event()

    class StopOnFirstPart(Recorder):
        def on_bytes_read(self, task, raw_bytes):
            super().on_bytes_read(task, raw_bytes)
            stop.set()

    rec = StopOnFirstPart()
    try:
        async with client(srv) as api:
            t0 = time.monotonic()
            (res,) = await asyncio.wait_for(
                upload_files(api, [stdin_task(srv, "live.log")],
                             UploadSettings(chunk_size=64 * KiB, compress=False), rec, stop,
                             stdin=stream), timeout=20)
            assert time.monotonic() - t0 < 10
            assert res.state is FileState.CANCELLED and res.file_id
            desc = await api.file_describe(res.file_id)
        assert desc["state"] == "open"
        assert rec.done and rec.done[-1].state is FileState.CANCELLED
    finally:
        os.close(w)
        stream.close()
