"""What the parser knows about one module: symbols, imports, references, docs.

All line numbers are 1-based and inclusive.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Symbol:
    """A definition: function, class, method, struct, interface, enum, trait, type."""

    name: str  # simple name as written, e.g. "add"
    qualname: str  # dotted path inside the module, e.g. "Cart.add"
    kind: str  # function | class | method | struct | interface | enum | trait | type
    start_line: int  # line of the definition keyword/name (decorators and comments excluded)
    end_line: int  # last line of the definition
    signature: str  # the definition's head, up to (not including) its body, one line
    doc: str = ""  # docstring or leading comment, stripped of comment markers
    parent: str | None = None  # qualname of the enclosing class/impl, if any
    exported: bool = True  # public by the language's convention


@dataclass(frozen=True)
class Import:
    """One import statement (or one imported module of it)."""

    module: str  # module spec as written: "os.path", ".cart", "./cart", "fmt", "crate::cart"
    names: tuple[str, ...]  # names imported from it ("*" for a glob), empty for plain imports
    line: int


class Reference(NamedTuple):
    """A call or use of a name, for heuristic "what calls X" answers. A named tuple: call
    sites are the most numerous facts (about 180 per module in the standard library)."""

    name: str
    line: int


@dataclass
class ModuleFacts:
    path: str
    lang: str
    line_count: int
    doc: str = ""  # module docstring or leading comment
    header_end: int = 0  # last line of the module header (doc comment + imports); 0 if none
    symbols: list[Symbol] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    syntax_errors: int = 0  # ERROR/MISSING nodes; what parsed is still kept
    # "start:end" -> hash of those lines (``notes.span_sha``) for the header and every
    # symbol, filled in by the indexer, which has the text: citations need no re-read
    span_shas: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (hand-written: ``dataclasses.asdict`` is slow here)."""
        return {
            "path": self.path,
            "lang": self.lang,
            "line_count": self.line_count,
            "doc": self.doc,
            "header_end": self.header_end,
            "symbols": [s.__dict__.copy() for s in self.symbols],
            "imports": [
                {"module": i.module, "names": list(i.names), "line": i.line} for i in self.imports
            ],
            "references": [{"name": r.name, "line": r.line} for r in self.references],
            "syntax_errors": self.syntax_errors,
            "span_shas": self.span_shas,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModuleFacts:
        return cls(
            path=data["path"],
            lang=data["lang"],
            line_count=data["line_count"],
            doc=data.get("doc", ""),
            header_end=data.get("header_end", 0),
            symbols=[_symbol(s) for s in data.get("symbols", [])],
            imports=[
                Import(module=i["module"], names=tuple(i["names"]), line=i["line"])
                for i in data.get("imports", [])
            ],
            references=[Reference(**r) for r in data.get("references", [])],
            syntax_errors=data.get("syntax_errors", 0),
            span_shas=data.get("span_shas", {}),
        )

    def symbol(self, qualname: str) -> Symbol | None:
        for sym in self.symbols:
            if sym.qualname == qualname:
                return sym
        return None

    def enclosing_symbol(self, line: int) -> Symbol | None:
        """The innermost symbol whose span contains ``line``."""
        return enclosing_symbols(self.symbols, [line])[0]


_SYMBOL_FIELDS = frozenset(f.name for f in fields(Symbol))


def _symbol(data: dict[str, Any]) -> Symbol:
    """``Symbol(**data)``; a dict with exactly its fields (what ``to_dict`` writes) fills
    the instance directly: a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, and stores hold tens of thousands of symbols."""
    if data.keys() != _SYMBOL_FIELDS:
        return Symbol(**data)  # an older store's dict: defaults apply (or a clear error)
    sym = object.__new__(Symbol)
    sym.__dict__.update(data)
    return sym


def enclosing_symbols(symbols: list[Symbol], lines: list[int]) -> list[Symbol | None]:
    """For each line, the innermost symbol containing it (spans nest, so that is the
    containing symbol that starts last). O((symbols + lines) log symbols)."""
    ordered = sorted(symbols, key=lambda s: (s.start_line, -s.end_line))
    starts = [s.start_line for s in ordered]
    out: list[Symbol | None] = []
    for line in lines:
        i = bisect_right(starts, line) - 1
        found = None
        for j in range(i, max(-1, i - 64), -1):  # nesting is shallow; bound the walk
            if ordered[j].end_line >= line:
                found = ordered[j]
                break
        out.append(found)
    return out
