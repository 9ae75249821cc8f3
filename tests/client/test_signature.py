"""FileSignature: exact wire format and round trip, paths with spaces."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, strategies as st

from ua.upload.signature import FileSignature

paths = st.text(min_size=1).map(lambda s: "/" + s.replace("\x00", ""))


@given(size=st.integers(0, 2 ** 60), mtime=st.integers(-2 ** 40, 2 ** 40),
       compress=st.booleans(), chunk=st.integers(0, 2 ** 40), path=paths)
def test_round_trip(size, mtime, compress, chunk, path):
    sig = FileSignature(size, mtime, compress, chunk, path)
    text = str(sig)
    assert FileSignature.parse(text) == sig
    assert str(FileSignature.parse(text)) == text


def test_exact_format_from_upload_agent():
    text = "12 1795303206 1 78643200 /home/u/data/hello.txt"
    sig = FileSignature.parse(text)
    assert sig == FileSignature(12, 1795303206, True, 78643200, "/home/u/data/hello.txt")
    assert str(sig) == text


def test_path_with_spaces():
    sig = FileSignature.parse("5 7 0 5242880 /tmp/my dir/a  b.txt")
    assert sig.path == "/tmp/my dir/a  b.txt" and not sig.compress


@pytest.mark.parametrize("bad", ["", "1 2 3", "1 2 2 4 /p", "x 2 1 4 /p", "1 2 1 4 ",
                                 "-1 2 1 4 /p", "1 2 1 ٣ /p"])
def test_rejects_garbage(bad):
    with pytest.raises(ValueError):
        FileSignature.parse(bad)


def test_for_path_uses_realpath_and_whole_seconds(tmp_path):
    d = tmp_path / "dir with space"
    d.mkdir()
    f = d / "hello.txt"
    f.write_bytes(b"hello world!")
    os.utime(f, (1795303206.595945, 1795303206.595945))
    link = tmp_path / "link.txt"
    link.symlink_to(f)
    sig = FileSignature.for_path(str(tmp_path / "dir with space" / ".." / "link.txt"),
                                 compress=True, chunk_size=78643200)
    assert str(sig) == f"12 1795303206 1 78643200 {os.path.realpath(f)}"
