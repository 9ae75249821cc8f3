"""Property tests that complement tests/client (test_options' examples, test_signature's
round trip, test_compress' any-split join):

* size and ``--throttle`` parsing accept exactly ``[0-9]+[BKMG]?`` and nothing else;
* the global throttle (GCRA token bucket) never lets more than ``rate·t + burst`` bytes pass
  in any prefix, and never holds a steady sender back more than needed (virtual clock);
* signatures of adversarial paths (spaces, digits, newlines, separators) round-trip, also for
  real files on disk;
* a compressed upload assembled from parts encoded by DIFFERENT runs (different compression
  levels, any order of completion — what a resume does) is still ONE gzip member equal to
  the source;
* end to end: files with hostile names upload and are found again by the resume lookup.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ua.options import UsageError, ValidationError, parse_argv, parse_size, validate_values
from ua.upload import throttle as throttle_mod
from ua.upload.compress import CrcChain, PartEncoder
from ua.upload.signature import FileSignature

UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
SIZE_ALPHABET = "0123456789BKMGbkmg .-+_\n\t\u0663\uff15e"


# ----------------------------------------------------------------------------- sizes
@given(n=st.integers(0, 10 ** 15), unit=st.sampled_from(sorted(UNITS)), zeros=st.integers(0, 3))
def test_valid_sizes_parse_to_their_value(n, unit, zeros):
    assert parse_size("0" * zeros + f"{n}{unit}") == n * UNITS[unit]


@settings(max_examples=400)
@given(text=st.text(alphabet=SIZE_ALPHABET, max_size=8))
def test_size_accepts_exactly_digits_and_one_unit(text):
    valid = re.fullmatch(r"[0-9]+[BKMG]?", text) is not None
    try:
        value = parse_size(text)
    except UsageError as exc:
        assert not valid, text
        assert str(exc).startswith(f"Invalid size argument: '{text}'")
        return
    assert valid, f"{text!r} was accepted as {value}"


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 10 ** 7), unit=st.sampled_from(sorted(UNITS)))
def test_throttle_option_limits(n, unit):
    value = n * UNITS[unit]
    o = parse_argv(["--throttle", f"{n}{unit}", "somefile"])
    assert o.throttle == value
    try:
        notes = validate_values(o)
    except ValidationError as exc:
        assert value < 4096 and "less than 4 Kbytes/sec" in str(exc)
        return
    assert value >= 4096
    assert any(str(value) in line for line in notes)
    assert any("WARNING" in line for line in notes) == (value < 256 * 1024)


# ----------------------------------------------------------------------------- throttle
class _Clock:
    """A virtual clock standing in for the event loop's time() and asyncio.sleep."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now

    async def sleep(self, s):
        assert s >= 0
        self.now += s


class _AsyncioShim:
    def __init__(self, clock):
        self.clock = clock

    def get_running_loop(self):
        return self.clock

    async def sleep(self, s):
        await self.clock.sleep(s)


@settings(max_examples=300, deadline=None)
@given(rate=st.integers(4096, 10 ** 9),
       steps=st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 300_000)), min_size=1,
                      max_size=60))
def test_token_bucket_never_exceeds_rate_plus_burst(rate, steps, monkeypatch_session):
    clock = _Clock()
    monkeypatch_session.setattr(throttle_mod, "asyncio", _AsyncioShim(clock))
    bucket = throttle_mod.TokenBucket(rate)
    granted = 0
    start = None
    busy = 0.0  # time a greedy sender would need at exactly `rate`
    idle = 0.0

    async def run():
        nonlocal granted, start, busy, idle
        for gap, n in steps:
            clock.now += gap
            idle += gap
            t_req = clock.now
            if start is None:
                start = t_req
            await bucket.acquire(n)
            granted += n
            # GCRA bound: bytes granted by now <= rate * elapsed + burst (+ float slack)
            assert granted <= rate * (clock.now - start) + bucket.burst + 1e-6 * rate + 1
            busy += n / rate
        # ... and no needless waiting: all of it took at most the pure transfer time plus
        # the idle gaps
        assert clock.now - start <= busy + idle + 1e-6

    asyncio.run(run())


@pytest.fixture(scope="module")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# ----------------------------------------------------------------------------- signatures
odd_path = st.lists(st.text(alphabet=" 0123456789-\t\n/\\.é\u2028\u00a0*?", min_size=1, max_size=8),
                    min_size=1, max_size=5).map(lambda xs: "/" + "/".join(xs))


