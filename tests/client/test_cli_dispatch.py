"""ua/cli.py in-process: mode dispatch and exit codes that need no server, and --help staying light."""

import subprocess
import sys

from ua.cli import run


def test_help_does_not_import_network_stack():
    code = ("import sys, ua.cli\n"
            "try:\n    ua.cli.run(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('aiohttp', 'isal', 'tqdm', 'ua.api', 'ua.upload.pipeline', 'asyncio') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"


def test_parse_error_exit_2(capsys):
    assert run(["--nope"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.splitlines()[0] == "Error processing arguments: unrecognised option '--nope'"


def test_help_exit_0_on_stdout(capsys):
    assert run(["-h"]) == 0
    cap = capsys.readouterr()
    assert "Usage: ua" in cap.out and cap.err == ""


def test_version_beats_help_and_env_beats_version(capsys, monkeypatch, tmp_path):
    assert run(["--help", "--version"]) == 0
    assert capsys.readouterr().out.startswith("ua ")
    monkeypatch.setenv("DX_USER_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("DX_SECURITY_CONTEXT", '{"auth_token_type": "Bearer", "auth_token": "tok-1234567890"}')
    monkeypatch.delenv("DX_PROJECT_CONTEXT_ID", raising=False)
    monkeypatch.delenv("DX_JOB_ID", raising=False)
    assert run(["--version", "--env", "--test"]) == 0
    out = capsys.readouterr().out
    assert "environment info" in out and "tok-1234567890" not in out and "Auth token: tok-…" in out


def test_validation_before_network(capsys, monkeypatch, tmp_path):
    """Validation errors (exit 2) come before any connection attempt: the server here does not exist."""
    monkeypatch.setenv("DX_USER_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("DX_SECURITY_CONTEXT", '{"auth_token_type": "Bearer", "auth_token": "t"}')
    monkeypatch.setenv("DX_APISERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("DX_APISERVER_PORT", "9")
    monkeypatch.setenv("DX_APISERVER_PROTOCOL", "http")
    monkeypatch.setenv("DX_PROJECT_CONTEXT_ID", "project-" + "B" * 24)
    assert run([str(tmp_path / "missing.txt")]) == 2
    assert f'ERROR: File "{tmp_path / "missing.txt"}" does not exist' in capsys.readouterr().err
