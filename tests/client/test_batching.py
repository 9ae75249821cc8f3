"""Coalescer (ua/upload/batching.py): group commit of per-file describes.

Pure asyncio tests with recording fakes for the batch and single calls (they stand in for
the API, not for the code under test)."""

from __future__ import annotations

import asyncio

import pytest

from ua.upload.batching import Coalescer


class Calls:
    def __init__(self, *, delay: float = 0.01, fail_batch: bool = False,
                 missing: set | None = None, fail_single: set | None = None) -> None:
        self.batches: list[list] = []
        self.singles: list = []
        self.delay = delay
        self.fail_batch = fail_batch
        self.missing = missing or set()
        self.fail_single = fail_single or set()

    async def batch(self, keys):
        self.batches.append(list(keys))
        await asyncio.sleep(self.delay)
        if self.fail_batch:
            raise RuntimeError("no batch route")
        return [None if k in self.missing else f"b:{k}" for k in keys]

    async def single(self, key):
        self.singles.append(key)
        await asyncio.sleep(self.delay)
        if key in self.fail_single:
            raise ValueError(f"cannot describe {key}")
        return f"s:{key}"


async def test_idle_request_is_one_single_call_without_delay():
    c = Calls()
    co = Coalescer(c.batch, c.single)
    assert await co.get("a") == "s:a"
    assert c.batches == [] and c.singles == ["a"]


async def test_requests_arriving_while_busy_leave_together():
    c = Calls(delay=0.05)
    co = Coalescer(c.batch, c.single, max_batch=100)
    results = await asyncio.gather(*(co.get(i) for i in range(50)))
    # the first goes alone at once; the 49 that queued behind it share one batch call
    assert c.singles == [0]
    assert c.batches == [list(range(1, 50))]
    assert results == ["s:0"] + [f"b:{i}" for i in range(1, 50)]


async def test_batches_are_capped_and_every_caller_gets_its_own_answer():
    c = Calls(delay=0.01)
    co = Coalescer(c.batch, c.single, max_batch=7)
    results = await asyncio.gather(*(co.get(i) for i in range(40)))
    assert all(len(b) <= 7 for b in c.batches) and len(c.batches) >= 5
    assert sorted([k for b in c.batches for k in b] + c.singles) == list(range(40))
    for i, r in enumerate(results):
        assert r in (f"b:{i}", f"s:{i}")


async def test_item_missing_from_a_batch_answer_is_asked_alone():
    c = Calls(missing={3})
    co = Coalescer(c.batch, c.single)
    results = await asyncio.gather(*(co.get(i) for i in range(6)))
    assert results[3] == "s:3"
    assert 3 in c.singles


async def test_failed_batch_falls_back_to_singles_and_stops_batching_after_two():
    c = Calls(fail_batch=True, delay=0.01)
    co = Coalescer(c.batch, c.single)
    r1 = await asyncio.gather(*(co.get(i) for i in range(5)))
    r2 = await asyncio.gather(*(co.get(i) for i in range(10, 15)))
    assert r1 == [f"s:{i}" for i in range(5)] and r2 == [f"s:{i}" for i in range(10, 15)]
    assert len(c.batches) == 2 and co.batch_failures == 2
    n = len(c.batches)
    await asyncio.gather(*(co.get(i) for i in range(20, 30)))
    assert len(c.batches) == n  # batching is off now: singles only


async def test_a_single_call_error_reaches_only_its_owner():
    c = Calls(fail_single={"bad"})
    co = Coalescer(c.batch, c.single)
    with pytest.raises(ValueError, match="cannot describe bad"):
        await co.get("bad")
    assert await co.get("good") == "s:good"


async def test_cancelled_leader_hands_its_batch_to_the_others():
    c = Calls(delay=0.2)
    co = Coalescer(c.batch, c.single)
    leader = asyncio.create_task(co.get("first"))
    await asyncio.sleep(0.01)  # "first" is in flight as a single call
    followers = [asyncio.create_task(co.get(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    results = await asyncio.wait_for(asyncio.gather(*followers), 5)
    assert results == [f"b:{i}" for i in range(5)]
    assert c.batches == [[0, 1, 2, 3, 4]]


async def test_cancelled_follower_does_not_disturb_the_batch():
    c = Calls(delay=0.1)
    co = Coalescer(c.batch, c.single)
    first = asyncio.create_task(co.get("x"))
    await asyncio.sleep(0.01)
    tasks = {i: asyncio.create_task(co.get(i)) for i in range(4)}
    await asyncio.sleep(0.01)
    tasks[2].cancel()
    done = await asyncio.wait_for(asyncio.gather(first, tasks[0], tasks[1], tasks[3]), 5)
    assert done == ["s:x", "b:0", "b:1", "b:3"]
    assert tasks[2].cancelled()
