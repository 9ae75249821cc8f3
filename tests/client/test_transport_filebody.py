"""FileRange bodies (ua/api/filebody.py): parts PUT straight from a local file.

Against a live ua-server on 127.0.0.1 (it checks every part's MD5 against the one given to
``/upload``, and ``describe`` reports what it stored), through the loopback fault proxy where
a test needs a slow link, a stall or a connection count, and against an in-process TLS
server for the HTTPS fallback. Which way a body went is read from
``Transport.put_paths`` ("sendfile" / "buffered" / "memory" / "empty" / "unsent").
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from proxy import RequestFault
from ua.api import APIConfig, DXClient
from ua.api.errors import LocalFileChanged, PermanentError, StallError
from ua.api.filebody import FileRange, file_identity, pread_into, range_md5
from ua.api.retry import RetryPolicy
from ua.upload.throttle import TokenBucket

MiB = 1024 * 1024
FAST = RetryPolicy(base_delay=0.01)


def client(host, port, token, **kw) -> DXClient:
    return DXClient(APIConfig("http", host, port, token), policy=FAST, **kw)


def srv_client(server, **kw) -> DXClient:
    return client(server.host, server.port, server.admin_token, **kw)


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> tuple[Path, bytes]:
    p = tmp_path_factory.mktemp("fb") / "reads.fastq.gz"
    data = os.urandom(24 * MiB + 12345)
    p.write_bytes(data)
    return p, data


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


async def put_range(api: DXClient, fid: str, index: int, rng: FileRange, expect_md5: str,
                    **kw) -> list[int]:
    """/upload + one PUT of ``rng``; returns the on_sent amounts."""
    sent: list[int] = []
    url, headers = await api.file_upload(fid, index, rng.length, expect_md5)
    await api.put_part(url, headers, rng, on_sent=sent.append, **kw)
    return sent


async def parts_of(api: DXClient, fid: str) -> dict:
    return (await api.file_describe(fid, {"parts": True}))["parts"]


# Offsets inside the larger file, sizes 0, 1 byte, a few MiB (odd), 20 MiB.
RANGES = [(0, 0), (777, 1), (5 * MiB + 3, 3 * MiB + 4321), (1 * MiB + 1, 20 * MiB)]


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "buffered"])
async def test_ranges_stored_with_their_md5(ua_server, blob, sendfile):
    path, data = blob
    async with srv_client(ua_server, sendfile=sendfile) as api:
        fid = await api.file_new(project=ua_server.project_id, name=f"r-{sendfile}",
                                 folder="/fb")
        st = os.stat(path)
        for i, (off, n) in enumerate(RANGES, 1):
            rng = FileRange.of(path, off, n, st)
            sent = await put_range(api, fid, i, rng, md5(data[off:off + n]))
            assert sum(sent) == n, "on_sent must add up to the part length"
            assert all(0 < k for k in sent)
        paths = api.transport.put_paths
        assert paths["empty"] == 1
        assert paths["sendfile" if sendfile else "buffered"] == len(RANGES) - 1
        assert paths["memory"] == 0 and paths["unsent"] == 0
        parts = await parts_of(api, fid)
    for i, (off, n) in enumerate(RANGES, 1):
        assert parts[str(i)] == {"state": "complete", "size": n, "md5": md5(data[off:off + n])}


async def test_bytes_identical_after_close_and_fd_ranges(ua_server, blob):
    """A two-part file made of FileRanges of one open descriptor, sent concurrently,
    downloads byte for byte."""
    path, data = blob
    n1 = 6 * MiB + 11
    fd = os.open(path, os.O_RDONLY)
    ident = file_identity(os.fstat(fd))
    r1 = FileRange(None, 0, n1, fd=fd, expect=ident)
    r2 = FileRange(None, n1, len(data) - n1, fd=fd, expect=ident)
    async with srv_client(ua_server) as api:
        fid = await api.file_new(project=ua_server.project_id, name="whole", folder="/fb")
        try:
            await asyncio.gather(put_range(api, fid, 1, r1, md5(data[:n1])),
                                 put_range(api, fid, 2, r2, md5(data[n1:])))
        finally:
            os.close(fd)
        assert api.transport.put_paths["sendfile"] == 2
        await api.file_close(fid)
        assert await api.download(fid) == data


async def test_upload_part_with_retries_takes_a_file_range(ua_server, blob):
    path, data = blob
    rng = FileRange.of(path, 3 * MiB, 2 * MiB)
    async with srv_client(ua_server) as api:
        fid = await api.file_new(project=ua_server.project_id, name="up", folder="/fb")
        used = await api.upload_part(fid, 1, rng, range_md5(rng), tries=2)
        assert used == 1
        assert (await parts_of(api, fid))["1"]["md5"] == md5(data[3 * MiB:5 * MiB])


async def test_many_puts_reuse_one_keepalive_connection(ua_server, blob, fault_proxy):
    """sendfile leaves the keep-alive connection reusable: 40 PUTs in a row (plus their
    /upload calls) through the proxy use one TCP connection, and all are stored."""
    path, data = blob
    proxy = fault_proxy(ua_server)
    st = os.stat(path)
    async with client("127.0.0.1", proxy.port, ua_server.admin_token) as api:
        fid = await api.file_new(project=ua_server.project_id, name="many", folder="/fb")
        t0 = time.monotonic()
        for i in range(1, 41):
            off, n = (i * 97_003) % (8 * MiB), MiB + i
            await put_range(api, fid, i, FileRange.of(path, off, n, st), md5(data[off:off + n]))
        dt = time.monotonic() - t0
        assert api.transport.put_paths["sendfile"] == 40
        parts = await parts_of(api, fid)
    assert all(parts[str(i)]["state"] == "complete" for i in range(1, 41))
    assert proxy.stats.connections == 1, proxy.stats
    assert dt < 20


async def test_concurrent_sendfile_puts(ua_server, blob):
    path, data = blob
    st = os.stat(path)
    async with srv_client(ua_server, connections=8) as api:
        fid = await api.file_new(project=ua_server.project_id, name="conc", folder="/fb")
        jobs = []
        for i in range(1, 17):
            off, n = i * 1_000_003, 3 * MiB + i
            jobs.append(put_range(api, fid, i, FileRange.of(path, off, n, st),
                                  md5(data[off:off + n])))
        await asyncio.gather(*jobs)
        assert api.transport.put_paths["sendfile"] == 16
        parts = await parts_of(api, fid)
    for i in range(1, 17):
        off, n = i * 1_000_003, 3 * MiB + i
        assert parts[str(i)]["md5"] == md5(data[off:off + n])


async def test_http_proxy_falls_back_to_buffered(ua_server, blob, fault_proxy, monkeypatch):
    """Through an HTTP proxy (HTTP_PROXY) a FileRange is read through the small buffer."""
    path, data = blob
    proxy = fault_proxy(ua_server)
    for k in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    off, n = 2 * MiB + 5, 4 * MiB + 17
    async with srv_client(ua_server) as api:
        fid = await api.file_new(project=ua_server.project_id, name="px", folder="/fb")
        sent = await put_range(api, fid, 1, FileRange.of(path, off, n), md5(data[off:off + n]))
        assert sum(sent) == n
        assert api.transport.put_paths["buffered"] == 1
        assert (await parts_of(api, fid))["1"]["md5"] == md5(data[off:off + n])
    assert proxy.stats.methods.get("PUT") == 1


async def test_buffered_reuse_on_a_slow_link(ua_server, blob, fault_proxy):
    """The fallback refills its two buffer halves slice after slice while a 20 MB/s link
    keeps the socket busy (asyncio ≥ 3.12 keeps references to written data instead of
    copying it); the server's MD5 check confirms the body arrived intact."""
    path, data = blob
    proxy = fault_proxy(ua_server, bandwidth=20e6)
    off, n = 333, 12 * MiB + 5
    async with client("127.0.0.1", proxy.port, ua_server.admin_token, sendfile=False) as api:
        fid = await api.file_new(project=ua_server.project_id, name="slow", folder="/fb")
        sent = await put_range(api, fid, 1, FileRange.of(path, off, n), md5(data[off:off + n]))
        assert sum(sent) == n and api.transport.put_paths["buffered"] == 1
        assert (await parts_of(api, fid))["1"] == {"state": "complete", "size": n,
                                                   "md5": md5(data[off:off + n])}


