"""``.system-fileSignature``: the Upload Agent's resume key (upload-agent.md §5.1).

Wire format, single spaces, all decimal::

    "<size> <mtime> <compress 0|1> <chunkSize> <canonical path>"

``mtime`` is whole seconds; the path is ``os.path.realpath`` and may contain spaces (so
parsing splits at most four times).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

SIGNATURE_PROPERTY = ".system-fileSignature"
# Our own marker of how the bytes of a compressed upload are laid out across parts. A file
# started by another tool (e.g. the C++ UA: one gzip member per part) must not be resumed
# into with our single-member layout, and vice versa.
LAYOUT_PROPERTY = ".ua-layout"
LAYOUT_GZIP_SINGLE_MEMBER = "gzip-single-member-v1"
_UINT = re.compile(r"[0-9]+")
_INT = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class FileSignature:
    size: int
    mtime: int
    compress: bool
    chunk_size: int
    path: str

    def __str__(self) -> str:
        return f"{self.size} {self.mtime} {int(self.compress)} {self.chunk_size} {self.path}"

    @classmethod
    def parse(cls, text: str) -> "FileSignature":
        fields = text.split(" ", 4)
        if (len(fields) != 5 or fields[2] not in ("0", "1") or not fields[4]
                or not _UINT.fullmatch(fields[0]) or not _UINT.fullmatch(fields[3])
                or not _INT.fullmatch(fields[1])):
            raise ValueError(f"not a file signature: {text!r}")
        return cls(int(fields[0]), int(fields[1]), fields[2] == "1", int(fields[3]), fields[4])

    @classmethod
    def for_path(cls, path: str, *, compress: bool, chunk_size: int,
                 st: os.stat_result | None = None) -> "FileSignature":
        real = os.path.realpath(path)
        st = st or os.stat(real)
        return cls(st.st_size, int(st.st_mtime), compress, chunk_size, real)
