"""Input expansion (ua/upload/sources.py): pairing, directory mirroring, manifest, stdin, errors."""

import json
import os
import socket

import pytest

from ua.options import ValidationError
from ua.upload.model import FileSource
from ua.upload.sources import (
    NO_PROJECT_MESSAGE,
    check_arguments,
    check_duplicates,
    normalize_folder,
    pair,
    plan,
    to_tasks,
)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """data/hello.txt, data/tree/{a.txt, sub/{b.txt, deeper/c.txt}}"""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/tree/sub/deeper").mkdir(parents=True)
    (tmp_path / "data/hello.txt").write_text("hello world\n")
    (tmp_path / "data/tree/a.txt").write_text("a")
    (tmp_path / "data/tree/sub/b.txt").write_text("b")
    (tmp_path / "data/tree/sub/deeper/c.txt").write_text("c")
    return tmp_path


def expand(files, projects=("P",), folders=(), names=(), recursive=False, stdin=False, manifest=False,
           override=False):
    check_arguments(files, stdin=stdin, override_limit=override)
    slots = pair(files, list(projects), list(folders), list(names), None)
    return plan(slots, recursive=recursive, stdin=stdin, manifest=manifest, override_limit=override)


def folders_of(planned):
    return sorted({p.folder for p in planned})


def test_plain_file_defaults(tree):
    [p] = expand(["data/hello.txt"])
    assert (p.label, p.name, p.folder, p.project, p.source) == ("data/hello.txt", "hello.txt", "/", "P",
                                                                 FileSource.PATH)
    assert p.local_path == str(tree / "data/hello.txt") and p.error is None


@pytest.mark.parametrize("args,recursive,expected", [
    (["data/tree"], False, ["/tree"]),
    (["data/tree"], True, ["/tree", "/tree/sub", "/tree/sub/deeper"]),
    (["data/tree/"], True, ["/", "/sub", "/sub/deeper"]),
    (["-f", "/dest", "-n", "renamed", "data/tree"], True, ["/dest/renamed", "/dest/renamed/sub",
                                                           "/dest/renamed/sub/deeper"]),
    (["-f", "dest/x/", "data/tree"], True, ["/dest/x/tree", "/dest/x/tree/sub", "/dest/x/tree/sub/deeper"]),
])
def test_directory_mirroring_table(tree, args, recursive, expected):
    folders = [args[i + 1] for i, a in enumerate(args) if a == "-f"]
    names = [args[i + 1] for i, a in enumerate(args) if a == "-n"]
    files = [a for i, a in enumerate(args) if a not in ("-f", "-n") and (i == 0 or args[i - 1] not in ("-f", "-n"))]
    planned = expand(files, folders=folders, names=names, recursive=recursive)
    assert folders_of(planned) == expected
    if not recursive:
        assert [p.name for p in planned] == ["a.txt"]


def test_dot_argument_adds_no_level(tree):
    os.chdir(tree / "data/tree")
    planned = expand(["."], recursive=True)
    assert folders_of(planned) == ["/", "/sub", "/sub/deeper"]


def test_walk_is_depth_first_sorted(tree):
    (tree / "data/tree/z.txt").write_text("z")
    (tree / "data/tree/m.txt").write_text("m")
    planned = expand(["data/tree"], recursive=True)
    assert [p.label for p in planned] == ["data/tree/a.txt", "data/tree/m.txt", "data/tree/sub/b.txt",
                                          "data/tree/sub/deeper/c.txt", "data/tree/z.txt"]


