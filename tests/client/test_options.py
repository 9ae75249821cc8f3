"""Option parsing and value validation (ua/options.py): the Upload Agent's rules and messages."""

import pytest

from ua.options import (
    DEFAULT_CHUNK_SIZE,
    UsageError,
    ValidationError,
    default_compress_threads,
    help_text,
    parse_argv,
    parse_details,
    parse_property,
    parse_size,
    validate_values,
)


@pytest.mark.parametrize("text,value", [
    ("0", 0), ("5", 5), ("7B", 7), ("4K", 4096), ("75M", 75 * 1024 * 1024), ("2G", 2 * 1024 ** 3),
    ("5242880", 5242880),
])
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["5m", "1.5M", "5X", "", "M", "-5M", "5 M", "5MB", "k"])
def test_bad_sizes(text):
    with pytest.raises(UsageError) as e:
        parse_size(text)
    assert str(e.value) == (f"Invalid size argument: '{text}'; provide an integer optionally followed by "
                            "units (B, K, M, or G)")


def test_defaults():
    o = parse_argv(["a.txt"])
    assert o.files == ["a.txt"]
    assert o.chunk_size == DEFAULT_CHUNK_SIZE
    assert (o.read_threads, o.upload_threads, o.tries) == (2, 8, 3)
    assert o.compress_threads == default_compress_threads() == min(8, max(__import__("os").cpu_count() or 1, 1))
    assert o.folder_list == ["/"] and o.projects == [] and o.names == []
    assert o.visibility == "visible" and o.throttle is None and o.compress_level == 1
    assert not (o.json or o.progress or o.verbose or o.recursive or o.manifest or o.read_from_stdin)


def test_short_forms_and_repeats():
    o = parse_argv(["-a", "TOK", "-p", "P1", "-p", "P2", "-f", "/x", "-f", "/y", "-n", "n1", "-n", "n2",
                    "-c", "3", "-u", "4", "-s", "5M", "-r", "2", "-gv", "-i", "-m", "-e", "f1", "f2"])
    assert o.auth_token == "TOK" and o.projects == ["P1", "P2"] and o.folders == ["/x", "/y"]
    assert o.names == ["n1", "n2"] and (o.compress_threads, o.upload_threads, o.tries) == (3, 4, 2)
    assert o.chunk_size == 5 * 1024 * 1024
    assert o.progress and o.verbose and o.read_from_stdin and o.manifest and o.env
    assert o.files == ["f1", "f2"]


def test_long_forms_equals_and_prefixes():
    o = parse_argv(["--chunk-size=6M", "--vers", "--property", "k=v", "--type", "T", "--tag", "t1", "--tag", "t2",
                    "--details", '{"a": 1}', "--visibility", "hidden", "--recursive", "--throttle", "1M",
                    "--json", "--compress-level", "3", "--apiserver-host", "h", "--apiserver-port", "81",
                    "--apiserver-protocol", "http", "--certificate-file", "NOVERIFY", "--override-file-limit",
                    "--wait-on-close", "--do-not-resume", "--do-not-compress", "--test", "x"])
    assert o.chunk_size == 6 * 1024 * 1024 and o.version
    assert o.raw_properties == ["k=v"] and o.types == ["T"] and o.tags == ["t1", "t2"]
    assert o.visibility == "hidden" and o.recursive and o.throttle == 1024 * 1024
    assert o.json and o.compress_level == 3 and o.apiserver_port == "81" and o.apiserver_host == "h"
    assert o.certificate_file == "NOVERIFY" and o.override_file_limit and o.wait_on_close
    assert o.do_not_resume and o.do_not_compress and o.test
    notes = validate_values(o)
    assert o.properties == {"k": "v"} and o.details == {"a": 1}
    assert notes == ["Uploads are throttled to 1048576 bytes/sec."]


def test_hidden_file_option():
    assert parse_argv(["--file", "a", "b"]).files == ["a", "b"]


def test_values_starting_with_dash_and_double_dash():
    o = parse_argv(["-u", "-1", "--", "-weird", "--also"])
    assert o.upload_threads == -1 and o.files == ["-weird", "--also"]


