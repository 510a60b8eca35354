"""Concurrent writers: real ``sleepy-repo`` processes and a raw ``NoteStore`` writer share one
store at once, while files are being edited. Nothing is lost, no "database is locked" reaches
the user, and the full-text indexes stay consistent with their rows.

``SLEEPY_SOAK=1`` runs a bigger variant (more rounds, more notes, longer editing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sleepy_repo.store import NoteStore

from helpers import EXE, ROOT, git

SOAK = os.environ.get("SLEEPY_SOAK") == "1"

WRITER = r"""
import sys
from sleepy_repo.notes import ModuleNotes, NoteItem, NoteKey
from sleepy_repo.store import NoteStore

store_dir, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = NoteStore(__import__("pathlib").Path(store_dir))
store.ensure()
for i in range(n):
    key = NoteKey(f"synthetic/{prefix}/m{i}.py", f"{i:040x}", "p1", "writer", "w-1", "standard")
    items = [
        NoteItem("fact", f"note {i} item {j} about widgetCount", None, None, 1, 1, (), True)
        for j in range(2)
    ]
    with store.write() as conn:
        NoteStore.put_notes(conn, ModuleNotes(key, items), origin="written")
print("done", n)
"""

EDITS = ["shop/pricing.py", "shop/money.py", "shop/inventory.py", "web/src/format.ts"]
STAGED = ["shop/cart.py", "shop/tax.py"]


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}


class Looper(threading.Thread):
    """Runs ``cmd`` again and again until ``stop`` is set, then once more."""

    def __init__(self, cmd: list[str], stop: threading.Event, cwd: Path) -> None:
        super().__init__(daemon=True)
        self.cmd, self.stop, self.cwd = cmd, stop, cwd
        self.runs: list[subprocess.CompletedProcess[str]] = []

    def run(self) -> None:
        last = False
        while True:
            last = self.stop.is_set()
            self.runs.append(
                subprocess.run(
                    self.cmd,
                    capture_output=True,
                    text=True,
                    cwd=self.cwd,
                    env=_env(),
                    timeout=120,
                )
            )
            if last:
                return


def _editor(repo: Path, stop: threading.Event, seconds: float) -> None:
    """Rewrites work-tree files (unstaged edits) until ``seconds`` have passed."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        rel = EDITS[n % len(EDITS)]
        p = repo / rel
        text = p.read_text()
        comment = "//" if rel.endswith(".ts") else "#"
        p.write_text(text + f"{comment} edit {n}\n")
        if rel.endswith(".py") and n % 3 == 0:
            p.write_text(text + f"\ndef added_{n}(x):\n    return x + {n}\n")
        n += 1
        time.sleep(0.02)
    stop.set()


def _assert_clean(runs: list[subprocess.CompletedProcess[str]], what: str) -> None:
    assert runs, what
    for r in runs:
        detail = f"{what}: {' '.join(r.args)} exited {r.returncode}\n{r.stderr}"
        assert r.returncode == 0, detail
        assert "locked" not in r.stderr.lower(), detail
        assert "Traceback" not in r.stderr, detail


