"""Hostile or malformed input, response framing, request log contents and secrecy."""

from __future__ import annotations

import json
import os
import stat
import urllib.parse

from srvutil import call, err_type, md5hex, new_file, ok, put_part, raw, upload


def _post(h, route, body: bytes, headers=None, token=None):
    hd = {"Authorization": f"Bearer {token or h.admin_token}", "Content-Type": "application/json"}
    hd.update(headers or {})
    return raw(h.url + route, "POST", body, hd)


def test_malformed_bodies(ua_server):
    h = ua_server
    st, hd, body = _post(h, "/system/whoami", b"{not json")
    assert st == 400 and json.loads(body)["error"]["type"] == "MalformedJSON"
    assert hd["content-type"].startswith("application/json")
    st, _, body = _post(h, "/system/whoami", b"[1, 2]")
    assert st == 422 and json.loads(body)["error"]["type"] == "InvalidInput"
    st, _, body = _post(h, "/system/whoami", b"{}", {"Content-Type": "text/html"})
    assert st == 400 and json.loads(body)["error"]["type"] == "MalformedJSON"
    st, _, body = _post(h, "/system/whoami", b"\xff\xfe")
    assert st == 400
    st, _, body = _post(h, "/system/whoami", b"")  # empty body counts as {}
    assert st == 200 and json.loads(body) == {"id": "user-admin"}
    big = b'{"x": "' + b"a" * (11 * 1024 * 1024) + b'"}'
    st, _, body = _post(h, "/system/whoami", big)
    assert st == 413 and json.loads(body)["error"]["type"] == "InvalidInput"


def test_wrong_types_and_bad_paths(ua_server):
    h = ua_server
    pid = h.project_id
    cases = [
        ("/file/new", {"project": pid, "name": 5}),
        ("/file/new", {"project": pid, "name": "a\x00b"}),
        ("/file/new", {"project": pid, "name": ""}),
        ("/file/new", {"project": pid, "folder": "relative/dir"}),
        ("/file/new", {"project": pid, "folder": "/a/../b"}),
        ("/file/new", {"project": pid, "folder": "/a\x00"}),
        ("/file/new", {"project": pid, "tags": "notalist"}),
        ("/file/new", {"project": pid, "properties": {"k": 1}}),
        ("/file/new", {"project": pid, "hidden": "yes"}),
        ("/file/new", {"project": pid, "details": "str"}),
        ("/file/new", {"project": 12}),
        (f"/{pid}/newFolder", {"folder": "no-slash"}),
        (f"/{pid}/newFolder", {}),
        (f"/{pid}/listFolder", {"folder": "/", "only": "everything"}),
        ("/system/findDataObjects", {"limit": -1}),
        ("/system/findDataObjects", {"state": "weird"}),
        ("/system/findProjects", {"level": "SUPERUSER"}),
        ("/system/findDataObjects", {"starting": "garbage"}),
        ("/project/new", {}),
    ]
    for route, body in cases:
        st, res = call(h, route, body)
        assert st == 422 and err_type(res) == "InvalidInput", (route, body, res)
    st, res = call(h, "/file/new", {"project": "file-" + "0" * 24})
    assert err_type(res) == "InvalidType"
    st, res = call(h, "/file/new", {"project": "project-" + "0" * 24})
    assert st == 404 and err_type(res) == "ResourceNotFound"
    st, res = call(h, "/file/new", {"project": pid, "folder": "/nope/deeper"})
    assert st == 404
    st, res = call(h, "/system/noSuchMethod")
    assert st == 404 and err_type(res) == "ResourceNotFound"
    st, res = call(h, "/file-" + "0" * 24 + "/describe")
    assert st == 404 and err_type(res) == "ResourceNotFound"
    st, res = call(h, "/record-" + "0" * 24 + "/describe")
    assert st == 404


def test_storage_path_tricks(ua_server):
    h = ua_server
    fid = new_file(h)
    info = ok(h, f"/{fid}/upload", {"index": 1, "size": 2, "md5": md5hex(b"ab")})
    u = urllib.parse.urlsplit(info["url"])
    for path in ("/upload/..%2F..%2Fmeta.db/1", "/upload/%2e%2e/1", f"/upload/{fid}/x",
                 f"/upload/{fid}/-1"):
        st, _, _ = raw(f"{h.url}{path}?{u.query}", "PUT", b"ab")
        assert st in (400, 403, 404), path
    st, _, _ = raw(info["url"], "PUT", b"abc" * 1000)  # longer than signed
    assert st == 400
    st, _, _ = raw(f"{h.url}/download/{fid}", "GET")
    assert st == 403
    assert (h.data_dir / "meta.db").exists()