@pytest.mark.parametrize("argv,reason", [
    (["--foo"], "unrecognised option '--foo'"),
    (["-x"], "unrecognised option '-x'"),
    (["--do-not"], "option '--do-not' is ambiguous and matches '--do-not-compress', and '--do-not-resume'"),
    (["--chunk-size"], "the required argument for option '--chunk-size' is missing"),
    (["f", "-s"], "the required argument for option '--chunk-size' is missing"),
    (["-u", "abc"], "the argument ('abc') for option '--upload-threads' is invalid"),
    (["--tries", "1.5"], "the argument ('1.5') for option '--tries' is invalid"),
    (["--env=1"], "option '--env' does not take any arguments"),
    (["-a", "x", "--auth-token", "y"], "option '--auth-token' cannot be specified more than once"),
    (["-s", "5m"], "Invalid size argument: '5m'; provide an integer optionally followed by units (B, K, M, or G)"),
    (["--throttle", "1.5M"], "Invalid size argument: '1.5M'; provide an integer optionally followed by units "
                             "(B, K, M, or G)"),
    (["--reads", "x"], "option '--reads' (import apps) is not supported by ua"),
])
def test_usage_errors(argv, reason):
    with pytest.raises(UsageError) as e:
        parse_argv(argv)
    assert str(e.value) == reason


@pytest.mark.parametrize("argv,msg", [
    (["--read-threads", "0"], "Number of read threads must be positive: 0"),
    (["-c", "0"], "Number of compression threads must be positive: 0"),
    (["-u", "-3"], "Number of upload threads must be positive: -3"),
    (["-s", "4M"], "Minimum chunk size is 5242880 (5 MB): 4194304"),
    (["-s", "5242879"], "Minimum chunk size is 5242880 (5 MB): 5242879"),
    (["-r", "0"], "Number of tries per chunk must be positive: 0"),
    (["--throttle", "4095"], "Uploads are throttled to 4095 bytes/sec, which is less than 4 Kbytes/sec. "
                             "Choose a larger value."),
    (["--compress-level", "4"], "Compression level must be between 0 and 3: 4"),
    (["--property", "a=b=c"], "Invalid property argument; provide properties in key=value format"),
    (["--property", "=b"], "Invalid property argument; provide properties in key=value format"),
    (["--property", "a="], "Invalid property argument; provide properties in key=value format"),
    (["--property", "ab"], "Invalid property argument; provide properties in key=value format"),
    (["--details", "42"], "JSON Data must be a JSON object or JSON array"),
    (["--details", '"s"'], "JSON Data must be a JSON object or JSON array"),
])
def test_validation_errors(argv, msg):
    o = parse_argv(argv + ["f"])
    with pytest.raises(ValidationError) as e:
        validate_values(o)
    assert str(e.value) == msg


def test_bad_details_json():
    with pytest.raises(ValidationError) as e:
        parse_details("{bad")
    assert str(e.value).startswith("Error formating Json Data: ")
    assert parse_details("[1, 2]") == [1, 2]
    assert parse_property("k=v w") == ("k", "v w")


def test_throttle_warning_and_minimum_chunk_ok():
    o = parse_argv(["--throttle", "4K", "-s", "5M", "f"])
    assert validate_values(o) == ["WARNING: Uploads are throttled to 4096 bytes/sec, which is less than 256 "
                                  "KBytes/sec. We recommend allowing higher speeds for better performance."]


def test_help_lists_options_and_exit_codes():
    text = help_text()
    for opt in ("--auth-token", "-a,", "--project", "--folder", "--name", "--visibility", "--property", "--type",
                "--tag", "--details", "--recursive", "--read-threads", "--compress-threads", "--upload-threads",
                "--chunk-size", "--throttle", "--tries", "--do-not-compress", "--progress", "--verbose",
                "--wait-on-close", "--do-not-resume", "--test", "--read-from-stdin", "--manifest", "--env",
                "--version", "--json", "--compress-level"):
        assert opt in text, opt
    for hidden in ("--apiserver-host", "--certificate-file", "--override-file-limit", "--file "):
        assert hidden not in text
    assert "130" in text and "Exit codes" in text and "C++ Upload Agent" in text
