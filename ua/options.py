"""Command-line option table, parsing and value validation for ``ua``.

The option set, short forms, defaults and messages follow the C++ Upload Agent 1.5.33
(docs: ../shared/reference/upload-agent.md §1). Parsing is done by click underneath, but argv
is checked first by :func:`_prescan` so that errors read like the Upload Agent's
(``unrecognised option '--foo'``, ``option '--do-not' is ambiguous …``) and so that long
options accept unambiguous prefixes, as Boost.Program_options does.

Two error classes, both exit 2 in ``ua`` (the C++ agent uses 1):

* :class:`UsageError` — the command line cannot be parsed; printed as
  ``Error processing arguments: <reason>`` plus a short hint.
* :class:`ValidationError` — parsed, but a value is not acceptable; printed as ``ERROR: <msg>``.

Nothing here touches the network or imports the upload pipeline, so ``ua --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import click

KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 75 * MIB
MIN_CHUNK_SIZE = 5 * MIB
MAX_FILES = 1000
UA_COMPAT_VERSION = "1.5.33"


class UsageError(Exception):
    """The command line could not be parsed (printed as ``Error processing arguments: …``)."""


class ValidationError(Exception):
    """A parsed value is not acceptable (printed as ``ERROR: …``)."""


def default_compress_threads() -> int:
    # The C++ agent leaves a core for its read and upload threads (min(8, max(CPUs-1, 1))).
    # ISA-L and hashlib release the GIL and the event loop needs little CPU, so ua uses every
    # core: on 2 cores that is 2 threads, 383 vs 273 MB/s on plain FASTQ (docs/benchmarks.md).
    return min(8, max(os.cpu_count() or 1, 1))


# --------------------------------------------------------------------------- option table
# kind: "flag" (no value), "one" (single value, may appear once), "many" (repeatable).
@dataclass(frozen=True)
class Opt:
    long: str
    short: str | None
    kind: str
    dest: str
    help: str
    metavar: str | None = None
    hidden: bool = False


OPTIONS: tuple[Opt, ...] = (
    Opt("--help", "-h", "flag", "help", "Show this help and exit."),
    Opt("--version", None, "flag", "version", "Print version information (stdout) and exit."),
    Opt("--env", "-e", "flag", "env", "Print the API server, token (masked) and current project, then exit."),
    Opt("--auth-token", "-a", "one", "auth_token", "Authentication token; overrides DX_SECURITY_CONTEXT.", "TOKEN"),
    Opt("--project", "-p", "many", "project", "Project name or ID; one for all files, or one per file argument. "
        "Default: DX_PROJECT_CONTEXT_ID.", "PROJECT"),
    Opt("--folder", "-f", "many", "folder", "Remote folder; one for all, or one per file argument. [default: /]", "FOLDER"),
    Opt("--name", "-n", "many", "name", "Remote name, one per file argument (for a directory: the remote "
        "sub-folder name). '.gz' is appended when ua compresses.", "NAME"),
    Opt("--visibility", None, "one", "visibility", "'hidden' creates hidden files. [default: visible]", "VIS"),
    Opt("--property", None, "many", "property", "Property key=value for every file (repeatable).", "KEY=VALUE"),
    Opt("--type", None, "many", "type", "Type for every file (repeatable).", "TYPE"),
    Opt("--tag", None, "many", "tag", "Tag for every file (repeatable).", "TAG"),
    Opt("--details", None, "one", "details", "JSON object or array stored as the files' details.", "JSON"),
    Opt("--recursive", None, "flag", "recursive", "Descend into sub-directories of directory arguments; the "
        "remote folder tree mirrors the local one."),
    Opt("--read-threads", None, "one", "read_threads", "Parallel readers. [default: 2]", "N"),
    Opt("--compress-threads", "-c", "one", "compress_threads", "Parallel compressors. "
        "[default: min(8, CPUs)]", "N"),
    Opt("--upload-threads", "-u", "one", "upload_threads", "Parts in flight at once. [default: 8]", "N"),
    Opt("--chunk-size", "-s", "one", "chunk_size", "Part size: digits plus optional B, K, M or G; minimum 5M. "
        "[default: 75M]", "SIZE"),
    Opt("--throttle", None, "one", "throttle", "Limit the total upload rate (bytes/s, K/M/G units) over all "
        "connections.", "SIZE"),
    Opt("--tries", "-r", "one", "tries", "Attempts per part (total, not retries). [default: 3]", "N"),
    Opt("--do-not-compress", None, "flag", "do_not_compress", "Never gzip; upload the bytes as they are."),
    Opt("--progress", "-g", "flag", "progress", "Show progress on stderr (bars on a terminal, a status line "
        "every 10 s otherwise)."),
    Opt("--verbose", "-v", "flag", "verbose", "Log every API call to stderr (tokens and URL signatures masked)."),
    Opt("--wait-on-close", None, "flag", "wait_on_close", "Wait until every file is 'closed' before exiting."),
    Opt("--wait-on-close-timeout", None, "one", "wait_on_close_timeout", "(ua) With --wait-on-close: a file "
        "still 'closing' after this many seconds is reported failed (it stays closing on the server). "
        "[default: $UA_WAIT_ON_CLOSE_TIMEOUT or 3600]", "SECONDS"),
    Opt("--do-not-resume", None, "flag", "do_not_resume", "Do not look for a resumable upload; always create new "
        "files (also disables the duplicate check)."),
    Opt("--test", None, "flag", "test", "Run diagnostics (configuration, token, project, API server, upload "
        "URL, proxies, OS); exit 0 only if all pass."),
    Opt("--read-from-stdin", "-i", "flag", "read_from_stdin", "Upload standard input; the single file argument "
        "is only a label (and the default name)."),
    Opt("--manifest", "-m", "flag", "manifest", "The first file argument is a JSON manifest "
        "{project: [{path, folder, name}, ...]}."),
    Opt("--json", None, "flag", "json", "(ua) Print one JSON object per file and a summary object on stdout "
        "instead of the plain ID lines."),
    Opt("--compress-level", None, "one", "compress_level", "(ua) gzip level 0-3 (isal; 1 is fast). [default: 1]", "N"),
    # hidden options of the C++ agent (--file is what its positional arguments are bound to)
    Opt("--file", None, "many", "file", "", hidden=True),
    Opt("--apiserver-protocol", None, "one", "apiserver_protocol", "", hidden=True),
    Opt("--apiserver-host", None, "one", "apiserver_host", "", hidden=True),
    Opt("--apiserver-port", None, "one", "apiserver_port", "", hidden=True),
    Opt("--certificate-file", None, "one", "certificate_file", "", hidden=True),
    Opt("--override-file-limit", None, "flag", "override_file_limit", "", hidden=True),
)

_BY_LONG = {o.long: o for o in OPTIONS}
_BY_SHORT = {o.short: o for o in OPTIONS if o.short}
# The C++ agent's import-app flags; recognised so that we can refuse them clearly.
_IMPORT_FLAGS = ("--reads", "--paired-reads", "--mappings", "--variants", "--ref-genome")

EPILOG = """\
Output: stdout gets exactly one line per input file, in input order, at the end of the run:
the file ID, or the word 'failed' (with --json: one JSON object per file, then a summary
object). Everything else goes to stderr.

