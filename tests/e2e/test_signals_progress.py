"""Ctrl-C / SIGTERM handling and the plain --progress lines, with `ua` as a real subprocess."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

ID_RE = re.compile(r"^file-[0-9BFGJKPQVXYZbfgjkpqvxyz]{24}$")


def clean_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DX_")}
    env.update(extra)
    return env


def wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exit_130_and_resumable(ua_server, run_ua, tmp_path, sig):
    big = tmp_path / f"big-{sig.name}.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    cmd = [sys.executable, "-m", "ua", "--do-not-compress", "--throttle", "256K", str(big)]
    t_start = time.time()
    proc = subprocess.Popen(cmd, env=clean_env(ua_server.env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        # wait until this run asked for an upload URL (PUTs are logged only when they end;
        # earlier tests share the server's log, hence the time filter)
        started = wait_for(lambda: any(r["route"].endswith("/upload") and r["route"].startswith("/file-")
                                       and r["t"] >= t_start for r in ua_server.requests()), timeout=20)
        assert started
        time.sleep(1.0)  # some bytes on the wire, far from done (3 MiB at 256 KiB/s = 12 s)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = out.decode(), err.decode()
    assert proc.returncode == 130, err
    assert out == "failed\n"
    assert "Interrupted: 0 of 1 files finished." in err
    m = re.search(r"not finished: +" + re.escape(str(big)) + r" \((file-\w+), resumable\)", err)
    assert m, err
    fid = m.group(1)
    status, d = ua_server.api(f"/{fid}/describe", {})
    assert status == 200 and d["state"] == "open"
    # the same command again resumes into the same file object
    p = run_ua("--do-not-compress", str(big), timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == fid
    assert "Will resume uploading to it." in p.stderr


def test_plain_progress_lines_no_carriage_return(ua_server, run_ua, tmp_path):
    f = tmp_path / "p.bin"
    f.write_bytes(os.urandom(1024 * 1024))
    env = dict(ua_server.env(), UA_PROGRESS_INTERVAL="0.2")
    p = run_ua("-g", "--do-not-compress", "--do-not-resume", "--throttle", "512K", str(f), env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert ID_RE.match(p.stdout.strip())
    assert "\r" not in p.stderr and "\r" not in p.stdout
    lines = p.stderr.splitlines()
    speed = [ln for ln in lines if re.match(r"^\d{10} PID \d+ Transfer speed: average = [ \d]{2}\d\.\d\d MB/sec  "
                                            r"instantaneous = [ \d]{2}\d\.\d\d MB/sec$", ln)]
    assert len(speed) >= 4, p.stderr  # start, ≥2 ticks in ~2 s, end
    assert lines.count(" (throttled to 524288 bytes/sec)") == len(speed)
    assert any(re.match(re.escape(str(f)) + r" +\d+\.\d\d% complete$", ln) for ln in lines), p.stderr


def test_interrupt_before_any_upload(make_server, tmp_path):
    srv = make_server(fault="api-503=1")  # every API call answers 503 + Retry-After: ua keeps waiting
    f = tmp_path / "a.txt"
    f.write_text("a\n")
    proc = subprocess.Popen([sys.executable, "-m", "ua", str(f)], env=clean_env(srv.env()), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: any(r["route"] == "/system/greet" for r in srv.requests()))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert out == b""
    assert b"Interrupted: stopping before any upload started." in err
    assert not any(r["route"] == "/file/new" for r in srv.requests())
