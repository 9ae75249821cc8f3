"""--env, --test and --version as subprocesses against a live ua-server."""

import re
import socket


def objects_in(server, project):
    status, body = server.api("/system/findDataObjects", {"scope": {"project": project, "folder": "/",
                                                                      "recurse": True}, "visibility": "either"})
    assert status == 200, body
    return body["results"]


def test_env_masks_token_and_describes_project(run_ua, ua_server):
    p = run_ua("--env")
    assert p.returncode == 0, p.stderr
    tok = ua_server.admin_token
    assert tok not in p.stdout + p.stderr
    assert f"Auth token: {tok[:4]}…" in p.stdout
    assert "API server host:     127.0.0.1" in p.stdout
    assert f"API server port:     {ua_server.port}" in p.stdout
    assert f"Current Project: default ({ua_server.project_id})" in p.stdout


def test_env_with_auth_token_option_and_no_project(run_ua, ua_server):
    env = ua_server.env()
    del env["DX_PROJECT_CONTEXT_ID"]
    p = run_ua("--env", "-a", "secret-token-value-xyz", env=env)
    assert p.returncode == 0
    assert "secret-token-value-xyz" not in p.stdout + p.stderr
    assert "Auth token: secr… (from --auth-token)" in p.stdout and "Current Project: None" in p.stdout


def test_env_without_token_prints_block_then_exit_3(run_ua, ua_server):
    env = ua_server.env()
    del env["DX_SECURITY_CONTEXT"]
    p = run_ua("--env", env=env)
    assert p.returncode == 3
    assert "Auth token: <none>" in p.stdout and "No Authentication token found" in p.stderr


def test_selftest_all_ok_leaves_nothing(run_ua, ua_server):
    before = objects_in(ua_server, ua_server.project_id)
    p = run_ua("--test")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    for name in ("configuration", "API server", "token", "project", "upload URL"):
        assert any(ln.startswith(f"OK    {name}:") for ln in lines), (name, p.stdout)
    assert any(ln.startswith("INFO  OS:") for ln in lines)
    assert "All checks passed." in lines
    assert not re.search(r"=[^*&\s]", p.stdout.split("upload URL:")[1].splitlines()[0].split("?", 1)[1])
    assert ua_server.admin_token not in p.stdout + p.stderr
    assert objects_in(ua_server, ua_server.project_id) == before


def test_selftest_upload_scope_skips_upload_check(run_ua, ua_server):
    tok = ua_server.new_token(project=ua_server.project_id, level="UPLOAD")
    before = objects_in(ua_server, ua_server.project_id)
    p = run_ua("--test", env=ua_server.env(token=tok))
    assert p.returncode == 0, p.stdout
    assert any(ln.startswith("SKIP  upload URL:") for ln in p.stdout.splitlines())
    assert objects_in(ua_server, ua_server.project_id) == before


def test_selftest_view_token_fails_project(run_ua, ua_server):
    tok = ua_server.new_token(project=ua_server.project_id, level="VIEW")
    p = run_ua("--test", env=ua_server.env(token=tok))
    assert p.returncode == 1
    assert any(ln.startswith("FAIL  project:") and "does not represent a valid project" in ln
               for ln in p.stdout.splitlines())


def test_selftest_bad_token_and_unreachable(run_ua, ua_server):
    p = run_ua("--test", "-a", "bogus-bogus-bogus")
    assert p.returncode == 1
    assert any(ln.startswith("FAIL  token:") and "InvalidAuthentication" in ln for ln in p.stdout.splitlines())
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = run_ua("--test", env=dict(ua_server.env(), DX_APISERVER_PORT=str(port)))
    assert p.returncode == 1
    assert any(ln.startswith("FAIL  API server:") for ln in p.stdout.splitlines())


def test_selftest_masks_proxy_credentials(run_ua, ua_server):
    env = dict(ua_server.env(), https_proxy="http://alice:hunter2@proxy.example:3128", no_proxy="127.0.0.1")
    p = run_ua("--test", env=env)
    assert "hunter2" not in p.stdout + p.stderr and "alice" not in p.stdout
    assert "https_proxy=http://****@proxy.example:3128" in p.stdout
