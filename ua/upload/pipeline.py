"""The upload pipeline: ``upload_files(api, tasks, settings, subscriber, stop)``.

Structured concurrency: one ``asyncio.TaskGroup`` owned by the call holds a task per file; each
file owns a TaskGroup of its part tasks. Nothing is fire-and-forget, and a file's failure
never touches another file.

Per file: prepare (stat, sniff, project ``fileUploadParameters`` — cached per project —,
signature, resume lookup, ``/file/new`` with a nonce and ``parents: true``), then parts, then
end-to-end verification, then ``/close``.

Parts and memory
    A part first takes a *memory slot* (``upload_threads + compress_threads`` of them), then
    is read with ``os.pread`` (in order per file), compressed + CRC'd + MD5'd in the sized
    CPU pool, and uploaded while holding a *connection slot* (``upload_threads``) only for
    ``/upload`` + PUT. Backoff between tries holds the bytes (they are re-sent from memory)
    but not a connection. Peak buffered bytes ≈ (upload_threads + compress_threads) ×
    part size × 2 in the worst case (raw + compressed while a part is being compressed;
    ×1 once compressed). Parts of many files are in flight together.

Verification
    After the last part: ``describe`` the file and require every part to be ``complete`` with
    exactly the size and MD5 we sent; parts that are not are uploaded again (at most two
    rounds). The local file is re-checked (size, mtime) so a file that changed during the
    upload fails instead of being closed with mixed content; for uncompressed uploads the sum
    of the part sizes must equal the source size. Only then ``/close``.

Stop
    When ``stop`` is set (Ctrl-C), no new part starts, in-flight parts are cancelled, files
    stay open (resumable) and their results are CANCELLED.

Knobs for tests (production defaults): ``UA_RETRY_BASE_DELAY`` (seconds per retry-delay
unit, 1.0), ``UA_STALL_TIMEOUT`` (60 s without progress fails a PUT attempt),
``UA_WAIT_ON_CLOSE_TIMEOUT`` (3600 s bound on ``--wait-on-close``; the option
``--wait-on-close-timeout`` overrides it).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Coroutine

from isal import isal_zlib

from ua.api.client import DXClient
from ua.api.filebody import FileRange, file_identity, range_md5
from ua.knobs import env_float
from ua.api.errors import (
    FileTooLarge,
    LocalFileChanged,
    RetriesExhausted,
    UAError,
    UploadError,
    VerificationError,
    describe_error,
)
from ua.api.retry import run_part_with_retries
from ua.upload import resume as resume_mod
from ua.upload.batching import Coalescer
from ua.upload.compress import (
    GZIP_MEDIA,
    SNIFF_BYTES,
    CrcChain,
    EncodedPart,
    PartEncoder,
    guess_media,
    sniff_compressed,
)
from ua.upload.model import (
    FileResult,
    FileSource,
    FileState,
    FileTask,
    NullSubscriber,
    ProgressSubscriber,
    UploadSettings,
)
from ua.upload.planning import PartPlan, UploadParameters
from ua.upload.signature import (
    LAYOUT_GZIP_SINGLE_MEMBER,
    LAYOUT_PROPERTY,
    SIGNATURE_PROPERTY,
    FileSignature,
)
from ua.upload.throttle import TokenBucket

log = logging.getLogger("ua.upload")

PREPARE_CONCURRENCY = 8  # files being prepared (lookups, /file/new) at once
VERIFY_ROUNDS = 2  # extra upload rounds for parts the server does not report complete
CRC_BLOCK = 8 * 1024 * 1024
INLINE_BYTES = 256 * 1024  # parts this small are read and encoded on the event loop
DESCRIBE_BATCH = 100  # files per /system/describeDataObjects


@dataclass
class _PartRecord:
    size: int
    md5: str


@dataclass
class _RangePart:
    """A part sent exactly as it is on disk, straight from the file: ``chunks`` is a
    :class:`FileRange` (sendfile on plain HTTP, a small reused buffer otherwise), so the part
    never sits in memory; its MD5 was computed from the same range just before."""

    chunks: FileRange
    md5_hex: str

    @property
    def size(self) -> int:
        return self.chunks.length

    @property
    def raw_len(self) -> int:
        return self.chunks.length


@dataclass
class _FileRun:
    """Mutable state of one file while it uploads."""

    task: FileTask
    result: FileResult
    file_id: str | None = None
    plan: PartPlan | None = None
    compress: bool = False
    encoder: PartEncoder | None = None
    crc: CrcChain = field(default_factory=CrcChain)
    sent: dict[int, _PartRecord] = field(default_factory=dict)  # uploaded this run
    skipped: dict[int, _PartRecord] = field(default_factory=dict)  # complete before this run
    st: os.stat_result | None = None
    params: UploadParameters | None = None
    fd: int | None = None
    stream: BinaryIO | None = None
    whole: bytes | None = None  # a small file's content, read with its stat in one call


class _Pipeline:
    def __init__(self, api: DXClient, settings: UploadSettings, subscriber: ProgressSubscriber,
                 stop: asyncio.Event | None, stdin: BinaryIO | None) -> None:
        self.api = api
        self.s = settings
        self.sub = subscriber
        self.stop = stop
        self.stdin = stdin
        up = max(1, settings.upload_threads)
        cpu = max(1, settings.compress_threads)
        self.mem_slots = asyncio.Semaphore(up + cpu)
        self.conn_slots = asyncio.Semaphore(up)
        self.prepare_slots = asyncio.Semaphore(PREPARE_CONCURRENCY)
        # Files started (remote object created) but not finished: bounds how far file
        # creation runs ahead of the data.
        self.file_window = asyncio.Semaphore(max(32, 4 * (up + cpu)))
        self.cpu_pool = ThreadPoolExecutor(cpu, thread_name_prefix="ua-compress")
        self.read_pool = ThreadPoolExecutor(max(1, settings.read_threads),
                                            thread_name_prefix="ua-read")
        self.throttle = TokenBucket(settings.throttle) if settings.throttle else None
        self.params: dict[str, asyncio.Future] = {}
        # Resume: local files per project (decides per-file lookups vs one listing) and the
        # listing of each project, made once by the first file that needs it.
        self.resume_files: dict[str, int] = {}
        self.sig_index: dict[str, asyncio.Future] = {}
        # Verification and --wait-on-close describes travel in batches under load.
        self.parts_describer: Coalescer = Coalescer(
            functools.partial(self._describe_many, {"parts": True, "state": True}),
            functools.partial(self._describe_one, {"parts": True, "state": True}),
            max_batch=DESCRIBE_BATCH)
        self.state_describer: Coalescer = Coalescer(
            functools.partial(self._describe_many, {"state": True}),
            functools.partial(self._describe_one, {"state": True}),
            max_batch=DESCRIBE_BATCH)
        self.wait_close_timeout = settings.wait_on_close_timeout \
            if settings.wait_on_close_timeout is not None \
            else env_float("UA_WAIT_ON_CLOSE_TIMEOUT", 3600.0)

    def shutdown(self) -> None:
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)
        self.read_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ helpers
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    async def _run(self, pool: ThreadPoolExecutor, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def upload_parameters(self, project: str) -> UploadParameters:
        fut = self.params.get(project)
        if fut is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
            return fut.result()
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.params[project] = fut
            try:
                raw = await self.api.file_upload_parameters(project)
                fut.set_result(UploadParameters.from_api(raw))
            except BaseException as exc:
                fut.set_exception(exc if isinstance(exc, Exception) else
                                  UploadError(f"lookup of {project} interrupted"))
                del self.params[project]
                fut.exception()  # mark retrieved
                raise
        return await asyncio.shield(fut)

    async def _describe_one(self, fields: dict, key: tuple[str, str]) -> dict[str, Any]:
        fid, project = key
        return await self.api.file_describe(fid, fields, project=project)

    async def _describe_many(self, fields: dict, keys: list[tuple[str, str]]
                             ) -> list[dict[str, Any] | None]:
        descs = await self.api.describe_data_objects(
            [{"id": fid, "project": project, "describe": {"fields": fields}}
             for fid, project in keys])
        # An answer that is not about the file asked for is re-asked alone.
        return [d if d.get("id") == fid and all(f in d for f in fields) else None
                for d, (fid, _) in zip(descs, keys)]

    async def signature_index(self, project: str) -> resume_mod.SignatureIndex | None:
        """The project's signed files listed once, or None when per-file lookups are the
        cheaper way (few local files, or more signed files than the page budget)."""
        n = self.resume_files.get(project, 0)
        if n < resume_mod.SCAN_MIN_FILES:
            return None
        fut = self.sig_index.get(project)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.sig_index[project] = fut
            index = None
            try:
                results, complete = await self.api.find_data_objects_bounded(
                    resume_mod.scan_page_budget(n), **resume_mod.scan_query(project))
                if complete:
                    index = resume_mod.SignatureIndex(results)
                else:
                    log.debug("%s holds more signed files than %d pages: per-file lookups",
                              project, resume_mod.scan_page_budget(n))
            except Exception as exc:  # noqa: BLE001 - per-file lookups report their own errors
                log.debug("listing the signed files of %s failed (%s): per-file lookups",
                          project, describe_error(exc))
            finally:
                fut.set_result(index)  # also when cancelled: the others fall back
        return await asyncio.shield(fut)

    async def resume_candidates(self, project: str, signature: str) -> list[dict[str, Any]]:
        index = await self.signature_index(project)
        if index is None:
            return await self.api.find_data_objects(
                **resume_mod.lookup_query(project, signature))
        found = []
        for r in index.lookup(signature):
            d = r["describe"]
            if d.get("state") == "open":  # resuming needs its parts, as they are now
                d = await self.api.file_describe(
                    r["id"], {"state": True, "name": True, "folder": True, "parts": True,
                              "properties": True}, project=project)
            found.append({"id": r["id"], "describe": d})
        return found

    def message(self, run: _FileRun, text: str) -> None:
        self.sub.on_file_message(run.task, text)

    # ------------------------------------------------------------------ per file
    async def upload_one(self, run: _FileRun) -> None:
        task, res = run.task, run.result
        try:
            if task.error:
                raise UploadError(task.error)
            async with self.file_window:
                if task.source is FileSource.STDIN:
                    await self.upload_stdin(run)
                else:
                    await self.upload_path(run)
        except asyncio.CancelledError:
            res.state = FileState.CANCELLED
            res.error = "interrupted; the remote file stays open and resumable" \
                if run.file_id else "interrupted"
            raise
        except Exception as exc:  # noqa: BLE001 - every per-file failure ends here
            res.state = FileState.FAILED
            res.error = self.error_text(run, exc)
            log.debug("file %s failed", task.label, exc_info=not isinstance(exc, UAError))
        finally:
            res.file_id = run.file_id or res.file_id
            self.close_local(run)
            if res.state is not FileState.CANCELLED:
                self.sub.on_file_done(res)

    def error_text(self, run: _FileRun, exc: BaseException) -> str:
        if isinstance(exc, BaseExceptionGroup):
            leaves = list(_leaves(exc))
            real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
            exc = (real or leaves)[0]
        return describe_error(exc)

    def close_local(self, run: _FileRun) -> None:
        if run.fd is not None:
            try:
                os.close(run.fd)
            except OSError:
                pass
            run.fd = None

    async def upload_path(self, run: _FileRun) -> None:
        task, res, s = run.task, run.result, self.s
        path = task.local_path or task.label
        async with self.prepare_slots:
            try:
                # A file whose bytes are in the page cache is probed right here (a thread
                # hop per file is a measurable cost with thousands of small files); a cold
                # one goes to the read pool so the event loop never waits for the disk.
                probed = _probe(path, INLINE_BYTES, cached_only=True)
                if probed is None:
                    probed = await self._run(self.read_pool, _probe, path, INLINE_BYTES)
                st, head, real = probed
            except OSError as exc:
                raise UploadError(f"Cannot read {task.label}: {exc.strerror}") from None
            run.st = st
            if len(head) == st.st_size:
                run.whole = head  # a small file, read whole: its one part needs no read
            head = head[:SNIFF_BYTES]
            sniffed = sniff_compressed(head)
            compress = s.compress and st.st_size > 0 and sniffed is None
            run.compress = compress
            params = await self.upload_parameters(task.project)
            run.params = params
            plan = PartPlan.for_size(st.st_size, s.chunk_size, params, compressed=compress)
            run.plan = plan
            run.encoder = PartEncoder(compress=compress, level=s.compress_level,
                                      min_part_size=params.minimum_part_size)
            sig = FileSignature(st.st_size, int(st.st_mtime), compress, plan.part_size, real)
            remote_name = task.name + ".gz" if compress else task.name
            res.remote_name = remote_name
            decision = resume_mod.ResumeDecision("new")
            if s.resume:
                found = await self.resume_candidates(task.project, str(sig))
                decision = resume_mod.decide(found, compress=compress)
                for note in decision.notes:
                    self.message(run, note)
            if decision.kind == "ambiguous":
                self.message(run, resume_mod.ambiguous_message(task.label, task.project,
                                                               decision.candidates))
                ids = ", ".join(c["id"] for c in decision.candidates)
                raise UploadError(
                    f"More than one resumable targets for local file \"{task.label}\" found in "
                    f"the project '{task.project}' ({ids}); clean them up or run with "
                    "--do-not-resume")
            if decision.kind in ("done", "resume") and (
                    decision.name != remote_name or (decision.folder or "/") != task.folder):
                where = f"{(decision.folder or '/').rstrip('/')}/{decision.name}"
                self.message(run, f"Note: the matching remote file {decision.file_id} is {where}, "
                                  f"not {task.folder.rstrip('/')}/{remote_name} (the resume "
                                  "signature does not include the remote name or folder)")
            if decision.kind == "done":
                run.file_id = decision.file_id
                res.remote_name = decision.name
                res.remote_state = decision.state
                res.state = FileState.ALREADY_UPLOADED
                res.bytes_read = st.st_size
                self.message(run, f"Signature of file {task.label} matches remote file "
                                  f"{decision.name} ({decision.file_id}), which is 100% complete. "
                                  "Will not resume uploading it.")
                return
            if decision.kind == "resume":
                run.file_id = decision.file_id
                res.remote_name = decision.name
                for key, p in decision.parts.items():
                    try:
                        idx = int(key)
                    except ValueError:
                        continue
                    if (p or {}).get("state") == "complete" and 1 <= idx <= plan.num_parts:
                        run.skipped[idx] = _PartRecord(int(p.get("size") or 0), p.get("md5") or "")
                done_raw = sum(plan.part(i)[1] for i in run.skipped)
                pct = 100.0 * done_raw / st.st_size if st.st_size else 100.0
                self.message(run, f"Signature of file {task.label} matches remote file "
                                  f"{decision.name} ({decision.file_id}), which is "
                                  f"{resume_mod.percent_text(pct)}% complete. Will resume "
                                  "uploading to it.")
            else:
                props = dict(s.properties)
                props[SIGNATURE_PROPERTY] = str(sig)
                if compress:
                    props[LAYOUT_PROPERTY] = LAYOUT_GZIP_SINGLE_MEMBER
                media = GZIP_MEDIA if compress else guess_media(task.name, head, st.st_size)
                run.file_id = await self.api.file_new(
                    project=task.project, name=remote_name, folder=task.folder, parents=True,
                    media=media, properties=props, tags=s.tags, types=s.types,
                    details=s.details, hidden=s.hidden)
                self.message(run, f"Uploading file {task.label} to file object {run.file_id}")
        self.sub.on_file_started(task, st.st_size, run.file_id)
        res.parts = plan.num_parts
        res.parts_skipped = len(run.skipped)
        # Every part is read and encoded, also those the server already has: a part is only
        # skipped when the server's size and MD5 equal the local bytes (the signature's
        # whole-second mtime cannot tell a same-size edit within one second).
        await self.upload_parts(run, list(range(1, plan.num_parts + 1)))
        await self.finish(run)

    async def upload_parts(self, run: _FileRun, indices: list[int]) -> None:
        """Read (in order), encode and upload the given parts of a PATH file. The file is
        opened when its first part has a memory slot and closed after its last read, so
        open descriptors stay bounded by the slots however many files are queued."""
        plan = run.plan
        assert plan is not None and run.st is not None
        if len(indices) == 1 and plan.part(indices[0])[1] <= INLINE_BYTES \
                and not (run.compress and indices[0] == plan.num_parts and indices[0] > 1):
            # One small part (most small files): no task group and no task of its own; a
            # task per file is a measurable share of the CPU with thousands of small files.
            if self.stopped():
                raise asyncio.CancelledError
            await self.mem_slots.acquire()
            try:
                i = indices[0]
                off, n = plan.part(i)
                if run.whole is not None and off == 0 and n == len(run.whole):
                    raw, run.whole = run.whole, None
                else:
                    if run.fd is None:
                        self.open_local(run)
                    raw = await self._run(self.read_pool, os.pread, run.fd, n, off)
                    self.close_local(run)
                _check_read(run, raw, off, n)
                await self.encode_and_upload(run, i, raw, last=i == plan.num_parts)
            finally:
                self.close_local(run)
                self.mem_slots.release()
            return
        path = run.task.local_path or run.task.label
        try:
            async with asyncio.TaskGroup() as tg:
                for pos, i in enumerate(indices):
                    if self.stopped():
                        raise asyncio.CancelledError
                    await self.mem_slots.acquire()
                    off, n = plan.part(i)
                    last = i == plan.num_parts
                    try:
                        if not run.compress and n > INLINE_BYTES:
                            # As-is part: nothing is read here; its task hashes and sends the
                            # range straight from the file (the slot bounds parts in flight).
                            rng = FileRange.of(path, off, n, run.st)
                            part = self.hash_and_upload(run, i, rng)
                        else:
                            if run.fd is None:
                                self.open_local(run)
                            if run.compress and last:
                                await self.ensure_crcs(run, plan.num_parts - 1, indices)
                            rng = raw = None
                            if n > INLINE_BYTES:  # compressed (as-is parts went above)
                                # Compressed in its task, streamed from the file (see
                                # PartEncoder.encode_file): nothing part-sized is read here.
                                rng = FileRange.of(path, off, n, run.st)
                            else:  # small: a thread hop costs more than the read
                                raw = _check_read(run, os.pread(run.fd, n, off), off, n)
                            if pos == len(indices) - 1:
                                self.close_local(run)
                            if rng is not None:
                                part = self.encode_range_and_upload(run, i, rng, last=last)
                            else:
                                part = self.encode_and_upload(run, i, raw, last=last)
                                del raw  # the part task owns the bytes now
                    except BaseException:
                        self.mem_slots.release()
                        raise
                    self.spawn_part(tg, part)
        finally:
            self.close_local(run)

    def open_local(self, run: _FileRun) -> None:
        path = run.task.local_path or run.task.label
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise LocalFileChanged(f"Cannot open {run.task.label}: {exc.strerror}") from None
        if file_identity(os.fstat(fd)) != file_identity(run.st):
            os.close(fd)
            raise LocalFileChanged(f"{run.task.label} changed before its upload started "
                                   "(size or modification time); run again")
        run.fd = fd

    async def ensure_crcs(self, run: _FileRun, upto: int, uploading: list[int]) -> None:
        """The gzip trailer needs the CRC of every raw byte: compute it for parts that are
        complete on the server from an earlier run (not re-sent now)."""
        assert run.plan is not None
        for i in range(1, upto + 1):
            if i not in uploading and not run.crc.known(i):
                off, n = run.plan.part(i)
                run.crc.add(i, await self._run(self.read_pool, _crc_range, run.fd, off, n), n)

    def spawn_part(self, tg: asyncio.TaskGroup, part: Coroutine[Any, Any, None]) -> None:
        """Start a part task that owns one memory slot; the slot is released by a done
        callback, so even a task cancelled before it ever ran gives its slot back."""
        t = tg.create_task(part)
        t.add_done_callback(lambda _t: self.mem_slots.release())

    async def hash_and_upload(self, run: _FileRun, index: int, rng: FileRange) -> None:
        """An as-is part: MD5 of the range in the CPU pool (parts hash in parallel), then
        the range itself is sent. The file's identity (inode, size, mtime) is checked when
        hashing and again when sending; the server checks the MD5."""
        md5 = await self._run(self.cpu_pool, range_md5, rng)
        await self.send_unless_complete(run, index, _RangePart(rng, md5))

    async def encode_range_and_upload(self, run: _FileRun, index: int, rng: FileRange, *,
                                      last: bool) -> None:
        """A compressed part read, CRC'd, compressed and MD5'd slice by slice in the CPU
        pool; the file's identity is checked before and after the read."""
        enc = run.encoder
        assert enc is not None
        part = await self._run(self.cpu_pool, _encode_range, enc, rng, index == 1, last)
        await self.finish_part(run, index, part, last=last)

    async def encode_and_upload(self, run: _FileRun, index: int, raw: bytes, *,
                                last: bool) -> None:
        enc = run.encoder
        assert enc is not None
        if len(raw) <= INLINE_BYTES:  # microseconds: not worth a thread hop
            part: EncodedPart = enc.encode(raw, first=index == 1, last=last)
        else:
            part = await self._run(
                self.cpu_pool, functools.partial(enc.encode, raw, first=index == 1, last=last))
        del raw
        await self.finish_part(run, index, part, last=last)

    async def finish_part(self, run: _FileRun, index: int, part: EncodedPart, *,
                          last: bool) -> None:
        enc = run.encoder
        assert enc is not None
        run.crc.add(index, part.raw_crc, part.raw_len)
        if last and run.compress:
            crc, total = await run.crc.total(index)
            enc.finish(part, crc, total)
        await self.send_unless_complete(run, index, part)

    async def send_unless_complete(self, run: _FileRun, index: int,
                                   part: EncodedPart | _RangePart) -> None:
        """PUT the part, unless an earlier run left exactly these bytes on the server."""
        known = run.skipped.get(index)
        if known is not None:
            if known.size == part.size and known.md5.lower() == part.md5_hex:
                run.result.bytes_read += part.raw_len
                self.sub.on_bytes_read(run.task, part.raw_len)
                return
            del run.skipped[index]
            run.result.parts_skipped -= 1
            self.message(run, f"Part {index} of {run.file_id} on the server differs from the "
                              "local data (size or MD5); uploading it again")
        await self.put_with_retries(run, index, part)

    async def put_with_retries(self, run: _FileRun, index: int,
                               part: EncodedPart | _RangePart) -> None:
        task, res = run.task, run.result
        md5 = part.md5_hex
        size = part.size
        body = part.chunks
        fid = run.file_id
        assert fid is not None
        if run.params is not None and \
                res.bytes_sent + size > run.params.maximum_file_size:
            raise FileTooLarge(f"{task.label}: the upload would exceed the project's maximum "
                               f"file size ({run.params.maximum_file_size} bytes)")
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def attempt(n: int) -> None:
            # A fresh URL every try; its own API retries do not sit in a connection slot.
            url, headers = await self.api.file_upload(fid, index, size, md5)
            async with self.conn_slots:
                await self.api.put_part(url, headers, body, throttle=self.throttle,
                                        on_sent=lambda k: self.sub.on_bytes_sent(task, k))

        def on_retry(n: int, exc: BaseException, delay: float) -> None:
            res.retries += 1
            self.sub.on_retry(task, index, n, describe_error(exc))

        try:
            await run_part_with_retries(attempt, tries=self.s.tries, policy=self.api.policy,
                                        on_retry=on_retry, what=f"part {index}")
        except RetriesExhausted as exc:
            off = (index - 1) * (run.plan.part_size if run.plan else 0)
            span = f" (raw bytes {off}-{off + part.raw_len})" if run.plan else ""
            raise UploadError(f"Failed to upload part {index}{span} of {task.label} after "
                              f"{exc.attempts} tries: {describe_error(exc.last)}") from exc
        log.debug("%s part %d: %d raw bytes -> %d sent, md5 %s, %.2f s", fid, index,
                  part.raw_len, size, md5, loop.time() - t0)
        run.sent[index] = _PartRecord(size, md5)
        res.bytes_sent += size
        res.bytes_read += part.raw_len
        self.sub.on_bytes_read(task, part.raw_len)

    async def finish(self, run: _FileRun) -> None:
        """Verify every part on the server, check the source did not change, close."""
        task, res = run.task, run.result
        fid = run.file_id
        assert fid is not None and run.plan is not None
        plan = run.plan
        for rnd in range(VERIFY_ROUNDS + 1):
            if self.stopped():
                raise asyncio.CancelledError
            desc = await self.parts_describer.get((fid, task.project))
            bad = self.check_parts(run, desc, plan.num_parts)
            if not bad:
                break
            if rnd == VERIFY_ROUNDS:
                raise VerificationError(
                    f"{task.label}: part(s) {', '.join(map(str, bad[:10]))} of {fid} are not "
                    "complete on the server with the size and MD5 we sent; not closing")
            if task.source is FileSource.STDIN:  # stdin bytes are gone once acknowledged
                raise VerificationError(
                    f"part(s) {', '.join(map(str, bad[:10]))} of the stdin upload {fid} are not "
                    "complete on the server with the size and MD5 we sent; not closing")
            self.message(run, f"Re-uploading part(s) {', '.join(map(str, bad[:10]))} of {fid}: "
                              "the server does not report them complete")
            for i in bad:
                rec = run.sent.pop(i, None)
                if rec is not None:
                    res.bytes_sent -= rec.size
                    res.bytes_read -= plan.part(i)[1]
                elif run.skipped.pop(i, None) is not None:
                    res.bytes_read -= plan.part(i)[1]
            await self.upload_parts(run, bad)
        if run.st is not None and task.local_path:
            try:
                now = os.stat(task.local_path)
            except OSError as exc:
                raise LocalFileChanged(f"{task.label} disappeared during upload: "
                                       f"{exc.strerror}") from None
            if now.st_size != run.st.st_size or int(now.st_mtime) != int(run.st.st_mtime) \
                    or now.st_mtime_ns != run.st.st_mtime_ns:
                raise LocalFileChanged(
                    f"{task.label} changed during upload (size {run.st.st_size} → {now.st_size}"
                    "); not closing the remote file. Run again to upload the new content.")
        await self.close(run)

    def check_parts(self, run: _FileRun, desc: dict[str, Any], num_parts: int) -> list[int]:
        """Indices that are not complete with the expected size/MD5. Raises on parts that
        should not exist or on a byte count that differs from the source."""
        parts = desc.get("parts") or {}
        extra = sorted(int(k) for k in parts if k.isdigit() and int(k) > num_parts)
        if extra:
            raise VerificationError(f"{run.file_id} has unexpected part(s) {extra[:10]} beyond "
                                    f"the {num_parts} this file needs; not closing")
        bad = []
        total = 0
        for i in range(1, num_parts + 1):
            srv = parts.get(str(i)) or {}
            want = run.sent.get(i) or run.skipped.get(i)
            if want is None or srv.get("state") != "complete" or srv.get("size") != want.size \
                    or (srv.get("md5") or "").lower() != want.md5.lower():
                bad.append(i)
            else:
                total += want.size
        if not bad and run.plan is not None and not run.compress and run.plan.size >= 0 \
                and total != run.plan.size:
            raise VerificationError(f"{run.file_id}: the server holds {total} bytes but "
                                    f"{run.task.label} has {run.plan.size}; not closing")
        return bad

    async def close(self, run: _FileRun) -> None:
        res = run.result
        fid = run.file_id
        assert fid is not None
        await self.api.file_close(fid)
        res.remote_state = "closing"
        res.state = FileState.UPLOADED
        if self.s.wait_on_close:
            res.remote_state = await self.wait_closed(fid, run.task.project)

    async def wait_closed(self, fid: str, project: str) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_close_timeout
        delay = 0.25
        while True:
            desc = await self.state_describer.get((fid, project))
            state = desc.get("state")
            if state == "closed":
                return state
            if state != "closing":
                raise UploadError(f"{fid} is {state} after close")
            if loop.time() + delay > deadline:
                raise UploadError(f"{fid} still closing after {self.wait_close_timeout:g} s "
                                  "(--wait-on-close-timeout); it was not reported closed in "
                                  "time and stays closing on the server")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    # ------------------------------------------------------------------ stdin
    async def upload_stdin(self, run: _FileRun) -> None:
        """Stream from stdin: parts of the plan's size, read in a thread, each kept in memory
        until acknowledged (retries re-send from memory). No signature, no resume."""
        task, res, s = run.task, run.result, self.s
        stream = self.stdin if self.stdin is not None else sys.stdin.buffer
        params = await self.upload_parameters(task.project)
        run.params = params
        plan_c = PartPlan.for_stream(s.chunk_size, params, compressed=s.compress)
        reader = _StreamReader(stream)
        await self.mem_slots.acquire()
        try:
            first, at_eof = await _in_daemon_thread(reader.read_part, plan_c.part_size)
        except BaseException:
            self.mem_slots.release()
            raise
        sniffed = sniff_compressed(first[:SNIFF_BYTES])
        compress = s.compress and sniffed is None
        run.compress = compress
        part_size = PartPlan.for_stream(s.chunk_size, params, compressed=compress).part_size
        run.encoder = PartEncoder(compress=compress, level=s.compress_level,
                                  min_part_size=params.minimum_part_size)
        remote_name = task.name + ".gz" if compress else task.name
        res.remote_name = remote_name
        props = dict(s.properties)
        if compress:
            props[LAYOUT_PROPERTY] = LAYOUT_GZIP_SINGLE_MEMBER
        try:
            run.file_id = await self.api.file_new(
                project=task.project, name=remote_name, folder=task.folder, parents=True,
                media=GZIP_MEDIA if compress else guess_media(task.name, first[:SNIFF_BYTES],
                                                              len(first) or None),
                properties=props, tags=s.tags, types=s.types, details=s.details,
                hidden=s.hidden)
        except BaseException:
            self.mem_slots.release()
            raise
        self.sub.on_file_started(task, None, run.file_id)
        index = 0
        async with asyncio.TaskGroup() as tg:
            raw, last = first, at_eof
            del first
            while True:
                index += 1
                if index > params.maximum_num_parts:
                    self.mem_slots.release()
                    raise FileTooLarge(
                        f"stdin input needs more than {params.maximum_num_parts} parts of "
                        f"{part_size} bytes; use a larger --chunk-size")
                if index == 1 and last and not raw and not compress \
                        and not params.empty_last_part_allowed:
                    self.mem_slots.release()
                    index = 0  # zero parts
                    break
                self.spawn_part(tg, self.encode_and_upload(run, index, raw, last=last))
                raw = b""  # the part task owns the bytes now
                if last:
                    break
                if self.stopped():
                    raise asyncio.CancelledError
                await self.mem_slots.acquire()
                try:
                    raw, last = await _in_daemon_thread(reader.read_part, part_size)
                except BaseException:
                    self.mem_slots.release()
                    raise
        run.plan = PartPlan(reader.total, part_size, index)
        res.parts = index
        await self.finish(run)