async def test_https_falls_back_to_buffered(blob, tls_apps):
    """TLS cannot use sendfile: the same FileRange goes through the buffered path over a
    real TLS connection, and the storage side receives exactly the range."""
    from aiohttp import web

    path, data = blob
    cert = tls_apps.cert
    got: list[tuple[int, str, str | None]] = []

    async def store(request):
        h = hashlib.md5()
        n = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        got.append((n, h.hexdigest(), request.headers.get("Content-Length")))
        return web.Response(status=200)

    app = web.Application(client_max_size=64 * MiB)
    app.router.add_put("/store/{p}", store)
    port = await tls_apps.start(app)
    cfg = APIConfig("https", "127.0.0.1", port, "t", ca_cert=str(cert))
    async with DXClient(cfg, policy=FAST) as api:
        for i, (off, n) in enumerate([(5, 1), (MiB + 7, 9 * MiB + 3)]):
            sent: list[int] = []
            await api.put_part(f"https://127.0.0.1:{port}/store/{i}", {},
                               FileRange.of(path, off, n), on_sent=sent.append)
            assert sum(sent) == n
        assert api.transport.put_paths["buffered"] == 2
    assert got == [(1, md5(data[5:6]), "1"),
                   (9 * MiB + 3, md5(data[MiB + 7:10 * MiB + 10]), str(9 * MiB + 3))]


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "buffered"])
async def test_throttle_is_honoured(ua_server, blob, sendfile):
    """2 MiB at 1 MiB/s takes ≥ ~1.5 s (burst ≈ 1/20 s of the rate), in throttle-sized
    slices, and the throttle waits are not mistaken for a stall (stall window 0.5 s)."""
    path, data = blob
    off, n = 123, 2 * MiB
    bucket = TokenBucket(MiB)
    async with srv_client(ua_server, sendfile=sendfile, stall_timeout=0.5) as api:
        fid = await api.file_new(project=ua_server.project_id, name="thr", folder="/fb")
        url, headers = await api.file_upload(fid, 1, n, md5(data[off:off + n]))
        sent: list[int] = []
        t0 = time.monotonic()
        await api.put_part(url, headers, FileRange.of(path, off, n), throttle=bucket,
                           on_sent=sent.append)
        dt = time.monotonic() - t0
        assert api.transport.put_paths["sendfile" if sendfile else "buffered"] == 1
        assert (await parts_of(api, fid))["1"]["state"] == "complete"
    assert sum(sent) == n and max(sent) <= bucket.piece_size
    assert 1.5 <= dt < 4.0, dt


