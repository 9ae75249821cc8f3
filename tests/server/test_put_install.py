"""Storage PUTs racing each other, /close and removal must come out as if every PUT and
/close were atomic:

* the same signed URL PUT concurrently with different bytes: the part row describes exactly
  the bytes on disk (the last rename wins, and it is the one recorded);
* /close racing PUTs: a closed file's content is exactly the recorded parts; a PUT that
  lost the race is refused (409) and changes nothing;
* removing a file while its part is being stored leaves no blob directory behind.
"""

from __future__ import annotations

import hashlib
import os
import threading

from srvutil import call, md5hex, new_file, ok, put_part, raw, wait_state


def _part_on_disk(h, fid, index):
    return (h.data_dir / "blobs" / fid / f"{index}.part").read_bytes()


def _start_puts(url, bodies):
    """One thread per body, each PUTting it to ``url``: (threads, statuses so far)."""
    statuses = []
    threads = [threading.Thread(target=lambda b=b: statuses.append(raw(url, "PUT", b, {})[0]))
               for b in bodies]
    for t in threads:
        t.start()
    return threads, statuses


def _join(threads):
    for t in threads:
        t.join(30)


def test_concurrent_replays_of_one_url_record_the_bytes_on_disk(ua_server):
    h = ua_server
    for round_ in range(8):
        fid = new_file(h, name=f"replay-{round_}.bin")
        size = 200_000 + round_
        info = ok(h, f"/{fid}/upload", {"index": 1, "size": size})  # no md5: any bytes fit
        bodies = [os.urandom(size) for _ in range(4)]
        threads, results = _start_puts(info["url"], bodies)
        _join(threads)
        assert results == [200] * 4
        part = ok(h, f"/{fid}/describe")["parts"]["1"]
        disk = _part_on_disk(h, fid, 1)
        assert disk in bodies
        assert part == {"state": "complete", "size": size, "md5": md5hex(disk)}


def test_close_racing_puts_never_closes_other_bytes(make_server):
    h = make_server(min_part_size=1)
    for round_ in range(6):
        fid = new_file(h, name=f"race-{round_}.bin")
        first = os.urandom(150_000)
        assert put_part(h, fid, 1, first)[0] == 200
        size = 150_000
        info = ok(h, f"/{fid}/upload", {"index": 2, "size": size})
        second = os.urandom(size)
        assert raw(info["url"], "PUT", second, {})[0] == 200
        replay = [os.urandom(size) for _ in range(3)]
        threads, statuses = _start_puts(info["url"], replay)
        st, res = call(h, f"/{fid}/close")
        _join(threads)
        assert st == 200, res
        assert set(statuses) <= {200, 409}, statuses
        d = wait_state(h, fid, "closed")
        got = raw(ok(h, f"/{fid}/download")["url"])[2]
        assert got[:size] == first and len(got) == 2 * size
        assert got[size:] in [second, *replay]
        assert d["size"] == 2 * size
        # the closed file's recorded part is what is on disk
        assert hashlib.md5(_part_on_disk(h, fid, 2)).hexdigest() == md5hex(got[size:])


def test_remove_while_storing_leaves_no_blobs(ua_server):
    h = ua_server
    for round_ in range(6):
        fid = new_file(h, name=f"gone-{round_}.bin")
        data = os.urandom(3_000_000)
        info = ok(h, f"/{fid}/upload", {"index": 1, "size": len(data), "md5": md5hex(data)})
        headers = {k: v for k, v in info["headers"].items() if k.lower() != "content-length"}
        out = []
        t = threading.Thread(target=lambda: out.append(raw(info["url"], "PUT", data, headers)[0]))
        t.start()
        ok(h, f"/{h.project_id}/removeObjects", {"objects": [fid]})
        t.join(30)
        assert out and out[0] in (200, 404, 409), out
        assert not (h.data_dir / "blobs" / fid).exists() or \
            not list((h.data_dir / "blobs" / fid).iterdir())
