"""Fault injection: ``KIND=PROB[@NAMEGLOB][,KIND=PROB...]`` seeded by ``--fault-seed``.

PUT kinds: put-500, put-503, put-reset, put-slow, put-stall, put-baddigest,
put-drop-after-store. API kinds: api-500, api-503, api-429. ``@NAMEGLOB`` limits a rule to
files whose name matches (fnmatch, case-sensitive); API rules with a glob only fire on routes
that concern a file (``/file-x/*`` or ``/file/new`` with a matching ``name``).
"""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass

PUT_KINDS = ("put-500", "put-503", "put-reset", "put-slow", "put-stall", "put-baddigest",
             "put-drop-after-store")
API_KINDS = ("api-500", "api-503", "api-429")
KINDS = PUT_KINDS + API_KINDS


@dataclass(frozen=True)
class Rule:
    kind: str
    prob: float
    glob: str | None = None


def parse_spec(spec: str | None) -> list[Rule]:
    rules: list[Rule] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"fault {item!r}: expected KIND=PROB[@NAMEGLOB]")
        kind, rest = item.split("=", 1)
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(KINDS)})")
        glob = None
        if "@" in rest:
            rest, glob = rest.split("@", 1)
        try:
            prob = float(rest)
        except ValueError:
            raise ValueError(f"fault {item!r}: probability must be a number") from None
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"fault {item!r}: probability must be within 0..1")
        rules.append(Rule(kind, prob, glob or None))
    return rules


class Faults:
    def __init__(self, spec: str | None = None, seed: int | None = None):
        self.seed = seed
        self.rng = random.Random(seed)
        self.rules = parse_spec(spec)
        self.spec = spec or ""

    def set(self, spec: str | None) -> None:
        self.rules = parse_spec(spec)
        self.spec = spec or ""
        self.rng = random.Random(self.seed)

    def pick(self, kinds: tuple[str, ...], name: str | None) -> str | None:
        """The fault to inject for a request (first rule that fires), or None."""
        for rule in self.rules:
            if rule.kind not in kinds:
                continue
            if rule.glob is not None and (name is None or not fnmatch.fnmatchcase(name, rule.glob)):
                continue
            if rule.prob >= 1.0 or self.rng.random() < rule.prob:
                return rule.kind
        return None
