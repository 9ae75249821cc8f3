"""File lifecycle: close rules, closing state, nonces, signed URLs, MD5, describe, metadata."""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse

from srvutil import (call, err_type, md5hex, new_file, ok, put_part, raw, requests_for, upload,
                     wait_state)

MiB = 1024 * 1024


def test_fileuploadparameters_defaults(ua_server):
    d = ok(ua_server, f"/{ua_server.project_id}/describe", {"fields": {"fileUploadParameters": True}})
    assert d == {"id": ua_server.project_id, "fileUploadParameters": {
        "minimumPartSize": 5242880, "maximumPartSize": 5368709120,
        "maximumFileSize": 5497558138880, "maximumNumParts": 10000,
        "emptyLastPartAllowed": True}}


def test_close_rules_default_params(ua_server):
    h = ua_server
    # 1. emptyLastPartAllowed and zero parts
    fid = new_file(h)
    st, res = call(h, f"/{fid}/close")
    assert st == 422 and err_type(res) == "InvalidState"
    # 2. a pending part
    ok(h, f"/{fid}/upload", {"index": 1, "size": 3, "md5": md5hex(b"abc")})
    st, res = call(h, f"/{fid}/close")
    assert err_type(res) == "InvalidState" and "pending" in res["error"]["message"]
    d = ok(h, f"/{fid}/describe")
    assert d["parts"] == {"1": {"state": "pending", "size": 3, "md5": md5hex(b"abc")}}
    # 3. a non-last part below minimumPartSize
    assert put_part(h, fid, 1, b"abc")[0] == 200
    assert put_part(h, fid, 2, b"def")[0] == 200
    st, res = call(h, f"/{fid}/close")
    assert err_type(res) == "InvalidState" and "minimum" in res["error"]["message"]
    assert ok(h, f"/{fid}/describe")["state"] == "open"
    # the same parts with a big first part close fine; content is parts in index order
    big = b"x" * (5 * MiB)
    assert put_part(h, fid, 1, big)[0] == 200
    ok(h, f"/{fid}/close")
    d = wait_state(h, fid, "closed")
    assert d["size"] == 5 * MiB + 3
    url = ok(h, f"/{fid}/download")["url"]
    st, _, body = raw(url)
    assert st == 200 and body == big + b"def"


def test_close_rules_custom_params(make_server):
    h = make_server(min_part_size=1, max_file_size=100, empty_last_part=False)
    d = ok(h, f"/{h.project_id}/describe", {"fields": {"fileUploadParameters": True}})
    assert d["fileUploadParameters"]["emptyLastPartAllowed"] is False
    # 4. emptyLastPartAllowed false and an empty last part
    fid = new_file(h)
    assert put_part(h, fid, 1, b"a")[0] == 200
    assert put_part(h, fid, 2, b"")[0] == 200
    st, res = call(h, f"/{fid}/close")
    assert err_type(res) == "InvalidState" and "empty" in res["error"]["message"]
    # 5. total above maximumFileSize
    fid = new_file(h)
    assert put_part(h, fid, 1, b"a" * 60)[0] == 200
    assert put_part(h, fid, 2, b"b" * 60)[0] == 200
    st, res = call(h, f"/{fid}/close")
    assert err_type(res) == "InvalidState" and "maximum" in res["error"]["message"]
    # zero parts are fine when empty last parts are not allowed
    fid = new_file(h)
    ok(h, f"/{fid}/close")
    assert wait_state(h, fid, "closed")["size"] == 0


