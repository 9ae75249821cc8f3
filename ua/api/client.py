"""DXClient: typed async wrappers for the DNAnexus routes ua calls.

Usage::

    async with DXClient(APIConfig(protocol="http", host="127.0.0.1", port=8080, token=t),
                        connections=12) as api:
        me = await api.whoami()              # "user-alice"
        fid = await api.file_new(project=p, name="x.gz", folder="/", media="application/x-gzip")

API calls retry with dxpy's policy (:mod:`ua.api.retry`). :meth:`DXClient.put_part` is a
single data-plane attempt; :meth:`DXClient.upload_part` wraps ``/file-x/upload`` + PUT in the
part retry loop, asking for a fresh URL on every try.
"""

from __future__ import annotations

import base64
import json
import secrets
from contextlib import aclosing
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from ua import UA_COMPAT_VERSION
from ua.api.errors import BadResponse
from ua.api.retry import (
    DEFAULT_POLICY,
    OnRetry,
    RetryPolicy,
    call_api_with_retries,
    run_part_with_retries,
)
from ua.api.filebody import FileRange
from ua.api.transport import APIConfig, Buffer, Throttle, Transport

__all__ = ["APIConfig", "DXClient", "FileRange", "new_nonce"]

PartBody = bytes | bytearray | memoryview | Sequence[Buffer] | FileRange

MAX_PAGES = 100_000  # find* pages followed in one query (1000 results each at most)


