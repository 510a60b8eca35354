"""Retrieve: rank modules for a question by fusing every signal, then pack a token budget.

"Rank with everything; serve what is compact" (DESIGN §5). Files are ranked by reciprocal
rank fusion of:

* BM25 over whole files (path + content),
* BM25 over raw code chunks,
* BM25 over note items (text, predicted questions, symbol names) of current notes,
* exact symbol-name matches of identifiers in the question,
* path matches of words in the question,

then nudged along the import graph. The context is packed in passes: one item per ranked
file first (its best-matching note item, else its summary), then more items of the top
files, then cited code spans while budget remains. Every item carries its citations and its
``stale`` flag. Token counts use ``tokens.count_tokens`` on the rendered item.
"""

from __future__ import annotations

import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from sleepy_repo.notes import Citation, NoteItem
from sleepy_repo.redact import DenyList, redact_text
from sleepy_repo.store import NoteStore, fts_text, item_from_row
from sleepy_repo.tokens import count_tokens

SCHEMA_VERSION = 1
RRF_K = 60
FUSION_WEIGHTS: dict[str, float] = {
    "files": 1.0,
    "chunks": 1.0,
    "notes": 1.0,
    "symbols": 1.5,
    "paths": 0.7,
}
GRAPH_WEIGHT = 0.25  # chosen by a sweep on click, httpx and cobra localization (README)
GRAPH_TOP = 10
FILE_CHUNKS = 3  # a file's best chunks that make its score (``file_evidence``)
COMPACT_TOKENS = 60  # pass 1 prefers an item this small, so more files fit a small budget
DEPTH = 3  # note items per file in pass 2
MAX_TERMS = 32

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
    return [Chunk(*rows[i], score=-s) for i, s in scored if i in rows]


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


def fuse(lists: dict[str, list[str]]) -> dict[str, float]:
    scores: dict[str, float] = defaultdict(float)
    for name, ranked in lists.items():
        w = FUSION_WEIGHTS.get(name, 1.0)
        seen: set[str] = set()
        rank = 0
        for path in ranked:
            if path in seen:
                continue
            seen.add(path)
            rank += 1
            scores[path] += w / (RRF_K + rank)
    return scores


def _graph_nudge(conn: sqlite3.Connection, scores: dict[str, float]) -> None:
    """Lift the import-graph neighbours of the top files a little: each neighbour gains
    ``GRAPH_WEIGHT`` times the score of its best-ranked top neighbour (a max, not a sum,
    so hub modules imported by everything are not pulled to the top)."""
    top = sorted(scores, key=lambda p: -scores[p])[:GRAPH_TOP]
    bonus: dict[str, float] = {}
    for p in top:
        for (n,) in conn.execute(
            "SELECT dst FROM edges WHERE src = ? UNION SELECT src FROM edges WHERE dst = ?",
            (p, p),
        ):
            bonus[n] = max(bonus.get(n, 0.0), GRAPH_WEIGHT * scores[p])
    for n, b in bonus.items():
        scores[n] = scores.get(n, 0.0) + b


@dataclass
class Ranking:
    files: list[tuple[str, float]]
    chunks: list[Chunk]
    item_rank: dict[int, int]  # note item id -> rank among matches


def rank(conn: sqlite3.Connection, question: str) -> Ranking:
    terms = query_terms(question)
    chunks = bm25_chunks(conn, terms)
    items = bm25_items(conn, terms)
    lists = {
        "files": file_evidence(chunks),
        "chunks": [c.path for c in chunks],
        "notes": [p for _, p in items],
        "symbols": symbol_matches(conn, identifiers(question)),
        "paths": path_matches(_path_candidates(conn, terms), terms),
    }
    scores = fuse(lists)
    _graph_nudge(conn, scores)
    files = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return Ranking(
        files=files, chunks=chunks, item_rank={iid: r for r, (iid, _) in enumerate(items)}
    )


# -- serving -------------------------------------------------------------------------------
def active_items(
    conn: sqlite3.Connection, paths: list[str]
) -> dict[str, list[tuple[int, NoteItem]]]:
    """The items served for each module's current blob.

    Where a model wrote notes, its summary/Q&A/facts replace the static ones; the static
    per-symbol items stay (they are exact and cheap).
    """
    return {path: _active_items(conn, path) for path in paths}


