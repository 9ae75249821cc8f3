"""Progress reporting on stderr: the pipeline's :class:`ProgressSubscriber` implementations.

One class, :class:`Reporter`, in three modes:

* ``"messages"`` (no ``--progress``): only the Upload Agent's user-level lines —
  ``Uploading file <local> to file object <id>``, resume notices from the pipeline,
  ``<epoch> PID <pid> File "<local>" was uploaded successfully. Closing...`` and, for failures,
  ``File "<local>" could not be uploaded: <reason>``.
* ``"plain"`` (``--progress`` when stderr is not a terminal): the same lines, plus a status
  block at start, every ``interval`` seconds (10, or ``$UA_PROGRESS_INTERVAL``) and at the end::

      data/big.bin  41.67% complete, data/hello.txt   0.00% complete
      1795303732 PID 25451 Transfer speed: average =   0.25 MB/sec  instantaneous =   0.39 MB/sec
       (throttled to 409600 bytes/sec)

  Never a carriage return, so logs stay readable.
* ``"bars"`` (``--progress`` on a terminal): tqdm bars on stderr — overall raw bytes with rate
  and ETA, and one bar per file in flight (up to :data:`MAX_FILE_BARS`).

The pipeline may call the ``on_*`` methods from any thread; a lock guards the counters.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections import deque
from typing import IO, Any

from ua.knobs import env_float
from ua.upload.model import FileResult, FileState, FileTask

MAX_FILE_BARS = 4
MAX_LISTED = 8
MIB = 1024 * 1024


def progress_interval(default: float = 10.0) -> float:
    value = env_float("UA_PROGRESS_INTERVAL", default)
    return value if value > 0 else default


class _FileStat:
    """Per-file counters. ``shown`` is the progress estimate in raw bytes: completed parts'
    raw bytes plus the wire bytes sent since the last completed part (exact without
    compression, an under-estimate with it), never decreasing, never above the size."""

    __slots__ = ("label", "total", "raw_done", "sent", "sent_at_read", "shown", "done")

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.raw_done = 0
        self.sent = 0
        self.sent_at_read = 0
        self.shown = 0
        self.done = False

    def advance(self) -> int:
        """Recompute ``shown``; returns how much it grew."""
        est = self.raw_done + max(0, self.sent - self.sent_at_read)
        if self.total is not None:
            est = min(est, self.total)
        est = max(est, self.raw_done if self.total is None else min(self.raw_done, self.total))
        grew = max(0, est - self.shown)
        self.shown += grew
        return grew

    def percent(self) -> float:
        if self.total:
            return min(100.0, 100.0 * self.shown / self.total)
        return 100.0 if self.done else 0.0


class Reporter:
    """ProgressSubscriber writing to ``stream`` (stderr). Call :meth:`start` before the
    pipeline runs and :meth:`close` after it returns."""

    def __init__(self, mode: str = "messages", *, stream: IO[str] | None = None, total_files: int = 0,
                 total_bytes: int | None = None, throttle: int | None = None,
                 interval: float | None = None, verbose: bool = False) -> None:
        assert mode in ("messages", "plain", "bars", "quiet")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.throttle = throttle
        self.interval = interval if interval is not None else progress_interval()
        self.verbose = verbose
        self.pid = os.getpid()
        self._lock = threading.RLock()
        self._files: dict[int, _FileStat] = {}  # id(task) -> stat, insertion = start order
        self._sent = 0
        self._raw = 0
        self._done_files = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._overall: Any = None
        self._bars: dict[int, Any] = {}
        self._free_positions: list[int] = list(range(MAX_FILE_BARS, 0, -1))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._t0 = time.monotonic()
        self._samples.append((self._t0, 0))
        if self.mode == "plain":
            self._print_status()
            self._thread = threading.Thread(target=self._ticker, name="ua-progress", daemon=True)
            self._thread.start()
        elif self.mode == "bars":
            from tqdm import tqdm

            self._overall = tqdm(total=self.total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                                 desc=f"0/{self.total_files} files", file=self.stream, position=0,
                                 leave=True, smoothing=0.1, **_width(self.stream))

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            self._print_status()
        if self.mode == "bars":
            with self._lock:
                for bar in self._bars.values():
                    bar.close()
                self._bars.clear()
                if self._overall is not None:
                    self._overall.close()
                    self._overall = None

    def _ticker(self) -> None:
        while not self._stop.wait(self.interval):
            self._print_status()

    # ------------------------------------------------------------------ output helpers
    def write(self, line: str) -> None:
        """A user-level line on stderr (through tqdm when bars are on screen)."""
        if self.mode == "quiet":
            return
        with self._lock:
            if self.mode == "bars" and self._overall is not None:
                from tqdm import tqdm

                tqdm.write(line, file=self.stream)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def speeds(self) -> tuple[float, float]:
        """(average, instantaneous) wire speed in MiB/s; instantaneous over the last ~5 s."""
        now = time.monotonic()
        with self._lock:
            elapsed = max(now - self._t0, 1e-6)
            avg = self._sent / elapsed / MIB
            while len(self._samples) > 1 and now - self._samples[0][0] > 5.0:
                self._samples.popleft()
            t_old, b_old = self._samples[0] if self._samples else (self._t0, 0)
            span = now - t_old
            inst = (self._sent - b_old) / span / MIB if span > 0.05 else avg
        return avg, inst

    def status_lines(self) -> list[str]:
        with self._lock:
            active = [f for f in self._files.values() if not f.done]
            shown = ", ".join(_file_status(f) for f in active[:MAX_LISTED])
            if len(active) > MAX_LISTED:
                shown += f", … and {len(active) - MAX_LISTED} more"
            if not active:
                shown = f"{self._done_files} of {self.total_files} files done"
        avg, inst = self.speeds()
        lines = [shown, f"{int(time.time())} PID {self.pid} Transfer speed: average = {avg:6.2f} MB/sec  "
                        f"instantaneous = {inst:6.2f} MB/sec"]
        if self.throttle:
            lines.append(f" (throttled to {self.throttle} bytes/sec)")
        return lines

    def _print_status(self) -> None:
        text = "\n".join(self.status_lines()) + "\n"
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    # ------------------------------------------------------------------ ProgressSubscriber
    def on_file_started(self, task: FileTask, total_bytes: int | None, file_id: str) -> None:
        with self._lock:
            self._files[id(task)] = _FileStat(task.label, total_bytes)
            if self.mode == "bars" and self._free_positions:
                from tqdm import tqdm

                pos = self._free_positions.pop()
                self._bars[id(task)] = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                                            desc=_short(task.label), file=self.stream, position=pos,
                                            leave=False, **_width(self.stream))
                self._bars[id(task)].pos_ = pos  # remember for reuse

    def on_file_message(self, task: FileTask, message: str) -> None:
        self.write(message)

    def on_bytes_read(self, task: FileTask, raw_bytes: int) -> None:
        with self._lock:
            self._raw += raw_bytes
            st = self._files.get(id(task))
            if st is None:
                return
            st.raw_done += raw_bytes
            st.sent_at_read = st.sent
            self._show(task, st)

    def on_bytes_sent(self, task: FileTask, wire_bytes: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._sent += wire_bytes
            if not self._samples or now - self._samples[-1][0] >= 0.25:
                self._samples.append((now, self._sent))
            st = self._files.get(id(task))
            if st is not None:
                st.sent += wire_bytes
                self._show(task, st)

    def _show(self, task: FileTask, st: _FileStat) -> None:
        grew = st.advance()
        if grew:
            if self._overall is not None:
                self._overall.update(grew)
            bar = self._bars.get(id(task))
            if bar is not None:
                bar.update(grew)

    def on_retry(self, task: FileTask, part_index: int, attempt: int, reason: str) -> None:
        if self.verbose:
            self.write(f"Retrying part {part_index} of \"{task.label}\" (attempt {attempt}): {reason}")

    def on_file_done(self, result: FileResult) -> None:
        task = result.task
        with self._lock:
            st = self._files.get(id(task))
            if st is not None:
                st.done = True
                if result.ok and st.total is not None:
                    st.raw_done = max(st.raw_done, st.total)
                    self._show(task, st)
            self._done_files += 1
            bar = self._bars.pop(id(task), None)
            if bar is not None:
                self._free_positions.append(bar.pos_)
                bar.close()
            if self._overall is not None:
                self._overall.set_description_str(f"{self._done_files}/{self.total_files} files")
        if result.ok:
            self.write(f'{int(time.time())} PID {self.pid} File "{task.label}" was uploaded successfully. '
                       "Closing...")
        elif result.state is FileState.FAILED:
            self.write(f'File "{task.label}" could not be uploaded: {result.error or "unknown error"}')


def _file_status(f: _FileStat) -> str:
    if f.total is None:  # stdin: size unknown until the end
        return f"{f.label} {f.shown / MIB:.2f} MB read"
    return f"{f.label} {f.percent():6.2f}% complete"


def _width(stream: IO[str]) -> dict[str, Any]:
    """tqdm sizing: follow the terminal, but a terminal reporting 0 columns or rows (a bare
    pty, some CI runners) would make tqdm draw nothing, so fall back to 80x20 there."""
    try:
        size = os.get_terminal_size(stream.fileno())
        cols, rows = size.columns, size.lines
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        cols = rows = 0
    if cols > 0 and rows > 0:
        return {"dynamic_ncols": True}
    return {"ncols": cols if cols > 0 else 80, "nrows": rows if rows > 0 else 20}


def _short(label: str, width: int = 30) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1):]
