"""DNAnexus object IDs: ``<class>-`` followed by 24 characters of a 32-letter alphabet.

Shared by the client (to tell a project ID from a project name) and by ua-server
(to mint IDs that strict clients such as the C++ Upload Agent accept).
"""

from __future__ import annotations

import re
import secrets

ID_ALPHABET = "0123456789BFGJKPQVXYZbfgjkpqvxyz"
ID_LENGTH = 24
HASHED_CLASSES = (
    "project", "container", "file", "record", "applet", "workflow", "database",
    "job", "analysis", "app", "globalworkflow",
)
_ID_RE = re.compile(r"^(?P<cls>[a-z]+)-(?P<hash>[%s]{%d})$" % (ID_ALPHABET, ID_LENGTH))


assert len(ID_ALPHABET) == 32  # 5 bits per character


def new_id(cls: str) -> str:
    """A fresh random ID of the given class, e.g. ``file-Gx7…``: every character uniform
    and independent, from one read of the OS random source (ua-server mints one per
    ``/file/new``; a read per character was a measurable share of that route)."""
    n = int.from_bytes(secrets.token_bytes(ID_LENGTH * 5 // 8 + 1), "big")
    return cls + "-" + "".join(ID_ALPHABET[(n >> (5 * i)) & 31] for i in range(ID_LENGTH))


def id_class(value: str) -> str | None:
    """The class of a well-formed hashed ID (``"file"`` for ``file-…``), else None."""
    m = _ID_RE.match(value)
    if m and m.group("cls") in HASHED_CLASSES:
        return m.group("cls")
    return None


def is_id(value: str, *classes: str) -> bool:
    """True when ``value`` is a well-formed ID of one of ``classes`` (any class if none given)."""
    cls = id_class(value)
    return cls is not None and (not classes or cls in classes)
