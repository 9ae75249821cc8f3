"""--throttle: one token bucket over all connections, accurate within 10 %."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from pipeline_helpers import client, download_all, task

from ua.upload.model import FileState, UploadSettings
from ua.upload.pipeline import upload_files
from ua.upload.throttle import TokenBucket

KiB = 1024


async def test_bucket_rate_over_many_concurrent_takers():
    bucket = TokenBucket(4_000_000)  # 8 × 50 × 20 kB = 8 MB → 2 s
    got = 0

    async def taker():
        nonlocal got
        for _ in range(50):
            await bucket.acquire(20_000)
            got += 20_000

    t0 = time.monotonic()
    await asyncio.gather(*(taker() for _ in range(8)))
    elapsed = time.monotonic() - t0
    expected = (got - bucket.burst) / bucket.rate
    assert expected * 0.97 <= elapsed <= expected * 1.25 + 0.1  # sleeps overshoot under load


def test_bucket_rejects_nonsense():
    with pytest.raises(ValueError):
        TokenBucket(0)


async def test_throttle_against_live_server(make_server, tmp_path):
    """2 MB/s over 6 parallel connections for ~3 s of data."""
    srv = make_server(min_part_size=64 * KiB)
    rate = 2_000_000
    srcs = []
    for i in range(3):
        p = tmp_path / f"t{i}.bin"
        p.write_bytes(random.Random(i).randbytes(2_000_000))
        srcs.append(p)
    settings = UploadSettings(chunk_size=256 * KiB, upload_threads=6, compress=False,
                              resume=False, throttle=rate)
    async with client(srv) as api:
        t0 = time.monotonic()
        results = await upload_files(api, [task(srv, p) for p in srcs], settings)
        elapsed = time.monotonic() - t0
        assert all(r.state is FileState.UPLOADED for r in results)
        blobs = await download_all(api, [r.file_id for r in results])
    assert blobs == [p.read_bytes() for p in srcs]
    expected = 6_000_000 / rate  # 3.0 s
    # never faster than the limit; the upper bound allows for a loaded CI machine
    assert expected * 0.95 <= elapsed <= expected * 1.3, elapsed
    # the server saw the bytes spread over time, not in one burst
    puts = sorted(r["t"] for r in srv.requests() if r["route"] == "PUT /upload")
    assert puts[-1] - puts[0] >= expected * 0.8
