"""Turn the command line's file arguments into the ordered list of upload tasks.

Steps, in the order ``ua`` runs them (upload-agent.md §1.4–1.6, §7):

1. :func:`check_arguments` — each positional exists and is a regular file or a directory
   (``-i``: exactly one label, not checked), at most 1000 of them unless
   ``--override-file-limit``.
2. :func:`pair` — one project / folder / name per argument (a directory counts as one, the
   manifest file takes position 0), with the Upload Agent's messages.
3. :func:`plan` — expand directories (``--recursive`` walks depth-first, sorted), the manifest
   and stdin into :class:`Planned` entries whose project is still the user's spec. Broken
   symlinks, FIFOs, sockets, devices and unreadable files found inside directories become
   entries with ``error`` set: they are reported as failed and the batch goes on.
4. :func:`to_tasks` — after project resolution, the final ``FileTask`` list.
5. :func:`check_duplicates` — two inputs with the same signature key to the same project.

All errors are :class:`ua.options.ValidationError` (printed ``ERROR: …``, exit 2).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ua.options import MAX_FILES, ValidationError
from ua.upload.model import FileSource, FileTask

NO_PROJECT_MESSAGE = ("A project must be specified (or present in environment variables/config file). "
                      "You may use --project to specify project id/name on command line")


@dataclass(frozen=True)
class Planned:
    """A FileTask before project resolution (``project`` is the user's spec)."""

    label: str
    source: FileSource
    project: str
    folder: str
    name: str
    local_path: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Slot:
    """What one positional argument is paired with."""

    arg: str
    project: str
    folder: str
    name: str | None  # None: default (the last path component)


# --------------------------------------------------------------------------- helpers
def normalize_folder(folder: str) -> str:
    """``dest/x/`` → ``/dest/x``; ``//a//b/`` → ``/a/b``; ``""`` → ``/``.

    (The C++ agent sends folders exactly as typed; the platform wants absolute paths.)"""
    parts = [p for p in folder.split("/") if p]
    return "/" + "/".join(parts)


def join_folder(base: str, *more: str) -> str:
    return normalize_folder("/".join([base, *more]))


def default_name(arg: str) -> str:
    """The last path component, as the Upload Agent uses for the remote name."""
    stripped = arg.rstrip("/") or arg
    return os.path.basename(stripped) or stripped


def describe_non_regular(path: str) -> str | None:
    """Why ``path`` (inside a directory) cannot be uploaded, or None when it is a readable file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"broken symbolic link (-> {os.readlink(path)})"
        return "file disappeared"
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        if not os.access(path, os.R_OK):
            return "not readable: Permission denied"
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            return f"not readable: {exc.strerror}"
        return None
    if stat.S_ISFIFO(mode):
        return "not a regular file (FIFO)"
    if stat.S_ISSOCK(mode):
        return "not a regular file (socket)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "not a regular file (device)"
    return "not a regular file"


# --------------------------------------------------------------------------- step 1
def check_arguments(files: Sequence[str], *, stdin: bool, override_limit: bool) -> None:
    if stdin:
        if len(files) != 1:
            raise ValidationError("Only one filename can be specified when reading from stdin.")
        return
    if len(files) > MAX_FILES and not override_limit:
        raise ValidationError(f"The number of files to upload is limited to {MAX_FILES}")
    for arg in files:
        if not os.path.exists(arg):
            raise ValidationError(f'File "{arg}" does not exist')
        if not (os.path.isfile(arg) or os.path.isdir(arg)):
            raise ValidationError(f"Argument {arg} is not a regular file or directory.")


# --------------------------------------------------------------------------- step 2
def pair(files: Sequence[str], projects: Sequence[str], folders: Sequence[str], names: Sequence[str],
         default_project: str | None) -> list[Slot]:
    n = len(files)
    if names and len(names) != n:
        raise ValidationError(f"Must specify a name for each file; there are {n} files, but only "
                              f"{len(names)} names were provided.")
    if not projects:
        if not default_project:
            raise ValidationError(NO_PROJECT_MESSAGE)
        projects = [default_project]
    if len(projects) > 1 and len(projects) != n:
        raise ValidationError(f"Must specify a project for each file; there are {n} files, but only "
                              f"{len(projects)} projects were provided.")
    folders = list(folders) or ["/"]
    if len(folders) > 1 and len(folders) != n:
        raise ValidationError(f"Must specify a folder for each file; there are {n} files, but only "
                              f"{len(folders)} folders were provided.")
    return [Slot(arg=files[i],
                 project=projects[i] if len(projects) > 1 else projects[0],
                 folder=folders[i] if len(folders) > 1 else folders[0],
                 name=names[i] if names else None)
            for i in range(n)]


# --------------------------------------------------------------------------- step 3
def walk_directory(root: str, recursive: bool) -> Iterator[tuple[tuple[str, ...], str, str | None]]:
    """(relative sub-folders, path, error) for every non-directory entry, depth-first, entries
    sorted by name, sub-directories walked when met. Symlinked directories are followed once
    (a loop is reported as an error entry)."""
    seen: set[tuple[int, int]] = set()

    def visit(dirpath: str, rel: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str, str | None]]:
        try:
            st = os.stat(dirpath)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                yield rel, dirpath, "directory loop (symbolic link to a parent); skipped"
                return
            seen.add(key)
            names = sorted(os.listdir(dirpath))
        except OSError as exc:
            yield rel, dirpath, f"cannot list directory: {exc.strerror}"
            return
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isdir(path):
                if recursive:
                    yield from visit(path, rel + (name,))
                continue
            yield rel, path, describe_non_regular(path)

    yield from visit(root, ())


def load_manifest(path: str) -> list[tuple[str, str, str, str]]:
    """(project spec, local path, folder, name) for each manifest entry: project keys in
    sorted order, then array order (as the Upload Agent orders them)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ValidationError(f"file('{path}') cannot be opened for reading: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"An error occurred while trying to parse the manifest file '{path}': {exc}") from None
    if not isinstance(data, dict):
        raise ValidationError(f"The manifest file '{path}' does not contain a valid JSON hash.")
    out = []
    for project in sorted(data):
        items = data[project]
        if not isinstance(items, list):
            raise ValidationError(f"The manifest file '{path}' does not contain a valid JSON hash value for "
                                  f"project '{project}'.")
        for i, item in enumerate(items):
            where = f"The manifest file '{path}' contains an invalid entry for project '{project}' at index '{i}'."
            if not isinstance(item, dict):
                raise ValidationError(where + " - not a JSON hash.")
            for key in ("path", "folder", "name"):
                if key not in item:
                    raise ValidationError(where + f" - missing key '{key}'.")
                if not isinstance(item[key], str) or (key != "folder" and not item[key]):
                    raise ValidationError(where + f" - '{key}' must be a non-empty string.")
            local = item["path"]
            if not os.path.exists(local):
                raise ValidationError(f"Local file '{local}' does not exist")
            if not os.path.isfile(local):
                raise ValidationError(f"Local file '{local}' is not a regular file")
            out.append((project, local, item["folder"], item["name"]))
    return out


def plan(slots: Sequence[Slot], *, recursive: bool, stdin: bool, manifest: bool,
         override_limit: bool) -> list[Planned]:
    """Expand the paired arguments into planned tasks, in stdout order."""
    out: list[Planned] = []

    def add(p: Planned) -> None:
        out.append(p)
        if len(out) > MAX_FILES and not override_limit:
            raise ValidationError(f"The number of files to upload is limited to {MAX_FILES}")

    for pos, slot in enumerate(slots):
        if stdin:
            add(Planned(label=slot.arg, source=FileSource.STDIN, project=slot.project,
                        folder=normalize_folder(slot.folder), name=slot.name or default_name(slot.arg)))
            continue
        if manifest and pos == 0:
            for project, local, folder, name in load_manifest(slot.arg):
                add(Planned(label=local, source=FileSource.PATH, project=project,
                            folder=normalize_folder(folder), name=name, local_path=os.path.abspath(local)))
            continue
        if os.path.isdir(slot.arg):
            a = slot.arg
            if slot.name is not None:
                dir_name = slot.name
            elif a.endswith("/") or os.path.basename(a) == ".":
                dir_name = ""
            elif os.path.basename(a) == "..":
                dir_name = os.path.basename(os.path.realpath(a))
            else:
                dir_name = os.path.basename(a)
            base = join_folder(slot.folder, dir_name)
            for rel, path, error in walk_directory(a, recursive):
                add(Planned(label=path, source=FileSource.PATH, project=slot.project,
                            folder=join_folder(base, *rel), name=os.path.basename(path),
                            local_path=os.path.abspath(path), error=error))
            continue
        add(Planned(label=slot.arg, source=FileSource.PATH, project=slot.project,
                    folder=normalize_folder(slot.folder), name=slot.name or default_name(slot.arg),
                    local_path=os.path.abspath(slot.arg), error=describe_non_regular(slot.arg)))
    return out


# --------------------------------------------------------------------------- step 4, 5
def to_tasks(planned: Sequence[Planned], resolve: Callable[[str], str]) -> list[FileTask]:
    """Replace each project spec by its resolved ID (``resolve`` maps spec → ID)."""
    return [FileTask(label=p.label, source=p.source, project=resolve(p.project), folder=p.folder,
                     name=p.name, local_path=p.local_path, error=p.error) for p in planned]


def check_duplicates(tasks: Sequence[FileTask]) -> None:
    """Refuse two inputs that would share a resume signature in the same project."""
    seen: dict[tuple, str] = {}
    for t in tasks:
        if t.source is not FileSource.PATH or t.error or not t.local_path:
            continue
        try:
            st = os.stat(t.local_path)
        except OSError:
            continue
        key = (t.project, st.st_size, int(st.st_mtime), os.path.realpath(t.local_path))
        first = seen.get(key)
        if first is not None:
            raise ValidationError(
                f'File "{t.label}" and "{first}" have same Signature. You cannot upload two files with same '
                "signature to same project without using '--do-not-resume' flag")
        seen[key] = t.label