def test_closing_state_and_repeated_close(make_server):
    h = make_server(close_delay=4)
    fid = new_file(h)
    assert put_part(h, fid, 1, b"data")[0] == 200
    assert ok(h, f"/{fid}/close") == {"id": fid}
    assert ok(h, f"/{fid}/describe")["state"] == "closing"
    again = ok(h, f"/{fid}/close")
    assert again["id"] == fid and "closing" in again["detail"]
    st, res = call(h, f"/{fid}/upload", {"index": 1, "size": 1, "md5": md5hex(b"x")})
    assert st == 422 and "is not in the open state" in res["error"]["message"]
    st, res = call(h, f"/{fid}/download")
    assert err_type(res) == "InvalidState"
    d = wait_state(h, fid, "closed", timeout=10)
    assert "parts" not in d  # default describe lists parts only while open
    again = ok(h, f"/{fid}/close")
    assert "closed" in again["detail"]
    st, res = call(h, f"/{fid}/upload", {"index": 2, "size": 1, "md5": md5hex(b"x")})
    assert err_type(res) == "InvalidState" and "is not in the open state" in res["error"]["message"]


def test_closing_finalised_after_restart(make_server):
    h = make_server(close_delay=3600)
    fid = new_file(h)
    assert put_part(h, fid, 1, b"survive")[0] == 200
    ok(h, f"/{fid}/close")
    assert ok(h, f"/{fid}/describe")["state"] == "closing"
    h.kill()
    h.restart(close_delay=0)
    assert wait_state(h, fid, "closed")["state"] == "closed"
    st, _, body = raw(ok(h, f"/{fid}/download")["url"])
    assert body == b"survive"


def test_nonce_replay(ua_server):
    h = ua_server
    body = {"project": h.project_id, "name": "n.bin", "nonce": "abc-123" + str(time.time())}
    a = ok(h, "/file/new", body)
    b = ok(h, "/file/new", body)
    assert a == b
    st, res = call(h, "/file/new", {**body, "name": "other.bin"})
    assert st == 422 and err_type(res) == "InvalidInput"
    st, res = call(h, "/file/new", {**body, "nonce": "x" * 129})
    assert err_type(res) == "InvalidInput"
    found = ok(h, "/system/findDataObjects", {"name": "n.bin", "scope": {"project": h.project_id}})
    assert [r["id"] for r in found["results"]] == [a["id"]]


def test_nonce_persists_across_restart(make_server):
    h = make_server()
    body = {"project": h.project_id, "name": "p.bin", "nonce": "persist-me"}
    a = ok(h, "/file/new", body)
    h.restart()
    assert ok(h, "/file/new", body) == a


def test_describe_open_file_parts_and_fields(ua_server):
    h = ua_server
    fid = new_file(h, name="parts.bin", properties={"k": "v"}, tags=["t1"], details={"a": 1})
    assert put_part(h, fid, 2, b"two")[0] == 200
    d = ok(h, f"/{fid}/describe")
    assert d["state"] == "open" and d["parts"] == {
        "2": {"state": "complete", "size": 3, "md5": md5hex(b"two")}}
    assert d["class"] == "file" and d["project"] == h.project_id and d["folder"] == "/"
    for key in ("created", "modified", "createdBy", "hidden", "types", "tags", "media", "size"):
        assert key in d
    assert "drive" not in d and "md5" not in d
    d = ok(h, f"/{fid}/describe", {"fields": {"state": True, "parts": True}})
    assert set(d) == {"id", "state", "parts"}
    d = ok(h, f"/{fid}/describe", {"properties": True, "details": True, "size": True,
                                    "drive": True, "checksumType": True, "project": h.project_id})
    assert d["properties"] == {"k": "v"} and d["details"] == {"a": 1}
    # project hint that does not hold the file still describes it
    other = h.new_project("hint")
    assert ok(h, f"/{fid}/describe", {"project": other})["project"] == h.project_id