async def test_stall_through_fault_proxy(ua_server, blob, fault_proxy):
    """The proxy swallows the PUT and never answers: StallError after the stall window, and
    the next PUT on the same client works."""
    path, data = blob
    proxy = fault_proxy(ua_server)
    proxy.add_fault(RequestFault("stall", method="PUT", count=1))
    off, n = 0, 6 * MiB
    async with client("127.0.0.1", proxy.port, ua_server.admin_token, stall_timeout=1.0) as api:
        fid = await api.file_new(project=ua_server.project_id, name="stall", folder="/fb")
        url, headers = await api.file_upload(fid, 1, n, md5(data[off:off + n]))
        t0 = time.monotonic()
        with pytest.raises(StallError):
            await api.put_part(url, headers, FileRange.of(path, off, n))
        assert time.monotonic() - t0 < 8
        await put_range(api, fid, 1, FileRange.of(path, off, n), md5(data[off:off + n]))
        assert (await parts_of(api, fid))["1"]["state"] == "complete"
    assert proxy.stats.stalls == 1


async def test_stall_mid_sendfile_when_peer_stops_reading(blob):
    """A peer that accepts the connection but never reads: the socket buffers fill, the
    sendfile slice cannot finish, and the stall detector fails the PUT (it does not hang)."""
    path, _ = blob
    writers = []
    done = asyncio.Event()

    async def never_read(reader, writer):
        writers.append(writer)
        await done.wait()

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client("127.0.0.1", port, None, stall_timeout=0.7) as api:
            t0 = time.monotonic()
            with pytest.raises(StallError):
                await api.put_part(f"http://127.0.0.1:{port}/x", {},
                                   FileRange.of(path, 0, 24 * MiB))
            assert time.monotonic() - t0 < 8
            assert api.transport.put_paths["sendfile"] == 1
    finally:
        done.set()
        server.close()
        for w in writers:
            w.close()
        await asyncio.sleep(0)


