"""Resume: find the remote file an earlier run started for the same local file.

Lookup (upload-agent.md §5.2): ``/system/findDataObjects`` for files in the project whose
``.system-fileSignature`` equals ours, any folder, hidden or not, with state, name, folder,
parts and properties described (all pages).

With many files for one project, the pipeline first lists, once, every file of the project
that carries a signature (:func:`scan_query`: ``properties: {KEY: true}``, a documented
filter, paged 1,000 at a time) and answers each file's lookup from that
:class:`SignatureIndex` — one request per 1,000 existing files instead of one per local
file. The listing has a page budget (:func:`scan_page_budget`); a project holding more
signed files than the budget allows falls back to the per-file query above, so the listing
never costs more than about the lookups it replaces. Parts are not listed; an ``open``
match is described again with its parts before it is resumed.

Decisions (:func:`decide`, pure):

* no candidate → ``new``;
* one ``closing``/``closed`` candidate → ``done`` (already uploaded; its ID is the answer);
* one ``open`` candidate → ``resume`` (upload only the parts that are not ``complete``);
* several → ``ambiguous`` (the file fails with the Upload Agent's advice text).

An *open* candidate whose bytes were laid out by another tool (when we compress, our
``.ua-layout`` property must equal ``gzip-single-member-v1``; the C++ UA writes one gzip
member per part) is never resumed into; it is ignored with a note. Closed candidates count
whatever their layout: their content is complete and valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ua.upload.signature import LAYOUT_GZIP_SINGLE_MEMBER, LAYOUT_PROPERTY, SIGNATURE_PROPERTY


@dataclass
class ResumeDecision:
    kind: str  # "new" | "resume" | "done" | "ambiguous"
    file_id: str | None = None
    name: str | None = None
    folder: str | None = None
    state: str | None = None
    parts: dict[str, Any] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def lookup_query(project: str, signature: str) -> dict[str, Any]:
    return {
        "class": "file",
        "properties": {SIGNATURE_PROPERTY: signature},
        "scope": {"project": project, "folder": "/", "recurse": True},
        "visibility": "either",
        "describe": {"project": project,
                     "fields": {"state": True, "name": True, "folder": True, "parts": True,
                                "properties": True}},
    }


SCAN_PAGE_SIZE = 1000
SCAN_MIN_FILES = 8  # fewer local files than this: per-file lookups are cheaper
LOOKUPS_PER_PAGE = 50  # a page of 1,000 described files costs about this many lookups


def scan_query(project: str) -> dict[str, Any]:
    """Every file of ``project`` that has a signature, described without parts."""
    return {
        "class": "file",
        "properties": {SIGNATURE_PROPERTY: True},
        "scope": {"project": project, "folder": "/", "recurse": True},
        "visibility": "either",
        "limit": SCAN_PAGE_SIZE,
        "describe": {"project": project,
                     "fields": {"state": True, "name": True, "folder": True,
                                "properties": True}},
    }


def scan_page_budget(local_files: int) -> int:
    """Pages the listing may read before per-file lookups would have been cheaper."""
    return max(1, -(-local_files // LOOKUPS_PER_PAGE))


class SignatureIndex:
    """``.system-fileSignature`` value → the listing's results carrying it."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.by_sig: dict[str, list[dict[str, Any]]] = {}
        for r in results:
            d = r.get("describe") if isinstance(r, dict) else None
            if not isinstance(d, dict) or not isinstance(r.get("id"), str):
                continue
            sig = (d.get("properties") or {}).get(SIGNATURE_PROPERTY)
            if isinstance(sig, str):
                self.by_sig.setdefault(sig, []).append(r)

    def lookup(self, signature: str) -> list[dict[str, Any]]:
        return list(self.by_sig.get(signature, ()))


def decide(results: list[dict[str, Any]], *, compress: bool) -> ResumeDecision:
    notes: list[str] = []
    usable: list[dict[str, Any]] = []
    for r in results:
        d = r.get("describe") or {}
        state = d.get("state")
        if state == "open" and compress:
            layout = (d.get("properties") or {}).get(LAYOUT_PROPERTY)
            if layout != LAYOUT_GZIP_SINGLE_MEMBER:
                notes.append(f"Ignoring open file {r['id']}: its compressed parts were made by "
                             f"another tool (layout {layout or 'unknown'}), they cannot be "
                             "joined with ours")
                continue
        usable.append({"id": r["id"], **d})
    if not usable:
        return ResumeDecision("new", notes=notes)
    if len(usable) > 1:
        return ResumeDecision("ambiguous", candidates=usable, notes=notes)
    (c,) = usable
    kind = "resume" if c.get("state") == "open" else "done"
    return ResumeDecision(kind, file_id=c["id"], name=c.get("name"), folder=c.get("folder"),
                          state=c.get("state"), parts=dict(c.get("parts") or {}), notes=notes)


def ambiguous_message(label: str, project: str, candidates: list[dict[str, Any]]) -> str:
    """The Upload Agent's text for several resume targets (multi-line)."""
    lines = [f"More than one resumable targets for local file \"{label}\" found in the project "
             f"'{project}', candidates: "]
    lines += [f"\t{i}. {c.get('name')} ({c['id']})" for i, c in enumerate(candidates, 1)]
    lines.append(f"Unable to upload: \"{label}\"")
    lines.append("Please either clean up the potential candidate files, or run upload agent "
                 "with '--do-not-resume' option")
    return "\n".join(lines)


def percent_text(pct: float) -> str:
    """``41.6667`` like the UA's default stream formatting (6 significant digits)."""
    return f"{pct:.6g}"
