"""Compression: one gzip member across independently compressed parts, and sniffing.

Layout of a compressed upload of parts 1..N (peers.md §2.3, pigz style)::

    part 1   = gzip header (10 bytes) + raw deflate(raw₁, ends in SYNC_FLUSH) [+ padding]
    part k   =                          raw deflate(raw_k, ends in SYNC_FLUSH) [+ padding]
    part N   =                          raw deflate(raw_N, ends in FINISH) + CRC32 + ISIZE

* Each part is compressed by a fresh compressor (no shared window), so parts compress in
  parallel and in any order; a sync flush ends a part on a byte boundary with non-final
  blocks, so the concatenation is *one* valid deflate stream, i.e. one gzip member. No empty
  gzip members ever appear.
* A non-last part that compresses below the platform's ``minimumPartSize`` is padded *inside*
  the member with empty stored blocks (``00 00 00 ff ff``, legal right after a sync flush).
* The trailer needs the CRC32 of all raw bytes: each part's CRC is computed in the same worker
  pass that compresses it (ISA-L crc32 runs at ~25 GB/s); :class:`CrcChain` combines them with
  ``crc32_combine`` so the last part can be finalised once the earlier parts have been *read
  and compressed* — they never need to be held in memory.
* The MD5 sent to ``/upload`` is of the exact bytes PUT, computed in the same worker pass
  (the last part's MD5 object is finished after its 8-byte trailer is appended).

Compression and hashing release the GIL (isal, hashlib), so the pipeline runs them in an
explicit, sized ``ThreadPoolExecutor``.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import struct
from dataclasses import dataclass
from typing import Any

from isal import isal_zlib

GZIP_HEADER = bytes([0x1F, 0x8B, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03])  # no name, mtime 0, Unix
EMPTY_STORED_BLOCK = b"\x00\x00\x00\xff\xff"
GZIP_MEDIA = "application/x-gzip"

# Magic numbers of formats that are already compressed: upload those as they are.
_MAGIC: list[tuple[bytes, str, str]] = [
    (b"\x1f\x8b", "gzip", "application/gzip"),  # also BGZF (BAM, bgzipped VCF/FASTQ)
    (b"BZh", "bzip2", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "xz", "application/x-xz"),
    (b"\x28\xb5\x2f\xfd", "zstd", "application/zstd"),
    (b"PK\x03\x04", "zip", "application/zip"),
    (b"PK\x05\x06", "zip", "application/zip"),
    (b"PK\x07\x08", "zip", "application/zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z", "application/x-7z-compressed"),
    (b"\x04\x22\x4d\x18", "lz4", "application/x-lz4"),
    (b"\x1f\x9d", "compress", "application/x-compress"),
    (b"LZIP", "lzip", "application/x-lzip"),
    (b"Rar!\x1a\x07", "rar", "application/x-rar-compressed"),
    (b"CRAM", "cram", "application/octet-stream"),  # CRAM blocks are compressed inside
]
SNIFF_BYTES = 8


def sniff_compressed(head: bytes) -> str | None:
    """Name of the compressed format ``head`` starts with, or None."""
    for magic, name, _ in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def guess_media(name: str, head: bytes, size: int | None) -> str:
    """Media type for an input sent as is (not compressed by us)."""
    if size == 0:
        return "inode/x-empty"
    for magic, _, media in _MAGIC:
        if head.startswith(magic):
            return media
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed:
        return guessed
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain" if head else "application/octet-stream"


@dataclass
class EncodedPart:
    """Bytes ready to PUT for one part, as a list of buffers sent back to back (no
    concatenation copies: gzip header, deflate body, flush tail, padding, trailer).
    ``md5`` is a hashlib object, still open until :meth:`PartEncoder.finish` for the last
    part of a compressed upload."""

    chunks: list[bytes | bytearray | memoryview]
    md5: Any  # hashlib md5 object
    raw_crc: int  # CRC32 of the part's raw bytes (0 when not compressing)
    raw_len: int
    padding: int = 0  # empty stored blocks appended

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def data(self) -> bytes:
        """All bytes as one object (tests and reference code; the pipeline sends chunks)."""
        return b"".join(self.chunks)

    @property
    def md5_hex(self) -> str:
        return self.md5.hexdigest()


def gzip_trailer(crc: int, total_len: int) -> bytes:
    return struct.pack("<II", crc & 0xFFFFFFFF, total_len & 0xFFFFFFFF)


class PartEncoder:
    """Turns raw part bytes into upload bytes. Thread-safe: holds configuration only.

    ``compress=False``: the bytes go as they are (MD5 only). ``compress=True``: the layout
    above. ``min_part_size`` is the platform's ``minimumPartSize`` for padding non-last parts.
    """

    def __init__(self, *, compress: bool, level: int = 1, min_part_size: int = 0) -> None:
        if compress and not 0 <= level <= 3:
            raise ValueError("isal compression level must be 0-3")
        self.compress = compress
        self.level = level
        self.min_part_size = min_part_size

    def encode(self, raw: bytes | bytearray | memoryview, *, first: bool, last: bool
               ) -> EncodedPart:
        """Runs in a worker thread: compress (if enabled), CRC and MD5 in one pass."""
        if not self.compress:
            return EncodedPart([raw], hashlib.md5(raw), 0, len(raw))
        return self._deflate([raw], len(raw), first=first, last=last)

    def encode_file(self, fd: int, offset: int, length: int, *, first: bool, last: bool,
                    slice_size: int = 1 << 20) -> EncodedPart:
        """Like :meth:`encode` for ``length`` bytes of ``fd`` at ``offset``, streamed through
        one small reused buffer (``slice_size``): the raw part never sits in memory and every
        slice is read, CRC'd and compressed while it is still in the CPU cache — a
        part-sized read lands in fresh pages the kernel must fault in and zero first.
        Compressed output only; :class:`~ua.api.errors.LocalFileChanged` on a short read."""
        from ua.api.filebody import pread_into  # no import cycle at module load

        if not self.compress:
            raise ValueError("encode_file is for compressed parts")

        def slices():
            buf = bytearray(max(1, min(slice_size, length)))
            off, end = offset, offset + length
            while off < end:
                n = min(len(buf), end - off)
                yield pread_into(fd, buf, off, n)
                off += n

        return self._deflate(slices(), length, first=first, last=last)

    def _deflate(self, slices, length: int, *, first: bool, last: bool) -> EncodedPart:
        """The compressed layout of one part from its raw bytes given slice by slice (each
        slice is used before the next is asked for): CRC, deflate and MD5 in one pass."""
        crc = 0
        md5 = hashlib.md5()
        chunks: list[bytes | bytearray | memoryview] = []

        def add(x: bytes) -> None:
            if x:
                chunks.append(x)
                md5.update(x)

        if first:
            add(GZIP_HEADER)
        if length == 0 and not last:
            add(EMPTY_STORED_BLOCK)
        else:
            c = isal_zlib.compressobj(self.level, isal_zlib.DEFLATED, -15)
            for view in slices:
                crc = isal_zlib.crc32(view, crc)
                add(c.compress(view))
            add(c.flush(isal_zlib.Z_FINISH if last else isal_zlib.Z_SYNC_FLUSH))
        size = sum(len(x) for x in chunks)
        padding = 0
        if not last and size < self.min_part_size:
            padding = -(-(self.min_part_size - size) // len(EMPTY_STORED_BLOCK))
            add(EMPTY_STORED_BLOCK * padding)
        return EncodedPart(chunks, md5, crc, length, padding)

    def finish(self, part: EncodedPart, total_crc: int, total_len: int) -> None:
        """Append the gzip trailer to the (encoded) last part and update its MD5."""
        if not self.compress:
            return
        trailer = gzip_trailer(total_crc, total_len)
        part.chunks.append(trailer)
        part.md5.update(trailer)


def crc_combine(crc1: int, crc2: int, len2: int) -> int:
    return isal_zlib.crc32_combine(crc1, crc2, len2)


class CrcChain:
    """Per-file CRC32 of the raw stream, assembled from per-part CRCs as they arrive in any
    order. ``await total(n)`` waits until parts 1..n are known."""

    def __init__(self) -> None:
        self._parts: dict[int, tuple[int, int]] = {}
        self._changed = asyncio.Event()

    def add(self, index: int, crc: int, length: int) -> None:
        self._parts[index] = (crc, length)
        self._changed.set()

    def known(self, index: int) -> bool:
        return index in self._parts

    async def total(self, upto: int) -> tuple[int, int]:
        while True:
            if all(i in self._parts for i in range(1, upto + 1)):
                crc, n = 0, 0
                for i in range(1, upto + 1):
                    c, ln = self._parts[i]
                    crc = crc_combine(crc, c, ln)
                    n += ln
                return crc, n
            self._changed.clear()
            await self._changed.wait()


def encode_all(raws: list[bytes], *, compress: bool = True, level: int = 1,
               min_part_size: int = 0) -> list[bytes]:
    """Reference (sequential) encoding of a list of raw parts; used by tests and tools."""
    enc = PartEncoder(compress=compress, level=level, min_part_size=min_part_size)
    parts = [enc.encode(r, first=i == 0, last=i == len(raws) - 1) for i, r in enumerate(raws)]
    if parts:
        crc, n = 0, 0
        for p in parts:
            crc = crc_combine(crc, p.raw_crc, p.raw_len)
            n += p.raw_len
        enc.finish(parts[-1], crc, n)
    return [p.data for p in parts]
