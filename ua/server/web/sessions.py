"""Server-side console sessions (memory only).

The browser holds only a random session id in an HttpOnly, SameSite=Strict cookie. The API
token a user signed in with stays in this process's memory and is re-checked with
``Service.authenticate`` on every request, so revoking or expiring the token ends the session.
Sessions also end after ``IDLE_S`` without a request and ``MAX_AGE_S`` after sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

IDLE_S = 2 * 3600
MAX_AGE_S = 12 * 3600
MAX_SESSIONS = 10000


def _key(sid: str) -> str:
    # The dict is keyed by a hash so a memory dump of keys does not reveal live cookies.
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass
class Session:
    token: str = field(repr=False)  # never in a repr/log line
    user_id: str = ""
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    flash: list[tuple[str, str]] = field(default_factory=list)
    reveal: dict | None = field(default=None, repr=False)  # a new token, shown exactly once

    def check_csrf(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf, given)

    def pop_flash(self) -> list[tuple[str, str]]:
        out, self.flash = self.flash, []
        return out


class SessionStore:
    def __init__(self, idle_s: float = IDLE_S, max_age_s: float = MAX_AGE_S):
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._s: dict[str, Session] = {}

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.seen > self.idle_s or now - s.created > self.max_age_s

    def sweep(self) -> None:
        now = time.monotonic()
        for k in [k for k, s in self._s.items() if self._expired(s, now)]:
            del self._s[k]

    def new(self, token: str, user_id: str) -> tuple[str, Session]:
        self.sweep()
        if len(self._s) >= MAX_SESSIONS:  # drop the oldest
            oldest = min(self._s, key=lambda k: self._s[k].seen)
            del self._s[oldest]
        sid = secrets.token_urlsafe(32)
        s = Session(token=token, user_id=user_id)
        self._s[_key(sid)] = s
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._s.get(_key(sid))
        if s is None:
            return None
        now = time.monotonic()
        if self._expired(s, now):
            del self._s[_key(sid)]
            return None
        s.seen = now
        return s

    def drop(self, sid: str | None) -> None:
        if sid:
            self._s.pop(_key(sid), None)
