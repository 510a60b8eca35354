"""Indexing stores the same rows however the work is split: in worker processes or not, in
batches or one module at a time. Retrieval ranks by what is in these tables (full-text
indexes included), so "the same" means identical rows and identical FTS index content."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sleepy_repo import api
from sleepy_repo import index as index_mod
from sleepy_repo.bench.strategies import file_body
from sleepy_repo.index import code_chunks
from sleepy_repo.notes import source_lines
from sleepy_repo.parse import parse_module
from sleepy_repo.store import fts_text, module_rows

from helpers import git, make_unreadable

QUERIES = {
    # mtimes and timestamps differ between any two builds; nothing else may
    "modules": "SELECT path, lang, blob_sha, size, status, reason, warning, line_count, "
    "facts_json FROM modules ORDER BY path",
    "symbols": "SELECT rowid, * FROM symbols ORDER BY rowid",
    "refs": "SELECT rowid, * FROM refs ORDER BY rowid",
    "chunks": "SELECT * FROM chunks ORDER BY id",
    "edges": "SELECT * FROM edges ORDER BY src, dst",
    "notes": "SELECT id, path, blob_sha, prompt_version, backend, model, effort, origin, "
    "dropped_citations FROM notes ORDER BY id",
    "note_items": "SELECT * FROM note_items ORDER BY id",
    "items_fts": "SELECT rowid, question, text, terms FROM items_fts ORDER BY rowid",
    "chunks_fts": "SELECT rowid, text FROM chunks_fts ORDER BY rowid",
}
FTS = ("items_fts", "chunks_fts")


def stored_rows(repo: api.Repo) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row that indexing and static notes write, and each FTS index's terms
    (``fts5vocab``: term, document, column, offset)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with repo.store.read() as conn:
        for name, query in QUERIES.items():
            out[name] = [tuple(r) for r in conn.execute(query)]
        for fts in FTS:
            vocab = f"temp.v_{fts}"
            conn.execute(f"CREATE VIRTUAL TABLE {vocab} USING fts5vocab(main, {fts}, instance)")
            out[f"{fts} terms"] = [tuple(r) for r in conn.execute(f"SELECT * FROM {vocab}")]
    return out


def edit(root: Path, first: bool) -> None:
    """The same edits in any copy: change a module, delete one, add one."""
    mods = sorted(p for p in root.rglob("*.py") if ".git" not in p.parts)
    if first:
        mods[0].write_text(mods[0].read_text() + "\n\ndef addedLater(secret_key):\n    pass\n")
        mods[-1].unlink()
        new = '"""New."""\nimport os\n\nclass FreshThing:\n    x = 1\n'
        (root / "brand_new.py").write_text(new)
    else:
        (root / "brand_new.py").write_text('"""Newer."""\n\ndef fresh_thing():\n    return 2\n')


@pytest.mark.parametrize("name", ["shop", "relay"])
def test_a_parallel_build_stores_exactly_what_a_serial_build_stores(
    make_repo, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    pools = []
    real_pool = index_mod.ProcessPoolExecutor

    def counted(*args: Any, **kwargs: Any) -> Any:
        pools.append(1)
        return real_pool(*args, **kwargs)

    monkeypatch.setattr(index_mod, "ProcessPoolExecutor", counted)
    serial, parallel = make_repo(name), make_repo(name)
    repos = {}
    for root, threshold in ((serial, 10**9), (parallel, 1)):
        monkeypatch.setattr(index_mod, "PARALLEL_MIN", threshold)
        repos[root] = api.open_repo(root)
        api.refresh(repos[root])
    assert len(pools) == 2  # parsing, then static notes
    assert stored_rows(repos[serial]) == stored_rows(repos[parallel])
    for first in (True, False):  # incremental refreshes: replaced, removed, added modules
        for root, threshold in ((serial, 10**9), (parallel, 1)):
            edit(root, first)
            git(root, "add", "-A")
            monkeypatch.setattr(index_mod, "PARALLEL_MIN", threshold)
            api.refresh(repos[root])
        assert stored_rows(repos[serial]) == stored_rows(repos[parallel])
    assert repos[parallel].store.integrity_errors() == []


def test_batched_inserts_match_inserts_one_module_at_a_time(
    make_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of new modules goes in with one insert per table; with a batch of one, each
    module is written on its own, as before batching."""
    one, many = make_repo("shop"), make_repo("shop")
    rows = []
    for root, batch in ((one, 1), (many, 10**6)):
        monkeypatch.setattr(index_mod, "BATCH", batch)
        repo = api.open_repo(root)
        api.refresh(repo)
        rows.append(stored_rows(repo))
    assert rows[0] == rows[1]


