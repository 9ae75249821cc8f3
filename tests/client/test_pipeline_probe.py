"""Preparing a file: the inline page-cache probe (RWF_NOWAIT) answers exactly what the
read-pool probe answers, and declines (None) whenever it could block or is unsure."""

from __future__ import annotations

import os

import pytest

from ua.upload import pipeline


def _cached(path):
    return pipeline._probe(str(path), pipeline.INLINE_BYTES, cached_only=True)


@pytest.mark.parametrize("size", [0, 1, 5000, 256 * 1024, 256 * 1024 + 1, 3 * 1024 * 1024])
def test_cached_probe_equals_pool_probe(tmp_path, size):
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(size))
    os.stat(p)
    p.read_bytes()  # in the page cache now
    got = _cached(p)
    want = pipeline._probe(str(p), pipeline.INLINE_BYTES)
    if getattr(os, "RWF_NOWAIT", None) is None:
        assert got is None
        return
    assert got is not None
    (st1, head1, real1), (st2, head2, real2) = got, want
    assert (st1.st_ino, st1.st_size, st1.st_mtime_ns) == (st2.st_ino, st2.st_size, st2.st_mtime_ns)
    assert head1 == head2 and real1 == real2
    assert len(head1) == (size if size <= pipeline.INLINE_BYTES else pipeline.SNIFF_BYTES)


def test_cached_probe_declines_what_it_cannot_answer(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _cached(fifo) is None  # and did not block
    assert _cached(tmp_path / "missing") is None
    assert _cached(tmp_path) is None  # a directory
