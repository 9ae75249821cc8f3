"""HTTP transport: one aiohttp session per run, TLS, headers, timeouts, error mapping, masking.

Every request made by ua goes through :class:`Transport`. It performs *one* attempt and turns
whatever happens into either a result or an exception from :mod:`ua.api.errors`; retrying is
:mod:`ua.api.retry`'s job.

Timeouts:

* API calls: connect 30 s, total 905 s (dxpy), ``/upload``-style URL calls 60 s.
* Part PUTs: no fixed total like aiohttp's default 300 s. A *stall detector* fails the PUT
  when no body byte has been accepted by the socket (and no response arrived) for
  ``stall_timeout`` seconds (default 60, env ``UA_STALL_TIMEOUT``), and a size-scaled total
  ``max(floor, size / min_rate) + stall_timeout`` bounds a connection that trickles forever
  (floor 60 s, env ``UA_PUT_TIMEOUT_FLOOR``; min_rate 16 KiB/s, env ``UA_PUT_MIN_RATE`` in
  bytes/s). Waiting for the throttle is not a stall.

Part bodies are buffers (sent as memoryview pieces of ``PUT_PIECE``) or a
:class:`~ua.api.filebody.FileRange` of a local file, sent with ``sendfile(2)`` in slices on
plain HTTP without a proxy and through one small reused buffer otherwise; both honour the
stall detector, the deadline, the throttle and ``on_sent`` per slice or piece, and a file that
changed fails with the permanent :class:`~ua.api.errors.LocalFileChanged`
(:mod:`ua.api.filebody`). ``Transport.put_paths`` counts which way each PUT body went.

Redirects are never followed (API POSTs and part PUTs): a 3xx answer is a permanent
:class:`~ua.api.errors.RedirectRefused` naming the masked Location, so neither the token nor a
part goes somewhere the user did not configure.

Response bodies (API JSON, storage answers) are read up to 64 MiB (env
``UA_MAX_RESPONSE_BYTES``); a larger one is a permanent :class:`~ua.api.errors.ResponseTooLarge`
and the connection is dropped instead of drained.

Logging goes to the ``ua.api`` logger at DEBUG (the CLI turns it on with ``--verbose``):
method, route or masked URL, status, duration. Tokens and signed-URL query strings never
appear: see :func:`mask_url` and :func:`mask_token`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ua import UA_COMPAT_VERSION, __version__
from ua.knobs import env_float
from ua.api.filebody import FileRange, FileRangePayload
from ua.api.errors import (
    BadResponse,
    ConnectError,
    ConnectionLost,
    HTTPError,
    RedirectRefused,
    RequestTimeout,
    ResponseTooLarge,
    StallError,
    TLSError,
    TransientHTTPError,
    UAError,
    make_api_error,
)

log = logging.getLogger("ua.api")
Buffer = Union[bytes, bytearray, memoryview]

USER_AGENT = f"ua/{__version__} (DNAnexus-Upload-Agent-compatible {UA_COMPAT_VERSION})"
API_TIMEOUT = 905.0
URL_ROUTE_TIMEOUT = 60.0
CONNECT_TIMEOUT = 30.0
PUT_PIECE = 256 * 1024  # body bytes handed to the socket per write (progress/throttle grain)
MIN_PART_RATE = 16 * 1024  # bytes/s a part must average before its total deadline
PUT_TIMEOUT_FLOOR = 60.0  # seconds: the total deadline of a part is never below this (+ stall)
# Largest response body ua reads into memory (env UA_MAX_RESPONSE_BYTES). A describe of a
# 10,000-part file is about 1 MB; anything near this is a broken or hostile server.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class APIConfig:
    """Where the API server is and how to authenticate. Built by ``ua/config.py``."""

    protocol: str = "https"
    host: str = "api.dnanexus.com"
    port: int | str | None = 443
    token: str | None = None
    ca_cert: str | None = None  # CA bundle path, "NOVERIFY", or None for the system bundle

    @property
    def base_url(self) -> str:
        port = "" if self.port in (None, "") else f":{self.port}"
        return f"{self.protocol}://{self.host}{port}"

    def __repr__(self) -> str:  # never print the token
        return (f"APIConfig(protocol={self.protocol!r}, host={self.host!r}, port={self.port!r}, "
                f"token={mask_token(self.token)!r}, ca_cert={self.ca_cert!r})")


class Throttle(Protocol):
    """What :meth:`Transport.put` needs from a bandwidth limiter (ua/upload/throttle.py)."""

    piece_size: int

    async def acquire(self, nbytes: int) -> None: ...


# --------------------------------------------------------------------------- masking
def mask_token(token: str | None) -> str:
    """``"****abcd"``: enough to tell tokens apart, useless to an attacker."""
    if not token:
        return "<none>"
    return "****" + token[-4:] if len(token) >= 12 else "****"


def mask_url(url: str) -> str:
    """Drop credentials and signatures from a URL: user:password and every query value."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "****@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        query = urlencode([(k, "****") for k, _ in parse_qsl(query, keep_blank_values=True)],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


# --------------------------------------------------------------------------- errors
def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; an HTTP date is ignored (as dxpy does)."""
    if not value:
        return None
    try:
        return max(0.0, float(int(value.strip())))
    except ValueError:
        return None


def error_from_response(method: str, route: str, status: int, content_type: str, body: bytes,
                        retry_after: float | None) -> UAError:
    """The exception for a non-2xx response."""
    text = body.decode("utf-8", "replace")
    if content_type.startswith("application/json"):
        try:
            err = json.loads(text)["error"]
            etype = str(err["type"])
            message = str(err.get("message", ""))
        except (ValueError, KeyError, TypeError):
            pass
        else:
            return make_api_error(status, etype, message, details=err.get("details"),
                                  route=route, retry_after=retry_after)
    if status >= 500 or status == 429 or (method == "PUT" and status in (400, 403, 408)):
        # S3-style storage answers: 400 RequestTimeout/BadDigest, 403 for an URL that expired
        # while the part waited, 408. The next try asks for a fresh URL.
        return TransientHTTPError(status, text, route=route, retry_after=retry_after)
    return HTTPError(status, text, route=route)


def map_client_exception(exc: BaseException, what: str) -> UAError:
    """aiohttp/OS exceptions → our hierarchy (transient unless certificate trouble)."""
    if isinstance(exc, UAError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TLSError(f"TLS certificate verification failed for {what}: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"Unable to connect for {what}: {exc.os_error or exc}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ConnectionLost(f"Server disconnected during {what}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return BadResponse(f"Broken response to {what}: {exc}")
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError, TimeoutError)):
        return RequestTimeout(f"Timed out during {what}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return BadResponse(f"Broken response to {what}: {exc.message}")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"Unable to connect for {what}: {exc}")
    if isinstance(exc, (aiohttp.ClientError, ConnectionError, OSError)):
        return ConnectionLost(f"Connection error during {what}: {exc or type(exc).__name__}")
    raise exc  # a bug, not a network condition


def refuse_redirect(method: str, what: str, status: int, location: str | None) -> RedirectRefused:
    """A 3xx answer is never followed: the token (API) or the part (PUT) would leave for a
    place the user did not configure."""
    where = mask_url(location) if location else "<no Location>"
    server = "storage server" if method == "PUT" else "API server"
    return RedirectRefused(f"the {server} answered {method} {what} with a redirect (HTTP "
                           f"{status}) to {where}; refusing to follow it", status=status)


def max_response_bytes() -> int:
    return int(env_float("UA_MAX_RESPONSE_BYTES", MAX_RESPONSE_BYTES))


async def read_bounded(resp: aiohttp.ClientResponse, what: str,
                       limit: int | None = None) -> bytes:
    """The response body, or :class:`ResponseTooLarge` as soon as it passes ``limit`` bytes
    (checked against Content-Length first, then while streaming)."""
    if limit is None:
        limit = max_response_bytes()

    def too_large(n: str) -> ResponseTooLarge:
        return ResponseTooLarge(f"the response to {what} is {n} than {limit} bytes; refusing "
                                "to read it (broken or hostile server?)", status=resp.status)

    if resp.content_length is not None and resp.content_length > limit:
        raise too_large("larger")
    if resp.content_length is not None:  # announced and within the limit: one read
        return await resp.read()
    buf = bytearray()
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            resp.close()  # drop the connection instead of draining the rest
            raise too_large("larger")
    return bytes(buf)


def make_ssl_context(ca_cert: str | None) -> ssl.SSLContext | bool:
    """System CA bundle by default; a path; or ``NOVERIFY`` (no verification at all)."""
    if ca_cert == "NOVERIFY":
        return False
    if ca_cert:
        return ssl.create_default_context(cafile=ca_cert)
    return ssl.create_default_context()


# --------------------------------------------------------------------------- transport
class Transport:
    """One aiohttp session for the run. Create inside the event loop; close with ``aclose``."""

    def __init__(self, config: APIConfig, *, connections: int = 16,
                 stall_timeout: float | None = None, connect_timeout: float = CONNECT_TIMEOUT,
                 min_part_rate: float | None = None,
                 put_timeout_floor: float | None = None,
                 sendfile: bool | None = None) -> None:
        self.config = config
        self.connections = max(1, connections)
        self.stall_timeout = stall_timeout if stall_timeout is not None else env_float(
            "UA_STALL_TIMEOUT", 60.0)
        self.connect_timeout = connect_timeout
        # Test knobs like UA_STALL_TIMEOUT; the production defaults are the constants above.
        self.min_part_rate = min_part_rate if min_part_rate is not None else env_float(
            "UA_PUT_MIN_RATE", MIN_PART_RATE)
        if not self.min_part_rate > 0:
            self.min_part_rate = MIN_PART_RATE
        self.put_timeout_floor = put_timeout_floor if put_timeout_floor is not None else \
            env_float("UA_PUT_TIMEOUT_FLOOR", PUT_TIMEOUT_FLOOR)
        # FileRange bodies go by sendfile(2) on plain-HTTP connections without a proxy
        # (env UA_SENDFILE=0 turns it off: every FileRange then goes the buffered way).
        self.sendfile = sendfile if sendfile is not None else \
            env_float("UA_SENDFILE", 1.0) != 0
        # How each PUT body went: "memory", "sendfile", "buffered" (FileRange read through a
        # small reused buffer), "unsent" (failed before the body). For logs and tests.
        self.put_paths: Counter[str] = Counter()
        self._ssl = make_ssl_context(config.ca_cert) if config.protocol.lower() == "https" \
            else None
        self._session: aiohttp.ClientSession | None = None
        # scheme://netloc -> (proxy URL, proxy headers); see proxy_for().
        self._proxies: dict[str, tuple[URL | None, dict | None]] = {}
        # Read once: per-request environment lookups and timeout objects add up with
        # thousands of small files.
        self.max_response = max_response_bytes()
        self._api_timeouts = {
            t: aiohttp.ClientTimeout(total=t, sock_connect=self.connect_timeout)
            for t in (API_TIMEOUT, URL_ROUTE_TIMEOUT)}
        self._no_total_timeout = aiohttp.ClientTimeout(total=None,
                                                       sock_connect=self.connect_timeout)
        self._api_headers = {
            "DNAnexus-API": "1.0.0",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
        }
        if config.token:
            self._api_headers["Authorization"] = f"Bearer {config.token}"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.connections, limit_per_host=0,
                ssl=self._ssl if self._ssl is not None else True,
                enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._no_total_timeout,  # API calls set their own total
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # the API sets no cookies
                # Proxies come from proxy_for(): aiohttp's trust_env would re-read the
                # environment and ~/.netrc in two worker-thread hops on *every* request
                # (a third of the client's CPU with many small files).
                trust_env=False,
                skip_auto_headers=("Accept-Encoding",))
        return self._session

    def proxy_for(self, url: str) -> tuple[URL | None, dict | None]:
        """HTTP(S)_PROXY / NO_PROXY as dxpy and the UA honour them, looked up once per
        scheme+host+port (the environment does not change during a run). Credentials in the
        proxy URL travel as a Proxy-Authorization header, never in a log line."""
        scheme, sep, rest = url.partition("://")
        key = scheme + sep + rest.split("/", 1)[0].split("?", 1)[0]
        hit = self._proxies.get(key)
        if hit is None:
            try:
                proxy, auth = get_env_proxy_for_url(URL(url))
            except LookupError:
                hit = (None, None)
            else:
                hit = (proxy, {"Proxy-Authorization": auth.encode()} if auth else None)
            self._proxies[key] = hit
        return hit

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # ---- API --------------------------------------------------------------------
    async def post_json(self, route: str, body: Any, *, timeout: float | None = None) -> Any:
        """One ``POST {base}{route}`` with a JSON body; the decoded JSON response."""
        url = self.config.base_url + route
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if timeout is None:
            timeout = URL_ROUTE_TIMEOUT if route.endswith(("/upload", "/download")) \
                else API_TIMEOUT
        t0 = time.monotonic()
        status: int | str = "error"
        proxy, proxy_headers = self.proxy_for(url)
        try:
            async with self.session.post(
                url, data=data, headers=self._api_headers, allow_redirects=False,
                proxy=proxy, proxy_headers=proxy_headers,
                timeout=self._api_timeouts.get(timeout) or aiohttp.ClientTimeout(
                    total=timeout, sock_connect=self.connect_timeout),
            ) as resp:
                status = resp.status
                if 300 <= resp.status < 400:
                    raise refuse_redirect("POST", route, resp.status,
                                          resp.headers.get("Location"))
                raw = await read_bounded(resp, f"POST {route}", self.max_response)
                ctype = resp.headers.get("Content-Type", "")
                if not 200 <= resp.status < 300:
                    raise error_from_response("POST", route, resp.status, ctype, raw,
                                              parse_retry_after(resp.headers.get("Retry-After")))
                if not ctype.startswith("application/json"):
                    raise BadResponse(f"Response to {route} is not JSON ({ctype or 'no type'})",
                                      route=route, status=resp.status)
                try:
                    return json.loads(raw)
                except ValueError:
                    raise BadResponse(f"Response to {route} is not valid JSON", route=route,
                                      status=resp.status) from None
        except UAError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped or re-raised
            raise map_client_exception(exc, f"POST {route}") from exc
        finally:
            log.debug("POST %s -> %s in %.0f ms", route, status, (time.monotonic() - t0) * 1000)

    # ---- data plane -------------------------------------------------------------
    async def put(self, url: str, headers: Mapping[str, str],
                  body: bytes | bytearray | memoryview | Sequence[Buffer] | FileRange, *,
                  throttle: Throttle | None = None,
                  on_sent: Callable[[int], None] | None = None) -> int:
        """PUT ``body`` (one buffer, several sent back to back, or a :class:`FileRange` of a
        local file) to a signed storage URL, streamed in pieces so progress and the throttle
        see every write. Returns the status. Any 2xx is success, with or without a response
        body.

        A :class:`FileRange` goes by ``sendfile(2)`` on a plain-HTTP connection without a
        proxy, otherwise through one small reused buffer (see :mod:`ua.api.filebody`); a
        file that changed or shrank fails with the permanent LocalFileChanged."""
        rng = body if isinstance(body, FileRange) else None
        if rng is None:
            buffers = [body] if isinstance(body, (bytes, bytearray, memoryview)) \
                else list(body)  # type: ignore[arg-type]
            views = [memoryview(b).cast("B") for b in buffers]
            size = sum(len(v) for v in views)
        else:
            views = []
            size = rng.length
        hdrs = {k: v for k, v in headers.items() if k.lower() not in ("content-length",
                                                                    "content-type")}
        hdrs["Content-Length"] = str(size)
        hdrs.setdefault("User-Agent", USER_AGENT)
        hdrs.setdefault("DNAnexus-API", "1.0.0")
        hdrs.setdefault("Accept-Encoding", "identity")
        loop = asyncio.get_running_loop()
        stall = self.stall_timeout
        rate = self.min_part_rate
        total = max(self.put_timeout_floor, size / rate) + stall
        t0 = loop.time()
        # With a throttle, waiting for tokens can legitimately take longer than any fixed
        # total; the stall window (which excludes token waits) still catches dead sockets.
        hard_deadline = float("inf") if throttle is not None else t0 + total
        status: int | str = "error"
        payload: FileRangePayload | None = None

        deadline = asyncio.timeout(None)
        try:
            async with deadline:
                def bump() -> None:
                    deadline.reschedule(min(loop.time() + stall, hard_deadline))

                async def pieces():
                    piece = PUT_PIECE
                    if throttle is not None:
                        piece = max(1, min(piece, throttle.piece_size))
                    for view in views:
                        for off in range(0, len(view), piece):
                            chunk = view[off:off + piece]
                            if throttle is not None:
                                deadline.reschedule(None)  # waiting for tokens ≠ stall
                                await throttle.acquire(len(chunk))
                            bump()
                            yield chunk
                            bump()
                            if on_sent is not None:
                                on_sent(len(chunk))

                bump()
                proxy, proxy_headers = self.proxy_for(url)
                one_piece = rng is None and throttle is None and len(views) == 1 \
                    and 0 < size <= PUT_PIECE
                data: Any = b""
                if rng is not None:
                    fd = rng.open()  # LocalFileChanged before any connection is used
                    if not size:
                        os.close(fd)
                    else:
                        payload = FileRangePayload(
                            rng, fd, bump=bump, pause=lambda: deadline.reschedule(None),
                            use_sendfile=self.sendfile and proxy is None
                            and url[:5].lower() == "http:",
                            throttle=throttle, on_sent=on_sent, piece=PUT_PIECE)
                        data = payload
                elif one_piece:  # aiohttp writes it at once; progress is counted after
                    data = views[0]
                elif size:
                    data = pieces()
                try:
                    async with self.session.put(
                        url, data=data, headers=hdrs,
                        proxy=proxy, proxy_headers=proxy_headers,
                        skip_auto_headers=("Content-Type",), allow_redirects=False,
                        timeout=self._no_total_timeout,
                    ) as resp:
                        bump()
                        if one_piece and on_sent is not None:
                            on_sent(size)  # the one-piece body went out before the answer
                        status = resp.status
                        if 300 <= resp.status < 400:
                            raise refuse_redirect("PUT", mask_url(url), resp.status,
                                                  resp.headers.get("Location"))
                        raw = await read_bounded(resp, "PUT", self.max_response)
                        if not 200 <= resp.status < 300:
                            raise error_from_response(
                                "PUT", "PUT /upload", resp.status,
                                resp.headers.get("Content-Type", ""), raw,
                                parse_retry_after(resp.headers.get("Retry-After")))
                        return resp.status
                except UAError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    if payload is not None and payload.error is not None:
                        raise payload.error from None
                    raise map_client_exception(exc, "PUT") from exc
        except TimeoutError as exc:
            if payload is not None and payload.error is not None:
                raise payload.error from None
            if not deadline.expired():
                raise map_client_exception(exc, "PUT") from exc
            if loop.time() >= hard_deadline - 0.001:
                raise RequestTimeout(f"PUT of {size} bytes exceeded {total:.1f} s") from exc
            raise StallError(f"PUT stalled: no progress for {stall:g} s") from exc
        finally:
            how = "memory" if rng is None else "empty" if not size else \
                (payload.path_used if payload is not None and payload.path_used else "unsent")
            if payload is not None and not payload.started:
                payload.close_fd()  # the body writer never ran (it owns the fd once it does)
            self.put_paths[how] += 1
            if log.isEnabledFor(logging.DEBUG):  # masking costs more than the rest of a log
                log.debug("PUT %s (%d bytes, %s) -> %s in %.0f ms", mask_url(url), size, how,
                          status, (loop.time() - t0) * 1000)

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> bytes:
        """GET a (download) URL; used by verification tools and tests."""
        hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        proxy, proxy_headers = self.proxy_for(url)
        try:
            async with self.session.get(url, headers=hdrs, proxy=proxy,
                                        proxy_headers=proxy_headers) as resp:
                raw = await resp.read()
                if not 200 <= resp.status < 300:
                    raise error_from_response("GET", "GET", resp.status,
                                              resp.headers.get("Content-Type", ""), raw, None)
                return raw
        except UAError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise map_client_exception(exc, "GET") from exc