@settings(max_examples=400)
@given(size=st.integers(0, 2 ** 63), mtime=st.integers(-2 ** 40, 2 ** 40), compress=st.booleans(),
       chunk=st.integers(0, 2 ** 40), path=odd_path)
def test_signature_round_trip_adversarial_paths(size, mtime, compress, chunk, path):
    sig = FileSignature(size, mtime, compress, chunk, path)
    back = FileSignature.parse(str(sig))
    assert back == sig and str(back) == str(sig)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=" 0123456789-\t\né\u00a0'\"$*?[]", min_size=1, max_size=12)
       .filter(lambda s: s not in (".", "..")))
def test_signature_of_real_odd_files(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"x" * (len(name) + 1))
    sig = FileSignature.for_path(str(p), compress=True, chunk_size=5 * 1024 * 1024)
    assert sig.path == os.path.realpath(p) and sig.size == len(name) + 1
    assert FileSignature.parse(str(sig)) == sig


# ----------------------------------------------------------------------------- compression
def _single_member(blob: bytes) -> bytes:
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(blob) + d.flush()
    assert d.eof and d.unused_data == b""
    return out


data_st = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda seed, n: random.Random(seed).randbytes(n), st.integers(), st.integers(0, 50_000)),
    st.builds(lambda seed, n: bytes(random.Random(seed).choice(b"ACGTN\n@+F") for _ in range(n)),
              st.integers(), st.integers(0, 30_000)),
)


@settings(max_examples=200, deadline=None)
@given(data=data_st, part=st.integers(1, 9000), levels=st.lists(st.integers(0, 3), min_size=1, max_size=40),
       min_part=st.sampled_from([0, 1, 100, 4096]), order_seed=st.integers())
def test_parts_from_different_runs_join_to_one_member(data, part, levels, min_part, order_seed):
    """Plan-sized parts, each encoded by its own encoder at its own level (a resumed upload
    mixes parts of two runs, possibly with different --compress-level), finished in a random
    order with the CRC chain: one gzip member equal to the data."""
    n = max(1, -(-len(data) // part))
    raws = [data[i * part:(i + 1) * part] for i in range(n)]
    order = list(range(n))
    random.Random(order_seed).shuffle(order)
    encoded = {}
    chain = CrcChain()
    for i in order:
        enc = PartEncoder(compress=True, level=levels[i % len(levels)], min_part_size=min_part)
        encoded[i] = (enc, enc.encode(raws[i], first=i == 0, last=i == n - 1))
        chain.add(i + 1, encoded[i][1].raw_crc, encoded[i][1].raw_len)
    crc, total = asyncio.run(chain.total(n))
    enc, last = encoded[n - 1]
    enc.finish(last, crc, total)
    blob = b"".join(bytes(encoded[i][1].data) for i in range(n))
    assert _single_member(blob) == data
    for i in range(n - 1):
        assert len(encoded[i][1].data) >= min_part
    import hashlib
    for i in range(n):
        assert encoded[i][1].md5_hex == hashlib.md5(bytes(encoded[i][1].data)).hexdigest()


# ----------------------------------------------------------------------------- end to end
HOSTILE_NAMES = ["with space.txt", " leading", "trailing ", "new\nline.txt", "tab\there",
                 "12 34 1 5242880 look-alike", "quote'\"`$(x).txt", "glob*?[x].txt",
                 "üñïçødé-é.txt", "\u202eevil.txt", "-dash-first", "%_like.txt"]


def test_hostile_local_names_upload_and_resume(ua_server, tmp_path):
    from faultkit import run_ua_json, verify_results

    d = tmp_path / "odd dir ' \" $"
    d.mkdir()
    sources = {}
    for i, name in enumerate(HOSTILE_NAMES):
        p = d / name
        p.write_bytes(f"{i}:{name}\n".encode() * 50)
        sources[str(p)] = p.read_bytes()
    p1, files1, _ = run_ua_json(ua_server, "--", *sources)
    assert p1.returncode == 0, p1.stderr[-3000:]
    verify_results(ua_server, files1, sources)
    p2, files2, _ = run_ua_json(ua_server, "--", *sources)
    assert p2.returncode == 0
    assert [f["state"] for f in files2] == ["already_uploaded"] * len(sources)
    assert [f["id"] for f in files2] == [f["id"] for f in files1]
