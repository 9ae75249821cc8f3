"""Hostile input to ``ua``: a fake DNAnexus API of our own (aiohttp on 127.0.0.1, in the test)
that lies, breaks its JSON, redirects, never finishes closing, paginates forever, or answers
huge bodies. Whatever it does, ``ua`` fails the file with a clear message and NEVER reports
success: stdout says ``failed``, the exit code is not 0, and a file whose parts the server
misreports is never closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from aiohttp import web

from ua.ids import new_id

TOKEN = "hostileTestToken0123456789abcdefghijklmnop"
MiB = 1024 * 1024


class FakeDX:
    """A minimal honest DNAnexus API + storage; ``mode`` turns one behaviour hostile."""

    def __init__(self, mode: str = "honest"):
        self.mode = mode
        self.project = new_id("project")
        self.files: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []  # (method, path)
        self.auth_seen: list[str] = []
        self.port = 0
        self.evil_hits: list[dict] = []
        self.other: "FakeDX | None" = None  # another origin that redirects point to
        self._loop = None
        self._ready = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeDX":
        threading.Thread(target=self._run, daemon=True).start()
        assert self._ready.wait(10)
        return self

    def _run(self):
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_put("/put/{fid}/{idx}", self.put)
        app.router.add_route("*", "/evil/{tail:.*}", self.evil)
        app.router.add_post("/{a}/{b}", self.api)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()

    def stop(self):
        if self._loop:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def elsewhere(self) -> str:
        """A different origin (another port) for redirects, or this one's /evil path."""
        return (self.other or self).base + "/evil"

    def all_evil_hits(self) -> list[dict]:
        return self.evil_hits + (self.other.evil_hits if self.other else [])

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DX_")}
        env.update({"DX_APISERVER_PROTOCOL": "http", "DX_APISERVER_HOST": "127.0.0.1",
                    "DX_APISERVER_PORT": str(self.port), "DX_PROJECT_CONTEXT_ID": self.project,
                    "DX_SECURITY_CONTEXT": json.dumps({"auth_token_type": "Bearer",
                                                       "auth_token": TOKEN}),
                    "UA_RETRY_BASE_DELAY": "0.001", "UA_STALL_TIMEOUT": "2",
                    "UA_WAIT_ON_CLOSE_TIMEOUT": "2"})
        return env

    def closes(self) -> list[str]:
        return [p for m, p in self.calls if p.endswith("/close")]

    # ------------------------------------------------------------------ handlers
    async def evil(self, request: web.Request):
        self.evil_hits.append({"path": request.path, "headers": dict(request.headers),
                               "body": len(await request.read())})
        return web.json_response({"id": "file-" + "B" * 24, "state": "closed"})

    async def put(self, request: web.Request):
        fid, idx = request.match_info["fid"], int(request.match_info["idx"])
        self.calls.append(("PUT", request.path))
        data = await request.read()
        f = self.files[fid]
        f["parts"][str(idx)] = {"size": len(data), "md5": hashlib.md5(data).hexdigest(),
                                "state": "complete"}
        if self.mode == "put-redirect":
            raise web.HTTPTemporaryRedirect(f"{self.elsewhere}/put")
        return web.Response(status=200)

    async def api(self, request: web.Request):
        a, b = request.match_info["a"], request.match_info["b"]
        route = f"/{a}/{b}"
        self.calls.append(("POST", route))
        self.auth_seen.append(request.headers.get("Authorization", ""))
        body = await request.json() if request.can_read_body else {}
        m = self.mode
        if route == "/system/greet":
            return web.json_response({"messages": [], "update": {"available": False}})
        if route == "/system/whoami":
            return web.json_response({"id": "user-hostile"})
        if a.startswith("project-") and b == "describe":
            return web.json_response({
                "id": self.project, "name": "hostile", "level": "ADMINISTER",
                "fileUploadParameters": {"minimumPartSize": 5 * MiB, "maximumPartSize": 5 * 1024 * MiB,
                                         "maximumFileSize": 5 * 1024 ** 4, "maximumNumParts": 10000,
                                         "emptyLastPartAllowed": True}})
        if route == "/system/findDataObjects":
            if m == "endless-pages":
                return web.json_response({"results": [], "next": {"project": self.project,
                                                                  "id": "file-" + "0" * 24}})
            if m == "find-garbage":
                return web.Response(body=b'{"results": [', content_type="application/json")
            return web.json_response({"results": [], "next": None})
        if route == "/file/new":
            if m == "new-not-json":
                return web.Response(body=b"<html>Welcome to nginx</html>", content_type="text/html")
            if m == "new-no-id":
                return web.json_response({"ok": True})
            if m == "new-redirect":
                raise web.HTTPFound(f"{self.elsewhere}/file-new")
            fid = new_id("file")
            self.files[fid] = {"state": "open", "parts": {}, "name": body.get("name")}
            return web.json_response({"id": fid})
        fid = a
        f = self.files.get(fid)
        if f is None:
            return web.json_response({"error": {"type": "ResourceNotFound", "message": "no"}},
                                     status=404)
        if b == "upload":
            if m == "upload-evil-url":
                return web.json_response({"url": f"{self.base}/evil/put", "headers": {}})
            if m == "upload-garbage":
                return web.json_response({"url": None, "headers": [1, 2]})
            return web.json_response({"url": f"{self.base}/put/{fid}/{body['index']}",
                                      "headers": {"content-length": str(body["size"]),
                                                  "content-md5": "ignored"}})
        if b == "describe":
            parts = {k: dict(v) for k, v in f["parts"].items()}
            if m == "describe-garbage":
                return web.Response(body=b'{"id": "' + fid.encode() + b'", "parts": {',
                                    content_type="application/json")
            if m == "describe-non-json-200":
                return web.Response(body=b"OK", content_type="text/plain")
            if m == "wrong-md5":
                for p in parts.values():
                    p["md5"] = "0" * 32
            if m == "wrong-size":
                for p in parts.values():
                    p["size"] += 1
            if m == "parts-never-complete":
                for p in parts.values():
                    p["state"] = "pending"
            if m == "extra-part":
                parts["9999"] = {"size": 1, "md5": "0" * 32, "state": "complete"}
            if m == "parts-vanish":
                parts = {}
            if m == "describe-huge":
                pad = {str(i): {"size": 0, "md5": "0" * 32, "state": "complete"}
                       for i in range(100_000, 160_000)}
                parts.update(pad)
            if m == "describe-redirect":
                raise web.HTTPFound(f"{self.elsewhere}/describe")
            if m in ("describe-80mib", "describe-80mib-length"):
                # 80 MiB streamed (chunked, or with an honest Content-Length): never built in
                # memory here; ua must stop reading at its 64 MiB cap.
                resp = web.StreamResponse(headers={"Content-Type": "application/json"})
                if m == "describe-80mib-length":
                    resp.content_length = 80 * MiB
                await resp.prepare(request)
                chunk = b" " * MiB
                try:
                    for _ in range(80):
                        await resp.write(chunk)
                except (ConnectionError, RuntimeError):
                    self.calls.append(("ABORTED", route))
                return resp
            state = f["state"]
            if m == "never-closed" and state != "open":
                state = "closing"
            if m == "closes-to-open" and state != "open":
                state = "open"
            return web.json_response({"id": fid, "project": self.project, "name": f["name"],
                                      "state": state, "parts": parts, "size": 0})
        if b == "close":
            if m == "close-422":
                return web.json_response({"error": {"type": "InvalidState",
                                                    "message": "part 1 is too small"}}, status=422)
            f["state"] = "closed"
            return web.json_response({"id": fid})
        return web.json_response({"error": {"type": "ResourceNotFound", "message": route}},
                                 status=404)


