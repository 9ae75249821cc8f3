"""PartEncoder.encode_file: compressed parts streamed from the file through a small buffer
produce one valid gzip member across parts, the same CRCs as the in-memory encoder, exact
MD5s, padding below the minimum part size, and LocalFileChanged on a short file."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ua.api.errors import LocalFileChanged
from ua.upload.compress import PartEncoder, crc_combine


def _encode(path, sizes, *, slice_size, min_part):
    enc = PartEncoder(compress=True, level=1, min_part_size=min_part)
    fd = os.open(path, os.O_RDONLY)
    try:
        parts, off = [], 0
        for i, n in enumerate(sizes):
            parts.append(enc.encode_file(fd, off, n, first=i == 0, last=i == len(sizes) - 1,
                                         slice_size=slice_size))
            off += n
    finally:
        os.close(fd)
    crc, total = 0, 0
    for p in parts:
        crc = crc_combine(crc, p.raw_crc, p.raw_len)
        total += p.raw_len
    enc.finish(parts[-1], crc, total)
    return parts


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=300_000), cuts=st.lists(
    st.integers(min_value=0, max_value=300_000), max_size=4),
    slice_size=st.sampled_from([1, 7, 4096, 65536, 1 << 20]))
def test_streamed_parts_decode_to_the_input(tmp_path_factory, data, cuts, slice_size):
    path = tmp_path_factory.mktemp("enc") / "in.bin"
    path.write_bytes(data)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    sizes = [b - a for a, b in zip(bounds, bounds[1:])] or [0]
    parts = _encode(path, sizes, slice_size=slice_size, min_part=1000)
    blob = b"".join(p.data for p in parts)
    d = zlib.decompressobj(31)
    assert d.decompress(blob) == data and d.eof and d.unused_data == b""  # one member
    off = 0
    for p, n in zip(parts, sizes):
        assert p.raw_crc == zlib.crc32(data[off:off + n]) and p.raw_len == n
        assert p.md5_hex == hashlib.md5(p.data).hexdigest()
        off += n
    for p in parts[:-1]:
        assert p.size >= 1000  # padded inside the member, never an empty member


def test_same_content_as_the_in_memory_encoder(tmp_path):
    data = b"@r\nACGTACGTTTGA\n+\nIIIIIIIIIIII\n" * 200_000
    path = tmp_path / "r.fastq"
    path.write_bytes(data)
    half = len(data) // 2
    streamed = _encode(path, [half, len(data) - half], slice_size=1 << 20, min_part=0)
    assert gzip.decompress(b"".join(p.data for p in streamed)) == data
    enc = PartEncoder(compress=True, level=1)
    mem = [enc.encode(data[:half], first=True, last=False),
           enc.encode(data[half:], first=False, last=True)]
    assert [p.raw_crc for p in streamed] == [p.raw_crc for p in mem]


def test_short_file_is_a_local_change(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(LocalFileChanged):
            PartEncoder(compress=True).encode_file(fd, 0, 5000, first=True, last=True)
    finally:
        os.close(fd)
