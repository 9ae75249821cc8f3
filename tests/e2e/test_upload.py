"""End-to-end uploads: `ua` as a subprocess against a live ua-server. stdout lines, exit codes,
remote names/folders, directories, manifest, stdin, pairing, per-file failures, --json, --verbose."""

import gzip
import json
import os
import re
import socket

import pytest

ID_RE = re.compile(r"^file-[0-9BFGJKPQVXYZbfgjkpqvxyz]{24}$")
FAST = {"UA_RETRY_BASE_DELAY": "0.001"}


def new_project(server, name):
    """Through the API (an admin subprocess per project is slow)."""
    status, body = server.api("/project/new", {"name": name})
    assert status == 200, body
    return body["id"]


def describe(server, fid):
    status, body = server.api(f"/{fid}/describe", {"properties": True})
    assert status == 200, body
    return body


def content(server, fid):
    status, body = server.api(f"/{fid}/download", {})
    assert status == 200, body
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(body["url"], headers=body.get("headers") or {})) as r:
        return r.read()


def ids(stdout):
    lines = stdout.splitlines()
    assert all(ID_RE.match(x) or x == "failed" for x in lines), stdout
    return lines


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    (d / "tree/sub/deeper").mkdir(parents=True)
    (d / "hello.txt").write_text("hello world\n")
    (d / "tree/a.txt").write_text("a\n")
    (d / "tree/sub/b.txt").write_text("b\n")
    (d / "tree/sub/deeper/c.txt").write_text("c\n")
    return tmp_path


def test_single_file_success(run_ua, ua_server, data):
    p = run_ua("data/hello.txt", cwd=data)
    assert p.returncode == 0, p.stderr
    [fid] = ids(p.stdout)
    d = describe(ua_server, fid)
    assert (d["name"], d["folder"], d["project"]) == ("hello.txt.gz", "/", ua_server.project_id)
    assert d["state"] in ("closing", "closed")
    assert d["properties"][".system-fileSignature"].endswith(" 1 78643200 " + os.path.realpath(data / "data/hello.txt"))
    assert gzip.decompress(content(ua_server, fid)) == b"hello world\n"
    err = p.stderr
    assert f"Uploading file data/hello.txt to file object {fid}" in err
    assert re.search(r'^\d{10} PID \d+ File "data/hello.txt" was uploaded successfully. Closing...$', err, re.M)
    assert re.search(r"^\d{10} PID \d+ \.\.\. all files closed\.$", err, re.M)
    assert re.search(r"^1 of 1 file uploaded; .* MB/s\)$", err, re.M)
    # re-run: same signature, closed → the existing ID, nothing new
    p2 = run_ua("data/hello.txt", cwd=data)
    assert p2.returncode == 0 and p2.stdout == p.stdout


def test_metadata_options(run_ua, ua_server, data):
    p = run_ua("-n", "renamed.txt", "-f", "/x/y/", "--property", "k1=v1", "--property", "k2=v2", "--type", "T1",
               "--tag", "t1", "--details", '{"a": [1, 2]}', "--visibility", "hidden", "--do-not-compress",
               "data/hello.txt", cwd=data)
    assert p.returncode == 0, p.stderr
    [fid] = ids(p.stdout)
    d = describe(ua_server, fid)
    assert (d["name"], d["folder"], d["hidden"]) == ("renamed.txt", "/x/y", True)
    assert d["properties"]["k1"] == "v1" and d["properties"]["k2"] == "v2"
    assert d["types"] == ["T1"] and d["tags"] == ["t1"]
    assert content(ua_server, fid) == b"hello world\n"


def test_some_failed_exit_1_order_kept(run_ua, make_server, data):
    srv = make_server(fault="put-500=1@bad*")
    (data / "data/bad.txt").write_text("bad\n")
    env = dict(srv.env(), **FAST)
    p = run_ua("-r", "2", "data/hello.txt", "data/bad.txt", "data/tree/a.txt", env=env, cwd=data)
    assert p.returncode == 1, p.stderr
    lines = ids(p.stdout)
    assert lines[1] == "failed" and ID_RE.match(lines[0]) and ID_RE.match(lines[2])
    assert 'File "data/bad.txt" could not be uploaded' in p.stderr
    assert re.search(r"^2 of 3 files uploaded, 1 failed;", p.stderr, re.M)


