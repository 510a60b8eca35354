"""Gold lines and gold symbols of a case, and the scores of what a strategy served.

A case's **gold lines** are 1-based lines of the state's version of its gold files:

* a mined case (with a ``commit``): the '-' side of ``git diff -U0 STATE COMMIT -- FILE``
  per gold file, i.e. the lines the commit deleted or changed; a pure insertion hunk
  ``@@ -a,0 +b,n @@`` contributes the line it follows, line ``a`` (line 1 when ``a`` is 0);
* a written question (``gold_symbols`` and no ``commit``): the spans of its gold symbols
  in the state's parse (``path::qualname``, or a bare qualname looked up in the gold files,
  in order; of several symbols with that name, the widest).

Its **gold symbols** are the innermost symbols of the state's parse that contain a gold
line (a written question's are the ones it names). Scores (docs/benchmark.md has the full
definitions):

* **coverage**: the share of gold lines whose text a served *code* item carries at the
  position it maps the line to (line ``start_line + i`` is the item's ``i``-th text line,
  up to ``end_line``); the line must equal the state's line, or its redacted form
  (the whole file redacted with the product's redaction, or the line alone);
* **pointer coverage**: the share of gold lines inside a served item's span or one of its
  citations; spans and citations wider than ``POINTER_MAX_LINES`` lines are ignored, except
  a code item's own span (it carries its text); path-list items point at no line;
* **symbol hit@k**: |gold symbols ∩ the first k distinct symbols served| / min(k, |gold|),
  where a code item's symbol is its ``symbol`` field, else the innermost symbol containing
  its start line, and another item's symbol is its ``symbol`` field.

Gold lines in files that are not indexed or are deny-listed stay in the denominator.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sleepy_repo.bench.mine import Case
from sleepy_repo.errors import RepoError
from sleepy_repo.notes import source_lines
from sleepy_repo.parse import ModuleFacts, Symbol, language_for_path, parse_module
from sleepy_repo.parse.facts import enclosing_symbols
from sleepy_repo.redact import redact_text

log = logging.getLogger(__name__)

POINTER_MAX_LINES = 80  # a citation or non-code span wider than this points at nothing
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")

SymbolKey = tuple[str, str]  # (path, qualname)


@dataclass(frozen=True)
class ServedItem:
    """One item a strategy served: a span of a file, and the text it carried.

    ``kind`` is one of the context's kinds (summary | qa | fact | symbol | code) or
    ``path`` (a bare path of a path list). A ``code`` item's ``text`` is the code of
    lines ``start_line``..``end_line``, one text line per file line."""

    path: str
    start_line: int
    end_line: int
    kind: str
    text: str = ""
    symbol: str | None = None
    citations: tuple[tuple[str, int, int], ...] = ()  # (path, start_line, end_line)


@dataclass
class Gold:
    """The gold of one case at its state."""

    lines: dict[tuple[str, int], frozenset[str]] = field(default_factory=dict)
    symbols: list[SymbolKey] = field(default_factory=list)
    missing_symbols: list[str] = field(default_factory=list)  # named but not in the parse

    def per_file(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for path, _ in self.lines:
            out[path] = out.get(path, 0) + 1
        return out


# -- the state's files ---------------------------------------------------------------------
def read_state_file(root: Path, path: str) -> bytes | None:
    """The bytes of ``path`` in the worktree ``root`` (checked out at the state)."""
    try:
        return (root / path).read_bytes()
    except OSError:
        return None


@functools.lru_cache(maxsize=2048)
def _parse(path: str, data: bytes) -> ModuleFacts | None:
    lang = language_for_path(path)
    return parse_module(path, data, lang) if lang else None


def state_facts(root: Path, path: str) -> ModuleFacts | None:
    """The parse of ``path`` at the state (cached by content across states)."""
    data = read_state_file(root, path)
    return None if data is None else _parse(path, data)


def _accepted(lines: list[str], redacted: list[str], n: int) -> frozenset[str]:
    """What a served line ``n`` may read: the state's line or a redacted form of it."""
    line = lines[n - 1]
    forms = {line, redact_text(line)}
    if len(redacted) == len(lines):
        forms.add(redacted[n - 1])
    return frozenset(forms)


def _widest(facts: ModuleFacts, qualname: str) -> Symbol | None:
    """The symbol named ``qualname`` with the widest span (typing overloads come first
    with one-line stubs; the implementation is the one a question asks about)."""
    named = [s for s in facts.symbols if s.qualname == qualname]
    return max(named, key=lambda s: s.end_line - s.start_line) if named else None


