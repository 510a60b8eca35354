"""Static notes: derived from the parse alone, no model. Deterministic and always available.

Per module: a compact summary (doc, exports, place in the import graph), up to
``MAX_QA`` templated questions with answers, and one ``symbol`` item per symbol.
Every item cites the symbols (or the module header) it speaks about.
"""

from __future__ import annotations

from sleepy_repo.models.base import Estimate, NoteRequest
from sleepy_repo.notes import MODULE, DraftItem, NoteDraft
from sleepy_repo.parse.facts import Symbol

MAX_QA = 8
MAX_LISTED = 8
MAX_SIGNATURE = 160
TOP_KINDS = ("class", "struct", "interface", "trait", "enum", "type", "function")


def first_sentence(doc: str, limit: int = 160) -> str:
    text = " ".join(doc.split())
    for end in (". ", ".\n"):
        i = text.find(end)
        if 0 < i < limit:
            return text[: i + 1]
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _names(items: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class StaticBackend:
    name = "static"
    model = ""
    prompt_version = "static-5"  # bump when the note text changes
    generated = False
    concurrency = 1

    def estimate(self, request: NoteRequest) -> Estimate:
        return Estimate()

    def write_notes(self, request: NoteRequest, *, symbol_items: bool = True) -> NoteDraft:
        """The module's notes; ``symbol_items=False`` leaves out the per-symbol items (the
        batch writer builds those rows directly: ``sleep.static_rows``)."""
        facts = request.facts
        path = facts.path
        public = [s for s in facts.symbols if s.exported and s.parent is None]
        items: list[DraftItem] = [self._summary(request, public)]

        qa: list[DraftItem] = []
        if public:
            qa.append(
                DraftItem(
                    kind="qa",
                    question=f"What does {path} export?",
                    text=f"{path} exports "
                    + _names([f"{s.kind} {s.name} (line {s.start_line})" for s in public]),
                    cites=(MODULE, *(s.qualname for s in public[:MAX_LISTED])),
                )
            )
        if request.imports or facts.imports:
            deps = request.imports or sorted({i.module for i in facts.imports})
            qa.append(
                DraftItem(
                    kind="qa",
                    question=f"What does {path} depend on?",
                    text=f"{path} imports " + _names(deps),
                    cites=(MODULE,),
                )
            )
        for sym in self._ranked(public):
            if len(qa) >= MAX_QA:
                break
            qa.append(self._where(path, sym))
            callers = request.callers.get(sym.qualname, [])
            if callers and len(qa) < MAX_QA:
                where = [
                    f"{c.path}:{c.line}" + (f" in {c.symbol}" if c.symbol else "") for c in callers
                ]
                qa.append(
                    DraftItem(
                        kind="qa",
                        question=f"What calls {sym.name}?",
                        text=f"Callers of {sym.name} (matched by name, heuristic): "
                        + _names(where, 6),
                        cites=(sym.qualname,),
                        symbol=sym.qualname,
                        extra=tuple(c.citation for c in callers[:6]),
                        near=sym.start_line,
                    )
                )
        items.extend(qa)
        if symbol_items:
            items.extend(self._symbol_item(s) for s in facts.symbols)
        return NoteDraft(items=items, generated=False)

    @staticmethod
    def _ranked(public: list[Symbol]) -> list[Symbol]:
        """Types first, then functions; documented ones first within each."""

        def rank(s: Symbol) -> tuple[int, int, int]:
            kind = TOP_KINDS.index(s.kind) if s.kind in TOP_KINDS else len(TOP_KINDS)
            return (0 if kind < len(TOP_KINDS) - 1 else 1, 0 if s.doc else 1, s.start_line)

        return sorted(public, key=rank)

    @staticmethod
    def _summary(request: NoteRequest, public: list[Symbol]) -> DraftItem:
        facts = request.facts
        parts = [f"{facts.path} ({facts.lang}, {facts.line_count} lines)."]
        if facts.doc:
            parts.append(first_sentence(facts.doc))
        if public:
            parts.append("Defines " + _names([s.name for s in public], 6) + ".")
        if request.imports:
            parts.append("Imports " + _names(request.imports, 4) + ".")
        if request.imported_by:
            parts.append("Used by " + _names(request.imported_by, 4) + ".")
        return DraftItem(kind="summary", text=" ".join(parts), cites=(MODULE,))

    @staticmethod
    def _where(path: str, sym: Symbol) -> DraftItem:
        # the doc sentence is the symbol item's: a note never says the same thing twice
        text = f"{sym.kind} {sym.qualname} is defined in {path}:{sym.start_line}-{sym.end_line}"
        return DraftItem(
            kind="qa",
            question=f"Where is {sym.name} defined?",
            text=text,
            cites=(sym.qualname,),
            symbol=sym.qualname,
            near=sym.start_line,
        )

    @staticmethod
    def symbol_text(sym: Symbol) -> str:
        """The text of a symbol's item: kind, qualname, signature, first doc sentence."""
        signature = sym.signature.strip()
        if len(signature) > MAX_SIGNATURE:
            signature = signature[: MAX_SIGNATURE - 1] + "…"
        text = f"{sym.kind} {sym.qualname}"
        if signature not in (text, f"{sym.kind} {sym.name}"):  # not "class C: class C"
            text += f": {signature}"
        if sym.doc:
            text += " — " + first_sentence(sym.doc)
        return text

    @classmethod
    def _symbol_item(cls, sym: Symbol) -> DraftItem:
        text = cls.symbol_text(sym)
        return DraftItem(
            kind="symbol",
            text=text,
            cites=(sym.qualname,),
            symbol=sym.qualname,
            near=sym.start_line,
        )
