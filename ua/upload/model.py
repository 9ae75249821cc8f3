"""The contract between the command line (ua/cli.py) and the upload pipeline (ua/upload/).

The command line parses and validates options, resolves projects, expands the inputs
(globs, directories, manifest, stdin) into an ordered list of :class:`FileTask`, and hands
them with one :class:`UploadSettings` to ``ua.upload.pipeline.upload_files``. The pipeline
returns one :class:`FileResult` per task, in the same order, and reports progress only
through :class:`ProgressSubscriber` — it never imports tqdm or prints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class FileSource(enum.Enum):
    PATH = "path"  # a regular file (or a symlink to one) on disk
    STDIN = "stdin"  # --read-from-stdin: streamed, size unknown in advance


@dataclass(frozen=True)
class FileTask:
    """One input file of the run; its position in the run's list is its stdout line."""

    label: str  # the path as the user gave it (or the -i label); used in messages
    source: FileSource
    project: str  # resolved project-… (or container-…) ID
    folder: str  # remote folder, sent to /file/new with parents=true
    name: str  # remote name before any ".gz" suffix the pipeline adds when it compresses
    local_path: str | None = None  # absolute path for PATH sources
    error: str | None = None  # set by the CLI when the input is unusable (broken symlink,
    #                           FIFO, unreadable): the pipeline reports it failed, uploads nothing


@dataclass(frozen=True)
class UploadSettings:
    chunk_size: int = 75 * 1024 * 1024  # the Upload Agent's default 75M; adjusted per file
    compress: bool = True  # False with --do-not-compress; already-compressed inputs go as is
    tries: int = 3  # --tries: total attempts per part (documented difference from the C++ UA's tries+1)
    read_threads: int = 2
    compress_threads: int = 1
    upload_threads: int = 8  # parts in flight across all files; also bounds memory
    throttle: int | None = None  # bytes per second over all connections, None = unlimited
    resume: bool = True  # False with --do-not-resume
    wait_on_close: bool = False
    wait_on_close_timeout: float | None = None  # seconds; None = $UA_WAIT_ON_CLOSE_TIMEOUT or 3600
    hidden: bool = False  # --visibility hidden
    properties: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    details: Any = None  # parsed --details JSON (object or array) or None
    compress_level: int = 1  # isal level (0-3)


class FileState(enum.Enum):
    UPLOADED = "uploaded"  # parts sent and verified, file closed (or closing without --wait-on-close)
    ALREADY_UPLOADED = "already_uploaded"  # resume found a closing/closed file with our signature
    FAILED = "failed"
    CANCELLED = "cancelled"  # Ctrl-C / SIGTERM: remote file left open and resumable


@dataclass
class FileResult:
    task: FileTask
    state: FileState
    file_id: str | None = None
    remote_name: str | None = None
    bytes_read: int = 0  # raw bytes of the source
    bytes_sent: int = 0  # bytes PUT (compressed size), retries excluded
    parts: int = 0
    parts_skipped: int = 0  # already complete on the server (resume)
    retries: int = 0
    remote_state: str | None = None  # open / closing / closed as last seen
    error: str | None = None  # one line, for stderr and --json

    @property
    def ok(self) -> bool:
        return self.state in (FileState.UPLOADED, FileState.ALREADY_UPLOADED)

    @property
    def stdout_line(self) -> str:
        """The Upload Agent's stdout contract: the file ID, or the word ``failed``."""
        return self.file_id if self.ok and self.file_id else "failed"


class ProgressSubscriber(Protocol):
    """How the pipeline reports progress (s3transfer-style). All methods are optional no-ops
    in :class:`NullSubscriber`; implementations live in ua/upload/progress.py."""

    def on_file_started(self, task: FileTask, total_bytes: int | None, file_id: str) -> None: ...

    def on_file_message(self, task: FileTask, message: str) -> None: ...  # user-level stderr text

    def on_bytes_read(self, task: FileTask, raw_bytes: int) -> None: ...  # raw bytes of a completed part

    def on_bytes_sent(self, task: FileTask, wire_bytes: int) -> None: ...  # bytes just written to a socket

    def on_retry(self, task: FileTask, part_index: int, attempt: int, reason: str) -> None: ...

    def on_file_done(self, result: FileResult) -> None: ...


class NullSubscriber:
    def on_file_started(self, task, total_bytes, file_id):  # noqa: D401
        pass

    def on_file_message(self, task, message):
        pass

    def on_bytes_read(self, task, raw_bytes):
        pass

    def on_bytes_sent(self, task, wire_bytes):
        pass

    def on_retry(self, task, part_index, attempt, reason):
        pass

    def on_file_done(self, result):
        pass