def diff_lines(root: Path, state: str, commit: str, path: str) -> list[int]:
    """The '-' side of ``git diff -U0 state commit -- path`` (see the module docstring)."""
    proc = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "diff",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
            state,
            commit,
            "--",
            path,
        ],
        capture_output=True,
        text=True,
        errors="surrogateescape",
    )
    if proc.returncode != 0:
        raise RepoError(f"git diff {state[:10]} {commit[:10]} -- {path}: {proc.stderr.strip()}")
    out: set[int] = set()
    for line in proc.stdout.splitlines():
        m = _HUNK.match(line)
        if not m:
            continue
        a = int(m[1])
        n = 1 if m[2] is None else int(m[2])
        if n == 0:
            out.add(max(a, 1))
        else:
            out.update(range(a, a + n))
    return sorted(out)


def case_gold(root: Path, case: Case) -> Gold:
    """The gold lines and symbols of ``case``, read in the worktree ``root`` at its state."""
    gold = Gold()
    wanted: dict[str, list[int]] = {}
    if case.commit:
        for path in case.gold_files:
            wanted[path] = diff_lines(root, case.state, case.commit, path)
    else:
        for name in case.gold_symbols:
            path_hint, _, qualname = name.rpartition("::")
            found = False
            for path in [path_hint] if path_hint else case.gold_files:
                facts = state_facts(root, path)
                sym = _widest(facts, qualname) if facts else None
                if sym is not None:
                    wanted.setdefault(path, []).extend(range(sym.start_line, sym.end_line + 1))
                    gold.symbols.append((path, qualname))
                    found = True
                    break
            if not found:
                gold.missing_symbols.append(name)
                log.warning("gold symbol %s of %r is not in the state's parse", name, case.label)
    for path, numbers in wanted.items():
        data = read_state_file(root, path)
        if data is None:
            continue
        text = data.decode("utf-8", "replace")
        lines = source_lines(text)
        redacted = source_lines(redact_text(text))
        valid = sorted({n for n in numbers if 1 <= n <= len(lines)})
        for n in valid:
            gold.lines[(path, n)] = _accepted(lines, redacted, n)
        if case.commit:
            facts = _parse(path, data)
            if facts is not None:
                for sym in enclosing_symbols(facts.symbols, valid):
                    if sym is not None and (path, sym.qualname) not in gold.symbols:
                        gold.symbols.append((path, sym.qualname))
    return gold


# -- scores --------------------------------------------------------------------------------
def coverage(gold: Gold, items: Sequence[ServedItem]) -> float | None:
    """Share of gold lines carried by a served code item (None: the case has none)."""
    if not gold.lines:
        return None
    covered: set[tuple[str, int]] = set()
    for item in items:
        if item.kind != "code":
            continue
        for i, text in enumerate(item.text.split("\n")):
            n = item.start_line + i
            if n > item.end_line:
                break
            accepted = gold.lines.get((item.path, n))
            if accepted is not None and text.removesuffix("\r") in accepted:
                covered.add((item.path, n))
    return len(covered) / len(gold.lines)


def pointer_coverage(gold: Gold, items: Sequence[ServedItem]) -> float | None:
    """Share of gold lines inside a served span or citation (see the module docstring)."""
    if not gold.lines:
        return None
    spans: list[tuple[str, int, int]] = []
    for item in items:
        if item.kind == "path":
            continue
        width = item.end_line - item.start_line + 1
        if item.kind == "code" or width <= POINTER_MAX_LINES:
            spans.append((item.path, item.start_line, item.end_line))
        spans.extend(c for c in item.citations if c[2] - c[1] + 1 <= POINTER_MAX_LINES)
    hit = sum(1 for path, n in gold.lines if any(p == path and s <= n <= e for p, s, e in spans))
    return hit / len(gold.lines)


def served_symbols(root: Path, items: Sequence[ServedItem]) -> list[SymbolKey]:
    """The distinct symbols served, in order (see the module docstring)."""
    out: dict[SymbolKey, None] = {}
    for item in items:
        name = item.symbol
        if not name and item.kind == "code":
            facts = state_facts(root, item.path)
            sym = facts.enclosing_symbol(item.start_line) if facts else None
            name = sym.qualname if sym else None
        if name:
            out.setdefault((item.path, name), None)
    return list(out)


def symbol_hit(gold: Gold, served: Sequence[SymbolKey], k: int) -> float | None:
    """|gold symbols ∩ first k distinct served symbols| / min(k, |gold|); None: no gold."""
    if not gold.symbols:
        return None
    first = list(dict.fromkeys(served))[:k]
    return len(set(first) & set(gold.symbols)) / min(k, len(set(gold.symbols)))