def test_bad_entries_inside_directories_become_failed_tasks(tree):
    d = tree / "data/tree"
    os.symlink("/nonexistent/target", d / "broken")
    os.mkfifo(d / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "sock"))
    os.symlink(tree / "data/hello.txt", d / "link.txt")
    try:
        planned = expand(["data/tree"], recursive=False)
    finally:
        s.close()
    by = {os.path.basename(p.label): p for p in planned}
    assert set(by) == {"a.txt", "broken", "fifo", "sock", "link.txt"}
    assert "broken symbolic link" in by["broken"].error
    assert "FIFO" in by["fifo"].error and "socket" in by["sock"].error
    assert by["a.txt"].error is None and by["link.txt"].error is None  # symlink to a file followed


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read everything")
def test_unreadable_file_inside_directory(tree):
    p = tree / "data/tree/secret.txt"
    p.write_text("x")
    p.chmod(0)
    by = {os.path.basename(x.label): x for x in expand(["data/tree"])}
    assert "Permission denied" in by["secret.txt"].error


def test_symlink_loop_is_reported_not_followed_forever(tree):
    os.symlink("..", tree / "data/tree/sub/up")
    planned = expand(["data/tree"], recursive=True)
    assert any(p.error and "loop" in p.error for p in planned)
    assert len(planned) < 10


@pytest.mark.parametrize("files,msg", [
    (["nope.txt"], 'File "nope.txt" does not exist'),
    (["/dev/null"], "Argument /dev/null is not a regular file or directory."),
])
def test_argument_errors(tree, files, msg):
    with pytest.raises(ValidationError) as e:
        check_arguments(files, stdin=False, override_limit=False)
    assert str(e.value) == msg


def test_broken_symlink_argument_does_not_exist(tree):
    os.symlink("/nonexistent", "dangling")
    with pytest.raises(ValidationError, match='File "dangling" does not exist'):
        check_arguments(["dangling"], stdin=False, override_limit=False)


def test_file_limit(tree):
    d = tree / "many"
    d.mkdir()
    for i in range(1001):
        (d / f"f{i:04d}").write_text("")
    with pytest.raises(ValidationError, match="The number of files to upload is limited to 1000"):
        expand(["many"])
    assert len(expand(["many"], override=True)) == 1001
    with pytest.raises(ValidationError, match="limited to 1000"):
        check_arguments(["data/hello.txt"] * 1001, stdin=False, override_limit=False)


def test_pairing_messages(tree):
    f2 = ["data/hello.txt", "data/tree"]
    with pytest.raises(ValidationError) as e:
        pair(f2, ["P"], [], ["one"], None)
    assert str(e.value) == "Must specify a name for each file; there are 2 files, but only 1 names were provided."
    with pytest.raises(ValidationError) as e:
        pair(f2, ["P"], [], ["a", "b", "c"], None)
    assert "but only 3 names were provided." in str(e.value)
    with pytest.raises(ValidationError) as e:
        pair(f2, ["P", "Q", "R"], [], [], None)
    assert str(e.value) == ("Must specify a project for each file; there are 2 files, but only 3 projects were "
                            "provided.")
    with pytest.raises(ValidationError) as e:
        pair(f2, ["P"], ["/a", "/b", "/c"], [], None)
    assert str(e.value) == "Must specify a folder for each file; there are 2 files, but only 3 folders were provided."
    with pytest.raises(ValidationError) as e:
        pair(f2, [], [], [], None)
    assert str(e.value) == NO_PROJECT_MESSAGE
    slots = pair(f2, ["P", "Q"], ["/a", "/b"], ["n1", "n2"], None)
    assert [(s.project, s.folder, s.name) for s in slots] == [("P", "/a", "n1"), ("Q", "/b", "n2")]
    assert [s.project for s in pair(f2, [], ["/x"], [], "project-env")] == ["project-env"] * 2


def test_multi_pairing_applies_to_directory_contents(tree):
    planned = expand(["data/hello.txt", "data/tree"], projects=["P", "Q"], folders=["/a", "/b"], names=["h", "t"],
                     recursive=True)
    assert [(p.project, p.folder, p.name) for p in planned] == [
        ("P", "/a", "h"), ("Q", "/b/t", "a.txt"), ("Q", "/b/t/sub", "b.txt"), ("Q", "/b/t/sub/deeper", "c.txt")]


