"""The server memoises token, member and project rows between requests (Store.authz_cache).
Every change must still take effect on the very next request: revocation and membership
changes by the admin CLI (another process writing the same SQLite file), changes made through
the API itself, and token expiry."""

from __future__ import annotations

import time

from srvutil import call, err_type, ok


def _warm(h, route, body, tok, n=5):
    for _ in range(n):  # several requests in a row: the rows are in the memo now
        st, res = call(h, route, body, tok)
    return st, res


def test_cli_revocation_and_membership_are_immediate(ua_server):
    h = ua_server
    pid = h.new_project("memo-cli")
    h.new_user("memo1")
    h.admin("member", "add", pid, "memo1", "CONTRIBUTE")
    tok = h.new_token(user="memo1")
    assert _warm(h, f"/{pid}/describe", {}, tok)[1]["level"] == "CONTRIBUTE"

    h.admin("member", "add", pid, "memo1", "VIEW")  # level change from another process
    assert ok(h, f"/{pid}/describe", {}, tok)["level"] == "VIEW"
    st, res = call(h, "/file/new", {"project": pid, "name": "x"}, tok)
    assert st == 401 or err_type(res) == "PermissionDenied", (st, res)

    h.admin("member", "remove", pid, "memo1")
    assert call(h, f"/{pid}/describe", {}, tok)[0] == 404

    h.admin("member", "add", pid, "memo1", "UPLOAD")
    assert ok(h, f"/{pid}/describe", {}, tok)["level"] == "UPLOAD"

    h.admin("token", "revoke", tok)
    st, res = call(h, "/system/whoami", {}, tok)
    assert err_type(res) == "InvalidAuthentication" and "revoked" in res["error"]["message"]


def test_api_changes_are_immediate(ua_server):
    h = ua_server
    pid = ok(h, "/project/new", {"name": "memo-api"})["id"]
    h.new_user("memo2")
    tok = h.new_token(user="memo2")
    assert _warm(h, f"/{pid}/describe", {}, tok)[0] == 404  # "not a member" memoised
    ok(h, f"/{pid}/invite", {"invitee": "user-memo2", "level": "UPLOAD"})  # same process
    assert ok(h, f"/{pid}/describe", {}, tok)["level"] == "UPLOAD"
    ok(h, f"/{pid}/decreasePermissions", {"user-memo2": "VIEW"})
    assert ok(h, f"/{pid}/describe", {}, tok)["level"] == "VIEW"
    ok(h, f"/{pid}/update", {"name": "memo-api-renamed"})
    assert ok(h, f"/{pid}/describe", {}, tok)["name"] == "memo-api-renamed"
    ok(h, f"/{pid}/decreasePermissions", {"user-memo2": None})
    assert call(h, f"/{pid}/describe", {}, tok)[0] == 404
    ok(h, f"/{pid}/destroy", {})
    assert call(h, f"/{pid}/describe", {})[0] == 404


def test_expiry_is_immediate(ua_server):
    h = ua_server
    tok = h.new_token(expires="2s")
    deadline = time.monotonic() + 1.5
    st = None
    while time.monotonic() < deadline:  # keep the token row hot until just before expiry
        st, _ = call(h, "/system/whoami", {}, tok)
        assert st == 200
        time.sleep(0.1)
    time.sleep(1.0)
    st, res = call(h, "/system/whoami", {}, tok)
    assert err_type(res) == "InvalidAuthentication" and "expired" in res["error"]["message"]
