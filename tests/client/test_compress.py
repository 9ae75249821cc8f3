"""Property tests: any split of any input compresses-and-joins to ONE gzip member that every
decoder (stdlib gzip, isal, a strict single-member zlib decoder) turns back into the input."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from isal import igzip

from ua.upload.compress import (
    EMPTY_STORED_BLOCK,
    GZIP_HEADER,
    CrcChain,
    PartEncoder,
    encode_all,
    guess_media,
    sniff_compressed,
)


def single_member_decode(blob: bytes) -> bytes:
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(blob) + d.flush()
    assert d.eof, "gzip member not terminated"
    assert d.unused_data == b"", "more than one gzip member"
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# Inputs that exercise both literal-heavy and match-heavy deflate paths.
inputs = st.one_of(
    st.binary(max_size=4000),
    st.builds(lambda a, n: a * n, st.binary(min_size=1, max_size=40), st.integers(1, 3000)),
    st.builds(lambda seed, n: random.Random(seed).randbytes(n), st.integers(), st.integers(0, 70000)),
    st.builds(lambda seed, n: bytes(random.Random(seed).choice(b"ACGT\n@+F:,#") for _ in range(n)),
              st.integers(), st.integers(0, 20000)),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs, cuts=st.lists(st.integers(min_value=0), max_size=6),
       level=st.integers(0, 3), min_part=st.sampled_from([0, 1, 7, 100, 5000]))
def test_any_split_joins_to_one_member(data, cuts, level, min_part):
    raws = split(data, cuts)
    parts = encode_all(raws, compress=True, level=level, min_part_size=min_part)
    assert len(parts) == len(raws)
    assert parts[0].startswith(GZIP_HEADER)
    for p in parts[:-1]:
        assert len(p) >= min_part
    for p in parts:
        assert len(p) > 0
    blob = b"".join(parts)
    assert gzip.decompress(blob) == data
    assert igzip.decompress(blob) == data
    assert single_member_decode(blob) == data


def test_padding_is_inside_the_member():
    raws = [b"\0" * 100_000, b"\0" * 100_000, b"tail"]
    parts = encode_all(raws, min_part_size=50_000)
    assert all(len(p) >= 50_000 for p in parts[:2])
    assert parts[0].endswith(EMPTY_STORED_BLOCK)
    assert single_member_decode(b"".join(parts)) == b"".join(raws)


def test_uncompressed_passthrough():
    enc = PartEncoder(compress=False)
    p = enc.encode(b"hello", first=True, last=True)
    assert p.data == b"hello" and p.md5_hex == hashlib.md5(b"hello").hexdigest()


def test_md5_is_of_exact_bytes_sent_including_trailer():
    raws = [b"a" * 1000, b"b" * 10]
    enc = PartEncoder(compress=True, min_part_size=0)
    p1 = enc.encode(raws[0], first=True, last=False)
    p2 = enc.encode(raws[1], first=False, last=True)
    crc = zlib.crc32(b"".join(raws))
    enc.finish(p2, crc, 1010)
    assert p1.md5_hex == hashlib.md5(p1.data).hexdigest()
    assert p2.md5_hex == hashlib.md5(p2.data).hexdigest()
    assert gzip.decompress(bytes(p1.data) + bytes(p2.data)) == b"".join(raws)


def test_empty_stream_is_one_valid_member():
    (only,) = encode_all([b""])
    assert single_member_decode(only) == b""


async def test_crc_chain_out_of_order():
    chunks = [b"abc", b"defg", b"", b"hij"]
    chain = CrcChain()
    waiter = asyncio.create_task(chain.total(4))
    for i in (3, 1, 4):
        chain.add(i, zlib.crc32(chunks[i - 1]), len(chunks[i - 1]))
        await asyncio.sleep(0)
        assert not waiter.done()
    chain.add(2, zlib.crc32(chunks[1]), len(chunks[1]))
    assert await waiter == (zlib.crc32(b"".join(chunks)), 10)


@pytest.mark.parametrize("head,name", [
    (b"\x1f\x8b\x08\x04", "gzip"), (b"BZh91AY", "bzip2"), (b"\xfd7zXZ\x00\x00", "xz"),
    (b"\x28\xb5\x2f\xfd\x00", "zstd"), (b"PK\x03\x04", "zip"), (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"CRAM\x03", "cram"), (b"@read1\nACGT", None), (b"", None),
])
def test_sniff(head, name):
    assert sniff_compressed(head) == name


def test_real_compressed_formats_are_sniffed():
    import bz2
    import lzma

    assert sniff_compressed(gzip.compress(b"x")) == "gzip"
    assert sniff_compressed(bz2.compress(b"x")) == "bzip2"
    assert sniff_compressed(lzma.compress(b"x")) == "xz"


def test_guess_media():
    assert guess_media("a.txt", b"hi", 2) == "text/plain"
    assert guess_media("a", b"", 0) == "inode/x-empty"
    assert guess_media("a.bin", b"\x1f\x8b", 5) == "application/gzip"
    assert guess_media("blob", b"\xff\xfe\x00\x81", 4) == "application/octet-stream"
