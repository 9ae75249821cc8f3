"""Shared helpers of the client benchmarks (compare.py, throttle.py, rerun.py).

* :class:`Server`: a ``ua-server serve`` subprocess on 127.0.0.1, port 0, with a fresh data
  dir; ``env()`` is ``DIR/dx-env`` as a dict plus ``DX_USER_CONF_DIR`` (a temp dir, so neither
  ``dx`` nor ``ua`` reads ``~/.dnanexus_config``); ``cpu()`` is the server's user+system CPU
  seconds (all threads); ``requests()`` parses ``DIR/requests.jsonl``.
* :func:`measure`: runs one client command and returns wall time, exact client CPU (``wait4``
  rusage of the child and its waited-for descendants), peak RSS of the client's process *tree*
  (psutil, sampled every 20 ms, summed over the tree; ``ru_maxrss`` kept as a cross-check),
  server CPU used during the run, exit status and stdout.
* ``UA`` / ``DX``: the real entry-point scripts next to this interpreter (not pyenv shims,
  whose bash + ``pyenv exec`` wrapper would add ~0.1 s and a process to every run).

Sizes: MB = 10^6 bytes, GB = 10^9 bytes of *input* (the local file sizes); MiB where marked.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import datagen  # noqa: E402  (bench/datagen.py)

_SCRIPTS = Path(sysconfig.get_path("scripts"))


def _script(name: str) -> list[str]:
    p = _SCRIPTS / name
    if p.exists():
        return [sys.executable, str(p)]
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found")
    return [found]


UA = _script("ua")
DX = _script("dx")
MB = 1e6
GB = 1e9
MiB = 2**20


# --------------------------------------------------------------------------- server
class Server:
    """``ua-server serve --data-dir DIR --port 0`` on loopback, fresh DIR under ``parent``."""

    def __init__(self, parent: str | None = None, *extra: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="ua-bench-", dir=parent))
        self.data_dir = self.work / "data"
        self.conf_dir = self.work / "dxconf"
        self.conf_dir.mkdir()
        self.log = open(self.work / "server.stderr", "wb")
        # UA_BENCH_SERVER_PYFLAGS="-m cProfile -o F" profiles the server (bench/server_api.py)
        self.proc = subprocess.Popen(
            [sys.executable, *os.environ.get("UA_BENCH_SERVER_PYFLAGS", "").split(),
             "-m", "ua.server.cli", "serve", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=self.log, cwd=str(REPO))
        line = self.proc.stdout.readline().decode()
        m = re.match(r"ua-server listening on (http://\S+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"ua-server did not start: {line!r}; see {self.work}/server.stderr")
        self.url = m.group(1)
        self.ps = psutil.Process(self.proc.pid)
        self._env = self._read_env()
        self._log_pos = 0  # new_requests() reads on from here

    def _read_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for line in (self.data_dir / "dx-env").read_text().splitlines():
            line = line.strip()
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                env[key] = shlex.split(value)[0] if value else ""
        return env

    def env(self) -> dict[str, str]:
        e = {k: v for k, v in os.environ.items() if not k.startswith("DX_")}
        e.update(self._env)
        e["DX_USER_CONF_DIR"] = str(self.conf_dir)
        e.pop("UA_STALL_TIMEOUT", None)
        return e

    def api(self, route: str, body: dict) -> dict:
        import urllib.request
        token = json.loads(self._env["DX_SECURITY_CONTEXT"])["auth_token"]
        req = urllib.request.Request(self.url + route, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def new_project(self, name: str) -> str:
        """A fresh project, so every run starts with an empty one: ua-server's
        findDataObjects scans every file row of a project (no property index), so ua's
        per-file resume lookup would otherwise slow down as earlier runs fill the project."""
        return self.api("/project/new", {"name": name})["id"]

    def env_in(self, project: str) -> dict[str, str]:
        e = self.env()
        e["DX_PROJECT_CONTEXT_ID"] = project
        return e

    @property
    def project(self) -> str:
        return self._env["DX_PROJECT_CONTEXT_ID"]

    @property
    def token(self) -> str:
        return json.loads(self._env["DX_SECURITY_CONTEXT"])["auth_token"]

    def sys_cpu(self) -> float:
        return self.ps.cpu_times().system

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def requests(self, skip: int = 0) -> list[dict]:
        path = self.data_dir / "requests.jsonl"
        if not path.exists():
            return []
        with open(path) as fh:
            lines = fh.readlines()
        return [json.loads(x) for x in lines[skip:] if x.strip()]

    def new_requests(self) -> list[dict]:
        """Request-log records appended since the last call (complete lines only)."""
        path = self.data_dir / "requests.jsonl"
        try:
            with open(path, "rb") as fh:
                fh.seek(self._log_pos)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self._log_pos += end
        return [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]

    def request_count(self) -> int:
        path = self.data_dir / "requests.jsonl"
        if not path.exists():
            return 0
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)

    def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until the server used < 5 % CPU for ``quiet`` seconds (background close)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            c0 = self.cpu()
            time.sleep(quiet)
            if self.cpu() - c0 < 0.05 * quiet:
                return

    def stop(self, keep: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- measuring
@dataclass
class Run:
    cmd: list[str]
    rc: int
    wall: float
    cpu_user: float
    cpu_sys: float
    peak_rss: int  # bytes, sum over the process tree, sampled
    maxrss: int  # bytes, ru_maxrss (largest single process)
    server_cpu: float
    stdout: str
    stderr: str
    busiest_thread_cpu: float = 0.0  # CPU s of the client's busiest thread (sampled)
    requests: int = 0  # request-log lines written during the run
    req_from: int = 0  # first request-log line of the run
    extra: dict = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys


class _RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.threads: dict[int, float] = {}  # thread id -> CPU seconds at the last sample
        self.stop_evt = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop_evt.is_set():
            total = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            try:
                for t in root.threads():
                    self.threads[t.id] = t.user_time + t.system_time
            except psutil.Error:
                pass
            self.stop_evt.wait(self.interval)


def measure(cmd: list[str], env: dict[str, str], server: Server | None = None, *,
            cwd: str | None = None, timeout: float = 3600.0) -> Run:
    """Run ``cmd`` to completion; exact CPU via wait4, sampled tree RSS, server CPU delta."""
    s_cpu0 = server.cpu() if server else 0.0
    n_req0 = server.request_count() if server else 0
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_f, stderr=err_f,
                            stdin=subprocess.DEVNULL)
    sampler = _RssSampler(proc.pid)
    sampler.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop_evt.set()
    sampler.join()
    if server:
        server.settle()
    s_cpu = server.cpu() - s_cpu0 if server else 0.0
    out_f.seek(0)
    err_f.seek(0)
    return Run(cmd=cmd, rc=proc.returncode, wall=wall, cpu_user=ru.ru_utime, cpu_sys=ru.ru_stime,
               peak_rss=sampler.peak, maxrss=ru.ru_maxrss * 1024, server_cpu=s_cpu,
               stdout=out_f.read().decode(errors="replace"),
               stderr=err_f.read().decode(errors="replace"),
               requests=(server.request_count() - n_req0) if server else 0, req_from=n_req0,
               busiest_thread_cpu=max(sampler.threads.values(), default=0.0))


FILE_ID = re.compile(r"^file-[0-9A-Za-z]{24}$")


def file_ids(stdout: str) -> list[str]:
    return [x.strip() for x in stdout.splitlines() if x.strip()]


def check_ids(run: Run, expected: int, what: str) -> list[str]:
    """Exit 0 and exactly ``expected`` distinct file IDs on stdout, or raise."""
    ids = file_ids(run.stdout)
    bad = [x for x in ids if not FILE_ID.match(x)]
    if run.rc != 0 or len(ids) != expected or bad or len(set(ids)) != expected:
        raise SystemExit(f"{what}: upload NOT complete: exit {run.rc}, {len(ids)} IDs "
                         f"(want {expected}), bad lines {bad[:3]}\nstderr tail:\n"
                         f"{run.stderr[-2000:]}")
    return ids


def check_closed(run: Run, server: Server, ids: list[str], what: str) -> int:
    """Every ID got a successful ``/close`` during the run (from the server's request log)."""
    closed = {q["file"] for q in server.requests(run.req_from)
              if q["route"].endswith("/close") and q["status"] == 200}
    missing = [i for i in ids if i not in closed]
    if missing:
        raise SystemExit(f"{what}: {len(missing)} file(s) never closed, e.g. {missing[:3]}")
    return len(ids)


# --------------------------------------------------------------------------- verification
def md5_file(path: str | Path, block: int = 8 * MiB) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def remote_md5(file_id: str, env: dict[str, str], *, gunzip: bool = False) -> tuple[str, int]:
    """Download ``file_id`` with the stock ``dx download -o -`` and MD5 the stream (after
    gunzip with ISA-L when asked). Returns (md5 hex, bytes hashed)."""
    from isal import isal_zlib

    proc = subprocess.Popen(DX + ["download", file_id, "-o", "-"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    h = hashlib.md5()
    n = 0
    d = isal_zlib.decompressobj(31) if gunzip else None
    while chunk := proc.stdout.read(4 * MiB):
        if d is not None:
            chunk = d.decompress(chunk)
            while d.unused_data:  # concatenated members, if any
                rest = d.unused_data
                d = isal_zlib.decompressobj(31)
                chunk += d.decompress(rest)
        h.update(chunk)
        n += len(chunk)
    if d is not None:
        tail = d.flush()
        h.update(tail)
        n += len(tail)
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise SystemExit(f"dx download {file_id} failed: {err[-1000:]}")
    return h.hexdigest(), n


def verify_roundtrip(file_id: str, local: str | Path, env: dict[str, str], *,
                     gunzip: bool = False, local_md5: str | None = None) -> str:
    want = local_md5 or md5_file(local)
    got, n = remote_md5(file_id, env, gunzip=gunzip)
    size = os.path.getsize(local)
    if got != want or n != size:
        raise SystemExit(f"ROUND TRIP FAILED for {file_id} vs {local}: md5 {got} != {want} "
                         f"or {n} != {size} bytes")
    return f"{file_id}: {n} bytes{' after gunzip' if gunzip else ''} identical (md5 {got[:12]}…)"


# --------------------------------------------------------------------------- machine
def machine() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import aiohttp
    import isal
    try:
        import dxpy
        dxv = dxpy.TOOLKIT_VERSION
    except Exception:  # noqa: BLE001
        dxv = "?"
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "mem_GiB": round(psutil.virtual_memory().total / 2**30, 1),
            "isal": isal.__version__, "aiohttp": aiohttp.__version__, "dxpy": dxv,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def publish(res: dict, report, path: str | None) -> None:
    """End of a comparison run: note the load, print ``report(res)``, and with ``--json
    PATH`` write all numbers as JSON and the printed report next to it as .md."""
    res["load_end"] = [round(x, 2) for x in os.getloadavg()]
    text = report(res)
    print(text)
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(res, indent=1) + "\n")
    Path(path).with_suffix(".md").write_text(text + "\n")


def git_rev() -> str:
    """HEAD, plus ``+dirty(files)`` when ua/ has uncommitted changes (the benchmark runs the
    working tree, which other people may be editing)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ua"], cwd=REPO,
                               capture_output=True, text=True).stdout.split("\n")
        dirty = [ln[3:] for ln in dirty if ln.strip()]
        return rev + (f"+dirty({', '.join(dirty)})" if dirty else "")
    except OSError:
        return "?"


def parse_size(text: str) -> int:
    return datagen.parse_size(text)


def fmt_mib(n: float) -> str:
    return f"{n / MiB:,.0f} MiB"


SI_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "KIB": 1024, "M": 10**6, "MB": 10**6,
            "MIB": 2**20, "G": 10**9, "GB": 10**9, "GIB": 2**30}


def parse_si_size(text: str) -> int:
    """``2GB`` = 2·10^9, ``75MiB`` = 75·2^20 (an argparse type for the bench scripts' sizes;
    :func:`parse_size` is datagen's, where K/M/G are binary)."""
    import argparse

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in SI_UNITS:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return int(float(m.group(1)) * SI_UNITS[m.group(2).upper()])
