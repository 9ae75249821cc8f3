"""Where ``ua`` finds its API server, token, project and CA certificate.

The sources are read the way the C++ Upload Agent and dxpy read them, per key, highest
priority first:

1. command-line options: ``--auth-token``, ``--apiserver-protocol/-host/-port``,
   ``--certificate-file``;
2. the process environment (``DX_APISERVER_HOST``, ``DX_APISERVER_PORT``,
   ``DX_APISERVER_PROTOCOL``, ``DX_SECURITY_CONTEXT``, ``DX_PROJECT_CONTEXT_ID``, ``DX_JOB_ID``,
   ``DX_WORKSPACE_ID``, ``DX_CA_CERT``);
3. ``$DX_USER_CONF_DIR/environment.json`` (default dir ``~/.dnanexus_config``): a flat JSON
   object of string or integer values;
4. the old-style ``environment`` file in the same directory (``export KEY='value'`` lines).

Everything here is a pure function of its arguments (an environment mapping and a home
directory), so it is unit-tested with temporary directories.
"""

from __future__ import annotations

import json
import os
import shlex
import ssl
from dataclasses import dataclass, field
from typing import Mapping

KEYS = (
    "DX_APISERVER_HOST", "DX_APISERVER_PORT", "DX_APISERVER_PROTOCOL", "DX_SECURITY_CONTEXT",
    "DX_PROJECT_CONTEXT_ID", "DX_JOB_ID", "DX_WORKSPACE_ID", "DX_CA_CERT",
)
DEFAULT_HOST = "api.dnanexus.com"
DEFAULT_PORT = "443"
DEFAULT_PROTOCOL = "https"
NOVERIFY = "NOVERIFY"

NO_TOKEN_MESSAGE = ("No Authentication token found, please provide a correct auth token (you may use "
                    "--auth-token option)")


class ConfigError(Exception):
    """Configuration cannot be used (no token, bad server info, missing CA file). Exit 3."""


@dataclass(frozen=True)
class Config:
    protocol: str
    host: str
    port: str
    token: str | None
    token_type: str = "Bearer"
    project_context: str | None = None  # DX_PROJECT_CONTEXT_ID, or DX_WORKSPACE_ID in a job
    ca_cert: str | None = None  # a CA bundle path, "NOVERIFY", or None = system store
    sources: dict[str, str] = field(default_factory=dict)  # key -> where its value came from
    warnings: tuple[str, ...] = ()

    @property
    def api_url(self) -> str:
        base = f"{self.protocol}://{self.host}"
        return f"{base}:{self.port}" if self.port else base

    @property
    def verify_tls(self) -> bool:
        return self.ca_cert != NOVERIFY

    def ssl_context(self) -> ssl.SSLContext | bool | None:
        """What aiohttp wants as ``ssl=``: None for http, False for NOVERIFY, else a context
        built from the CA file (or the system store when none is configured)."""
        if self.protocol.lower() != "https":
            return None
        if self.ca_cert == NOVERIFY:
            return False
        if self.ca_cert:
            return ssl.create_default_context(cafile=self.ca_cert)
        return ssl.create_default_context()


def mask_token(token: str | None) -> str:
    """``abcd…`` — enough to tell two tokens apart, never enough to use one."""
    if not token:
        return "<none>"
    if len(token) <= 8:
        return "…"
    return token[:4] + "…"


def config_dir(environ: Mapping[str, str], home: str | None = None) -> str:
    d = environ.get("DX_USER_CONF_DIR")
    if d:
        return os.path.expanduser(d)
    home = home if home is not None else environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".dnanexus_config")


def read_environment_json(path: str) -> tuple[dict[str, str], list[str]]:
    """The flat JSON object, or ({}, [warning]) when it exists but cannot be used."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [f"WARNING: cannot read '{path}' ({exc.strerror}); ignoring it."]
    try:
        data = json.loads(text)
    except ValueError as exc:
        return {}, [f"WARNING: An error occurred while trying to parse the JSON file '{path}'. "
                    f"Will ignore contents of this file. Error = '{exc}'"]
    if not isinstance(data, dict):
        return {}, [f"WARNING: The JSON file '{path}' is not a JSON object. Will ignore contents of this file."]
    out: dict[str, str] = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return {}, [f"WARNING: The JSON file '{path}' contains an invalid key (neither string, nor "
                        "integer). Will ignore contents of this file."]
        out[k] = str(v)
    return out, []


def read_old_environment(path: str) -> dict[str, str]:
    """Old-style ``environment`` file: lines ``export KEY='value'`` (shell quoting)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words and words[0] == "export":
            words = words[1:]
        for w in words:
            k, eq, v = w.partition("=")
            if eq and k:
                out[k] = v
    return out


