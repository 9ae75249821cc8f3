"""PartPlan: how a file of known size is cut into parts (pure, property-tested).

Inputs are the requested chunk size and the project's ``fileUploadParameters``
(dnanexus-api.md §4 ``/project-x/describe``):

* every part except the last is at least ``minimumPartSize`` (raw bytes here; a compressed
  part that shrinks below it is padded inside the gzip member, see compress.py);
* no part exceeds ``maximumPartSize`` (for compressed uploads the raw part is kept below it by
  deflate's worst-case expansion, so the compressed part cannot exceed it either);
* at most ``maximumNumParts`` parts: for huge inputs the part size *grows* to
  ``ceil(size / maximumNumParts)`` instead of failing at part 10,001;
* ``maximumFileSize`` → :class:`~ua.api.errors.FileTooLarge` before anything is sent;
* an empty file is one empty part when ``emptyLastPartAllowed``, otherwise zero parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ua.api.errors import FileTooLarge

MiB = 1024 * 1024
DEFLATE_STORED_BLOCK = 65535  # deflate stores at most this many bytes per block (+5 bytes)
GZIP_OVERHEAD = 10 + 8 + 64  # header + trailer + slack for block headers / final block


def _fmt(n: int) -> str:
    return f"{n} bytes"


@dataclass(frozen=True)
class UploadParameters:
    """A project's ``fileUploadParameters`` (AWS values by default)."""

    minimum_part_size: int = 5 * MiB
    maximum_part_size: int = 5 * 1024 * MiB
    maximum_file_size: int = 5 * 1024 * 1024 * MiB
    maximum_num_parts: int = 10_000
    empty_last_part_allowed: bool = True

    @classmethod
    def from_api(cls, d: dict[str, Any]) -> "UploadParameters":
        return cls(
            minimum_part_size=int(d["minimumPartSize"]),
            maximum_part_size=int(d["maximumPartSize"]),
            maximum_file_size=int(d["maximumFileSize"]),
            maximum_num_parts=int(d["maximumNumParts"]),
            empty_last_part_allowed=bool(d["emptyLastPartAllowed"]),
        )

    def max_raw_part_size(self, compressed: bool) -> int:
        """Largest raw part whose upload can never exceed ``maximum_part_size``."""
        if not compressed:
            return self.maximum_part_size
        # Worst case deflate: stored blocks of 65535 bytes, 5 bytes of header each.
        room = self.maximum_part_size - GZIP_OVERHEAD
        return max(1, room * DEFLATE_STORED_BLOCK // (DEFLATE_STORED_BLOCK + 5))


@dataclass(frozen=True)
class PartPlan:
    """Parts ``1..num_parts``; part *i* covers raw bytes ``[(i-1)·part_size, …)``."""

    size: int
    part_size: int
    num_parts: int

    @classmethod
    def for_size(cls, size: int, chunk_size: int, params: UploadParameters, *,
                 compressed: bool = False) -> "PartPlan":
        if size < 0:
            raise ValueError("size must be >= 0")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        if not compressed and size > params.maximum_file_size:
            raise FileTooLarge(
                f"File is {_fmt(size)}, larger than the project's maximum file size "
                f"({_fmt(params.maximum_file_size)})")
        max_raw = params.max_raw_part_size(compressed)
        part = min(max(chunk_size, params.minimum_part_size), max_raw)
        if size == 0:
            return cls(0, part, 1 if params.empty_last_part_allowed else 0)
        if -(-size // part) > params.maximum_num_parts:
            part = -(-size // params.maximum_num_parts)
            if part > max_raw:
                raise FileTooLarge(
                    f"File is {_fmt(size)}: more than {params.maximum_num_parts} parts of at "
                    f"most {_fmt(max_raw)} would be needed")
        return cls(size, part, -(-size // part))

    @classmethod
    def for_stream(cls, chunk_size: int, params: UploadParameters, *,
                   compressed: bool = False) -> "PartPlan":
        """Unknown size (stdin): fixed part size; ``num_parts``/``size`` are unknown (-1)."""
        part = min(max(chunk_size, params.minimum_part_size), params.max_raw_part_size(compressed))
        return cls(-1, part, -1)

    def part(self, index: int) -> tuple[int, int]:
        """(offset, length) of 1-based part ``index``."""
        if not 1 <= index <= self.num_parts:
            raise IndexError(index)
        off = (index - 1) * self.part_size
        return off, min(self.part_size, self.size - off)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        """(index, offset, length) for every part, in order."""
        for i in range(1, self.num_parts + 1):
            off, n = self.part(i)
            yield i, off, n
