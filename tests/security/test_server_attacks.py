"""Hostile input to ua-server: every request below gets its documented error and changes
NOTHING — the SQLite rows of every table and the blob tree are compared before and after each
request (faultkit.state_snapshot). Complements tests/server/test_hostile.py (status codes) and
test_permissions.py (levels) with the no-state-change proof, cross-user / cross-project
attacks, signed-URL replay and swapping, header injection, SQL/LIKE/glob metacharacters.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse

import pytest
from faultkit import download, state_snapshot

MiB = 1024 * 1024


def _raw(url, method="GET", body=None, headers=None, timeout=30):
    import http.client

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, u.path + ("?" + u.query if u.query else ""), body=body,
                     headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), r.getheaders()
    finally:
        conn.close()


def post(h, route, body, token=None, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hd = {"Authorization": f"Bearer {token or h.admin_token}", "Content-Type": "application/json"}
    hd.update(headers or {})
    st, hdrs, raw, _ = _raw(h.url + route, "POST", data, hd)
    try:
        res = json.loads(raw)
    except ValueError:
        res = raw
    return st, res, hdrs


def etype(res):
    return res.get("error", {}).get("type") if isinstance(res, dict) else None


def md5hex(b):
    import hashlib

    return hashlib.md5(b).hexdigest()


def ok(h, route, body=None, token=None):
    st, res, _ = post(h, route, body or {}, token)
    assert st == 200, (route, st, res)
    return res


def upload_closed(h, parts, name="f.bin", project=None, folder="/", token=None):
    fid = ok(h, "/file/new", {"project": project or h.project_id, "name": name,
                              "folder": folder, "parents": True}, token)["id"]
    for i, data in enumerate(parts, 1):
        info = ok(h, f"/{fid}/upload", {"index": i, "size": len(data), "md5": md5hex(data)}, token)
        st, _, body, _ = _raw(info["url"], "PUT", data, {"content-md5": info["headers"]["content-md5"]})
        assert st == 200, body
    ok(h, f"/{fid}/close", {}, token)
    deadline = time.monotonic() + 10
    while ok(h, f"/{fid}/describe", {}, token)["state"] != "closed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return fid


@pytest.fixture(scope="module")
def world(ua_server):
    """Two users with a project each, a scoped token per project, files in both."""
    h = ua_server
    h.new_user("mallory")
    mallory = h.new_token(user="mallory")
    p_a = h.project_id  # admin's
    p_b = h.new_project("b-project")  # admin's too, for the scoped-token case
    tok_a_contrib = h.new_token(project=p_a, level="CONTRIBUTE")
    p_m = h.new_project("mallory-project", user="mallory")
    closed = upload_closed(h, [b"secret closed bytes"], name="secret.txt", project=p_b,
                           folder="/vault")
    open_fid = ok(h, "/file/new", {"project": p_b, "name": "open.bin"})["id"]
    info = ok(h, f"/{open_fid}/upload", {"index": 1, "size": 3, "md5": md5hex(b"abc")})
    _raw(info["url"], "PUT", b"abc", {"content-md5": info["headers"]["content-md5"]})
    return dict(h=h, mallory=mallory, p_a=p_a, p_b=p_b, p_m=p_m, tok_a=tok_a_contrib,
                closed=closed, open=open_fid)


def assert_unchanged(h, fn):
    before = state_snapshot(h)
    out = fn()
    after = state_snapshot(h)
    diff = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not diff, f"state changed in {sorted(diff)}"
    return out


# ----------------------------------------------------------------------------- bodies
def _bodies(pid):
    long = "n" * 5000
    return [
        # (route, body, status, error type)
        ("/file/new", b'{"project": "%s", "name": "x"' % pid.encode(), 400, "MalformedJSON"),
        ("/file/new", b'{"project": "%s", "name": "x"} trailing' % pid.encode(), 400, "MalformedJSON"),
        ("/file/new", b'"just a string"', 422, "InvalidInput"),
        ("/file/new", b"null", 422, "InvalidInput"),
        ("/file/new", {"project": [pid], "name": "x"}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": {"$gt": ""}}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": long}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "ok", "folder": "/" + "/".join(["d"] * 3000)},
         422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x", "folder": "/../../etc"}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x", "folder": "/a/./b"}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x", "folder": "\\..\\..", "parents": True},
         422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x\x00.txt"}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x", "properties": {"k\x00": "v"}}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x", "properties": {"k": "v" * 70000}}, 422,
         "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x", "tags": ["ok", ""]}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x", "hidden": 1}, 422, "InvalidInput"),
        ("/file/new", {"project": pid, "name": "x", "nonce": "n" * 200}, 422, "InvalidInput"),
        ("/file/new", {"project": "project-" + "'; DROP TABLE files;--"}, 404, "ResourceNotFound"),
        ("/file/new", {"project": "container-xxxx", "name": "x"}, 404, "ResourceNotFound"),
        (f"/{pid}/newFolder", {"folder": "/a/../../b", "parents": True}, 422, "InvalidInput"),
        (f"/{pid}/newFolder", {"folder": "/x\x00y"}, 422, "InvalidInput"),
        (f"/{pid}/removeFolder", {"folder": "/", "recurse": True}, 422, "InvalidInput"),
        (f"/{pid}/removeFolder", {"folder": "/%", "recurse": True}, 404, "ResourceNotFound"),
        (f"/{pid}/removeObjects", {"objects": ["file-" + "%" * 24]}, 404, "ResourceNotFound"),
        (f"/{pid}/removeObjects", {"objects": "file-x"}, 422, "InvalidInput"),
        (f"/{pid}/update", {"name": 7}, 422, "InvalidInput"),
        (f"/{pid}/invite", {"invitee": "user-nobody", "level": "VIEW"}, 404, "ResourceNotFound"),
        (f"/{pid}/invite", {"invitee": "user-admin", "level": "GOD"}, 422, "InvalidInput"),
        (f"/{pid}/decreasePermissions", {"user-admin": None}, 422, "InvalidInput"),
        ("/system/findDataObjects", {"limit": 10 ** 400}, 200, None),  # capped, not an error
        ("/system/findDataObjects", {"limit": 1.5}, 422, "InvalidInput"),
        ("/system/findDataObjects", {"name": {"regexp": "(unclosed"}}, 422, "InvalidInput"),
        ("/system/findDataObjects", {"name": {"glob": 5}}, 422, "InvalidInput"),
        ("/system/findDataObjects", {"properties": {"k": 5}}, 422, "InvalidInput"),
        ("/system/findDataObjects", {"scope": {"project": pid, "folder": "/../"}}, 422,
         "InvalidInput"),
        ("/system/resolveDataObjects", {"objects": [{"name": "x"}] * 1001, "project": pid},
         422, "InvalidInput"),
        ("/admin/faults", {"spec": "put-500=2"}, 422, "InvalidInput"),
        ("/admin/faults", {"spec": ["put-500=1"]}, 422, "InvalidInput"),
        ("/project/new", {"name": "p", "billTo": "user-mallory"}, 401, "PermissionDenied"),
    ]


def test_hostile_bodies_get_documented_errors_and_change_nothing(world):
    h = world["h"]
    wrong = []
    for route, body, status, typ in _bodies(world["p_b"]):
        st, res, hdrs = assert_unchanged(h, lambda: post(h, route, body))
        if not (st == status and etype(res) == typ):
            wrong.append((route, str(body)[:80], st, res))
        assert hdrs["content-type"].startswith("application/json"), route
    assert not wrong, "\n".join(map(str, wrong))


def test_huge_bodies_rejected_without_state_change(world):
    h = world["h"]
    pid = world["p_b"]
    big = json.dumps({"project": pid, "name": "big", "details": {"x": "a" * (11 * MiB)}}).encode()
    st, res, _ = assert_unchanged(h, lambda: post(h, "/file/new", big))
    assert st == 413 and etype(res) == "InvalidInput"
    # a Content-Length that lies about a huge body is refused before reading it
    st, _, raw, _ = assert_unchanged(h, lambda: _raw(
        h.url + "/file/new", "POST", b"{}", {"Authorization": f"Bearer {h.admin_token}",
                                             "Content-Type": "application/json",
                                             "Content-Length": str(10 ** 12)}, timeout=10))
    assert st in (400, 413), raw
    # PUT bodies are bounded by the signed size
    fid = world["open"]
    info = ok(h, f"/{fid}/upload", {"index": 2, "size": 10, "md5": md5hex(b"0123456789")})
    before = state_snapshot(h)
    st, _, raw, _ = _raw(info["url"], "PUT", b"x" * (3 * MiB), {})
    assert st == 400 and b"IncompleteBody" in raw
    after = state_snapshot(h)
    assert before == after


def test_header_and_request_line_abuse(world):
    h = world["h"]
    cases = [
        {"Authorization": "Bearer " + "A" * 7000},  # long token: just not found
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer"},
        {"Authorization": f"bearer  {h.admin_token}x"},
    ]
    for hd in cases:
        st, res, _ = assert_unchanged(h, lambda: post(h, "/file/new", {"project": world["p_b"], "name": "z"},
                                                      headers=hd))
        assert st == 401 and etype(res) == "InvalidAuthentication", (hd, res)
    # routes that are not API methods
    for route in ("/file-xxxx/../../admin/faults", "/%2e%2e/%2e%2e", "/system/whoami/extra",
                  "/admin/shutdown", "/file/new%00"):
        st, res, _ = assert_unchanged(h, lambda: post(h, route, {"spec": ""}))
        assert st in (404, 405) or etype(res) == "ResourceNotFound", (route, st, res)


def test_deeply_nested_json_is_a_client_error(world):
    """A body nested 100,000 levels deep makes json.loads raise RecursionError, which is not a
    ValueError: the server answered 500 InternalError (which every client retries) instead of
    the documented 400 MalformedJSON (fixed in 93ca5df)."""
    h = world["h"]
    for body in (b"[" * 100_000, b'{"project": "x", "details": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        st, res, _ = assert_unchanged(h, lambda: post(h, "/file/new", body))
        assert st == 400 and etype(res) == "MalformedJSON", (st, res)


def test_non_standard_json_constants_rejected(world):
    """``NaN``/``Infinity`` are not JSON (RFC 8259). Accepting them stores values the server
    later returns as bare ``NaN``, which strict JSON parsers (browsers, jq, Go) reject."""
    h = world["h"]
    for lit in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"project": "%s", "name": "c", "details": {"x": %s}}' % (world["p_b"].encode(), lit)
        st, res, _ = assert_unchanged(h, lambda: post(h, "/file/new", body))
        assert st == 400 and etype(res) == "MalformedJSON", (lit, st, res)


# ----------------------------------------------------------------------------- names
def test_traversal_and_metacharacter_names_stay_names(world):
    """Names are data: '../', CRLF, quotes, SQL and glob metacharacters are stored verbatim,
    the blob lands under blobs/<file-id>/ and nothing is created outside the data dir."""
    h = world["h"]
    pid = world["p_m"] if False else world["p_b"]
    names = ["../../../../etc/passwd", "..", ".", "a/../../b", "x'); DROP TABLE files;--",
             "%", "_", "*", "[!a]", "name\r\nSet-Cookie: owned=1", "\u202etxt.exe", "a" * 4096]
    outside_before = state_snapshot(h)["#outside"]
    for name in names:
        fid = upload_closed(h, [name.encode()[:64] or b"."], name=name, project=pid,
                            folder="/names")
        d = ok(h, f"/{fid}/describe")
        assert d["name"] == name
        assert (h.data_dir / "blobs" / fid).is_dir()
        assert download(h, fid) == name.encode()[:64]
    assert state_snapshot(h)["#outside"] == outside_before
    listed = ok(h, "/system/findDataObjects", {"scope": {"project": pid, "folder": "/names"},
                                                "describe": {"fields": {"name": True}}})
    assert sorted(r["describe"]["name"] for r in listed["results"]) == sorted(names)
    # glob/SQL metacharacters in queries match literally where they should
    for pattern, expect in [("%", ["%"]), ("_", ["_"]), ("[%]", ["%"]),
                            ("x'); DROP TABLE files;--", ["x'); DROP TABLE files;--"])]:
        got = ok(h, "/system/findDataObjects", {"scope": {"project": pid, "folder": "/names"},
                                                 "name": {"glob": pattern},
                                                 "describe": {"fields": {"name": True}}})
        assert [r["describe"]["name"] for r in got["results"]] == expect, pattern
    got = ok(h, "/system/findDataObjects", {"scope": {"project": pid, "folder": "/names"},
                                             "name": "%"})
    assert len(got["results"]) == 1
    assert ok(h, "/system/whoami")["id"] == "user-admin"  # tables still there


def test_like_metacharacters_in_folders_do_not_widen_deletes(world):
    h = world["h"]
    pid = world["p_b"]
    keep = upload_closed(h, [b"keep"], name="k", project=pid, folder="/likeab/sub")
    keep2 = upload_closed(h, [b"keep2"], name="k", project=pid, folder="/like%/x")
    gone = upload_closed(h, [b"gone"], name="g", project=pid, folder="/like_/sub")
    ok(h, f"/{pid}/removeFolder", {"folder": "/like_", "recurse": True})
    found = {r["id"] for r in ok(h, "/system/findDataObjects", {"scope": {"project": pid}})["results"]}
    assert keep in found and keep2 in found and gone not in found
    st, res, _ = assert_unchanged(h, lambda: post(h, f"/{pid}/removeFolder",
                                                  {"folder": "/like%", "recurse": False}))
    assert st == 422 and etype(res) == "InvalidState"
    got = ok(h, "/system/findDataObjects", {"scope": {"project": pid, "folder": "/lik%"}})
    assert got["results"] == []


def test_crlf_in_names_and_properties_never_reaches_headers(world):
    h = world["h"]
    evil = "f\r\nSet-Cookie: owned=1\r\nX-Injected: 1"
    fid = upload_closed(h, [b"hdr"], name=evil, project=world["p_b"], folder="/hdr")
    ok(h, f"/{fid}/setProperties", {"properties": {"k\r\nX-Injected": "v\r\nX-Injected: 2"}})
    responses = []
    for route, body in [(f"/{fid}/describe", {"properties": True}), (f"/{fid}/download", {}),
                        ("/file/new", {"project": world["p_b"], "name": "n", "folder": "/x\r\nX-Injected: 3"}),
                        (f"/{world['p_b']}/listFolder", {"folder": "/hdr"})]:
        st, res, hdrs = post(h, route, body)
        responses.append((st, hdrs))
        if route.endswith("/download"):
            st2, hdrs2, _, raw_headers = _raw(res["url"])
            responses.append((st2, hdrs2))
    for st, hdrs in responses:
        assert "x-injected" not in hdrs and "set-cookie" not in hdrs, hdrs
        for v in hdrs.values():
            assert "\r" not in v and "\n" not in v


def test_pathological_regexp_does_not_freeze_the_server(world):
    h = world["h"]
    pid = world["p_b"]
    upload_closed(h, [b"r"], name="a" * 26 + "!", project=pid, folder="/redos")
    t = threading.Thread(target=post, args=(h, "/system/findDataObjects",
                                            {"scope": {"project": pid, "folder": "/redos"},
                                             "name": {"regexp": "^(a+)+$"}}), daemon=True)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    ok(h, "/system/whoami")
    took = time.monotonic() - t0
    t.join(60)
    assert took < 1.0, f"whoami took {took:.1f} s while one regexp search ran"


def test_expensive_regexp_is_refused_with_422_and_server_stays_responsive(world):
    """A pattern that backtracks exponentially even in mrab-regex is cut off by the per-request
    budget and answered InvalidInput 'regexp too expensive'; other requests are not held up."""
    h = world["h"]
    pid = world["p_b"]
    upload_closed(h, [b"r"], name="a" * 60 + "!", project=pid, folder="/redos2")
    ok(h, "/project/new", {"name": "a" * 60 + "!"})
    for route, body in (("/system/findDataObjects",
                         {"scope": {"project": pid, "folder": "/redos2"},
                          "name": {"regexp": "^(a|aa)+$"}}),
                        ("/system/findProjects", {"name": {"regexp": "^(a|aa)+$"}})):
        t0 = time.monotonic()
        st, res, _ = post(h, route, body)
        assert time.monotonic() - t0 < 2.0
        assert st == 422 and etype(res) == "InvalidInput", (st, res)
        assert "regexp too expensive" in res["error"]["message"]
    # DNAnexus semantics kept: search (not fullmatch) and the "i" flag
    found = ok(h, "/system/findDataObjects", {"scope": {"project": pid, "folder": "/redos2"},
                                               "name": {"regexp": "A{10}!$", "flags": "i"}})
    assert len(found["results"]) == 1
    found = ok(h, "/system/findDataObjects", {"scope": {"project": pid, "folder": "/redos2"},
                                               "name": {"regexp": "A{10}!$"}})
    assert found["results"] == []


# ----------------------------------------------------------------------------- other users
def _attacks(w, token):
    """Every route an attacker could aim at objects of project p_b."""
    closed, open_, p_b = w["closed"], w["open"], w["p_b"]
    return [
        (f"/{closed}/describe", {}),
        (f"/{closed}/describe", {"project": w["p_m"]}),
        (f"/{closed}/download", {}),
        (f"/{closed}/download", {"project": p_b}),
        (f"/{open_}/upload", {"index": 1, "size": 3, "md5": md5hex(b"xyz")}),
        (f"/{open_}/close", {}),
        (f"/{closed}/setProperties", {"properties": {"owned": "1"}}),
        (f"/{closed}/addTags", {"tags": ["owned"]}),
        (f"/{closed}/rename", {"name": "owned"}),
        (f"/{open_}/setVisibility", {"hidden": True}),
        (f"/{open_}/setDetails", {"details": {"owned": 1}}),
        (f"/{closed}/getDetails", {}),
        (f"/{closed}/listProjects", {}),
        (f"/{p_b}/describe", {}),
        (f"/{p_b}/listFolder", {"folder": "/vault"}),
        (f"/{p_b}/newFolder", {"folder": "/owned"}),
        (f"/{p_b}/removeObjects", {"objects": [closed]}),
        (f"/{p_b}/removeFolder", {"folder": "/vault", "recurse": True}),
        (f"/{p_b}/update", {"name": "owned"}),
        (f"/{p_b}/invite", {"invitee": "user-mallory", "level": "ADMINISTER"}),
        (f"/{p_b}/decreasePermissions", {"user-admin": None}),
        (f"/{p_b}/destroy", {}),
        (f"/{p_b}/transfer", {"invitee": "user-mallory"}),
        (f"/{p_b}/acceptTransfer", {}),
        ("/file/new", {"project": p_b, "name": "owned"}),
        ("/system/findDataObjects", {"scope": {"project": p_b}}),
    ]


@pytest.mark.parametrize("who", ["other-user", "token-for-project-A"])
def test_objects_of_others_are_invisible_and_untouchable(world, who):
    h = world["h"]
    token = world["mallory"] if who == "other-user" else world["tok_a"]
    for route, body in _attacks(world, token):
        st, res, _ = assert_unchanged(h, lambda: post(h, route, body, token))
        assert st == 404 and etype(res) == "ResourceNotFound", (who, route, st, res)
        assert world["closed"] not in json.dumps(res) or route.startswith(f"/{world['closed']}")
    # search routes answer, but with nothing of p_b
    for route, body in [("/system/findDataObjects", {}),
                        ("/system/findDataObjects", {"project": world["p_b"]}),
                        ("/system/findProjects", {}),
                        ("/system/resolveDataObjects", {"project": world["p_b"],
                                                        "objects": [{"name": "secret.txt", "folder": "/vault"}]}),
                        ("/system/describeDataObjects", {"objects": [world["closed"], world["open"]]})]:
        st, res, _ = assert_unchanged(h, lambda: post(h, route, body, token))
        assert st == 200, (route, res)
        text = json.dumps(res)
        assert world["closed"] not in text.replace(f"The entity {world['closed']} could not be found", "")
        assert world["p_b"] not in text.replace(f"The entity {world['p_b']} could not be found", "") \
            or route == "/system/resolveDataObjects"
        assert "secret" not in text and "vault" not in text
    assert download(h, world["closed"]) == b"secret closed bytes"


# ----------------------------------------------------------------------------- signed URLs
def _put(info, data):
    st, _, body, _ = _raw(info["url"], "PUT", data, {"content-md5": info["headers"]["content-md5"]})
    return st, body


def test_signed_url_replay_and_swapping(world):
    h = world["h"]
    pid = world["p_b"]
    a = ok(h, "/file/new", {"project": pid, "name": "a.bin"})["id"]
    b = ok(h, "/file/new", {"project": pid, "name": "b.bin"})["id"]
    ia = ok(h, f"/{a}/upload", {"index": 1, "size": 4, "md5": md5hex(b"AAAA")})
    ib = ok(h, f"/{b}/upload", {"index": 1, "size": 4, "md5": md5hex(b"BBBB")})
    assert _put(ia, b"AAAA")[0] == 200 and _put(ib, b"BBBB")[0] == 200

    def unchanged_put(url, data, want):
        st, _, body, _ = assert_unchanged(h, lambda: _raw(url, "PUT", data))
        assert st in want, (url.split("?")[0], st, body)
        assert b"sig=" not in body and ia["url"].split("sig=")[1].encode() not in body

    # replay with other bytes: the md5 is signed
    unchanged_put(ia["url"], b"EVIL", (400,))
    # A's URL on B's path, or on another index
    swapped = ia["url"].replace(f"/upload/{a}/1", f"/upload/{b}/1")
    unchanged_put(swapped, b"AAAA", (403,))
    unchanged_put(ia["url"].replace(f"/upload/{a}/1", f"/upload/{a}/2"), b"AAAA", (403,))
    # size/md5/expiry edited
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ia["url"]).query))
    for k, v in (("size", "5"), ("md5", md5hex(b"EVIL")), ("expires", str(int(q["expires"]) + 10 ** 6)),
                 ("sig", q["sig"].upper()), ("sig", q["sig"][:-1])):
        edited = ia["url"].replace(f"{k}={q[k]}", f"{k}={v}", 1)
        unchanged_put(edited, b"AAAA", (403,))
    # close A; then replaying its upload URL (even with the same bytes) cannot touch it
    ok(h, f"/{a}/close")
    time.sleep(0.1)
    unchanged_put(ia["url"], b"AAAA", (409,))
    unchanged_put(ia["url"], b"EVIL", (409,))
    assert download(h, a) == b"AAAA"
    # download URLs: A's signature on B's path
    da = ok(h, f"/{a}/download", {})
    st, _, body, _ = _raw(da["url"].replace(f"/download/{a}", f"/download/{b}"))
    assert st == 403 and b"BBBB" not in body
    st, _, body, _ = _raw(da["url"].replace("sig=", "sig=0"))
    assert st == 403
    # an upload URL is not a download URL and vice versa
    st, _, body, _ = _raw(ib["url"].replace("/upload/", "/download/").split("/1?")[0] + "?" +
                          urllib.parse.urlsplit(ib["url"]).query)
    assert st == 403 and b"BBBB" not in body
    st, _, body, _ = assert_unchanged(h, lambda: _raw(
        da["url"].replace(f"/download/{a}", f"/upload/{b}/1"), "PUT", b"BBBB"))
    assert st in (400, 403)
    # the file is removed: its old download URL yields nothing
    ok(h, f"/{pid}/removeObjects", {"objects": [a]})
    st, _, body, _ = _raw(da["url"])
    assert st == 404 and b"AAAA" not in body
