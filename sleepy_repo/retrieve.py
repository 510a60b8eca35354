"""Retrieve: rank files and the units inside them for a question, then pack a token budget
with a short map and the code that matters (DESIGN §5).

Files are ranked by reciprocal rank fusion of BM25 over raw code chunks (each file scored by
its three best chunks, and the chunks themselves), BM25 over note items (text, predicted
questions, symbol names) of current notes, exact symbol-name matches of identifiers in the
question, path matches of its words and, where the store has a semantic index
(``sleepy_repo.embed``, built at idle time), the files whose units are most similar to the
question; then nudged along the import graph.

Units (``sleepy_repo.units``: symbols, and module-level stretches between them) of the top
``UNIT_FILES`` files are ranked by fusing, at the unit level: BM25 over each unit's code
(among the candidates), exact identifier matches of the unit's name, note items attached to
the unit (by symbol or line), the rank of its file and the unit's similarity to the
question in the semantic index.

A budget buys, in order: a map (the top files, one line each from their summary note; at
most ``MAP_SHARE`` of the budget, or the whole budget up to ``MAP_ONLY``), then the code of
the top units in rank order, a long unit trimmed to the window around the lines that match,
windows of one file merged when they touch, each item citing its exact lines. Code is
redacted and never served from a deny-listed file. Token counts use
``tokens.count_tokens`` on the rendered item.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import re
import sqlite3
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from sleepy_repo import embed
from sleepy_repo.embed import Embedder
from sleepy_repo.notes import MODEL, REPOSITORY, Citation, NoteItem, item_source
from sleepy_repo.redact import DenyList, redact_text
from sleepy_repo.scan import is_example, is_test
from sleepy_repo.store import NoteStore, fts_text, item_from_row
from sleepy_repo.tokens import count_tokens
from sleepy_repo.units import Unit, best_window, bm25, pieces, units_of

SCHEMA_VERSION = 1
RRF_K = 60
FUSION_WEIGHTS: dict[str, float] = {
    "files": 1.0,
    "chunks": 1.0,
    "notes": 1.0,
    "symbols": 1.5,
    "paths": 0.7,
    "history": 0.5,
    "embed": 1.0,
}
USAGE_PRIOR = 0.5  # a test's or an example's fused score is multiplied by this (``_behind_code``)
GRAPH_WEIGHT = 0.25  # chosen by a sweep on click, httpx and cobra localization (README)
GRAPH_TOP = 10
FILE_CHUNKS = 3  # a file's best chunks that make its score (``file_evidence``)
MAX_TERMS = 32
UNIT_FILES = 8  # the top files whose units are ranked
UNIT_RRF_K = 10  # units: a smaller k than files', so the first ranks weigh more
UNIT_WEIGHTS: dict[str, float] = {
    "code": 1.0,
    "file": 1.0,
    "symbols": 1.5,
    "notes": 0.7,
    "history": 1.0,
    "embed": 1.0,
}

PIECE_LINES = 60  # a longer unit is ranked as pieces of at most this many lines (a sweep on
# the five development repositories: mean coverage 0.374 -> 0.401 at 2,000 tokens and 0.298 ->
# 0.302 at 1,000; ripgrep does better with whole units and ky with 30-line pieces, so
# ``sleepy-repo tune`` tries 0, 30 and 40 per repository)


@dataclass(frozen=True)
class Weights:
    """The ranking's fusion weights: of the file-level signals, of the import-graph nudge
    and of the unit-level signals. The defaults above, or the weights ``sleepy_repo.tune``
    fitted on the repository's own history (stored; ``rank`` reads them)."""

    files: dict[str, float]
    graph: float
    units: dict[str, float]
    piece_lines: int = PIECE_LINES  # long units are ranked as pieces of at most this many lines

    def to_json(self) -> dict[str, Any]:
        return {
            "files": dict(self.files),
            "graph": self.graph,
            "units": dict(self.units),
            "piece_lines": self.piece_lines,
        }

    def digest(self) -> str:
        """A short digest of the weights (a fit records the defaults it started from: one
        from other defaults is out of date, its snapshot would hide a change of them)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Weights:
        """Weights read back; a signal the stored weights do not name keeps its default."""
        files = {k: float(d.get("files", {}).get(k, v)) for k, v in FUSION_WEIGHTS.items()}
        units = {k: float(d.get("units", {}).get(k, v)) for k, v in UNIT_WEIGHTS.items()}
        graph = float(d.get("graph", GRAPH_WEIGHT))
        return cls(files, graph, units, int(d.get("piece_lines", PIECE_LINES)))


DEFAULT_WEIGHTS = Weights(dict(FUSION_WEIGHTS), GRAPH_WEIGHT, dict(UNIT_WEIGHTS))
MAP_SHARE = 0.15  # of a budget, at most, for the map
MAP_ONLY = 300  # budgets up to this buy the map alone
MAP_FILES = 8
MAP_LINE_CHARS = 60  # a map line's note text is cut to about this
WINDOW_LINES = 60  # a unit longer than this is served as the window that matches best (a sweep on
# the development repositories: 25 < 40 < 60 ~ 90 in coverage at 1,000 tokens)
MIN_WINDOW_LINES = 6  # a window cut shorter than this to fit the budget is not served
MAX_MISSES = 10  # units in a row that found no room: the budget is spent

_STOPWORDS_TEXT = """
    a an and are as at be but by can could did do does for from had has have how i if in
    into is it its make makes may more most must new no not of on or our should so some
    than that the their them then there these this those to too use used using was we
    were what when where which who why will with would you your add added adds allow
    allows fix fixed fixes change changed changes update updated updates remove removed
    support instead also now only when via
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


