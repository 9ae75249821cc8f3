"""A real ``ua-server serve`` subprocess for tests, importable from any test tier.

Kept out of conftest.py so that test modules can ``from livesrv import ServerHandle``
without depending on which of the several conftest.py files Python imported as ``conftest``.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER_CMD = [sys.executable, "-m", "ua.server.cli"]
START_TIMEOUT = 30.0


class ServerHandle:
    """A running ``ua-server serve`` subprocess on its own data dir."""

    def __init__(self, data_dir: Path, opts: dict | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.opts = dict(opts or {})
        self.conf_dir = Path(tempfile.mkdtemp(prefix="dxconf-", dir=self.data_dir.parent))
        self.log_path = self.data_dir.parent / (self.data_dir.name + "-server.log")
        self.proc: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.admin_token = ""
        self.project_id = ""

    # --- lifecycle -----------------------------------------------------------------------------
    def _args(self, port: int) -> list[str]:
        args = [*SERVER_CMD, "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                "--port", str(port)]
        for key, value in self.opts.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is False:
                args.append("--no-" + key.replace("_", "-"))
            elif value is not None:
                args += [flag, str(value)]
        return args

    def start(self, port: int = 0) -> "ServerHandle":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self._args(port), stdout=subprocess.PIPE, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        line = self._read_line(START_TIMEOUT)
        m = re.match(r"^ua-server listening on http://([^:]+):(\d+)$", line.strip())
        if not m:
            self.kill()
            raise RuntimeError(f"ua-server did not start: {line!r}\n{self.server_log()[-3000:]}")
        self.host, self.port = m.group(1), int(m.group(2))
        env = self._dx_env()
        tok = re.search(r'"auth_token"\s*:\s*"([^"]+)"', env["DX_SECURITY_CONTEXT"])
        self.admin_token = tok.group(1)
        self.project_id = env["DX_PROJECT_CONTEXT_ID"]
        return self

    def _read_line(self, timeout: float) -> str:
        assert self.proc and self.proc.stdout
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
        return buf.decode(errors="replace")

    def _dx_env(self) -> dict[str, str]:
        out = {}
        for line in (self.data_dir / "dx-env").read_text().splitlines():
            m = re.match(r"export (\w+)=(.*)$", line)
            if m:
                v = m.group(2)
                out[m.group(1)] = v[1:-1] if v.startswith("'") and v.endswith("'") else v
        return out

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (simulates a crash)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            if self.proc.stdout:
                self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            if self.proc.stdout:
                self.proc.stdout.close()

    def restart(self, **new_opts) -> "ServerHandle":
        """Stop (if still running) and start on the same data dir, on the same port if free."""
        self.stop()
        self.opts.update(new_opts)
        try:
            return self.start(self.port)
        except RuntimeError:
            return self.start(0)

    # --- helpers -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, token: str | None = None, project: str | None = None) -> dict[str, str]:
        """DX_* variables for dx/ua (admin token and default project unless overridden)."""
        return {
            "DX_APISERVER_PROTOCOL": "http",
            "DX_APISERVER_HOST": self.host,
            "DX_APISERVER_PORT": str(self.port),
            "DX_SECURITY_CONTEXT": json.dumps({"auth_token_type": "Bearer",
                                               "auth_token": token or self.admin_token}),
            "DX_PROJECT_CONTEXT_ID": project or self.project_id,
            "DX_CLI_WD": "/",
            "DX_USER_CONF_DIR": str(self.conf_dir),
        }

    def admin_run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*SERVER_CMD, *args, "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, timeout=60)

    def admin(self, *args: str) -> str:
        """Run an admin command against this data dir; returns stdout (raises on failure)."""
        p = self.admin_run(*args)
        if p.returncode != 0:
            raise RuntimeError(f"ua-server {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p.stdout

    def new_project(self, name: str, user: str | None = None) -> str:
        args = ["project", "new", name] + (["--user", user] if user else [])
        return self.admin(*args).strip()

    def new_user(self, handle: str) -> str:
        return self.admin("user", "new", handle).strip()

    def new_token(self, project: str | None = None, level: str | None = None,
                  expires: str | None = None, user: str | None = None) -> str:
        args = ["token", "new"]
        if user:
            args += ["--user", user]
        if project:
            args += ["--project", project, "--level", level or "VIEW"]
        if expires:
            args += ["--expires", expires]
        return self.admin(*args).strip()

    def requests(self) -> list[dict]:
        path = self.data_dir / "requests.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line being written right now
        return out

    def server_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def api(self, route: str, body: dict | None = None, token: str | None = None):
        """Direct JSON API call (stdlib only): returns (status, parsed body)."""
        import urllib.error
        import urllib.request

        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(self.url + route, data=data, method="POST", headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token or self.admin_token}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")


def _clean_env(extra: dict | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DX_")}
    env.update(extra or {})
    return env


def _run(cmd, env, input, timeout, cwd) -> subprocess.CompletedProcess:
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run(cmd, env=env, input=input, capture_output=True, timeout=timeout,
                       cwd=cwd, stdin=None if input is not None else subprocess.DEVNULL)
    return subprocess.CompletedProcess(p.args, p.returncode,
                                       p.stdout.decode(errors="replace"),
                                       p.stderr.decode(errors="replace"))
