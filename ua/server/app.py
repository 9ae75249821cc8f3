"""aiohttp application: JSON API dispatch, storage PUT/GET endpoints, request log, faults.

``make_app(config)`` builds the application. Extra routes or sub-apps (the web console) are
added by hooks in ``config.setup_hooks``: each is called as ``hook(app, service)`` *before* the
API catch-all route ``POST /{a}/{b}`` is registered, so their routes take precedence.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from json.encoder import encode_basestring_ascii as _encode_str

from aiohttp import web

from . import errors as E
from .blobs import PartWriter
from .faults import API_KINDS, PUT_KINDS, Faults
from .service import ADMIN_USER, ADMINISTER, Service, UploadParams
from .signing import SignatureError, check, sign_download, sign_upload
from .store import Store

MAX_API_BODY = 10 * 1024 * 1024
MAX_JSON_DEPTH = 64
BATCH = 4 * 1024 * 1024  # bytes handed to the hashing/writing thread at a time
READ_BUFSIZE = 1024 * 1024  # request body buffer before reading pauses
SLOW_RATE = 2 * 1024 * 1024  # bytes/s for put-slow
# Receive buffer of the listening socket (inherited by accepted connections) when the server
# starts with a put-slow fault: a slow read then backs up to the client as on a slow link,
# instead of the kernel's autotuned buffer (up to tcp_rmem max) swallowing whole parts. It
# must be set before the connection exists: shrinking it later makes the kernel drop data.
SLOW_RCVBUF = 64 * 1024
SERVICE_KEY = web.AppKey("service", Service)
STATE_KEY = web.AppKey("state", object)


@dataclass
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8124
    close_delay: float = 0.0
    fault_spec: str | None = None
    fault_seed: int | None = None
    params: UploadParams = field(default_factory=UploadParams)
    upload_url_ttl: int = 3600
    # requests.jsonl is renamed to requests.jsonl.1 (.1 to .2, …) once it passes this size;
    # request_log_keep rotated files are kept. 0 = one file that grows without limit.
    request_log_max_bytes: int = 256 * 1024 * 1024
    request_log_keep: int = 4
    setup_hooks: list[Callable[[web.Application, Service], None]] = field(default_factory=list)
    load_web: bool = True  # call ua.server.web.setup(app, service) when that package exists


def _jstr(v: Any) -> str:
    """``json.dumps(v)`` for the log's string-or-null fields, with json's own C encoder."""
    if v is None:
        return "null"
    return _encode_str(v) if type(v) is str else json.dumps(v)


def _jint(v: Any) -> str:
    return repr(v) if type(v) is int else json.dumps(v)


class RequestLog:
    """One line per request, appended with a single ``write(2)`` on an O_APPEND descriptor
    before the response is sent. The line is exactly ``json.dumps`` of the record (same keys,
    order and separators), formatted directly instead of through a dict and the encoder.

    A landing zone runs for months: once the file passes ``max_bytes`` it is rotated like
    logrotate does (``requests.jsonl`` → ``.1`` → ``.2`` …, the oldest beyond ``keep``
    deleted) and a fresh one is started; a line is never split between two files."""

    def __init__(self, path: Path, max_bytes: int = 0, keep: int = 4):
        self.path = path
        self.max_bytes = max_bytes
        self.keep = max(0, keep)
        self.fd = -1
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        os.close(self.fd)
        self.fd = -1
        base = os.fspath(self.path)
        if self.keep == 0:
            os.unlink(base)
        else:
            for k in range(self.keep - 1, 0, -1):  # .3 → .4, .2 → .3, .1 → .2 (.keep is replaced)
                try:
                    os.replace(f"{base}.{k}", f"{base}.{k + 1}")
                except FileNotFoundError:
                    pass
            os.replace(base, f"{base}.1")
        self._open()

    def write(self, *, method: str, route: str, status: int, file: str | None, index: int | None,
              nbytes: int, start: float, fault: str | None) -> None:
        t = round(time.time(), 3)
        ms = round((time.monotonic() - start) * 1000, 1)
        line = (f'{{"t": {t!r}, "method": {_jstr(method)}, "route": {_jstr(route)}, '
                f'"status": {_jint(status)}, "file": {_jstr(file)}, "index": {_jint(index)}, '
                f'"bytes": {_jint(nbytes)}, "ms": {ms!r}, "fault": {_jstr(fault)}}}\n').encode()
        self.size += len(line)
        while line:
            line = line[os.write(self.fd, line):]
        if self.max_bytes and self.size >= self.max_bytes:
            try:
                self._rotate()
            except OSError as exc:  # keep serving; the log stays in the current file
                print(f"ua-server: request log rotation failed, logging on in {self.path}: "
                      f"{exc}", file=sys.stderr)
                if self.fd < 0:
                    self._open()
                self.max_bytes = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class State:
    def __init__(self, config: Config, service: Service):
        self.config = config
        self.service = service
        self.faults = Faults(config.fault_spec, config.fault_seed)
        self.log = RequestLog(config.data_dir / "requests.jsonl",
                              config.request_log_max_bytes, config.request_log_keep)
        self.pending_close: set[asyncio.TimerHandle] = set()
        self.file_routes = _file_routes(service)
        self.project_routes = _project_routes(service)
        self.system_routes = _system_routes(service)


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # = json.dumps(obj, separators=(",", ":"))


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    body = _ENCODER.encode(obj).encode()
    return web.Response(body=body, status=status, content_type="application/json",
                        headers=headers)


def error_response(exc: E.APIError) -> web.Response:
    headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
    return json_response(exc.body(), exc.status, headers)


def xml_error(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    return web.Response(body=body, status=status, content_type="application/xml", headers=headers)


def bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    kind, _, tok = auth.partition(" ")
    if kind.lower() != "bearer" or not tok.strip():
        return None
    return tok.strip()


def base_url(request: web.Request) -> str:
    # The Host header, not the request line: a proxy sends the absolute form
    # ("POST http://h:p/route"), whose parsed host loses a non-default port.
    return f"{request.scheme}://{request.headers.get('Host') or request.host}"


# =============================================================================================
# API dispatch
# =============================================================================================

def _file_routes(svc: Service) -> dict[str, Callable]:
    return {
        "describe": svc.describe_file,
        "close": svc.file_close,
        "setProperties": svc.set_properties,
        "addTags": svc.add_tags,
        "removeTags": svc.remove_tags,
        "addTypes": svc.add_types,
        "removeTypes": svc.remove_types,
        "rename": svc.rename,
        "setVisibility": svc.set_visibility,
        "setDetails": svc.set_details,
        "getDetails": svc.get_details,
        "listProjects": svc.list_file_projects,
    }


def _project_routes(svc: Service) -> dict[str, Callable]:
    return {
        "describe": svc.describe_project,
        "update": svc.update_project,
        "destroy": svc.destroy_project,
        "newFolder": svc.new_folder,
        "listFolder": svc.list_folder,
        "removeObjects": svc.remove_objects,
        "removeFolder": svc.remove_folder,
        "invite": svc.invite,
        "decreasePermissions": svc.decrease_permissions,
        "transfer": svc.transfer,
        "acceptTransfer": svc.accept_transfer,
    }


def _system_routes(svc: Service) -> dict[str, Callable]:
    empty = lambda caller, inp: {"results": [], "next": None}  # noqa: E731
    return {
        "whoami": lambda caller, inp: svc.whoami(caller),
        "findProjects": svc.find_projects,
        "findDataObjects": svc.find_data_objects,
        "resolveDataObjects": svc.resolve_data_objects,
        "describeDataObjects": svc.describe_data_objects,
        "findApps": empty,
        "findGlobalWorkflows": empty,
        "findApplets": empty,
        "findWorkflows": empty,
        "findExecutions": empty,
        "findJobs": empty,
        "findAnalyses": empty,
        "findOrgs": empty,
    }


async def _read_json(request: web.Request) -> dict:
    ctype = request.headers.get("Content-Type")
    if request.content_length is not None and request.content_length > MAX_API_BODY:
        raise E.RequestTooLarge(f"Request body exceeds {MAX_API_BODY} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise E.RequestTooLarge(f"Request body exceeds {MAX_API_BODY} bytes") from None
    request["nbytes"] = len(raw)
    if ctype and not ctype.lower().startswith("application/json"):
        raise E.MalformedJSON("Content-Type must be application/json")
    if not raw.strip():
        return {}
    try:
        # = json.loads(raw, parse_constant=...) without building a decoder per request
        value = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError):
        raise E.MalformedJSON("The request body could not be parsed as JSON") from None
    except RecursionError:
        raise E.MalformedJSON("The request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise E.InvalidInput("The request body must be a JSON object")
    if not _depth_ok(value, MAX_JSON_DEPTH):
        raise E.InvalidInput(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _not_json_constant(name: str):
    """json.loads accepts NaN/Infinity/-Infinity, which RFC 8259 does not: stored, they come
    back in describe output as bare ``NaN`` that strict JSON parsers reject."""
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_not_json_constant)


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


async def api_handler(request: web.Request) -> web.Response:
    st: State = request.app[STATE_KEY]
    svc = st.service
    start = time.monotonic()
    a, b = request.match_info["a"], request.match_info["b"]
    route = f"/{a}/{b}"
    file_id = a if a.startswith("file-") else None
    index = None
    fault = None
    status = 500
    try:
        try:
            inp = await _read_json(request)
            if b == "upload" and file_id and type(inp.get("index", 1)) is int:
                index = inp.get("index", 1)
            if a != "admin" and st.faults.rules:
                name = None
                if file_id:
                    t = svc.upload_target(file_id)
                    name = t[1] if t else None
                elif route == "/file/new" and isinstance(inp.get("name"), str):
                    name = inp["name"]
                fault = st.faults.pick(API_KINDS, name)
                if fault == "api-500":
                    raise E.InternalError("Injected fault: api-500")
                if fault == "api-503":
                    raise E.ServiceUnavailable("Injected fault: api-503")
                if fault == "api-429":
                    raise E.RateLimitConditional("Injected fault: api-429")
            result = dispatch(request, st, a, b, inp)
            if route == "/file/new" and isinstance(result, dict):
                file_id = result.get("id")
            resp = json_response(result)
        except E.APIError as exc:
            resp = error_response(exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            status = 0  # the client went away while sending the body
            return Dropped()
        except Exception:  # noqa: BLE001 - report, never leak internals
            traceback.print_exc(file=sys.stderr)
            resp = error_response(E.InternalError("Internal server error"))
        status = resp.status
        return resp
    finally:
        st.log.write(method="POST", route=route, status=status, file=file_id, index=index,
                     nbytes=request.get("nbytes", 0), start=start, fault=fault)


def dispatch(request: web.Request, st: State, a: str, b: str, inp: dict) -> Any:
    svc = st.service
    if a == "system" and b == "greet":
        return {"messages": [], "update": {"available": False}}
    caller = svc.authenticate(bearer(request))
    if a == "admin":
        if b != "faults":
            raise E.ResourceNotFound(f"Unknown route /{a}/{b}")
        if caller.user_id != ADMIN_USER or (caller.scope_level not in (None, ADMINISTER)):
            raise E.PermissionDenied("ADMINISTER token of user-admin required")
        spec = inp.get("spec", "")
        if not isinstance(spec, str):
            raise E.InvalidInput("spec must be a string")
        try:
            st.faults.set(spec)
        except ValueError as exc:
            raise E.InvalidInput(str(exc)) from None
        return {"spec": st.faults.spec}
    if a == "system":
        fn = st.system_routes.get(b)
        if fn is None:
            raise E.ResourceNotFound(f"Unknown route /{a}/{b}")
        return fn(caller, inp)
    if a == "file" and b == "new":
        return svc.file_new(caller, inp)
    if a == "project" and b == "new":
        return svc.new_project(caller, inp)
    cls = a.split("-", 1)[0] if "-" in a else None
    if cls == "file":
        if b == "upload":
            return svc.file_upload(caller, a, inp, base_url(request))
        if b == "download":
            return svc.file_download(caller, a, inp, base_url(request))
        fn = st.file_routes.get(b)
    elif cls in ("project", "container"):
        fn = st.project_routes.get(b)
    elif cls == "user":
        if b == "describe":
            return svc.describe_user(caller, a)
        fn = None
    else:
        fn = None
    if fn is None:
        raise E.ResourceNotFound(f"Unknown route /{a}/{b}")
    return fn(caller, a, inp)


# =============================================================================================
# Storage endpoints
# =============================================================================================

def _drop_connection(request: web.Request) -> None:
    """Close the connection with a TCP reset, without any response."""
    tr = request.transport
    if tr is None:
        return
    sock = tr.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    tr.abort()


class Dropped(web.Response):
    """Marker response after the transport was aborted (nothing is sent)."""


async def _drain(request: web.Request, slow: bool = False) -> int:
    n = 0
    while True:
        try:
            chunk = await request.content.readany()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            return n
        if not chunk:
            return n
        n += len(chunk)
        if slow:
            await asyncio.sleep(len(chunk) / SLOW_RATE)


async def put_handler(request: web.Request) -> web.StreamResponse:
    st: State = request.app[STATE_KEY]
    svc = st.service
    start = time.monotonic()
    fid = request.match_info["fid"]
    fault = None
    nbytes = 0
    index = None
    status = 0
    try:
        resp, index, fault, nbytes = await _put(request, st, svc, fid)
        status = 0 if isinstance(resp, Dropped) else resp.status
        return resp
    finally:
        st.log.write(method="PUT", route="PUT /upload", status=status, file=fid, index=index,
                     nbytes=nbytes, start=start, fault=fault)


async def _put(request, st: State, svc: Service, fid: str):
    q = request.query
    try:
        index = int(request.match_info["index"])
        size_s, md5 = q.get("size", ""), q.get("md5", "")
        expires = int(q.get("expires", "0"))
        size = int(size_s) if size_s else None
    except ValueError:
        return xml_error(400, "InvalidArgument", "Malformed upload URL"), None, None, 0
    try:
        check(sign_upload(svc.secret, fid, index, size_s, md5, expires), q.get("sig"), expires)
    except SignatureError as exc:
        return xml_error(403, "AccessDenied", str(exc)), index, None, 0
    target = svc.upload_target(fid)
    if target is None:
        return xml_error(404, "NoSuchUpload", f"The file {fid} does not exist"), index, None, 0
    if target[0] != "open":
        return (xml_error(409, "InvalidState", f"The file {fid} is not in the open state"),
                index, None, 0)
    if size is not None and request.content_length is not None and request.content_length != size:
        return (xml_error(400, "IncompleteBody",
                          "Content-Length does not match the size given to /upload"), index, None, 0)
    if md5:
        cmd5 = request.headers.get("Content-MD5")
        if cmd5 is not None and cmd5 != base64.b64encode(bytes.fromhex(md5)).decode():
            return (xml_error(400, "InvalidDigest", "Content-MD5 does not match the md5 given "
                              "to /upload"), index, None, 0)

    fault = st.faults.pick(PUT_KINDS, target[1])
    if fault in ("put-500", "put-503", "put-baddigest", "put-stall"):
        n = await _drain(request)
        if fault == "put-500":
            return xml_error(500, "InternalError", "Injected fault: put-500"), index, fault, n
        if fault == "put-503":
            return (xml_error(503, "SlowDown", "Injected fault: put-503",
                              {"Retry-After": "1"}), index, fault, n)
        if fault == "put-baddigest":
            return (xml_error(400, "BadDigest", "Injected fault: put-baddigest"), index, fault, n)
        # put-stall: never answer; wait until the client gives up
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.2)
        return Dropped(), index, fault, n

    loop = asyncio.get_running_loop()
    w = PartWriter(svc.store.file_dir(fid), index)
    n = 0
    pending: asyncio.Future | None = None
    batch: list[bytes] = []
    blen = 0
    reset_at = (size // 2 if size else 1) if fault == "put-reset" else None
    ok = False
    try:
        while True:
            try:
                chunk = await request.content.readany()
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                return Dropped(), index, fault, n  # the client went away mid-body
            if chunk:
                n += len(chunk)
                batch.append(chunk)
                blen += len(chunk)
                if fault == "put-slow":
                    await asyncio.sleep(len(chunk) / SLOW_RATE)
                if reset_at is not None and n >= reset_at:
                    _drop_connection(request)
                    return Dropped(), index, fault, n
                if size is not None and n > size:
                    return (xml_error(400, "IncompleteBody", "More bytes than the size given "
                                      "to /upload"), index, fault, n)
                if n > svc.params.maximumPartSize:
                    return (xml_error(400, "EntityTooLarge", "The part exceeds the maximum "
                                      "part size"), index, fault, n)
            if not chunk and reset_at is not None:  # body shorter than the reset point
                _drop_connection(request)
                return Dropped(), index, fault, n
            if blen >= BATCH and chunk:
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(None, w.consume, batch)
                batch, blen = [], 0
            if not chunk:
                break
        if pending is not None:
            await pending
            pending = None
        if size is not None and n != size:
            return (xml_error(400, "IncompleteBody", f"Received {n} bytes, expected {size}"),
                    index, fault, n)
        # last batch, MD5 and fsync in one worker call
        digest = await loop.run_in_executor(None, w.consume_finish, batch)
        if md5 and digest != md5:
            return (xml_error(400, "BadDigest", "The Content-MD5 you specified did not match "
                              "what was received"), index, fault, n)
        try:
            svc.complete_part(fid, index, n, digest, w.path)
        except E.APIError as exc:
            return xml_error(409, exc.type, exc.message), index, fault, n
        ok = True
        if fault == "put-drop-after-store":
            _drop_connection(request)
            return Dropped(), index, fault, n
        return web.Response(status=200, headers={"ETag": f'"{digest}"'}), index, fault, n
    finally:
        if pending is not None:
            try:
                await pending
            except Exception:  # noqa: BLE001
                pass
        if not ok:
            w.abort()


def _parse_range(header: str | None, total: int) -> tuple[int, int] | None | str:
    """(start, end inclusive), None for the whole body, or "bad" (416)."""
    if not header:
        return None
    if not header.startswith("bytes=") or "," in header:
        return None  # unsupported forms: send the whole body (allowed by RFC 9110)
    spec = header[6:].strip()
    a, _, b = spec.partition("-")
    try:
        if a == "":
            n = int(b)
            if n <= 0:
                return "bad"
            return (max(0, total - n), total - 1) if total else "bad"
        start = int(a)
        end = int(b) if b else total - 1
    except ValueError:
        return None
    if start >= total or end < start:
        return "bad"
    return start, min(end, total - 1)


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


async def get_handler(request: web.Request) -> web.StreamResponse:
    st: State = request.app[STATE_KEY]
    svc = st.service
    start = time.monotonic()
    fid = request.match_info["fid"]
    status = 0
    try:
        resp = await _get(request, svc, fid)
        status = resp.status
        return resp
    finally:
        st.log.write(method=request.method, route="GET /download", status=status, file=fid,
                     index=None, nbytes=0, start=start, fault=None)


async def _get(request: web.Request, svc: Service, fid: str) -> web.StreamResponse:
    try:
        expires = int(request.query.get("expires", "0"))
    except ValueError:
        return xml_error(400, "InvalidArgument", "Malformed download URL")
    try:
        check(sign_download(svc.secret, fid, expires), request.query.get("sig"), expires)
    except SignatureError as exc:
        return xml_error(403, "AccessDenied", str(exc))
    layout = svc.download_layout(fid)
    if layout is None:
        return xml_error(404, "NoSuchKey", f"The file {fid} does not exist or is not closed")
    total = sum(s for _, s in layout)
    rng = _parse_range(request.headers.get("Range"), total)
    if rng == "bad":
        return xml_error(416, "InvalidRange", "The requested range is not satisfiable",
                         {"Content-Range": f"bytes */{total}"})
    if rng is None:
        first, last, status = 0, total - 1, 200
    else:
        first, last = rng
        status = 206
    length = last - first + 1 if total else 0
    resp = web.StreamResponse(status=status)
    resp.content_type = "application/octet-stream"
    resp.content_length = length
    resp.headers["Accept-Ranges"] = "bytes"
    if status == 206:
        resp.headers["Content-Range"] = f"bytes {first}-{last}/{total}"
    await resp.prepare(request)
    if request.method == "HEAD" or length == 0:
        await resp.write_eof()
        return resp
    loop = asyncio.get_running_loop()
    off = 0
    for path, size in layout:
        lo, hi = max(first, off), min(last, off + size - 1)
        if lo <= hi:
            pos = lo - off
            remaining = hi - lo + 1
            while remaining:
                k = min(remaining, BATCH)
                data = await loop.run_in_executor(None, _read_at, path, pos, k)
                if len(data) != k:
                    raise RuntimeError(f"short read from {path}")
                await resp.write(data)
                pos += k
                remaining -= k
        off += size
    await resp.write_eof()
    return resp


# =============================================================================================
# App factory
# =============================================================================================

def _web_hooks() -> list[Callable[[web.Application, Service], None]]:
    """The web console mounts itself through ``ua.server.web.setup(app, service)``."""
    try:
        import importlib
        console = importlib.import_module("ua.server.web")
    except ModuleNotFoundError as exc:
        if exc.name in ("ua.server.web",):
            return []
        raise
    setup = getattr(console, "setup", None)
    return [setup] if callable(setup) else []


def make_app(config: Config, store: Store | None = None) -> web.Application:
    store = store or Store(config.data_dir)
    service = Service(store, config.params, config.close_delay, config.upload_url_ttl)
    app = web.Application(client_max_size=MAX_API_BODY,
                          handler_args={"read_bufsize": READ_BUFSIZE})
    state = State(config, service)
    app[SERVICE_KEY] = service
    app[STATE_KEY] = state

    def finalize(fid: str) -> None:
        try:
            service.finalize(fid)
        except Exception:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)

    def schedule(fid: str) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, config.close_delay), finalize, fid)

    service.on_closing = schedule

    async def on_startup(app: web.Application) -> None:
        for fid in service.closing_files():
            schedule(fid)

    async def on_cleanup(app: web.Application) -> None:
        state.log.close()
        store.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    hooks = list(config.setup_hooks)
    if config.load_web:
        hooks += _web_hooks()
    for hook in hooks:
        hook(app, service)
    app.router.add_put("/upload/{fid}/{index}", put_handler)
    app.router.add_get("/download/{fid}", get_handler)
    app.router.add_post("/{a}/{b}", api_handler)
    app.router.add_route("*", "/{tail:.*}", fallback_handler)
    return app


async def fallback_handler(request: web.Request) -> web.Response:
    if request.method != "POST":
        return error_response(E.InvalidInput("API routes only accept POST", status=405))
    return error_response(E.ResourceNotFound(f"Unknown route {request.path}"))
