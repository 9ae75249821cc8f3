"""SQLite metadata store (WAL) and the on-disk layout of a data dir.

Layout of DIR:
  meta.db          SQLite database (WAL mode)
  blobs/<file-id>/<index>.part   completed parts; temp uploads are ``<index>.tmp.<rand>``
  dx-env           shell exports for dx/ua (0600, holds the bootstrap admin token)
  requests.jsonl   request log

All access from the server happens on the event-loop thread with short transactions, so a
service call is atomic with respect to other requests. Admin CLI commands open the same DB
from another process; ``busy_timeout`` lets both wait for each other briefly.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY, handle TEXT NOT NULL UNIQUE, created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created INTEGER NOT NULL, modified INTEGER NOT NULL,
    created_by TEXT NOT NULL, bill_to TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '', protected INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '[]', properties TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS members (
    project_id TEXT NOT NULL, user_id TEXT NOT NULL, level INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX IF NOT EXISTS members_user ON members(user_id);
CREATE TABLE IF NOT EXISTS folders (
    project_id TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (project_id, path)
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL,
    project_id TEXT, level INTEGER, created INTEGER NOT NULL, expires INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0, label TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL,
    state TEXT NOT NULL, hidden INTEGER NOT NULL DEFAULT 0, types TEXT NOT NULL DEFAULT '[]',
    tags TEXT NOT NULL DEFAULT '[]', properties TEXT NOT NULL DEFAULT '{}',
    details TEXT NOT NULL DEFAULT '{}', media TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL, modified INTEGER NOT NULL, created_by TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0, closing_since INTEGER
);
CREATE INDEX IF NOT EXISTS files_project ON files(project_id, folder);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
CREATE INDEX IF NOT EXISTS files_name ON files(project_id, name);
CREATE TABLE IF NOT EXISTS props (
    file_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, project_id TEXT,
    PRIMARY KEY (file_id, key)
);
CREATE TABLE IF NOT EXISTS parts (
    file_id TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
    size INTEGER, md5 TEXT, PRIMARY KEY (file_id, idx)
);
CREATE TABLE IF NOT EXISTS nonces (
    user_id TEXT NOT NULL, route TEXT NOT NULL, nonce TEXT NOT NULL, input_hash TEXT NOT NULL,
    response TEXT NOT NULL, created INTEGER NOT NULL, PRIMARY KEY (user_id, route, nonce)
);
CREATE TABLE IF NOT EXISTS transfers (
    project_id TEXT PRIMARY KEY, from_user TEXT NOT NULL, to_user TEXT NOT NULL,
    created INTEGER NOT NULL
);
"""


# Tables whose rows the server memoises per request burst (see Store.authz_cache).
AUTHZ_TABLES = ("tokens", "members", "projects", "users")
AUTHZ_CACHE_MAX = 100_000


def now_ms() -> int:
    return int(time.time() * 1000)


_DUMPS = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def dumps(value) -> str:
    """``json.dumps(value, separators=(",", ":"), sort_keys=True)`` (one encoder, reused)."""
    return _DUMPS(value)