def _active_items(
    conn: sqlite3.Connection, path: str, keep: Callable[[sqlite3.Row], bool] | None = None
) -> list[tuple[int, NoteItem]]:
    """``active_items`` of one path; with ``keep``, only the rows it keeps are decoded
    (a large module has hundreds of symbol items, and a question wants a few)."""
    rows = conn.execute(
        "SELECT i.*, n.backend, n.effort FROM note_items i JOIN notes n ON n.id = i.note_id "
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
    return [(r["id"], item_from_row(r)) for r in rows if keep is None or keep(r)]


def _wanted_items(
    conn: sqlite3.Connection, path: str, ids_by_note: dict[int, list[int]]
) -> list[tuple[int, NoteItem]]:
    """``_active_items(conn, path, keep)`` where ``keep`` takes the summaries and the items
    of ``ids_by_note`` (note id -> item ids): the items ``pack`` may serve.

    A module almost always has one current note. Then every row of the general query has
    the same backend and creation time, so it orders them by ordinal alone (unique within
    a note: ``insert_notes`` numbers them), and keeps them all; this reads just the wanted
    rows in that order. Two or more notes take the general query."""
    notes = conn.execute(
        "SELECT n.id FROM notes n JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
        "WHERE n.path = ?",
        (path,),
    ).fetchall()
    if len(notes) != 1:
        wanted = {i for ids in ids_by_note.values() for i in ids}
        return _active_items(conn, path, lambda r: r["id"] in wanted or r["kind"] == "summary")
    ids = ids_by_note.get(notes[0][0], [])
    rows = conn.execute(
        "SELECT i.*, n.backend, n.effort FROM note_items i JOIN notes n ON n.id = i.note_id "
        f"WHERE i.note_id = ? AND (i.kind = 'summary' OR i.id IN ({_in(len(ids))})) "
        "ORDER BY i.ordinal",
        (notes[0][0], *ids),
    ).fetchall()
    return [(r["id"], item_from_row(r)) for r in rows]


def _to_item(path: str, item: NoteItem, score: float) -> ContextItem:
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
    )


def pack(
    ranking: Ranking,
    conn: sqlite3.Connection,
    question: str,
    budget: int,
    *,
    max_files: int = 40,
    deny: DenyList | None = None,
) -> Context:
    """Pack the best items within ``budget``. Code is served redacted, and never from a
    deny-listed file (what is served goes on to an agent's model)."""
    ctx = Context(question=question, budget=budget, ranking=ranking.files)
    files = ranking.files[:max_files]
    chosen: dict[str, list[ContextItem]] = defaultdict(list)
    used = 0

    def cost(item: ContextItem) -> int:
        return count_tokens(item.render())

    def add(path: str, item: ContextItem, n: int) -> None:
        nonlocal used
        chosen[path].append(item)
        used += n

    # the notes of the matched items, so each file reads only the items it may serve
    ids_by_note: dict[int, list[int]] = defaultdict(list)
    matched_ids = list(ranking.item_rank)
    for i in range(0, len(matched_ids), 500):
        batch = matched_ids[i : i + 500]
        for iid, note_id in conn.execute(
            f"SELECT id, note_id FROM note_items WHERE id IN ({_in(len(batch))})", batch
        ):
            ids_by_note[note_id].append(iid)

    def ordered(path: str, score: float) -> list[tuple[ContextItem, int]]:
        # the matched items, best first, then the summaries (ids are unique, so an item is
        # either matched or a summary to add)
        items = _wanted_items(conn, path, ids_by_note)
        matched = sorted(
            (x for x in items if x[0] in ranking.item_rank), key=lambda x: ranking.item_rank[x[0]]
        )
        summary = [x for x in items if x[1].kind == "summary" and x[0] not in ranking.item_rank]
        out = [_to_item(path, item, score) for _, item in matched + summary]
        return [(i, cost(i)) for i in out]

    # a file's queue is built when pass 1 reaches it: the files after the one that ends
    # the pass are not served at all, so their items are never read
    queues: dict[str, list[tuple[ContextItem, int]]] = {}
    # pass 1: one compact item per file, strictly in rank order (a file whose item does not
    # fit ends the pass, so the order of files served is the ranking's)
    for path, score in files:
        queue = queues[path] = ordered(path, score)
        if not queue:
            continue
        pick = next((x for x in queue if x[1] <= COMPACT_TOKENS), min(queue, key=lambda x: x[1]))
        if used + pick[1] > budget:
            break
        queue.remove(pick)
        add(path, *pick)
    # pass 2: up to DEPTH items for each file already served, in rank order
    for path, _ in files:
        if not chosen[path]:
            continue
        for item, n in list(queues[path]):
            if len(chosen[path]) >= DEPTH:
                break
            if used + n <= budget:
                queues[path].remove((item, n))
                add(path, item, n)
    # pass 3: code of the best chunks in files already served
    served = {p for p, v in chosen.items() if v}
    score_of = dict(files)
    for chunk in ranking.chunks:
        if budget - used < 20:
            break
        if chunk.path not in served or not chunk.servable:
            continue
        if deny is not None and deny.denied(chunk.path):
            continue
        code = ContextItem(
            path=chunk.path,
            start_line=chunk.start_line,
            end_line=chunk.end_line,
            symbol=chunk.symbol,
            kind="code",
            text=redact_text(chunk.text),
            generated=False,
            stale=False,
            score=score_of.get(chunk.path, 0.0),
            citations=[Citation(chunk.path, chunk.start_line, chunk.end_line, chunk.symbol, "")],
        )
        n = cost(code)
        if used + n <= budget:
            add(chunk.path, code, n)
    for path, _ in files:
        ctx.items.extend(chosen.get(path, []))
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
) -> Context:
    with store.read() as conn:
        ranking = rank(conn, question)
        ctx = pack(ranking, conn, question, budget, deny=deny)
    if log_source:
        log_context_hit(store, ctx, log_source)
    return ctx


def log_context_hit(store: NoteStore, ctx: Context, source: str) -> None:
    """Log a served context as a query hit (the planner's signal, the notes' payoff)."""
    served: dict[str, int] = defaultdict(int)
    for item in ctx.items:
        served[item.path] += count_tokens(item.render())
    with store.write() as conn:
        store.log_hit(conn, source, ctx.question, ctx.files(), dict(served))
