"""One global bandwidth limit shared by every connection (``--throttle``).

A GCRA / virtual-scheduling token bucket: each ``acquire(n)`` reserves ``n / rate`` seconds
of the link and sleeps until that reservation conforms, allowing a burst of at most
``burst`` bytes. Over any window of *T* seconds at most ``rate·T + burst`` bytes pass, so a
small burst keeps the limit accurate even over short runs. The PUT body writer asks for
``piece_size`` bytes at a time (≈ 1/20 s of the rate), so many slow connections interleave
fairly instead of one hogging a large grant.
"""

from __future__ import annotations

import asyncio


class TokenBucket:
    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("throttle rate must be positive")
        self.rate = float(rate)
        self.piece_size = int(max(1024, min(256 * 1024, rate / 20)))
        self.burst = int(burst if burst is not None else self.piece_size)
        self._tat: float | None = None  # theoretical arrival time of the next byte

    async def acquire(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        tat = now if self._tat is None else max(self._tat, now)
        self._tat = tat + nbytes / self.rate
        wait = self._tat - now - self.burst / self.rate
        if wait > 0:
            await asyncio.sleep(wait)
