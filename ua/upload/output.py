"""What ``ua`` prints when the run ends: the stdout contract and the summary.

* Plain (default, the Upload Agent's contract): one line per input file, in input order — the
  file ID, or the word ``failed``. Nothing else ever goes to stdout during an upload.
* ``--json`` (ours): instead of those lines, one JSON object per input file, in the same order,
  then one summary object::

    {"type": "file", "path": "data/a.txt", "id": "file-…" | null (set for a failed file that
     exists remotely, so it can be resumed), "project": "project-…",
     "folder": "/", "name": "a.txt.gz" | null, "state": "uploaded" | "already_uploaded" |
     "failed" | "cancelled", "bytes_read": 12, "bytes_sent": 32, "parts": 1,
     "parts_skipped": 0, "retries": 0, "error": null | "one line"}
    {"type": "summary", "files": 2, "ok": 1, "failed": 1, "cancelled": 0, "bytes_read": …,
     "bytes_sent": …, "seconds": 1.23, "exit_code": 1}

The one-line human summary goes to stderr in both modes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Sequence

from ua.upload.model import FileResult, FileState

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STARTUP = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Summary:
    files: int
    ok: int
    failed: int
    cancelled: int
    bytes_read: int
    bytes_sent: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / (1024 * 1024) / self.seconds if self.seconds > 0 else 0.0


def summarize(results: Sequence[FileResult], seconds: float) -> Summary:
    ok = sum(1 for r in results if r.ok)
    cancelled = sum(1 for r in results if r.state is FileState.CANCELLED)
    return Summary(files=len(results), ok=ok, failed=len(results) - ok - cancelled, cancelled=cancelled,
                   bytes_read=sum(r.bytes_read for r in results),
                   bytes_sent=sum(r.bytes_sent for r in results), seconds=seconds)


def exit_code(results: Sequence[FileResult], interrupted: bool = False) -> int:
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def result_object(r: FileResult) -> dict:
    return {
        "type": "file",
        "path": r.task.label,
        "id": r.file_id,  # also for failed/cancelled files that exist remotely (resumable)
        "project": r.task.project,
        "folder": r.task.folder,
        "name": r.remote_name,
        "state": r.state.value,
        "bytes_read": r.bytes_read,
        "bytes_sent": r.bytes_sent,
        "parts": r.parts,
        "parts_skipped": r.parts_skipped,
        "retries": r.retries,
        "error": r.error,
    }


def write_stdout(results: Sequence[FileResult], out: IO[str], *, as_json: bool, seconds: float,
                 code: int) -> None:
    if as_json:
        for r in results:
            out.write(json.dumps(result_object(r), ensure_ascii=False) + "\n")
        s = summarize(results, seconds)
        out.write(json.dumps({"type": "summary", "files": s.files, "ok": s.ok, "failed": s.failed,
                              "cancelled": s.cancelled, "bytes_read": s.bytes_read,
                              "bytes_sent": s.bytes_sent, "seconds": round(s.seconds, 3),
                              "exit_code": code}) + "\n")
    else:
        for r in results:
            out.write(r.stdout_line + "\n")
    out.flush()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def summary_line(results: Sequence[FileResult], seconds: float) -> str:
    s = summarize(results, seconds)
    parts = [f"{s.ok} of {s.files} file{'s' if s.files != 1 else ''} uploaded"]
    if s.failed:
        parts.append(f"{s.failed} failed")
    if s.cancelled:
        parts.append(f"{s.cancelled} interrupted")
    return (", ".join(parts) + f"; {human_bytes(s.bytes_read)} read, {human_bytes(s.bytes_sent)} sent in "
            f"{s.seconds:.1f} s ({s.mb_per_s:.2f} MB/s)")