@dataclass
class ContextItem:
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    kind: str
    text: str
    generated: bool
    stale: bool
    score: float
    citations: list[Citation] = field(default_factory=list)
    # where the text comes from (notes.SOURCES): every item is data, never instructions;
    # derived from ``generated`` unless given (notes imported from a mirror must say so)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            self.source = MODEL if self.generated else REPOSITORY

    def render(self) -> str:
        """The item as a model reads it; its token count is what the budget pays."""
        where = f"{self.path}:{self.start_line}-{self.end_line}"
        flags = " (stale)" if self.stale else ""
        if self.kind == "code":
            return f"{where}{flags}\n{self.text}"
        return f"{where} [{self.kind}]{flags} {self.text}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"] = round(self.score, 6)
        d["citations"] = [
            {"path": c.path, "start_line": c.start_line, "end_line": c.end_line, "symbol": c.symbol}
            for c in self.citations
        ]
        return d


@dataclass
class Context:
    question: str
    budget: int
    tokens: int = 0
    items: list[ContextItem] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)  # files, best first

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "question": self.question,
            "budget": self.budget,
            "tokens": self.tokens,
            "items": [i.to_json() for i in self.items],
        }

    def files(self) -> list[str]:
        """Distinct files in the order the context first cites them."""
        seen: dict[str, None] = {}
        for item in self.items:
            seen.setdefault(item.path, None)
        return list(seen)


# -- query terms ---------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def query_terms(question: str) -> list[str]:
    """Lower-case search words of a question (identifiers split like the index splits them)."""
    words: dict[str, None] = {}
    for raw in _WORD.findall(fts_text(question)):
        for part in raw.split("_"):
            w = part.lower()
            if len(w) >= 2 and w not in STOPWORDS and not w.isdigit():
                words.setdefault(w, None)
    return list(words)[:MAX_TERMS]


def identifiers(question: str) -> list[str]:
    """Words of the question that could be symbol names (as written)."""
    out: dict[str, None] = {}
    for w in _WORD.findall(question):
        if len(w) >= 3 and w.lower() not in STOPWORDS:
            out.setdefault(w, None)
    return list(out)


def fts_query(terms: list[str]) -> str:
    return " OR ".join(f'"{t}"' for t in terms)


# -- signals -------------------------------------------------------------------------------
def _in(n: int) -> str:
    return ",".join("?" * n)


@dataclass(frozen=True)
class Chunk:
    id: int
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    text: str
    servable: bool
    score: float = 0.0  # BM25 of the match, higher is better


# Ranked searches run in two steps: the top rowids from the FTS table alone, then their
# rows by primary key. A join in the ranked query read the row of every match (thousands
# on a large store) before sorting. The order is the same: SQLite sorts a LIMIT query
# stably (ties keep the FTS scan's rowid order), and a join only drops rows from that scan.


