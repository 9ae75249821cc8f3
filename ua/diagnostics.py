"""The information modes: ``--version``, ``--env`` and ``--test``.

* ``--version`` (stdout, exit 0): ``ua <version> (Upload Agent compatible 1.5.33)`` and the
  versions of Python, aiohttp and isal.
* ``--env`` (stdout): the API server, the token **masked** (first 4 characters + "…") with where
  it came from, the CA setting and the current project (one ``/project-x/describe``, no retry,
  when a project is configured). Exit 0, or 3 when no token is configured (the block is still
  printed first).
* ``--test`` (stdout): one line per check, ``OK``, ``FAIL`` or ``SKIP`` plus the reason, then a
  verdict. Exit 0 only when no check failed (SKIP is not a failure). Checks: configuration, API
  server reachable (``/system/greet``), token valid (``/system/whoami``), project access (``-p``
  or ``DX_PROJECT_CONTEXT_ID``, >= UPLOAD), upload URL reachable, proxy settings (masked), OS,
  CA certificate. The upload check creates a *hidden* file ``.ua-test-<random>`` in the
  project, gets an ``/upload`` URL for an empty part 1 and PUTs it, then removes the file with
  ``/project-x/removeObjects``. Removal needs CONTRIBUTE, so with only UPLOAD access the check
  is skipped (nothing is created) — ``--test`` never leaves an object behind on purpose.
  Nothing contacts any host other than the configured API server and the upload URL it hands out.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from typing import Any

from ua.options import UA_COMPAT_VERSION, Options
from ua.upload.output import EXIT_FAILED, EXIT_OK, EXIT_STARTUP


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - not installed / no metadata
        return "not installed"


def version_mode() -> int:
    from ua import __version__

    _out(f"ua {__version__} (Upload Agent compatible {UA_COMPAT_VERSION})")
    _out(f"  python: {platform.python_version()} ({platform.python_implementation()})")
    _out(f"  aiohttp: {_dist_version('aiohttp')}")
    _out(f"  isal: {_dist_version('isal')}")
    return EXIT_OK


def _env_block(cfg) -> None:
    from ua import __version__
    from ua.config import mask_token

    _out(f"Upload Agent v{UA_COMPAT_VERSION} compatible (ua {__version__}), environment info:")
    _out(f"  API server protocol: {cfg.protocol}")
    _out(f"  API server host:     {cfg.host}")
    _out(f"  API server port:     {cfg.port}")
    src = cfg.sources.get("token")
    _out(f"  Auth token: {mask_token(cfg.token)}" + (f" (from {src})" if cfg.token and src else ""))
    _out(f"  CA certificate: {cfg.ca_cert or 'system store'}")


async def _describe_project(cfg, project: str) -> str:
    from ua.api.client import DXClient
    from ua.api.errors import describe_error
    from ua.cli import api_config

    api = DXClient(api_config(cfg))
    try:
        d = await api.project_describe(project, max_retries=0)
        return f"{d.get('name', '')} ({d.get('id', project)})"
    except Exception as exc:  # noqa: BLE001 - printed, as the UA does
        return f" ({project}) {describe_error(exc)}"
    finally:
        await api.aclose()


def env_mode(opts: Options) -> int:
    from ua.cli import load_configuration

    cfg = load_configuration(opts, require_token=False)
    for w in cfg.warnings:
        sys.stderr.write(w + "\n")
    _env_block(cfg)
    if cfg.project_context and cfg.token:
        import asyncio

        _out(f"Current Project: {asyncio.run(_describe_project(cfg, cfg.project_context))}")
    else:
        _out(f"Current Project: {cfg.project_context or 'None'}")
    if not cfg.token:
        from ua.config import NO_TOKEN_MESSAGE

        sys.stderr.write(f"ERROR: {NO_TOKEN_MESSAGE}\n")
        return EXIT_STARTUP
    return EXIT_OK


# --------------------------------------------------------------------------- --test
def mask_proxy(value: str) -> str:
    """``http://user:pw@host:3128`` → ``http://****@host:3128``."""
    return re.sub(r"(^|//)[^/@]*@", r"\1****@", value)


class _Checks:
    def __init__(self) -> None:
        self.failed = 0

    def ok(self, name: str, detail: str) -> None:
        _out(f"OK    {name}: {detail}")

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        _out(f"FAIL  {name}: {detail}")

    def skip(self, name: str, detail: str) -> None:
        _out(f"SKIP  {name}: {detail}")

    def info(self, name: str, detail: str) -> None:
        _out(f"INFO  {name}: {detail}")


