"""Console request handlers.

Every action calls the same :class:`ua.server.service.Service` method the JSON API route calls
(``invite``, ``decrease_permissions``, ``transfer``, ``accept_transfer``, ``new_project``,
``new_folder``, ``list_folder``, ``describe_file``, ``file_download``, ``create_token``,
``revoke_token`` ...), with the :class:`Caller` obtained from the signed-in API token via
``Service.authenticate``. Hiding a control in a page is presentation only: the permission
decision is always the service's, so a forged POST gets the same PermissionDenied as the API.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from .. import errors as E
from ..service import ADMINISTER, LEVEL_NAMES, LEVELS, UPLOAD, Caller, Service
from ..store import now_ms
from .sessions import Session, SessionStore

PREFIX = "/console"
COOKIE = "ua_console"
LOGIN_COOKIE = "ua_console_login"
HERE = Path(__file__).parent
LEVEL_ORDER = ["VIEW", "UPLOAD", "CONTRIBUTE", "ADMINISTER"]
SESSION_KEY = "console_session"
REASONS = {
    "expired": "Your console session has expired. Sign in again.",
    "token": "The API token of this session is no longer valid (revoked or expired).",
    "signedout": "You have signed out.",
}


class CSRFError(Exception):
    pass


# --- formatting helpers (also used by templates) ------------------------------------------------

def fmt_time(ms: int | None, utc: bool = True) -> str:
    if ms is None:
        return "never"
    t = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC" if utc else "%Y-%m-%d %H:%M")


def fmt_size(n: int | None) -> str:
    if n is None:
        return "–"
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{int(x)} B" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"


def url(path: str, **query: Any) -> str:
    q = {k: v for k, v in query.items() if v is not None}
    return PREFIX + path + ("?" + urllib.parse.urlencode(q) if q else "")


def file_row(d: dict) -> dict:
    parts = d.get("parts") or {}
    complete = sum(1 for p in parts.values() if p.get("state") == "complete")
    return {"id": d["id"], "name": d["name"], "folder": d["folder"], "state": d["state"],
            "size": d["size"], "size_h": fmt_size(d["size"]), "parts_complete": complete,
            "parts_total": len(parts), "created": fmt_time(d["created"]),
            "created_by": d.get("createdBy", {}).get("user", ""), "hidden": d.get("hidden", False),
            "href": url(f"/file/{d['id']}")}


class Console:
    def __init__(self, service: Service, sessions: SessionStore | None = None):
        self.svc = service
        self.sessions = sessions or SessionStore()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=jinja2.select_autoescape(["html"], default=True),
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(url=url, fmt_time=fmt_time, fmt_size=fmt_size,
                                levels=LEVEL_ORDER, prefix=PREFIX)

    # =========================================================================================
    # plumbing
    # =========================================================================================
    def render(self, request: web.Request, name: str, status: int = 200, **ctx) -> web.Response:
        s: Session | None = request.get(SESSION_KEY)
        base = {"me": s.user_id if s else None, "csrf": s.csrf if s else "",
                "flash": s.pop_flash() if s else [], "title": ""}
        base.update(ctx)
        html = self.env.get_template(name).render(**base)
        return web.Response(text=html, content_type="text/html", status=status)

    def error_page(self, request, status: int, kind: str, message: str) -> web.Response:
        return self.render(request, "error.html", status=status, title=kind, kind=kind,
                           message=message, status_code=status)

    def session(self, request: web.Request) -> tuple[Session, Caller]:
        """The signed-in session and its Caller (the token is re-authenticated every time)."""
        sid = request.cookies.get(COOKIE)
        s = self.sessions.get(sid)
        if s is None:
            raise web.HTTPSeeOther(url("/login", reason="expired" if sid else None))
        try:
            caller = self.svc.authenticate(s.token)
        except E.InvalidAuthentication:
            self.sessions.drop(sid)
            raise web.HTTPSeeOther(url("/login", reason="token")) from None
        request[SESSION_KEY] = s
        return s, caller

    async def form(self, request: web.Request) -> tuple[Session, Caller, Any]:
        """A POSTed console form: signed-in session, same-origin, valid CSRF token."""
        s, caller = self.session(request)
        data = await request.post()
        self._check_origin(request)
        if not s.check_csrf(data.get("csrf")):
            raise CSRFError("The form's CSRF token is missing or wrong. Reload the page and "
                            "try again.")
        return s, caller, data

    @staticmethod
    def _check_origin(request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise CSRFError("Cross-origin form submission refused.")

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except CSRFError as exc:
            return self.error_page(request, 403, "Forbidden", str(exc))
        except E.PermissionDenied as exc:
            return self.error_page(request, 403, "PermissionDenied", exc.message)
        except (E.ResourceNotFound, E.InvalidType) as exc:
            return self.error_page(request, 404, exc.type, exc.message)
        except E.APIError as exc:
            back = request.get("back")
            s = request.get(SESSION_KEY)
            if request.method == "POST" and back and s is not None:
                s.flash.append(("error", f"{exc.type}: {exc.message}"))
                raise web.HTTPSeeOther(back) from None
            return self.error_page(request, exc.status if exc.status < 500 else 500, exc.type,
                                   exc.message)

    @staticmethod
    async def on_prepare(request: web.Request, resp: web.StreamResponse) -> None:
        h = resp.headers
        h.setdefault("Content-Security-Policy",
                     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                     "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                     "base-uri 'none'")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")  # no-referrer would make Origin "null"
        if not request.path.startswith(PREFIX + "/static/"):
            h.setdefault("Cache-Control", "no-store")

    # =========================================================================================
    # sign-in / sign-out
    # =========================================================================================
    async def login_page(self, request: web.Request, *, error: str | None = None,
                         status: int = 200) -> web.Response:
        s = self.sessions.get(request.cookies.get(COOKIE))
        if s is not None and error is None:
            raise web.HTTPSeeOther(url("/"))
        nonce = secrets.token_urlsafe(24)
        info = REASONS.get(request.query.get("reason", ""))
        resp = self.render(request, "login.html", status=status, title="Sign in",
                           login_csrf=nonce, error=error, info=info)
        resp.set_cookie(LOGIN_COOKIE, nonce, path=PREFIX, httponly=True, samesite="Strict",
                        max_age=3600, secure=request.secure)
        return resp

    async def login(self, request: web.Request) -> web.Response:
        data = await request.post()
        self._check_origin(request)
        expect = request.cookies.get(LOGIN_COOKIE)
        given = data.get("csrf")
        if not expect or not given or not secrets.compare_digest(expect, str(given)):
            raise CSRFError("The sign-in form was stale or forged (CSRF check failed). "
                            "Reload the page and try again.")
        token = str(data.get("token", "")).strip()
        try:
            caller = self.svc.authenticate(token)
        except E.InvalidAuthentication as exc:
            return await self.login_page(request, error=f"Sign-in failed: {exc.message}.",
                                         status=401)
        self.sessions.drop(request.cookies.get(COOKIE))
        sid, s = self.sessions.new(token, caller.user_id)
        if caller.scope_project:
            s.flash.append(("info", f"Signed in with a token limited to {caller.scope_project} "
                                    f"at {LEVEL_NAMES.get(caller.scope_level, '?')}."))
        resp = redirect(url("/"))
        resp.set_cookie(COOKIE, sid, path=PREFIX, httponly=True, samesite="Strict",
                        secure=request.secure)
        resp.del_cookie(LOGIN_COOKIE, path=PREFIX)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        await self.form(request)
        self.sessions.drop(request.cookies.get(COOKIE))
        resp = redirect(url("/login", reason="signedout"))
        resp.del_cookie(COOKIE, path=PREFIX)
        return resp

    # =========================================================================================
    # projects
    # =========================================================================================
    async def projects(self, request: web.Request) -> web.Response:
        s, caller = self.session(request)
        rows = []
        for r in self.svc.list_projects(caller):
            d = r["describe"]
            rows.append({"id": r["id"], "name": d["name"], "level": r["level"],
                         "created": fmt_time(d["created"]), "usage": fmt_size(int(d["dataUsage"] * 1e9)),
                         "pending": d.get("pendingTransfer")})
        rows.sort(key=lambda r: (r["name"].lower(), r["id"]))
        return self.render(request, "projects.html", title="Projects", projects=rows,
                           incoming=self.svc.incoming_transfers(caller),
                           can_create=caller.unscoped)

    async def new_project(self, request: web.Request) -> web.Response:
        request["back"] = url("/")
        s, caller, data = await self.form(request)
        res = self.svc.new_project(caller, {"name": str(data.get("name", "")).strip()})
        s.flash.append(("ok", f"Created project {data.get('name')} ({res['id']})."))
        raise web.HTTPSeeOther(url(f"/project/{res['id']}"))

    async def accept(self, request: web.Request) -> web.Response:
        request["back"] = url("/")
        s, caller, _ = await self.form(request)
        pid = request.match_info["pid"]
        self.svc.accept_transfer(caller, pid, {})
        s.flash.append(("ok", f"Transfer accepted: you now have ADMINISTER on {pid}."))
        raise web.HTTPSeeOther(url(f"/project/{pid}"))

    def _listing(self, caller: Caller, pid: str, folder: str) -> tuple[list[str], list[dict]]:
        res = self.svc.list_folder(caller, pid, {"folder": folder, "describe": {"parts": True},
                                                 "includeHidden": True})
        files = [file_row(o["describe"]) for o in res["objects"]]
        files.sort(key=lambda f: (f["name"], f["id"]))
        return res["folders"], files

    async def project(self, request: web.Request) -> web.Response:
        s, caller = self.session(request)
        pid = request.match_info["pid"]
        desc = self.svc.describe_project(caller, pid, {})
        level = LEVELS[desc["level"]]
        folder = request.query.get("folder", "/")
        folders, files = self._listing(caller, pid, folder)
        crumbs = [("/", "/")]
        acc = ""
        for p in [p for p in folder.split("/") if p]:
            acc += "/" + p
            crumbs.append((p, acc))
        return self.render(
            request, "project.html", title=desc["name"], p=desc, level=desc["level"],
            folder=folder, crumbs=crumbs, folders=folders, files=files,
            members=self.svc.list_members(caller, pid),
            can_upload=level >= UPLOAD, can_admin=level >= ADMINISTER,
            usage=fmt_size(int(desc["dataUsage"] * 1e9)), created=fmt_time(desc["created"]),
            poll_url=url(f"/project/{pid}/files.json", folder=folder),
            host=request.host)

    async def project_files(self, request: web.Request) -> web.Response:
        s, caller = self.session(request)
        pid = request.match_info["pid"]
        folder = request.query.get("folder", "/")
        try:
            folders, files = self._listing(caller, pid, folder)
        except E.APIError as exc:
            return web.json_response(exc.body(), status=exc.status)
        counts = {st: sum(f["state"] == st for f in files) for st in ("open", "closing", "closed")}
        return web.json_response({"folder": folder, "folders": folders, "files": files,
                                  "counts": counts, "now": fmt_time(now_ms())})

    async def new_folder(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        request["back"] = url(f"/project/{pid}")
        s, caller, data = await self.form(request)
        base = str(data.get("parent", "/")) or "/"
        name = str(data.get("name", "")).strip().strip("/")
        folder = (base.rstrip("/") + "/" + name) if name else base
        self.svc.new_folder(caller, pid, {"folder": folder, "parents": True})
        s.flash.append(("ok", f"Created folder {folder}."))
        raise web.HTTPSeeOther(url(f"/project/{pid}", folder=folder))

    # =========================================================================================
    # sharing
    # =========================================================================================
    def _admin_project(self, caller: Caller, pid: str) -> dict:
        desc = self.svc.describe_project(caller, pid, {})
        if LEVELS[desc["level"]] < ADMINISTER:
            raise E.PermissionDenied(f"ADMINISTER access required for {pid}")
        return desc

    async def share_page(self, request: web.Request) -> web.Response:
        s, caller = self.session(request)
        pid = request.match_info["pid"]
        desc = self._admin_project(caller, pid)
        members = self.svc.list_members(caller, pid)
        return self.render(request, "share.html", title=f"Share {desc['name']}", p=desc,
                           members=members)

    async def share_add(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        request["back"] = url(f"/project/{pid}/share")
        s, caller, data = await self.form(request)
        who, level = str(data.get("invitee", "")).strip(), str(data.get("level", ""))
        self.svc.invite(caller, pid, {"invitee": who, "level": level})
        s.flash.append(("ok", f"Added {who} at {level.upper()}."))
        raise web.HTTPSeeOther(url(f"/project/{pid}/share"))

    async def share_level(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        request["back"] = url(f"/project/{pid}/share")
        s, caller, data = await self.form(request)
        uid, level = str(data.get("user", "")), str(data.get("level", ""))
        current = self.svc.list_members(caller, pid).get(uid)
        if current is None:
            raise E.ResourceNotFound(f"{uid} is not a member of {pid}")
        if level.upper() in LEVELS and current in LEVELS and LEVELS[level.upper()] < LEVELS[current]:
            # Lowering goes through /project-xxxx/decreasePermissions (keeps one ADMINISTER).
            self.svc.decrease_permissions(caller, pid, {uid: level.upper()})
        else:
            self.svc.invite(caller, pid, {"invitee": uid, "level": level})
        s.flash.append(("ok", f"{uid} now has {level.upper()}."))
        raise web.HTTPSeeOther(url(f"/project/{pid}/share"))

    async def share_remove(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        request["back"] = url(f"/project/{pid}/share")
        s, caller, data = await self.form(request)
        uid = str(data.get("user", ""))
        self.svc.decrease_permissions(caller, pid, {uid: None})
        s.flash.append(("ok", f"Removed {uid} from the project."))
        if uid == caller.user_id:
            raise web.HTTPSeeOther(url("/"))
        raise web.HTTPSeeOther(url(f"/project/{pid}/share"))

    # =========================================================================================
    # transfer
    # =========================================================================================
    async def transfer_page(self, request: web.Request) -> web.Response:
        s, caller = self.session(request)
        pid = request.match_info["pid"]
        desc = self._admin_project(caller, pid)
        return self.render(request, "transfer.html", title=f"Transfer {desc['name']}", p=desc)

    async def transfer(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        request["back"] = url(f"/project/{pid}/transfer")
        s, caller, data = await self.form(request)
        who = str(data.get("invitee", "")).strip()
        self.svc.transfer(caller, pid, {"invitee": who})
        s.flash.append(("ok", f"Transfer of {pid} offered to {who}. It completes when they "
                              "accept it in their console."))
        raise web.HTTPSeeOther(url(f"/project/{pid}"))

    # =========================================================================================
    # tokens
    # =========================================================================================
    async def tokens(self, request: web.Request) -> web.Response:
        s, caller = self.session(request)
        names = {}
        choices = []
        for r in self.svc.list_projects(caller):
            names[r["id"]] = r["describe"]["name"]
            if LEVELS[r["level"]] >= UPLOAD:
                choices.append({"id": r["id"], "name": r["describe"]["name"], "level": r["level"]})
        choices.sort(key=lambda c: c["name"].lower())
        toks = []
        mine = self.svc.list_tokens(caller)
        for t in reversed(mine):
            t = dict(t)
            t["project_name"] = names.get(t["project"], "") if t["project"] else ""
            t["created_h"] = fmt_time(t["created"], utc=False)
            t["expires_h"] = fmt_time(t["expires"], utc=False)
            t["current"] = t["id"] == caller.token_id
            toks.append(t)
        reveal, s.reveal = s.reveal, None
        default_exp = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=7)).strftime("%Y-%m-%d")
        return self.render(request, "tokens.html", title="API tokens", tokens=toks,
                           choices=choices, selected=request.query.get("project"),
                           reveal=reveal, default_exp=default_exp, can_create=caller.unscoped,
                           host=request.host)

    async def token_new(self, request: web.Request) -> web.Response:
        request["back"] = url("/tokens")
        s, caller, data = await self.form(request)
        project = str(data.get("project", "")) or None
        level = str(data.get("level", "UPLOAD")) if project else None
        expires_ms = _parse_expiry(str(data.get("expires_date", "")),
                                   str(data.get("expires_time", "")))
        label = str(data.get("label", "")).strip()[:200]
        res = self.svc.create_token(caller, project, level, expires_ms, label)
        s.reveal = {"id": res["id"], "token": res["token"], "project": project,
                    "level": level.upper() if level else None, "expires": fmt_time(expires_ms),
                    "label": label}
        raise web.HTTPSeeOther(url("/tokens", project=project))

    async def token_revoke(self, request: web.Request) -> web.Response:
        request["back"] = url("/tokens")
        s, caller, data = await self.form(request)
        tid = request.match_info["tid"]
        self.svc.revoke_token(caller, tid)
        if tid == caller.token_id:
            self.sessions.drop(request.cookies.get(COOKIE))
            raise web.HTTPSeeOther(url("/login", reason="token"))
        s.flash.append(("ok", f"Revoked {tid}. Uploads using it now fail."))
        raise web.HTTPSeeOther(url("/tokens"))

    # =========================================================================================
    # files
    # =========================================================================================
    async def file(self, request: web.Request) -> web.Response:
        s, caller = self.session(request)
        fid = request.match_info["fid"]
        d = self.svc.describe_file(caller, fid, {"parts": True, "properties": True,
                                                 "details": True})
        p = self.svc.describe_project(caller, d["project"], {})
        parts = sorted(((int(k), v) for k, v in (d.get("parts") or {}).items()))
        return self.render(request, "file.html", title=d["name"], f=d, p=p, parts=parts,
                           row=file_row(d), details=json.dumps(d.get("details"), indent=2),
                           modified=fmt_time(d["modified"]))

    async def download(self, request: web.Request) -> web.Response:
        s, caller = self.session(request)
        fid = request.match_info["fid"]
        res = self.svc.file_download(caller, fid, {"duration": 300},
                                     f"{request.scheme}://{request.host}")
        raise web.HTTPFound(res["url"])


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _parse_expiry(date: str, time_: str) -> int | None:
    """'YYYY-MM-DD' [+ 'HH:MM'] in UTC → epoch ms; empty date → no expiry."""
    date = date.strip()
    if not date:
        return None
    try:
        d = dt.date.fromisoformat(date)
        t = dt.time.fromisoformat(time_.strip()) if time_.strip() else dt.time(23, 59, 59)
    except ValueError:
        raise E.InvalidInput("The expiry must be a date (YYYY-MM-DD) and optional time (HH:MM)") from None
    when = dt.datetime.combine(d, t, tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def build_app(service: Service) -> web.Application:
    c = Console(service)
    sub = web.Application(middlewares=[c.middleware])
    sub.on_response_prepare.append(c.on_prepare)
    r = sub.router
    r.add_get("/", c.projects)
    r.add_get("/login", c.login_page)
    r.add_post("/login", c.login)
    r.add_post("/logout", c.logout)
    r.add_post("/projects", c.new_project)
    r.add_post("/transfers/{pid}/accept", c.accept)
    r.add_get("/project/{pid}", c.project)
    r.add_get("/project/{pid}/files.json", c.project_files)
    r.add_post("/project/{pid}/folder", c.new_folder)
    r.add_get("/project/{pid}/share", c.share_page)
    r.add_post("/project/{pid}/share", c.share_add)
    r.add_post("/project/{pid}/share/level", c.share_level)
    r.add_post("/project/{pid}/share/remove", c.share_remove)
    r.add_get("/project/{pid}/transfer", c.transfer_page)
    r.add_post("/project/{pid}/transfer", c.transfer)
    r.add_get("/tokens", c.tokens)
    r.add_post("/tokens", c.token_new)
    r.add_post("/tokens/{tid}/revoke", c.token_revoke)
    r.add_get("/file/{fid}", c.file)
    r.add_get("/file/{fid}/download", c.download)
    r.add_static("/static", HERE / "static")
    sub["console"] = c
    return sub
