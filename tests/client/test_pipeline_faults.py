"""Fault injection on the live server: every file must still arrive byte-identical, and a
permanent fault on one file must fail only that file."""

from __future__ import annotations

import random

from pipeline_helpers import Recorder, client, download_all, fastq, puts, single_member, task

from ua.upload.model import FileState, UploadSettings
from ua.upload.pipeline import upload_files

KiB = 1024
FAULTS = ("put-500=0.1,put-reset=0.05,put-503=0.05,put-baddigest=0.05,"
          "put-drop-after-store=0.05,put-stall=0.02,put-slow=0.03,"
          "api-500=0.05,api-503=0.05,api-429=0.03")


async def test_random_faults_every_file_identical(make_server, tmp_path):
    srv = make_server(min_part_size=64 * KiB, fault=FAULTS, fault_seed=11)
    srcs = []
    rnd = random.Random(5)
    for i in range(10):
        p = tmp_path / (f"r{i}.fastq" if i % 2 else f"b{i}.bin")
        p.write_bytes(fastq(400 * (i + 1), seed=i) if i % 2 else rnd.randbytes(60 * KiB * i + 7))
        srcs.append(p)
    rec = Recorder()
    settings = UploadSettings(chunk_size=64 * KiB, tries=8, upload_threads=6, resume=False)
    async with client(srv, stall_timeout=1.0) as api:
        results = await upload_files(api, [task(srv, p) for p in srcs], settings, rec)
        assert [r.state for r in results] == [FileState.UPLOADED] * len(srcs), \
            [r.error for r in results if not r.ok]
        blobs = await download_all(api, [r.file_id for r in results])
    for p, r, b in zip(srcs, results, blobs):
        want = p.read_bytes()
        got = single_member(b) if r.remote_name.endswith(".gz") else b
        assert got == want, p.name
    injected = [x["fault"] for x in srv.requests() if x.get("fault")]
    assert len(injected) >= 10, injected  # the faults really happened …
    assert sum(r.retries for r in results) >= 5 and rec.retries  # … and were retried


async def test_permanent_fault_fails_only_that_file(make_server, tmp_path):
    srv = make_server(min_part_size=64 * KiB, fault="put-500=1@bad*")
    good = [tmp_path / f"good{i}.txt" for i in range(3)]
    for i, p in enumerate(good):
        p.write_bytes(b"fine %d\n" % i * 30000)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"doomed\n" * 30000)
    files = [good[0], bad, good[1], good[2]]
    async with client(srv) as api:
        results = await upload_files(api, [task(srv, p) for p in files],
                                     UploadSettings(chunk_size=64 * KiB, tries=1, resume=False))
        states = [r.state for r in results]
        assert states == [FileState.UPLOADED, FileState.FAILED, FileState.UPLOADED,
                          FileState.UPLOADED], [r.error for r in results]
        r_bad = results[1]
        assert "after 1 tries" in r_bad.error and "500" in r_bad.error
        assert r_bad.stdout_line == "failed" and r_bad.file_id
        desc = await api.file_describe(r_bad.file_id)
        blobs = await download_all(api, [results[i].file_id for i in (0, 2, 3)])
    assert desc["state"] == "open"  # never closed: resumable by a later run
    assert [single_member(b) for b in blobs] == [good[0].read_bytes(), good[1].read_bytes(),
                                                 good[2].read_bytes()]
    assert not puts(srv, r_bad.file_id)