def test_upload_input_validation(ua_server):
    h = ua_server
    fid = new_file(h)
    for body in ({"index": 0, "size": 1, "md5": "0" * 32}, {"index": 10001, "size": 1, "md5": "0" * 32},
                 {"index": "1", "size": 1, "md5": "0" * 32}, {"index": 1, "size": -1, "md5": "0" * 32},
                 {"index": 1, "size": 1, "md5": "xyz"}, {"index": True, "size": 1, "md5": "0" * 32},
                 {"index": 1, "size": 5368709121, "md5": "0" * 32}):
        st, res = call(h, f"/{fid}/upload", body)
        assert st == 422 and err_type(res) == "InvalidInput", body
    info = ok(h, f"/{fid}/upload", {"size": 2, "md5": md5hex(b"hi")})  # index defaults to 1
    assert "/1?" in info["url"]
    assert info["headers"] == {"content-length": "2",
                               "content-md5": base64.b64encode(hashlib.md5(b"hi").digest()).decode()}
    assert all(isinstance(v, str) for v in info["headers"].values())


def test_put_wrong_md5_is_bad_digest(ua_server):
    h = ua_server
    fid = new_file(h)
    st, body = put_part(h, fid, 1, b"good", send=b"evil")
    assert st == 400 and b"<Code>BadDigest</Code>" in body
    d = ok(h, f"/{fid}/describe")
    assert d["parts"]["1"]["state"] == "pending"
    # wrong length
    st, body = put_part(h, fid, 1, b"good", send=b"good!")
    assert st == 400
    assert ok(h, f"/{fid}/describe")["parts"]["1"]["state"] == "pending"
    st, body = put_part(h, fid, 1, b"good")
    assert st == 200 and body == b""
    assert ok(h, f"/{fid}/describe")["parts"]["1"]["state"] == "complete"
    assert not list((h.data_dir / "blobs" / fid).glob("*.tmp.*"))


def test_put_response_shape(ua_server):
    h = ua_server
    fid = new_file(h)
    info = ok(h, f"/{fid}/upload", {"index": 1, "size": 2, "md5": md5hex(b"ok")})
    st, headers, body = raw(info["url"], "PUT", b"ok", {"content-md5": info["headers"]["content-md5"]})
    assert st == 200 and body == b"" and headers.get("content-length") == "0"
    assert not headers.get("content-type", "").startswith("application/json")
    assert "authorization" not in {k.lower() for k in info["headers"]}


def _tamper(url: str, key: str, value: str) -> str:
    u = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(u.query))
    q[key] = value
    return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))


def test_tampered_upload_url(ua_server):
    h = ua_server
    fid = new_file(h)
    info = ok(h, f"/{fid}/upload", {"index": 1, "size": 4, "md5": md5hex(b"data")})
    sig = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(info["url"]).query))["sig"]
    for key, value in (("size", "5"), ("md5", md5hex(b"dat2")), ("expires", "9999999999"),
                       ("sig", "0" * 64)):
        st, _, body = raw(_tamper(info["url"], key, value), "PUT", b"data")
        assert st == 403 and b"signature" in body, key
        assert sig.encode() not in body
    other = new_file(h)
    st, _, _ = raw(info["url"].replace(fid, other), "PUT", b"data")
    assert st == 403
    st, _, _ = raw(info["url"].replace("/1?", "/2?"), "PUT", b"data")
    assert st == 403
    assert ok(h, f"/{fid}/describe")["parts"]["1"]["state"] == "pending"
    st, _, body = raw(info["url"], "PUT", b"data")
    assert st == 200


def test_expired_upload_and_download_urls(make_server):
    h = make_server(upload_url_ttl=2)
    fid = new_file(h)
    info = ok(h, f"/{fid}/upload", {"index": 1, "size": 4, "md5": md5hex(b"data")})
    time.sleep(3.1)
    st, _, body = raw(info["url"], "PUT", b"data")
    assert st == 403 and b"expired" in body
    assert put_part(h, fid, 1, b"data")[0] == 200
    ok(h, f"/{fid}/close")
    wait_state(h, fid, "closed")
    d = ok(h, f"/{fid}/download", {"preauthenticated": True, "duration": 1})
    assert d["expires"] <= (time.time() + 2) * 1000
    long = ok(h, f"/{fid}/download", {"preauthenticated": False})
    assert long["expires"] >= (time.time() + 23 * 3600) * 1000
    time.sleep(2.1)
    st, _, body = raw(d["url"])
    assert st == 403 and b"expired" in body
    st, _, body = raw(_tamper(long["url"], "expires", str(int(time.time()) + 99999)))
    assert st == 403
    assert raw(long["url"])[2] == b"data"


