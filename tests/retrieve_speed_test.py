"""The fast paths of ``retrieve`` give what the straightforward queries give.

``rank`` and ``pack`` read less than they used to (two-step FTS queries, path words cached
per path, path candidates from the primary-key index, only the note items a file may
serve). Each is checked here against the straightforward version it replaced, on the shop
fixture with extra notes: model notes next to the static ones, and notes of an older blob
that match a question but are not served.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sleepy_repo import api, retrieve
from sleepy_repo.notes import Citation, ModuleNotes, NoteItem, NoteKey
from sleepy_repo.store import NoteStore

QUESTIONS = [
    "How are coupon discounts applied before VAT?",
    "Where is the cart total computed?",
    "What happens when a gift card balance is too low?",
    "how are payments retried when the card is declined",
    "format money amounts in the web client",
    "what does shop/storage.py export",
    "vat_for_order priceCart Cart",
    "coupon coupon coupon stale",
    "x",
]


def _item(kind: str, text: str, line: int, path: str, generated: bool = True) -> NoteItem:
    return NoteItem(
        kind=kind,
        text=text,
        question="What does it do about coupons?" if kind == "qa" else None,
        symbol=None,
        start_line=line,
        end_line=line,
        citations=(Citation(path, line, line, None, ""),),
        generated=generated,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoteStore]:
    from helpers import load_builder

    dest = tmp_path_factory.mktemp("speed") / "shop"
    root = Path(load_builder().build_repo("shop", dest))
    repo = api.open_repo(root)
    api.refresh(repo)
    with repo.store.write() as conn:
        mods = conn.execute(
            "SELECT path, blob_sha FROM modules WHERE status = 'indexed' ORDER BY path"
        ).fetchall()
        assert len(mods) >= 4
        # on one module, a model note of one backend, then two of another (the newest
        # backend's notes are both served); one model note on a second module; and notes
        # of an older blob on all of them
        for n, (path, sha) in enumerate(mods[:2]):
            for backend, effort in [("other", "low"), ("fake", "low"), ("fake", "high")][2 * n :]:
                items = [
                    _item("summary", f"{backend} {effort} summary of coupon handling", 1, path),
                    _item("qa", f"{backend} {effort}: coupons apply before VAT", 1, path),
                    _item("fact", "coupon totals are rounded to cents", 1, path),
                ]
                key = NoteKey(path, sha, "p1", backend, f"{backend}-1", effort)
                NoteStore.put_notes(conn, ModuleNotes(key, items), origin="written")
        for path, _ in mods:
            old = NoteKey(path, "0" * 40, "p1", "fake", "fake-1", "low")
            items = [_item("qa", f"stale coupon note {i} coupon coupon", 1, path) for i in range(5)]
            NoteStore.put_notes(conn, ModuleNotes(old, items), origin="written")
    yield repo.store


# -- the straightforward versions ----------------------------------------------------------
def chunks_joined(conn: sqlite3.Connection, terms: list[str], limit: int = 300) -> Any:
    if not terms:
        return []
    rows = conn.execute(
        "SELECT c.id, c.path, c.start_line, c.end_line, c.symbol, c.text, c.servable, "
        "-bm25(chunks_fts) FROM chunks_fts f JOIN chunks c ON c.id = f.rowid "
        "WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?",
        (retrieve.fts_query(terms), limit),
    )
    return [retrieve.Chunk(*r) for r in rows]


def items_joined(conn: sqlite3.Connection, terms: list[str], limit: int = 400) -> Any:
    return retrieve._bm25_items_joined(conn, terms, limit) if terms else []


def all_indexed_paths(conn: sqlite3.Connection, terms: list[str]) -> list[str]:
    return [r[0] for r in conn.execute("SELECT path FROM modules WHERE status = 'indexed'")]


def path_matches_uncached(paths: list[str], terms: list[str]) -> list[str]:
    tset = set(terms)
    scored = []
    for p in paths:
        n = len(set(retrieve.query_terms(p.replace("/", " ").replace(".", " "))) & tset)
        if n:
            scored.append((n, p))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [p for _, p in scored]


def summary_general(conn: sqlite3.Connection, path: str) -> tuple[NoteItem, str] | None:
    items = retrieve._active_items(conn, path, lambda r: r["kind"] == "summary")
    return (items[0][1], items[0][2]) if items else None


STRAIGHT: dict[str, Callable[..., Any]] = {
    "bm25_chunks": chunks_joined,
    "bm25_items": items_joined,
    "_path_candidates": all_indexed_paths,
    "path_matches": path_matches_uncached,
    "_summary": summary_general,
}


def served(store: NoteStore, question: str, budget: int) -> tuple[Any, Any]:
    with store.read() as conn:
        ranking = retrieve.rank(conn, question)
        ctx = retrieve.pack(ranking, conn, question, budget)
    return ranking, ctx.to_json()


# -- tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("question", QUESTIONS)
def test_rank_and_pack_equal_the_straightforward_way(
    store: NoteStore, question: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = [served(store, question, budget) for budget in (300, 1500, 4000)]
    for name, fn in STRAIGHT.items():
        monkeypatch.setattr(retrieve, name, fn)
    straight = [served(store, question, budget) for budget in (300, 1500, 4000)]
    assert fast == straight
    assert fast[-1][0].files or not retrieve.query_terms(question)


def test_items_of_older_blobs_are_skipped_at_any_limit(store: NoteStore) -> None:
    """Few current items among the best matches: the second fetch, then the join."""
    terms = retrieve.query_terms("stale coupon note")
    with store.read() as conn:
        for limit in (1, 2, 3, 5, 8, 13, 40, 400):
            got = retrieve.bm25_items(conn, terms, limit)
            assert got == items_joined(conn, terms, limit), limit
            assert len(got) <= limit


def test_the_summary_read_alone_is_the_one_active_items_serve(store: NoteStore) -> None:
    with store.read() as conn:
        paths = [r[0] for r in conn.execute("SELECT path FROM modules")]
        for path in paths:
            assert retrieve._summary(conn, path) == summary_general(conn, path), path


def test_cached_path_terms_equal_query_terms(store: NoteStore) -> None:
    with store.read() as conn:
        paths = [r[0] for r in conn.execute("SELECT path FROM modules")]
    paths += ["a/b_c/DeepCamelCase.py", "x/" + "/".join(f"w{i}x" for i in range(40)) + ".py"]
    for path in paths:
        words = set(retrieve.query_terms(path.replace("/", " ").replace(".", " ")))
        assert retrieve._path_terms(path) == words, path
    for question in QUESTIONS:
        terms = retrieve.query_terms(question)
        assert retrieve.path_matches(paths, terms) == path_matches_uncached(paths, terms)
