"""Zero-copy part bodies: a byte range of a local file, sent as it is on disk.

A part that is uploaded exactly as it is stored (already-compressed inputs,
``--do-not-compress``) does not need to pass through Python memory at all::

    rng = FileRange.of(path, offset, length, st)        # st: os.stat_result taken with the MD5
    await api.put_part(url, headers, rng, throttle=throttle, on_sent=on_sent)

:meth:`Transport.put <ua.api.transport.Transport.put>` sends a :class:`FileRange` with the
kernel's ``sendfile(2)`` (file pages go straight from the page cache to the socket) when the
connection is plain HTTP without a proxy, and otherwise (HTTPS, a proxy, an event loop or
socket without sendfile) reads the range in slices into one small buffer per PUT that is
reused slice after slice — never a whole-part allocation. Either way the stall detector, the
size-scaled deadline, the throttle and ``on_sent`` see every slice, exactly like the
in-memory path.

A file that is replaced, shrinks or is modified (another inode, size or mtime than
``expect``, or fewer bytes than ``length`` at ``offset``) fails that PUT with
:class:`~ua.api.errors.LocalFileChanged` — permanent, never retried — and the connection is
dropped, so the server never receives fewer or other bytes than the Content-Length under a
2xx. (A same-size edit within the mtime granularity is not visible locally; the server's
MD5 check rejects it.)

For the in-memory (compressing) path, :func:`pread_into` reads a range into a caller-owned
reusable buffer and :func:`range_md5` hashes a range through one; both raise
:class:`LocalFileChanged` on a short read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import payload as aiohttp_payload

from ua.api.errors import LocalFileChanged

__all__ = ["FileRange", "FileRangePayload", "file_identity", "pread_into", "range_md5"]

Identity = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)

# sendfile slices: the first is small, each next one at most twice the last and sized to take
# about SENDFILE_SLICE_SECONDS at the rate just measured, so the stall detector (re-armed per
# slice) sees progress about as often as with 256 KiB in-memory pieces.
SENDFILE_MIN_SLICE = 256 * 1024
SENDFILE_MAX_SLICE = 8 * 1024 * 1024
SENDFILE_SLICE_SECONDS = 0.25
BUFFERED_SLICE = 1024 * 1024  # the fallback reads this much per slice (two halves per PUT)
INLINE_READ = 64 * 1024  # reads up to this size skip the thread hop


def file_identity(st: os.stat_result) -> Identity:
    """``(st_dev, st_ino, st_size, st_mtime_ns)``: what must not change between the MD5 of a
    part and its PUT."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class FileRange:
    """``length`` bytes at ``offset`` of a local file, to be PUT as they are on disk.

    Give ``path`` (opened read-only for each attempt) or ``fd`` (keep it open until the PUT
    returns; each attempt works on its own duplicate, so a body writer still unwinding after
    a failed attempt never touches the caller's descriptor; its file position may move).
    ``expect`` is the file's :func:`file_identity` when its MD5 was computed; with ``None``
    only the size is checked up front, and the identity at the start of the PUT must still
    hold at its end.
    """

    path: str | os.PathLike[str] | None
    offset: int
    length: int
    fd: int | None = None
    expect: Identity | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.fd is None):
            raise ValueError("FileRange needs exactly one of path and fd")
        if self.offset < 0 or self.length < 0:
            raise ValueError(f"bad FileRange offset/length {self.offset}/{self.length}")

    @classmethod
    def of(cls, path: str | os.PathLike[str], offset: int, length: int,
           st: os.stat_result | None = None) -> "FileRange":
        """A range of ``path`` that must still be the file ``st`` describes (``os.stat(path)``
        now if omitted)."""
        return cls(path, offset, length,
                   expect=file_identity(st if st is not None else os.stat(path)))

    def __len__(self) -> int:
        return self.length

    @property
    def label(self) -> str:
        return os.fspath(self.path) if self.path is not None else f"fd {self.fd}"

    def changed(self, why: str) -> LocalFileChanged:
        return LocalFileChanged(f"{self.label} changed during upload ({why}); "
                                f"not sending bytes {self.offset}-{self.offset + self.length}")

    def open(self) -> int:
        """A private read-only descriptor, checked against ``expect`` and the range."""
        try:
            # O_NONBLOCK: a FIFO must not block the event loop in open() (it is refused
            # below); reads of regular files ignore the flag.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)) \
                if self.path is not None else os.dup(self.fd)  # type: ignore[arg-type]
        except OSError as exc:
            raise LocalFileChanged(f"Cannot open {self.label}: {exc.strerror}") from None
        try:
            self.check(fd, None)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def check(self, fd: int, then: Identity | None) -> Identity:
        """The identity of ``fd`` now; :class:`LocalFileChanged` if it differs from
        ``expect`` or ``then``, or the file is too short for the range."""
        try:
            st = os.fstat(fd)
        except OSError as exc:
            raise LocalFileChanged(f"Cannot stat {self.label}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise LocalFileChanged(f"{self.label} is not a regular file; a FileRange cannot "
                                   "send it")
        now = file_identity(st)
        for want in (self.expect, then):
            if want is not None and now != want:
                what = "another file" if now[:2] != want[:2] else \
                    "size" if now[2] != want[2] else "modification time"
                raise self.changed(f"{what} differs")
        if now[2] < self.offset + self.length:
            raise self.changed(f"it has {now[2]} bytes")
        return now


