"""The one place that decides *whether* and *when* to retry, from the exception class and
status alone.

Two policies:

* **API calls** behave like dxpy's ``DXHTTPRequest`` (dnanexus-api.md §3): up to 6 retries;
  5xx and 429 are retried on every route; 503/429 do not spend a retry and honour
  ``Retry-After`` (capped, and bounded in number so a server that always says "later"
  eventually fails); 422 and other JSON 4xx never; connection failures that certainly never
  reached the server always; other broken or missing responses only on ``always_retry``
  routes. Delay before retry *n*: 1 s, then ``randint(2**(n-2), 2**(n-1))`` with n ≤ 8.
* **Part uploads** (``--tries`` = total attempts): every :class:`TransientError` is retried
  with exponential backoff and full jitter (capped); 503/429 wait ``Retry-After`` without
  spending a try, again bounded. ``BadDigest`` on a PUT counts as transient (damaged in
  transit; we re-send from our buffer). Permanent errors end the part at once.

Delays are multiplied by ``UA_RETRY_BASE_DELAY`` (seconds per delay unit, default ``1.0``) so
fault tests can run quickly; production uses the real values.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from ua.knobs import env_float
from ua.api.errors import (
    BadDigest,
    ConnectError,
    PermanentError,
    RetriesExhausted,
    TransientError,
    UAError,
    describe_error,
)

T = TypeVar("T")
log = logging.getLogger("ua.api")

# Routes dxpy calls with always_retry=True (api.py / wrapper_table.json, dnanexus-api.md §3).
_ALWAYS_RETRY_PATTERNS = [
    re.compile(p) for p in (
        r"^/file/new$",
        r"^/file-[^/]+/(upload|close|describe|download|setProperties|addTags|removeTags|"
        r"setVisibility|rename|addTypes|setDetails)$",
        r"^/project-[^/]+/(describe|listFolder|newFolder)$",
        r"^/container-[^/]+/(describe|listFolder)$",
        r"^/system/(whoami|greet|findProjects|findDataObjects|resolveDataObjects|findApps|"
        r"findGlobalWorkflows|describeDataObjects)$",
    )
]


def is_always_retry(route: str) -> bool:
    """True when dxpy marks this route safe to retry after a lost response."""
    return any(p.match(route) for p in _ALWAYS_RETRY_PATTERNS)


@dataclass(frozen=True)
class RetryPolicy:
    """Numbers of the two policies. Defaults are production values."""

    base_delay: float = field(default_factory=lambda: env_float("UA_RETRY_BASE_DELAY", 1.0))
    api_max_retries: int = 6
    max_retry_after: float = 60.0  # cap on a server's Retry-After, seconds (before scaling)
    max_throttled: int = 30  # 503/429 answers tolerated per call/part without spending a try
    part_backoff_cap: float = 32.0  # seconds (before scaling)

    # --- API calls -------------------------------------------------------------------
    def api_should_retry(self, exc: BaseException, always_retry: bool) -> bool:
        if not isinstance(exc, TransientError):
            return False
        status = exc.status
        if status is not None and (status >= 500 or status == 429):
            return True
        if isinstance(exc, ConnectError):
            return True  # certainly never reached the server
        return always_retry

    def api_delay(self, exc: BaseException, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed try (counting throttled ones)."""
        ra = getattr(exc, "retry_after", None)
        if isinstance(exc, UAError) and exc.throttled and ra is not None and ra >= 0:
            if ra >= 60:
                delay = ra
            else:
                delay = ra + int(0.25 * min(failures - 1, 20) * ra)
            return min(delay, self.max_retry_after) * self.base_delay
        n = min(failures, 8)
        if n <= 1:
            return 1.0 * self.base_delay
        return random.randint(2 ** (n - 2), 2 ** (n - 1)) * self.base_delay

    # --- part uploads ----------------------------------------------------------------
    def part_should_retry(self, exc: BaseException) -> bool:
        return isinstance(exc, (TransientError, BadDigest))

    def part_delay(self, exc: BaseException, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based) of a part."""
        ra = getattr(exc, "retry_after", None)
        if isinstance(exc, UAError) and exc.throttled and ra is not None and ra >= 0:
            return min(ra, self.max_retry_after) * self.base_delay
        ceiling = min(self.part_backoff_cap, 2.0 ** attempt)
        return random.uniform(0.1 * ceiling, ceiling) * self.base_delay


DEFAULT_POLICY = RetryPolicy()

OnRetry = Callable[[int, BaseException, float], None]  # (attempt that failed, error, delay)


async def call_api_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    route: str,
    always_retry: bool | None = None,
    policy: RetryPolicy | None = None,
    max_retries: int | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """Run one API call with dxpy's retry policy. Raises the last error unchanged."""
    policy = policy or DEFAULT_POLICY
    if always_retry is None:
        always_retry = is_always_retry(route)
    retries_left = policy.api_max_retries if max_retries is None else max_retries
    failures = 0
    throttled = 0
    while True:
        try:
            return await attempt()
        except UAError as exc:
            failures += 1
            if not policy.api_should_retry(exc, always_retry):
                raise
            if exc.throttled:
                throttled += 1
                if throttled > policy.max_throttled:
                    raise
            else:
                if retries_left <= 0:
                    raise
                retries_left -= 1
            delay = policy.api_delay(exc, failures)
            log.debug("retry %s after try %d in %.2fs: %s", route, failures, delay,
                      describe_error(exc))
            if on_retry is not None:
                on_retry(failures, exc, delay)
            await asyncio.sleep(delay)


async def run_part_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    *,
    tries: int,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    what: str = "part",
) -> T:
    """Run ``attempt(n)`` (n = 1, 2, …) until it succeeds, at most ``tries`` counted attempts.

    503/429 answers do not count (up to ``policy.max_throttled``). Permanent errors are
    raised unchanged; when tries run out a :class:`RetriesExhausted` wraps the last error.
    """
    policy = policy or DEFAULT_POLICY
    tries = max(1, tries)
    counted = 0
    throttled = 0
    n = 0
    while True:
        n += 1
        try:
            return await attempt(n)
        except UAError as exc:
            if not policy.part_should_retry(exc):
                raise
            if exc.throttled and throttled < policy.max_throttled:
                throttled += 1
            else:
                counted += 1
                if counted >= tries:
                    raise RetriesExhausted(f"{what} failed", exc, n) from exc
            delay = policy.part_delay(exc, counted or 1)
            log.debug("retry %s after attempt %d in %.2fs: %s", what, n, delay,
                      describe_error(exc))
            if on_retry is not None:
                on_retry(n, exc, delay)
            await asyncio.sleep(delay)


__all__ = [
    "RetryPolicy",
    "DEFAULT_POLICY",
    "is_always_retry",
    "call_api_with_retries",
    "run_part_with_retries",
    "PermanentError",
]
