"""``ua``: the command line. Parse → dispatch a mode → (upload) configure, validate, greet,
resolve projects, expand inputs, run the pipeline, print the stdout contract, exit.

Mode dispatch follows the C++ Upload Agent (upload-agent.md §2.4): parse error → ``--env`` →
``--version`` → ``--test`` → ``--help`` / no file argument → upload.

Exit codes (docs/ARCHITECTURE.md): 0 all ok, 1 some file failed, 2 usage, 3 token /
connection / project error before any upload, 130 interrupted.

Keep module-level imports light: ``ua --help`` must not import aiohttp or the pipeline.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn, Sequence

from ua.options import (
    Options,
    UsageError,
    ValidationError,
    help_text,
    parse_argv,
    validate_values,
)
from ua.upload.output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STARTUP, EXIT_USAGE

UPLOAD_LEVELS = ("UPLOAD", "CONTRIBUTE", "ADMINISTER")
USAGE_HINT = "Run 'ua --help' for the list of options."


class Fatal(Exception):
    """Abort the run with ``ERROR: <message>`` on stderr and this exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def err(line: str = "") -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- entry points
def _sigterm_as_interrupt(signum, frame) -> None:  # until the upload loop installs its own
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> NoReturn:
    import signal

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    code = run(list(sys.argv[1:] if argv is None else argv))
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # `ua ... | head`: no "Exception ignored" noise at shutdown
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


def run(argv: list[str]) -> int:
    try:
        opts = parse_argv(argv)
    except UsageError as exc:
        err(f"Error processing arguments: {exc}")
        err(USAGE_HINT)
        return EXIT_USAGE
    try:
        if opts.env:
            from ua.diagnostics import env_mode
            return env_mode(opts)
        if opts.version:
            from ua.diagnostics import version_mode
            return version_mode()
        if opts.test:
            from ua.diagnostics import selftest_mode
            return selftest_mode(opts)
        if opts.help:
            sys.stdout.write(help_text())
            return EXIT_OK
        if not opts.files:
            sys.stderr.write(help_text())
            err()
            err("Error processing arguments: no file to upload was given")
            return EXIT_USAGE
        return upload_mode(opts)
    except Fatal as exc:
        err(f"ERROR: {exc}")
        return exc.code
    except KeyboardInterrupt:
        err("Interrupted.")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line (traceback with -v), never a silent exit 0
        if opts.verbose:
            import traceback

            traceback.print_exc()
        err(f"ERROR: internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


# --------------------------------------------------------------------------- shared steps
def load_configuration(opts: Options, *, require_token: bool = True):
    """Config from options + environment + config files; :class:`Fatal` (exit 3) if unusable."""
    from ua.config import ConfigError, load_config

    try:
        cfg = load_config(os.environ, auth_token=opts.auth_token, apiserver_protocol=opts.apiserver_protocol,
                          apiserver_host=opts.apiserver_host, apiserver_port=opts.apiserver_port,
                          certificate_file=opts.certificate_file, require_token=require_token)
    except ConfigError as exc:
        raise Fatal(str(exc), EXIT_STARTUP) from None
    return cfg


def api_config(cfg):
    from ua.api.transport import APIConfig

    return APIConfig(protocol=cfg.protocol, host=cfg.host, port=cfg.port or None, token=cfg.token,
                     ca_cert=cfg.ca_cert)


def setup_verbose_logging(token: str | None) -> None:
    """``--verbose``: the ``ua`` loggers at DEBUG on stderr, with the token masked in every
    record as a second line of defence (the transport already masks URLs)."""
    import logging

    class Mask(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if token:
                msg = record.getMessage()
                if token in msg:
                    record.msg = msg.replace(token, "****")
                    record.args = ()
            return True

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(created).3f] %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Mask())
    logger = logging.getLogger("ua")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


def startup_error(exc: BaseException, url: str) -> Fatal:
    """One clear line for a failed start-up call (greet, whoami, project lookups)."""
    from ua.api import errors as E

    if isinstance(exc, E.InvalidAuthentication):
        return Fatal(f"the auth token was rejected by {url} ({exc.type}: {exc.api_message}). Check --auth-token or "
                     "DX_SECURITY_CONTEXT.", EXIT_STARTUP)
    if isinstance(exc, E.TLSError):
        return Fatal(f"{exc.message}. Check the server's certificate, or use --certificate-file PATH "
                     "(NOVERIFY disables verification, not recommended).", EXIT_STARTUP)
    if isinstance(exc, E.APIError):
        return Fatal(f"Unable to connect to API server {url}: an unexpected error occurred. ({exc.message})",
                     EXIT_STARTUP)
    return Fatal(f"Unable to connect to API server {url} ({E.describe_error(exc)}). Run 'ua --env' to see the "
                 "current configuration.", EXIT_STARTUP)