def test_recursive_tree_mirroring(run_ua, ua_server, data):
    p = run_ua("--recursive", "-f", "/mirror", "data/tree", cwd=data)
    assert p.returncode == 0, p.stderr
    got = [(describe(ua_server, f)["folder"], describe(ua_server, f)["name"]) for f in ids(p.stdout)]
    assert got == [("/mirror/tree", "a.txt.gz"), ("/mirror/tree/sub", "b.txt.gz"),
                   ("/mirror/tree/sub/deeper", "c.txt.gz")]
    # trailing slash: no "tree" level; -n renames the top level
    # (resume ignores folders, like the UA: a re-run elsewhere needs --do-not-resume)
    p = run_ua("--recursive", "--do-not-resume", "-f", "/m2", "-n", "renamed", "data/tree", cwd=data)
    assert [describe(ua_server, f)["folder"] for f in ids(p.stdout)] == [
        "/m2/renamed", "/m2/renamed/sub", "/m2/renamed/sub/deeper"]
    p = run_ua("--recursive", "--do-not-resume", "-f", "/m3", "data/tree/", cwd=data)
    assert [describe(ua_server, f)["folder"] for f in ids(p.stdout)] == ["/m3", "/m3/sub", "/m3/sub/deeper"]
    # without --recursive only the top-level files
    p = run_ua("--do-not-resume", "-f", "/m4", "data/tree", cwd=data)
    assert len(ids(p.stdout)) == 1 and describe(ua_server, p.stdout.strip())["folder"] == "/m4/tree"


def test_empty_directory(run_ua, data):
    (data / "empty").mkdir()
    p = run_ua("empty", cwd=data)
    assert p.returncode == 0 and p.stdout == "" and "all files closed" in p.stderr


