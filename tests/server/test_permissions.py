"""Levels, scoped tokens, revocation, expiry, sharing and transfer (seed FAQ provider flow)."""

from __future__ import annotations

import json
import time

from srvutil import call, err_type, new_file, ok, upload


def _ok(p):
    assert p.returncode == 0, f"rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_provider_flow_upload_token(ua_server, dx, tmp_path):
    h = ua_server
    # customer (admin) creates a project and an UPLOAD token scoped to it, with an expiry
    pid = h.new_project("from-sequencer")
    tok = h.new_token(project=pid, level="UPLOAD", expires="7d")
    assert len(tok) >= 32
    assert tok not in h.admin("token", "list")  # only hashes are stored / shown

    env = h.env(token=tok, project=pid)
    src = tmp_path / "reads.fastq"
    src.write_bytes(b"@r1\nACGT\n+\nIIII\n" * 1000)
    fid = _ok(dx("upload", "--brief", src, env=env)).strip()
    assert json.loads(_ok(dx("describe", "--json", fid, env=env)))["state"] == "closed"
    assert ok(h, f"/{pid}/describe", {}, tok)["level"] == "UPLOAD"

    # any other project is invisible to this token
    st, res = call(h, f"/{h.project_id}/describe", {}, tok)
    assert st == 404 and err_type(res) == "ResourceNotFound"
    st, res = call(h, "/file/new", {"project": h.project_id, "name": "x"}, tok)
    assert st == 404 and err_type(res) == "ResourceNotFound"
    other_file = upload(h, [b"secret"], name="secret.txt")
    st, res = call(h, f"/{other_file}/describe", {}, tok)
    assert st == 404 and err_type(res) == "ResourceNotFound"
    assert ok(h, "/system/findProjects", {"level": "VIEW"}, tok)["results"] == [
        {"id": pid, "level": "UPLOAD", "public": False, "permissionSources": ["user-admin"]}]
    # UPLOAD is below CONTRIBUTE: cannot delete
    st, res = call(h, f"/{pid}/removeObjects", {"objects": [fid]}, tok)
    assert st == 401 and err_type(res) == "PermissionDenied"
    assert "CONTRIBUTE" in res["error"]["message"]
    # a scoped token cannot create projects
    st, res = call(h, "/project/new", {"name": "nope"}, tok)
    assert err_type(res) == "PermissionDenied"

    # revoke: every call is InvalidAuthentication
    h.admin("token", "revoke", tok)
    for route, body in [("/system/whoami", {}), (f"/{pid}/describe", {}),
                        ("/file/new", {"project": pid})]:
        st, res = call(h, route, body, tok)
        assert st == 401 and err_type(res) == "InvalidAuthentication", (route, res)
    assert "revoked" in h.admin("token", "list")
    p = dx("ls", env=env)
    assert p.returncode != 0 and "InvalidAuthentication" in p.stderr
    assert tok not in p.stderr


def test_view_token_cannot_upload(ua_server):
    h = ua_server
    pid = h.new_project("viewonly")
    fid = upload(h, [b"data"], project=pid)
    view = h.new_token(project=pid, level="VIEW")
    assert ok(h, f"/{fid}/describe", {}, view)["state"] == "closed"
    st, res = call(h, "/file/new", {"project": pid, "name": "x"}, view)
    assert st == 401 and err_type(res) == "PermissionDenied"
    assert "UPLOAD access required" in res["error"]["message"]
    open_fid = new_file(h, pid, "open.bin")
    st, res = call(h, f"/{open_fid}/upload", {"index": 1, "size": 1, "md5": "0" * 32}, view)
    assert st == 401 and err_type(res) == "PermissionDenied"
    st, res = call(h, f"/{open_fid}/close", {}, view)
    assert err_type(res) == "PermissionDenied"
    st, res = call(h, f"/{pid}/newFolder", {"folder": "/x"}, view)
    assert err_type(res) == "PermissionDenied"
    assert ok(h, f"/{fid}/download", {}, view)["url"].startswith("http://127.0.0.1")


def test_expired_token(ua_server):
    h = ua_server
    tok = h.new_token(expires="3s")
    assert ok(h, "/system/whoami", {}, tok)["id"] == "user-admin"
    time.sleep(3.2)
    st, res = call(h, "/system/whoami", {}, tok)
    assert st == 401 and err_type(res) == "InvalidAuthentication"
    assert "expired" in res["error"]["message"]
    assert "expired" in h.admin("token", "list")