def bm25_chunks(conn: sqlite3.Connection, terms: list[str], limit: int = 300) -> list[Chunk]:
    if not terms:
        return []
    scored = conn.execute(
        "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
        "ORDER BY bm25(chunks_fts) LIMIT ?",
        (fts_query(terms), limit),
    ).fetchall()
    if not scored:
        return []
    ids = [i for i, _ in scored]
    rows = {
        r[0]: r
        for r in conn.execute(
            "SELECT id, path, start_line, end_line, symbol, text, servable FROM chunks "
            f"WHERE id IN ({_in(len(ids))})",
            ids,
        )
    }
    # FTS5's bm25() is negative, better matches lower
    return [
        Chunk(r[0], r[1], r[2], r[3], r[4], r[5], r[6], score=-s)
        for i, s in scored
        if (r := rows.get(i)) is not None
    ]


def file_evidence(chunks: list[Chunk], top: int = FILE_CHUNKS) -> list[str]:
    """Files ranked by the summed score of their ``top`` best-matching chunks: a file is as
    good as its few best passages, so one long file that mentions every word once does not
    beat the file where they meet (it beat whole-file BM25 in hit@3 and hit@5 on all three
    benchmark repositories: README, "How context ranks and packs"). Ties keep the order of
    each file's best chunk."""
    scores: dict[str, list[float]] = {}
    for c in chunks:  # best first: each file's first ``top`` chunks are its best
        mine = scores.setdefault(c.path, [])
        if len(mine) < top:
            mine.append(c.score)
    total = {path: sum(s) for path, s in scores.items()}
    return sorted(total, key=lambda p: -total[p])


def bm25_items(
    conn: sqlite3.Connection, terms: list[str], limit: int = 400
) -> list[tuple[int, str]]:
    """(note item id, path) of current notes, best first."""
    if not terms:
        return []
    # items of notes on older blobs match too but are not served: keep the current ones
    # of the top `limit` matches, then of the top 4 * `limit`, then of all (the join)
    for fetch in (limit, 4 * limit):
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT rowid FROM items_fts WHERE items_fts MATCH ? "
                "ORDER BY bm25(items_fts, 2.0, 1.0, 1.5) LIMIT ?",
                (fts_query(terms), fetch),
            )
        ]
        if not ids:
            return []
        current = dict(
            conn.execute(
                "SELECT i.id, i.path FROM note_items i JOIN notes n ON n.id = i.note_id "
                "JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
                f"WHERE i.id IN ({_in(len(ids))})",
                ids,
            ).fetchall()
        )
        out = [(i, current[i]) for i in ids if i in current]
        if len(out) >= limit or len(ids) < fetch:
            return out[:limit]
    return _bm25_items_joined(conn, terms, limit)


def _bm25_items_joined(
    conn: sqlite3.Connection, terms: list[str], limit: int
) -> list[tuple[int, str]]:
    """``bm25_items`` in one query (the reference the two-step version must equal)."""
    rows = conn.execute(
        "SELECT i.id, i.path FROM items_fts f "
        "JOIN note_items i ON i.id = f.rowid "
        "JOIN notes n ON n.id = i.note_id "
        "JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
        "WHERE items_fts MATCH ? ORDER BY bm25(items_fts, 2.0, 1.0, 1.5) LIMIT ?",
        (fts_query(terms), limit),
    )
    return [(r[0], r[1]) for r in rows]


def _looks_like_code(word: str) -> bool:
    return "_" in word or any(c.isupper() for c in word[1:]) or any(c.isdigit() for c in word)


def symbol_matches(conn: sqlite3.Connection, names: list[str]) -> list[str]:
    """Files defining symbols named in the question, best evidence first.

    Code-shaped words (``vat_for_order``, ``priceCart``) match symbol names ignoring case
    and count fully; plain words (``Cart``, ``total``) must match exactly and count half.
    A name defined in many files says little, so each match is divided by their number.
    """
    if not names:
        return []
    counts: dict[str, float] = defaultdict(float)
    for name in names:
        code = _looks_like_code(name)
        rows = conn.execute(
            "SELECT DISTINCT path, instr(qualname, '.') = 0 FROM symbols "
            "WHERE name = ?1 COLLATE NOCASE " + ("LIMIT 50" if code else "AND name = ?1 LIMIT 50"),
            # exact for a word that does not look like code (on the case-insensitive index)
            (name,),
        ).fetchall()
        if not rows or len(rows) >= 50:
            continue  # unknown, or too common to tell anything
        weight = 1.0 if code else 0.5
        for path, top in rows:
            counts[path] += weight * (1.0 if top else 0.6) / len(rows)
    return sorted(counts, key=lambda p: (-counts[p], p))