async def greet(api, url: str, *, verbose: bool = False) -> None:
    from ua.api.errors import UAError

    try:
        resp = await api.greet()
    except UAError as exc:
        raise startup_error(exc, url) from None
    update = resp.get("update") if isinstance(resp, dict) else None
    if isinstance(update, dict) and update.get("available"):
        version, link = update.get("version", "?"), update.get("url", "")
        if update.get("level") == "required":
            err("**********")
            err("Upload Agent being used is too old to continue.")
            err(f"Please download latest version (v{version}) from {link}")
            err("**********")
            raise Fatal("the API server requires a newer Upload Agent version", EXIT_STARTUP)
        err("*********** Update Available ***********")
        err(f"A new version of Upload Agent (v{version}) is available for your platform!")
        err(f"It's highly recommended that you download the latest version from here {link}")
        err("****************************************")


def _no_project(spec: str) -> str:
    return (f'"{spec}" does not represent a valid project name or ID (with >=UPLOAD access). Please check the '
            "project name/ID given and whether you have >= UPLOAD permission to project specified.")


async def resolve_project(api, spec: str, url: str, *, verbose: bool = False) -> str:
    """A project spec → its ID, requiring >= UPLOAD (upload-agent.md §3.2, paginated)."""
    from ua.api import errors as E
    from ua.ids import is_id

    matches: dict[str, str] = {}
    try:
        if is_id(spec, "project", "container"):
            try:
                d = await api.project_describe(spec)
            except E.InvalidAuthentication:
                raise
            except E.APIError as exc:
                if isinstance(exc, E.TransientError):
                    raise
                d = None
            if isinstance(d, dict) and d.get("level") in UPLOAD_LEVELS:
                matches[d.get("id", spec)] = d.get("name", "")
        else:
            for r in await api.find_projects(name=spec, level="UPLOAD", describe=False):
                if isinstance(r, dict) and r.get("id"):
                    matches.setdefault(r["id"], "")
    except E.UAError as exc:
        raise startup_error(exc, url) from None
    if not matches:
        raise Fatal(_no_project(spec), EXIT_STARTUP)
    if len(matches) > 1:
        if verbose:
            for pid in sorted(matches):
                err(f"  candidate: {pid}")
        raise Fatal(f'"{spec}" does not uniquely identify a project (multiple matches found)', EXIT_STARTUP)
    return next(iter(matches))


# --------------------------------------------------------------------------- upload mode
def upload_mode(opts: Options) -> int:
    cfg = load_configuration(opts)
    for w in cfg.warnings:
        err(w)
    from ua.upload import sources

    try:
        sources.check_arguments(opts.files, stdin=opts.read_from_stdin, override_limit=opts.override_file_limit)
        slots = sources.pair(opts.files, opts.projects, opts.folders, opts.names, cfg.project_context)
        notes = validate_values(opts)
        planned = sources.plan(slots, recursive=opts.recursive, stdin=opts.read_from_stdin,
                               manifest=opts.manifest, override_limit=opts.override_file_limit)
    except ValidationError as exc:
        raise Fatal(str(exc), EXIT_USAGE) from None
    for line in notes:
        err(line)
    if opts.verbose:
        setup_verbose_logging(cfg.token)
        import logging

        log = logging.getLogger("ua.cli")
        log.info("API server %s (sources: %s)", cfg.api_url,
                 ", ".join(f"{k}={v}" for k, v in sorted(cfg.sources.items())))
        from ua.config import mask_token
        log.info("options: %s", {k: (mask_token(v) if k == "auth_token" else v) for k, v in vars(opts).items()
                                  if k not in ("raw_properties", "raw_details")})
    import asyncio

    return asyncio.run(_upload(opts, cfg, planned))


