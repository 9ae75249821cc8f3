"""upload_files() end to end against a live ua-server: content, layout, parts, limits."""

from __future__ import annotations

import gzip
import hashlib
import time

import pytest
from isal import igzip
from pipeline_helpers import Recorder, client, download_all, fastq, puts, single_member, task

from ua.upload.model import FileSource, FileState, FileTask, UploadSettings
from ua.upload.pipeline import upload_files
from ua.upload.signature import LAYOUT_PROPERTY, SIGNATURE_PROPERTY, FileSignature

KiB = 1024


@pytest.fixture(scope="module")
def small_parts(tmp_path_factory):
    """A server whose minimumPartSize is 64 KiB, so multi-part files stay small."""
    from livesrv import ServerHandle

    h = ServerHandle(tmp_path_factory.mktemp("uasrv") / "data",
                     {"min_part_size": 64 * KiB}).start()
    yield h
    h.stop()


async def test_fastq_compressed_multipart_single_member(small_parts, tmp_path):
    data = fastq(12000)  # ~2.8 MB, compresses ~3x
    src = tmp_path / "reads.fastq"
    src.write_bytes(data)
    rec = Recorder()
    settings = UploadSettings(chunk_size=256 * KiB, upload_threads=4, resume=False)
    async with client(small_parts) as api:
        (res,) = await upload_files(api, [task(small_parts, src)], settings, rec)
        assert res.state is FileState.UPLOADED, res.error
        assert res.remote_name == "reads.fastq.gz"
        assert res.parts == -(-len(data) // (256 * KiB)) == len(puts(small_parts, res.file_id))
        assert res.bytes_read == len(data) == rec.read
        desc = await api.file_describe(res.file_id, properties=True, parts=True)
        (blob,) = await download_all(api, [res.file_id])
    assert desc["media"] == "application/x-gzip" and desc["name"] == "reads.fastq.gz"
    assert desc["properties"][LAYOUT_PROPERTY] == "gzip-single-member-v1"
    sig = FileSignature.parse(desc["properties"][SIGNATURE_PROPERTY])
    assert sig == FileSignature.for_path(str(src), compress=True, chunk_size=256 * KiB)
    assert single_member(blob) == data
    assert gzip.decompress(blob) == data and igzip.decompress(blob) == data
    assert res.bytes_sent == len(blob)
    for k, p in desc["parts"].items():  # parts are what we sent, all but the last ≥ minimum
        assert p["state"] == "complete"
        assert int(k) == res.parts or p["size"] >= 64 * KiB
    assert "Uploading file" in rec.messages[0] and res.file_id in rec.messages[0]


async def test_tiny_compressed_parts_are_padded_inside_the_member(small_parts, tmp_path):
    data = b"A" * (1024 * KiB)  # each 128 KiB part deflates to a few hundred bytes
    src = tmp_path / "zeros.txt"
    src.write_bytes(data)
    async with client(small_parts) as api:
        (res,) = await upload_files(api, [task(small_parts, src)],
                                    UploadSettings(chunk_size=128 * KiB, resume=False))
        assert res.state is FileState.UPLOADED, res.error
        desc = await api.file_describe(res.file_id, parts=True)
        (blob,) = await download_all(api, [res.file_id])
    sizes = [desc["parts"][str(i)]["size"] for i in range(1, res.parts + 1)]
    assert res.parts == 8 and all(s >= 64 * KiB for s in sizes[:-1]) and sizes[-1] < 64 * KiB
    assert single_member(blob) == data


async def test_already_compressed_and_do_not_compress_go_as_is(small_parts, tmp_path):
    gz = tmp_path / "x.fastq.gz"
    gz.write_bytes(gzip.compress(fastq(3000, seed=2)))
    zst = tmp_path / "y.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 1000)
    plain = tmp_path / "z.txt"
    plain.write_bytes(b"plain text\n" * 50000)
    async with client(small_parts) as api:
        r1, r2 = await upload_files(api, [task(small_parts, gz), task(small_parts, zst)],
                                    UploadSettings(chunk_size=64 * KiB, resume=False))
        (r3,) = await upload_files(api, [task(small_parts, plain)],
                                   UploadSettings(chunk_size=64 * KiB, resume=False,
                                                  compress=False))
        assert all(r.state is FileState.UPLOADED for r in (r1, r2, r3))
        b1, b2, b3 = await download_all(api, [r1.file_id, r2.file_id, r3.file_id])
        d1 = await api.file_describe(r1.file_id, properties=True)
    assert (r1.remote_name, r2.remote_name, r3.remote_name) == ("x.fastq.gz", "y.zst", "z.txt")
    assert b1 == gz.read_bytes() and b2 == zst.read_bytes() and b3 == plain.read_bytes()
    assert d1["media"] == "application/gzip"
    assert FileSignature.parse(d1["properties"][SIGNATURE_PROPERTY]).compress is False
    assert LAYOUT_PROPERTY not in d1["properties"]


@pytest.mark.parametrize("empty_last_part_allowed", [True, False])
async def test_empty_file(make_server, tmp_path, empty_last_part_allowed):
    srv = make_server(empty_last_part=empty_last_part_allowed)
    src = tmp_path / "empty.dat"
    src.write_bytes(b"")
    async with client(srv) as api:
        (res,) = await upload_files(api, [task(srv, src)], UploadSettings(), None)
        assert res.state is FileState.UPLOADED, res.error
        desc = await api.file_describe(res.file_id, parts=True)
        (blob,) = await download_all(api, [res.file_id])
    assert res.remote_name == "empty.dat" and blob == b""
    assert desc["media"] == "inode/x-empty"
    if empty_last_part_allowed:
        assert desc["parts"] == {"1": {"state": "complete", "size": 0,
                                       "md5": hashlib.md5(b"").hexdigest()}}
    else:
        assert desc["parts"] == {}


async def test_many_small_files_in_one_run(small_parts, tmp_path):
    files = []
    for i in range(200):
        p = tmp_path / f"f{i:03}.txt"
        p.write_bytes((f"file {i}\n" * (i + 1)).encode())
        files.append(p)
    t0 = time.monotonic()
    async with client(small_parts) as api:
        results = await upload_files(api, [task(small_parts, p, folder="/many") for p in files],
                                     UploadSettings(resume=False, upload_threads=8))
        elapsed = time.monotonic() - t0
        assert [r.state for r in results] == [FileState.UPLOADED] * 200, \
            [r.error for r in results if not r.ok][:3]
        blobs = await download_all(api, [r.file_id for r in results])
    assert [single_member(b) for b in blobs] == [p.read_bytes() for p in files]
    assert len({r.file_id for r in results}) == 200
    assert elapsed < 30, f"200 small files took {elapsed:.1f}s"


async def test_part_size_grows_for_max_num_parts_and_file_too_large(make_server, tmp_path):
    srv = make_server(min_part_size=1, max_num_parts=4, max_file_size=1_000_000)
    ok = tmp_path / "ok.bin"
    ok.write_bytes(bytes(range(256)) * 3000)  # 768,000 bytes, chunk 100 KB → must grow to 4 parts
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1_000_001)
    async with client(srv) as api:
        r_ok, r_big = await upload_files(
            api, [task(srv, ok), task(srv, big)],
            UploadSettings(chunk_size=100_000, compress=False, resume=False))
        assert r_ok.state is FileState.UPLOADED, r_ok.error
        (blob,) = await download_all(api, [r_ok.file_id])
    assert r_ok.parts == 4 and blob == ok.read_bytes()
    assert r_big.state is FileState.FAILED and "maximum file size" in r_big.error
    assert r_big.file_id is None  # refused before anything was created


