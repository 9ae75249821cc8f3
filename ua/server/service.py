"""Permission-checked operations of ua-server.

Every public method of :class:`Service` that acts for a user takes a :class:`Caller` first and
performs its own permission check, so the JSON API (routes.py) and the web console reuse exactly
the same rules. Methods are synchronous and run on the event-loop thread; each one is atomic with
respect to other requests (SQLite short transactions, no awaits inside).

Visibility rule: a project or object the caller cannot see (level NONE) is ResourceNotFound;
a visible one with too low a level is PermissionDenied ("UPLOAD access required ...").
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import regex

from ua.ids import new_id

from . import errors as E
from .blobs import fsync_dir
from .signing import sign_download, sign_upload
from .store import Store, dumps, now_ms

NONE, VIEW, UPLOAD, CONTRIBUTE, ADMINISTER = 0, 1, 2, 3, 4
LEVEL_NAMES = {VIEW: "VIEW", UPLOAD: "UPLOAD", CONTRIBUTE: "CONTRIBUTE", ADMINISTER: "ADMINISTER"}
LEVELS = {v: k for k, v in LEVEL_NAMES.items()}

ADMIN_USER = "user-admin"
UPLOAD_URL_TTL_S = 3600
DOWNLOAD_URL_TTL_S = 24 * 3600
TOKEN_ALPHABET = string.ascii_letters + string.digits
HANDLE_RE = re.compile(r"^[a-z0-9][a-z0-9._]{0,63}$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
MAX_NAME = 4096
MAX_NONCE = 128


def level_name(level: int) -> str | None:
    return LEVEL_NAMES.get(level)


def parse_level(value: Any, *, what: str = "level") -> int:
    if not isinstance(value, str) or value.upper() not in LEVELS:
        raise E.InvalidInput(f"{what} must be one of VIEW, UPLOAD, CONTRIBUTE, ADMINISTER")
    return LEVELS[value.upper()]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    user_id: str
    token_id: str | None = None
    scope_project: str | None = None  # None: the user's own access everywhere
    scope_level: int | None = None

    @property
    def unscoped(self) -> bool:
        return self.scope_project is None


@dataclass
class UploadParams:
    minimumPartSize: int = 5242880
    maximumPartSize: int = 5368709120
    maximumFileSize: int = 5497558138880
    maximumNumParts: int = 10000
    emptyLastPartAllowed: bool = True

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PartRow:
    index: int
    state: str
    size: int | None
    md5: str | None


# --- input validation helpers -----------------------------------------------------------------

def _get(inp: dict, key: str, types, default=None, *, required=False):
    if key not in inp or inp[key] is None:
        if required:
            raise E.InvalidInput(f"Expected input key {key!r}")
        return default
    value = inp[key]
    if isinstance(types, type):
        types = (types,)
    if bool not in types and isinstance(value, bool) and int in types:
        raise E.InvalidInput(f"Expected {key!r} to be {types[0].__name__}")
    if not isinstance(value, types):
        names = "/".join(t.__name__ for t in types)
        raise E.InvalidInput(f"Expected {key!r} to be of type {names}")
    return value


def _str_list(inp: dict, key: str) -> list[str]:
    value = _get(inp, key, list, [])
    for v in value:
        if not isinstance(v, str) or not v or "\x00" in v:
            raise E.InvalidInput(f"Expected {key!r} to be a list of non-empty strings")
    return value


def check_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str):
        raise E.InvalidInput(f"Expected {what} to be a string")
    if not name or "\x00" in name or len(name) > MAX_NAME:
        raise E.InvalidInput(f"Invalid {what}: must be 1..{MAX_NAME} characters without NUL")
    return name


def normalize_folder(folder: Any) -> str:
    """Absolute, normalised folder path: collapse repeated slashes, drop a trailing slash."""
    if not isinstance(folder, str):
        raise E.InvalidInput("Expected folder to be a string")
    if not folder.startswith("/"):
        raise E.InvalidInput("Folder paths must be absolute (start with /)")
    if "\x00" in folder or len(folder) > MAX_NAME:
        raise E.InvalidInput("Invalid folder path")
    parts = [p for p in folder.split("/") if p]
    for p in parts:
        if p in (".", ".."):
            raise E.InvalidInput("Folder paths may not contain '.' or '..' components")
    return "/" + "/".join(parts)


def folder_parents(folder: str) -> list[str]:
    """All ancestors of ``folder`` including "/" and itself, shortest first."""
    out = ["/"]
    parts = [p for p in folder.split("/") if p]
    for i in range(len(parts)):
        out.append("/" + "/".join(parts[: i + 1]))
    return out


def check_properties(value: Any, *, allow_null: bool) -> dict:
    if not isinstance(value, dict):
        raise E.InvalidInput("Expected properties to be a mapping of strings to strings")
    for k, v in value.items():
        if not k or "\x00" in k or len(k) > 1024:
            raise E.InvalidInput("Invalid property key")
        if v is None and allow_null:
            continue
        if not isinstance(v, str) or "\x00" in v or len(v) > 65536:
            raise E.InvalidInput(f"Property {k!r} must have a string value")
    return value


def parse_duration(text: str) -> int:
    """'7d', '12h', '30m', '45s', '2w' or plain seconds → seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise ValueError(f"invalid duration {text!r} (use e.g. 30m, 12h, 7d)")
    mult = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return int(m.group(1)) * mult


# Wall-clock budget for all regexp matching of one request. Requests are served on the event
# loop, so a catastrophic-backtracking pattern from any VIEW user would otherwise freeze every
# other request; the `regex` package (mrab-regex) enforces the timeout inside the matcher.
REGEXP_BUDGET = 0.25  # seconds per request, across every name it is matched against


def _name_matcher(spec: Any) -> Callable[[str], bool]:
    if isinstance(spec, str):
        return lambda n: n == spec
    if isinstance(spec, dict):
        if "glob" in spec and isinstance(spec["glob"], str):
            pat = spec["glob"]
            return lambda n: fnmatch.fnmatchcase(n, pat)
        if "regexp" in spec and isinstance(spec["regexp"], str):
            flags = regex.VERSION0  # Python-re compatible syntax
            fl = spec.get("flags") or ""
            if not isinstance(fl, str):
                raise E.InvalidInput("Expected name.flags to be a string")
            if "i" in fl:
                flags |= regex.IGNORECASE
            try:
                rx = regex.compile(spec["regexp"], flags)
            except (regex.error, ValueError, OverflowError, RecursionError) as exc:
                raise E.InvalidInput(f"Invalid regular expression: {exc}") from None
            deadline: list[float] = []

            def search(n: str) -> bool:
                if not deadline:
                    deadline.append(time.monotonic() + REGEXP_BUDGET)
                left = deadline[0] - time.monotonic()
                try:
                    if left <= 0:
                        raise TimeoutError
                    return rx.search(n, timeout=left) is not None
                except TimeoutError:
                    raise E.InvalidInput("regexp too expensive: the name regexp took longer "
                                         f"than {REGEXP_BUDGET:g} s to evaluate") from None
            return search
    raise E.InvalidInput("Expected name to be a string or {glob: ...} or {regexp: ...}")


def _props_match(props: dict, query: Any) -> bool:
    if not isinstance(query, dict):
        raise E.InvalidInput("Expected properties query to be a mapping")
    if "$and" in query:
        return all(_props_match(props, q) for q in query["$and"])
    if "$or" in query:
        return any(_props_match(props, q) for q in query["$or"])
    for k, v in query.items():
        if v is True:
            if k not in props:
                return False
        elif v is False:
            if k in props:
                return False
        elif isinstance(v, str):
            if props.get(k) != v:
                return False
        else:
            raise E.InvalidInput("Property query values must be strings or booleans")
    return True


def _tags_match(tags: list, query: Any) -> bool:
    if isinstance(query, str):
        return query in tags
    if isinstance(query, dict):
        if "$and" in query:
            return all(_tags_match(tags, q) for q in query["$and"])
        if "$or" in query:
            return any(_tags_match(tags, q) for q in query["$or"])
    raise E.InvalidInput("Invalid tags query")


