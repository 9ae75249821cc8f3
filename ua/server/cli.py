"""``ua-server``: serve a local DNAnexus-compatible platform and administer it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from . import errors as E
from .service import Service, UploadParams, parse_duration
from .store import Store

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Local DNAnexus-compatible file platform (for dx, ua and tests).")
project_app = typer.Typer(no_args_is_help=True, help="Projects.")
user_app = typer.Typer(no_args_is_help=True, help="Users.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens.")
member_app = typer.Typer(no_args_is_help=True, help="Project members.")
app.add_typer(project_app, name="project")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(member_app, name="member")

DataDir = typer.Option(..., "--data-dir", help="Server data directory.")
_TOKEN_RE = re.compile(r'"auth_token"\s*:\s*"([^"]+)"')


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"ua-server: error: {msg}", err=True)
    raise typer.Exit(code)


def _service(data_dir: Path) -> Service:
    if not (Path(data_dir) / "meta.db").exists():
        _fail(f"{data_dir} is not a ua-server data dir (run 'ua-server serve' once)")
    return Service(Store(data_dir))


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except E.APIError as exc:
        _fail(f"{exc.type}: {exc.message}")


# ============================================================================================
# serve
# ============================================================================================

def connect_host(bind_host: str) -> str:
    """The host clients should use for a server bound to ``bind_host``, as it goes into a URL:
    loopback for the wildcard addresses, an IPv6 literal in brackets (``[::1]``)."""
    if bind_host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    if ":" in bind_host and not bind_host.startswith("["):
        return f"[{bind_host}]"
    return bind_host


def write_dx_env(data_dir: Path, host: str, port: int, token: str, project: str) -> None:
    ctx = json.dumps({"auth_token_type": "Bearer", "auth_token": token})
    text = (f"export DX_APISERVER_PROTOCOL=http\n"
            f"export DX_APISERVER_HOST={host}\n"
            f"export DX_APISERVER_PORT={port}\n"
            f"export DX_SECURITY_CONTEXT='{ctx}'\n"
            f"export DX_PROJECT_CONTEXT_ID={project}\n")
    path = data_dir / "dx-env"
    tmp = data_dir / "dx-env.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_dx_env(data_dir: Path) -> dict[str, str]:
    out = {}
    path = data_dir / "dx-env"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        m = re.match(r"export (\w+)=(.*)$", line.strip())
        if m:
            v = m.group(2)
            if v.startswith("'") and v.endswith("'"):
                v = v[1:-1]
            out[m.group(1)] = v
    return out


async def _serve(config) -> None:
    from aiohttp import web

    from .app import make_app

    import fcntl

    lock = open(config.data_dir / "server.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        _fail(f"another ua-server is already serving {config.data_dir}")
    store = Store(config.data_dir)
    service = Service(store, config.params)
    token = service.op_bootstrap()
    env = read_dx_env(config.data_dir)
    if token is None:
        m = _TOKEN_RE.search(env.get("DX_SECURITY_CONTEXT", ""))
        if m:
            token = m.group(1)
        else:  # dx-env was removed: mint a fresh bootstrap token
            token = service.op_new_token("user-admin", None, None, None,
                                         label="bootstrap admin (re-issued)")["token"]
    project = env.get("DX_PROJECT_CONTEXT_ID") or service.op_default_project() or ""
    store.clean_temp_files()
    app = make_app(config, store)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=256)
    await site.start()
    if config.fault_spec and "put-slow" in config.fault_spec:
        import socket

        from .app import SLOW_RCVBUF

        for sock in site._server.sockets:  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    env_host = connect_host(config.host)
    write_dx_env(config.data_dir, env_host, port, token, project)
    sys.stdout.write(f"ua-server listening on http://{env_host}:{port}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@app.command()
def serve(
    data_dir: Path = DataDir,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8124, help="Port (0 picks a free one)."),
    close_delay: float = typer.Option(0.0, help="Seconds a closed file stays 'closing'."),
    fault: Optional[str] = typer.Option(None, help="Fault injection: KIND=PROB[@NAMEGLOB],..."),
    fault_seed: Optional[int] = typer.Option(None, help="Seed for fault injection."),
    min_part_size: int = typer.Option(5242880, help="fileUploadParameters.minimumPartSize"),
    max_part_size: int = typer.Option(5368709120, help="fileUploadParameters.maximumPartSize"),
    max_file_size: int = typer.Option(5497558138880, help="fileUploadParameters.maximumFileSize"),
    max_num_parts: int = typer.Option(10000, help="fileUploadParameters.maximumNumParts"),
    empty_last_part: bool = typer.Option(True, "--empty-last-part/--no-empty-last-part",
                                         help="fileUploadParameters.emptyLastPartAllowed"),
    upload_url_ttl: int = typer.Option(3600, help="Seconds an /upload URL stays valid."),
    request_log_max_bytes: int = typer.Option(
        256 * 1024 * 1024, min=0,
        help="Rotate DIR/requests.jsonl to requests.jsonl.1 (.1 to .2, ...) past this size; "
             "0 never rotates."),
    request_log_keep: int = typer.Option(4, min=0, help="Rotated request logs to keep."),
):
    """Run the server (bootstraps an empty data dir)."""
    from .app import Config
    from .faults import parse_spec

    try:
        parse_spec(fault)
    except ValueError as exc:
        _fail(str(exc), 2)
    data_dir = data_dir.resolve()
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
    config = Config(data_dir=data_dir, host=host, port=port, close_delay=close_delay,
                    fault_spec=fault, fault_seed=fault_seed,
                    params=UploadParams(min_part_size, max_part_size, max_file_size,
                                        max_num_parts, empty_last_part),
                    upload_url_ttl=upload_url_ttl, request_log_max_bytes=request_log_max_bytes,
                    request_log_keep=request_log_keep)
    asyncio.run(_serve(config))


# ============================================================================================
# admin commands (work while the server runs: SQLite WAL, short transactions)
# ============================================================================================

@project_app.command("new")
def project_new(name: str, data_dir: Path = DataDir,
                user: str = typer.Option("admin", help="Owner (gets ADMINISTER).")):
    """Create a project; prints its ID."""
    typer.echo(_run(_service(data_dir).op_new_project, name, user))


@project_app.command("list")
def project_list(data_dir: Path = DataDir):
    """All projects with their members."""
    svc = _service(data_dir)
    for r in svc.store.q("SELECT id, name FROM projects ORDER BY created"):
        members = ",".join(f"{u}:{l}" for u, l in svc.op_members(r["id"]).items())
        typer.echo(f"{r['id']}\t{r['name']}\t{members}")


@user_app.command("new")
def user_new(handle: str, data_dir: Path = DataDir):
    """Create a user; prints user-HANDLE."""
    typer.echo(_run(_service(data_dir).op_new_user, handle))


@user_app.command("list")
def user_list(data_dir: Path = DataDir):
    for r in _service(data_dir).store.q("SELECT id FROM users ORDER BY created"):
        typer.echo(r["id"])


@token_app.command("new")
def token_new(
    data_dir: Path = DataDir,
    user: str = typer.Option("admin", help="User handle the token acts for."),
    project: Optional[str] = typer.Option(None, help="Limit to this project (ID or name)."),
    level: Optional[str] = typer.Option(None, help="VIEW|UPLOAD|CONTRIBUTE|ADMINISTER (with --project)."),
    expires: Optional[str] = typer.Option(None, help="Lifetime, e.g. 30m, 12h, 7d."),
    label: str = typer.Option("", help="Free-text label."),
):
    """Create a token and print it once (only its hash is stored)."""
    if level and not project:
        _fail("--level needs --project", 2)
    try:
        secs = parse_duration(expires) if expires else None
    except ValueError as exc:
        _fail(str(exc), 2)
    res = _run(_service(data_dir).op_new_token, user, project, level, secs, label)
    typer.echo(res["token"])


@token_app.command("revoke")
def token_revoke(token_or_id: str, data_dir: Path = DataDir):
    """Revoke a token (by the token itself or its token-… ID)."""
    typer.echo(f"revoked {_run(_service(data_dir).op_revoke_token, token_or_id)}")


@token_app.command("list")
def token_list(data_dir: Path = DataDir):
    """ID, user, scope, status and expiry of every token (never the token)."""
    for t in _service(data_dir).op_list_tokens():
        scope = f"{t['project']}:{t['level']}" if t["project"] else "*"
        exp = "never" if t["expires"] is None else str(t["expires"])
        typer.echo(f"{t['id']}\t{t['user']}\t{scope}\t{t['status']}\texpires={exp}\t{t['label']}")


@app.command("files")
def files(project: str, data_dir: Path = DataDir):
    """Files of a project (ID or name): state, size and parts."""
    for f in _run(_service(data_dir).op_list_files, project):
        path = f["folder"].rstrip("/") + "/" + f["name"]
        typer.echo(f"{f['id']}\t{f['state']}\t{f['size']}\t{f['complete']}/{f['parts']} parts\t{path}")


@app.command("purge-open")
def purge_open(
    data_dir: Path = DataDir,
    older_than: str = typer.Option(..., help="Age since the file was last touched, e.g. 7d, 12h."),
    project: Optional[str] = typer.Option(None, help="Only this project (ID or name)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List, remove nothing."),
):
    """Remove open files untouched for --older-than (abandoned uploads) and their parts.

    An interrupted ua run leaves its files open so a re-run can resume them; run this from
    cron with an age well beyond how long uploaders may take to come back."""
    try:
        secs = parse_duration(older_than)
    except ValueError as exc:
        _fail(str(exc), 2)
    if secs <= 0:
        _fail("--older-than must be positive", 2)
    gone = _run(_service(data_dir).op_purge_open, secs, project, dry_run=dry_run)
    now = time.time()
    for f in gone:
        path = f["folder"].rstrip("/") + "/" + f["name"]
        age_h = (now - f["modified"] / 1000) / 3600
        typer.echo(f"{f['id']}\t{f['project']}\t{age_h:.1f}h\t{f['bytes']}\t{f['parts']} parts\t{path}")
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{verb} {len(gone)} open file(s), {sum(f['bytes'] for f in gone)} bytes",
               err=True)


@member_app.command("add")
def member_add(project: str, user: str, level: str, data_dir: Path = DataDir):
    """Give USER the LEVEL on PROJECT (ID or name)."""
    _run(_service(data_dir).op_invite, project, user, level)
    typer.echo(f"{user} {level.upper()} on {project}")


@member_app.command("remove")
def member_remove(project: str, user: str, data_dir: Path = DataDir):
    _run(_service(data_dir).op_remove_member, project, user)
    typer.echo(f"removed {user} from {project}")


@member_app.command("list")
def member_list(project: str, data_dir: Path = DataDir):
    for u, lvl in _run(_service(data_dir).op_members, project).items():
        typer.echo(f"{u}\t{lvl}")


@app.command("invite")
def invite(project: str, user: str, level: str, data_dir: Path = DataDir):
    """Same as 'member add'."""
    member_add(project, user, level, data_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