class _StreamReader:
    """Reads exact-size parts from a blocking binary stream and knows, with one byte of
    look-ahead, whether a part is the last one."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.carry = b""
        self.total = 0

    def read_part(self, size: int) -> tuple[bytes, bool]:
        buf = bytearray(self.carry)
        self.carry = b""
        while len(buf) < size:
            chunk = self.stream.read(size - len(buf))
            if not chunk:
                self.total += len(buf)
                return bytes(buf), True
            buf += chunk
        ahead = self.stream.read(1)
        self.total += len(buf)
        if not ahead:
            return bytes(buf), True
        self.carry = ahead
        return bytes(buf), False


async def _in_daemon_thread(fn, *args):
    """Run a blocking stdin read in a daemon thread: unlike an executor worker, a thread
    blocked on an idle pipe cannot keep the process from exiting after Ctrl-C."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(ok: bool, value) -> None:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)

    def runner() -> None:
        try:
            value, ok = fn(*args), True
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            value, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:  # the loop is gone (run interrupted)
            pass

    threading.Thread(target=runner, daemon=True, name="ua-stdin").start()
    return await fut


def _check_read(run: _FileRun, raw: bytes, off: int, n: int) -> bytes:
    """``raw``, read at ``off``, if it is the ``n`` bytes planned; a shorter read means the
    file shrank since it was planned."""
    if len(raw) != n:
        raise LocalFileChanged(f"{run.task.label} changed during upload: expected {n} bytes "
                               f"at offset {off}, read {len(raw)}")
    return raw