def test_rebuilt_store_matches_the_first_build(make_repo, tmp_path: Path) -> None:
    root = make_repo("relay")
    repo = api.open_repo(root)
    api.refresh(repo)
    first = stored_rows(repo)
    shutil.rmtree(root / ".sleepy")
    repo = api.open_repo(root)
    api.refresh(repo)
    assert stored_rows(repo) == first


TEXT = st.text(alphabet=st.sampled_from(list("aZ9_ \t\r\n\x0c\x1e\x85\u2028éÉx(")), max_size=400)


@settings(max_examples=300, deadline=None, database=None)
@given(text=TEXT)
def test_the_indexed_file_is_its_indexed_chunks(text: str) -> None:
    """The whole-file BM25 baseline (bench ``paths``) indexes a module as its stored chunks
    joined: FTS5 must see the same tokens at the same positions as in ``fts_text`` of the
    whole file; each chunk is stored as ``fts_text`` indexes it."""
    source = "def fooBar():\n    return 1\n" + text + "\nclass BazQux:\n    aB = 1\n"
    facts = parse_module("m.py", source.encode("utf-8", "surrogatepass"), "python")
    chunks = code_chunks(facts, source_lines(source))
    rows = module_rows(
        lang="python", blob_sha="b", size=1, mtime_ns=1, warning=None, facts=facts, chunks=chunks
    )
    got = [c[3] if g is None else g for g, c in zip(rows.chunks_fts, chunks, strict=True)]
    assert got == [fts_text(c[3]) for c in chunks]
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE VIRTUAL TABLE f USING fts5(body, tokenize='porter unicode61')")
        conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(f, instance)")
        conn.executemany(
            "INSERT INTO f(rowid, body) VALUES (?, ?)",
            [(1, fts_text(source)), (2, file_body([c[3] for c in chunks]))],
        )
        tokens = {
            doc: conn.execute(
                "SELECT term, offset FROM v WHERE doc = ? ORDER BY offset", (doc,)
            ).fetchall()
            for doc in (1, 2)
        }
    assert tokens[1] == tokens[2]


def test_write_batches_shrink_toward_the_end_of_a_run() -> None:
    from sleepy_repo.index import batch_due

    assert not batch_due(199, 1000, 200, 20) and batch_due(200, 1000, 200, 20)
    assert batch_due(40, 40, 200, 20) and not batch_due(39, 40, 200, 20)  # near the end
    assert not batch_due(19, 3, 200, 20) and batch_due(20, 3, 200, 20)  # never below least


CAMEL_TEXT = st.text(
    alphabet=st.sampled_from([*"aZ9_ x\n\0", "é", "É", "\u2014", "\ud800", "ſ", "K", "İ"]),
    max_size=80,
)


@settings(max_examples=500, deadline=None, database=None)
@given(text=CAMEL_TEXT)
def test_camel_case_splits_where_the_reference_pattern_does(text: str) -> None:
    """``fts_text`` finds camelCase boundaries on bytes; it must split exactly where
    ``[a-z0-9](?=[A-Z])`` does, non-ASCII letters and lone surrogates included."""
    import re

    reference = re.sub(r"[a-z0-9](?=[A-Z])", lambda m: m.group() + " ", text)
    assert fts_text(text) == reference
    assert fts_text("parseArgs9X fooBAR éA aÉ") == "parse Args9 X foo BAR éA aÉ"