def _time_match(value: int, query: Any) -> bool:
    if not isinstance(query, dict):
        raise E.InvalidInput("Expected a {after, before} mapping")
    after, before = query.get("after"), query.get("before")
    if after is not None and value < after:
        return False
    if before is not None and value > before:
        return False
    return True


class Service:
    def __init__(self, store: Store, params: UploadParams | None = None,
                 close_delay: float = 0.0, upload_url_ttl: int = UPLOAD_URL_TTL_S):
        self.store = store
        self.params = params or UploadParams()
        self.close_delay = close_delay
        self.upload_url_ttl = upload_url_ttl
        self.secret = store.secret()
        # Called with a file id after it entered ``closing``; the app schedules finalisation.
        self.on_closing: Callable[[str], None] = lambda fid: None

    # =========================================================================================
    # Authentication
    # =========================================================================================
    def authenticate(self, token: str | None) -> Caller:
        if not token:
            raise E.InvalidAuthentication("You need to be logged in to use this method")
        h = hash_token(token)
        memo = self.store.authz_cache()
        row = memo.get(("token", h)) if memo is not None else None
        if row is None:
            row = self.store.q1("SELECT * FROM tokens WHERE hash=?", (h,))
            if row is not None and memo is not None:
                memo[("token", h)] = row
        if row is None:
            raise E.InvalidAuthentication("The token could not be found")
        if row["revoked"]:
            raise E.InvalidAuthentication("The token has been revoked")
        if row["expires"] is not None and row["expires"] <= now_ms():
            raise E.InvalidAuthentication("The token has expired")
        return Caller(row["user_id"], row["id"], row["project_id"], row["level"])

    # =========================================================================================
    # Levels
    # =========================================================================================
    def level(self, caller: Caller, project_id: str) -> int:
        if caller.scope_project is not None and caller.scope_project != project_id:
            return NONE
        memo = self.store.authz_cache()
        key = ("member", project_id, caller.user_id)
        lvl = memo.get(key) if memo is not None else None
        if lvl is None:
            row = self.store.q1("SELECT level FROM members WHERE project_id=? AND user_id=?",
                                (project_id, caller.user_id))
            lvl = row["level"] if row else NONE
            if memo is not None:
                memo[key] = lvl
        if caller.scope_level is not None:
            lvl = min(lvl, caller.scope_level)
        return lvl

    def _project_row(self, project_id: str):
        memo = self.store.authz_cache()
        key = ("project", project_id)
        if memo is not None and key in memo:
            return memo[key]
        row = self.store.q1("SELECT * FROM projects WHERE id=?", (project_id,))
        if memo is not None:
            memo[key] = row
        return row

    def _project(self, caller: Caller, project_id: Any, need: int = VIEW, *, what="project"):
        if not isinstance(project_id, str):
            raise E.InvalidInput(f"Expected {what} to be a project ID string")
        cls = project_id.split("-", 1)[0] if "-" in project_id else ""
        if cls not in ("project", "container"):
            raise E.InvalidType(f"{project_id!r} is not a project or container ID")
        row = self._project_row(project_id)
        lvl = self.level(caller, project_id) if row else NONE
        if row is None or lvl == NONE:
            raise E.ResourceNotFound(f'The entity {project_id} could not be found')
        if lvl < need:
            raise E.PermissionDenied(f"{LEVEL_NAMES[need]} access required for {project_id}")
        return row, lvl

    def _file(self, caller: Caller, file_id: str, need: int = VIEW, project_hint: Any = None,
              *, strict_project: bool = False, row: Any = False):
        """The file row and the caller's level on its project. ``row``: the file's row (or
        None if there is none) when the caller already read it."""
        if project_hint is not None and not isinstance(project_hint, str):
            raise E.InvalidInput("Expected project to be a string")
        if row is False:
            row = self.store.q1("SELECT * FROM files WHERE id=?", (file_id,))
        lvl = self.level(caller, row["project_id"]) if row else NONE
        if row is None or lvl == NONE:
            raise E.ResourceNotFound(f"The entity {file_id} could not be found")
        if strict_project and project_hint is not None and project_hint != row["project_id"]:
            raise E.ResourceNotFound(f"The entity {file_id} could not be found in {project_hint}")
        if lvl < need:
            raise E.PermissionDenied(
                f"{LEVEL_NAMES[need]} access required for the project in which {file_id} is")
        return row, lvl

    # =========================================================================================
    # Users
    # =========================================================================================
    def whoami(self, caller: Caller) -> dict:
        return {"id": caller.user_id}

    def describe_user(self, caller: Caller, user_id: str) -> dict:
        row = self.store.q1("SELECT * FROM users WHERE id=?", (user_id,))
        if row is None:
            raise E.ResourceNotFound(f"The entity {user_id} could not be found")
        handle = row["handle"]
        return {"id": row["id"], "class": "user", "handle": handle, "first": handle, "last": "",
                "middle": "", "fullName": handle, "email": f"{handle}@localhost",
                "created": row["created"], "billTo": row["id"]}

    def user_exists(self, user_id: str) -> bool:
        return self.store.q1("SELECT 1 FROM users WHERE id=?", (user_id,)) is not None

    # =========================================================================================
    # Projects
    # =========================================================================================
    def _create_project(self, name: str, owner: str, inp: dict | None = None) -> str:
        inp = inp or {}
        pid = new_id("project")
        t = now_ms()
        with self.store.tx() as c:
            c.execute("INSERT INTO projects(id, name, created, modified, created_by, bill_to,"
                      " description, summary, tags, properties) VALUES(?,?,?,?,?,?,?,?,?,?)",
                      (pid, name, t, t, owner, inp.get("billTo") or owner,
                       inp.get("description", ""), inp.get("summary", ""),
                       dumps(inp.get("tags", [])), dumps(inp.get("properties", {}))))
            c.execute("INSERT INTO members(project_id, user_id, level) VALUES(?,?,?)",
                      (pid, owner, ADMINISTER))
            c.execute("INSERT INTO folders(project_id, path) VALUES(?, '/')", (pid,))
        return pid

    def new_project(self, caller: Caller, inp: dict) -> dict:
        if not caller.unscoped:
            raise E.PermissionDenied("This token is limited to one project and cannot create projects")
        name = check_name(_get(inp, "name", str, required=True))
        bill_to = _get(inp, "billTo", str)
        if bill_to is not None and bill_to != caller.user_id:
            raise E.PermissionDenied("billTo must be the calling user on this server")
        for key in ("description", "summary"):
            _get(inp, key, str)
        _str_list(inp, "tags")
        if "properties" in inp:
            check_properties(inp["properties"], allow_null=False)
        return {"id": self._create_project(name, caller.user_id, inp)}

    def _folders(self, project_id: str) -> list[str]:
        return [r["path"] for r in self.store.q(
            "SELECT path FROM folders WHERE project_id=? ORDER BY path", (project_id,))]

    def _members(self, project_id: str) -> dict[str, str]:
        return {r["user_id"]: LEVEL_NAMES[r["level"]] for r in self.store.q(
            "SELECT user_id, level FROM members WHERE project_id=? ORDER BY user_id",
            (project_id,))}

    def _project_desc(self, row, lvl: int, inp: dict | bool | None) -> dict:
        inp = inp if isinstance(inp, dict) else {}
        usage = self.store.q1(
            "SELECT COALESCE(SUM(size), 0) AS s FROM files WHERE project_id=? AND state='closed'",
            (row["id"],))["s"]
        pending = self.store.q1("SELECT to_user FROM transfers WHERE project_id=?", (row["id"],))
        full = {
            "id": row["id"], "class": "project", "name": row["name"],
            "created": row["created"], "modified": row["modified"],
            "createdBy": {"user": row["created_by"]}, "billTo": row["bill_to"],
            "level": LEVEL_NAMES[lvl], "dataUsage": usage / 1e9, "storageUsage": usage / 1e9,
            "sponsoredDataUsage": 0.0, "remoteDataUsage": 0.0, "region": "local",
            "tags": json.loads(row["tags"]), "summary": row["summary"],
            "description": row["description"], "protected": bool(row["protected"]),
            "restricted": False, "downloadRestricted": False, "containsPHI": False,
            "databaseUIViewOnly": False, "version": 0, "isDisposable": False,
            "public": False, "fileUploadParameters": self.params.as_dict(),
            "pendingTransfer": pending["to_user"] if pending else None,
        }
        extra = {
            "folders": lambda: self._folders(row["id"]),
            "properties": lambda: json.loads(row["properties"]),
            "permissions": lambda: self._members(row["id"]),
            "appCaches": lambda: {},
        }
        fields = inp.get("fields")
        if isinstance(fields, dict) and fields:
            return _select_fields({"id": row["id"]}, fields, full, extra)
        out = full
        for k, fn in extra.items():
            if inp.get(k):
                out[k] = fn()
        return out

    def describe_project(self, caller: Caller, project_id: str, inp: dict) -> dict:
        row, lvl = self._project(caller, project_id, VIEW)
        return self._project_desc(row, lvl, inp)

    def update_project(self, caller: Caller, project_id: str, inp: dict) -> dict:
        need = ADMINISTER if "protected" in inp else CONTRIBUTE
        self._project(caller, project_id, need)
        sets, args = [], []
        if "name" in inp:
            sets.append("name=?"); args.append(check_name(inp["name"]))
        for key in ("description", "summary"):
            if key in inp:
                sets.append(f"{key}=?"); args.append(_get(inp, key, str, ""))
        if "protected" in inp:
            sets.append("protected=?"); args.append(int(bool(_get(inp, "protected", bool))))
        sets.append("modified=?"); args.append(now_ms())
        with self.store.tx() as c:
            c.execute(f"UPDATE projects SET {', '.join(sets)} WHERE id=?", (*args, project_id))
        return {"id": project_id}

    def destroy_project(self, caller: Caller, project_id: str, inp: dict) -> dict:
        self._project(caller, project_id, ADMINISTER)
        fids = [r["id"] for r in self.store.q("SELECT id FROM files WHERE project_id=?", (project_id,))]
        with self.store.tx() as c:
            for t in ("members", "folders", "transfers"):
                c.execute(f"DELETE FROM {t} WHERE project_id=?", (project_id,))
            c.execute("DELETE FROM parts WHERE file_id IN (SELECT id FROM files WHERE project_id=?)",
                      (project_id,))
            c.execute("DELETE FROM props WHERE file_id IN (SELECT id FROM files WHERE project_id=?)",
                      (project_id,))
            c.execute("DELETE FROM files WHERE project_id=?", (project_id,))
            c.execute("DELETE FROM projects WHERE id=?", (project_id,))
        for fid in fids:
            self._remove_blobs(fid)
        return {"id": project_id}

    def new_folder(self, caller: Caller, project_id: str, inp: dict) -> dict:
        self._project(caller, project_id, UPLOAD)
        folder = normalize_folder(_get(inp, "folder", str, required=True))
        parents = bool(_get(inp, "parents", bool, False))
        existing = set(self._folders(project_id))
        chain = folder_parents(folder)
        if not parents and chain[-2 if len(chain) > 1 else -1] not in existing:
            raise E.ResourceNotFound(f"The parent folder of {folder} could not be found")
        with self.store.tx() as c:
            for f in chain:
                c.execute("INSERT OR IGNORE INTO folders(project_id, path) VALUES(?,?)",
                          (project_id, f))
        return {"id": project_id}

    def _ensure_folder(self, project_id: str, folder: str, parents: bool) -> None:
        if self.store.q1("SELECT 1 FROM folders WHERE project_id=? AND path=?",
                         (project_id, folder)) is not None:
            return
        if not parents:
            raise E.ResourceNotFound(f"The folder {folder} could not be found in {project_id}")
        with self.store.tx() as c:
            for f in folder_parents(folder):
                c.execute("INSERT OR IGNORE INTO folders(project_id, path) VALUES(?,?)",
                          (project_id, f))

    def list_folder(self, caller: Caller, project_id: str, inp: dict) -> dict:
        self._project(caller, project_id, VIEW)
        folder = normalize_folder(_get(inp, "folder", str, "/"))
        only = _get(inp, "only", str, "all")
        if only not in ("all", "objects", "folders"):
            raise E.InvalidInput("only must be one of all, objects, folders")
        include_hidden = bool(_get(inp, "includeHidden", bool, False))
        describe = inp.get("describe", {})
        folders = self._folders(project_id)
        if folder not in folders:
            raise E.ResourceNotFound("The specified folder could not be found")
        out: dict = {}
        if only in ("all", "folders"):
            prefix = folder.rstrip("/") + "/"
            out["folders"] = [f for f in folders if f != folder and f.startswith(prefix)
                              and "/" not in f[len(prefix):]]
        if only in ("all", "objects"):
            rows = self.store.q("SELECT * FROM files WHERE project_id=? AND folder=? ORDER BY id",
                                (project_id, folder))
            objs = []
            for r in rows:
                if r["hidden"] and not include_hidden:
                    continue
                item = {"id": r["id"]}
                if describe is not False and describe is not None:
                    item["describe"] = self._file_desc(r, describe if isinstance(describe, dict) else {})
                objs.append(item)
            out["objects"] = objs
        return out

    def remove_objects(self, caller: Caller, project_id: str, inp: dict) -> dict:
        prow, _ = self._project(caller, project_id, CONTRIBUTE)
        if prow["protected"]:
            self._project(caller, project_id, ADMINISTER)
        objects = _str_list(inp, "objects")
        force = bool(_get(inp, "force", bool, False))
        found = []
        for oid in objects:
            r = self.store.q1("SELECT id FROM files WHERE id=? AND project_id=?", (oid, project_id))
            if r is None:
                if not force:
                    raise E.ResourceNotFound(f"The object {oid} could not be found in {project_id}")
                continue
            found.append(oid)
        self._delete_files(found)
        return {"id": project_id}

    def _delete_files(self, fids: list[str], *, open_before: int | None = None) -> list[str]:
        """Remove files, their parts and part files; the IDs removed. ``open_before`` (ms):
        only files that are, inside the deleting transaction, still open and unmodified
        since then (another request may have resumed one since it was chosen)."""
        gone = []
        if not fids:
            return gone
        with self.store.tx() as c:
            for fid in fids:
                if open_before is None:
                    c.execute("DELETE FROM files WHERE id=?", (fid,))
                elif not c.execute("DELETE FROM files WHERE id=? AND state='open' AND "
                                   "modified < ?", (fid, open_before)).rowcount:
                    continue
                c.execute("DELETE FROM parts WHERE file_id=?", (fid,))
                c.execute("DELETE FROM props WHERE file_id=?", (fid,))
                gone.append(fid)
        for fid in gone:
            self._remove_blobs(fid)
        return gone

    def _remove_blobs(self, fid: str) -> None:
        d = self.store.file_dir(fid)
        if d.is_dir():
            for f in d.iterdir():
                f.unlink(missing_ok=True)
            try:
                d.rmdir()
            except OSError:
                pass

    def remove_folder(self, caller: Caller, project_id: str, inp: dict) -> dict:
        self._project(caller, project_id, CONTRIBUTE)
        folder = normalize_folder(_get(inp, "folder", str, required=True))
        recurse = bool(_get(inp, "recurse", bool, False))
        force = bool(_get(inp, "force", bool, False))
        if folder == "/":
            raise E.InvalidInput("The root folder cannot be removed")
        folders = self._folders(project_id)
        if folder not in folders:
            if force:
                return {"id": project_id, "completed": True}
            raise E.ResourceNotFound("The specified folder could not be found")
        prefix = folder + "/"
        sub = [f for f in folders if f.startswith(prefix)]
        files = [r["id"] for r in self.store.q(
            "SELECT id FROM files WHERE project_id=? AND (folder=? OR folder LIKE ? ESCAPE '\\')",
            (project_id, folder, _like_prefix(prefix)))]
        if (sub or files) and not recurse:
            raise E.InvalidState(f"The folder {folder} is not empty (use recurse)")
        self._delete_files(files)
        with self.store.tx() as c:
            c.execute("DELETE FROM folders WHERE project_id=? AND (path=? OR path LIKE ? ESCAPE '\\')",
                      (project_id, folder, _like_prefix(prefix)))
        return {"id": project_id, "completed": True}

    # --- members / sharing ------------------------------------------------------------------
    def _resolve_user(self, invitee: Any) -> str:
        if not isinstance(invitee, str) or not invitee:
            raise E.InvalidInput("Expected invitee to be a user ID")
        uid = invitee if invitee.startswith("user-") else "user-" + invitee.lower()
        if "@" in invitee:
            row = self.store.q1("SELECT id FROM users WHERE handle=?", (invitee.split("@")[0].lower(),))
            if row is None:
                raise E.ResourceNotFound(f"No user with the email {invitee} could be found")
            return row["id"]
        if not self.user_exists(uid):
            raise E.ResourceNotFound(f"The user {uid} could not be found")
        return uid

    def invite(self, caller: Caller, project_id: str, inp: dict) -> dict:
        self._project(caller, project_id, ADMINISTER)
        uid = self._resolve_user(inp.get("invitee"))
        lvl = parse_level(inp.get("level"))
        with self.store.tx() as c:
            c.execute("INSERT INTO members(project_id, user_id, level) VALUES(?,?,?) "
                      "ON CONFLICT(project_id, user_id) DO UPDATE SET level=excluded.level",
                      (project_id, uid, lvl))
        return {"id": project_id, "state": "added"}

    def decrease_permissions(self, caller: Caller, project_id: str, inp: dict) -> dict:
        _, my_level = self._project(caller, project_id, VIEW)
        if not isinstance(inp, dict) or not inp:
            raise E.InvalidInput("Expected a mapping of user IDs to levels (or null)")
        members = {r["user_id"]: r["level"] for r in self.store.q(
            "SELECT user_id, level FROM members WHERE project_id=?", (project_id,))}
        changes = {}
        for uid, lvl in inp.items():
            if uid != caller.user_id and my_level < ADMINISTER:
                raise E.PermissionDenied(f"ADMINISTER access required for {project_id}")
            if uid not in members:
                raise E.ResourceNotFound(f"{uid} is not a member of {project_id}")
            new = NONE if lvl is None else parse_level(lvl)
            if new > members[uid]:
                raise E.InvalidInput("decreasePermissions cannot increase a level")
            changes[uid] = new
        after = dict(members)
        after.update(changes)
        if not any(v == ADMINISTER for v in after.values()):
            raise E.InvalidInput("A project must keep at least one ADMINISTER member")
        with self.store.tx() as c:
            for uid, new in changes.items():
                if new == NONE:
                    c.execute("DELETE FROM members WHERE project_id=? AND user_id=?", (project_id, uid))
                else:
                    c.execute("UPDATE members SET level=? WHERE project_id=? AND user_id=?",
                              (new, project_id, uid))
        return {"id": project_id}

    def list_members(self, caller: Caller, project_id: str) -> dict[str, str]:
        self._project(caller, project_id, VIEW)
        return self._members(project_id)

    def transfer(self, caller: Caller, project_id: str, inp: dict) -> dict:
        self._project(caller, project_id, ADMINISTER)
        uid = self._resolve_user(inp.get("invitee"))
        with self.store.tx() as c:
            c.execute("INSERT OR REPLACE INTO transfers(project_id, from_user, to_user, created)"
                      " VALUES(?,?,?,?)", (project_id, caller.user_id, uid, now_ms()))
        return {"id": project_id}

    def accept_transfer(self, caller: Caller, project_id: str, inp: dict) -> dict:
        row = self.store.q1("SELECT * FROM transfers WHERE project_id=?", (project_id,))
        if row is None or row["to_user"] != caller.user_id:
            raise E.ResourceNotFound(f"No pending transfer of {project_id} to {caller.user_id}")
        if caller.scope_project not in (None, project_id):
            raise E.PermissionDenied("This token cannot accept a transfer of that project")
        with self.store.tx() as c:
            c.execute("INSERT INTO members(project_id, user_id, level) VALUES(?,?,?) "
                      "ON CONFLICT(project_id, user_id) DO UPDATE SET level=excluded.level",
                      (project_id, caller.user_id, ADMINISTER))
            c.execute("UPDATE projects SET bill_to=?, modified=? WHERE id=?",
                      (caller.user_id, now_ms(), project_id))
            c.execute("DELETE FROM transfers WHERE project_id=?", (project_id,))
        return {"id": project_id}

    def incoming_transfers(self, caller: Caller) -> list[dict]:
        return [{"project": r["project_id"], "name": r["name"], "from": r["from_user"],
                 "created": r["created"]} for r in self.store.q(
            "SELECT t.*, p.name FROM transfers t JOIN projects p ON p.id=t.project_id "
            "WHERE to_user=?", (caller.user_id,))]

    # --- search ----------------------------------------------------------------------------
    def _visible_projects(self, caller: Caller, min_level: int = VIEW) -> dict[str, int]:
        out = {}
        for r in self.store.q("SELECT project_id FROM members WHERE user_id=?", (caller.user_id,)):
            lvl = self.level(caller, r["project_id"])
            if lvl >= min_level:
                out[r["project_id"]] = lvl
        return out

    def find_projects(self, caller: Caller, inp: dict) -> dict:
        min_level = parse_level(inp["level"]) if inp.get("level") is not None else CONTRIBUTE
        match = _name_matcher(inp["name"]) if inp.get("name") is not None else (lambda n: True)
        describe = inp.get("describe", False)
        limit = _limit(inp)
        starting = inp.get("starting")
        ids = sorted(self._visible_projects(caller, min_level).items())
        if "id" in inp:
            wanted = inp["id"] if isinstance(inp["id"], list) else [inp["id"]]
            ids = [x for x in ids if x[0] in wanted]
        if inp.get("public") is True:
            ids = []
        results = []
        nxt = None
        for pid, lvl in ids:
            if isinstance(starting, str) and pid < starting:
                continue
            row = self.store.q1("SELECT * FROM projects WHERE id=?", (pid,))
            if row is None or not match(row["name"]):
                continue
            if inp.get("tags") is not None and not _tags_match(json.loads(row["tags"]), inp["tags"]):
                continue
            if inp.get("properties") is not None and not _props_match(
                    json.loads(row["properties"]), inp["properties"]):
                continue
            if len(results) >= limit:
                nxt = pid
                break
            item = {"id": pid, "level": LEVEL_NAMES[lvl], "public": False,
                    "permissionSources": [caller.user_id]}
            if describe:
                item["describe"] = self._project_desc(row, lvl, describe)
            results.append(item)
        return {"results": results, "next": nxt}

    def list_projects(self, caller: Caller) -> list[dict]:
        """For the web console: every project the caller can see, with level."""
        return self.find_projects(caller, {"level": "VIEW", "describe": True, "limit": 1000})["results"]

    def find_data_objects(self, caller: Caller, inp: dict) -> dict:
        cls = _get(inp, "class", str)
        state = _get(inp, "state", str, "any")
        if state not in ("open", "closing", "closed", "any"):
            raise E.InvalidInput("state must be open, closing, closed or any")
        visibility = _get(inp, "visibility", str, "visible")
        if visibility not in ("hidden", "visible", "either"):
            raise E.InvalidInput("visibility must be hidden, visible or either")
        match = _name_matcher(inp["name"]) if inp.get("name") is not None else None
        props = inp.get("properties")
        types = inp.get("type")
        tags = inp.get("tags")
        describe = inp.get("describe", False)
        limit = _limit(inp)
        min_level = parse_level(inp["level"]) if inp.get("level") is not None else VIEW
        scope = _get(inp, "scope", dict)
        if scope is not None:
            pid = scope.get("project")
            _, lvl = self._project(caller, pid, VIEW)
            projects = [pid] if lvl >= min_level else []
            folder = normalize_folder(scope.get("folder", "/"))
            recurse = scope.get("recurse", True)
            if not isinstance(recurse, bool):
                raise E.InvalidInput("scope.recurse must be a boolean")
        else:
            projects = sorted(self._visible_projects(caller, min_level))
            folder, recurse = "/", True
        if "project" in inp and isinstance(inp["project"], str):
            projects = [p for p in projects if p == inp["project"]]
        if cls is not None and cls != "file":
            projects = []
        ids = inp.get("id")
        starting = inp.get("starting")
        start_key = None
        if starting is not None:
            if not isinstance(starting, dict) or not isinstance(starting.get("project"), str) \
                    or not isinstance(starting.get("id"), str):
                raise E.InvalidInput("Invalid starting value")
            start_key = (starting["project"], starting["id"])
        results, nxt = [], None
        described: list = []  # file rows of results, when describing
        for pid in projects:
            if start_key and pid < start_key[0]:
                continue
            sql = "SELECT * FROM files WHERE project_id=?"
            args: list = [pid]
            if folder != "/" or not recurse:
                if recurse:
                    sql += " AND (folder=? OR folder LIKE ? ESCAPE '\\')"
                    args += [folder, _like_prefix(folder + "/")]
                else:
                    sql += " AND folder=?"
                    args.append(folder)
            if state != "any":
                sql += " AND state=?"
                args.append(state)
            if isinstance(inp.get("name"), str):
                sql += " AND name=?"
                args.append(inp["name"])
            props_exact = False  # the SQL below already expresses the whole properties query
            if isinstance(props, dict) and not any(k.startswith("$") for k in props):
                props_exact = all(v is True or isinstance(v, str) for v in props.values())
                # drive the query from the props index (the unary + keeps SQLite from
                # scanning the project's files instead); _props_match re-checks below
                # unless these conditions are the whole query
                sql = sql.replace("WHERE project_id=?", "WHERE +project_id=?", 1)
                after = " AND file_id>=?" if start_key and pid == start_key[0] else ""
                for k, v in props.items():
                    if isinstance(v, str):
                        sql += (" AND id IN (SELECT file_id FROM props WHERE project_id=?"
                                f" AND key=? AND value=?{after})")
                        args += [pid, k, v]
                    elif v is True:
                        sql += (" AND id IN (SELECT file_id FROM props WHERE project_id=?"
                                f" AND key=?{after})")
                        args += [pid, k]
                    else:
                        continue
                    if after:
                        args.append(start_key[1])
            if start_key and pid == start_key[0]:
                sql += " AND id>=?"
                args.append(start_key[1])
            sql += " ORDER BY id"
            cur = self.store.conn.execute(sql, args)  # rows are read only up to the limit
            try:
                for r in cur:
                    if self._find_keep(r, inp, visibility, match, ids, None if props_exact
                                       else props, tags, types):
                        if len(results) >= limit:
                            nxt = {"project": pid, "id": r["id"]}
                            break
                        results.append({"project": pid, "id": r["id"]})
                        if describe:
                            described.append(r)
            finally:
                cur.close()
            if nxt:
                break
        if describe:
            opts = describe if isinstance(describe, dict) else {}
            parts = self._parts_many([r["id"] for r in described
                                      if self._desc_needs_parts(r, opts)])
            for item, r in zip(results, described):
                item["describe"] = self._file_desc(r, opts, parts.get(r["id"]))
        return {"results": results, "next": nxt}

    @staticmethod
    def _find_keep(r, inp, visibility, match, ids, props, tags, types) -> bool:
        if visibility == "visible" and r["hidden"]:
            return False
        if visibility == "hidden" and not r["hidden"]:
            return False
        if match and not match(r["name"]):
            return False
        if ids is not None and r["id"] not in (ids if isinstance(ids, list) else [ids]):
            return False
        if props is not None and not _props_match(json.loads(r["properties"]), props):
            return False
        if tags is not None and not _tags_match(json.loads(r["tags"]), tags):
            return False
        if types is not None and not _tags_match(json.loads(r["types"]), types):
            return False
        if inp.get("modified") is not None and not _time_match(r["modified"], inp["modified"]):
            return False
        if inp.get("created") is not None and not _time_match(r["created"], inp["created"]):
            return False
        return True

    def resolve_data_objects(self, caller: Caller, inp: dict) -> dict:
        objects = _get(inp, "objects", list, required=True)
        if len(objects) > 1000:
            raise E.InvalidInput("At most 1000 objects can be resolved at once")
        results = []
        for o in objects:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise E.InvalidInput("Each object must be a mapping with a name")
            pid = o.get("project", inp.get("project"))
            folder = o.get("folder", inp.get("folder", "/"))
            if pid is None:
                raise E.InvalidInput("project is required")
            try:
                self._project(caller, pid, VIEW)
            except (E.ResourceNotFound, E.PermissionDenied):
                results.append([])
                continue
            rows = self.store.q("SELECT id FROM files WHERE project_id=? AND folder=? AND name=? "
                                "ORDER BY id", (pid, normalize_folder(folder), o["name"]))
            results.append([{"project": pid, "id": r["id"]} for r in rows])
        return {"results": results}

    def describe_data_objects(self, caller: Caller, inp: dict) -> dict:
        objects = _get(inp, "objects", list, required=True)
        wanted = []
        for o in objects:
            if isinstance(o, str):
                oid, opts = o, {}
            elif isinstance(o, dict) and isinstance(o.get("id"), str):
                oid, opts = o["id"], dict(o.get("describe") or {})
                if "project" in o:
                    opts["project"] = o["project"]
            else:
                raise E.InvalidInput("Each object must be an ID or {id, project?, describe?}")
            wanted.append((oid, opts))
        # the same answers as describe_file() per object, from a few queries for all of them
        rows = {r["id"]: r for r in self.store.q_in("SELECT * FROM files WHERE id IN ({})",
                                                    (oid for oid, _ in wanted))}
        parts = self._parts_many([oid for oid, opts in wanted
                                  if oid in rows and self._desc_needs_parts(rows[oid], opts)])
        results = []
        for oid, opts in wanted:
            try:
                row, _ = self._file(caller, oid, VIEW, opts.get("project"), row=rows.get(oid))
                results.append({"describe": self._file_desc(row, opts, parts.get(oid))})
            except E.APIError as exc:
                results.append({"error": exc.body()["error"]})
        return {"results": results}

    # =========================================================================================
    # Files
    # =========================================================================================
    def _parts(self, file_id: str) -> list[PartRow]:
        return [PartRow(r["idx"], r["state"], r["size"], r["md5"]) for r in self.store.q(
            "SELECT idx, state, size, md5 FROM parts WHERE file_id=? ORDER BY idx", (file_id,))]

    def _parts_many(self, file_ids: list[str]) -> dict[str, list[PartRow]]:
        """The parts of many files in a few queries (instead of one query per file)."""
        out: dict[str, list[PartRow]] = {fid: [] for fid in file_ids}
        for r in self.store.q_in("SELECT file_id, idx, state, size, md5 FROM parts"
                                 " WHERE file_id IN ({}) ORDER BY file_id, idx", file_ids):
            out[r[0]].append(PartRow(r[1], r[2], r[3], r[4]))
        return out

    @staticmethod
    def _desc_needs_parts(r, inp: dict) -> bool:
        """Whether _file_desc(r, inp) reads the parts (open files: size and parts)."""
        fields = inp.get("fields")
        if isinstance(fields, dict) and fields:
            if not inp.get("defaultFields"):
                return bool(fields.get("parts")) or (r["state"] == "open"
                                                     and bool(fields.get("size")))
            return r["state"] == "open" or bool(fields.get("parts"))
        return r["state"] == "open" or inp.get("parts") is True

    def _file_desc(self, r, inp: dict, parts_rows: list[PartRow] | None = None) -> dict:
        """``parts_rows``: the file's parts if already fetched (see _parts_many)."""
        parts_cache: list = []

        def parts():
            if not parts_cache:
                rows = parts_rows if parts_rows is not None else self._parts(r["id"])
                parts_cache.append({str(p.index): {"state": p.state, "size": p.size, "md5": p.md5}
                                    for p in rows})
            return parts_cache[0]

        fields = inp.get("fields")
        with_fields = isinstance(fields, dict) and bool(fields)
        if with_fields and not inp.get("defaultFields"):
            out = {"id": r["id"]}  # only the requested fields are computed
        else:
            out = {k: get(r, parts) for k, get in _FILE_FIELDS.items() if k not in _EXTRA_FIELDS}
        if with_fields:
            for k, want in fields.items():
                get = _FILE_FIELDS.get(k)
                if want and get is not None:
                    out[k] = get(r, parts)
            return out
        if r["state"] == "open":
            out["parts"] = parts()
        for k in _EXTRA_FIELDS:
            if inp.get(k) is True:
                out[k] = _FILE_FIELDS[k](r, parts)
        return out

    def describe_file(self, caller: Caller, file_id: str, inp: dict) -> dict:
        row, _ = self._file(caller, file_id, VIEW, inp.get("project"))
        return self._file_desc(row, inp)

    def file_new(self, caller: Caller, inp: dict) -> dict:
        nonce = inp.get("nonce")
        if nonce is not None:
            if not isinstance(nonce, str) or not nonce or len(nonce.encode()) > MAX_NONCE:
                raise E.InvalidInput(f"nonce must be a non-empty string of at most {MAX_NONCE} bytes")
            ihash = hashlib.sha256(dumps(inp).encode()).hexdigest()
            prev = self.store.q1("SELECT * FROM nonces WHERE user_id=? AND route=? AND nonce=?",
                                 (caller.user_id, "/file/new", nonce))
            if prev is not None:
                if prev["input_hash"] != ihash:
                    raise E.InvalidInput("The nonce was already used with a different input")
                return json.loads(prev["response"])
        pid = _get(inp, "project", str, required=True)
        self._project(caller, pid, UPLOAD)
        fid = new_id("file")
        name = check_name(inp["name"]) if inp.get("name") is not None else fid
        folder = normalize_folder(_get(inp, "folder", str, "/"))
        parents = bool(_get(inp, "parents", bool, False))
        tags = _str_list(inp, "tags")
        types = _str_list(inp, "types")
        hidden = bool(_get(inp, "hidden", bool, False))
        props = check_properties(inp.get("properties") or {}, allow_null=False)
        details = inp.get("details", {})
        if not isinstance(details, (dict, list)):
            raise E.InvalidInput("details must be a JSON object or array")
        media = _get(inp, "media", str, "")
        self._ensure_folder(pid, folder, parents)
        t = now_ms()
        resp = {"id": fid}
        with self.store.tx() as c:
            c.execute("INSERT INTO files(id, project_id, folder, name, state, hidden, types, tags,"
                      " properties, details, media, created, modified, created_by)"
                      " VALUES(?,?,?,?,'open',?,?,?,?,?,?,?,?,?)",
                      (fid, pid, folder, name, int(hidden), dumps(types), dumps(tags),
                       dumps(props), dumps(details), media, t, t, caller.user_id))
            c.executemany("INSERT INTO props(file_id, key, value, project_id) VALUES(?,?,?,?)",
                          [(fid, k, v, pid) for k, v in props.items()])
            if nonce is not None:
                c.execute("INSERT INTO nonces(user_id, route, nonce, input_hash, response, created)"
                          " VALUES(?,?,?,?,?,?)",
                          (caller.user_id, "/file/new", nonce, ihash, dumps(resp), t))
        return resp

    def file_upload(self, caller: Caller, file_id: str, inp: dict, base_url: str) -> dict:
        row, _ = self._file(caller, file_id, UPLOAD)
        index = _get(inp, "index", int, 1)
        if not 1 <= index <= self.params.maximumNumParts:
            raise E.InvalidInput(f"index must be between 1 and {self.params.maximumNumParts}")
        size = _get(inp, "size", int)
        if size is not None and not 0 <= size <= self.params.maximumPartSize:
            raise E.InvalidInput(f"size must be between 0 and {self.params.maximumPartSize}")
        md5 = _get(inp, "md5", str)
        if md5 is not None:
            md5 = md5.lower()
            if not HEX32.match(md5):
                raise E.InvalidInput("md5 must be 32 hexadecimal characters")
        if row["state"] != "open":
            raise E.InvalidState(f"The file {file_id} is not in the open state")
        with self.store.tx() as c:
            c.execute("INSERT INTO parts(file_id, idx, state, size, md5) VALUES(?,?,'pending',?,?)"
                      " ON CONFLICT(file_id, idx) DO UPDATE SET state='pending',"
                      " size=excluded.size, md5=excluded.md5", (file_id, index, size, md5))
        expires = math.ceil(time.time() + self.upload_url_ttl)
        s = "" if size is None else size
        m = md5 or ""
        sig = sign_upload(self.secret, file_id, index, s, m, expires)
        url = f"{base_url}/upload/{file_id}/{index}?size={s}&md5={m}&expires={expires}&sig={sig}"
        headers = {}
        if size is not None:
            headers["content-length"] = str(size)
        if md5 is not None:
            import base64
            headers["content-md5"] = base64.b64encode(bytes.fromhex(md5)).decode()
        return {"url": url, "expires": expires * 1000, "headers": headers}

    def upload_target(self, file_id: str) -> tuple[str, str] | None:
        """(state, name) of a file for the storage endpoint, or None if it is gone."""
        r = self.store.q1("SELECT state, name FROM files WHERE id=?", (file_id,))
        return (r["state"], r["name"]) if r else None

    def complete_part(self, file_id: str, index: int, size: int, md5: str, tmp: Path) -> None:
        """Storage side of a PUT: atomically install the fsynced temp file and mark it complete.

        Runs without awaits so it cannot interleave with /close: the state check, the rename,
        the directory fsync and the SQLite update happen together, inside one write
        transaction whose first statement both checks that the file is open and touches its
        ``modified`` (so the admin CLI cannot change the file in between). (Running the directory
        fsync in a worker instead, with /close waiting for installs in flight, measured no
        less server CPU per PUT and no more PUTs/s on this disk: see bench/server_api.py.)
        """
        with self.store.tx() as c:
            # the state check is the UPDATE itself: one statement instead of a SELECT first
            if c.execute("UPDATE files SET modified=? WHERE id=? AND state='open'",
                         (now_ms(), file_id)).rowcount == 0:
                r = c.execute("SELECT state FROM files WHERE id=?", (file_id,)).fetchone()
                tmp.unlink(missing_ok=True)
                if r is None:
                    raise E.ResourceNotFound(f"The file {file_id} no longer exists")
                raise E.InvalidState(f"The file {file_id} is not in the open state")
            final = self.store.part_path(file_id, index)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            c.execute("INSERT INTO parts(file_id, idx, state, size, md5) VALUES(?,?,'complete',?,?)"
                      " ON CONFLICT(file_id, idx) DO UPDATE SET state='complete',"
                      " size=excluded.size, md5=excluded.md5", (file_id, index, size, md5))

    def file_close(self, caller: Caller, file_id: str, inp: dict) -> dict:
        row, _ = self._file(caller, file_id, UPLOAD)
        if row["state"] in ("closing", "closed"):
            return {"id": file_id, "detail": f"The file is already in the {row['state']} state; "
                                             "the close request had no effect"}
        parts = self._parts(file_id)
        p = self.params
        if not parts and p.emptyLastPartAllowed:
            raise E.InvalidState("The file has no parts; at least one (possibly empty) part "
                                 "must be uploaded before closing")
        pending = [x.index for x in parts if x.state != "complete"]
        if pending:
            raise E.InvalidState(f"Part(s) {', '.join(map(str, pending[:10]))} of the file "
                                 "are still pending; upload them before closing")
        for x in parts[:-1]:
            if x.size < p.minimumPartSize:
                raise E.InvalidState(f"Part {x.index} is {x.size} bytes, smaller than the minimum "
                                     f"part size {p.minimumPartSize} (only the last part may be)")
        if parts and not p.emptyLastPartAllowed and parts[-1].size == 0:
            raise E.InvalidState("The last part is empty, which this project does not allow")
        total = sum(x.size for x in parts)
        if total > p.maximumFileSize:
            raise E.InvalidState(f"The file size {total} exceeds the maximum {p.maximumFileSize}")
        with self.store.tx() as c:
            c.execute("UPDATE files SET state='closing', size=?, closing_since=?, modified=? "
                      "WHERE id=? AND state='open'", (total, now_ms(), now_ms(), file_id))
        self.on_closing(file_id)
        return {"id": file_id}

    def finalize(self, file_id: str) -> None:
        """closing → closed (the background step)."""
        d = os.fspath(self.store.file_dir(file_id))
        for idx, size in self.store.conn.execute(
                "SELECT idx, size FROM parts WHERE file_id=? ORDER BY idx", (file_id,)):
            try:
                ok = os.stat(f"{d}/{idx}.part").st_size == size
            except (FileNotFoundError, NotADirectoryError):
                ok = False
            if not ok:
                raise E.InternalError(f"part {idx} of {file_id} is missing on disk")
        with self.store.tx() as c:
            c.execute("UPDATE files SET state='closed', modified=? WHERE id=? AND state='closing'",
                      (now_ms(), file_id))

    def closing_files(self) -> list[str]:
        return [r["id"] for r in self.store.q("SELECT id FROM files WHERE state='closing'")]

    def file_download(self, caller: Caller, file_id: str, inp: dict, base_url: str) -> dict:
        row, _ = self._file(caller, file_id, VIEW, inp.get("project"), strict_project=True)
        if row["state"] != "closed":
            raise E.InvalidState(f"The file {file_id} is not in the closed state")
        duration = _get(inp, "duration", int, DOWNLOAD_URL_TTL_S)
        if duration <= 0:
            raise E.InvalidInput("duration must be positive")
        expires = math.ceil(time.time() + min(duration, 30 * 86400))
        sig = sign_download(self.secret, file_id, expires)
        url = f"{base_url}/download/{file_id}?expires={expires}&sig={sig}"
        return {"url": url, "headers": {}, "expires": expires * 1000}

    def download_layout(self, file_id: str) -> list[tuple[Path, int]] | None:
        r = self.store.q1("SELECT state FROM files WHERE id=?", (file_id,))
        if r is None or r["state"] != "closed":
            return None
        return [(self.store.part_path(file_id, p.index), p.size) for p in self._parts(file_id)]

    # --- metadata ----------------------------------------------------------------------------
    def _meta_file(self, caller, file_id, inp, *, frozen_at_close: bool):
        project = inp.get("project")
        row, lvl = self._file(caller, file_id, VIEW, project, strict_project=True)
        if frozen_at_close:
            if lvl < UPLOAD:
                raise E.PermissionDenied(f"UPLOAD access required for the project in which {file_id} is")
            if row["state"] != "open":
                raise E.InvalidState(f"The file {file_id} is not in the open state")
        else:
            need = UPLOAD if row["state"] == "open" else CONTRIBUTE
            if lvl < need:
                raise E.PermissionDenied(f"{LEVEL_NAMES[need]} access required for the project "
                                         f"in which {file_id} is")
        return row

    def _update_file(self, file_id: str, **cols) -> None:
        cols["modified"] = now_ms()
        sets = ", ".join(f"{k}=?" for k in cols)
        with self.store.tx() as c:
            c.execute(f"UPDATE files SET {sets} WHERE id=?", (*cols.values(), file_id))

    def set_properties(self, caller, file_id, inp):
        row = self._meta_file(caller, file_id, inp, frozen_at_close=False)
        props = json.loads(row["properties"])
        for k, v in check_properties(_get(inp, "properties", dict, required=True), allow_null=True).items():
            if v is None:
                props.pop(k, None)
            else:
                props[k] = v
        self._update_file(file_id, properties=dumps(props))
        with self.store.tx() as c:
            c.execute("DELETE FROM props WHERE file_id=?", (file_id,))
            c.executemany("INSERT INTO props(file_id, key, value, project_id) VALUES(?,?,?,?)",
                          [(file_id, k, v, row["project_id"]) for k, v in props.items()])
        return {"id": file_id}

    def add_tags(self, caller, file_id, inp, *, key="tags", column="tags", frozen=False):
        row = self._meta_file(caller, file_id, inp, frozen_at_close=frozen)
        cur = json.loads(row[column])
        for t in _str_list(inp, key):
            if t not in cur:
                cur.append(t)
        self._update_file(file_id, **{column: dumps(cur)})
        return {"id": file_id}

    def remove_tags(self, caller, file_id, inp, *, key="tags", column="tags", frozen=False):
        row = self._meta_file(caller, file_id, inp, frozen_at_close=frozen)
        drop = set(_str_list(inp, key))
        cur = [t for t in json.loads(row[column]) if t not in drop]
        self._update_file(file_id, **{column: dumps(cur)})
        return {"id": file_id}

    def add_types(self, caller, file_id, inp):
        return self.add_tags(caller, file_id, inp, key="types", column="types", frozen=True)

    def remove_types(self, caller, file_id, inp):
        return self.remove_tags(caller, file_id, inp, key="types", column="types", frozen=True)

    def rename(self, caller, file_id, inp):
        self._meta_file(caller, file_id, inp, frozen_at_close=False)
        self._update_file(file_id, name=check_name(inp.get("name")))
        return {"id": file_id}

    def set_visibility(self, caller, file_id, inp):
        self._meta_file(caller, file_id, inp, frozen_at_close=True)
        hidden = _get(inp, "hidden", bool, required=True)
        self._update_file(file_id, hidden=int(hidden))
        return {"id": file_id}

    def set_details(self, caller, file_id, inp):
        self._meta_file(caller, file_id, inp, frozen_at_close=True)
        details = inp.get("details")
        if not isinstance(details, (dict, list)):
            raise E.InvalidInput("details must be a JSON object or array")
        self._update_file(file_id, details=dumps(details))
        return {"id": file_id}

    def get_details(self, caller, file_id, inp):
        row, _ = self._file(caller, file_id, VIEW)
        return json.loads(row["details"])

    def list_file_projects(self, caller, file_id, inp):
        row, lvl = self._file(caller, file_id, VIEW)
        return {row["project_id"]: LEVEL_NAMES[lvl]}

    # =========================================================================================
    # Tokens (for users via the web console; operator versions below)
    # =========================================================================================
    def _insert_token(self, user_id: str, project_id: str | None, level: int | None,
                      expires_ms: int | None, label: str, created_by: str) -> tuple[str, str]:
        token = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(40))
        tid = new_id("token")
        with self.store.tx() as c:
            c.execute("INSERT INTO tokens(id, hash, user_id, project_id, level, created, expires,"
                      " label, created_by) VALUES(?,?,?,?,?,?,?,?,?)",
                      (tid, hash_token(token), user_id, project_id, level, now_ms(), expires_ms,
                       label, created_by))
        return tid, token

    def create_token(self, caller: Caller, project_id: str | None = None, level: str | None = None,
                     expires_ms: int | None = None, label: str = "") -> dict:
        """A new token for the caller's own user, optionally limited to one project/level."""
        if not caller.unscoped:
            raise E.PermissionDenied("A project-scoped token cannot create tokens")
        lvl = None
        if project_id is not None:
            lvl = parse_level(level or "VIEW")
            self._project(caller, project_id, lvl)
        if expires_ms is not None and expires_ms <= now_ms():
            raise E.InvalidInput("expires must be in the future")
        tid, token = self._insert_token(caller.user_id, project_id, lvl, expires_ms, label,
                                        caller.user_id)
        return {"id": tid, "token": token}

    def _token_info(self, r) -> dict:
        t = now_ms()
        status = ("revoked" if r["revoked"] else
                  "expired" if r["expires"] is not None and r["expires"] <= t else "active")
        return {"id": r["id"], "user": r["user_id"], "project": r["project_id"],
                "level": LEVEL_NAMES.get(r["level"]) if r["level"] is not None else None,
                "created": r["created"], "expires": r["expires"], "status": status,
                "label": r["label"]}

    def list_tokens(self, caller: Caller) -> list[dict]:
        """The caller's tokens. A project-scoped token (a provider's upload token) sees only
        itself, not the account's other tokens: it can only revoke itself anyway."""
        if caller.unscoped:
            rows = self.store.q("SELECT * FROM tokens WHERE user_id=? ORDER BY created",
                                (caller.user_id,))
        else:
            rows = self.store.q("SELECT * FROM tokens WHERE id=?", (caller.token_id,))
        return [self._token_info(r) for r in rows]

    def revoke_token(self, caller: Caller, token_id: str) -> dict:
        r = self.store.q1("SELECT * FROM tokens WHERE id=?", (token_id,))
        if r is None or r["user_id"] != caller.user_id:
            raise E.ResourceNotFound(f"The token {token_id} could not be found")
        if not caller.unscoped and caller.token_id != token_id:
            raise E.PermissionDenied("A project-scoped token can only revoke itself")
        with self.store.tx() as c:
            c.execute("UPDATE tokens SET revoked=1 WHERE id=?", (token_id,))
        return {"id": token_id}

    # =========================================================================================
    # Operator (admin CLI) operations: no caller, full access
    # =========================================================================================
    def op_bootstrap(self) -> str | None:
        """On an empty DB: admin user, 'default' project, ADMINISTER token (returned once)."""
        if self.store.q1("SELECT 1 FROM users LIMIT 1") is not None:
            return None
        self.op_new_user("admin")
        self._create_project("default", ADMIN_USER)
        return self.op_new_token(ADMIN_USER, None, None, None, label="bootstrap admin")["token"]

    def op_default_project(self) -> str | None:
        r = self.store.q1("SELECT id FROM projects WHERE created_by=? AND name='default' "
                          "ORDER BY created LIMIT 1", (ADMIN_USER,))
        return r["id"] if r else None

    def op_new_user(self, handle: str) -> str:
        handle = handle.lower()
        if handle.startswith("user-"):
            handle = handle[5:]
        if not HANDLE_RE.match(handle):
            raise E.InvalidInput("handle must be 1-64 of a-z, 0-9, '.', '_' starting alphanumeric")
        uid = "user-" + handle
        if self.user_exists(uid):
            raise E.InvalidInput(f"{uid} already exists")
        with self.store.tx() as c:
            c.execute("INSERT INTO users(id, handle, created) VALUES(?,?,?)", (uid, handle, now_ms()))
        return uid

    def op_new_project(self, name: str, owner: str = ADMIN_USER) -> str:
        owner = owner if owner.startswith("user-") else "user-" + owner
        if not self.user_exists(owner):
            raise E.ResourceNotFound(f"The user {owner} could not be found")
        return self._create_project(check_name(name), owner)

    def op_resolve_project(self, spec: str) -> str:
        if self.store.q1("SELECT 1 FROM projects WHERE id=?", (spec,)):
            return spec
        rows = self.store.q("SELECT id FROM projects WHERE name=?", (spec,))
        if len(rows) == 1:
            return rows[0]["id"]
        if not rows:
            raise E.ResourceNotFound(f"No project with ID or name {spec!r}")
        raise E.InvalidInput(f"The name {spec!r} matches {len(rows)} projects; use the ID")

    def op_new_token(self, user: str, project: str | None, level: str | None,
                     expires_s: int | None, label: str = "") -> dict:
        uid = user if user.startswith("user-") else "user-" + user
        if not self.user_exists(uid):
            raise E.ResourceNotFound(f"The user {uid} could not be found")
        pid = self.op_resolve_project(project) if project else None
        lvl = parse_level(level or "VIEW") if pid else None
        if level and not pid:
            raise E.InvalidInput("--level needs --project")
        exp = now_ms() + expires_s * 1000 if expires_s is not None else None
        tid, token = self._insert_token(uid, pid, lvl, exp, label, "operator")
        return {"id": tid, "token": token}

    def op_revoke_token(self, token_or_id: str) -> str:
        r = self.store.q1("SELECT id FROM tokens WHERE id=? OR hash=?",
                          (token_or_id, hash_token(token_or_id)))
        if r is None:
            raise E.ResourceNotFound("No such token")
        with self.store.tx() as c:
            c.execute("UPDATE tokens SET revoked=1 WHERE id=?", (r["id"],))
        return r["id"]

    def op_list_tokens(self) -> list[dict]:
        return [self._token_info(r) for r in self.store.q("SELECT * FROM tokens ORDER BY created")]

    def op_list_files(self, project: str) -> list[dict]:
        pid = self.op_resolve_project(project)
        out = []
        for r in self.store.q("SELECT * FROM files WHERE project_id=? ORDER BY folder, name", (pid,)):
            parts = self._parts(r["id"])
            size = r["size"] if r["state"] != "open" else sum(
                p.size or 0 for p in parts if p.state == "complete")
            out.append({"id": r["id"], "folder": r["folder"], "name": r["name"],
                        "state": r["state"], "size": size, "parts": len(parts),
                        "complete": sum(p.state == "complete" for p in parts)})
        return out

    def op_purge_open(self, older_than_s: int, project: str | None = None, *,
                      dry_run: bool = False) -> list[dict]:
        """Open files nobody has touched (``modified``: /file/new, a stored part, metadata)
        for ``older_than_s`` seconds, in one project or all: uploads that were abandoned
        rather than interrupted. Removes their rows and part files unless ``dry_run``; the
        age is checked again inside the deleting transaction, so a file that an uploader
        resumed meanwhile stays."""
        if older_than_s <= 0:
            raise E.InvalidInput("the age must be positive")
        cutoff = now_ms() - older_than_s * 1000
        sql = "SELECT * FROM files WHERE state='open' AND modified < ?"
        args: list = [cutoff]
        if project is not None:
            sql += " AND project_id=?"
            args.append(self.op_resolve_project(project))
        rows = self.store.q(sql + " ORDER BY modified", args)
        parts = self._parts_many([r["id"] for r in rows])
        out = []
        for r in rows:
            done = [p for p in parts[r["id"]] if p.state == "complete"]
            out.append({"id": r["id"], "project": r["project_id"], "folder": r["folder"],
                        "name": r["name"], "modified": r["modified"],
                        "bytes": sum(p.size or 0 for p in done), "parts": len(done)})
        if dry_run:
            return out
        gone = set(self._delete_files([f["id"] for f in out], open_before=cutoff))
        return [f for f in out if f["id"] in gone]

    def op_invite(self, project: str, user: str, level: str) -> None:
        pid = self.op_resolve_project(project)
        uid = self._resolve_user(user)
        lvl = parse_level(level)
        with self.store.tx() as c:
            c.execute("INSERT INTO members(project_id, user_id, level) VALUES(?,?,?) "
                      "ON CONFLICT(project_id, user_id) DO UPDATE SET level=excluded.level",
                      (pid, uid, lvl))

    def op_remove_member(self, project: str, user: str) -> None:
        pid = self.op_resolve_project(project)
        uid = self._resolve_user(user)
        with self.store.tx() as c:
            c.execute("DELETE FROM members WHERE project_id=? AND user_id=?", (pid, uid))

    def op_members(self, project: str) -> dict[str, str]:
        return self._members(self.op_resolve_project(project))