def parse_security_context(text: str | None) -> tuple[str | None, str]:
    """(token, type) from ``DX_SECURITY_CONTEXT``; (None, "Bearer") when unusable."""
    if not text:
        return None, "Bearer"
    try:
        ctx = json.loads(text)
    except ValueError:
        return None, "Bearer"
    if not isinstance(ctx, dict):
        return None, "Bearer"
    token, ttype = ctx.get("auth_token"), ctx.get("auth_token_type", "Bearer")
    if not isinstance(token, str) or not token or not isinstance(ttype, str):
        return None, "Bearer"
    return token, ttype


def load_config(
    environ: Mapping[str, str] | None = None,
    *,
    home: str | None = None,
    auth_token: str | None = None,
    apiserver_protocol: str | None = None,
    apiserver_host: str | None = None,
    apiserver_port: str | None = None,
    certificate_file: str | None = None,
    require_token: bool = True,
) -> Config:
    """Resolve the configuration. Raises :class:`ConfigError` (exit 3) when unusable."""
    environ = os.environ if environ is None else environ
    cdir = config_dir(environ, home)
    json_path = os.path.join(cdir, "environment.json")
    old_path = os.path.join(cdir, "environment")
    from_json, warnings = read_environment_json(json_path)
    from_old = read_old_environment(old_path)

    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        for src_name, src in (("environment", environ), (json_path, from_json), (old_path, from_old)):
            if key in src and src[key] is not None:
                values[key] = src[key]
                sources[key] = src_name
                break

    def pick(opt: str | None, key: str, default: str, optname: str) -> str:
        if opt is not None:
            sources[key] = optname
            return opt
        if key in values:
            return values[key]
        sources[key] = "default"
        return default

    protocol = pick(apiserver_protocol, "DX_APISERVER_PROTOCOL", DEFAULT_PROTOCOL, "--apiserver-protocol")
    host = pick(apiserver_host, "DX_APISERVER_HOST", DEFAULT_HOST, "--apiserver-host")
    port = pick(apiserver_port, "DX_APISERVER_PORT", DEFAULT_PORT, "--apiserver-port")
    if not protocol or not host or (apiserver_port is not None and not port):
        raise ConfigError(
            "At least one of apiserver host/port/protocol is not specified, unable to continue without "
            "this information. Please use --apiserver-host, --apiserver-port, --apiserver-protocol to "
            "provide this info on command line")
    if protocol.lower() not in ("http", "https"):
        raise ConfigError(f"Unsupported API server protocol '{protocol}' (use http or https)")
    if port and not port.isdigit():
        raise ConfigError(f"Invalid API server port '{port}'")

    if auth_token is not None:
        token, ttype = auth_token, "Bearer"
        sources["token"] = "--auth-token"
    else:
        token, ttype = parse_security_context(values.get("DX_SECURITY_CONTEXT"))
        if "DX_SECURITY_CONTEXT" in values:
            sources["token"] = sources["DX_SECURITY_CONTEXT"]
            if token is None:
                warnings.append(f"WARNING: DX_SECURITY_CONTEXT (from {sources['DX_SECURITY_CONTEXT']}) is not "
                                "a JSON object with string auth_token and auth_token_type; ignored.")
    if ttype.lower() != "bearer":
        raise ConfigError(f"Unsupported auth_token_type '{ttype}' in DX_SECURITY_CONTEXT (only Bearer)")
    if require_token and not token:
        raise ConfigError(NO_TOKEN_MESSAGE)

    if values.get("DX_JOB_ID"):
        project = values.get("DX_WORKSPACE_ID") or None
        if project:
            sources["project"] = sources["DX_WORKSPACE_ID"] + " (DX_WORKSPACE_ID, in a job)"
    else:
        project = values.get("DX_PROJECT_CONTEXT_ID") or None
        if project:
            sources["project"] = sources["DX_PROJECT_CONTEXT_ID"]

    if certificate_file is not None:
        ca = certificate_file
        sources["DX_CA_CERT"] = "--certificate-file"
    else:
        ca = values.get("DX_CA_CERT") or None
    if ca and ca != NOVERIFY and protocol.lower() == "https" and not os.path.isfile(ca):
        raise ConfigError(f"CA certificate file '{ca}' (from {sources.get('DX_CA_CERT')}) does not exist. "
                          "Use --certificate-file PATH, or NOVERIFY to disable verification (not recommended).")

    return Config(protocol=protocol, host=host, port=port, token=token, token_type="Bearer",
                  project_context=project, ca_cert=ca, sources=sources, warnings=tuple(warnings))