async def _upload(opts: Options, cfg, planned) -> int:
    import asyncio
    import signal

    from ua.api.client import DXClient
    from ua.upload import sources
    from ua.upload.model import FileResult, FileSource, FileState, UploadSettings
    from ua.upload.output import exit_code, summary_line, write_stdout
    from ua.upload.progress import Reporter

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupted = {"n": 0, "pipeline": False}
    main_task = asyncio.current_task()

    def on_signal(signame: str) -> None:
        interrupted["n"] += 1
        if interrupted["n"] > 1:
            err(f"{signame} again: exiting at once (open files stay resumable).")
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        if not interrupted["pipeline"]:
            err(f"{signame}: stopping before any upload started.")
            if main_task is not None:
                main_task.cancel()
            return
        err(f"{signame}: stopping; unfinished files stay open and can be resumed by running the same "
            "command again. Press Ctrl-C again to exit at once.")

    for sig, name in ((signal.SIGINT, "Interrupted"), (signal.SIGTERM, "Terminated")):
        try:
            loop.add_signal_handler(sig, on_signal, name)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass

    url = cfg.api_url
    log_retry = None
    if opts.verbose:
        import logging

        from ua.api.errors import describe_error

        alog = logging.getLogger("ua.api")

        def log_retry(route: str, n: int, exc: BaseException, delay: float) -> None:
            alog.warning("%s failed (try %d): %s; retrying in %.1f s", route, n, describe_error(exc), delay)

    t0 = time.monotonic()
    api = DXClient(api_config(cfg), connections=max(4, opts.upload_threads + 4), on_api_retry=log_retry)
    try:
        try:
            await greet(api, url, verbose=opts.verbose)
            resolved: dict[str, str] = {}
            for spec in dict.fromkeys(p.project for p in planned):
                resolved[spec] = await resolve_project(api, spec, url, verbose=opts.verbose)
        except asyncio.CancelledError:
            return EXIT_INTERRUPTED
        tasks = sources.to_tasks(planned, resolved.__getitem__)
        if not opts.do_not_resume and not opts.read_from_stdin:
            try:
                sources.check_duplicates(tasks)
            except ValidationError as exc:
                raise Fatal(str(exc), EXIT_USAGE) from None

        settings = UploadSettings(
            chunk_size=opts.chunk_size, compress=not opts.do_not_compress, tries=opts.tries,
            read_threads=opts.read_threads, compress_threads=opts.compress_threads,
            upload_threads=opts.upload_threads, throttle=opts.throttle, resume=not opts.do_not_resume,
            wait_on_close=opts.wait_on_close, wait_on_close_timeout=opts.wait_on_close_timeout,
            hidden=opts.visibility == "hidden",
            properties=dict(opts.properties), tags=tuple(opts.tags), types=tuple(opts.types),
            details=opts.details, compress_level=opts.compress_level)

        total = 0
        known = True
        for t in tasks:
            if t.source is FileSource.PATH and t.local_path and not t.error:
                try:
                    total += os.path.getsize(t.local_path)
                except OSError:
                    pass
            elif t.source is FileSource.STDIN:
                known = False
        if opts.progress:
            mode = "bars" if sys.stderr.isatty() else "plain"
        else:
            mode = "messages"
        reporter = Reporter(mode, total_files=len(tasks), total_bytes=total if known else None,
                            throttle=opts.throttle, verbose=opts.verbose)

        from ua.upload.pipeline import upload_files

        interrupted["pipeline"] = True
        reporter.start()
        try:
            results: list[FileResult] = await upload_files(api, tasks, settings, reporter, stop)
        except asyncio.CancelledError:
            results = [FileResult(task=t, state=FileState.CANCELLED, error="interrupted") for t in tasks]
        except Exception as exc:  # a bug in the pipeline: still honour the stdout contract
            from ua.api.errors import describe_error

            err(f"ERROR: upload pipeline failed: {describe_error(exc)}")
            results = [FileResult(task=t, state=FileState.FAILED, error=describe_error(exc)) for t in tasks]
        finally:
            reporter.close()
    finally:
        try:
            await api.aclose()
        except Exception:  # noqa: BLE001 - closing must not hide the result
            pass

    seconds = time.monotonic() - t0
    was_interrupted = interrupted["n"] > 0 or any(r.state is FileState.CANCELLED for r in results)
    pid = os.getpid()
    if was_interrupted:
        done = [r for r in results if r.ok]
        not_done = [r for r in results if not r.ok]
        err(f"Interrupted: {len(done)} of {len(results)} files finished.")
        for r in done:
            err(f"  finished:     {r.task.label} -> {r.file_id}")
        for r in not_done:
            how = "failed" if r.state is FileState.FAILED else "not finished"
            extra = f" ({r.file_id}, resumable)" if r.file_id and r.state is FileState.CANCELLED else ""
            err(f"  {how + ':':13} {r.task.label}{extra}")
    else:
        err(f"{int(time.time())} PID {pid} ... all files closed.")
    code = exit_code(results, interrupted=was_interrupted)
    err(summary_line(results, seconds))
    try:
        write_stdout(results, sys.stdout, as_json=opts.json, seconds=seconds, code=code)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code
