"""ua.api against a small scripted HTTP server on 127.0.0.1 (real sockets, real aiohttp).

The scripted server lets each test decide the exact answer to every request, which the live
ua-server's probabilistic faults cannot; end-to-end fault tests live in test_pipeline*.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from ua.api import APIConfig, DXClient
from ua.api.errors import (
    APIError,
    BadResponse,
    ConnectError,
    HTTPError,
    InvalidAuthentication,
    InvalidInput,
    RetriesExhausted,
    StallError,
    TransientAPIError,
    TransientError,
    TransientHTTPError,
)
from ua.api.retry import RetryPolicy

FAST = RetryPolicy(base_delay=0.001)


class Script:
    """Per-route queues of canned answers; records every request."""

    def __init__(self) -> None:
        self.answers: dict[str, list] = {}
        self.log: list[dict] = []

    def queue(self, key: str, *answers) -> None:
        self.answers.setdefault(key, []).extend(answers)

    def next(self, key: str):
        q = self.answers.get(key)
        return q.pop(0) if q else None


def json_resp(obj, status=200, **headers):
    return web.Response(status=status, body=json.dumps(obj).encode(),
                        content_type="application/json", headers=headers)


def api_error(status, etype, msg, **headers):
    return json_resp({"error": {"type": etype, "message": msg}}, status, **headers)


@pytest.fixture
async def scripted():
    script = Script()

    async def handler(request: web.Request):
        body = await request.read()
        key = f"{request.method} {request.path}"
        script.log.append({"key": key, "headers": dict(request.headers), "body": body})
        ans = script.next(key)
        if callable(ans):
            ans = await ans(request)
        if ans is not None:
            return ans
        if request.method == "PUT":
            return web.Response(status=200)
        if request.path.endswith("/upload"):
            port = request.url.port
            return json_resp({"url": f"http://127.0.0.1:{port}/store/p?sig=SECRET",
                              "headers": {"content-length": "5", "x-echo": "yes"}})
        return json_resp({"id": "ok"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    script.port = port
    script.config = APIConfig(protocol="http", host="127.0.0.1", port=port, token="tok-secret-123")
    yield script
    await runner.cleanup()


async def test_headers_and_json_round_trip(scripted):
    async with DXClient(scripted.config, policy=FAST) as api:
        assert await api.whoami() == "ok"
    h = scripted.log[0]["headers"]
    assert h["Authorization"] == "Bearer tok-secret-123"
    assert h["DNAnexus-API"] == "1.0.0"
    assert h["Content-Type"] == "application/json"
    assert h["User-Agent"].startswith("ua/") and "1.5.33" in h["User-Agent"]
    assert json.loads(scripted.log[0]["body"]) == {}


async def test_500_retried_then_success(scripted):
    scripted.queue("POST /system/whoami", api_error(500, "InternalError", "boom"),
                   api_error(500, "InternalError", "boom"))
    async with DXClient(scripted.config, policy=FAST) as api:
        assert await api.whoami() == "ok"
    assert len(scripted.log) == 3


async def test_500_gives_up_after_six_retries(scripted):
    scripted.queue("POST /system/whoami", *[api_error(500, "InternalError", "boom") for _ in range(10)])
    async with DXClient(scripted.config, policy=FAST) as api:
        with pytest.raises(TransientAPIError) as ei:
            await api.whoami()
    assert len(scripted.log) == 7
    assert str(ei.value) == "InternalError: 'boom', Server returned HTTP code '500'"
    assert isinstance(ei.value, APIError) and isinstance(ei.value, TransientError)


async def test_503_retry_after_does_not_spend_retries(scripted):
    scripted.queue("POST /system/greet",
                   *[api_error(503, "ServiceUnavailable", "later", **{"Retry-After": "1"})
                     for _ in range(4)])
    async with DXClient(scripted.config, policy=FAST) as api:
        await api.greet(max_retries=0)
    assert len(scripted.log) == 5


async def test_503_forever_is_bounded(scripted):
    policy = RetryPolicy(base_delay=0.0001, max_throttled=5)
    scripted.queue("POST /system/greet", *[api_error(429, "RateLimitConditional", "slow") for _ in range(50)])
    async with DXClient(scripted.config, policy=policy) as api:
        with pytest.raises(TransientAPIError):
            await api.greet()
    assert len(scripted.log) == 6


async def test_422_and_401_never_retried(scripted):
    scripted.queue("POST /file/new", api_error(422, "InvalidInput", "nope"))
    scripted.queue("POST /system/whoami", api_error(401, "InvalidAuthentication", "bad token"))
    async with DXClient(scripted.config, policy=FAST) as api:
        with pytest.raises(InvalidInput) as ei:
            await api.file_new(project="project-x", name="a")
        with pytest.raises(InvalidAuthentication):
            await api.whoami()
    assert len(scripted.log) == 2
    assert ei.value.type == "InvalidInput" and ei.value.status == 422
    assert str(ei.value) == "InvalidInput: 'nope', Server returned HTTP code '422'"


async def test_non_json_200_is_retried_broken_response(scripted):
    scripted.queue("POST /system/whoami", web.Response(text="hello"), web.Response(text="again"))
    async with DXClient(scripted.config, policy=FAST) as api:
        with pytest.raises(BadResponse):
            await api.call("/system/whoami", {}, max_retries=0)
        assert await api.whoami() == "ok"
    assert len(scripted.log) == 3


async def test_nonce_identical_across_retries(scripted):
    scripted.queue("POST /file/new", api_error(500, "InternalError", "x"))
    async with DXClient(scripted.config, policy=FAST) as api:
        await api.file_new(project="project-x", name="a", properties={"k": "v"})
    bodies = [json.loads(r["body"]) for r in scripted.log]
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert len(bodies[0]["nonce"]) <= 128 and bodies[0]["parents"] is True


async def test_connection_refused_is_connect_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = APIConfig(protocol="http", host="127.0.0.1", port=port, token="t")
    async with DXClient(cfg, policy=FAST) as api:
        with pytest.raises(ConnectError):
            await api.call("/system/whoami", {}, max_retries=2)


async def test_find_follows_next(scripted):
    scripted.queue("POST /system/findDataObjects",
                   json_resp({"results": [{"id": "a"}], "next": {"c": 1}}),
                   json_resp({"results": [{"id": "b"}], "next": None}))
    async with DXClient(scripted.config, policy=FAST) as api:
        res = await api.find_data_objects(**{"class": "file"})
    assert [r["id"] for r in res] == ["a", "b"]
    assert json.loads(scripted.log[1]["body"])["starting"] == {"c": 1}


async def test_put_sends_returned_headers_without_auth(scripted):
    sent = []
    async with DXClient(scripted.config, policy=FAST) as api:
        url, headers = await api.file_upload("file-x", 1, 5, "0" * 32)
        await api.put_part(url, headers, b"hello", on_sent=sent.append)
    put = scripted.log[-1]
    assert put["key"] == "PUT /store/p" and put["body"] == b"hello"
    assert "Authorization" not in put["headers"] and "Content-Type" not in put["headers"]
    assert put["headers"]["x-echo"] == "yes" and put["headers"]["Content-Length"] == "5"
    assert sum(sent) == 5


async def test_put_2xx_with_body_tolerated_and_empty_put(scripted):
    scripted.queue("PUT /store/p", web.Response(status=200, text="<ok/>"))
    async with DXClient(scripted.config, policy=FAST) as api:
        await api.put_part(f"http://127.0.0.1:{scripted.port}/store/p", {}, b"abc")
        await api.put_part(f"http://127.0.0.1:{scripted.port}/store/p", {}, b"")
    assert scripted.log[-1]["body"] == b"" and scripted.log[-1]["headers"]["Content-Length"] == "0"


async def test_put_400_non_json_transient_json_permanent(scripted):
    url = f"http://127.0.0.1:{scripted.port}/store/p"
    scripted.queue("PUT /store/p", web.Response(status=400, text="<Code>RequestTimeout</Code>"),
                   web.Response(status=403, text="<Code>AccessDenied</Code>expired"),
                   web.Response(status=404, text="<Code>NoSuchUpload</Code>"),
                   api_error(400, "InvalidInput", "bad part"))
    async with DXClient(scripted.config, policy=FAST) as api:
        with pytest.raises(TransientHTTPError):
            await api.put_part(url, {}, b"abc")
        with pytest.raises(TransientHTTPError):  # an expired URL: the next try gets a new one
            await api.put_part(url, {}, b"abc")
        with pytest.raises(HTTPError):
            await api.put_part(url, {}, b"abc")
        with pytest.raises(APIError) as ei:
            await api.put_part(url, {}, b"abc")
    assert not isinstance(ei.value, TransientError)


async def test_upload_part_fresh_url_every_try(scripted):
    scripted.queue("PUT /store/p", web.Response(status=500, text="x"),
                   web.Response(status=503, text="x", headers={"Retry-After": "0"}),
                   web.Response(status=500, text="x"))
    retries = []
    async with DXClient(scripted.config, policy=FAST) as api:
        used = await api.upload_part("file-x", 1, b"hello", "0" * 32, tries=3,
                                     on_retry=lambda n, e, d: retries.append(n))
    keys = [r["key"] for r in scripted.log]
    assert keys.count("POST /file-x/upload") == 4 and keys.count("PUT /store/p") == 4
    assert used == 4 and retries == [1, 2, 3]  # the 503 did not spend one of the 3 tries


async def test_upload_part_exhausts_tries(scripted):
    scripted.queue("PUT /store/p", *[web.Response(status=500, text="x") for _ in range(5)])
    async with DXClient(scripted.config, policy=FAST) as api:
        with pytest.raises(RetriesExhausted) as ei:
            await api.upload_part("file-x", 2, b"hello", "0" * 32, tries=2)
    assert ei.value.attempts == 2
    assert [r["key"] for r in scripted.log].count("PUT /store/p") == 2


async def test_upload_part_permanent_error_not_retried(scripted):
    scripted.queue("POST /file-x/upload", api_error(422, "InvalidState", "file is not open"))
    async with DXClient(scripted.config, policy=FAST) as api:
        with pytest.raises(APIError):
            await api.upload_part("file-x", 1, b"hello", "0" * 32, tries=5)
    assert len(scripted.log) == 1


async def test_put_stall_detected_quickly():
    accepted = asyncio.Event()
    writers = []

    async def never_answer(reader, writer):
        writers.append(writer)
        accepted.set()
        await asyncio.sleep(30)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = APIConfig(protocol="http", host="127.0.0.1", port=port)
    t0 = time.monotonic()
    async with DXClient(cfg, stall_timeout=0.5) as api:
        with pytest.raises(StallError):
            await api.put_part(f"http://127.0.0.1:{port}/x", {}, b"x" * 100_000)
    assert time.monotonic() - t0 < 5
    server.close()
    for w in writers:
        w.close()


async def test_put_connection_reset_is_transient():
    async def reset_mid_body(reader, writer):
        await reader.read(1000)
        sock = writer.get_extra_info("socket")
        import socket
        import struct

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()

    server = await asyncio.start_server(reset_mid_body, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = APIConfig(protocol="http", host="127.0.0.1", port=port)
    async with DXClient(cfg, stall_timeout=5) as api:
        with pytest.raises(TransientError):
            await api.put_part(f"http://127.0.0.1:{port}/x", {}, b"x" * 4_000_000)
    server.close()


async def test_tls_ca_file_noverify_and_untrusted(tls_apps):
    from ua.api.errors import TLSError

    cert = tls_apps.cert
    calls = []

    async def whoami(request):
        calls.append(1)
        return json_resp({"id": "user-tls"})

    app = web.Application()
    app.router.add_post("/system/whoami", whoami)
    port = await tls_apps.start(app)
    for ca in (str(cert), "NOVERIFY"):
        cfg = APIConfig(protocol="https", host="127.0.0.1", port=port, token="t", ca_cert=ca)
        async with DXClient(cfg, policy=FAST) as api:
            assert await api.whoami() == "user-tls"
    cfg = APIConfig(protocol="https", host="127.0.0.1", port=port, token="t")
    async with DXClient(cfg, policy=FAST) as api:
        with pytest.raises(TLSError):  # self-signed, not in the system bundle: no retries
            await api.whoami()
    assert len(calls) == 2


async def test_verbose_log_masks_token_and_signature(scripted, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="ua.api")
    async with DXClient(scripted.config, policy=FAST) as api:
        url, headers = await api.file_upload("file-x", 1, 5, "0" * 32)
        await api.put_part(url, headers, b"hello")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /file-x/upload -> 200" in text and "PUT http://127.0.0.1" in text
    assert "SECRET" not in text and "tok-secret-123" not in text and "sig=****" in text


async def test_part_that_always_gets_503_eventually_fails(scripted):
    policy = RetryPolicy(base_delay=0.001, max_throttled=3)
    scripted.queue("PUT /store/p", *[web.Response(status=503, text="slow down",
                                                  headers={"Retry-After": "1"})
                                     for _ in range(20)])
    async with DXClient(scripted.config, policy=policy) as api:
        with pytest.raises(RetriesExhausted) as ei:
            await api.upload_part("file-x", 1, b"hello", "0" * 32, tries=2)
    # 3 throttled answers are free, then the 2 tries are spent
    assert ei.value.attempts == 5
    assert [r["key"] for r in scripted.log].count("PUT /store/p") == 5
