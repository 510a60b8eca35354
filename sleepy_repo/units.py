"""Units: the pieces of a module that a question's answer is made of, and the window of a
long unit that matters to a question.

A unit is a symbol (function, method, small class) or a module-level stretch between
symbols. A symbol longer than ``UNIT_MAX_LINES`` that contains other symbols is not one
unit: its own lines (a class's header, docstring and attributes) are, and so is each of its
children, recursively. Blank stretches are no unit. ``units_of`` covers every non-blank line
of a module exactly once.

``bm25`` scores units' code for a question among the candidates, and ``best_window`` picks
the ``size`` consecutive lines of a unit with the most question words (ties: the earliest),
so a long function is served around the lines that match. Both match a question word's stem
as a substring of the code: fast, and identifiers need no splitting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

UNIT_MAX_LINES = 60


@dataclass(frozen=True)
class SymbolSpan:
    qualname: str
    start_line: int
    end_line: int


@dataclass(frozen=True)
class Unit:
    path: str
    start_line: int  # 1-based, inclusive
    end_line: int
    symbol: str | None  # the symbol it belongs to; None for module-level code

    @property
    def lines(self) -> int:
        return self.end_line - self.start_line + 1


def units_of(path: str, symbols: Sequence[SymbolSpan], lines: Sequence[str]) -> list[Unit]:
    """The units of a module (see the module docstring), in line order."""
    n = len(lines)
    spans = sorted(
        (s for s in symbols if 1 <= s.start_line <= n and s.end_line >= s.start_line),
        key=lambda s: (s.start_line, -s.end_line),
    )
    out: list[Unit] = []

    def stretch(start: int, end: int, symbol: str | None) -> None:
        """Units of the lines start..end owned by ``symbol``, blank edges trimmed."""
        while start <= end and not lines[start - 1].strip():
            start += 1
        while end >= start and not lines[end - 1].strip():
            end -= 1
        if start <= end:
            out.append(Unit(path, start, end, symbol))

    def walk(start: int, end: int, owner: str | None, inside: list[SymbolSpan]) -> None:
        """Cover start..end, where ``inside`` are the symbols strictly within it."""
        cursor = start
        i = 0
        while i < len(inside):
            sym = inside[i]
            s_end = min(sym.end_line, end)
            children = []
            j = i + 1
            while j < len(inside) and inside[j].start_line <= s_end:
                children.append(inside[j])
                j += 1
            # decorators and doc comments just above a symbol belong to it
            s_start = sym.start_line
            while s_start - 1 >= cursor and _attached(lines[s_start - 2]):
                s_start -= 1
            if s_start > cursor:
                stretch(cursor, s_start - 1, owner)
            if children and s_end - sym.start_line + 1 > UNIT_MAX_LINES:
                stretch(s_start, sym.start_line - 1, sym.qualname)
                walk(sym.start_line, s_end, sym.qualname, children)
            else:
                stretch(s_start, s_end, sym.qualname)
            cursor = max(cursor, s_end + 1)
            i = j
        if cursor <= end:
            stretch(cursor, end, owner)

    walk(1, n, None, spans)
    return out


def _attached(line: str) -> bool:
    """A decorator or doc-comment line, which belongs to the symbol below it."""
    t = line.lstrip()
    return t.startswith(("@", "///", "//", "#[", "/**", "* ", "*/")) or t == "*"


_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ers", "er", "es", "ed", "s")


def stem(term: str) -> str:
    """A question word cut to a stem that also finds its other forms as a substring of code
    (``encoded`` -> ``encod``, ``floats`` -> ``float``); short words stay as they are."""
    for suffix in _SUFFIXES:
        if term.endswith(suffix) and len(term) - len(suffix) >= 4:
            return term[: -len(suffix)]
    return term


def search_stems(terms: Sequence[str]) -> list[str]:
    """The stems ``bm25`` and ``best_window`` look for: of terms of 3 letters or more (a
    shorter one is a substring of too many words), without repeats."""
    return list(dict.fromkeys(stem(t.lower()) for t in terms if len(t) >= 3))


def bm25(
    texts: Sequence[str], terms: Sequence[str], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """BM25 of each text for ``terms`` among ``texts`` (document frequencies counted
    among them), a term matching wherever its stem is a substring of the lower-cased text:
    identifiers need no splitting (``envvar`` is in ``resolve_envvar_value``), and every
    count is a C-level ``str.count``."""
    low = [t.lower() for t in texts]
    n = len(low)
    if not n:
        return []
    avg = sum(map(len, low)) / n or 1.0
    norm = [k1 * (1 - b + b * len(x) / avg) for x in low]
    scores = [0.0] * n
    for t in search_stems(terms):
        counts = [x.count(t) for x in low]
        df = sum(1 for c in counts if c)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, c in enumerate(counts):
            if c:
                scores[i] += idf * c * (k1 + 1) / (c + norm[i])
    return scores


def pieces(unit: Unit, size: int) -> list[Unit]:
    """A unit longer than ``size`` lines cut into consecutive pieces of about equal length,
    none longer than ``size`` (each is ranked on its own, so a long function or type is
    served where it matches, and more than once if it matches in several places). Pieces
    that overlap by half (lines matching across a cut whole in some piece) were no better
    on the development repositories."""
    if size <= 0 or unit.lines <= size:
        return [unit]
    k = -(-unit.lines // size)
    step = unit.lines / k
    bounds = [unit.start_line + round(i * step) for i in range(k + 1)]
    return [Unit(unit.path, bounds[i], bounds[i + 1] - 1, unit.symbol) for i in range(k)]


def best_window(lines: Sequence[str], terms: Sequence[str], size: int) -> tuple[int, int]:
    """0-based (start, end-exclusive) of the ``size`` consecutive lines with the most
    question-term matches; the first ``size`` lines when nothing matches."""
    n = len(lines)
    if size >= n:
        return 0, n
    stems = search_stems(terms)
    score = [sum(1 for t in stems if t in line.lower()) for line in lines]
    total = sum(score[:size])
    best, best_at = total, 0
    for start in range(1, n - size + 1):
        total += score[start + size - 1] - score[start - 1]
        if total > best:
            best, best_at = total, start
    return best_at, best_at + size