def test_download_ranges(ua_server):
    h = ua_server
    p1 = bytes(range(256)) * (5 * MiB // 256)
    p2 = b"tail-part"
    fid = upload(h, [p1, p2], name="ranged.bin")
    whole = p1 + p2
    url = ok(h, f"/{fid}/download")["url"]
    st, hd, body = raw(url)
    assert st == 200 and body == whole and hd["content-length"] == str(len(whole))
    for a, b in ((0, 0), (10, 99), (len(p1) - 5, len(p1) + 3), (len(whole) - 1, len(whole) - 1)):
        st, hd, body = raw(url, headers={"Range": f"bytes={a}-{b}"})
        assert st == 206 and body == whole[a:b + 1], (a, b)
        assert hd["content-length"] == str(b - a + 1)
        assert hd["content-range"] == f"bytes {a}-{b}/{len(whole)}"
    st, _, body = raw(url, headers={"Range": f"bytes={len(p1)}-"})
    assert st == 206 and body == p2
    st, _, body = raw(url, headers={"Range": "bytes=-4"})
    assert st == 206 and body == b"part"
    st, _, _ = raw(url, headers={"Range": f"bytes={len(whole)}-"})
    assert st == 416
    st, _, body = raw(url, "HEAD")
    assert st == 200 and body == b""


def test_part_reupload_replaces(ua_server):
    h = ua_server
    fid = new_file(h)
    assert put_part(h, fid, 1, b"first")[0] == 200
    assert put_part(h, fid, 1, b"second")[0] == 200
    ok(h, f"/{fid}/close")
    wait_state(h, fid, "closed")
    assert raw(ok(h, f"/{fid}/download")["url"])[2] == b"second"
    puts = requests_for(h, fid, "PUT /upload")
    assert [(r["index"], r["status"]) for r in puts] == [(1, 200), (1, 200)]


def test_metadata_mutation_rules(ua_server):
    h = ua_server
    fid = new_file(h, name="meta.bin")
    ok(h, f"/{fid}/setProperties", {"project": h.project_id, "properties": {"a": "1", "b": "2"}})
    ok(h, f"/{fid}/setProperties", {"properties": {"a": None, "c": "3"}})
    ok(h, f"/{fid}/addTags", {"tags": ["x", "y"]})
    ok(h, f"/{fid}/removeTags", {"tags": ["x"]})
    ok(h, f"/{fid}/addTypes", {"types": ["Reads"]})
    ok(h, f"/{fid}/setDetails", {"details": {"k": [1, 2]}})
    ok(h, f"/{fid}/setVisibility", {"hidden": True})
    d = ok(h, f"/{fid}/describe", {"properties": True, "details": True})
    assert d["properties"] == {"b": "2", "c": "3"} and d["tags"] == ["y"]
    assert d["types"] == ["Reads"] and d["details"] == {"k": [1, 2]} and d["hidden"] is True
    ok(h, f"/{fid}/setVisibility", {"hidden": False})
    assert put_part(h, fid, 1, b"z")[0] == 200
    ok(h, f"/{fid}/close")
    wait_state(h, fid, "closed")
    ok(h, f"/{fid}/rename", {"project": h.project_id, "name": "renamed.bin"})
    ok(h, f"/{fid}/addTags", {"tags": ["after"]})
    for route, body in (("setVisibility", {"hidden": True}), ("setDetails", {"details": {}}),
                        ("addTypes", {"types": ["T"]})):
        st, res = call(h, f"/{fid}/{route}", body)
        assert err_type(res) == "InvalidState", route
    other = h.new_project("elsewhere")
    st, res = call(h, f"/{fid}/rename", {"project": other, "name": "x"})
    assert err_type(res) == "ResourceNotFound"
    assert ok(h, f"/{fid}/describe")["name"] == "renamed.bin"


def test_find_data_objects(ua_server):
    h = ua_server
    pid = h.new_project("search")
    ok(h, f"/{pid}/newFolder", {"folder": "/sub/deep", "parents": True})
    sig = "123 456 0 1048576 /abs/path/x.fastq"
    ids = {}
    ids["a"] = upload(h, [b"a"], name="alpha.fastq", project=pid)
    ids["b"] = new_file(h, pid, "beta.fastq", folder="/sub", properties={".system-fileSignature": sig})
    ids["c"] = upload(h, [b"c"], name="gamma.txt", project=pid)
    ids["d"] = new_file(h, pid, "delta.txt", folder="/sub/deep", hidden=True)

    def names(body):
        res = ok(h, "/system/findDataObjects", {"scope": {"project": pid}, "describe": True, **body})
        assert "next" in res
        return sorted(r["describe"]["name"] for r in res["results"])

    assert names({}) == ["alpha.fastq", "beta.fastq", "gamma.txt"]
    assert names({"visibility": "either"}) == ["alpha.fastq", "beta.fastq", "delta.txt", "gamma.txt"]
    assert names({"visibility": "hidden"}) == ["delta.txt"]
    assert names({"name": "gamma.txt"}) == ["gamma.txt"]
    assert names({"name": {"glob": "*.fastq"}}) == ["alpha.fastq", "beta.fastq"]
    assert names({"name": {"regexp": "^(al|ga)"}}) == ["alpha.fastq", "gamma.txt"]
    assert names({"state": "open"}) == ["beta.fastq"]
    assert names({"state": "closed"}) == ["alpha.fastq", "gamma.txt"]
    assert names({"class": "record"}) == []
    assert names({"properties": {".system-fileSignature": sig}}) == ["beta.fastq"]
    assert names({"properties": {".system-fileSignature": True}}) == ["beta.fastq"]
    res = ok(h, "/system/findDataObjects", {
        "class": "file", "properties": {".system-fileSignature": sig},
        "scope": {"project": pid, "folder": "/", "recurse": True}, "visibility": "either",
        "describe": {"project": pid}})
    assert res["results"][0]["describe"]["parts"] == {}  # open file: parts by default
    assert names({"scope": {"project": pid, "folder": "/sub", "recurse": False},
                  "visibility": "either"}) == ["beta.fastq"]
    assert names({"scope": {"project": pid, "folder": "/sub"}, "visibility": "either"}) == [
        "beta.fastq", "delta.txt"]
    # pagination
    seen, starting = [], None
    while True:
        body = {"scope": {"project": pid}, "visibility": "either", "limit": 1}
        if starting:
            body["starting"] = starting
        res = ok(h, "/system/findDataObjects", body)
        seen += [r["id"] for r in res["results"]]
        starting = res["next"]
        if not starting:
            break
    assert sorted(seen) == sorted(ids.values())
    st, res = call(h, "/system/findDataObjects", {"name": {"regexp": "("}})
    assert err_type(res) == "InvalidInput"
    st, res = call(h, "/system/findDataObjects", {"scope": {"project": "project-" + "0" * 24}})
    assert st == 404
    assert ok(h, "/system/findApps", {"name": "x"}) == {"results": [], "next": None}
    assert ok(h, "/system/findGlobalWorkflows", {}) == {"results": [], "next": None}
    res = ok(h, "/system/resolveDataObjects", {"project": pid, "objects": [
        {"name": "gamma.txt"}, {"name": "beta.fastq", "folder": "/sub"}, {"name": "nope"}]})
    assert res["results"] == [[{"project": pid, "id": ids["c"]}],
                              [{"project": pid, "id": ids["b"]}], []]
    res = ok(h, "/system/describeDataObjects", {"objects": [ids["a"], "file-" + "0" * 24]})
    assert res["results"][0]["describe"]["name"] == "alpha.fastq"
    assert res["results"][1]["error"]["type"] == "ResourceNotFound"


def test_find_projects_and_project_routes(ua_server):
    h = ua_server
    pid = h.new_project("findme-1")
    res = ok(h, "/system/findProjects", {"name": "findme-1", "level": "VIEW", "describe": True,
                                         "limit": 100})
    assert [r["id"] for r in res["results"]] == [pid]
    assert res["results"][0]["describe"]["name"] == "findme-1" and res["next"] is None
    res = ok(h, "/system/findProjects", {"name": {"glob": "findme-*"}})
    assert [r["id"] for r in res["results"]] == [pid]
    ok(h, f"/{pid}/update", {"name": "findme-2"})
    assert ok(h, f"/{pid}/describe")["name"] == "findme-2"
    ok(h, f"/{pid}/newFolder", {"folder": "/a//b///c/", "parents": True})
    assert ok(h, f"/{pid}/describe", {"folders": True})["folders"] == ["/", "/a", "/a/b", "/a/b/c"]
    st, res = call(h, f"/{pid}/newFolder", {"folder": "/x/y"})
    assert st == 404
    ok(h, f"/{pid}/newFolder", {"folder": "/a"})  # exists: fine
    lf = ok(h, f"/{pid}/listFolder", {"folder": "/a"})
    assert lf == {"folders": ["/a/b"], "objects": []}
    st, res = call(h, f"/{pid}/listFolder", {"folder": "/missing"})
    assert st == 404 and "could not be found" in res["error"]["message"]
    fid = upload(h, [b"q"], project=pid, name="in-c.txt")
    ok(h, f"/{pid}/removeObjects", {"objects": [fid]})
    st, res = call(h, f"/{pid}/removeObjects", {"objects": [fid]})
    assert st == 404
    ok(h, f"/{pid}/removeObjects", {"objects": [fid], "force": True})
    assert call(h, f"/{fid}/describe")[0] == 404
    new_file(h, pid, "stays.bin", folder="/a/b/c")
    st, res = call(h, f"/{pid}/removeFolder", {"folder": "/a"})
    assert err_type(res) == "InvalidState"
    ok(h, f"/{pid}/removeFolder", {"folder": "/a", "recurse": True})
    assert ok(h, f"/{pid}/describe", {"folders": True})["folders"] == ["/"]
    st, res = call(h, "/container-" + pid[8:] + "/describe")
    assert st == 404
    assert ok(h, "/user-admin/describe")["handle"] == "admin"
    assert ok(h, "/system/greet", {"client": "dxclient", "version": "v0.1"})["update"]["available"] is False


def test_property_index_follows_changes(ua_server):
    h = ua_server
    pid = h.new_project("props-index")
    fid = new_file(h, pid, "p.bin", properties={"sig": "v1", "other": "x"})

    def found(props):
        res = ok(h, "/system/findDataObjects", {"scope": {"project": pid}, "properties": props,
                                                "visibility": "either"})
        return [r["id"] for r in res["results"]]

    assert found({"sig": "v1"}) == [fid] and found({"sig": "v1", "other": "x"}) == [fid]
    assert found({"sig": "v1", "other": "y"}) == []
    ok(h, f"/{fid}/setProperties", {"properties": {"sig": "v2", "other": None}})
    assert found({"sig": "v1"}) == [] and found({"sig": "v2"}) == [fid]
    assert found({"other": True}) == [] and found({"sig": True}) == [fid]
    assert found({"$or": [{"sig": "v9"}, {"sig": "v2"}]}) == [fid]
    ok(h, f"/{pid}/removeObjects", {"objects": [fid]})
    assert found({"sig": "v2"}) == []
