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