@lru_cache(maxsize=1 << 16)
def _path_terms(path: str) -> frozenset[str]:
    """The search words of a path (a pure function of it, so cached across queries)."""
    return frozenset(query_terms(path.replace("/", " ").replace(".", " ")))


def path_matches(paths: list[str], terms: list[str]) -> list[str]:
    tset = frozenset(terms)
    scored: list[tuple[int, str]] = []
    for p in paths:
        n = len(_path_terms(p) & tset)
        if n:
            scored.append((n, p))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [p for _, p in scored]


def _path_candidates(conn: sqlite3.Connection, terms: list[str]) -> list[str]:
    """The indexed modules whose path has a word of ``terms``, the only ones
    ``path_matches`` returns. All paths come from the primary-key index (a scan of the
    modules table reads every row's facts); only the candidates' status is looked up."""
    tset = frozenset(terms)
    if not tset:
        return []
    candidates = [p for (p,) in conn.execute("SELECT path FROM modules") if _path_terms(p) & tset]
    out: list[str] = []
    for i in range(0, len(candidates), 500):
        batch = candidates[i : i + 500]
        out.extend(
            r[0]
            for r in conn.execute(
                "SELECT path FROM modules WHERE status = 'indexed' "
                f"AND path IN ({_in(len(batch))})",
                batch,
            )
        )
    return out


def fuse(lists: dict[str, list[str]], weights: dict[str, float] | None = None) -> dict[str, float]:
    scores: dict[str, float] = defaultdict(float)
    for name, ranked in lists.items():
        w = (weights if weights is not None else FUSION_WEIGHTS).get(name, 1.0)
        seen: set[str] = set()
        rank = 0
        for path in ranked:
            if path in seen:
                continue
            seen.add(path)
            rank += 1
            scores[path] += w / (RRF_K + rank)
    return scores


# a question that names tests (``which test covers retries``) ranks them like any file,
# and one that names examples, benchmarks or docs ranks those like any file
_ASKS_TESTS = re.compile(r"(?i)\b(?:tests?|testing|specs?)\b")
_ASKS_EXAMPLES = re.compile(r"(?i)\b(?:examples?|samples?|bench(?:mark)?s?|docs)\b")


def _behind_code(scores: dict[str, float], question: str, prior: float = USAGE_PRIOR) -> None:
    """Rank the code that uses a library (tests, examples, benchmarks) behind the library:
    a question about behaviour ("add a retry count to the beforeRequest hook") is answered
    by the code that has it, and a test or an example that repeats every word of the
    question beat that code on the development repositories (tests were 3 of the top 4
    files on ky). Unless the question names them, a test's or an example's score is
    multiplied by ``prior``."""
    if prior == 1.0:
        return
    tests, examples = not _ASKS_TESTS.search(question), not _ASKS_EXAMPLES.search(question)
    for path in scores:
        if (tests and is_test(path)) or (examples and is_example(path)):
            scores[path] *= prior


def _graph_nudge(
    conn: sqlite3.Connection, scores: dict[str, float], weight: float = GRAPH_WEIGHT
) -> None:
    """Lift the import-graph neighbours of the top files a little: each neighbour gains
    ``GRAPH_WEIGHT`` times the score of its best-ranked top neighbour (a max, not a sum,
    so hub modules imported by everything are not pulled to the top)."""
    if weight <= 0:
        return
    top = sorted(scores, key=lambda p: -scores[p])[:GRAPH_TOP]
    bonus: dict[str, float] = {}
    for p in top:
        for (n,) in conn.execute(
            "SELECT dst FROM edges WHERE src = ? UNION SELECT src FROM edges WHERE dst = ?",
            (p, p),
        ):
            bonus[n] = max(bonus.get(n, 0.0), weight * scores[p])
    for n, b in bonus.items():
        scores[n] = scores.get(n, 0.0) + b


@dataclass(frozen=True)
class RankedUnit:
    unit: Unit
    score: float


@dataclass
class Ranking:
    files: list[tuple[str, float]]
    units: list[RankedUnit] = field(default_factory=list)
    terms: list[str] = field(default_factory=list)
    lines: dict[str, list[str]] = field(default_factory=dict)  # code of the ranked files (as
    # stored: ``pack`` serves it through ``redacted_lines``)