Exit codes:
  0    every file uploaded (or already uploaded: resumed and closed)
  1    some file failed (the other IDs are still printed)
  2    usage error: bad option or value (the C++ Upload Agent uses 1)
  3    authentication, connection or project error before any upload (no token, token
       rejected, server unreachable, project not found or not >= UPLOAD)
  130  interrupted (Ctrl-C / SIGTERM); unfinished files stay open and resumable

Configuration, highest priority first, per key: --auth-token / --apiserver-* options;
environment (DX_APISERVER_PROTOCOL/HOST/PORT, DX_SECURITY_CONTEXT, DX_PROJECT_CONTEXT_ID,
DX_WORKSPACE_ID with DX_JOB_ID, DX_CA_CERT); $DX_USER_CONF_DIR (or ~/.dnanexus_config)
/environment.json; then the old 'environment' file. Default server https://api.dnanexus.com:443.

Differences from the C++ Upload Agent 1.5.33: usage/validation errors exit 2 and project,
token and connection errors exit 3; --help goes to stdout; --tries counts total attempts;
--manifest entries are really uploaded; broken symlinks, FIFOs and unreadable files inside a
directory are reported as failed instead of skipped; directories are walked in sorted order;
remote folders are normalised (leading '/', no trailing '/'); --throttle is one shared limit;
--env and --verbose never print the token; files are closed as soon as their parts are done;
the import-app flags (--reads, --mappings, ...) are not supported. Added: --json,
--compress-level."""


# --------------------------------------------------------------------------- values
_SIZE_RE = re.compile(r"^([0-9]+)([BKMG]?)$")
_UNITS = {"": 1, "B": 1, "K": KIB, "M": MIB, "G": GIB}


def parse_size(text: str) -> int:
    """``75M`` → 78643200. Digits plus one optional uppercase unit B/K/M/G (powers of 1024)."""
    m = _SIZE_RE.fullmatch(text)  # not .match: "$" also matches before a trailing newline
    if not m:
        raise UsageError(
            f"Invalid size argument: '{text}'; provide an integer optionally followed by units "
            "(B, K, M, or G)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_int(text: str, option: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise UsageError(f"the argument ('{text}') for option '{option}' is invalid") from None


def parse_seconds(text: str, option: str) -> float:
    """A positive, finite number of seconds (fractions allowed)."""
    try:
        value = float(text.strip())
    except ValueError:
        raise UsageError(f"the argument ('{text}') for option '{option}' is invalid") from None
    if not 0 < value < float("inf"):
        raise UsageError(f"the argument ('{text}') for option '{option}' must be a positive "
                         "number of seconds")
    return value


def parse_property(text: str) -> tuple[str, str]:
    parts = text.split("=")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValidationError("Invalid property argument; provide properties in key=value format")
    return parts[0], parts[1]


def parse_details(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"Error formating Json Data: {exc}") from None
    if not isinstance(value, (dict, list)):
        raise ValidationError("JSON Data must be a JSON object or JSON array")
    return value


# --------------------------------------------------------------------------- parsed options
@dataclass
class Options:
    files: list[str] = field(default_factory=list)
    help: bool = False
    version: bool = False
    env: bool = False
    test: bool = False
    auth_token: str | None = None
    projects: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # empty = the default "/"
    names: list[str] = field(default_factory=list)
    visibility: str = "visible"
    properties: dict[str, str] = field(default_factory=dict)
    raw_properties: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    details: Any = None
    raw_details: str | None = None
    recursive: bool = False
    read_threads: int = 2
    compress_threads: int = field(default_factory=default_compress_threads)
    upload_threads: int = 8
    chunk_size: int = DEFAULT_CHUNK_SIZE
    throttle: int | None = None
    tries: int = 3
    do_not_compress: bool = False
    progress: bool = False
    verbose: bool = False
    wait_on_close: bool = False
    wait_on_close_timeout: float | None = None  # None: $UA_WAIT_ON_CLOSE_TIMEOUT or 3600
    do_not_resume: bool = False
    read_from_stdin: bool = False
    manifest: bool = False
    json: bool = False
    compress_level: int = 1
    apiserver_protocol: str | None = None
    apiserver_host: str | None = None
    apiserver_port: str | None = None
    certificate_file: str | None = None
    override_file_limit: bool = False

    @property
    def folder_list(self) -> list[str]:
        return self.folders or ["/"]


def _prescan(argv: list[str]) -> list[str]:
    """Expand long-option prefixes, split ``--opt=value`` and catch the errors Boost reports.

    Returns an argv click can parse with exact option names."""
    out: list[str] = []
    seen: dict[str, int] = {}
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            opt = _BY_LONG.get(name)
            if opt is None:
                if name in _IMPORT_FLAGS:
                    raise UsageError(f"option '{name}' (import apps) is not supported by ua")
                matches = [o for o in OPTIONS if o.long.startswith(name)]
                if len(matches) > 1:
                    listed = ", and ".join(f"'{o.long}'" for o in matches) if len(matches) == 2 else \
                        ", ".join(f"'{o.long}'" for o in matches)
                    raise UsageError(f"option '{name}' is ambiguous and matches {listed}")
                if not matches:
                    raise UsageError(f"unrecognised option '{name}'")
                opt = matches[0]
            if opt.kind == "flag":
                if eq:
                    raise UsageError(f"option '{opt.long}' does not take any arguments")
                out.append(opt.long)
            else:
                if not eq:
                    if i + 1 >= n:
                        raise UsageError(f"the required argument for option '{opt.long}' is missing")
                    i += 1
                    value = argv[i]
                out.extend([opt.long, value])
            seen[opt.long] = seen.get(opt.long, 0) + 1
            i += 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            # bundle of short flags, possibly ending in a valued option (-gv, -s5M, -gs 5M)
            j = 1
            while j < len(arg):
                short = "-" + arg[j]
                opt = _BY_SHORT.get(short)
                if opt is None:
                    raise UsageError(f"unrecognised option '{short}'")
                seen[opt.long] = seen.get(opt.long, 0) + 1
                if opt.kind == "flag":
                    out.append(opt.long)
                    j += 1
                    continue
                rest = arg[j + 1:]
                if rest:
                    value = rest
                else:
                    if i + 1 >= n:
                        raise UsageError(f"the required argument for option '{opt.long}' is missing")
                    i += 1
                    value = argv[i]
                out.extend([opt.long, value])
                break
            i += 1
            continue
        out.append(arg)
        i += 1
    for long, count in seen.items():
        if count > 1 and _BY_LONG[long].kind == "one":
            raise UsageError(f"option '{long}' cannot be specified more than once")
    return out


def build_command() -> click.Command:
    params: list[click.Parameter] = []
    for o in OPTIONS:
        decls = [o.long] + ([o.short] if o.short else []) + [o.dest]
        if o.kind == "flag":
            params.append(click.Option(decls, is_flag=True, help=o.help, hidden=o.hidden))
        else:
            params.append(click.Option(decls, multiple=(o.kind == "many"), help=o.help,
                                       metavar=o.metavar, hidden=o.hidden, show_default=False))
    params.append(click.Argument(["files"], nargs=-1, metavar="FILE..."))
    return click.Command(
        "ua", params=params, add_help_option=False, no_args_is_help=False,
        help="Upload files to DNAnexus (compatible with the C++ Upload Agent "
             f"{UA_COMPAT_VERSION}: same options, same stdout).",
        epilog=EPILOG,
        context_settings={"max_content_width": 100, "help_option_names": []},
    )


def help_text(prog: str = "ua") -> str:
    cmd = build_command()
    ctx = click.Context(cmd, info_name=prog)
    # keep the epilog's own line breaks
    formatter = ctx.make_formatter()
    cmd.format_usage(ctx, formatter)
    cmd.format_help_text(ctx, formatter)
    cmd.format_options(ctx, formatter)
    text = formatter.getvalue()
    return text.rstrip("\n") + "\n\n" + EPILOG + "\n"


def parse_argv(argv: list[str]) -> Options:
    """Parse ``argv`` (without the program name). Raises :class:`UsageError`."""
    normalized = _prescan(list(argv))
    cmd = build_command()
    try:
        ctx = cmd.make_context("ua", normalized, resilient_parsing=False)
    except click.UsageError as exc:  # anything the prescan did not catch
        raise UsageError(exc.format_message()) from None
    p = ctx.params
    o = Options()
    o.files = list(p["file"]) + list(p["files"])
    for flag in ("help", "version", "env", "test", "recursive", "do_not_compress", "progress", "verbose",
                 "wait_on_close", "do_not_resume", "read_from_stdin", "manifest", "json",
                 "override_file_limit"):
        setattr(o, flag, bool(p[flag]))
    o.auth_token = p["auth_token"]
    o.projects = list(p["project"])
    o.folders = list(p["folder"])
    o.names = list(p["name"])
    if p["visibility"] is not None:
        o.visibility = p["visibility"]
    o.raw_properties = list(p["property"])
    o.types = list(p["type"])
    o.tags = list(p["tag"])
    o.raw_details = p["details"]
    if p["read_threads"] is not None:
        o.read_threads = parse_int(p["read_threads"], "--read-threads")
    if p["compress_threads"] is not None:
        o.compress_threads = parse_int(p["compress_threads"], "--compress-threads")
    if p["upload_threads"] is not None:
        o.upload_threads = parse_int(p["upload_threads"], "--upload-threads")
    if p["tries"] is not None:
        o.tries = parse_int(p["tries"], "--tries")
    if p["compress_level"] is not None:
        o.compress_level = parse_int(p["compress_level"], "--compress-level")
    if p["wait_on_close_timeout"] is not None:
        o.wait_on_close_timeout = parse_seconds(p["wait_on_close_timeout"],
                                                "--wait-on-close-timeout")
    if p["chunk_size"] is not None:
        o.chunk_size = parse_size(p["chunk_size"])
    if p["throttle"] is not None:
        o.throttle = parse_size(p["throttle"])
    o.apiserver_protocol = p["apiserver_protocol"]
    o.apiserver_host = p["apiserver_host"]
    if p["apiserver_port"] is not None:
        o.apiserver_port = str(parse_int(p["apiserver_port"], "--apiserver-port"))
    o.certificate_file = p["certificate_file"]
    return o


def validate_values(o: Options) -> list[str]:
    """The numeric and metadata checks of upload-agent.md §1.5 step 3 (after files/pairing).

    Raises :class:`ValidationError`; returns the warning/info lines to print on stderr."""
    if o.read_threads < 1:
        raise ValidationError(f"Number of read threads must be positive: {o.read_threads}")
    if o.compress_threads < 1:
        raise ValidationError(f"Number of compression threads must be positive: {o.compress_threads}")
    if o.upload_threads < 1:
        raise ValidationError(f"Number of upload threads must be positive: {o.upload_threads}")
    if o.chunk_size < MIN_CHUNK_SIZE:
        raise ValidationError(f"Minimum chunk size is {MIN_CHUNK_SIZE} (5 MB): {o.chunk_size}")
    if o.tries < 1:
        raise ValidationError(f"Number of tries per chunk must be positive: {o.tries}")
    if not 0 <= o.compress_level <= 3:
        raise ValidationError(f"Compression level must be between 0 and 3: {o.compress_level}")
    notes: list[str] = []
    if o.throttle is not None:
        t = o.throttle
        if t < 4096:
            raise ValidationError(
                f"Uploads are throttled to {t} bytes/sec, which is less than 4 Kbytes/sec. "
                "Choose a larger value.")
        if t < 256 * KIB:
            notes.append(f"WARNING: Uploads are throttled to {t} bytes/sec, which is less than 256 "
                         "KBytes/sec. We recommend allowing higher speeds for better performance.")
        else:
            notes.append(f"Uploads are throttled to {t} bytes/sec.")
    props: dict[str, str] = {}
    for raw in o.raw_properties:
        k, v = parse_property(raw)
        props[k] = v
    o.properties = props
    if o.raw_details is not None:
        o.details = parse_details(o.raw_details)
    return notes
