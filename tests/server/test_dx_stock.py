"""The unmodified dx client (dxpy) against a live ua-server."""

from __future__ import annotations

import json
import os

import pytest


def _ok(p):
    assert p.returncode == 0, f"rc={p.returncode}\nstdout:{p.stdout}\nstderr:{p.stderr}"
    return p.stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    (d / "empty.txt").write_bytes(b"")
    (d / "small.txt").write_bytes(b"hello world\n")
    (d / "big.bin").write_bytes(os.urandom(40 * 1000 * 1000))
    return d


def test_upload_download_roundtrip(ua_server, dx, files, tmp_path):
    out = _ok(dx("upload", "--brief", files / "empty.txt", files / "small.txt", files / "big.bin"))
    ids = out.split()
    assert len(ids) == 3 and all(i.startswith("file-") for i in ids)
    desc = json.loads(_ok(dx("describe", "--json", ids[2])))
    assert desc["state"] == "closed" and desc["size"] == 40 * 1000 * 1000
    parts = ua_server.api(f"/{ids[2]}/describe", {"fields": {"parts": True}})[1]["parts"]
    assert sorted(parts, key=int) == ["1", "2", "3"]  # 16 MiB + 16 MiB + rest
    assert json.loads(_ok(dx("describe", "--json", ids[0])))["size"] == 0

    ls = _ok(dx("ls", "-l"))
    for name in ("empty.txt", "small.txt", "big.bin"):
        assert name in ls
    assert "closed" in ls

    for name in ("empty.txt", "small.txt", "big.bin"):
        _ok(dx("download", name, "-o", tmp_path / name))
        assert (tmp_path / name).read_bytes() == (files / name).read_bytes(), name
    _ok(dx("download", ids[2], "-o", tmp_path / "byid.bin"))
    assert (tmp_path / "byid.bin").read_bytes() == (files / "big.bin").read_bytes()


def test_upload_stdin_and_find(ua_server, dx):
    out = _ok(dx("upload", "-", "--brief", "--path", "/stdin.txt", input=b"from stdin\n"))
    fid = out.strip()
    assert json.loads(_ok(dx("describe", "--json", fid)))["name"] == "stdin.txt"
    found = _ok(dx("find", "data", "--name", "stdin.txt", "--brief"))
    assert fid in found
    assert _ok(dx("cat", fid)) == "from stdin\n"


def test_mkdir_and_folders(ua_server, dx, files):
    _ok(dx("mkdir", "-p", "/a/b/c"))
    _ok(dx("mkdir", "-p", "/a/b/c"))  # idempotent
    p = dx("mkdir", "/x/y/z")
    assert p.returncode != 0
    _ok(dx("upload", "--brief", "--path", "/a/b/c/", files / "small.txt"))
    ls = _ok(dx("ls", "/a/b/c"))
    assert "small.txt" in ls
    assert "b/" in _ok(dx("ls", "/a"))
    found = _ok(dx("find", "data", "--path", "/a", "--brief"))
    assert found.strip()


def test_select_and_new_project(ua_server, dx, files):
    env = ua_server.env()
    pid = _ok(dx("new", "project", "--brief", "dxnew", env=env)).strip()
    assert pid.startswith("project-")
    env.pop("DX_PROJECT_CONTEXT_ID")
    _ok(dx("select", pid, env=env))
    _ok(dx("upload", "--brief", files / "small.txt", env=env))
    assert "small.txt" in _ok(dx("ls", env=env))
    desc = json.loads(_ok(dx("describe", "--json", pid, env=env)))
    assert desc["name"] == "dxnew" and desc["level"] == "ADMINISTER"
    _ok(dx("select", "default", env=env))
    assert ua_server.project_id in _ok(dx("pwd", env=env)) or "default" in _ok(dx("pwd", env=env))


def test_invite_uninvite(ua_server, dx):
    ua_server.new_user("bob")
    pid = ua_server.new_project("shared")
    bob = ua_server.new_token(user="bob")
    bob_env = ua_server.env(token=bob, project=pid)
    assert dx("describe", pid, env=bob_env).returncode != 0  # not a member: not found
    out = _ok(dx("invite", "bob", pid, "UPLOAD", "--no-email"))
    assert "user-bob" in out
    desc = json.loads(_ok(dx("describe", "--json", pid, env=bob_env)))
    assert desc["level"] == "UPLOAD"
    _ok(dx("uninvite", "bob", pid))
    assert dx("describe", pid, env=bob_env).returncode != 0


def test_dx_upload_survives_put_faults(make_server, dx, files, tmp_path):
    """dxpy's own retry loop copes with the storage faults (fresh /upload URL per try)."""
    h = make_server(fault="put-500=0.3,put-baddigest=0.2,put-reset=0.2,put-503=0.2", fault_seed=3)
    fid = _ok(dx("upload", "--brief", files / "big.bin", env=h.env())).strip()
    puts = [r for r in h.requests() if r["route"] == "PUT /upload"]
    assert any(r["fault"] for r in puts)
    assert sorted(r["index"] for r in puts if r["status"] == 200) == [1, 2, 3]
    assert json.loads(_ok(dx("describe", "--json", fid, env=h.env())))["state"] == "closed"
    ok_ = h.api("/admin/faults", {"spec": ""})
    assert ok_[0] == 200
    _ok(dx("download", fid, "-o", tmp_path / "out.bin", env=h.env()))
    assert (tmp_path / "out.bin").read_bytes() == (files / "big.bin").read_bytes()