async def test_unusable_task_fails_without_touching_others(small_parts, tmp_path):
    good = tmp_path / "good.txt"
    good.write_bytes(b"good\n")
    bad = FileTask(label="broken-link", source=FileSource.PATH, project=small_parts.project_id,
                   folder="/t", name="broken-link", error="broken symbolic link")
    missing = task(small_parts, tmp_path / "missing.txt")
    async with client(small_parts) as api:
        results = await upload_files(api, [bad, task(small_parts, good), missing],
                                     UploadSettings(resume=False))
    assert [r.state for r in results] == [FileState.FAILED, FileState.UPLOADED, FileState.FAILED]
    assert results[0].error == "broken symbolic link"
    assert "missing.txt" in results[2].error
    assert [r.stdout_line for r in results][0] == "failed"


async def test_file_changed_during_upload_is_not_closed(small_parts, tmp_path):
    src = tmp_path / "growing.log"
    src.write_bytes(bytes(range(256)) * 2000)

    class Appender(Recorder):
        def on_bytes_read(self, task, raw_bytes):
            super().on_bytes_read(task, raw_bytes)
            with open(src, "ab") as f:
                f.write(b"more")

    async with client(small_parts) as api:
        (res,) = await upload_files(api, [task(small_parts, src)],
                                    UploadSettings(chunk_size=64 * KiB, resume=False,
                                                   upload_threads=1, compress=False),
                                    Appender())
        assert res.state is FileState.FAILED and "changed" in res.error
        desc = await api.file_describe(res.file_id)
    assert desc["state"] == "open"


