"""Resume against the live server: only missing parts are PUT (counted from the server's
request log), closed matches are reported already uploaded, ambiguity and foreign layouts are
handled, and a stopped run resumes where it left off."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from pipeline_helpers import Recorder, client, download_all, fastq, puts, single_member, task

from ua.upload.compress import encode_all
from ua.upload.model import FileState, UploadSettings
from ua.upload.pipeline import upload_files
from ua.upload.resume import decide
from ua.upload.signature import LAYOUT_PROPERTY, SIGNATURE_PROPERTY, FileSignature

KiB = 1024
CHUNK = 64 * KiB


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from livesrv import ServerHandle

    h = ServerHandle(tmp_path_factory.mktemp("uasrv") / "data", {"min_part_size": CHUNK}).start()
    yield h
    h.stop()


def settings(**kw):
    return UploadSettings(**{"chunk_size": CHUNK, "upload_threads": 3, **kw})


async def start_partial(api, srv, path, data, *, done: list[int], compress=True, layout=True):
    """What an interrupted earlier run leaves behind: an open file with our signature and
    some parts complete."""
    raws = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    parts = encode_all(raws, compress=compress, min_part_size=CHUNK) if compress else raws
    sig = FileSignature.for_path(str(path), compress=compress, chunk_size=CHUNK)
    props = {SIGNATURE_PROPERTY: str(sig)}
    if layout and compress:
        props[LAYOUT_PROPERTY] = "gzip-single-member-v1"
    fid = await api.file_new(project=srv.project_id, name=path.name + (".gz" if compress else ""),
                             folder="/partial", properties=props)
    import hashlib

    for i in done:
        body = parts[i - 1]
        await api.upload_part(fid, i, body, hashlib.md5(body).hexdigest(), tries=1)
    return fid, len(parts)


async def test_resume_uploads_only_missing_parts(srv, tmp_path):
    data = fastq(3000, seed=3)
    src = tmp_path / "reads.fastq"
    src.write_bytes(data)
    rec = Recorder()
    async with client(srv) as api:
        fid, n = await start_partial(api, srv, src, data, done=[1, 3])
        assert n >= 5
        before = puts(srv, fid)
        (res,) = await upload_files(api, [task(srv, src)], settings(), rec)
        assert res.state is FileState.UPLOADED, res.error
        assert res.file_id == fid and res.parts_skipped == 2 and res.parts == n
        (blob,) = await download_all(api, [fid])
    during = puts(srv, fid) - before
    assert sorted(during) == [i for i in range(1, n + 1) if i not in (1, 3)]
    assert all(c == 1 for c in during.values())
    assert single_member(blob) == data
    pct = 100 * 2 * CHUNK / len(data)
    assert any(f"which is {pct:.6g}% complete. Will resume uploading to it." in m
               for m in rec.messages), rec.messages
    assert rec.read == len(data)


async def test_resume_last_part_needs_crc_of_skipped_parts(srv, tmp_path):
    data = random.Random(9).randbytes(5 * CHUNK + 123)
    src = tmp_path / "rand.bin"
    src.write_bytes(data)
    async with client(srv) as api:
        fid, n = await start_partial(api, srv, src, data, done=[1, 2, 3, 4, 5])
        (res,) = await upload_files(api, [task(srv, src)], settings())
        assert res.state is FileState.UPLOADED and res.file_id == fid, res.error
        (blob,) = await download_all(api, [fid])
    assert res.parts_skipped == 5 and single_member(blob) == data


async def test_closed_match_is_already_uploaded(srv, tmp_path):
    src = tmp_path / "again.txt"
    src.write_bytes(b"idempotent re-runs\n" * 10000)
    rec = Recorder()
    async with client(srv) as api:
        (r1,) = await upload_files(api, [task(srv, src)], settings())
        n_before = len(srv.requests())
        (r2,) = await upload_files(api, [task(srv, src, folder="/elsewhere")], settings(), rec)
    assert r1.state is FileState.UPLOADED and r2.state is FileState.ALREADY_UPLOADED
    assert r2.file_id == r1.file_id and r2.ok and r2.stdout_line == r1.file_id
    new_routes = [r["route"] for r in srv.requests()[n_before:]]
    assert "PUT /upload" not in new_routes and "/file/new" not in new_routes
    assert any("which is 100% complete. Will not resume uploading it." in m for m in rec.messages)
    assert any(f"Note: the matching remote file {r1.file_id} is /t/again.txt.gz, not "
               "/elsewhere/again.txt.gz" in m for m in rec.messages), rec.messages


async def test_several_matches_fail_that_file_only(srv, tmp_path):
    src = tmp_path / "twice.txt"
    data = b"two candidates\n" * 9000
    src.write_bytes(data)
    other = tmp_path / "other.txt"
    other.write_bytes(b"fine\n")
    rec = Recorder()
    async with client(srv) as api:
        f1, _ = await start_partial(api, srv, src, data, done=[1])
        f2, _ = await start_partial(api, srv, src, data, done=[])
        r_amb, r_ok = await upload_files(api, [task(srv, src), task(srv, other)], settings(), rec)
    assert r_amb.state is FileState.FAILED and r_ok.state is FileState.UPLOADED
    assert f1 in r_amb.error and f2 in r_amb.error and "--do-not-resume" in r_amb.error
    text = "\n".join(rec.messages)
    assert "More than one resumable targets for local file" in text
    assert "Please either clean up the potential candidate files, or run upload agent with " \
           "'--do-not-resume' option" in text


async def test_foreign_layout_is_never_resumed_into(srv, tmp_path):
    data = fastq(1500, seed=4)
    src = tmp_path / "foreign.fastq"
    src.write_bytes(data)
    rec = Recorder()
    async with client(srv) as api:
        foreign, _ = await start_partial(api, srv, src, data, done=[1], layout=False)
        (res,) = await upload_files(api, [task(srv, src)], settings(), rec)
        assert res.state is FileState.UPLOADED and res.file_id != foreign, res.error
        (blob,) = await download_all(api, [res.file_id])
        (again,) = await upload_files(api, [task(srv, src)], settings())
    assert single_member(blob) == data
    assert any("another tool" in m and foreign in m for m in rec.messages)
    assert again.state is FileState.ALREADY_UPLOADED and again.file_id == res.file_id


async def test_changed_mtime_or_do_not_resume_starts_new_file(srv, tmp_path):
    src = tmp_path / "touched.txt"
    src.write_bytes(b"v1\n" * 1000)
    async with client(srv) as api:
        (r1,) = await upload_files(api, [task(srv, src)], settings())
        st = os.stat(src)
        os.utime(src, (st.st_atime, st.st_mtime + 10))
        (r2,) = await upload_files(api, [task(srv, src)], settings())
        (r3,) = await upload_files(api, [task(srv, src)], settings(resume=False))
    assert len({r1.file_id, r2.file_id, r3.file_id}) == 3
    assert all(r.state is FileState.UPLOADED for r in (r1, r2, r3))


async def test_stop_leaves_file_open_and_next_run_resumes(srv, tmp_path):
    data = random.Random(1).randbytes(16 * CHUNK)
    src = tmp_path / "stopme.bin"
    src.write_bytes(data)
    stop = asyncio.Event()

    class StopAfterThree(Recorder):
        def on_bytes_read(self, task, raw_bytes):
            super().on_bytes_read(task, raw_bytes)
            if self.read >= 3 * CHUNK:
                stop.set()

    async with client(srv) as api:
        (r1,) = await upload_files(api, [task(srv, src)],
                                   settings(compress=False, throttle=1024 * KiB),
                                   StopAfterThree(), stop)
        assert r1.state is FileState.CANCELLED and r1.file_id
        await asyncio.sleep(0.5)  # a PUT whose body was already sent may still complete
        d1 = await api.file_describe(r1.file_id, parts=True)
        assert d1["state"] == "open"
        first = puts(srv, r1.file_id)
        (r2,) = await upload_files(api, [task(srv, src)], settings(compress=False))
        (blob,) = await download_all(api, [r2.file_id])
    assert r2.state is FileState.UPLOADED and r2.file_id == r1.file_id
    # A PUT in flight at the stop may still have completed on the server; whatever the
    # first run stored is skipped, everything else is sent exactly once.
    assert 3 <= len(first) < 16 and r2.parts_skipped == len(first)
    second = puts(srv, r2.file_id) - first
    assert set(second) == set(range(1, 17)) - set(first)
    assert all(c == 1 for c in second.values()) and blob == data, (first, second, r2)
    assert sum(1 for p in d1["parts"].values() if p["state"] == "complete") >= 3


def test_decide_is_pure_and_strict():
    open_ours = {"id": "file-a", "describe": {"state": "open", "name": "a.gz", "parts": {},
                                              "properties": {LAYOUT_PROPERTY:
                                                             "gzip-single-member-v1"}}}
    open_foreign = {"id": "file-b", "describe": {"state": "open", "properties": {}}}
    closed_foreign = {"id": "file-c", "describe": {"state": "closed", "properties": {}}}
    assert decide([], compress=True).kind == "new"
    assert decide([open_ours], compress=True).kind == "resume"
    assert decide([open_foreign], compress=True).kind == "new"
    assert decide([open_foreign], compress=False).kind == "resume"
    assert decide([closed_foreign], compress=True).kind == "done"
    assert decide([open_ours, closed_foreign], compress=True).kind == "ambiguous"


async def test_resumed_part_that_differs_locally_is_uploaded_again(srv, tmp_path):
    """Same size and same whole-second mtime, different bytes in part 2: the signature
    matches, but the MD5 comparison catches it and only that part is sent again."""
    data = random.Random(7).randbytes(4 * CHUNK)
    src = tmp_path / "edited.bin"
    src.write_bytes(data)
    st = os.stat(src)
    stale = data[:CHUNK] + b"\0" * CHUNK + data[2 * CHUNK:]
    rec = Recorder()
    async with client(srv) as api:
        fid, n = await start_partial(api, srv, src, stale, done=[1, 2], compress=False)
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
        before = puts(srv, fid)
        (res,) = await upload_files(api, [task(srv, src)], settings(compress=False), rec)
        assert res.state is FileState.UPLOADED and res.file_id == fid, res.error
        (blob,) = await download_all(api, [fid])
    assert blob == data and res.parts_skipped == 1
    assert sorted(puts(srv, fid) - before) == [2, 3, 4]
    assert any("Part 2" in m and "differs" in m for m in rec.messages)
