"""Progress reporter (ua/upload/progress.py) and end-of-run output (ua/upload/output.py)."""

import io
import json
import re
import time

import pytest

from ua.upload.model import FileResult, FileSource, FileState, FileTask
from ua.upload.output import exit_code, summary_line, write_stdout
from ua.upload.progress import Reporter, progress_interval

SPEED_RE = re.compile(r"^\d{10} PID \d+ Transfer speed: average = [ \d]{2}\d\.\d\d MB/sec  instantaneous = "
                      r"[ \d]{2}\d\.\d\d MB/sec$")


def task(label, project="project-x"):
    return FileTask(label=label, source=FileSource.PATH, project=project, folder="/", name=label.split("/")[-1],
                    local_path="/abs/" + label)


def test_interval_env(monkeypatch):
    monkeypatch.setenv("UA_PROGRESS_INTERVAL", "0.2")
    assert progress_interval() == 0.2
    monkeypatch.setenv("UA_PROGRESS_INTERVAL", "junk")
    assert progress_interval() == 10.0
    monkeypatch.delenv("UA_PROGRESS_INTERVAL")
    assert progress_interval() == 10.0


def test_plain_mode_lines():
    out = io.StringIO()
    r = Reporter("plain", stream=out, total_files=2, total_bytes=300, throttle=409600, interval=0.05)
    a, b = task("data/a.bin"), task("data/b.txt")
    r.start()
    r.on_file_started(a, 200, "file-a")
    r.on_file_started(b, 100, "file-b")
    r.on_bytes_sent(a, 50)
    r.on_bytes_read(a, 100)
    time.sleep(0.2)
    r.on_bytes_read(b, 100)
    r.on_file_done(FileResult(task=b, state=FileState.UPLOADED, file_id="file-b", bytes_read=100))
    r.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert "data/a.bin  50.00% complete, data/b.txt   0.00% complete" in lines
    assert any(ln == "data/a.bin  50.00% complete" for ln in lines)  # b finished, no longer listed
    speed = [ln for ln in lines if "Transfer speed" in ln]
    assert len(speed) >= 3 and all(SPEED_RE.match(ln) for ln in speed), speed
    assert lines.count(" (throttled to 409600 bytes/sec)") == len(speed)
    assert any(re.match(r'^\d{10} PID \d+ File "data/b.txt" was uploaded successfully. Closing...$', ln)
               for ln in lines)
    assert lines[0] == "0 of 2 files done"  # the start line


def test_messages_mode_has_no_status_lines():
    out = io.StringIO()
    r = Reporter("messages", stream=out, total_files=1, interval=0.01)
    a = task("x.txt")
    r.start()
    r.on_file_started(a, 5, "file-1")
    r.on_file_message(a, "Uploading file x.txt to file object file-1")
    r.on_retry(a, 1, 1, "boom")  # hidden without --verbose
    r.on_file_done(FileResult(task=a, state=FileState.FAILED, error="InvalidInput: 'bad'"))
    time.sleep(0.05)
    r.close()
    assert out.getvalue().splitlines() == ["Uploading file x.txt to file object file-1",
                                           "File \"x.txt\" could not be uploaded: InvalidInput: 'bad'"]


def test_verbose_shows_retries():
    out = io.StringIO()
    r = Reporter("messages", stream=out, verbose=True)
    r.on_retry(task("y"), 3, 2, "HTTP 500")
    assert out.getvalue() == 'Retrying part 3 of "y" (attempt 2): HTTP 500\n'


def test_bars_mode_counts_bytes():
    out = io.StringIO()
    r = Reporter("bars", stream=out, total_files=1, total_bytes=1000)
    a = task("big.bin")
    r.start()
    r.on_file_started(a, 1000, "file-1")
    r.on_bytes_read(a, 600)
    r.on_file_message(a, "a message between bars")
    assert r._overall.n == 600
    r.on_file_done(FileResult(task=a, state=FileState.UPLOADED, file_id="file-1"))
    r.close()
    text = out.getvalue()
    assert "a message between bars" in text and "1/1 files" in text


def results():
    a, b = task("a.txt"), task("b.txt")
    return [FileResult(task=a, state=FileState.UPLOADED, file_id="file-A", remote_name="a.txt.gz", bytes_read=10,
                       bytes_sent=30, parts=1),
            FileResult(task=b, state=FileState.FAILED, file_id="file-B", remote_name="b.txt.gz", error="boom")]


def test_plain_stdout_and_exit_code():
    out = io.StringIO()
    rs = results()
    write_stdout(rs, out, as_json=False, seconds=1.0, code=exit_code(rs))
    assert out.getvalue() == "file-A\nfailed\n"
    assert exit_code(rs) == 1 and exit_code(rs[:1]) == 0 and exit_code(rs, interrupted=True) == 130
    assert exit_code([]) == 0


def test_json_stdout_shape():
    out = io.StringIO()
    rs = results()
    write_stdout(rs, out, as_json=True, seconds=2.0, code=1)
    objs = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert [o["type"] for o in objs] == ["file", "file", "summary"]
    assert objs[0] == {"type": "file", "path": "a.txt", "id": "file-A", "project": "project-x", "folder": "/",
                       "name": "a.txt.gz", "state": "uploaded", "bytes_read": 10, "bytes_sent": 30, "parts": 1,
                       "parts_skipped": 0, "retries": 0, "error": None}
    assert objs[1]["state"] == "failed" and objs[1]["error"] == "boom"
    assert objs[2] == {"type": "summary", "files": 2, "ok": 1, "failed": 1, "cancelled": 0, "bytes_read": 10,
                       "bytes_sent": 30, "seconds": 2.0, "exit_code": 1}


@pytest.mark.parametrize("secs", [0.0, 2.0])
def test_summary_line(secs):
    line = summary_line(results(), secs)
    assert line.startswith("1 of 2 files uploaded, 1 failed; 10 B read, 30 B sent in")
    assert "MB/s" in line and "\n" not in line


def test_in_flight_estimate_is_monotonic_and_capped():
    r = Reporter("plain", stream=io.StringIO(), total_files=1, interval=100)
    a = task("f.bin")
    r.on_file_started(a, 1000, "file-1")
    st = r._files[id(a)]
    r.on_bytes_sent(a, 300)  # part 1 on the wire, not complete yet
    assert st.percent() == 30.0
    r.on_bytes_read(a, 500)  # part 1 complete: 500 raw bytes (compressed to 300)
    assert st.percent() == 50.0
    r.on_bytes_sent(a, 100)
    assert st.percent() == 60.0
    r.on_bytes_sent(a, 10_000)  # never above the size
    assert st.percent() == 100.0
    r.on_bytes_read(a, 100)
    assert st.percent() == 100.0 and st.shown == 1000


def test_stdin_status_shows_bytes():
    r = Reporter("plain", stream=io.StringIO(), total_files=1, interval=100)
    t = FileTask(label="reads.fq", source=FileSource.STDIN, project="p", folder="/", name="reads.fq")
    r.on_file_started(t, None, "file-1")
    r.on_bytes_read(t, 3 * 1024 * 1024)
    assert r.status_lines()[0] == "reads.fq 3.00 MB read"