async def test_wait_on_close(make_server, tmp_path):
    srv = make_server(close_delay=0.6)
    src = tmp_path / "w.txt"
    src.write_bytes(b"wait for me\n")
    async with client(srv) as api:
        (r1,) = await upload_files(api, [task(srv, src, name="nowait.txt")],
                                   UploadSettings(resume=False))
        (r2,) = await upload_files(api, [task(srv, src, name="wait.txt")],
                                   UploadSettings(resume=False, wait_on_close=True))
        d2 = await api.file_describe(r2.file_id)
    assert r1.remote_state == "closing" and r1.ok
    assert r2.remote_state == "closed" and d2["state"] == "closed"


async def test_part_not_complete_at_verification_is_uploaded_again(small_parts, tmp_path):
    """Somebody resets part 1 to pending (a new /upload with other size/md5) after we sent it:
    the describe-before-close check notices and re-sends it, then closes."""
    data = bytes(range(256)) * 1024  # 256 KiB → 4 parts of 64 KiB
    src = tmp_path / "reset.bin"
    src.write_bytes(data)

    class Saboteur(Recorder):
        def on_bytes_read(self, task, raw_bytes):
            super().on_bytes_read(task, raw_bytes)
            if self.read == len(data):  # every part acknowledged, verification not yet run
                fid = self.started[0][2]
                status, _ = small_parts.api(f"/{fid}/upload",
                                            {"index": 1, "size": 5, "md5": "0" * 32})
                assert status == 200

    rec = Saboteur()
    async with client(small_parts) as api:
        (res,) = await upload_files(api, [task(small_parts, src)],
                                    UploadSettings(chunk_size=64 * KiB, compress=False,
                                                   resume=False, upload_threads=1), rec)
        assert res.state is FileState.UPLOADED, res.error
        (blob,) = await download_all(api, [res.file_id])
    assert blob == data
    assert puts(small_parts, res.file_id)[1] == 2
    assert any("Re-uploading part(s) 1" in m for m in rec.messages)
    assert res.bytes_sent == len(data)


async def test_memory_is_bounded_by_slots_not_file_size(small_parts, tmp_path):
    """Parts take a memory slot before they are read: peak Python allocations stay near
    (upload_threads + compress_threads) × part size × 2, far below the file size."""
    import random
    import tracemalloc

    chunk = 256 * KiB
    src = tmp_path / "incompressible.bin"
    src.write_bytes(random.Random(4).randbytes(64 * chunk))  # 16 MiB, worst case for gzip
    settings = UploadSettings(chunk_size=chunk, upload_threads=2, compress_threads=1,
                              read_threads=2, resume=False)
    async with client(small_parts) as api:
        await api.file_upload_parameters(small_parts.project_id)  # warm the connection
        tracemalloc.start()
        try:
            (res,) = await upload_files(api, [task(small_parts, src)], settings)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert res.state is FileState.UPLOADED, res.error
        (blob,) = await download_all(api, [res.file_id])
    assert single_member(blob) == src.read_bytes()
    bound = (2 + 1) * chunk * 2
    assert peak < bound + 1024 * KiB, f"peak {peak / 2**20:.1f} MiB > bound {bound / 2**20:.1f}"