def new_nonce() -> str:
    """64 random hex digits, a space, a timestamp (like the Upload Agent); ≤ 128 bytes."""
    return secrets.token_hex(32) + " " + datetime.now().strftime("%Y-%b-%d %H:%M:%S.%f")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class DXClient:
    """Async DNAnexus API client bound to one :class:`APIConfig` and one HTTP session."""

    def __init__(self, config: APIConfig, *, connections: int = 16,
                 policy: RetryPolicy | None = None, stall_timeout: float | None = None,
                 on_api_retry: Callable[[str, int, BaseException, float], None] | None = None,
                 sendfile: bool | None = None) -> None:
        self.config = config
        self.policy = policy or DEFAULT_POLICY
        self.transport = Transport(config, connections=connections, stall_timeout=stall_timeout,
                                   sendfile=sendfile)
        self.on_api_retry = on_api_retry

    async def __aenter__(self) -> "DXClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    # ------------------------------------------------------------------ generic call
    async def call(self, route: str, body: Mapping[str, Any] | None = None, *,
                   always_retry: bool | None = None, max_retries: int | None = None,
                   timeout: float | None = None) -> Any:
        """``POST route`` with retries. The body is serialised once (nonces stay identical)."""
        data = json.dumps(dict(body or {})).encode()

        def on_retry(n: int, exc: BaseException, delay: float) -> None:
            if self.on_api_retry is not None:
                self.on_api_retry(route, n, exc, delay)

        return await call_api_with_retries(
            lambda: self.transport.post_json(route, data, timeout=timeout),
            route=route, always_retry=always_retry, policy=self.policy,
            max_retries=max_retries, on_retry=on_retry)

    # ------------------------------------------------------------------ system
    async def greet(self, client: str = "dnanexus-upload-agent",
                    version: str = UA_COMPAT_VERSION, platform: str = "linux",
                    *, max_retries: int | None = None) -> dict[str, Any]:
        return await self.call("/system/greet",
                               {"client": client, "version": version, "platform": platform},
                               max_retries=max_retries)

    async def whoami(self, *, max_retries: int | None = None) -> str:
        """The caller's user ID, e.g. ``user-alice``."""
        resp = await self.call("/system/whoami", {}, max_retries=max_retries)
        return resp["id"]

    async def _pages(self, route: str, query: dict[str, Any]):
        """Each page of a ``find*`` route as ``(results, next)``, following ``next``. A cursor
        that does not advance (or a server that pages forever) would loop for ever: every
        cursor may be seen once, and the number of pages is bounded."""
        body = dict(query)
        seen: set[str] = set()
        while True:
            resp = await self.call(route, body)
            page = resp.get("results", []) if isinstance(resp, dict) else None
            if not isinstance(page, list):
                raise BadResponse(f"Malformed {route} response (no results list)", route=route)
            nxt = resp.get("next")
            yield page, nxt
            if nxt is None:
                return
            key = repr(nxt)
            if key in seen or len(seen) >= MAX_PAGES:
                raise BadResponse(f"{route} pagination does not advance (next={str(nxt)[:80]}); "
                                  "giving up", route=route)
            seen.add(key)
            body = {**query, "starting": nxt}

    async def _find_all(self, route: str, query: dict[str, Any],
                        max_results: int | None) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        async with aclosing(self._pages(route, query)) as pages:
            async for page, nxt in pages:
                results.extend(page)
                if nxt is None or (max_results is not None and len(results) >= max_results):
                    break
        return results if max_results is None else results[:max_results]

    async def find_data_objects_bounded(self, max_pages: int, **query: Any
                                        ) -> tuple[list[dict[str, Any]], bool]:
        """Like :meth:`find_data_objects` but reads at most ``max_pages`` pages; returns
        ``(results, complete)`` where ``complete`` is False when more pages remained."""
        results: list[dict[str, Any]] = []
        read = 0
        async with aclosing(self._pages("/system/findDataObjects", _drop_none(query))) as pages:
            async for page, nxt in pages:
                results.extend(page)
                read += 1
                if nxt is None:
                    return results, True
                if read >= max(1, max_pages):
                    break
        return results, False

    async def describe_data_objects(self, objects: list[Mapping[str, Any]]
                                    ) -> list[dict[str, Any]]:
        """``/system/describeDataObjects``: one result per object, in order. Each object is
        ``{"id": ..., "project": ..., "describe": {...}}``; each result is the describe
        mapping, or ``{}`` for an object the server did not describe (its ``error``)."""
        route = "/system/describeDataObjects"
        resp = await self.call(route, {"objects": [dict(o) for o in objects]})
        results = resp.get("results") if isinstance(resp, dict) else None
        if not isinstance(results, list) or len(results) != len(objects):
            raise BadResponse(f"Malformed {route} response (expected {len(objects)} results)",
                              route=route)
        out = []
        for r in results:
            d = r.get("describe") if isinstance(r, dict) else None
            out.append(d if isinstance(d, dict) else {})
        return out

    async def find_projects(self, name: str | dict | None = None, level: str | None = None,
                            *, describe: bool | dict = False, max_results: int | None = None,
                            **extra: Any) -> list[dict[str, Any]]:
        """``/system/findProjects``, following ``next``. ``name`` is exact or a glob dict."""
        query = _drop_none({"name": name, "level": level, **extra})
        if describe:
            query["describe"] = describe
        return await self._find_all("/system/findProjects", query, max_results)

    async def find_data_objects(self, *, max_results: int | None = None,
                                **query: Any) -> list[dict[str, Any]]:
        """``/system/findDataObjects`` with the given query keys, following ``next``."""
        return await self._find_all("/system/findDataObjects", _drop_none(query), max_results)

    # ------------------------------------------------------------------ projects
    async def project_describe(self, project: str, fields: Mapping[str, bool] | list | None = None,
                               *, max_retries: int | None = None, **flags: Any
                               ) -> dict[str, Any]:
        """``/project-x/describe`` (or ``/container-x/describe``). ``fields`` may be a list."""
        body: dict[str, Any] = dict(flags)
        if fields is not None:
            body["fields"] = {f: True for f in fields} if isinstance(fields, (list, tuple, set)) \
                else dict(fields)
        return await self.call(f"/{project}/describe", body, max_retries=max_retries)

    async def file_upload_parameters(self, project: str) -> dict[str, Any]:
        resp = await self.project_describe(project, {"fileUploadParameters": True})
        params = resp.get("fileUploadParameters")
        if not isinstance(params, dict):
            raise BadResponse(f"{project} describe has no fileUploadParameters")
        return params

    async def new_folder(self, project: str, folder: str, parents: bool = True) -> None:
        await self.call(f"/{project}/newFolder", {"folder": folder, "parents": parents})

    # ------------------------------------------------------------------ files
    async def file_new(self, *, project: str, name: str | None = None, folder: str = "/",
                       parents: bool = True, media: str | None = None,
                       properties: Mapping[str, str] | None = None,
                       tags: list[str] | tuple[str, ...] | None = None,
                       types: list[str] | tuple[str, ...] | None = None,
                       details: Any = None, hidden: bool = False,
                       nonce: str | None = None, **extra: Any) -> str:
        """``/file/new``; returns the new file ID. The nonce is made once here and re-sent
        unchanged by every retry, so a lost response cannot create two files."""
        body: dict[str, Any] = _drop_none({
            "project": project, "name": name, "folder": folder, "parents": parents,
            "media": media, "details": details, **extra,
        })
        body["hidden"] = bool(hidden)
        body["properties"] = dict(properties or {})
        if tags:
            body["tags"] = list(tags)
        if types:
            body["types"] = list(types)
        body["nonce"] = nonce or new_nonce()
        resp = await self.call("/file/new", body)
        return resp["id"]

    async def file_upload(self, file_id: str, index: int, size: int, md5: str, *,
                          max_retries: int | None = None) -> tuple[str, dict[str, str]]:
        """``/file-x/upload``: a fresh (url, headers) for one part."""
        resp = await self.call(f"/{file_id}/upload", {"index": index, "size": size, "md5": md5},
                               max_retries=max_retries)
        try:
            url = resp["url"]
            headers = resp.get("headers") or {}
            if not isinstance(url, str) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
                raise TypeError
        except (KeyError, TypeError, AttributeError):
            raise BadResponse(f"Malformed /upload response for {file_id} part {index}") from None
        return url, dict(headers)

    async def put_part(self, url: str, headers: Mapping[str, str], body: PartBody,
                       throttle: Throttle | None = None,
                       on_sent: Callable[[int], None] | None = None) -> None:
        """One PUT attempt of a part's bytes to a signed URL (no retry here). ``body`` is
        bytes-like, a sequence of them sent back to back, or a :class:`FileRange` sent
        straight from the file (sendfile on plain HTTP; LocalFileChanged if it changed)."""
        await self.transport.put(url, headers, body, throttle=throttle, on_sent=on_sent)

    async def upload_part(self, file_id: str, index: int, body: PartBody, md5: str, *,
                          tries: int, throttle: Throttle | None = None,
                          on_sent: Callable[[int], None] | None = None,
                          on_retry: OnRetry | None = None) -> int:
        """``/upload`` + PUT with the part retry policy, a fresh URL on every try.
        Returns the number of attempts used."""
        size = len(body) if isinstance(body, (bytes, bytearray, memoryview, FileRange)) \
            else sum(len(b) for b in body)
        used = 0

        async def attempt(n: int) -> None:
            nonlocal used
            used = n
            url, headers = await self.file_upload(file_id, index, size, md5)
            await self.put_part(url, headers, body, throttle=throttle, on_sent=on_sent)

        await run_part_with_retries(attempt, tries=tries, policy=self.policy, on_retry=on_retry,
                                    what=f"part {index} of {file_id}")
        return used

    async def file_describe(self, file_id: str, fields: Mapping[str, bool] | list | None = None,
                            *, project: str | None = None, **flags: Any) -> dict[str, Any]:
        body: dict[str, Any] = dict(flags)
        if project is not None:
            body["project"] = project
        if fields is not None:
            body["fields"] = {f: True for f in fields} if isinstance(fields, (list, tuple, set)) \
                else dict(fields)
        return await self.call(f"/{file_id}/describe", body)

    async def file_close(self, file_id: str) -> dict[str, Any]:
        """``/file-x/close``. Closing a closing/closed file succeeds with a ``detail``."""
        return await self.call(f"/{file_id}/close", {})

    async def file_download(self, file_id: str, *, project: str | None = None,
                            preauthenticated: bool = False) -> tuple[str, dict[str, str]]:
        body = _drop_none({"preauthenticated": preauthenticated, "project": project})
        resp = await self.call(f"/{file_id}/download", body)
        return resp["url"], dict(resp.get("headers") or {})

    async def download(self, file_id: str, *, project: str | None = None) -> bytes:
        """Whole content of a closed file (verification and tests)."""
        url, headers = await self.file_download(file_id, project=project)
        return await self.transport.get(url, headers)

    async def set_properties(self, file_id: str, project: str,
                             properties: Mapping[str, str | None]) -> None:
        await self.call(f"/{file_id}/setProperties",
                        {"project": project, "properties": dict(properties)})


def md5_b64(hex_md5: str) -> str:
    """base64 of a hex MD5 (the Content-MD5 header form)."""
    return base64.b64encode(bytes.fromhex(hex_md5)).decode()
