"""describeDataObjects (answered from a few queries for the whole batch) gives, per object,
exactly what /file-x/describe gives; findDataObjects on a property key or key/value (driven
by the props index, rows read only up to the limit) pages through exactly the matching files
of the scope, in ID order, with the caller's permissions."""

from __future__ import annotations

from srvutil import call, new_file, ok, put_part

KEY = ".system-fileSignature"


def _one(h, oid, opts, token=None):
    if not oid.startswith("file-"):  # no /x/describe route for these: the documented error
        if "project" in opts and not isinstance(opts["project"], str):
            return {"error": {"type": "InvalidInput", "message": "Expected project to be a string"}}
        return {"error": {"type": "ResourceNotFound",
                          "message": f"The entity {oid} could not be found"}}
    st, res = call(h, f"/{oid}/describe", opts, token)
    return {"describe": res} if st == 200 else {"error": res["error"]}


def test_describe_batch_equals_single_describes(make_server):
    h = make_server(min_part_size=1)
    other = h.new_project("batch-other")
    fids = []
    for i in range(12):
        fid = new_file(h, name=f"b{i}", properties={KEY: f"sig {i}"}, hidden=(i % 5 == 0))
        for k in range(1, 1 + i % 3):
            assert put_part(h, fid, k, bytes([i]) * (100 + k))[0] == 200
        if i % 4 == 0 and i % 3:
            ok(h, f"/{fid}/close")
        fids.append(fid)
    ok(h, f"/{fids[1]}/upload", {"index": 7, "size": 5})  # a pending part
    foreign = new_file(h, project=other, name="foreign")
    tok = h.new_token(project=h.project_id, level="VIEW")  # cannot see `other`
    ids = fids + [foreign, "file-" + "0" * 24, "record-" + "0" * 24, fids[2], "garbage"]
    option_sets = [
        {},
        {"parts": True, "state": True},
        {"fields": {"state": True, "parts": True, "size": True}},
        {"fields": {"name": True, "properties": True}},
        {"fields": {"size": True}, "defaultFields": True},
        {"properties": True, "details": True},
        {"project": h.project_id},
        {"project": other},
        {"project": 7},
    ]
    for opts in option_sets:
        for token in (None, tok):
            objs = [{"id": oid, "describe": dict(opts)} for oid in ids]
            got = ok(h, "/system/describeDataObjects", {"objects": objs}, token)["results"]
            want = [_one(h, oid, opts, token) for oid in ids]
            assert got == want, opts
    # plain-string IDs and an object with its own project
    got = ok(h, "/system/describeDataObjects",
             {"objects": [fids[0], {"id": foreign, "project": other}]}, tok)["results"]
    assert got[0] == _one(h, fids[0], {}, tok) and "error" in got[1]
    big = ok(h, "/system/describeDataObjects",
             {"objects": [{"id": f, "describe": {"parts": True}} for f in fids * 80]})["results"]
    assert len(big) == 960 and all("describe" in r for r in big)