def _edges_as_resolved_now(repo: api.Repo) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(stored edges, edges resolved from the stored facts against the indexed modules)."""
    from sleepy_repo.index import go_module_path, imported_paths
    from sleepy_repo.parse.facts import ModuleFacts

    with repo.store.read() as conn:
        facts = {
            p: ModuleFacts.from_dict(json.loads(f))
            for p, f in conn.execute(
                "SELECT path, facts_json FROM modules WHERE status = 'indexed'"
            )
        }
        stored = {p: [] for p in facts}
        for src, dst in conn.execute("SELECT src, dst FROM edges ORDER BY src, dst"):
            stored[src].append(dst)
    paths = frozenset(facts)
    go = go_module_path(repo.root)
    return stored, {p: sorted(imported_paths(f, paths, go)) for p, f in facts.items()}


@pytest.mark.parametrize("unreadable", [False, True])
def test_edges_resolved_while_parsing_equal_edges_resolved_after(
    make_repo, monkeypatch: pytest.MonkeyPatch, unreadable: bool
) -> None:
    """Import edges are resolved as each module arrives (against the scan's paths), not in
    a serial pass at the end: each module once. When a scanned file cannot be read (so it
    is not indexed), they are resolved again against the index: no edge to the skipped
    file, and every stored edge equals a fresh resolution."""

    root = make_repo("shop")
    if unreadable:
        make_unreadable(root / "shop" / "tax.py", monkeypatch)
    calls: list[str] = []
    real_resolve = index_mod.imported_paths

    def counted(facts: Any, *args: Any) -> Any:
        calls.append(facts.path)
        return real_resolve(facts, *args)

    monkeypatch.setattr(index_mod, "imported_paths", counted)
    repo = api.open_repo(root)
    report = api.refresh(repo)
    resolved = list(calls)  # (the check below resolves again)
    stored, fresh = _edges_as_resolved_now(repo)
    assert stored == fresh and any(stored.values())
    if unreadable:
        assert "shop/tax.py" not in stored
        assert report["skipped"] and not any("shop/tax.py" in d for d in stored.values())
        # while parsing (the 16 readable modules), then again against the index
        assert len(resolved) == 2 * len(stored)
    else:
        assert "shop/tax.py" in stored["shop/pricing.py"]
        assert sorted(resolved) == sorted(stored)  # once each


WORKER_MODULE = """
import threading

LOCK = threading.Lock()  # held by another thread of the parent when the pool starts


def work(i):
    with LOCK:
        return i * i
"""

HOLDER_SCRIPT = """
import sys, threading, time
sys.path.insert(0, sys.argv[1])
import lockwork
from sleepy_repo import index

held = threading.Event()


def hold():
    with lockwork.LOCK:
        held.set()
        time.sleep(3600)


threading.Thread(target=hold, daemon=True).start()
held.wait()
print(index.start_method(), list(index.in_workers(lockwork.work, list(range(8)), modules=10**6)))
"""


def test_workers_never_fork_from_a_process_with_other_threads(tmp_path: Path) -> None:
    """A fork copies the locks other threads hold at that instant (the watcher and the
    language server have threads), and a worker needing one would wait forever. From a
    process with a second thread holding a lock the workers need, the pool must still
    finish: its workers start from a clean process."""
    import subprocess
    import sys

    (tmp_path / "lockwork.py").write_text(WORKER_MODULE)
    proc = subprocess.run(
        [sys.executable, "-c", HOLDER_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split(" ", 1) == ["forkserver", "[0, 1, 4, 9, 16, 25, 36, 49]\n"]
    alone = subprocess.run(
        [sys.executable, "-c", "from sleepy_repo import index; print(index.start_method())"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alone.stdout == "fork\n"  # a single-threaded process still forks (fast)


def test_workers_run_at_a_lower_priority_than_the_process_storing_their_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers are niced, so the parent that stores their rows keeps up with them (and the
    editor stays responsive); the parent's own priority is left alone."""
    monkeypatch.setattr(index_mod.os, "cpu_count", lambda: 2)  # a pool even on one core
    parent = os.nice(0)
    niceness = list(index_mod.in_workers(os.nice, [0] * 4, modules=10**6))
    assert niceness == [min(19, parent + index_mod.WORKER_NICE)] * 4
    assert os.nice(0) == parent