def _encode_range(enc: PartEncoder, rng: FileRange, first: bool, last: bool) -> EncodedPart:
    fd = rng.open()  # LocalFileChanged if the file is not the one we planned
    try:
        then = rng.check(fd, None)
        part = enc.encode_file(fd, rng.offset, rng.length, first=first, last=last)
        rng.check(fd, then)
        return part
    finally:
        os.close(fd)


_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def _probe(path: str, whole_limit: int, *, cached_only: bool = False
           ) -> tuple[os.stat_result, bytes, str] | None:
    """stat, the first bytes (all of them for a file of at most ``whole_limit`` bytes) and
    the canonical path, from one descriptor: what preparing a file needs from the disk.

    ``cached_only``: never wait for the disk — the data is read with ``RWF_NOWAIT``, which
    fails instead of waiting when it is not in the page cache — and answer None whenever
    that cannot be done (not Linux, a file system without it, not a regular file, data not
    or only partly cached, any error: the blocking probe then reports it)."""
    global _NOWAIT
    if cached_only and _NOWAIT is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_NONBLOCK if cached_only else 0))
    except OSError:
        if cached_only:
            return None
        raise
    try:
        st = os.fstat(fd)
        if cached_only and not stat.S_ISREG(st.st_mode):
            return None
        want = st.st_size if st.st_size <= whole_limit else SNIFF_BYTES
        if not want:
            head = b""
        elif not cached_only:
            head = os.pread(fd, want, 0)
        else:
            buf = bytearray(want)
            try:
                got = os.preadv(fd, [buf], 0, _NOWAIT)
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    _NOWAIT = None  # not supported here: stop trying
                return None
            if got != want:
                return None
            head = bytes(buf)
    finally:
        os.close(fd)
    return st, head, os.path.realpath(path)