def test_stdin(tree):
    [p] = expand(["label/reads.fastq"], stdin=True)
    assert (p.source, p.name, p.local_path, p.label) == (FileSource.STDIN, "reads.fastq", None, "label/reads.fastq")
    [p] = expand(["x"], names=["renamed"], stdin=True)
    assert p.name == "renamed"
    with pytest.raises(ValidationError, match="Only one filename can be specified when reading from stdin."):
        expand(["a", "b"], stdin=True)


def write_manifest(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_manifest_order_and_fields(tree):
    m = write_manifest(tree / "m.json", {
        "zproj": [{"path": "data/tree/a.txt", "folder": "/m2", "name": "mm"}],
        "project-A": [{"path": str(tree / "data/hello.txt"), "folder": "m/", "name": "h1"},
                      {"path": "data/tree/sub/b.txt", "folder": "/m", "name": "r1"}]})
    planned = expand([m, "data/tree/sub/deeper/c.txt"], projects=["P"], manifest=True)
    assert [(p.project, p.folder, p.name, os.path.basename(p.label)) for p in planned] == [
        ("project-A", "/m", "h1", "hello.txt"), ("project-A", "/m", "r1", "b.txt"), ("zproj", "/m2", "mm", "a.txt"),
        ("P", "/", "c.txt", "c.txt")]
    assert all(p.local_path and os.path.isabs(p.local_path) for p in planned)


@pytest.mark.parametrize("content,msg", [
    ("{bad", "An error occurred while trying to parse the manifest file"),
    ("[1]", "does not contain a valid JSON hash."),
    ({"p": {"path": "x"}}, "does not contain a valid JSON hash value for project 'p'."),
    ({"p": [{"folder": "/", "name": "n"}]}, "contains an invalid entry for project 'p' at index '0'. - missing key 'path'."),
    ({"p": [{"path": "data/hello.txt", "name": "n"}]}, "at index '0'. - missing key 'folder'."),
    ({"p": [{"path": "data/hello.txt", "folder": "/", "name": "n"}, {"path": "data/hello.txt", "folder": "/"}]},
     "at index '1'. - missing key 'name'."),
    ({"p": [{"path": "nope.txt", "folder": "/", "name": "n"}]}, "Local file 'nope.txt' does not exist"),
    ({"p": [{"path": "data/tree", "folder": "/", "name": "n"}]}, "Local file 'data/tree' is not a regular file"),
    ({"p": [{"path": 5, "folder": "/", "name": "n"}]}, "'path' must be a non-empty string."),
])
def test_manifest_errors(tree, content, msg):
    m = write_manifest(tree / "m.json", content)
    with pytest.raises(ValidationError) as e:
        expand([m], manifest=True)
    assert msg in str(e.value)


def test_duplicate_signature(tree):
    planned = expand(["data/hello.txt", "./data/../data/hello.txt"])
    tasks = to_tasks(planned, {"P": "project-1"}.__getitem__)
    with pytest.raises(ValidationError) as e:
        check_duplicates(tasks)
    assert str(e.value) == ('File "./data/../data/hello.txt" and "data/hello.txt" have same Signature. You cannot '
                            "upload two files with same signature to same project without using '--do-not-resume' "
                            "flag")
    # same file to two different projects is fine
    planned = expand(["data/hello.txt", "./data/../data/hello.txt"], projects=["P", "Q"])
    check_duplicates(to_tasks(planned, {"P": "project-1", "Q": "project-2"}.__getitem__))
    # and also catches a file given directly and found in a walked directory
    planned = expand(["data/tree/a.txt", "data/tree"])
    with pytest.raises(ValidationError):
        check_duplicates(to_tasks(planned, lambda s: "project-1"))


@pytest.mark.parametrize("raw,norm", [("/", "/"), ("", "/"), ("a", "/a"), ("dest/x/", "/dest/x"), ("//a//b/", "/a/b")])
def test_normalize_folder(raw, norm):
    assert normalize_folder(raw) == norm