def rank(
    conn: sqlite3.Connection,
    question: str,
    *,
    off: frozenset[str] = frozenset(),
    weights: Weights | None = None,
    embedder: Embedder | None = None,
) -> Ranking:
    """Files and units for ``question``; ``off`` names signals left out (the bench's
    ablation rows: ``history``, ``notes``, ``symbols``, ``paths``, ``graph``, ``embed``,
    ``usage-prior``: tests and examples ranked like code, and ``pieces``: long units ranked
    whole). ``weights``: the fusion weights (default: those fitted for this repository and
    adopted, see ``sleepy_repo.tune``, else ``DEFAULT_WEIGHTS``). ``embedder``: the model of
    the store's semantic index (``sleepy_repo.embed``; None: no semantic signal)."""
    if weights is None:
        stored = NoteStore.adopted_weights(conn, DEFAULT_WEIGHTS.digest())
        weights = DEFAULT_WEIGHTS if stored is None else Weights.from_json(stored)
    terms = query_terms(question)
    chunks = bm25_chunks(conn, terms)
    items = bm25_items(conn, terms) if "notes" not in off else []
    names = identifiers(question) if "symbols" not in off else []
    history = (
        NoteStore.history_matches(conn, fts_query(terms)) if terms and "history" not in off else []
    )
    semantic = None
    if embedder is not None and "embed" not in off:
        idx = embed.index(conn, embedder.name)
        if idx is not None:
            sims = idx.similarities(embedder.embed([question])[0])
            semantic = (idx, sims)
    lists = {
        "embed": semantic[0].files(semantic[1]) if semantic else [],
        "files": file_evidence(chunks),
        "chunks": [c.path for c in chunks],
        "notes": [p for _, p in items],
        "symbols": symbol_matches(conn, names),
        "paths": path_matches(_path_candidates(conn, terms), terms) if "paths" not in off else [],
        "history": [h[0] for h in history],
    }
    scores = fuse(lists, weights.files)
    if "usage-prior" not in off:
        _behind_code(scores, question)
    if "graph" not in off:
        _graph_nudge(conn, scores, weights.graph)
    files = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    ranking = Ranking(
        files=files,
        terms=terms,
    )
    top = [p for p, _ in files[:UNIT_FILES]]
    mods = modules(conn, top)
    ranking.lines = {p: list(mods[p][0]) for p in top}  # ranked as stored, served redacted
    ranking.units = rank_units(
        conn,
        top,
        ranking.lines,
        {p: mods[p][1] for p in top},
        terms,
        names,
        items,
        history,
        weights.units,
        0 if "pieces" in off else weights.piece_lines,
        (lambda u: semantic[0].unit_similarity(semantic[1], u)) if semantic else None,
    )
    return ranking


ModuleCode = tuple[tuple[str, ...], tuple[Unit, ...]]  # a module's lines and its units

# (store file, its modules generation, path) -> the module's code, least recently used first.
# One lock guards the dict (never held during SQL): the language server asks from several
# threads, about several workspace folders' stores at once.
_MODULES: OrderedDict[tuple[str, tuple[int, ...], str], ModuleCode] = OrderedDict()
_MODULES_LOCK = threading.Lock()
MODULE_CACHE_SIZE = 256  # modules: a language server asks about the same files again