def _limit(inp: dict) -> int:
    limit = inp.get("limit", 1000)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise E.InvalidInput("limit must be a positive integer")
    return min(limit, 1000)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _select_fields(out: dict, fields: dict, full: dict, extra: dict) -> dict:
    """A describe answer restricted to ``fields``: values from ``full``, or computed on demand
    by the callables in ``extra`` (parts, folders, members… that cost a query)."""
    for k, want in fields.items():
        if want and k in full:
            out[k] = full[k]
        elif want and k in extra:
            out[k] = extra[k]()
    return out


def _open_size(r, parts) -> int:
    if r["state"] != "open":
        return r["size"]
    return sum(p["size"] or 0 for p in parts().values() if p["state"] == "complete")


# A file's describe fields: field -> value from (file row, parts()), in the order of a
# default describe. _EXTRA_FIELDS are only given when asked for (they cost a query or a
# JSON decode); "parts" is also given for open files.
_EXTRA_FIELDS = ("parts", "properties", "details")
_FILE_FIELDS: dict[str, Callable] = {
    "id": lambda r, parts: r["id"],
    "project": lambda r, parts: r["project_id"],
    "class": lambda r, parts: "file",
    "name": lambda r, parts: r["name"],
    "folder": lambda r, parts: r["folder"],
    "state": lambda r, parts: r["state"],
    "hidden": lambda r, parts: bool(r["hidden"]),
    "types": lambda r, parts: json.loads(r["types"]),
    "tags": lambda r, parts: json.loads(r["tags"]),
    "links": lambda r, parts: [],
    "created": lambda r, parts: r["created"],
    "modified": lambda r, parts: r["modified"],
    "createdBy": lambda r, parts: {"user": r["created_by"]},
    "sponsored": lambda r, parts: False,
    "media": lambda r, parts: r["media"],
    "archivalState": lambda r, parts: "live",
    "size": _open_size,
    "parts": lambda r, parts: parts(),
    "properties": lambda r, parts: json.loads(r["properties"]),
    "details": lambda r, parts: json.loads(r["details"]),
}
