"""A loopback fault proxy (a ~toxiproxy in asyncio) between ``ua`` and ``ua-server``.

``FaultProxy(upstream_host, upstream_port).start()`` listens on 127.0.0.1:0 in a background
thread and forwards every connection to the upstream. It understands just enough HTTP/1.1 on
the client→server side (request line, headers, ``Content-Length`` bodies, keep-alive) to apply
faults per *request*:

* connection-wide "toxics", read on every chunk so they can be switched at run time:
  ``latency`` (seconds added to every chunk in both directions, pipelined — throughput is kept)
  and ``bandwidth`` (bytes/s, one budget shared by all connections and both directions);
* per-request faults, each limited to requests matching ``method``/``path`` prefix and to the
  first ``count`` such requests (``None``: forever):
  ``stall`` — accept the request's bytes and never forward or answer them (the connection stays
  open until the client gives up) — and ``reset_after=N`` — forward the first N bytes of the
  request, then close both sides with a TCP RST — and ``delay`` — hold the request for
  ``seconds`` before forwarding it (e.g. until its signed URL has expired).

ua-server builds upload URLs from the request's ``Host`` header, so once ua talks to the proxy
the PUTs go through it as well. ``stats`` counts connections, requests, stalls and resets.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class RequestFault:
    kind: str  # "stall" | "reset" | "delay"
    method: str | None = None  # e.g. "PUT"; None = any
    path: str | None = None  # path prefix, e.g. "/upload/"; None = any
    path_re: str | None = None  # or a regular expression searched in the path (with query)
    count: int | None = None  # affect the first `count` matching requests; None = all
    reset_after: int = 0  # for "reset": request bytes forwarded before the RST
    seconds: float = 0.0  # for "delay": hold the request this long before forwarding it
    hits: int = 0  # matching requests seen
    fired: int = 0  # requests actually stalled / reset (a request shorter than reset_after
    #                 passes untouched)

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if self.method is not None and method != self.method:
            return False
        if self.path is not None and not path.startswith(self.path):
            return False
        if self.path_re is not None and not re.search(self.path_re, path):
            return False
        return True


@dataclass
class Stats:
    connections: int = 0
    requests: int = 0
    stalls: int = 0
    resets: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    methods: dict = field(default_factory=dict)
    paths: list = field(default_factory=list)  # (method, path with query) of every request


class _Bucket:
    """One shared bandwidth budget: each chunk reserves len/rate seconds of the link."""

    def __init__(self) -> None:
        self.next_free = 0.0

    async def take(self, n: int, rate: float | None) -> None:
        if not rate:
            return
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + n / rate
        delay = self.next_free - now
        if delay > 0:
            await asyncio.sleep(delay)


def _rst(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, latency: float = 0.0,
                 bandwidth: float | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency = latency
        self.bandwidth = bandwidth
        self.faults: list[RequestFault] = []
        self.stats = Stats()
        self.host = "127.0.0.1"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._bucket = _Bucket()
        self._conns: set[asyncio.Task] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ control (any thread)
    def set(self, *, latency: float | None = None, bandwidth: float | None = -1,
            faults: list[RequestFault] | None = None) -> "FaultProxy":
        """Change toxics/faults at run time. ``bandwidth=None`` removes the cap."""
        if latency is not None:
            self.latency = latency
        if bandwidth != -1:
            self.bandwidth = bandwidth
        if faults is not None:
            with self._lock:
                self.faults = list(faults)
        return self

    def clear(self) -> "FaultProxy":
        with self._lock:
            self.faults = []
        self.latency = 0.0
        self.bandwidth = None
        return self

    def add_fault(self, fault: RequestFault) -> RequestFault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _pick(self, method: str, path: str) -> RequestFault | None:
        with self._lock:
            for f in self.faults:
                if f.matches(method, path):
                    f.hits += 1
                    return f
        return None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FaultProxy":
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            return

        async def shutdown():
            assert self._server is not None
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ data path
    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self.stats.connections += 1
        swriter = None
        try:
            try:
                sreader, swriter = await asyncio.open_connection(*self.upstream)
            except OSError:
                _rst(cwriter)
                return
            up: asyncio.Queue = asyncio.Queue()
            down: asyncio.Queue = asyncio.Queue()
            ends = {"c": cwriter, "s": swriter}
            tasks = [
                asyncio.create_task(self._read_requests(creader, up, ends)),
                asyncio.create_task(self._write(up, swriter, ends, "up")),
                asyncio.create_task(self._read_plain(sreader, down)),
                asyncio.create_task(self._write(down, cwriter, ends, "down")),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                # the connection ends when both directions are done, or when any side reset
                await asyncio.gather(*tasks)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, _Reset):
                pass
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            pass
        finally:
            for w in (cwriter, swriter):
                if w is not None and not w.transport.is_closing():
                    w.transport.abort()
            self._conns.discard(task)

    async def _read_plain(self, reader: asyncio.StreamReader, q: asyncio.Queue) -> None:
        while True:
            data = await reader.read(CHUNK)
            await q.put((time.monotonic(), data))
            if not data:
                return

    async def _read_requests(self, reader: asyncio.StreamReader, q: asyncio.Queue,
                             ends: dict) -> None:
        """Client → server, request by request."""
        buf = b""
        while True:
            # --- headers of the next request
            while b"\r\n\r\n" not in buf:
                data = await reader.read(CHUNK)
                if not data:
                    if buf:
                        await q.put((time.monotonic(), buf))
                    await q.put((time.monotonic(), b""))
                    return
                buf += data
            head_end = buf.index(b"\r\n\r\n") + 4
            head = buf[:head_end]
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("?", "?")
            length = 0
            chunked = False
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip() or 0)
                elif k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
                    chunked = True
            self.stats.requests += 1
            self.stats.methods[method] = self.stats.methods.get(method, 0) + 1
            self.stats.paths.append((method, path))
            fault = self._pick(method, path)
            if chunked:  # not used by ua; pass the rest of the connection through untouched
                await q.put((time.monotonic(), buf))
                await self._read_plain(reader, q)
                return
            request = buf[:head_end]
            rest = buf[head_end:]
            body_have = rest[:length]
            buf = rest[length:]
            need = length - len(body_have)
            if fault is not None and fault.kind == "stall":
                self.stats.stalls += 1
                fault.fired += 1
                # accept everything, forward nothing, never answer
                while True:
                    data = await reader.read(CHUNK)
                    if not data:
                        raise _Reset()
            if fault is not None and fault.kind == "delay":
                fault.fired += 1
                await asyncio.sleep(fault.seconds)
            limit = fault.reset_after if fault is not None and fault.kind == "reset" else None
            sent = 0

            async def forward(data: bytes) -> bool:
                nonlocal sent
                if limit is not None and sent + len(data) >= limit:
                    data = data[: max(0, limit - sent)]
                    if data:
                        await q.put((time.monotonic(), data))
                    await q.put((time.monotonic(), _RESET))
                    self.stats.resets += 1
                    assert fault is not None
                    fault.fired += 1
                    return False
                sent += len(data)
                await q.put((time.monotonic(), data))
                return True

            if not await forward(request + body_have):
                await _forever()
            while need > 0:
                data = await reader.read(min(CHUNK, need))
                if not data:
                    await q.put((time.monotonic(), b""))
                    return
                need -= len(data)
                extra = b""
                if need < 0:  # cannot happen with read(n), kept for safety
                    data, extra = data[:need], data[need:]
                buf = extra + buf
                if not await forward(data):
                    await _forever()

    async def _write(self, q: asyncio.Queue, writer: asyncio.StreamWriter, ends: dict,
                     direction: str) -> None:
        while True:
            t, data = await q.get()
            if data is _RESET:
                await asyncio.sleep(0.05)  # let the partial bytes reach the server
                _rst(ends["s"])
                _rst(ends["c"])
                raise _Reset()
            lat = self.latency
            if lat:
                wait = t + lat - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            if not data:
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                except (OSError, RuntimeError):
                    pass
                return
            await self._bucket.take(len(data), self.bandwidth)
            if direction == "up":
                self.stats.bytes_up += len(data)
            else:
                self.stats.bytes_down += len(data)
            writer.write(data)
            await writer.drain()


class _Reset(Exception):
    pass


_RESET = object()


async def _forever() -> None:
    await asyncio.Event().wait()