def pread_into(fd: int, buf: bytearray | memoryview, offset: int, length: int
               ) -> memoryview:
    """Read exactly ``length`` bytes at ``offset`` into the start of ``buf`` (reusable, at
    least ``length`` long) and return a view of them; :class:`LocalFileChanged` if the file
    ends first. No allocation per call."""
    view = memoryview(buf).cast("B")[:length]
    got = 0
    while got < length:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            raise LocalFileChanged(f"file shrank during upload: expected {length} bytes at "
                                   f"offset {offset}, read {got}")
        got += n
    return view


def range_md5(rng: FileRange, buf: bytearray | None = None, *, slice_size: int = 1 << 20
              ) -> str:
    """Hex MD5 of ``rng`` read through one reusable buffer (``buf``, or one of
    ``slice_size`` bytes). Blocking: run it in a thread pool. Checks ``rng.expect`` before
    and after."""
    if buf is None:
        buf = bytearray(min(slice_size, max(1, rng.length)))
    h = hashlib.md5()
    fd = rng.open()
    try:
        then = rng.check(fd, None)
        off, end = rng.offset, rng.offset + rng.length
        while off < end:
            n = min(len(buf), end - off)
            h.update(pread_into(fd, buf, off, n))
            off += n
        rng.check(fd, then)
    finally:
        os.close(fd)
    return h.hexdigest()


class _Fallback(Exception):
    """sendfile is not available for this connection: send the rest from a buffer."""