def test_response_framing(ua_server):
    h = ua_server
    st, hd, body = _post(h, "/system/findDataObjects", b"{}", {"Accept-Encoding": "gzip, deflate"})
    assert st == 200 and hd["content-type"].startswith("application/json")
    assert int(hd["content-length"]) == len(body) and "content-encoding" not in hd
    st, hd, body = _post(h, "/system/whoami", b"{}", token="bad")
    assert st == 401 and int(hd["content-length"]) == len(body)
    assert set(json.loads(body)["error"]) >= {"type", "message"}


def test_request_log_and_no_secrets(ua_server):
    h = ua_server
    tok = h.new_token(project=h.project_id, level="UPLOAD")
    fid = new_file(h, name="logged.bin", token=tok)
    info = ok(h, f"/{fid}/upload", {"index": 1, "size": 3, "md5": md5hex(b"log")}, tok)
    sig = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(info["url"]).query))["sig"]
    assert put_part(h, fid, 1, b"log", tok)[0] == 200
    raw(info["url"].replace(sig, "f" * 64), "PUT", b"log")
    ok(h, f"/{fid}/close", {}, tok)
    recs = [r for r in h.requests() if r["file"] == fid]
    keys = {"t", "method", "route", "status", "file", "index", "bytes", "ms", "fault"}
    assert all(set(r) == keys for r in recs)
    routes = [(r["method"], r["route"], r["status"], r["index"]) for r in recs]
    assert ("POST", "/file/new", 200, None) in routes
    assert ("POST", f"/{fid}/upload", 200, 1) in routes
    assert ("PUT", "PUT /upload", 200, 1) in routes
    assert ("PUT", "PUT /upload", 403, 1) in routes
    assert ("POST", f"/{fid}/close", 200, None) in routes
    put = next(r for r in recs if r["route"] == "PUT /upload" and r["status"] == 200)
    assert put["bytes"] == 3
    text = (h.data_dir / "requests.jsonl").read_text() + h.server_log()
    for secret in (tok, h.admin_token, sig):
        assert secret not in text
    # tokens are stored hashed only
    db = (h.data_dir / "meta.db").read_bytes() + (h.data_dir / "meta.db-wal").read_bytes()
    assert tok.encode() not in db and h.admin_token.encode() not in db
    assert stat.S_IMODE(os.stat(h.data_dir / "dx-env").st_mode) == 0o600


def test_dx_env_file_and_restart(make_server):
    h = make_server()
    text = (h.data_dir / "dx-env").read_text()
    for var in ("DX_APISERVER_PROTOCOL", "DX_APISERVER_HOST", "DX_APISERVER_PORT",
                "DX_SECURITY_CONTEXT", "DX_PROJECT_CONTEXT_ID"):
        assert f"export {var}=" in text
    token, project = h.admin_token, h.project_id
    fid = upload(h, [b"kept"])
    h.stop()
    h.start(0)  # a new free port
    text2 = (h.data_dir / "dx-env").read_text()
    assert f"DX_APISERVER_PORT={h.port}\n" in text2
    assert h.admin_token == token and h.project_id == project
    assert ok(h, f"/{fid}/describe")["state"] == "closed"
    assert ok(h, "/system/whoami")["id"] == "user-admin"


def test_deep_json_and_client_abort(ua_server):
    import socket
    import time
    h = ua_server
    deep = b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    st, _, body = _post(h, "/system/whoami", deep)
    assert st in (400, 422) and json.loads(body)["error"]["type"] in ("MalformedJSON", "InvalidInput")
    nested = {"project": h.project_id, "details": {}}
    cur = nested["details"]
    for _ in range(100):
        cur["x"] = {}
        cur = cur["x"]
    st, res = call(h, "/file/new", nested)
    assert st == 422 and err_type(res) == "InvalidInput"

    fid = new_file(h, name="aborted.bin")
    data = b"q" * 3_000_000
    info = ok(h, f"/{fid}/upload", {"index": 1, "size": len(data), "md5": md5hex(data)})
    u = urllib.parse.urlsplit(info["url"])
    s = socket.create_connection((u.hostname, u.port))
    s.sendall((f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
               ).encode() + data[:1_000_000])
    time.sleep(0.3)
    s.close()
    deadline = time.time() + 5
    while time.time() < deadline:
        recs = [r for r in h.requests() if r["file"] == fid and r["route"] == "PUT /upload"]
        if recs:
            break
        time.sleep(0.05)
    assert recs and recs[-1]["status"] == 0 and 0 < recs[-1]["bytes"] < len(data)
    assert not list((h.data_dir / "blobs" / fid).glob("*.tmp.*"))
    assert ok(h, f"/{fid}/describe")["parts"]["1"]["state"] == "pending"
    assert "Traceback" not in h.server_log()