def modules(conn: sqlite3.Connection, paths: list[str]) -> dict[str, ModuleCode]:
    """Each module's stored lines and its units, kept in the process until the store's
    modules change (``NoteStore.generation``): a language server asked about a file again
    does not rebuild them. The generation and the rows are read in one snapshot."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        base = (NoteStore.database_file(conn), NoteStore.generation(conn, "modules"))
        out: dict[str, ModuleCode] = {}
        with _MODULES_LOCK:
            for path in paths:
                hit = _MODULES.get((*base, path))
                if hit is not None:
                    _MODULES.move_to_end((*base, path))
                    out[path] = hit
        missing = [p for p in paths if p not in out]
        for path in missing:
            lines = NoteStore.module_lines(conn, path)
            spans = NoteStore.symbol_spans(conn, path)
            out[path] = (tuple(lines), tuple(units_of(path, spans, lines)))
    finally:
        if own:
            conn.execute("COMMIT")
    if missing:
        with _MODULES_LOCK:
            for path in missing:
                _MODULES[(*base, path)] = out[path]
            while len(_MODULES) > MODULE_CACHE_SIZE:
                _MODULES.popitem(last=False)
    return {p: out[p] for p in paths}


def redacted_lines(lines: list[str]) -> list[str]:
    """A module's lines with secrets masked, redacted as one text (a window that starts
    inside a private key must not serve its body); line positions are kept, and a file
    whose redaction would move them is masked whole. Cached by content: redacting a large
    file takes tens of milliseconds, and the same files are served again and again."""
    return list(_redacted("\n".join(lines), len(lines)))


@lru_cache(maxsize=256)
def _redacted(text: str, n: int) -> tuple[str, ...]:
    red = redact_text(text)
    if red == text:
        return tuple(text.split("\n")) if n else ()
    out = red.split("\n")
    return tuple(out) if len(out) == n else ("[redacted]",) * n


def _unit_at(by_id: dict[int, Unit], ids: list[int], line: int) -> int | None:
    """The unit of ``ids`` (in line order) holding ``line``."""
    starts = [by_id[i].start_line for i in ids]
    k = bisect.bisect_right(starts, line) - 1
    if k >= 0 and by_id[ids[k]].end_line >= line:
        return ids[k]
    return None


def rank_units(
    conn: sqlite3.Connection,
    paths: list[str],
    lines: dict[str, list[str]],
    module_units: dict[str, Sequence[Unit]],
    terms: list[str],
    names: list[str],
    items: list[tuple[int, str]],
    history: list[tuple[str, int, int, str]],
    weights: dict[str, float] | None = None,
    piece_lines: int = PIECE_LINES,
    similarity: Callable[[Unit], float] | None = None,
) -> list[RankedUnit]:
    """The units of ``paths`` (best file first), ranked by weighted reciprocal rank fusion
    of the unit-level signals (see the module docstring)."""
    units = [piece for p in paths for u in module_units[p] for piece in pieces(u, piece_lines)]
    if not units:
        return []
    by_id = dict(enumerate(units))
    lists: dict[str, list[int]] = {}
    # BM25 over the candidates' code
    code_scores = bm25(
        ["\n".join(lines[u.path][u.start_line - 1 : u.end_line]) for u in units], terms
    )
    lists["code"] = sorted(
        (i for i in by_id if code_scores[i] > 0), key=lambda i: (-code_scores[i], i)
    )
    code_pos = {uid: r for r, uid in enumerate(lists["code"])}
    # the file's rank, then the code's within a file
    file_pos = {p: r for r, p in enumerate(paths)}
    lists["file"] = sorted(
        by_id, key=lambda i: (file_pos[by_id[i].path], code_pos.get(i, len(code_pos)), i)
    )
    # identifiers of the question naming the unit's symbol
    wanted = {n.lower(): _looks_like_code(n) for n in names}
    lists["symbols"] = [
        i
        for i, u in by_id.items()
        if u.symbol is not None
        and (leaf := u.symbol.rsplit(".", 1)[-1]).lower() in wanted
        and (wanted[leaf.lower()] or leaf in names)
    ]
    # note items matched by the question, attached to the unit by symbol or by line
    in_top = [iid for iid, p in items if p in file_pos][:200]
    lists["notes"] = []
    by_path: dict[str, list[int]] = defaultdict(list)
    for i, u in by_id.items():
        by_path[u.path].append(i)
    if in_top:
        rows = conn.execute(
            f"SELECT id, path, start_line, symbol FROM note_items WHERE id IN ({_in(len(in_top))})",
            in_top,
        ).fetchall()
        where = {r[0]: (r[1], r[2], r[3]) for r in rows}
        of_symbol = {(u.path, u.symbol): i for i, u in reversed(by_id.items()) if u.symbol}
        seen: set[int] = set()
        for iid in in_top:
            if iid not in where:
                continue
            path, line, symbol = where[iid]
            uid = of_symbol.get((path, symbol)) if symbol else None
            if uid is None:
                uid = _unit_at(by_id, by_path[path], line)
            if uid is not None and uid not in seen:
                seen.add(uid)
                lists["notes"].append(uid)
    # history: the units holding lines last changed by commits whose subject matches
    lists["history"] = []
    seen_h: set[int] = set()
    for path, start, end, _ in history:
        for i in by_path.get(path, []):
            u = by_id[i]
            if u.start_line <= end and start <= u.end_line and i not in seen_h:
                seen_h.add(i)
                lists["history"].append(i)
    # the semantic index: the candidates by their similarity to the question
    if similarity is not None:
        sim = {i: similarity(u) for i, u in by_id.items()}
        lists["embed"] = sorted((i for i in by_id if sim[i] > 0), key=lambda i: (-sim[i], i))
    scores: dict[int, float] = defaultdict(float)
    for name, ranked in lists.items():
        w = (weights if weights is not None else UNIT_WEIGHTS).get(name, 0.0)
        for r, uid in enumerate(ranked, 1):
            scores[uid] += w / (UNIT_RRF_K + r)
    order = sorted(by_id, key=lambda i: (-scores[i], i))
    return [RankedUnit(by_id[i], scores[i]) for i in order]


# -- serving -------------------------------------------------------------------------------
def _active_items(
    conn: sqlite3.Connection, path: str, keep: Callable[[sqlite3.Row], bool] | None = None
) -> list[tuple[int, NoteItem, str]]:
    """The items served for a module's current blob, each with its id and source: where a
    model wrote notes, its summary/Q&A/facts replace the static ones (the static per-symbol
    items stay); with ``keep``, only the rows it keeps are decoded
    (a large module has hundreds of symbol items, and a question wants a few)."""
    rows = conn.execute(
        "SELECT i.*, n.backend, n.effort, n.origin FROM note_items i "
        "JOIN notes n ON n.id = i.note_id "
        "JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
        "WHERE n.path = ? ORDER BY n.backend = 'static', n.created_at DESC, i.ordinal",
        (path,),
    ).fetchall()
    generated = [r for r in rows if r["generated"]]
    if generated:
        best_backend = generated[0]["backend"]
        rows = [
            r
            for r in rows
            if r["backend"] == best_backend or (r["backend"] == "static" and r["kind"] == "symbol")
        ]
    return [
        (r["id"], item_from_row(r), item_source(r["origin"], bool(r["generated"])))
        for r in rows
        if keep is None or keep(r)
    ]


def _to_item(path: str, item: NoteItem, source: str, score: float) -> ContextItem:
    return ContextItem(
        path=path,
        start_line=item.start_line,
        end_line=item.end_line,
        symbol=item.symbol,
        kind=item.kind,
        text=item.text,
        generated=item.generated,
        stale=item.stale,
        score=score,
        citations=list(item.citations),
        source=source,
    )


def _common_symbol(a: str | None, b: str | None) -> str | None:
    """The symbol of a window merged from windows of ``a`` and ``b``: the outer one when
    one holds the other (``C`` and ``C.f``: ``C``), else None (Go methods share a prefix
    with their type but stand outside its span)."""
    if a is None or b is None:
        return None
    if a == b or b.startswith(a + "."):
        return a
    if a.startswith(b + "."):
        return b
    return None


def _summary(conn: sqlite3.Connection, path: str) -> tuple[NoteItem, str] | None:
    """The first summary ``_active_items`` serves for ``path``, read alone, and its source."""
    row = conn.execute(
        "SELECT i.*, n.origin FROM notes n "
        "JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
        "JOIN note_items i ON i.note_id = n.id WHERE n.path = ? AND i.kind = 'summary' "
        "ORDER BY n.backend = 'static', n.created_at DESC, i.ordinal LIMIT 1",
        (path,),
    ).fetchone()
    if row is None:
        return None
    return item_from_row(row), item_source(row["origin"], bool(row["generated"]))


def map_line(conn: sqlite3.Connection, path: str) -> tuple[NoteItem, str]:
    """The file's summary note (a model's if it wrote one), cut to its first sentence(s),
    and its source; an empty one for a file without a summary, so the map lists every top
    file."""
    found = _summary(conn, path)
    if found is None:
        empty = NoteItem("summary", "", None, None, 1, 1, (Citation(path, 1, 1, None, ""),), False)
        return empty, REPOSITORY
    item, source = found
    text = " ".join(item.text.split())
    if text.startswith(path + " ("):  # a static summary's "path (lang, N lines)." opening
        text = text.split(". ", 1)[1] if ". " in text else ""
    if len(text) > MAP_LINE_CHARS:
        cut = text.rfind(". ", 0, MAP_LINE_CHARS)
        text = text[: cut + 1] if cut > 0 else text[:MAP_LINE_CHARS].rsplit(" ", 1)[0] + "…"
    return dataclasses.replace(item, kind="summary", text=text, question=None), source


def pack(
    ranking: Ranking,
    conn: sqlite3.Connection,
    question: str,
    budget: int,
    *,
    deny: DenyList | None = None,
) -> Context:
    """A map of the top files, then the code of the top units, within ``budget``. Code is
    served redacted, and never from a deny-listed file (what is served goes on to an
    agent's model)."""
    ctx = Context(question=question, budget=budget, ranking=ranking.files)
    score_of = dict(ranking.files)
    used = 0

    def cost(item: ContextItem) -> int:
        return count_tokens(item.render())

    # 1. the map
    map_budget = budget if budget <= MAP_ONLY else int(budget * MAP_SHARE)
    for path, score in ranking.files[:MAP_FILES]:
        item = _to_item(path, *map_line(conn, path), score)
        n = cost(item)
        if used + n > map_budget:
            break
        ctx.items.append(item)
        used += n
    if budget <= MAP_ONLY:
        ctx.tokens = used
        return ctx

    # 2. the code of the top units
    code: list[ContextItem] = []
    costs: list[int] = []

    served: dict[str, list[str]] = {}  # redacted only for the files code is served from

    def code_item(path: str, start: int, end: int, symbol: str | None) -> ContextItem:
        if path not in served:
            served[path] = redacted_lines(ranking.lines[path])
        text = "\n".join(served[path][start - 1 : end])
        return ContextItem(
            path=path,
            start_line=start,
            end_line=end,
            symbol=symbol,
            kind="code",
            text=text,  # redacted as a whole file
            generated=False,
            stale=False,
            score=score_of.get(path, 0.0),
            citations=[Citation(path, start, end, symbol, "")],
            source=REPOSITORY,
        )

    misses = 0
    for ranked in ranking.units:
        left = budget - used
        if left < 20 or misses >= MAX_MISSES:
            break
        u = ranked.unit
        if deny is not None and deny.denied(u.path):
            continue
        unit_lines = ranking.lines[u.path][u.start_line - 1 : u.end_line]
        size = min(len(unit_lines), WINDOW_LINES)
        while size >= min(MIN_WINDOW_LINES, len(unit_lines)):
            s, e = best_window(unit_lines, ranking.terms, size)
            start, end = u.start_line + s, u.start_line + e - 1
            # merge with a window of the same file that it touches
            touching = next(
                (
                    k
                    for k, c in enumerate(code)
                    if c.path == u.path and start <= c.end_line + 1 and end >= c.start_line - 1
                ),
                None,
            )
            if touching is not None:
                old = code[touching]
                lo, hi = min(start, old.start_line), max(end, old.end_line)
                item = code_item(u.path, lo, hi, _common_symbol(old.symbol, u.symbol))
                n = cost(item) - costs[touching]
            else:
                item = code_item(u.path, start, end, u.symbol)
                n = cost(item)
            if n <= left:
                if touching is not None:
                    code[touching], costs[touching] = item, costs[touching] + n
                else:
                    code.append(item)
                    costs.append(n)
                used += n
                misses = 0
                break
            # too big: try the window that the tokens left would pay for
            smaller = int(size * left / max(n, 1)) - 1
            if smaller >= size:
                smaller = size - 1
            size = smaller
        else:
            misses += 1
    ctx.items.extend(code)
    ctx.tokens = used
    return ctx


def pack_paths(ranking: Ranking, question: str, budget: int) -> Context:
    """Serve only the ranked list of paths (one per line) within the budget."""
    ctx = Context(question=question, budget=budget, ranking=ranking.files)
    for path, score in ranking.files:
        item = ContextItem(
            path=path,
            start_line=1,
            end_line=1,
            symbol=None,
            kind="path",
            text=path,
            generated=False,
            stale=False,
            score=score,
            source=REPOSITORY,
        )
        cost = count_tokens(path)
        if ctx.tokens + cost > budget:
            break
        ctx.items.append(item)
        ctx.tokens += cost
    return ctx


def context(
    store: NoteStore,
    question: str,
    budget: int,
    *,
    log_source: str | None = None,
    deny: DenyList | None = None,
    embedder: Embedder | None = None,
) -> Context:
    with store.read() as conn:
        ranking = rank(conn, question, embedder=embedder)
        ctx = pack(ranking, conn, question, budget, deny=deny)
    if log_source:
        log_context_hit(store, ctx, log_source)
    return ctx


def log_context_hit(store: NoteStore, ctx: Context, source: str) -> None:
    """Log a served context as a query hit (the planner's signal, the notes' payoff)."""
    served: dict[str, int] = defaultdict(int)
    for item in ctx.items:
        served[item.path] += count_tokens(item.render())
    store.record_hit(source, ctx.question, ctx.files(), dict(served))
