"""Synthetic sequencing data for the demo, tests and benchmarks.

FASTQ reads are sampled from a random reference genome with a 0.5 % error rate, with
Illumina-style headers and NovaSeq-binned qualities, so they compress like real reads
(about 3.4x with ISA-L level 1). Large files are made by tiling a unique block of reads:
deflate only looks 32 KiB back, so tiling a multi-megabyte block does not change the
compression ratio, while making gigabytes takes seconds instead of minutes.

    python bench/datagen.py fastq OUT.fastq --size 200M [--seed 1]
    python bench/datagen.py fastq-gz OUT.fastq.gz --size 200M
    python bench/datagen.py many DIR --count 1000 --size 100K
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import sys

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    unit = text[-1] if text and text[-1] in _UNITS else ""
    number = text[: len(text) - len(unit)] if unit else text
    return int(float(number) * _UNITS[unit])


def fastq_block(target_bytes: int, seed: int = 1, read_len: int = 150) -> bytes:
    """About ``target_bytes`` of unique FASTQ records (whole records only)."""
    rng = random.Random(seed)
    genome = "".join(rng.choice("ACGT") for _ in range(200_000))
    quals = "F" * 78 + ":" * 12 + "," * 8 + "#" * 2
    out: list[str] = []
    size = 0
    n = 0
    while size < target_bytes:
        n += 1
        start = rng.randrange(0, len(genome) - read_len)
        seq = list(genome[start:start + read_len])
        for _ in range(rng.randrange(0, 2)):  # ~0.5 % errors
            seq[rng.randrange(read_len)] = rng.choice("ACGT")
        qual = "".join(rng.choice(quals) for _ in range(read_len))
        rec = (
            f"@A00123:8:H7KJLDSXY:{rng.randrange(1, 5)}:{rng.randrange(1101, 2678)}:"
            f"{rng.randrange(1000, 32000)}:{rng.randrange(1000, 37000)} 1:N:0:ACGTACGT+TGCATGCA\n"
            f"{''.join(seq)}\n+\n{qual}\n"
        )
        out.append(rec)
        size += len(rec)
    return "".join(out).encode()


def write_fastq(path: str, size: int, seed: int = 1, gz: bool = False) -> None:
    block = fastq_block(min(size, 8 * 1024 * 1024), seed)
    opener = (lambda p: gzip.open(p, "wb", compresslevel=1)) if gz else (lambda p: open(p, "wb"))
    with opener(path) as fh:
        written = 0
        while written < size:
            piece = block[: size - written]
            fh.write(piece)
            written += len(piece)


def write_many(directory: str, count: int, size: int, seed: int = 1) -> None:
    os.makedirs(directory, exist_ok=True)
    block = fastq_block(max(size, 64 * 1024), seed)
    for i in range(count):
        off = (i * 7919) % max(1, len(block) - size)
        with open(os.path.join(directory, f"sample_{i:05d}.fastq"), "wb") as fh:
            fh.write(block[off:off + size])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["fastq", "fastq-gz", "many"])
    ap.add_argument("out")
    ap.add_argument("--size", default="10M")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    size = parse_size(a.size)
    if a.kind == "many":
        write_many(a.out, a.count, size, a.seed)
    else:
        write_fastq(a.out, size, a.seed, gz=a.kind == "fastq-gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
