"""Concurrent writers: real ``sleepy-repo`` processes and a raw ``NoteStore`` writer share one
store at once, while files are being edited. Nothing is lost, no "database is locked" reaches
the user, and the full-text indexes stay consistent with their rows.

``SLEEPY_SOAK=1`` runs a bigger variant (more rounds, more notes, longer editing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from reliability_crash_test import _duplicates
from reliability_rpc import Server, text_document

from sleepy_repo import store as store_mod
from sleepy_repo.store import NoteStore

from helpers import EXE, ROOT, git, trusted_config

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
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            assert version == store_mod.SCHEMA_VERSION
            opened = conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'opened-%'")
            assert opened.fetchone()[0] == n  # no process wrote into a replaced file
        assert store.integrity_errors() == []
        assert not [q for q in directory.iterdir() if q.name.endswith(".tmp")]


# -- the long-running executables: lsp and watch -------------------------------------------
QUESTIONS = ["coupon discount before VAT", "cart quantity limit", "money rounding", "stock"]
OPENED = ["shop/cart.py", "shop/tax.py", "shop/pricing.py", "web/src/format.ts"]


def _lsp_storm(
    srv: Server, repo: Path, n: int, stop_after: threading.Event, window: int = 8
) -> dict[str, Any]:
    """``n`` ``sleepy/context`` requests (``window`` in flight at a time), each round with
    didOpen/didChange/didSave of an open file and a hover; every reply recorded."""
    out: dict[str, Any] = {"context": [], "hover": [], "questions": []}
    version = 1
    for start in range(0, n, window):
        ids = []
        for i in range(start, min(n, start + window)):
            question = f"{QUESTIONS[i % len(QUESTIONS)]} #{i}"
            out["questions"].append(question)
            ids.append(srv.send("sleepy/context", {"question": question, "budget": 400}))
        rel = OPENED[start // window % len(OPENED)]
        doc = repo / rel
        version += 1
        srv.notify(
            "textDocument/didOpen",
            {"textDocument": text_document(doc, doc.read_text(), version)},
        )
        srv.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": doc.as_uri(), "version": version},
                "contentChanges": [{"text": f"# unsaved {start}\n"}],
            },
        )
        srv.notify("textDocument/didSave", {"textDocument": {"uri": doc.as_uri()}})
        hover_id = srv.send(
            "textDocument/hover",
            {
                "textDocument": {"uri": (repo / "shop" / "cart.py").as_uri()},
                "position": {"line": 31, "character": 8},
            },
        )
        out["context"] += [srv.wait(i) for i in ids]
        out["hover"].append(srv.wait(hover_id))
    stop_after.set()
    return out


def _sleepy_config(repo: Path) -> None:
    (repo / ".sleepy").mkdir(exist_ok=True)
    trusted_config(
        repo, '[notes]\nbackend = "fake"\n[sleep]\nidle_seconds = 0.3\ndebounce_seconds = 0.1\n'
    )


def _settled(store: NoteStore) -> bool:
    with store.read() as conn:
        missing = conn.execute(
            "SELECT count(*) FROM modules m WHERE m.status = 'indexed' AND NOT EXISTS ("
            "SELECT 1 FROM notes n WHERE n.path = m.path AND n.blob_sha = m.blob_sha "
            "AND n.backend = 'fake')"
        ).fetchone()[0]
        queued = conn.execute(
            "SELECT count(*) FROM jobs WHERE backend = 'fake' AND status = 'queued'"
        ).fetchone()[0]
    return missing == 0 and queued == 0


def _bursts(repo: Path, seconds: float) -> None:
    """Edits in bursts with idle gaps, so the watcher's sleeper writes notes in between."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        for _ in range(5):
            rel = EDITS[n % len(EDITS)]
            p = repo / rel
            comment = "//" if rel.endswith(".ts") else "#"
            p.write_text(p.read_text() + f"{comment} burst {n}\n")
            n += 1
            time.sleep(0.02)
        time.sleep(0.8)


