"""Notes: what sleep-time work produces for one module, and how claims are grounded.

A backend writes a ``NoteDraft``: items whose claims cite *symbols* (qualnames) or the
module header, never raw line numbers. ``ground`` maps every cited symbol to its span in the
parse, computes the span's hash, and drops citations of symbols that do not exist. The hash
lets a note outlive edits elsewhere in the file (``carry_over``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from sleepy_repo.parse.facts import ModuleFacts, Symbol
from sleepy_repo.redact import redact_text

KINDS = ("summary", "qa", "fact", "symbol", "code")
MODULE = "<module>"  # pseudo-symbol: the module header (doc comment + imports)

# -- provenance ----------------------------------------------------------------------------
# ``notes.origin``: how a note set came into this store.
WRITTEN = "written"  # a backend wrote it here, for this blob
CARRIED = "carried"  # re-anchored here from the module's previous blob (partly stale)
IMPORTED = "imported"  # copied from a committed mirror: it says whatever the repository says
IMPORTED_CARRIED = "imported-carried"  # a carried set from a mirror, or carried from one
COMPLETE_ORIGINS = (WRITTEN, IMPORTED)  # not merely carried over: nothing left to rewrite
CARRIED_ORIGINS = (CARRIED, IMPORTED_CARRIED)

# ``source`` of a served item: where its text comes from. All of it is data, never
# instructions: repository text can say anything, and a model paraphrases it.
REPOSITORY = "repository"  # code, docstrings, names and facts parsed from the files
MODEL = "model"  # written by a model in this store, from repository text
MIRROR = "mirror"  # imported from the repository's committed notes, whatever they claim
SOURCES = (REPOSITORY, MODEL, MIRROR)


def imported_origin(claimed: str) -> str:
    """The origin a mirror's note set is stored with: what the file claims decides only
    whether the set is complete or carried over, never that it was written here."""
    return IMPORTED_CARRIED if claimed in CARRIED_ORIGINS else IMPORTED


def mirrored_origin(origin: str) -> str:
    """The origin a mirror file records for a stored set: ``written`` or ``carried`` (how
    the set came into *this* store is not the notes' business, and would churn the file)."""
    return CARRIED if origin in CARRIED_ORIGINS else WRITTEN


def from_mirror(origin: str | None) -> bool:
    """Whether a note set of ``origin`` was imported from a committed mirror."""
    return origin in (IMPORTED, IMPORTED_CARRIED)


def item_source(origin: str | None, generated: bool) -> str:
    """Where the text of a note item of a set with ``origin`` comes from (None: not a note)."""
    if from_mirror(origin):
        return MIRROR
    return MODEL if generated else REPOSITORY


@dataclass(frozen=True)
class Citation:
    path: str
    start_line: int  # 1-based, inclusive
    end_line: int
    symbol: str | None
    span_sha: str


@dataclass(frozen=True)
class DraftItem:
    """A claim as a backend writes it: citing symbols by qualname (or ``MODULE``)."""

    kind: str
    text: str
    cites: tuple[str, ...]  # qualnames in this module, or MODULE
    question: str | None = None
    symbol: str | None = None  # the symbol the item is about, if any
    extra: tuple[Citation, ...] = ()  # already-grounded citations into other modules
    near: int | None = None  # when overloads share a cited qualname: the one starting nearest


@dataclass(frozen=True)
class Usage:
    """What one model call cost, as the API reported it (``usage``) and priced."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    batch: bool = False

    @property
    def tokens(self) -> int:
        """Every token the call processed: what token budgets count."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


@dataclass
class NoteDraft:
    items: list[DraftItem]
    generated: bool  # written by a model (vs derived from facts)
    usage: tuple[Usage, ...] = ()  # one entry per model call that wrote the draft


@dataclass(frozen=True)
class NoteItem:
    kind: str
    text: str
    question: str | None
    symbol: str | None
    start_line: int
    end_line: int
    citations: tuple[Citation, ...]
    generated: bool
    stale: bool = False


@dataclass
class NoteKey:
    path: str
    blob_sha: str
    prompt_version: str
    backend: str
    model: str
    effort: str


@dataclass
class ModuleNotes:
    key: NoteKey
    items: list[NoteItem] = field(default_factory=list)
    dropped_citations: int = 0  # cited symbols that did not exist in the parse


def source_lines(text: str) -> list[str]:
    """The lines of a source file as the parser numbers them: split at ``\\n`` only
    (``str.splitlines`` also splits at form feeds, ``\\x1c``-``\\x1e``, ``\\x85`` and
    ``\\u2028``, which would shift every chunk after such a character)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" not in text:
        return lines
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def span_sha(lines: list[str], start: int, end: int) -> str:
    """Hash of lines ``start..end`` (1-based, inclusive), ignoring trailing white space."""
    return _hash_stripped([line.rstrip() for line in lines[start - 1 : end]])


def _hash_stripped(stripped: list[str]) -> str:
    body = "\n".join(stripped)
    return hashlib.sha1(body.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def header_span(facts: ModuleFacts) -> tuple[int, int]:
    end = max(1, min(facts.header_end, facts.line_count)) if facts.line_count else 1
    return 1, end


def span_hashes(facts: ModuleFacts, lines: list[str]) -> dict[str, str]:
    """``span_sha`` of the header and of every symbol, keyed ``"start:end"`` (what
    ``ModuleFacts.span_shas`` holds; the indexer computes it while it has the text)."""
    stripped = [line.rstrip() for line in lines]
    out: dict[str, str] = {}
    for start, end in (header_span(facts), *((s.start_line, s.end_line) for s in facts.symbols)):
        key = f"{start}:{end}"
        if key not in out:
            out[key] = _hash_stripped(stripped[start - 1 : end])
    return out


class Grounder:
    """Grounds cited names in one module version; caches symbol lookups and span hashes
    (many items cite the same symbol, and a class's span holds its methods' spans).

    Hashes come from ``facts.span_shas`` when the indexer computed them (of the indexed
    text, so ``lines`` may then be empty), else from ``lines``."""

    def __init__(self, facts: ModuleFacts, lines: list[str]) -> None:
        self.facts = facts
        self._lines = lines
        self._stripped: list[str] | None = None
        self._symbols: dict[str, list[Symbol]] = {}
        for sym in facts.symbols:
            self._symbols.setdefault(sym.qualname, []).append(sym)
        self._shas: dict[str, str] = dict(facts.span_shas)
        self._cites: dict[tuple[str, int | None], Citation | None] = {}

    def sha(self, start: int, end: int) -> str:
        key = f"{start}:{end}"
        if key not in self._shas:
            if self._stripped is None:
                self._stripped = [line.rstrip() for line in self._lines]
            self._shas[key] = _hash_stripped(self._stripped[start - 1 : end])
        return self._shas[key]

    def cite(self, name: str, near: int | None = None) -> Citation | None:
        """One cited name (a qualname or ``MODULE``) as a citation; None if unknown. Where
        several symbols share the qualname (``@overload`` stubs and their implementation,
        TypeScript overload signatures), the one starting nearest line ``near``; without
        ``near``, the longest (the implementation, not a one-line stub)."""
        key = (name, near if len(self._symbols.get(name, ())) > 1 else None)
        if key in self._cites:
            return self._cites[key]
        c = self._cites[key] = self._cite(*key)
        return c

    def _cite(self, name: str, near: int | None) -> Citation | None:
        if name == MODULE:
            start, end = header_span(self.facts)
            return Citation(self.facts.path, start, end, None, self.sha(start, end))
        same = self._symbols.get(name)
        if not same:
            return None
        if near is None:  # a model cites by name: the implementation, the longest of them
            sym = max(same, key=lambda s: (s.end_line - s.start_line, -s.start_line))
        else:
            sym = min(same, key=lambda s: abs(s.start_line - near))
        return Citation(
            self.facts.path,
            sym.start_line,
            sym.end_line,
            sym.qualname,
            self.sha(sym.start_line, sym.end_line),
        )


def ground(draft: NoteDraft, facts: ModuleFacts, lines: list[str], key: NoteKey) -> ModuleNotes:
    """Turn a draft into stored items; drop unknown citations, and items left with none.

    Item text is redacted (``sleepy_repo.redact``): a secret quoted in a docstring or a
    signature never ends up in a note, whoever wrote it."""
    notes = ModuleNotes(key=key)
    grounder = Grounder(facts, lines)
    for d in draft.items:
        cits: list[Citation] = []
        for name in d.cites:
            c = grounder.cite(name, d.near)
            if c is None:
                notes.dropped_citations += 1
            elif c not in cits:
                cits.append(c)
        if not cits:
            continue
        primary = next((c for c in cits if d.symbol and c.symbol == d.symbol), cits[0])
        symbol = primary.symbol if d.symbol else None
        notes.items.append(
            NoteItem(
                kind=d.kind,
                text=redact_text(d.text),
                question=redact_text(d.question) if d.question else d.question,
                symbol=symbol,
                start_line=primary.start_line,
                end_line=primary.end_line,
                citations=tuple(cits) + tuple(d.extra),
                generated=draft.generated,
            )
        )
    return notes


def carry_over(items: list[NoteItem], facts: ModuleFacts, lines: list[str]) -> list[NoteItem]:
    """Re-anchor items of an older version of a module in its new version.

    An item stays fresh when every citation into this module still finds its symbol (or
    header) with an unchanged span hash; its lines move with the symbol. Otherwise it is
    kept but marked stale, so it is served with ``stale: true`` until refreshed.
    """
    out: list[NoteItem] = []
    grounder = Grounder(facts, lines)
    for item in items:
        stale = item.stale
        cits: list[Citation] = []
        for c in item.citations:
            if c.path != facts.path:
                cits.append(c)
                continue
            now = grounder.cite(c.symbol if c.symbol else MODULE, c.start_line)
            if now is None or now.span_sha != c.span_sha:
                stale = True
                cits.append(c if now is None else replace(now, span_sha=c.span_sha))
            else:
                cits.append(now)
        primary = next((c for c in cits if c.path == facts.path), None)
        start, end = (primary.start_line, primary.end_line) if primary else (1, 1)
        out.append(
            replace(item, citations=tuple(cits), start_line=start, end_line=end, stale=stale)
        )
    return out