def test_broken_symlink_and_fifo_reported_per_file(run_ua, ua_server, data):
    t = data / "data/tree"
    os.symlink("/nonexistent/file", t / "b-broken")
    os.mkfifo(t / "f-fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(t / "s-sock"))
    try:
        p = run_ua("--recursive", "--do-not-resume", "-f", "/bad", "data/tree", cwd=data, timeout=60)
    finally:
        s.close()
    assert p.returncode == 1, p.stderr
    lines = ids(p.stdout)
    # sorted walk: a.txt, b-broken, f-fifo, s-sock, sub/b.txt, sub/deeper/c.txt
    assert [x == "failed" for x in lines] == [False, True, True, True, False, False]
    assert 'File "data/tree/b-broken" could not be uploaded: broken symbolic link' in p.stderr
    assert 'File "data/tree/f-fifo" could not be uploaded: not a regular file (FIFO)' in p.stderr
    assert gzip.decompress(content(ua_server, lines[4])) == b"b\n"


def test_manifest_entries_are_uploaded(run_ua, ua_server, data):
    other = new_project(ua_server, "manifest-target")
    m = data / "m.json"
    m.write_text(json.dumps({
        other: [{"path": "data/hello.txt", "folder": "/m", "name": "h1"}],
        ua_server.project_id: [{"path": str(data / "data/tree/a.txt"), "folder": "/m", "name": "a1"}]}))
    p = run_ua("-m", "--do-not-compress", "m.json", "data/tree/sub/b.txt", cwd=data)
    assert p.returncode == 0, p.stderr
    lines = ids(p.stdout)
    assert len(lines) == 3
    order = sorted([other, ua_server.project_id])
    expect = {other: ("h1", b"hello world\n"), ua_server.project_id: ("a1", b"a\n")}
    for fid, proj in zip(lines[:2], order):
        d = describe(ua_server, fid)
        assert (d["project"], d["folder"], d["name"]) == (proj, "/m", expect[proj][0])
        assert content(ua_server, fid) == expect[proj][1]
    assert describe(ua_server, lines[2])["name"] == "b.txt"


def test_manifest_error_exit_2(run_ua, data):
    (data / "m.json").write_text('{"p": [{"path": "data/hello.txt", "name": "x"}]}')
    p = run_ua("-m", "m.json", cwd=data)
    assert p.returncode == 2 and p.stdout == ""
    assert "ERROR: The manifest file 'm.json' contains an invalid entry for project 'p' at index '0'. - missing " \
           "key 'folder'." in p.stderr


def test_stdin(run_ua, ua_server, data):
    payload = b"@r1\nACGT\n+\nIIII\n" * 1000
    p = run_ua("-i", "reads.fastq", input=payload, cwd=data)
    assert p.returncode == 0, p.stderr
    [fid] = ids(p.stdout)
    assert describe(ua_server, fid)["name"] == "reads.fastq.gz"
    assert gzip.decompress(content(ua_server, fid)) == payload
    p = run_ua("-i", "-n", "named.bin", "--do-not-compress", "label", input=b"xyz", cwd=data)
    [fid] = ids(p.stdout)
    assert describe(ua_server, fid)["name"] == "named.bin" and content(ua_server, fid) == b"xyz"


def test_multiple_projects_folders_names(run_ua, ua_server, data):
    p2 = new_project(ua_server, "pairing-second")
    p = run_ua("-p", ua_server.project_id, "-p", "pairing-second", "-f", "/one", "-f", "/two", "-n", "first.txt",
               "-n", "dirname", "--recursive", "data/hello.txt", "data/tree", cwd=data)
    assert p.returncode == 0, p.stderr
    got = [(d["project"], d["folder"], d["name"]) for d in (describe(ua_server, f) for f in ids(p.stdout))]
    assert got == [(ua_server.project_id, "/one", "first.txt.gz"), (p2, "/two/dirname", "a.txt.gz"),
                   (p2, "/two/dirname/sub", "b.txt.gz"), (p2, "/two/dirname/sub/deeper", "c.txt.gz")]


def test_same_file_twice_with_do_not_resume(run_ua, ua_server, data):
    p = run_ua("--do-not-resume", "data/hello.txt", "./data/../data/hello.txt", cwd=data)
    assert p.returncode == 0, p.stderr
    a, b = ids(p.stdout)
    assert a != b


def test_json_output(run_ua, make_server, data):
    srv = make_server(fault="put-500=1@bad*")
    (data / "data/bad.txt").write_text("bad\n")
    p = run_ua("--json", "-r", "1", "data/hello.txt", "data/bad.txt", env=dict(srv.env(), **FAST), cwd=data)
    assert p.returncode == 1
    objs = [json.loads(x) for x in p.stdout.splitlines()]
    assert [o["type"] for o in objs] == ["file", "file", "summary"]
    ok, bad, summary = objs
    assert ID_RE.match(ok["id"]) and ok["state"] == "uploaded" and ok["error"] is None
    assert (ok["path"], ok["name"], ok["folder"], ok["project"]) == ("data/hello.txt", "hello.txt.gz", "/",
                                                                     srv.project_id)
    assert ok["bytes_read"] == 12 and ok["bytes_sent"] > 0 and ok["parts"] == 1
    assert bad["state"] == "failed" and bad["error"]
    assert set(ok) == {"type", "path", "id", "project", "folder", "name", "state", "bytes_read", "bytes_sent",
                       "parts", "parts_skipped", "retries", "error"}
    assert summary["files"] == 2 and summary["ok"] == 1 and summary["failed"] == 1 and summary["exit_code"] == 1


def test_verbose_never_leaks_token_or_signature(run_ua, ua_server, data):
    p = run_ua("-v", "--do-not-resume", "data/hello.txt", cwd=data)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert ua_server.admin_token not in out
    assert "POST /file/new" in out or "/file/new" in out
    assert "PUT" in out
    for m in re.finditer(r"\?(\S+)", out):  # every query string that is printed is masked
        for pair in m.group(1).split("&"):
            if "=" in pair:
                assert pair.split("=", 1)[1].startswith("****"), pair
    assert not re.search(r"sig(nature)?=[0-9a-f]{8}", out)


def test_view_token_cannot_upload_but_upload_token_can(run_ua, ua_server, data):
    tok = ua_server.new_token(project=ua_server.project_id, level="UPLOAD")
    p = run_ua("--do-not-resume", "data/hello.txt", env=ua_server.env(token=tok), cwd=data)
    assert p.returncode == 0, p.stderr
    assert ID_RE.match(p.stdout.strip())


def test_hidden_apiserver_options_and_auth_token(run_ua, ua_server, data):
    env = {"DX_USER_CONF_DIR": str(data)}  # nothing configured at all
    p = run_ua("--apiserver-protocol", "http", "--apiserver-host", "127.0.0.1", "--apiserver-port", ua_server.port,
               "-a", ua_server.admin_token, "-p", ua_server.project_id, "--do-not-resume", "data/hello.txt",
               env=env, cwd=data)
    assert p.returncode == 0, p.stderr
    assert ID_RE.match(p.stdout.strip())


def test_wait_on_close(run_ua, make_server, data):
    srv = make_server(close_delay=1.5)
    p = run_ua("--wait-on-close", "data/hello.txt", env=srv.env(), cwd=data)
    assert p.returncode == 0, p.stderr
    assert describe(srv, p.stdout.strip())["state"] == "closed"