def test_bad_and_missing_auth(ua_server):
    h = ua_server
    st, res = call(h, "/system/whoami", {}, "not-a-token")
    assert st == 401 and err_type(res) == "InvalidAuthentication"
    assert "not-a-token" not in json.dumps(res)
    import urllib.request
    req = urllib.request.Request(h.url + "/system/whoami", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req)
        raise AssertionError("expected 401")
    except urllib.error.HTTPError as e:
        assert e.code == 401
        assert json.loads(e.read())["error"]["type"] == "InvalidAuthentication"


def test_user_token_acts_with_own_access_and_sharing(ua_server):
    h = ua_server
    carol = h.new_user("carol")
    assert carol == "user-carol"
    ctok = h.new_token(user="carol")
    pid = h.new_project("team")
    st, res = call(h, f"/{pid}/describe", {}, ctok)
    assert st == 404
    ok(h, f"/{pid}/invite", {"invitee": "user-carol", "level": "CONTRIBUTE"})
    assert ok(h, f"/{pid}/describe", {}, ctok)["level"] == "CONTRIBUTE"
    # a token scoped to ADMINISTER is still capped by carol's own CONTRIBUTE
    scoped = h.new_token(user="carol", project=pid, level="ADMINISTER")
    assert ok(h, f"/{pid}/describe", {}, scoped)["level"] == "CONTRIBUTE"
    st, res = call(h, f"/{pid}/invite", {"invitee": "user-admin", "level": "VIEW"}, ctok)
    assert err_type(res) == "PermissionDenied"
    fid = upload(h, [b"x"], project=pid, token=ctok)
    ok(h, f"/{pid}/removeObjects", {"objects": [fid]}, ctok)
    # carol may drop herself; then the project is gone for her
    ok(h, f"/{pid}/decreasePermissions", {"user-carol": "VIEW"}, ctok)
    assert ok(h, f"/{pid}/describe", {}, ctok)["level"] == "VIEW"
    ok(h, f"/{pid}/decreasePermissions", {"user-carol": None})
    assert call(h, f"/{pid}/describe", {}, ctok)[0] == 404
    # the last ADMINISTER cannot be removed
    st, res = call(h, f"/{pid}/decreasePermissions", {"user-admin": None})
    assert err_type(res) == "InvalidInput"
    # invitee must exist
    st, res = call(h, f"/{pid}/invite", {"invitee": "user-nobody", "level": "VIEW"})
    assert st == 404


def test_transfer_and_accept(ua_server):
    h = ua_server
    h.new_user("dave")
    dtok = h.new_token(user="dave")
    pid = h.new_project("for-dave")
    upload(h, [b"results"], project=pid, name="results.txt")
    ok(h, f"/{pid}/transfer", {"invitee": "user-dave"})
    assert ok(h, f"/{pid}/describe", {})["pendingTransfer"] == "user-dave"
    assert call(h, f"/{pid}/describe", {}, dtok)[0] == 404  # not visible before acceptance
    # only the recipient can accept
    other = h.new_token()
    st, res = call(h, f"/{pid}/acceptTransfer", {}, other)
    assert st == 404
    ok(h, f"/{pid}/acceptTransfer", {}, dtok)
    d = ok(h, f"/{pid}/describe", {}, dtok)
    assert d["level"] == "ADMINISTER" and d["billTo"] == "user-dave"
    assert d["pendingTransfer"] is None
    # dave, now ADMINISTER, can remove the sender
    ok(h, f"/{pid}/decreasePermissions", {"user-admin": None}, dtok)
    assert call(h, f"/{pid}/describe", {})[0] == 404
    found = ok(h, "/system/findDataObjects", {"scope": {"project": pid}, "describe": True}, dtok)
    assert [r["describe"]["name"] for r in found["results"]] == ["results.txt"]


def test_admin_faults_route_requires_admin(ua_server):
    h = ua_server
    h.new_user("eve")
    etok = h.new_token(user="eve")
    st, res = call(h, "/admin/faults", {"spec": "api-500=1"}, etok)
    assert st == 401 and err_type(res) == "PermissionDenied"
    st, res = call(h, "/admin/faults", {"spec": "bogus=1"})
    assert err_type(res) == "InvalidInput"
    assert ok(h, "/system/whoami", {}, etok)["id"] == "user-eve"