def _crc_range(fd: int, off: int, length: int) -> int:
    crc = 0
    end = off + length
    while off < end:
        block = os.pread(fd, min(CRC_BLOCK, end - off), off)
        if not block:
            raise LocalFileChanged("file shrank while computing its checksum")
        crc = isal_zlib.crc32(block, crc)
        off += len(block)
    return crc


def _leaves(eg: BaseException):
    if isinstance(eg, BaseExceptionGroup):
        for e in eg.exceptions:
            yield from _leaves(e)
    else:
        yield eg


async def upload_files(api: DXClient, tasks: list[FileTask], settings: UploadSettings,
                       subscriber: ProgressSubscriber | None = None,
                       stop: asyncio.Event | None = None, *,
                       stdin: BinaryIO | None = None) -> list[FileResult]:
    """Upload every task; one :class:`FileResult` per task, in order.

    ``stop`` (optional): when set, stop starting parts, cancel in-flight ones and return
    with unfinished files CANCELLED (their remote objects stay open and resumable).
    ``stdin``: the stream for a ``FileSource.STDIN`` task (default ``sys.stdin.buffer``).
    """
    sub = subscriber or NullSubscriber()
    pipe = _Pipeline(api, settings, sub, stop, stdin)
    runs = [_FileRun(t, FileResult(task=t, state=FileState.FAILED)) for t in tasks]
    if settings.resume:
        for t in tasks:
            if t.source is FileSource.PATH and not t.error:
                pipe.resume_files[t.project] = pipe.resume_files.get(t.project, 0) + 1
    try:
        async with asyncio.TaskGroup() as tg:
            file_tasks = [tg.create_task(_guard(pipe.upload_one(r))) for r in runs]
            if stop is not None and file_tasks:
                all_done = asyncio.gather(*file_tasks, return_exceptions=True)
                stop_wait = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({all_done, stop_wait},
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop_wait.cancel()
                if stop.is_set():
                    for t in file_tasks:
                        t.cancel()
                await asyncio.wait({all_done})
    finally:
        pipe.shutdown()
    for r in runs:
        if r.result.state is FileState.CANCELLED:
            r.result.file_id = r.file_id
            sub.on_file_done(r.result)
    return [r.result for r in runs]


async def _guard(coro) -> None:
    """Keep a cancelled file from cancelling its siblings (the TaskGroup would otherwise
    treat nothing special, but an escaped CancelledError must not abort the group)."""
    try:
        await coro
    except asyncio.CancelledError:
        pass