def test_find_by_property_key_and_value_pages_in_id_order(make_server):
    h = make_server(min_part_size=1)
    other = h.new_project("find-other")
    mine, others = [], []
    for i in range(45):
        props = {KEY: f"sig {i % 7}"} if i % 4 else {"other": "x"}
        fid = new_file(h, name=f"f{i}", folder=f"/d{i % 3}", parents=True, properties=props,
                       hidden=(i % 6 == 0))
        if i % 5 == 0:
            assert put_part(h, fid, 1, b"abc")[0] == 200
            ok(h, f"/{fid}/close")
        mine.append((fid, props, i % 6 == 0, f"/d{i % 3}"))
        others.append(new_file(h, project=other, name=f"o{i}", properties={KEY: "sig 1"}))
    describe = {"fields": {"state": True, "name": True, "folder": True, "properties": True}}

    def walk(query, token=None, limit=4):
        body = dict(query, limit=limit)
        out = []
        while True:
            res = ok(h, "/system/findDataObjects", body, token)
            out += res["results"]
            assert len(res["results"]) <= limit
            if not res["next"]:
                return out
            body["starting"] = res["next"]

    scope = {"project": h.project_id, "folder": "/", "recurse": True}
    for props, pred in [({KEY: True}, lambda p: KEY in p),
                        ({KEY: "sig 1"}, lambda p: p.get(KEY) == "sig 1"),
                        ({KEY: True, "other": True}, lambda p: False),
                        ({KEY: False}, lambda p: KEY not in p),
                        ({"$or": [{KEY: "sig 2"}, {"other": "x"}]},
                         lambda p: p.get(KEY) == "sig 2" or "other" in p)]:
        for vis, vpred in [("either", lambda hid: True), ("visible", lambda hid: not hid),
                           ("hidden", lambda hid: hid)]:
            got = walk({"class": "file", "properties": props, "scope": scope,
                        "visibility": vis, "describe": describe})
            want = sorted(f for f, p, hid, _ in mine if pred(p) and vpred(hid))
            assert [r["id"] for r in got] == want, (props, vis)
            for r in got:
                d = r["describe"]
                assert r["project"] == h.project_id and d["id"] == r["id"]
                assert set(d) == {"id", "state", "name", "folder", "properties"}
                assert d == {"id": r["id"], **{k: v for k, v in _one(h, r["id"], {
                    "properties": True})["describe"].items() if k in d}}
    sub = walk({"class": "file", "properties": {KEY: True}, "visibility": "either",
                "scope": {"project": h.project_id, "folder": "/d1", "recurse": False}})
    assert [r["id"] for r in sub] == sorted(f for f, p, _, d in mine if KEY in p and d == "/d1")
    # no scope: every project the caller sees; a token scoped to one project sees only it
    every = walk({"class": "file", "properties": {KEY: "sig 1"}, "visibility": "either"})
    assert {r["id"] for r in every} == {f for f, p, _, _ in mine if p.get(KEY) == "sig 1"} | set(others)
    tok = h.new_token(project=h.project_id, level="VIEW")
    scoped = walk({"class": "file", "properties": {KEY: "sig 1"}, "visibility": "either"}, tok)
    assert {r["id"] for r in scoped} == {f for f, p, _, _ in mine if p.get(KEY) == "sig 1"}
    st, res = call(h, "/system/findDataObjects", {"properties": {KEY: True},
                                                  "scope": {"project": other}}, tok)
    assert st == 404
    st, res = call(h, "/system/findDataObjects", {"properties": {KEY: 5}, "scope": scope})
    assert st == 422 and res["error"]["type"] == "InvalidInput"


def test_data_dir_from_before_props_project_id_is_migrated(make_server):
    """A data dir whose props table has no project_id column (and the old (key, value)
    index) is migrated on start; property lookups then find exactly the same files."""
    import sqlite3

    h = make_server()
    other = h.new_project("migr-other")
    mine = sorted(new_file(h, name=f"m{i}", properties={KEY: f"s{i % 2}"}) for i in range(6))
    theirs = new_file(h, project=other, name="t", properties={KEY: "s1"})
    h.stop()
    db = sqlite3.connect(h.data_dir / "meta.db")
    db.executescript("DROP INDEX props_pkvf;"
                     "ALTER TABLE props DROP COLUMN project_id;"
                     "CREATE INDEX props_kv ON props(key, value);")
    db.close()
    h.restart()
    scope = {"project": h.project_id}
    got = ok(h, "/system/findDataObjects", {"properties": {KEY: True}, "scope": scope})
    assert [r["id"] for r in got["results"]] == mine
    got = ok(h, "/system/findDataObjects", {"properties": {KEY: "s1"}})
    assert {r["id"] for r in got["results"]} == set(mine[i] for i in range(6)
                                                    if ok(h, f"/{mine[i]}/describe",
                                                          {"properties": True})["properties"][KEY] == "s1") | {theirs}
    db = sqlite3.connect(h.data_dir / "meta.db")
    assert db.execute("SELECT COUNT(*) FROM props WHERE project_id IS NULL").fetchone()[0] == 0
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()
    assert "props_pkvf" in names and "props_kv" not in names


def test_find_follows_set_properties(ua_server):
    h = ua_server
    fid = new_file(h, name="props-later", properties={"a": "1"})
    scope = {"project": h.project_id}

    def found(props):
        res = ok(h, "/system/findDataObjects", {"properties": props, "scope": scope})
        return fid in [r["id"] for r in res["results"]]

    assert found({"a": "1"}) and not found({"b": True})
    ok(h, f"/{fid}/setProperties", {"properties": {"a": None, "b": "2"}})
    assert found({"b": "2"}) and found({"b": True}) and not found({"a": True})
