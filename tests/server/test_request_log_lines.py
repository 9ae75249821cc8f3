"""The request log line is exactly ``json.dumps`` of the documented record (keys, order,
separators, escaping), whatever the route, file and fault strings hold; and a request's line
is in the log by the time its response has arrived."""

from __future__ import annotations

import json
import time

from srvutil import new_file, ok

from ua.server.app import RequestLog

KEYS = ["t", "method", "route", "status", "file", "index", "bytes", "ms", "fault"]


def test_log_line_is_json_dumps_of_the_record(tmp_path):
    path = tmp_path / "requests.jsonl"
    cases = [
        ("POST", "/file/new", 200, None, None, 12, None),
        ("PUT", "PUT /upload", 0, "file-" + "x" * 24, 3, 0, "put-reset"),
        ("POST", '/a"b\\c/\u00e9\u2028\x01\t', 404, 'f"\n\u00ff', None, 10**13, None),
        ("GET", "GET /download", 206, "file-y", None, 0, None),
        ("HEAD", "GET /download", 416, "\ud800", 10_000, 5, "api-503"),
    ]
    log = RequestLog(path)
    for method, route, status, file, index, nbytes, fault in cases:
        log.write(method=method, route=route, status=status, file=file, index=index,
                  nbytes=nbytes, start=time.monotonic() - 0.0123, fault=fault)
    log.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(cases)
    for line, (method, route, status, file, index, nbytes, fault) in zip(lines, cases):
        rec = json.loads(line)
        assert list(rec) == KEYS
        assert isinstance(rec["t"], float) and abs(rec["t"] - time.time()) < 60
        assert rec["ms"] >= 12.3
        want = {"t": rec["t"], "method": method, "route": route, "status": status,
                "file": file, "index": index, "bytes": nbytes, "ms": rec["ms"], "fault": fault}
        assert line == json.dumps(want)


def test_log_appends_to_an_existing_log(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"old": 1}\n')
    log = RequestLog(path)
    log.write(method="POST", route="/system/whoami", status=200, file=None, index=None,
              nbytes=2, start=time.monotonic(), fault=None)
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"old": 1}' and json.loads(lines[1])["route"] == "/system/whoami"


def test_each_line_is_there_when_the_response_arrives(ua_server):
    h = ua_server
    for i in range(20):
        fid = new_file(h, name=f"logged-{i}.bin")
        ok(h, f"/{fid}/upload", {"index": 1, "size": 1})
        recs = [r for r in h.requests() if r["file"] == fid]
        assert [(r["route"], r["status"]) for r in recs] == [("/file/new", 200),
                                                           (f"/{fid}/upload", 200)], recs


def _write_n(log: RequestLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.write(method="POST", route=f"/file-{i:024d}/close", status=200, file=None,
                  index=i, nbytes=0, start=time.monotonic(), fault=None)


def test_log_rotates_past_its_size_and_keeps_the_newest_files(tmp_path):
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, max_bytes=2000, keep=2)
    _write_n(log, 200)
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    line_len = len((tmp_path / "requests.jsonl.1").read_text().splitlines()[0]) + 1
    indexes = []
    for name in ("requests.jsonl.2", "requests.jsonl.1", "requests.jsonl"):
        text = (tmp_path / name).read_text()
        assert text == "" or text.endswith("\n")  # never a line split between two files
        assert len(text) < 2000 + line_len
        indexes += [json.loads(x)["index"] for x in text.splitlines()]
    # oldest first, no gaps, ending with the last record written
    assert indexes == list(range(indexes[0], 200)) and indexes[0] > 0


def test_log_reopened_counts_what_is_already_there(tmp_path):
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path)  # no limit: one file
    _write_n(log, 30)
    log.close()
    size = path.stat().st_size
    log = RequestLog(path, max_bytes=size + 10, keep=1)  # a restart with a limit
    _write_n(log, 1, start=30)
    log.close()
    assert json.loads((tmp_path / "requests.jsonl.1").read_text().splitlines()[-1])["index"] == 30
    assert path.read_text() == ""


def test_server_rotates_its_request_log(make_server):
    h = make_server(request_log_max_bytes=4000, request_log_keep=1)
    for _ in range(40):
        new_file(h)
    logs = sorted(p.name for p in h.data_dir.iterdir() if p.name.startswith("requests.jsonl"))
    assert logs == ["requests.jsonl", "requests.jsonl.1"]
    rotated = (h.data_dir / "requests.jsonl.1").read_text().splitlines()
    assert rotated and all(json.loads(x)["route"] == "/file/new" for x in rotated)