async def test_changed_before_put_is_permanent(ua_server, tmp_path):
    p = tmp_path / "f.gz"
    p.write_bytes(os.urandom(3 * MiB))
    rng = FileRange.of(p, MiB, 2 * MiB)
    digest = range_md5(rng)
    async with srv_client(ua_server) as api:
        fid = await api.file_new(project=ua_server.project_id, name="chg", folder="/fb")
        # truncated between the MD5 and the PUT
        os.truncate(p, 2 * MiB)
        url, headers = await api.file_upload(fid, 1, rng.length, digest)
        with pytest.raises(LocalFileChanged) as ei:
            await api.put_part(url, headers, rng)
        assert isinstance(ei.value, PermanentError)
        assert api.transport.put_paths["unsent"] == 1
        # the same size again but a new mtime: still a different file
        p.write_bytes(os.urandom(3 * MiB))
        with pytest.raises(LocalFileChanged):
            await api.put_part(url, headers, rng)
        # replaced by another inode with the same size and mtime
        st = os.stat(p)
        q = tmp_path / "g.gz"
        q.write_bytes(p.read_bytes())
        os.utime(q, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(q, p)
        with pytest.raises(LocalFileChanged, match="another file"):
            await api.put_part(url, headers, FileRange(p, MiB, 2 * MiB, expect=file_identity(st)))
        # upload_part gives up at once: permanent, not retried
        with pytest.raises(LocalFileChanged):
            await api.upload_part(fid, 1, rng, digest, tries=3)
        assert (await parts_of(api, fid))["1"]["state"] != "complete"
    log = [r for r in ua_server.requests() if r.get("file") == fid]
    assert sum(r["route"].endswith("/upload") for r in log) == 2  # ours + one upload_part try
    assert not any(r["route"] == "PUT /upload" for r in log)  # no byte was ever sent


async def test_not_a_regular_file_is_refused(ua_server, tmp_path):
    fifo, folder = tmp_path / "fifo", tmp_path / "dir"
    os.mkfifo(fifo)
    folder.mkdir()
    async with srv_client(ua_server) as api:
        for p in (fifo, folder):
            with pytest.raises(LocalFileChanged, match="not a regular file"):
                await api.put_part(f"{ua_server.url}/nowhere", {}, FileRange(p, 0, 10))
        assert api.transport.put_paths["unsent"] == 2


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "buffered"])
async def test_file_shrinking_mid_put_fails_and_sends_nothing_short(ua_server, tmp_path,
                                                                    sendfile):
    """The file is truncated after the first slice went out: the PUT fails with
    LocalFileChanged, the server stores nothing for that part, and the client's next PUT
    works (the half-sent connection was dropped, not reused)."""
    p = tmp_path / "shrink.gz"
    data = os.urandom(12 * MiB)
    p.write_bytes(data)
    off, n = 1000, 10 * MiB
    rng = FileRange.of(p, off, n)
    async with srv_client(ua_server, sendfile=sendfile) as api:
        fid = await api.file_new(project=ua_server.project_id, name=f"shr-{sendfile}",
                                 folder="/fb")
        url, headers = await api.file_upload(fid, 1, n, md5(data[off:off + n]))
        sent: list[int] = []

        def on_sent(k: int) -> None:
            if not sent:
                os.truncate(p, off + 3 * MiB // 2)
            sent.append(k)

        with pytest.raises(LocalFileChanged):
            await api.put_part(url, headers, rng, on_sent=on_sent)
        assert 0 < sum(sent) < n
        assert api.transport.put_paths["sendfile" if sendfile else "buffered"] == 1
        # the part is not there, and the next PUT (other bytes) on the same client succeeds
        p.write_bytes(data)
        r2 = FileRange.of(p, off, n)
        await put_range(api, fid, 2, r2, md5(data[off:off + n]))
        parts = await parts_of(api, fid)
    assert "1" not in parts or parts["1"]["state"] != "complete"
    assert parts["2"]["state"] == "complete"


async def test_modified_during_put_fails(ua_server, tmp_path):
    """Same size, new mtime while the body is going out: LocalFileChanged, not a 2xx."""
    p = tmp_path / "mod.gz"
    data = os.urandom(6 * MiB)
    p.write_bytes(data)
    rng = FileRange.of(p, 0, len(data))
    async with srv_client(ua_server) as api:
        fid = await api.file_new(project=ua_server.project_id, name="mod", folder="/fb")
        url, headers = await api.file_upload(fid, 1, len(data), md5(data))
        touched = []

        def on_sent(k: int) -> None:
            if not touched:
                st = os.stat(p)
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
                touched.append(k)

        with pytest.raises(LocalFileChanged, match="modification time"):
            await api.put_part(url, headers, rng, on_sent=on_sent)


def test_helpers_read_through_one_buffer(blob, tmp_path):
    path, data = blob
    buf = bytearray(MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        view = pread_into(fd, buf, 5, 1000)
        assert bytes(view) == data[5:1005]
        with pytest.raises(LocalFileChanged):
            pread_into(fd, buf, len(data) - 10, 20)
    finally:
        os.close(fd)
    rng = FileRange.of(path, 7, 3 * MiB + 1)
    assert range_md5(rng, buf) == md5(data[7:7 + 3 * MiB + 1])
    assert range_md5(FileRange.of(path, 0, 0)) == md5(b"")
    with pytest.raises(ValueError):
        FileRange(None, 0, 1)
    with pytest.raises(ValueError):
        FileRange(path, -1, 1)