async def _online_checks(cfg, opts: Options, c: _Checks) -> None:
    import hashlib

    from ua.api import errors as E
    from ua.api.client import DXClient
    from ua.cli import Fatal, api_config, resolve_project

    url = cfg.api_url
    api = DXClient(api_config(cfg))
    try:
        try:
            resp = await api.greet(max_retries=0)
            upd = resp.get("update") if isinstance(resp, dict) else None
            note = ""
            if isinstance(upd, dict) and upd.get("available"):
                note = f"; a new version is available: {upd.get('version')}"
            c.ok("API server", f"{url} answered /system/greet{note}")
        except E.APIError as exc:
            # an API error still proves the server is reachable
            c.ok("API server", f"{url} reachable (greet answered {exc.type})")
        except E.UAError as exc:
            c.fail("API server", f"{url} not reachable: {E.describe_error(exc)}")
            c.skip("token", "API server not reachable")
            c.skip("project", "API server not reachable")
            c.skip("upload URL", "API server not reachable")
            return
        try:
            user = await api.whoami(max_retries=0)
            c.ok("token", f"valid; current user {user}")
        except E.UAError as exc:
            c.fail("token", E.describe_error(exc))
            c.skip("project", "token not valid")
            c.skip("upload URL", "token not valid")
            return
        spec = opts.projects[0] if opts.projects else cfg.project_context
        if not spec:
            c.skip("project", "no -p/--project and no DX_PROJECT_CONTEXT_ID")
            c.skip("upload URL", "no project to test in")
            return
        try:
            project = await resolve_project(api, spec, url)
        except Fatal as exc:
            c.fail("project", str(exc))
            c.skip("upload URL", "no project with UPLOAD access")
            return
        try:
            d = await api.project_describe(project, max_retries=0)
            level, name = d.get("level"), d.get("name", "")
        except E.UAError:
            level, name = "UPLOAD", ""
        c.ok("project", f"{name} ({project}), access level {level}")
        if level not in ("CONTRIBUTE", "ADMINISTER"):
            c.skip("upload URL", f"access level {level} cannot remove a test file, so none is created")
            return
        import secrets

        fid = None
        try:
            fid = await api.file_new(project=project, name=f".ua-test-{secrets.token_hex(4)}", folder="/",
                                     hidden=True, media="application/octet-stream")
            target, headers = await api.file_upload(fid, 1, 0, hashlib.md5(b"").hexdigest(), max_retries=0)
            from ua.api.transport import mask_url

            await api.put_part(target, headers, b"")
            c.ok("upload URL", f"empty part PUT to {mask_url(target)} accepted")
        except E.UAError as exc:
            c.fail("upload URL", E.describe_error(exc))
        finally:
            if fid is not None:
                try:
                    await api.call(f"/{project}/removeObjects", {"objects": [fid], "force": True})
                except E.UAError as exc:
                    c.fail("clean-up", f"could not remove test file {fid}: {E.describe_error(exc)}")
    finally:
        await api.aclose()


def selftest_mode(opts: Options) -> int:
    from ua.cli import Fatal, load_configuration

    version_mode()
    c = _Checks()
    cfg: Any = None
    try:
        cfg = load_configuration(opts)
    except Fatal as exc:
        c.fail("configuration", str(exc))
    if cfg is not None:
        for w in cfg.warnings:
            c.info("configuration", w)
        c.ok("configuration", f"API server {cfg.api_url}; token from {cfg.sources.get('token')}")
        import asyncio

        asyncio.run(_online_checks(cfg, opts, c))
    else:
        for name in ("API server", "token", "project", "upload URL"):
            c.skip(name, "configuration incomplete")
    proxies = [(k, os.environ[k]) for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy",
                                             "NO_PROXY") if os.environ.get(k)]
    if proxies:
        for k, v in proxies:
            c.info("proxy", f"{k}={mask_proxy(v)} (used for API calls and uploads, except "
                            "hosts matched by NO_PROXY)")
    else:
        c.info("proxy", "no proxy set in environment")
    u = platform.uname()
    c.info("OS", f"{u.system} {u.release} {u.version} {u.machine}")
    if cfg is not None:
        c.info("CA certificate", cfg.ca_cert or "system store" if cfg.protocol.lower() == "https"
               else f"{cfg.ca_cert or 'system store'} (not needed for {cfg.protocol})")
    if c.failed:
        _out(f"{c.failed} check(s) failed.")
        sys.stderr.write("What to do next: run 'ua --env' to see the configuration, and 'ua -v --test' for details.\n")
        return EXIT_FAILED
    _out("All checks passed.")
    return EXIT_OK
