"""Hardening of ua's own knobs against slow or stuck servers, end to end: a real ``ua-server``
subprocess (tests/conftest.py) and ``ua`` as a subprocess."""

from __future__ import annotations

import json
import time
import urllib.request

MiB = 1024 * 1024


def _api(h, route, body):
    req = urllib.request.Request(h.url + route, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {h.admin_token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


# ------------------------------------------------------------------ --wait-on-close-timeout
def test_wait_on_close_timeout_option_fails_a_file_that_stays_closing(make_server, run_ua,
                                                                       tmp_path):
    h = make_server(close_delay=60)
    f = tmp_path / "slow-close.txt"
    f.write_bytes(b"closing forever\n" * 100)
    env = h.env()
    env["UA_WAIT_ON_CLOSE_TIMEOUT"] = "3000"  # the option wins over the environment
    t0 = time.monotonic()
    p = run_ua("--do-not-compress", "--wait-on-close", "--wait-on-close-timeout", "1", f, env=env,
               timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 1, (p.stdout, p.stderr[-2000:])
    assert p.stdout.splitlines() == ["failed"]
    assert "still closing after 1 s (--wait-on-close-timeout)" in p.stderr, p.stderr[-2000:]
    assert took < 30
    found = _api(h, "/system/findDataObjects", {"scope": {"project": h.project_id},
                                                "name": "slow-close.txt", "describe": True})
    states = [r["describe"]["state"] for r in found["results"]]
    assert states == ["closing"], found


def test_wait_on_close_timeout_env_still_sets_the_default(make_server, run_ua, tmp_path):
    h = make_server(close_delay=60)
    f = tmp_path / "slow-close-env.txt"
    f.write_bytes(b"x" * 1000)
    env = h.env()
    env["UA_WAIT_ON_CLOSE_TIMEOUT"] = "0.5"
    p = run_ua("--wait-on-close", f, env=env, timeout=60)
    assert p.returncode == 1 and p.stdout.splitlines() == ["failed"], p.stderr[-2000:]
    assert "still closing after 0.5 s" in p.stderr


def test_wait_on_close_timeout_option_is_validated_and_documented(run_ua, tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"a")
    for bad in ("0", "-3", "soon", "inf"):
        p = run_ua("--wait-on-close", "--wait-on-close-timeout", bad, f, env={}, timeout=60)
        assert p.returncode == 2, (bad, p.stderr)
        assert "--wait-on-close-timeout" in p.stderr
    p = run_ua("--help", env={}, timeout=60)
    assert p.returncode == 0 and "--wait-on-close-timeout" in p.stdout
