from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from sleepy_repo import api
from sleepy_repo import store as store_mod
from sleepy_repo.errors import StoreCorruptError
from sleepy_repo.store import APPLICATION_ID, SCHEMA_VERSION, NoteStore


def test_new_store_is_wal_and_tagged(tmp_path: Path) -> None:
    s = NoteStore(tmp_path / ".sleepy")
    s.ensure()
    with s.read() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA page_size").fetchone()[0] == store_mod.PAGE_SIZE
    assert [p.name for p in (tmp_path / ".sleepy").iterdir() if p.name.endswith(".tmp")] == []


def test_fts_stays_consistent_through_edits_and_deletes(make_repo) -> None:
    repo_path = make_repo("shop")
    repo = api.open_repo(repo_path)
    api.refresh(repo)
    assert repo.store.integrity_errors() == []
    (repo_path / "shop" / "tax.py").write_text('"""Tax."""\n\ndef vat():\n    return 0\n')
    (repo_path / "shop" / "cart.py").unlink()
    api.refresh(repo)
    assert repo.store.integrity_errors() == []
    with repo.store.read() as conn:
        assert (
            conn.execute("SELECT count(*) FROM chunks WHERE path = 'shop/cart.py'").fetchone()[0]
            == 0
        )
        hits = conn.execute(
            "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'vat'"
        ).fetchone()[0]
        assert hits >= 1


def test_integrity_check_notices_a_broken_fts(make_repo) -> None:
    repo = api.open_repo(make_repo("shop"))
    api.refresh(repo)
    with repo.store.write() as conn:  # simulate damage: an FTS row without its note item
        conn.execute(
            "INSERT INTO items_fts(rowid, question, text, terms) VALUES (999999, '', 'x', '')"
        )
    assert any("items_fts" in e for e in repo.store.integrity_errors())


def test_migration_path_runs_pending_migrations(tmp_path: Path, monkeypatch) -> None:
    s = NoteStore(tmp_path / ".sleepy")
    s.ensure()
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(
        store_mod, "MIGRATIONS", {SCHEMA_VERSION + 1: "ALTER TABLE notes ADD COLUMN extra TEXT"}
    )
    s.ensure()
    with s.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        cols = [r[1] for r in conn.execute("PRAGMA table_info(notes)")]
    assert "extra" in cols


