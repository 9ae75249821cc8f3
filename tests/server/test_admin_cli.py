"""ua-server admin commands, run while the server is serving the same data dir."""

from __future__ import annotations

import subprocess
import sys

from srvutil import call, err_type, new_file, ok, put_part, upload


def test_admin_commands(ua_server):
    h = ua_server
    pid = h.new_project("ops")
    assert pid.startswith("project-") and len(pid) == 32
    assert h.new_user("Frank") == "user-frank"
    assert h.admin_run("user", "new", "frank").returncode != 0  # exists
    assert h.admin_run("user", "new", "bad handle!").returncode != 0
    assert "user-frank" in h.admin("user", "list")
    tok = h.new_token(user="frank", project="ops", level="CONTRIBUTE", expires="2h")
    assert ok(h, "/system/whoami", {}, tok)["id"] == "user-frank"
    assert call(h, f"/{pid}/describe", {}, tok)[0] == 404  # frank is no member yet
    h.admin("member", "add", "ops", "frank", "UPLOAD")
    assert ok(h, f"/{pid}/describe", {}, tok)["level"] == "UPLOAD"  # min(UPLOAD, CONTRIBUTE)
    assert "user-frank\tUPLOAD" in h.admin("member", "list", pid)
    assert "user-frank:UPLOAD" in h.admin("project", "list")

    fid = upload(h, [b"done"], project=pid, name="closed.txt", token=tok)
    open_fid = new_file(h, pid, "partial.bin", token=tok)
    assert put_part(h, open_fid, 1, b"abc", tok)[0] == 200
    out = h.admin("files", "ops")
    assert f"{fid}\tclosed\t4\t1/1 parts\t/closed.txt" in out
    assert f"{open_fid}\topen\t3\t1/1 parts\t/partial.bin" in out

    listing = h.admin("token", "list")
    assert tok not in listing
    line = next(l for l in listing.splitlines() if "user-frank" in l)
    tid = line.split("\t")[0]
    assert tid.startswith("token-") and f"{pid}:CONTRIBUTE" in line and "active" in line
    assert "revoked" in h.admin("token", "revoke", tid)  # by ID
    st, res = call(h, "/system/whoami", {}, tok)
    assert err_type(res) == "InvalidAuthentication"
    h.admin("member", "remove", pid, "frank")
    assert "user-frank" not in h.admin("member", "list", pid)
    h.admin("invite", pid, "frank", "VIEW")
    assert "user-frank\tVIEW" in h.admin("member", "list", pid)

    assert h.admin_run("token", "new", "--level", "VIEW").returncode == 2
    assert h.admin_run("token", "new", "--project", "nope", "--level", "VIEW").returncode == 1
    assert h.admin_run("token", "new", "--expires", "soon").returncode == 2
    assert h.admin_run("token", "revoke", "no-such-token").returncode == 1


def test_second_server_on_same_dir_refused(ua_server):
    p = subprocess.run([sys.executable, "-m", "ua.server.cli", "serve", "--data-dir",
                        str(ua_server.data_dir), "--port", "0"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "already serving" in p.stderr
    assert ok(ua_server, "/system/whoami")["id"] == "user-admin"


def test_admin_on_missing_dir(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ua.server.cli", "token", "list", "--data-dir",
                        str(tmp_path / "none")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "not a ua-server data dir" in p.stderr


def test_purge_open_removes_only_abandoned_open_files(ua_server):
    import time

    h = ua_server
    pid = h.new_project("landing")
    old_open = new_file(h, pid, "abandoned.bin")
    assert put_part(h, old_open, 1, b"stale bytes")[0] == 200
    old_closed = upload(h, [b"finished"], project=pid, name="done.txt")
    other = h.new_project("elsewhere")
    other_open = new_file(h, other, "other.bin")
    time.sleep(2.2)
    fresh_open = new_file(h, pid, "in-progress.bin")
    assert (h.data_dir / "blobs" / old_open).is_dir()

    dry = h.admin_run("purge-open", "--older-than", "2s", "--project", "landing", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [line.split("\t")[0] for line in dry.stdout.splitlines()] == [old_open]
    assert "would remove 1 open file(s), 11 bytes" in dry.stderr
    assert ok(h, f"/{old_open}/describe")["state"] == "open"  # nothing removed

    out = h.admin_run("purge-open", "--older-than", "2s", "--project", "landing")
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith(f"{old_open}\t{pid}\t") and line.endswith("\t11\t1 parts\t/abandoned.bin")
    assert err_type(call(h, f"/{old_open}/describe")[1]) == "ResourceNotFound"
    assert not (h.data_dir / "blobs" / old_open).exists()
    assert ok(h, f"/{fresh_open}/describe")["state"] == "open"   # too young
    assert ok(h, f"/{old_closed}/describe")["state"] == "closed"  # not open
    assert ok(h, f"/{other_open}/describe")["state"] == "open"    # other project

    assert h.admin_run("purge-open", "--older-than", "soon").returncode == 2
    assert h.admin_run("purge-open", "--older-than", "0").returncode == 2
    assert h.admin_run("purge-open", "--older-than", "1d", "--project", "nope").returncode == 1
