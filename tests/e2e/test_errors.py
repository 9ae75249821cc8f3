"""`ua` as a subprocess: usage, validation and start-up errors — messages, exit codes, and that
nothing reaches stdout or the server's file store."""

import json
import socket

import pytest

NOT_VALID = ('ERROR: "{spec}" does not represent a valid project name or ID (with >=UPLOAD access). Please check '
             "the project name/ID given and whether you have >= UPLOAD permission to project specified.")


def new_project(server, name):
    """Through the API (an admin subprocess per project is slow)."""
    status, body = server.api("/project/new", {"name": name})
    assert status == 200, body
    return body["id"]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    (tmp_path / "b.txt").write_text("world\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "c.txt").write_text("c\n")
    return tmp_path


def file_news(server):
    return [r for r in server.requests() if r["route"] == "/file/new"]


@pytest.mark.parametrize("args,reason", [
    (["--foo", "a.txt"], "unrecognised option '--foo'"),
    (["--do-not", "a.txt"], "option '--do-not' is ambiguous and matches '--do-not-compress', and '--do-not-resume'"),
    (["a.txt", "--chunk-size"], "the required argument for option '--chunk-size' is missing"),
    (["-u", "abc", "a.txt"], "the argument ('abc') for option '--upload-threads' is invalid"),
    (["--env=yes"], "option '--env' does not take any arguments"),
    (["-a", "x", "-a", "y", "a.txt"], "option '--auth-token' cannot be specified more than once"),
    (["-s", "5m", "a.txt"], "Invalid size argument: '5m'; provide an integer optionally followed by units "
                            "(B, K, M, or G)"),
    (["--throttle", "1.5M", "a.txt"], "Invalid size argument: '1.5M'; provide an integer optionally followed "
                                      "by units (B, K, M, or G)"),
])
def test_usage_errors_exit_2(run_ua, files, args, reason):
    p = run_ua(*args, cwd=files)
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert lines[0] == f"Error processing arguments: {reason}"
    assert "ua --help" in lines[1]


def test_no_file_argument_prints_help_exit_2(run_ua):
    p = run_ua()
    assert p.returncode == 2 and p.stdout == ""
    assert "Usage: ua" in p.stderr and "no file to upload" in p.stderr


def test_help_and_version_exit_0(run_ua):
    p = run_ua("--help")
    assert p.returncode == 0 and "Exit codes" in p.stdout and "--json" in p.stdout
    v = run_ua("--version")
    assert v.returncode == 0
    assert v.stdout.splitlines()[0].startswith("ua ") and "(Upload Agent compatible 1.5.33)" in v.stdout
    assert "aiohttp" in v.stdout and "isal" in v.stdout and "python" in v.stdout


def test_mode_dispatch_env_wins_over_version(run_ua, ua_server):
    p = run_ua("--version", "--env")
    assert p.returncode == 0 and "environment info" in p.stdout and "Upload Agent compatible" not in p.stdout


@pytest.mark.parametrize("args,msg", [
    (["nope.txt"], 'File "nope.txt" does not exist'),
    (["/dev/null"], "Argument /dev/null is not a regular file or directory."),
    (["-i", "x", "y"], "Only one filename can be specified when reading from stdin."),
    (["-n", "only-one", "a.txt", "b.txt"], "Must specify a name for each file; there are 2 files, but only 1 "
                                           "names were provided."),
    (["-p", "P1", "-p", "P2", "-p", "P3", "a.txt", "b.txt"], "Must specify a project for each file; there are 2 "
                                                             "files, but only 3 projects were provided."),
    (["-f", "/x", "-f", "/y", "-f", "/z", "a.txt", "dir"], "Must specify a folder for each file; there are 2 "
                                                           "files, but only 3 folders were provided."),
    (["--read-threads", "0", "a.txt"], "Number of read threads must be positive: 0"),
    (["-c", "0", "a.txt"], "Number of compression threads must be positive: 0"),
    (["-u", "0", "a.txt"], "Number of upload threads must be positive: 0"),
    (["-s", "4M", "a.txt"], "Minimum chunk size is 5242880 (5 MB): 4194304"),
    (["-r", "0", "a.txt"], "Number of tries per chunk must be positive: 0"),
    (["--throttle", "1K", "a.txt"], "Uploads are throttled to 1024 bytes/sec, which is less than 4 Kbytes/sec. "
                                    "Choose a larger value."),
    (["--property", "a=b=c", "a.txt"], "Invalid property argument; provide properties in key=value format"),
    (["--details", "7", "a.txt"], "JSON Data must be a JSON object or JSON array"),
    (["--compress-level", "9", "a.txt"], "Compression level must be between 0 and 3: 9"),
    (["a.txt", "./a.txt"], 'File "./a.txt" and "a.txt" have same Signature. You cannot upload two files with same '
                           "signature to same project without using '--do-not-resume' flag"),
])
def test_validation_errors_exit_2(run_ua, ua_server, files, args, msg):
    before = len(file_news(ua_server))
    p = run_ua(*args, cwd=files)
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    assert f"ERROR: {msg}" in p.stderr.splitlines()
    assert len(file_news(ua_server)) == before


def test_details_parse_error(run_ua, files):
    p = run_ua("--details", "{oops", "a.txt", cwd=files)
    assert p.returncode == 2 and "ERROR: Error formating Json Data: " in p.stderr


def test_no_project_anywhere(run_ua, ua_server, files):
    env = ua_server.env()
    del env["DX_PROJECT_CONTEXT_ID"]
    p = run_ua("a.txt", env=env, cwd=files)
    assert p.returncode == 2 and p.stdout == ""
    assert ("ERROR: A project must be specified (or present in environment variables/config file). You may use "
            "--project to specify project id/name on command line") in p.stderr


def test_file_limit(run_ua, tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(1001):
        (d / f"f{i}").write_text("")
    p = run_ua("many", cwd=tmp_path)
    assert p.returncode == 2 and "ERROR: The number of files to upload is limited to 1000" in p.stderr


def test_missing_token_exit_3(run_ua, ua_server, files):
    env = ua_server.env()
    del env["DX_SECURITY_CONTEXT"]
    for args in (["a.txt"], ["--test"]):
        p = run_ua(*args, env=env, cwd=files)
        assert "No Authentication token found, please provide a correct auth token (you may use --auth-token " \
               "option)" in p.stdout + p.stderr
        assert p.returncode == (3 if args == ["a.txt"] else 1)
    p = run_ua("a.txt", env=env, cwd=files)
    assert p.stdout == ""
    assert p.stderr.strip() == ("ERROR: No Authentication token found, please provide a correct auth token (you may "
                                "use --auth-token option)")


def test_token_from_config_file(run_ua, ua_server, files, tmp_path):
    env = ua_server.env()
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "environment.json").write_text(json.dumps({"DX_SECURITY_CONTEXT": env.pop("DX_SECURITY_CONTEXT"),
                                                       "DX_APISERVER_HOST": "wrong-host-from-file"}))
    env["DX_USER_CONF_DIR"] = str(conf)
    p = run_ua("--env", env=env)
    assert p.returncode == 0, p.stderr
    assert "API server host:     127.0.0.1" in p.stdout  # environment beats the file
    assert "environment.json" in p.stdout  # token source shown
    assert ua_server.admin_token not in p.stdout + p.stderr


def test_unknown_project_name_and_id(run_ua, ua_server, files):
    before = len(file_news(ua_server))
    for spec in ("no such project", "project-" + "B" * 24):
        p = run_ua("-p", spec, "a.txt", cwd=files)
        assert p.returncode == 3, p.stderr
        assert p.stdout == ""
        assert NOT_VALID.format(spec=spec) in p.stderr.splitlines()
    assert len(file_news(ua_server)) == before


def test_project_by_name_and_ambiguous_name(run_ua, ua_server, files):
    pid = new_project(ua_server, "unique-name-e2e")
    p = run_ua("-p", "unique-name-e2e", "a.txt", cwd=files)
    assert p.returncode == 0, p.stderr
    assert ua_server.api(f"/{p.stdout.strip()}/describe")[1]["project"] == pid
    new_project(ua_server, "twin")
    new_project(ua_server, "twin")
    before = len(file_news(ua_server))
    p = run_ua("-p", "twin", "a.txt", cwd=files)
    assert p.returncode == 3 and p.stdout == ""
    assert 'ERROR: "twin" does not uniquely identify a project (multiple matches found)' in p.stderr
    assert len(file_news(ua_server)) == before


def test_view_scoped_token_gets_project_error(run_ua, ua_server, files):
    tok = ua_server.new_token(project=ua_server.project_id, level="VIEW")
    before = len(file_news(ua_server))
    p = run_ua("a.txt", env=ua_server.env(token=tok), cwd=files)
    assert p.returncode == 3 and p.stdout == ""
    assert NOT_VALID.format(spec=ua_server.project_id) in p.stderr
    assert len(file_news(ua_server)) == before
    assert tok not in p.stderr


def test_revoked_and_bogus_token(run_ua, ua_server, files):
    tok = ua_server.new_token(project=ua_server.project_id, level="UPLOAD")
    ua_server.admin("token", "revoke", tok)
    for t in (tok, "not-a-real-token-1234567890"):
        p = run_ua("a.txt", env=ua_server.env(token=t), cwd=files)
        assert p.returncode == 3, p.stderr
        assert p.stdout == ""
        [line] = [ln for ln in p.stderr.splitlines() if ln.startswith("ERROR:")]
        assert line.startswith(f"ERROR: the auth token was rejected by {ua_server.url} (InvalidAuthentication")
        assert line.endswith("Check --auth-token or DX_SECURITY_CONTEXT.")
        assert t not in p.stderr


def test_auth_token_option_wins(run_ua, ua_server, files):
    p = run_ua("-a", "bogus-token-from-cli-000", "a.txt", cwd=files)  # env has the valid admin token
    assert p.returncode == 3 and "the auth token was rejected" in p.stderr


def test_unreachable_server(run_ua, ua_server, files):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(ua_server.env(), DX_APISERVER_PORT=str(port))
    env["UA_RETRY_BASE_DELAY"] = "0.001"
    p = run_ua("a.txt", env=env, cwd=files, timeout=60)
    assert p.returncode == 3 and p.stdout == ""
    [line] = [ln for ln in p.stderr.splitlines() if ln.startswith("ERROR:")]
    assert line.startswith(f"ERROR: Unable to connect to API server http://127.0.0.1:{port}")
    assert "ua --env" in line