def test_lsp_watch_hook_and_refresh_at_once(make_repo, tmp_path: Path) -> None:
    """4 real executables on one store: ``lsp`` (sleepy/context requests, hovers and
    document activity, each a store write), ``watch`` (static refreshes on file changes and
    fake-model notes when idle), ``hook pre-commit`` and ``refresh`` in loops."""
    assert EXE
    repo = make_repo("shop")
    _sleepy_config(repo)
    for rel in STAGED:
        (repo / rel).write_text((repo / rel).read_text() + "\n# staged change\n")
    git(repo, "add", *STAGED)
    subprocess.run([EXE, "refresh", "--backend", "static", "--repo", str(repo)], check=True)
    store = NoteStore(repo / ".sleepy")

    n_context = 3000 if SOAK else 1000
    watch_log = tmp_path / "watch.log"
    with open(watch_log, "wb") as fh:
        watcher = subprocess.Popen(
            [EXE, "-v", "watch", "--repo", str(repo)],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env=_env(),
        )
    srv = Server(tmp_path / "lsp.log", "-v")
    stop = threading.Event()
    loopers = [
        Looper([EXE, "refresh", "--backend", "static", "--repo", str(repo)], stop, repo),
        Looper([EXE, "hook", "pre-commit", *STAGED, "--repo", str(repo)], stop, repo),
    ]
    t0 = time.monotonic()
    try:
        srv.initialize(repo)
        for lp in loopers:
            lp.start()
        editor = threading.Thread(target=_bursts, args=(repo, 30.0 if SOAK else 6.0))
        editor.start()
        storm = _lsp_storm(srv, repo, n_context, threading.Event())
        editor.join()
        stop.set()
        for lp in loopers:
            lp.join(timeout=300)
            assert not lp.is_alive()
        # the sleeper catches up once the edits stop
        deadline = time.monotonic() + 120
        while not _settled(store):
            assert time.monotonic() < deadline, "the watcher did not write the model notes"
            assert watcher.poll() is None, watch_log.read_text()[-3000:]
            time.sleep(0.2)
        assert srv.close() == 0  # waits for the server's pending store writes
    finally:
        if watcher.poll() is None:
            watcher.send_signal(signal.SIGTERM)
            try:
                watcher.wait(30)
            except subprocess.TimeoutExpired:
                watcher.kill()
        if srv.proc.poll() is None:
            srv.proc.kill()
    elapsed = time.monotonic() - t0

    # nothing reached the user as an error
    bad = [r for r in storm["context"] + storm["hover"] if "error" in r]
    assert bad == [], bad[:3]
    assert all(r["result"]["items"] for r in storm["context"])
    assert all(r["result"] and "Cart" in r["result"]["contents"]["value"] for r in storm["hover"])
    lsp_log = srv.log.read_text(errors="replace")
    watch_text = watch_log.read_text(errors="replace")
    for name, text in (("lsp", lsp_log), ("watch", watch_text)):
        assert "locked" not in text.lower(), (name, text[-3000:])
        assert "Traceback" not in text, (name, text[-3000:])
        assert "failed" not in text, (name, text[-3000:])
    assert srv.junk == []
    assert watcher.returncode in (0, -signal.SIGTERM), watch_text[-3000:]
    _assert_clean(loopers[0].runs, "refresh static")
    _assert_clean(loopers[1].runs, "hook pre-commit")

    # nothing was lost: one hit per context request, one per hover that served notes
    assert store.integrity_errors() == []
    assert _duplicates(store) == {}
    with store.read() as conn:
        asked = {r[0] for r in conn.execute("SELECT query FROM hits WHERE source = 'lsp'")}
        assert asked == set(storm["questions"])
        assert conn.execute("SELECT count(*) FROM hits WHERE source = 'lsp'").fetchone()[0] == (
            n_context
        )
        hovers = conn.execute("SELECT count(*) FROM hits WHERE source = 'hover'").fetchone()[0]
        assert hovers == len(storm["hover"])
        fake_notes = conn.execute(
            "SELECT count(*) FROM notes WHERE backend = 'fake' AND origin = 'written'"
        ).fetchone()[0]
        calls = conn.execute("SELECT count(*) FROM ledger WHERE backend = 'fake'").fetchone()[0]
        stored = dict(conn.execute("SELECT path, blob_sha FROM modules").fetchall())
        hook_notes = conn.execute("SELECT count(*) FROM notes WHERE backend = 'static'").fetchone()[
            0
        ]
    for rel in EDITS:
        assert stored[rel] == git(repo, "hash-object", rel).strip(), rel
    runs = sum(len(lp.runs) for lp in loopers)
    print(
        f"\nlsp+watch+hook+refresh: {n_context} context hits + {hovers} hover hits (lsp), "
        f"{fake_notes} model notes from {calls} calls (watch), {runs} hook/refresh runs, "
        f"{hook_notes} static note sets, in {elapsed:.1f}s; 0 lost, 0 locked"
    )
    assert SOAK or elapsed < 90


