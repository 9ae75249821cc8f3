"""Group commit for per-file API calls that have a batch form.

With many small files, every per-file request costs a round trip on both sides (client and
server share the CPU in the benchmark). ``/system/describeDataObjects`` describes many files
in one call, so the pipeline asks a :class:`Coalescer` instead of calling ``describe`` per
file:

* while fewer than ``max_inflight`` batch calls are running, a request goes out at once (no
  added latency when the pipeline is idle);
* requests that arrive while the batch calls are busy queue up and leave together in the
  next batch (up to ``max_batch``), so batches grow with the load — the group-commit idea
  of databases.

No background task: the caller that finds a free slot *leads* the next batch in its own
task and hands the results to the others' futures. If the leader is cancelled, the items
of its batch are put back for another caller to lead; if the batch call fails with an
error, every item falls back to its own single call, so one unusual object (or a server
without the batch route) never fails other files; after two failed batch calls the
coalescer stops batching for the rest of the run. A batch of one is a single call.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Requeue(Exception):
    """The batch carrying this item was abandoned (its leader was cancelled): try again."""


class _Single(Exception):
    """The batch call failed: make this item's own single call."""


class Coalescer(Generic[K, V]):
    def __init__(self, batch: Callable[[list[K]], Awaitable[list[V | None]]],
                 single: Callable[[K], Awaitable[V]], *, max_batch: int = 100,
                 max_inflight: int = 1) -> None:
        self._batch = batch
        self._single = single
        self.max_batch = max(1, max_batch)
        self.max_inflight = max(1, max_inflight)
        self._pending: list[tuple[K, asyncio.Future]] = []
        self._inflight = 0
        self._changed = asyncio.Event()
        self.batches = 0  # batch calls made (for tests and --verbose summaries)
        self.batch_failures = 0

    async def get(self, key: K) -> V:
        if self.batch_failures >= 2:
            return await self._single(key)
        loop = asyncio.get_running_loop()
        while True:
            fut: asyncio.Future = loop.create_future()
            self._pending.append((key, fut))
            try:
                while not fut.done():
                    if self._inflight < self.max_inflight and self._pending:
                        await self._lead()
                    else:
                        self._changed.clear()
                        waiter = asyncio.ensure_future(self._changed.wait())
                        try:
                            await asyncio.wait({fut, waiter},
                                               return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            waiter.cancel()
            except BaseException:
                if not fut.done():  # still queued: withdraw it
                    self._pending = [(k, f) for k, f in self._pending if f is not fut]
                    fut.cancel()
                raise
            try:
                return fut.result()
            except _Requeue:
                continue
            except _Single:
                return await self._single(key)

    async def _lead(self) -> None:
        batch = self._pending[:self.max_batch]
        del self._pending[:self.max_batch]
        self._inflight += 1
        try:
            if len(batch) == 1:
                (k, f), = batch
                try:
                    v = await self._single(k)
                except Exception as exc:  # noqa: BLE001 - the item's owner re-raises it
                    if not f.done():
                        f.set_exception(exc)
                else:
                    if not f.done():
                        f.set_result(v)
                return
            values = await self._batch([k for k, _ in batch])
            if len(values) != len(batch):
                raise ValueError("batch answered a different number of items")
        except Exception:  # noqa: BLE001 - every item retries alone and reports its own error
            self.batch_failures += 1
            for _, f in batch:
                if not f.done():
                    f.set_exception(_Single())
        except BaseException:  # cancelled (or worse): another caller leads these items
            for _, f in batch:
                if not f.done():
                    f.set_exception(_Requeue())
            raise
        else:
            self.batches += 1
            for (_, f), v in zip(batch, values):
                if not f.done():
                    if v is None:
                        f.set_exception(_Single())
                    else:
                        f.set_result(v)
        finally:
            self._inflight -= 1
            for _, f in batch:  # nobody may be left waiting on an exception never read
                if f.done() and not f.cancelled():
                    f.exception()
            self._changed.set()
