"""Tokens and URL signatures never appear in ua's stdout/stderr (even with --verbose, retries,
failures), in the server's log, in requests.jsonl, or in error messages.

The FaultProxy sits between ua and the server and records every request line, so the test
knows every signature the server handed out and ua used (``sig=`` of each PUT), and greps
every byte of every output for them.
"""

from __future__ import annotations

import re
import urllib.parse

from faultkit import make_batch, run_ua_json, set_faults
from proxy import RequestFault


def _secrets_seen(proxy) -> set[str]:
    sigs = set()
    for _method, path in proxy.stats.paths:
        q = urllib.parse.urlsplit(path).query
        for k, v in urllib.parse.parse_qsl(q):
            if k == "sig":
                sigs.add(v)
    return sigs


def _assert_clean(blobs: dict[str, str], secrets: set[str]):
    for where, text in blobs.items():
        for s in secrets:
            assert s not in text, f"secret {s[:6]}… leaked into {where}"
        # no signed query string in any form, masked ones are fine
        for m in re.finditer(r"sig=([^&\s\"']+)", text):
            assert set(m.group(1)) <= {"*"}, f"{where}: {m.group(0)[:12]}…"


def test_verbose_upload_with_faults_leaks_nothing(ua_server, fault_proxy, tmp_path):
    h = ua_server
    token = h.new_token(project=h.project_id, level="UPLOAD")
    sources = make_batch(tmp_path / "src", seed=9, big=False)
    doomed = tmp_path / "src" / "doomed.txt"
    doomed.write_bytes(b"never arrives\n")
    proxy = fault_proxy(h)
    proxy.set(faults=[RequestFault("reset", method="PUT", count=2, reset_after=2000),
                      RequestFault("reset", method="POST", count=2, reset_after=100)])
    set_faults(h, "put-500=0.3,api-503=0.2,put-baddigest=1.0@doomed*")
    try:
        env = {"DX_SECURITY_CONTEXT": '{"auth_token_type": "Bearer", "auth_token": "%s"}' % token}
        p, files, _ = run_ua_json(h, "-v", "-g", "-s", "5M", "-r", "8", *sources, doomed,
                                  proxy=proxy, env_extra=env)
    finally:
        set_faults(h, "")
    assert p.returncode == 1
    assert {f["state"] for f in files if "doomed" not in f["path"]} == {"uploaded"}
    assert [f["state"] for f in files if "doomed" in f["path"]] == ["failed"]
    sigs = _secrets_seen(proxy)
    assert len(sigs) >= len(files)  # we really know the signatures that were in play
    assert "Retrying" in p.stderr or "retry" in p.stderr  # faults happened and were logged
    assert "PUT http" in p.stderr  # --verbose logs the (masked) URLs
    secrets = sigs | {token, h.admin_token}
    _assert_clean({"stdout": p.stdout, "stderr": p.stderr, "server log": h.server_log(),
                   "requests.jsonl": (h.data_dir / "requests.jsonl").read_text()}, secrets)


def test_expired_and_rejected_urls_leak_nothing(make_server, fault_proxy, tmp_path):
    """Every PUT is refused (the proxy holds each PUT until its 1-second URL has expired; then
    a wrong token): the error messages ua prints carry no URL signature and no token."""
    h = make_server(upload_url_ttl=1)
    token = h.new_token(project=h.project_id, level="UPLOAD")
    src = tmp_path / "a.txt"
    src.write_bytes(b"expired\n" * 100)
    proxy = fault_proxy(h)
    proxy.set(faults=[RequestFault("delay", method="PUT", seconds=2.2)])
    env = {"DX_SECURITY_CONTEXT": '{"auth_token_type": "Bearer", "auth_token": "%s"}' % token}
    p, files, _ = run_ua_json(h, "-v", "-r", "2", src, proxy=proxy, env_extra=env)
    assert p.returncode == 1 and files[0]["state"] == "failed"
    assert "expired" in (files[0]["error"] or "").lower() or "403" in (files[0]["error"] or "")
    p2, _, _ = run_ua_json(h, "-v", src, proxy=proxy,
                           env_extra={"DX_SECURITY_CONTEXT": env["DX_SECURITY_CONTEXT"].replace(token, token[:-4] + "AAAA")})
    assert p2.returncode == 3
    secrets = _secrets_seen(proxy) | {token, h.admin_token, token[:-4] + "AAAA"}
    assert _secrets_seen(proxy)
    _assert_clean({"stdout": p.stdout + p2.stdout, "stderr": p.stderr + p2.stderr,
                   "server log": h.server_log(),
                   "requests.jsonl": (h.data_dir / "requests.jsonl").read_text()}, secrets)