class FileRangePayload(aiohttp_payload.Payload):
    """The aiohttp body of one PUT attempt of a :class:`FileRange` (made by Transport.put).

    ``bump()`` re-arms the stall deadline, ``pause()`` suspends it while the throttle holds
    a slice back. Errors this payload decides on (:class:`LocalFileChanged`) are kept in
    ``error`` because aiohttp wraps whatever a body writer raises into a connection error.
    """

    _autoclose = True

    def __init__(self, rng: FileRange, fd: int, *, use_sendfile: bool,
                 bump: Callable[[], None], pause: Callable[[], None],
                 throttle: Any = None, on_sent: Callable[[int], None] | None = None,
                 piece: int = 256 * 1024) -> None:
        # aiohttp wants a Content-Type here; Transport.put skips it (skip_auto_headers).
        super().__init__(rng, content_type=None)
        self._size = rng.length
        self.rng = rng
        self.fd = fd
        self.use_sendfile = use_sendfile
        self.bump = bump
        self.pause = pause
        self.throttle = throttle
        self.on_sent = on_sent
        self.piece = piece
        self.started = False
        self.closed = False  # close_fd() was called (the fd goes when no read uses it)
        self._lock = threading.Lock()
        self._readers = 0  # worker threads reading self.fd right now
        self.path_used: str | None = None  # "sendfile" | "buffered", once writing started
        self.error: BaseException | None = None
        self.sent = 0
        self.resume_at = rng.offset  # where the buffered path starts (after sendfile slices)

    @property
    def consumed(self) -> bool:
        # One attempt only, like the in-memory generator body: aiohttp must not silently
        # replay it on a fresh connection (progress would count twice); ua's retry does that.
        return self.started

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a FileRange body cannot be decoded")

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    def close_fd(self) -> None:
        """Close the descriptor now, or when the last worker-thread read of it returns (a
        cancelled attempt must not close an fd a thread is reading: the number could be
        reused by another file meanwhile)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._readers:
                return
        os.close(self.fd)

    def _pread(self, view: memoryview, offset: int, length: int) -> memoryview:
        """pread_into in a worker thread, keeping the fd open while it runs."""
        with self._lock:
            if self.closed:
                raise asyncio.CancelledError
            self._readers += 1
        try:
            return pread_into(self.fd, view, offset, length)
        finally:
            with self._lock:
                self._readers -= 1
                last = self.closed and not self._readers
            if last:
                os.close(self.fd)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        if self.started or self.closed:
            raise RuntimeError("a FileRange body is sent once per attempt")
        self.started = True
        try:
            await self._write(writer)
        except LocalFileChanged as exc:
            self.error = exc
            transport = writer.transport
            if transport is not None:
                transport.abort()  # fewer bytes than Content-Length must never look complete
            raise
        finally:
            self.close_fd()

    async def _write(self, writer: Any) -> None:
        rng = self.rng
        then = rng.check(self.fd, None)
        loop = asyncio.get_running_loop()
        if self.use_sendfile and self.sendfile_possible(writer):
            try:
                await self._write_sendfile(writer, loop)
            except _Fallback:
                pass
            else:
                rng.check(self.fd, then)
                return
        if self.path_used is None:
            self.path_used = "buffered"
        await self._write_buffered(writer, loop)
        rng.check(self.fd, then)

    @staticmethod
    def sendfile_possible(writer: Any) -> bool:
        transport = writer.transport
        if transport is None or not hasattr(writer, "send_headers"):
            return False
        if transport.get_extra_info("sslcontext") is not None or \
                transport.get_extra_info("socket") is None:
            return False
        mode = getattr(transport, "_sendfile_compatible", None)  # asyncio's own verdict
        return mode is None or getattr(mode, "name", "") == "TRY_NATIVE"

    async def _throttled(self, n: int) -> None:
        if self.throttle is not None:
            self.pause()  # waiting for tokens is not a stall
            await self.throttle.acquire(n)

    def _done(self, n: int) -> None:
        self.sent += n
        self.bump()
        if self.on_sent is not None:
            self.on_sent(n)

    async def _write_sendfile(self, writer: Any, loop: asyncio.AbstractEventLoop) -> None:
        """``loop.sendfile`` in slices. The request headers sit in aiohttp's StreamWriter
        until the first body write: push them into the transport first; loop.sendfile then
        waits until the transport's write buffer is empty before the kernel takes over."""
        rng = self.rng
        writer.send_headers()
        transport = writer.transport
        fileobj = open(self.fd, "rb", buffering=0, closefd=False)  # noqa: SIM115
        off, end = rng.offset, rng.offset + rng.length
        size = SENDFILE_MIN_SLICE
        if self.throttle is not None:
            size = max(1, min(SENDFILE_MAX_SLICE, self.throttle.piece_size))
        try:
            while off < end:
                n = min(size, end - off)
                await self._throttled(n)
                self.bump()
                t0 = loop.time()
                try:
                    sent = await loop.sendfile(transport, fileobj, off, n, fallback=False)
                except (asyncio.SendfileNotAvailableError, NotImplementedError) as exc:
                    # Refused before this slice sent a byte (asyncio's contract): the buffered
                    # path carries on from the same offset. A broken socket also ends up here
                    # on a slice's first call; the buffered write then reports it.
                    raise _Fallback from exc
                if sent != n:
                    raise rng.changed(f"only {off - rng.offset + sent} of {rng.length} bytes "
                                      "could be read")
                self.path_used = "sendfile"
                off += n
                self._done(n)
                if self.throttle is None:
                    dt = loop.time() - t0
                    rate = n / dt if dt > 0 else float("inf")
                    size = int(min(SENDFILE_MAX_SLICE, 2 * n,
                                   max(SENDFILE_MIN_SLICE, rate * SENDFILE_SLICE_SECONDS)))
        finally:
            self.resume_at = off
            fileobj.close()  # closefd=False: the descriptor stays ours

    async def _write_buffered(self, writer: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Read slices into two halves of one buffer and write them in pieces. A half is
        refilled only once the transport cannot hold a reference to it any more: transports
        send FIFO, so when fewer bytes are buffered than were written after that half, none
        of the half is among them (asyncio ≥ 3.12 keeps memoryviews of written data instead
        of copying it)."""
        rng = self.rng
        start = self.resume_at
        end = rng.offset + rng.length
        if start >= end:
            return
        slice_len = min(BUFFERED_SLICE, end - start)
        buf = bytearray(2 * slice_len)
        halves = [memoryview(buf)[:slice_len], memoryview(buf)[slice_len:]]
        written_after = [None, None]  # bytes written after the half's last piece
        piece = self.piece
        if self.throttle is not None:
            piece = max(1, min(piece, self.throttle.piece_size))
        off, h = start, 0
        while off < end:
            n = min(slice_len, end - off)
            transport = writer.transport
            if written_after[h] is not None and (
                    transport is None or transport.get_write_buffer_size() >= written_after[h]):
                # Cannot prove the transport is done with this half: use fresh memory.
                halves[h] = memoryview(bytearray(slice_len))
            view = halves[h]
            self.bump()
            try:
                if n <= INLINE_READ:
                    data = pread_into(self.fd, view, off, n)
                else:
                    data = await loop.run_in_executor(None, self._pread, view, off, n)
            except LocalFileChanged:
                raise rng.changed(f"only {off - rng.offset} of {rng.length} bytes could be "
                                  "read") from None
            except OSError as exc:  # EIO and the like: local, and not a network condition
                raise LocalFileChanged(f"Cannot read {rng.label} at offset {off}: "
                                       f"{exc.strerror or exc}") from None
            for p in range(0, n, piece):
                chunk = data[p:p + piece]
                await self._throttled(len(chunk))
                self.bump()
                await writer.write(chunk)
                self._done(len(chunk))
            written_after[h] = 0
            other = 1 - h
            if written_after[other] is not None:
                written_after[other] += n
            off += n
            h = other