@pytest.mark.parametrize("fresh_store", [True, False], ids=["racing-create", "existing-store"])
def test_four_writers_lose_nothing(make_repo, fresh_store: bool) -> None:
    assert EXE
    repo = make_repo("shop")
    for rel in STAGED:  # staged changes for the hook to note
        (repo / rel).write_text((repo / rel).read_text() + "\n# staged change\n")
    git(repo, "add", *STAGED)
    store = NoteStore(repo / ".sleepy")
    if not fresh_store:
        store.ensure()

    n_notes = 5000 if SOAK else 1000
    edit_seconds = 30.0 if SOAK else 4.0
    stop = threading.Event()
    loopers = [
        Looper([EXE, "refresh", "--repo", str(repo)], stop, repo),
        Looper([EXE, "refresh", "--backend", "fake", "--repo", str(repo)], stop, repo),
        Looper([EXE, "hook", "pre-commit", *STAGED, "--repo", str(repo)], stop, repo),
    ]
    t0 = time.monotonic()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(repo / ".sleepy"), "w", str(n_notes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    for lp in loopers:
        lp.start()
    _editor(repo, stop, edit_seconds)
    _, errs = writer.communicate(timeout=300)
    for lp in loopers:
        lp.join(timeout=300)
        assert not lp.is_alive()
    elapsed = time.monotonic() - t0

    assert writer.returncode == 0, errs
    assert "locked" not in errs.lower(), errs
    _assert_clean(loopers[0].runs, "refresh static")
    _assert_clean(loopers[1].runs, "refresh fake")
    _assert_clean(loopers[2].runs, "hook pre-commit")

    assert store.integrity_errors() == []
    with store.read() as conn:
        # every note the raw writer committed is there, with its items
        n, items = conn.execute(
            "SELECT count(DISTINCT n.id), count(i.id) FROM notes n "
            "JOIN note_items i ON i.note_id = n.id WHERE n.backend = 'writer'"
        ).fetchone()
        assert (n, items) == (n_notes, 2 * n_notes)
        # one row per key, module and chunk span
        assert (
            conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM notes GROUP BY path, blob_sha, "
                "prompt_version, backend, model, effort HAVING count(*) > 1)"
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM chunks GROUP BY path, start_line, "
                "end_line HAVING count(*) > 1)"
            ).fetchone()[0]
            == 0
        )
        # every indexed module (its final content: each looper ran once after the edits
        # stopped) has static and fake notes for the blob on disk
        missing = conn.execute(
            "SELECT m.path, b.backend FROM modules m, (SELECT 'static' AS backend UNION ALL "
            "SELECT 'fake') b WHERE m.status = 'indexed' AND NOT EXISTS (SELECT 1 FROM notes n "
            "WHERE n.path = m.path AND n.blob_sha = m.blob_sha AND n.backend = b.backend)"
        ).fetchall()
        assert [tuple(r) for r in missing] == []
        stored = {r[0]: r[1] for r in conn.execute("SELECT path, blob_sha FROM modules")}
    for rel in EDITS:
        on_disk = git(repo, "hash-object", rel).strip()
        assert stored[rel] == on_disk, rel
    # the hook wrote notes for the staged blobs
    staged = {
        line.split()[3]: line.split()[1]
        for line in git(repo, "ls-files", "-s", *STAGED).splitlines()
    }
    with store.read() as conn:
        for rel, sha in staged.items():
            assert conn.execute(
                "SELECT count(*) FROM notes WHERE path = ? AND blob_sha = ? AND backend = 'static'",
                (rel, sha),
            ).fetchone()[0], rel
    runs = sum(len(lp.runs) for lp in loopers)
    print(f"\n4 writers: {runs} CLI runs + {n_notes} raw notes in {elapsed:.1f}s, 0 lost")
    assert SOAK or elapsed < 60


def _v1_store(directory: Path) -> NoteStore:
    """A store at schema version 1 (before the budget tables), as an older release left it."""
    import sqlite3
    from contextlib import closing

    from sleepy_repo import store as store_mod

    directory.mkdir(parents=True)
    with closing(sqlite3.connect(directory / store_mod.DB_NAME)) as conn:
        conn.create_function("fts_text", 1, store_mod.fts_text, deterministic=True)
        conn.executescript(store_mod._SCHEMA_V1)
        conn.execute(f"PRAGMA application_id = {store_mod.APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.commit()
    return NoteStore(directory)


# each process waits for the same instant, then opens the store and writes one meta row
ENSURE = r"""
import pathlib, sys, time
from sleepy_repo.store import NoteStore
start = float(sys.argv[2])
while time.time() < start:
    pass
store = NoteStore(pathlib.Path(sys.argv[1]))
store.ensure()
with store.write() as conn:
    NoteStore.set_meta(conn, "opened-" + sys.argv[3], 1)
"""


@pytest.mark.parametrize("old", [True, False], ids=["migrate-v1", "create"])
def test_processes_opening_a_store_at_once(tmp_path: Path, old: bool) -> None:
    """Found by this test: the second of two processes migrating an old store re-ran the
    migration ("table reservations already exists", reported as a corrupt store)."""
    n = 6
    for trial in range(3 if not SOAK else 20):
        directory = tmp_path / f"t{trial}" / ".sleepy"
        store = _v1_store(directory) if old else NoteStore(directory)
        start = time.time() + 0.8
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", ENSURE, str(directory), str(start), str(i)],
                stderr=subprocess.PIPE,
                text=True,
                env=_env(),
            )
            for i in range(n)
        ]
        for p in procs:
            _, errs = p.communicate(timeout=60)
            assert p.returncode == 0, errs
        with store.read() as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
            opened = conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'opened-%'")
            assert opened.fetchone()[0] == n  # no process wrote into a replaced file
        assert store.integrity_errors() == []
        assert not [q for q in directory.iterdir() if q.name.endswith(".tmp")]