@pytest.fixture
def fake():
    servers = []

    def factory(mode):
        s = FakeDX(mode).start()
        s.other = FakeDX("honest").start()
        servers.extend([s, s.other])
        return s

    yield factory
    for s in servers:
        s.stop()


def run_ua(fake, *args, timeout=60):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "ua", *map(str, args)], env=fake.env(),
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p, time.monotonic() - t0


@pytest.fixture
def src(tmp_path):
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello hostile world\n" * 50)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 * MiB))  # two parts at -s 5M
    return small, big


def test_honest_fake_server_works(fake, src):
    """The control: against the honest fake both files upload and close."""
    s = fake("honest")
    p, _ = run_ua(s, "-s", "5M", "--wait-on-close", *src)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.split()) == 2 and "failed" not in p.stdout
    assert len(s.closes()) == 2


# mode → (text expected in stderr (case-insensitive), must the file stay unclosed?)
HOSTILE = {
    "describe-garbage": ("not valid json", True),
    "describe-non-json-200": ("not json", True),
    "wrong-md5": ("not complete on the server with the size and md5", True),
    "wrong-size": ("not complete on the server with the size and md5", True),
    "parts-never-complete": ("not complete on the server", True),
    "parts-vanish": ("not complete on the server", True),
    "extra-part": ("unexpected part", True),
    "describe-huge": ("unexpected part", True),
    "new-not-json": ("not json", True),
    "new-no-id": ("", True),
    "upload-garbage": ("malformed /upload response", True),
    "upload-evil-url": ("not complete on the server", True),
    "close-422": ("part 1 is too small", False),
    "never-closed": ("still closing", False),
    "closes-to-open": ("is open after close", False),
    "find-garbage": ("not valid json", True),
    "describe-redirect": ("with a redirect (http 302) to http://127.0.0.1", True),
    "new-redirect": ("refusing to follow it", True),
    "describe-80mib": ("refusing to read it", True),
    "describe-80mib-length": ("larger than 67108864 bytes", True),
}


