"""Load and query the taxonomy; every lookup of an unknown key is a clear InvalidInput."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from complai.errors import InvalidInput

KINDS = ("data_categories", "data_uses", "data_subjects", "legal_bases", "jurisdictions")
_ALLOWED = {
    "data_categories": {"key", "name", "description", "special"},
    "data_uses": {"key", "name", "description", "categories"},
    "data_subjects": {"key", "name", "description"},
    "legal_bases": {"key", "name", "article", "requires_consent", "objectable", "opt_out", "description"},
    "jurisdictions": {
        "key",
        "name",
        "regime",
        "request_deadline_days",
        "request_extension_days",
        "acknowledge_days",
    },
}
_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_LABEL = {
    "data_categories": "data category",
    "data_uses": "purpose",
    "data_subjects": "data subject type",
    "legal_bases": "lawful basis",
    "jurisdictions": "jurisdiction",
}


@dataclass(frozen=True)
class Term:
    key: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def parent(self) -> str | None:
        return self.key.rsplit(".", 1)[0] if "." in self.key else None


class Taxonomy:
    def __init__(self, terms: dict[str, dict[str, Term]]) -> None:
        self._terms = terms

    def keys(self, kind: str) -> list[str]:
        return list(self._terms[kind])

    def get(self, kind: str, key: str) -> Term:
        terms = self._terms[kind]
        if key not in terms:
            close = difflib.get_close_matches(key, terms, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidInput(f"unknown {_LABEL[kind]} {key!r}{hint}")
        return terms[key]

    def category(self, key: str) -> Term:
        return self.get("data_categories", key)

    def purpose(self, key: str) -> Term:
        return self.get("data_uses", key)

    def legal_basis(self, key: str) -> Term:
        return self.get("legal_bases", key)

    def jurisdiction(self, key: str) -> Term:
        return self.get("jurisdictions", key)

    def is_special(self, category: str) -> bool:
        """True for GDPR Art. 9/10 special categories (inherited from an ancestor)."""
        key: str | None = category
        while key is not None:
            term = self.category(key)
            if term.attrs.get("special"):
                return True
            key = term.parent
        return False

    def within(self, key: str, ancestor: str) -> bool:
        return key == ancestor or key.startswith(ancestor + ".")


def parse_terms(kind: str, doc: Any, source: str) -> dict[str, Term]:
    """Validate one taxonomy document; unknown attributes, bad keys and orphans are errors."""
    if not isinstance(doc, dict) or doc.get("kind") != kind or not isinstance(doc.get("items"), list):
        raise InvalidInput(f"{source}: expected 'kind: {kind}' and a list of 'items'")
    if set(doc) - {"kind", "items"}:
        raise InvalidInput(f"{source}: unknown top-level key(s) {sorted(set(doc) - {'kind', 'items'})}")
    terms: dict[str, Term] = {}
    for i, item in enumerate(doc["items"]):
        if not isinstance(item, dict) or "key" not in item or "name" not in item:
            raise InvalidInput(f"{source}: item {i} needs 'key' and 'name'")
        unknown = set(item) - _ALLOWED[kind]
        if unknown:
            raise InvalidInput(f"{source}: item {item['key']!r} has unknown attribute(s) {sorted(unknown)}")
        key = str(item["key"])
        if not _KEY.match(key):
            raise InvalidInput(f"{source}: malformed key {key!r}")
        if key in terms:
            raise InvalidInput(f"{source}: duplicate key {key!r}")
        term = Term(key, str(item["name"]), {k: v for k, v in item.items() if k not in ("key", "name")})
        if kind in ("data_categories", "data_uses") and term.parent and term.parent not in terms:
            raise InvalidInput(f"{source}: {key!r} appears before (or without) its parent {term.parent!r}")
        terms[key] = term
    return terms


def load_taxonomy(directory: Path | None = None) -> Taxonomy:
    """Load the bundled taxonomy (or one from `directory`, for extension and tests)."""
    if directory is None:
        return _bundled()
    return _load(Path(directory))


@cache
def _bundled() -> Taxonomy:
    return _load(Path(str(resources.files("complai.taxonomy") / "data")))


def _load(directory: Path) -> Taxonomy:
    terms = {}
    for kind in KINDS:
        path = directory / f"{kind}.yaml"
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInput(f"taxonomy file {path.name} is missing") from None
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{path.name}: not valid YAML ({str(exc).splitlines()[0]})") from None
        terms[kind] = parse_terms(kind, doc, path.name)
    return Taxonomy(terms)