def test_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    s = NoteStore(tmp_path / ".sleepy")
    s.ensure()
    with sqlite3.connect(s.path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(StoreCorruptError, match="newer than this sleepy-repo"):
        s.ensure()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    s = NoteStore(tmp_path / ".sleepy")
    s.ensure()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                with s.write() as conn:
                    s.set_meta(conn, f"w{n}-{i}", i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with s.read() as conn:
        assert conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'w%'").fetchone()[0] == 800


def test_migration_5_keeps_one_call_site_per_name_and_module(tmp_path: Path, monkeypatch) -> None:
    """A store of schema 4 kept every call site: the migration keeps each called name's
    first call inside a symbol (its first module-level call if it has none) per module,
    adds the caller span hash column, and gives the full-text tables a larger buffer (the
    whole-file one goes in migration 6)."""
    s = NoteStore(tmp_path / ".sleepy")
    with monkeypatch.context() as m:  # a store as schema 4 created it
        m.setattr(store_mod, "SCHEMA_VERSION", 4)
        m.setattr(NoteStore, "release_dead_reservations", lambda self: 0)  # nor their pids
        m.setattr(store_mod, "MIGRATIONS", {v: store_mod.MIGRATIONS[v] for v in (2, 3, 4)})
        m.setattr(api, "update_history", lambda *a, **k: 0)  # no history tables then
        m.setattr(api, "_update_semantic", lambda *a, **k: {"model": None})  # nor vectors
        s.ensure()
    rows = [
        ("a.py", "python", "run", 3, None, None, None),  # module level, first
        ("a.py", "python", "run", 9, "main", 8, 12),  # first call inside a symbol: kept
        ("a.py", "python", "run", 10, "main", 8, 12),
        ("a.py", "python", "run", 20, "other", 19, 22),
        ("a.py", "python", "setup", 4, None, None, None),  # only module level: kept
        ("a.py", "python", "setup", 5, None, None, None),
        ("b.py", "python", "run", 7, "go", 6, 9),  # another module: kept
    ]
    with sqlite3.connect(s.path) as conn:
        conn.executemany("INSERT INTO refs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("PRAGMA user_version = 4")
    s.ensure()
    with s.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        kept = [tuple(r)[:7] for r in conn.execute("SELECT * FROM refs ORDER BY rowid")]
        assert {r[0] for r in conn.execute("SELECT caller_sha FROM refs")} == {None}
        sizes = {
            fts: conn.execute(f"SELECT v FROM {fts}_config WHERE k = 'hashsize'").fetchone()
            for fts in ("items_fts", "chunks_fts")
        }
    assert kept == [rows[1], rows[4], rows[6]]
    assert all(v is not None and v[0] == 32 * 2**20 for v in sizes.values()), sizes


def test_migration_6_drops_the_whole_file_index_and_keeps_the_rest(
    make_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema-5 store indexed whole files (``files_fts`` + ``modules.file_rowid``); the
    migration drops both and keeps every module, chunk and note, and ``context`` answers
    from it as from a new store."""
    root = make_repo("shop")
    with monkeypatch.context() as m:  # indexed and noted as schema 5 did
        m.setattr(store_mod, "SCHEMA_VERSION", 5)
        m.setattr(NoteStore, "release_dead_reservations", lambda self: 0)  # nor their pids
        m.setattr(store_mod, "MIGRATIONS", {v: store_mod.MIGRATIONS[v] for v in (2, 3, 4, 5)})
        m.setattr(api, "update_history", lambda *a, **k: 0)  # no history tables then
        m.setattr(api, "_update_semantic", lambda *a, **k: {"model": None})  # nor vectors
        old = api.open_repo(root)
        with old.store.write() as conn:  # schema 5 filled these for every module
            paths = [r[0] for r in conn.execute("SELECT path FROM modules")]
            for i, path in enumerate(paths, 1):
                conn.execute(
                    "INSERT INTO files_fts(rowid, path, body) VALUES (?, ?, 'x')", (i, path)
                )
                conn.execute("UPDATE modules SET file_rowid = ? WHERE path = ?", (i, path))
        api.refresh(old)
    with old.store.read() as conn:
        before = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("modules", "chunks", "note_items")
        }
    repo = api.open_repo(root)  # migrates
    with repo.store.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(modules)")}
        after = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in before}
    assert "files_fts" not in tables and "modules_file_rowid" not in tables
    assert "file_rowid" not in columns
    assert after == before and before["note_items"] > 0
    assert repo.store.integrity_errors() == []
    fresh = make_repo("shop")
    fresh_repo = api.open_repo(fresh)
    api.refresh(fresh_repo)
    api.refresh(repo)  # the history notes of schema 9, which the old store could not hold
    question = "where is the cart total computed"
    served = [
        [(i.path, i.start_line, i.end_line, i.text) for i in c.items]
        for c in (api.get_context(r, question, 800, source=None) for r in (repo, fresh_repo))
    ]
    assert served[0] == served[1] and served[0]


def test_migration_7_drops_two_redundant_indexes_and_lookups_answer_the_same(
    make_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema-6 store had an exact-name index on symbols and a (path, blob) index on
    notes; without them, exact and case-insensitive name lookups, the notes of a blob and
    ``context`` answer as before, through the remaining indexes."""
    root = make_repo("shop")
    with monkeypatch.context() as m:
        m.setattr(store_mod, "SCHEMA_VERSION", 6)
        m.setattr(NoteStore, "release_dead_reservations", lambda self: 0)  # nor their pids
        m.setattr(store_mod, "MIGRATIONS", {v: store_mod.MIGRATIONS[v] for v in range(2, 7)})
        m.setattr(api, "update_history", lambda *a, **k: 0)  # no history tables then
        m.setattr(api, "_update_semantic", lambda *a, **k: {"model": None})  # nor vectors
        old = api.open_repo(root)
        api.refresh(old)
        with old.store.read() as conn:
            assert {"symbols_name_exact", "notes_path"} <= {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
    lookups = {
        "exact": "SELECT DISTINCT path FROM symbols WHERE name = ?1 COLLATE NOCASE "
        "AND name = ?1 AND exported = 1 ORDER BY path",
        "nocase": "SELECT DISTINCT path FROM symbols WHERE name = ?1 COLLATE NOCASE ORDER BY path",
    }

    def answers(repo: api.Repo) -> list[Any]:
        with repo.store.read() as conn:
            names = [r[0] for r in conn.execute("SELECT DISTINCT name FROM symbols ORDER BY 1")]
            found = [
                [tuple(r) for r in conn.execute(q, (n,))]
                for n in names + [n.upper() for n in names]
                for q in lookups.values()
            ]
            notes = [
                tuple(r)
                for r in conn.execute(
                    "SELECT n.path, n.blob_sha, count(*) FROM notes n JOIN modules m "
                    "ON m.path = n.path AND m.blob_sha = n.blob_sha "
                    "JOIN note_items i ON i.note_id = n.id GROUP BY n.id ORDER BY n.path"
                )
            ]
        served = api.get_context(repo, "Cart total tax", 800, source=None)
        return [found, notes, [(i.path, i.start_line, i.text) for i in served.items]]

    with monkeypatch.context() as m:  # answered as schema 6 would: no history, no tuning
        m.setattr(store_mod.NoteStore, "history_matches", staticmethod(lambda *a, **k: []))
        m.setattr(store_mod.NoteStore, "adopted_weights", staticmethod(lambda *a, **k: None))
        m.setattr(api, "embedder", lambda repo: None)  # no semantic index either
        m.setattr(  # nor change counters: a key no migrated store has (its id is >= 0)
            store_mod.NoteStore, "generation", staticmethod(lambda c, *t: (-1, *(0 for _ in t)))
        )
        before = answers(old)
    repo = api.open_repo(root)  # migrates
    with repo.store.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        plans = [
            " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q, ("x",)))
            for q in lookups.values()
        ]
    assert "symbols_name_exact" not in indexes and "notes_path" not in indexes
    assert all("USING INDEX symbols_name" in p for p in plans), plans  # no table scan
    after = answers(repo)
    assert after == before
    assert any(after[0]) and after[1] and after[2]
    assert repo.store.integrity_errors() == []


def test_a_session_leaves_the_log_to_periodic_checkpoints(tmp_path: Path) -> None:
    """Without a connection left open, closing one copies the whole WAL into the database
    and deletes it; in a session (a refresh's many batch writes) the log stays until the
    session ends, and nothing written is lost either way."""
    s = NoteStore(tmp_path / ".sleepy")
    s.ensure()
    wal = s.path.with_name(s.path.name + "-wal")
    with s.write() as conn:
        s.set_meta(conn, "before", 1)
    assert not wal.exists()  # checkpointed and deleted at the close
    with s.session():
        for i in range(3):
            with s.write() as conn:
                s.set_meta(conn, f"in-{i}", i)
        assert wal.exists() and wal.stat().st_size > 0
        with s.read() as conn:
            assert s.get_meta(conn, "in-2") == 2
    assert not wal.exists()
    with s.read() as conn:
        assert [s.get_meta(conn, k) for k in ("before", "in-0", "in-1", "in-2")] == [1, 0, 1, 2]