def _generated_repo(root: Path, n: int) -> list[str]:
    """A git repo of ``n`` small, importing Python modules (committed)."""
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    paths = []
    for i in range(n):
        rel = f"pkg/m{i:04d}.py"
        (root / rel).write_text(
            f'"""Module {i}: ledger entries of kind {i % 17}."""\n\n'
            f"from pkg import m{(i * 7) % n:04d}\n\n\n"
            f'def settle_{i}(amount):\n    """Settle an entry of kind {i % 17}."""\n'
            f"    return amount * {i}\n\n\n"
            f"class Entry{i}:\n    def total(self):\n        return settle_{i}(1)\n"
        )
        paths.append(rel)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "generated")
    return paths


def test_each_executable_writes_a_thousand(tmp_path: Path) -> None:
    """The issue's shape at full size: on a 1,000-module repo, ``refresh`` writes 1,000 static
    note sets, ``hook pre-commit --all`` 1,000 mirrored notes, ``watch`` 1,000 fake-model
    notes and ``lsp`` 1,000 query hits, all at once on one store: nothing lost, nothing
    duplicated, no "database is locked" reaching anyone."""
    assert EXE
    n = 1000
    repo = tmp_path / "big"
    paths = _generated_repo(repo, n)
    _sleepy_config(repo)
    with open(repo / ".sleepy" / "config.toml", "a") as fh:  # the hook writes mirrors too
        fh.write("[retrieve]\nbudget = 400\n")
    text = (repo / ".sleepy" / "config.toml").read_text()
    trusted_config(repo, text.replace('backend = "fake"\n', 'backend = "fake"\ncommit = true\n', 1))
    watch_log = tmp_path / "watch.log"
    with open(watch_log, "wb") as fh:
        watcher = subprocess.Popen(
            [EXE, "watch", "--repo", str(repo)], stdout=subprocess.DEVNULL, stderr=fh, env=_env()
        )
    srv = Server(tmp_path / "lsp.log")
    store = NoteStore(repo / ".sleepy")
    t0 = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while b"watching" not in watch_log.read_bytes():
            assert watcher.poll() is None and time.monotonic() < deadline, watch_log.read_text()
            time.sleep(0.1)
        srv.initialize(repo)
        runs: list[subprocess.CompletedProcess[str]] = []

        def run(*args: str) -> None:
            runs.append(
                subprocess.run(
                    [EXE, *args, "--repo", str(repo)],
                    capture_output=True,
                    text=True,
                    env=_env(),
                    timeout=600,
                )
            )

        writers = [
            threading.Thread(target=run, args=("refresh", "--backend", "static")),
            threading.Thread(target=run, args=("hook", "pre-commit", "--all")),
        ]
        for w in writers:
            w.start()
        ids = [
            srv.send("sleepy/context", {"question": f"settle ledger entries of kind {i % 17} #{i}"})
            for i in range(n)
        ]
        replies = [srv.wait(i, timeout=600) for i in ids]
        for w in writers:
            w.join(600)
        deadline = time.monotonic() + 600
        while not _settled(store):
            assert time.monotonic() < deadline, "the watcher did not write the model notes"
            assert watcher.poll() is None, watch_log.read_text()[-3000:]
            time.sleep(0.5)
        assert srv.close() == 0
    finally:
        if watcher.poll() is None:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(60)
        if srv.proc.poll() is None:
            srv.proc.kill()
    elapsed = time.monotonic() - t0

    assert [r for r in replies if "error" in r] == []
    _assert_clean(runs, "refresh + hook")
    for name, text in (
        ("lsp", srv.log.read_text(errors="replace")),
        ("watch", watch_log.read_text()),
    ):
        assert "locked" not in text.lower(), (name, text[-3000:])
        assert "Traceback" not in text, (name, text[-3000:])
    assert store.integrity_errors() == []
    assert _duplicates(store) == {}
    with store.read() as conn:
        per_backend = dict(
            conn.execute(
                "SELECT n.backend, count(*) FROM notes n JOIN modules m ON m.path = n.path "
                "AND m.blob_sha = n.blob_sha WHERE n.path LIKE 'pkg/m%' GROUP BY n.backend"
            ).fetchall()
        )
        hits = conn.execute("SELECT count(*) FROM hits WHERE source = 'lsp'").fetchone()[0]
    mirrors = list((repo / ".sleepy" / "notes").rglob("*.md"))
    assert per_backend == {"static": n, "fake": n}, per_backend
    assert hits == n
    assert len([m for m in mirrors if "/pkg/m" in m.as_posix()]) == len(paths)
    print(
        f"\n1,000-module repo: {per_backend['static']} static note sets (refresh/hook/watch), "
        f"{per_backend['fake']} fake-model notes (watch), {len(mirrors)} mirrors (hook), "
        f"{hits} query hits (lsp) in {elapsed:.1f}s; 0 lost, 0 duplicated, 0 locked"
    )
