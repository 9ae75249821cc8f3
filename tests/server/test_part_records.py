"""How a stored part is recorded and how /close's background step checks the parts:

* a PUT whose body finishes after the file left the open state (closed or removed meanwhile)
  is refused with 409 and changes neither the part on disk, its record nor ``modified``;
* closing → closed only happens when every recorded part is on disk with its recorded size;
  otherwise the file stays ``closing`` (and a restart retries once the part is back).
"""

from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.parse

from srvutil import call, md5hex, new_file, ok, raw, wait_state, wait_temp_part


def _start_put(url: str, body: bytes, sent: int) -> socket.socket:
    u = urllib.parse.urlsplit(url)
    s = socket.create_connection((u.hostname, u.port))
    head = (f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    s.sendall(head.encode() + body[:sent])
    return s


def _finish_put(s: socket.socket, rest: bytes) -> tuple[int, bytes]:
    s.sendall(rest)
    s.settimeout(30)
    r = http.client.HTTPResponse(s)
    try:
        r.begin()
        return r.status, r.read()
    finally:
        s.close()


def test_put_finishing_after_close_is_refused_and_changes_nothing(make_server):
    h = make_server(min_part_size=1)
    fid = new_file(h, name="late.bin")
    size = 400_000
    first, late = os.urandom(size), os.urandom(size)
    info = ok(h, f"/{fid}/upload", {"index": 1, "size": size})  # no md5: any bytes fit
    assert raw(info["url"], "PUT", first, {})[0] == 200
    before = ok(h, f"/{fid}/describe")
    s = _start_put(info["url"], late, size // 2)  # a replay of the same URL, still in flight
    wait_temp_part(h, fid)
    ok(h, f"/{fid}/close")
    closed = wait_state(h, fid, "closed")
    st, resp = _finish_put(s, late[size // 2:])
    assert st == 409 and b"<Code>InvalidState</Code>" in resp, (st, resp)
    assert b"is not in the open state" in resp
    after = ok(h, f"/{fid}/describe", {"parts": True})
    assert after["parts"] == before["parts"] == {"1": {"state": "complete", "size": size,
                                                       "md5": md5hex(first)}}
    assert after["modified"] == closed["modified"]
    assert (h.data_dir / "blobs" / fid / "1.part").read_bytes() == first
    assert not list((h.data_dir / "blobs" / fid).glob("*.tmp.*"))
    assert raw(ok(h, f"/{fid}/download")["url"])[2] == first


def test_put_finishing_after_removal_is_refused_and_leaves_nothing(make_server):
    h = make_server(min_part_size=1)
    fid = new_file(h, name="removed.bin")
    body = os.urandom(400_000)
    info = ok(h, f"/{fid}/upload", {"index": 1, "size": len(body), "md5": md5hex(body)})
    s = _start_put(info["url"], body, len(body) // 2)
    wait_temp_part(h, fid)
    ok(h, f"/{h.project_id}/removeObjects", {"objects": [fid]})
    st, resp = _finish_put(s, body[len(body) // 2:])
    assert st == 409 and b"<Code>ResourceNotFound</Code>" in resp, (st, resp)
    assert b"no longer exists" in resp
    d = h.data_dir / "blobs" / fid
    assert not d.exists() or not list(d.iterdir())
    st, res = call(h, f"/{fid}/describe")
    assert st == 404


def test_close_keeps_closing_until_every_part_is_on_disk(make_server):
    h = make_server(min_part_size=1)
    parts = [os.urandom(70_000), os.urandom(50_000), os.urandom(30_000)]
    fids = []
    for damage in ("missing", "short"):
        fid = new_file(h, name=f"{damage}.bin")
        for i, data in enumerate(parts, 1):
            info = ok(h, f"/{fid}/upload", {"index": i, "size": len(data), "md5": md5hex(data)})
            assert raw(info["url"], "PUT", data, {})[0] == 200
        p2 = h.data_dir / "blobs" / fid / "2.part"
        if damage == "missing":
            p2.rename(p2.with_name("2.saved"))
        else:
            p2.write_bytes(parts[1][:-1])
        ok(h, f"/{fid}/close")
        fids.append(fid)
    time.sleep(0.5)
    for fid in fids:
        d = ok(h, f"/{fid}/describe")
        assert d["state"] == "closing", d
        assert d["size"] == sum(map(len, parts))
        assert f"part 2 of {fid} is missing on disk" in h.server_log()
    # put the parts back: the restart finalises what was left closing
    missing, short = fids
    (h.data_dir / "blobs" / missing / "2.saved").rename(h.data_dir / "blobs" / missing / "2.part")
    (h.data_dir / "blobs" / short / "2.part").write_bytes(parts[1])
    h.restart()
    for fid in fids:
        wait_state(h, fid, "closed")
        assert raw(ok(h, f"/{fid}/download")["url"])[2] == b"".join(parts)