class Store:
    def __init__(self, data_dir: str | os.PathLike):
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.blobs = self.dir / "blobs"
        self.blobs.mkdir(exist_ok=True)
        self.db_path = self.dir / "meta.db"
        self.conn = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None,
                                    check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable against a process crash (kill -9); the part data
        # itself is fsynced before a part is marked complete.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.execute("PRAGMA foreign_keys=OFF")
        self.conn.executescript(SCHEMA)
        if not any(r["name"] == "project_id"
                   for r in self.conn.execute("PRAGMA table_info(props)")):
            with self.tx() as c:  # data dirs from before props.project_id
                if not any(r["name"] == "project_id"
                           for r in c.execute("PRAGMA table_info(props)")):
                    c.execute("ALTER TABLE props ADD COLUMN project_id TEXT")
        if self.get_meta("props_indexed") is None:  # data dirs from before the props index
            with self.tx() as c:
                for r in c.execute("SELECT id, project_id, properties FROM files").fetchall():
                    for k, v in json.loads(r["properties"]).items():
                        c.execute("INSERT OR REPLACE INTO props(file_id, key, value, project_id)"
                                  " VALUES(?,?,?,?)", (r["id"], k, v, r["project_id"]))
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('props_indexed', '1')")
        # findDataObjects on {key: true} / {key: "value"} reads only the scope project's
        # entries of this one covering index (files never change project); a second index
        # on (project_id, key, file_id) would save little and cost every file/new.
        with self.tx() as c:
            c.execute("CREATE INDEX IF NOT EXISTS props_pkvf "
                      "ON props(project_id, key, value, file_id)")
            c.execute("DROP INDEX IF EXISTS props_kv")  # (key, value): superseded
            c.execute("UPDATE props SET project_id=(SELECT project_id FROM files "
                      "WHERE files.id=props.file_id) WHERE project_id IS NULL")
        # Memo of authorisation rows (tokens, members, projects, users), see authz_cache().
        # Writes through this connection empty it from a temporary (connection-local)
        # trigger; commits by any other connection (the admin CLI in another process) are
        # seen through PRAGMA data_version before the memo is trusted in a new loop turn.
        self._authz: dict = {}
        self._authz_dv: int | None = None
        self._authz_fresh = False
        self.conn.create_function("ua_authz_changed", 0, self._authz_changed)
        for t in AUTHZ_TABLES:
            for op in ("INSERT", "UPDATE", "DELETE"):
                self.conn.execute(f"CREATE TEMP TRIGGER IF NOT EXISTS ua_authz_{t}_{op.lower()} "
                                  f"AFTER {op} ON main.{t} BEGIN SELECT ua_authz_changed(); END")

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def tx(self):
        """A short write transaction (BEGIN IMMEDIATE so admin CLI and server serialise)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            self._authz.clear()  # rows read inside the transaction may have been rolled back
            raise
        else:
            self.conn.execute("COMMIT")

    # --- memo of authorisation rows --------------------------------------------------------
    def _authz_changed(self) -> None:
        self._authz.clear()

    def _authz_stale(self) -> None:
        self._authz_fresh = False

    def authz_cache(self) -> dict | None:
        """A dict for memoising rows of AUTHZ_TABLES, or None (then query the database).

        Only inside the server's event loop. The first use in a loop turn compares PRAGMA
        data_version with the last one seen and empties the memo if another connection
        committed anything since (so a token revoked or a member removed by the admin CLI
        takes effect on the next request); within that turn no other code of this process
        runs, and this connection's own writes to those tables empty it through the temp
        triggers. Service methods never await, so one request sees one consistent state.
        """
        if self._authz_fresh:
            return self._authz
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        dv = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if dv != self._authz_dv or len(self._authz) > AUTHZ_CACHE_MAX:
            self._authz.clear()
            self._authz_dv = dv
        self._authz_fresh = True
        loop.call_soon(self._authz_stale)
        return self._authz

    def q(self, sql: str, args=()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, args).fetchall()

    def q1(self, sql: str, args=()) -> sqlite3.Row | None:
        return self.conn.execute(sql, args).fetchone()

    def q_in(self, sql: str, keys) -> Iterator[sqlite3.Row]:
        """Rows of ``sql`` (with one ``IN ({})`` placeholder) for every distinct key, a few
        hundred keys per query (SQLite bounds the number of parameters)."""
        uniq = list(dict.fromkeys(keys))
        for i in range(0, len(uniq), 500):
            chunk = uniq[i:i + 500]
            yield from self.conn.execute(sql.format(",".join("?" * len(chunk))), chunk)

    # --- meta -----------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.q1("SELECT value FROM meta WHERE key=?", (key,))
        return row["value"] if row else None

    def secret(self) -> bytes:
        """Per-data-dir HMAC secret for signed upload/download URLs."""
        value = self.get_meta("url_secret")
        if value is None:
            with self.tx() as c:
                c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('url_secret', ?)",
                          (secrets.token_hex(32),))
            value = self.get_meta("url_secret")
        return bytes.fromhex(value)

    # --- blobs ----------------------------------------------------------------------------
    def file_dir(self, file_id: str) -> Path:
        return self.blobs / file_id

    def part_path(self, file_id: str, index: int) -> Path:
        return self.blobs / file_id / f"{index}.part"

    def clean_temp_files(self) -> int:
        n = 0
        for d in self.blobs.iterdir():
            if d.is_dir():
                for f in d.iterdir():
                    if ".tmp." in f.name:
                        f.unlink(missing_ok=True)
                        n += 1
        return n
