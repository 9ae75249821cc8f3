"""Configuration resolution (ua/config.py) with temporary config directories."""

import json

import pytest

from ua.config import NO_TOKEN_MESSAGE, ConfigError, load_config, mask_token


def ctx(token):
    return json.dumps({"auth_token_type": "Bearer", "auth_token": token})


@pytest.fixture
def confdir(tmp_path):
    d = tmp_path / "conf"
    d.mkdir()
    return d


def env_for(confdir, **kw):
    e = {"DX_USER_CONF_DIR": str(confdir)}
    e.update(kw)
    return e


def test_defaults_and_missing_token(confdir):
    with pytest.raises(ConfigError) as e:
        load_config(env_for(confdir))
    assert str(e.value) == NO_TOKEN_MESSAGE
    c = load_config(env_for(confdir), require_token=False)
    assert c.api_url == "https://api.dnanexus.com:443" and c.token is None and c.project_context is None
    assert c.sources["DX_APISERVER_HOST"] == "default"


def test_env_beats_json_beats_old_file_per_key(confdir):
    (confdir / "environment.json").write_text(json.dumps({
        "DX_APISERVER_HOST": "json-host", "DX_APISERVER_PORT": 8080, "DX_SECURITY_CONTEXT": ctx("jsontoken"),
        "DX_PROJECT_CONTEXT_ID": "project-json"}))
    (confdir / "environment").write_text(
        "export DX_APISERVER_HOST='old-host'\nexport DX_APISERVER_PROTOCOL='http'\n"
        "export DX_CA_CERT='NOVERIFY'\n# comment\n")
    c = load_config(env_for(confdir, DX_APISERVER_HOST="env-host"))
    assert c.host == "env-host" and c.sources["DX_APISERVER_HOST"] == "environment"
    assert c.port == "8080" and c.sources["DX_APISERVER_PORT"].endswith("environment.json")
    assert c.protocol == "http" and c.sources["DX_APISERVER_PROTOCOL"].endswith("environment")
    assert c.ca_cert == "NOVERIFY"  # only in the old file: used (per-key lookup)
    assert c.token == "jsontoken" and c.project_context == "project-json"
    assert c.api_url == "http://env-host:8080"


def test_options_win(confdir):
    c = load_config(env_for(confdir, DX_SECURITY_CONTEXT=ctx("envtoken"), DX_APISERVER_HOST="h"),
                    auth_token="cli", apiserver_host="127.0.0.1", apiserver_port="1234", apiserver_protocol="http")
    assert c.token == "cli" and c.api_url == "http://127.0.0.1:1234" and c.sources["token"] == "--auth-token"


def test_default_conf_dir_is_home(tmp_path):
    d = tmp_path / ".dnanexus_config"
    d.mkdir()
    (d / "environment.json").write_text(json.dumps({"DX_SECURITY_CONTEXT": ctx("hometoken")}))
    c = load_config({"HOME": str(tmp_path)})
    assert c.token == "hometoken"


def test_bad_json_is_ignored_with_warning(confdir):
    (confdir / "environment.json").write_text("{not json")
    (confdir / "environment").write_text("export DX_SECURITY_CONTEXT='%s'\n" % ctx("oldtoken"))
    c = load_config(env_for(confdir))
    assert c.token == "oldtoken"
    assert any("Will ignore contents of this file" in w for w in c.warnings)


def test_json_with_invalid_value_type_ignored_whole(confdir):
    (confdir / "environment.json").write_text(json.dumps({"DX_SECURITY_CONTEXT": ctx("t"), "X": [1]}))
    c = load_config(env_for(confdir), require_token=False)
    assert c.token is None and any("invalid key" in w for w in c.warnings)


@pytest.mark.parametrize("bad", ["not json", json.dumps({"auth_token_type": "Bearer"}), json.dumps([1]),
                                 json.dumps({"auth_token": 5, "auth_token_type": "Bearer"})])
def test_unusable_security_context_is_absent(confdir, bad):
    with pytest.raises(ConfigError) as e:
        load_config(env_for(confdir, DX_SECURITY_CONTEXT=bad))
    assert str(e.value) == NO_TOKEN_MESSAGE
    c = load_config(env_for(confdir, DX_SECURITY_CONTEXT=bad), require_token=False)
    assert c.warnings


def test_workspace_in_a_job(confdir):
    base = env_for(confdir, DX_SECURITY_CONTEXT=ctx("t"), DX_PROJECT_CONTEXT_ID="project-a",
                   DX_WORKSPACE_ID="container-b")
    assert load_config(base).project_context == "project-a"
    assert load_config(dict(base, DX_JOB_ID="job-x")).project_context == "container-b"


def test_certificate(confdir, tmp_path):
    e = env_for(confdir, DX_SECURITY_CONTEXT=ctx("t"))
    c = load_config(e)
    assert c.ca_cert is None and c.verify_tls and c.ssl_context() is not None
    assert load_config(e, certificate_file="NOVERIFY").ssl_context() is False
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(dict(e, DX_CA_CERT=str(tmp_path / "nope.pem")))
    # http needs no CA file at all
    assert load_config(dict(e, DX_CA_CERT=str(tmp_path / "nope.pem")), apiserver_protocol="http").ssl_context() is None


def test_bad_server_settings(confdir):
    e = env_for(confdir, DX_SECURITY_CONTEXT=ctx("t"))
    with pytest.raises(ConfigError, match="At least one of apiserver host/port/protocol"):
        load_config(e, apiserver_host="")
    with pytest.raises(ConfigError, match="protocol"):
        load_config(e, apiserver_protocol="ftp")
    # empty port in the environment: dxpy drops the ":port" part
    assert load_config(dict(e, DX_APISERVER_PORT="")).api_url == "https://api.dnanexus.com"


def test_mask_token():
    assert mask_token("abcdefghijklmnop") == "abcd…"
    assert mask_token("short") == "…"
    assert mask_token(None) == "<none>"
    assert "efgh" not in mask_token("abcdefghijkl")


def test_no_mutation_of_environ(confdir):
    e = env_for(confdir, DX_SECURITY_CONTEXT=ctx("t"))
    before = dict(e)
    load_config(e)
    assert e == before