@pytest.mark.parametrize("mode", list(HOSTILE))
def test_hostile_server_never_yields_success(fake, src, mode):
    s = fake(mode)
    expect, never_closed = HOSTILE[mode]
    p, took = run_ua(s, "-s", "5M", "-r", "2", "--wait-on-close", *src)
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr[-2000:])
    assert p.stdout.splitlines() == ["failed", "failed"], p.stdout
    err = p.stderr.lower()
    assert "could not be uploaded" in err or "failed" in err
    assert expect in err, p.stderr[-2000:]
    assert "traceback" not in err and "internal error" not in err, p.stderr[-3000:]
    if never_closed:
        assert s.closes() == [], "a file whose parts the server misreported was closed"
    # the token only ever went to the API server, never to another path
    for hit in s.all_evil_hits():
        assert TOKEN not in json.dumps(hit["headers"]), hit
    assert TOKEN not in p.stderr and TOKEN not in p.stdout
    assert took < 45


def test_put_redirect_is_not_followed_to_another_place(fake, src):
    """A storage endpoint answering 307 must not make ua send the part elsewhere and call it
    done: the redirect is a permanent error for that file, nothing reaches the target."""
    s = fake("put-redirect")
    p, _ = run_ua(s, "-s", "5M", "-r", "2", src[0])
    assert s.all_evil_hits() == [], s.all_evil_hits()
    assert p.returncode == 1, (p.stdout, p.stderr[-2000:])
    assert p.stdout.splitlines() == ["failed"]
    assert "storage server answered put" in p.stderr.lower()
    assert "refusing to follow it" in p.stderr
    assert s.closes() == []
    assert len([c for c in s.calls if c[0] == "PUT"]) == 1  # a redirect is not retried


def test_endless_pagination_is_bounded(fake, src):
    """findDataObjects answering ``next`` forever (resume lookup) must not hang ua."""
    s = fake("endless-pages")
    try:
        p, took = run_ua(s, "-r", "1", src[0], timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("ua followed a never-ending findDataObjects cursor for 30 s")
    assert p.returncode == 1 and p.stdout.splitlines() == ["failed"]
    assert "pagination does not advance" in p.stderr
