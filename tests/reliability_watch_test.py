"""Crash safety of the watcher: ``kill -9`` a running ``sleepy-repo watch`` (the fake model
backend, slowed by ``SLEEPY_REPO_FAKE_DELAY`` so calls can be caught in flight) at random
points: during its start-up refresh, while it refreshes after file changes, and while it
writes model notes. After each kill the store opens and passes ``PRAGMA integrity_check``
plus the FTS consistency checks with no duplicate rows, and the sleeper lock is free again
(the next ``watch`` starts). A last run drains the queue: every module has model notes for
its current content, exactly once.

Default: 5 kills; ``SLEEPY_SOAK=1``: 50. ``SLEEPY_CRASH_SEED`` picks the kill points.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from reliability_crash_test import _duplicates

from sleepy_repo.store import NoteStore

from helpers import CLI, EXE, git, trusted_config

SOAK = os.environ.get("SLEEPY_SOAK") == "1"
KILLS = 50 if SOAK else 5
EDITABLE = [
    "shop/cart.py",
    "shop/tax.py",
    "shop/pricing.py",
    "shop/money.py",
    "shop/inventory.py",
    "web/src/format.ts",
]


def _q(root: Path, sql: str, *args: Any) -> Any:
    with closing(sqlite3.connect(root / ".sleepy" / "index.db", timeout=30)) as conn:
        return conn.execute(sql, args).fetchone()[0]


def _state(root: Path) -> str:
    try:
        raw = _q(root, "SELECT value FROM meta WHERE key = 'sleeper'")
    except (sqlite3.Error, TypeError):
        return ""
    return str(json.loads(raw).get("state", "")) if raw else ""


def _settled(root: Path) -> bool:
    missing = _q(
        root,
        "SELECT count(*) FROM modules m WHERE m.status = 'indexed' AND NOT EXISTS ("
        "SELECT 1 FROM notes n WHERE n.path = m.path AND n.blob_sha = m.blob_sha "
        "AND n.backend = 'fake')",
    )
    queued = _q(root, "SELECT count(*) FROM jobs WHERE backend = 'fake' AND status = 'queued'")
    return missing == 0 and queued == 0


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError):
            if cond():
                return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _lock_is_free(root: Path) -> bool:
    path = root / ".sleepy" / "sleeper.lock"
    if not path.exists():
        return True
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    return True


def _watch(root: Path, log: Path, delay: float) -> subprocess.Popen[bytes]:
    assert EXE
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [EXE, "-v", "watch", "--repo", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env={**os.environ, "SLEEPY_REPO_FAKE_DELAY": str(delay)},
            start_new_session=True,  # kill the daemon and any worker it started
        )


def _edit(root: Path, rng: random.Random, n: int) -> None:
    for rel in rng.sample(EDITABLE, rng.randint(1, 3)):
        p = root / rel
        comment = "//" if rel.endswith(".ts") else "#"
        p.write_text(p.read_text() + f"{comment} crash edit {n}\n")


def test_kill_9_of_the_watcher_at_random_points(make_repo, cli: CLI, tmp_path: Path) -> None:
    seed = int(os.environ.get("SLEEPY_CRASH_SEED", "20261127"))
    rng = random.Random(seed)
    root = make_repo("shop")
    (root / ".sleepy").mkdir()
    trusted_config(
        root, '[notes]\nbackend = "fake"\n[sleep]\nidle_seconds = 0.3\ndebounce_seconds = 0.1\n'
    )
    cli.run("refresh", "--backend", "static", repo=root)
    store = NoteStore(root / ".sleepy")
    log = tmp_path / "watch.log"

    where: dict[str, int] = {}
    for k in range(KILLS):
        if rng.random() < 0.5:
            _edit(root, rng, k)  # work for the start-up refresh and new model jobs
        proc = _watch(root, log, rng.choice([0.1, 0.2, 0.4]))
        delay = rng.uniform(0.3, 3.0)
        end = time.monotonic() + delay
        edited_during = False
        while time.monotonic() < end:
            if not edited_during and rng.random() < 0.3 and time.monotonic() > end - delay / 2:
                _edit(root, rng, 1000 + k)  # the watcher refreshes while running
                edited_during = True
            time.sleep(0.05)
        state = _state(root)
        label = f"kill {k} after {delay:.2f}s (seed {seed}, state {state!r})"
        assert proc.poll() is None, f"{label}: the watcher exited\n{log.read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        if "writing notes" in state:
            where["writing notes"] = where.get("writing notes", 0) + 1
        else:
            where["start-up or refresh"] = where.get("start-up or refresh", 0) + 1

        assert store.integrity_errors() == [], label
        assert _duplicates(store) == {}, label
        assert _q(root, "PRAGMA integrity_check") == "ok", label
        assert _lock_is_free(root), label

    # a new watcher starts and finishes the work: no job lost, no note written twice
    final = tmp_path / "final.log"
    proc = _watch(root, final, 0.0)
    try:
        _wait(lambda: "watching" in final.read_text(), 60, "a new watcher")
        _wait(lambda: _settled(root), 120, "the queue to drain after the kills")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0 or proc.returncode == -signal.SIGTERM
    assert store.integrity_errors() == []
    assert _duplicates(store) == {}
    assert _q(root, "SELECT count(*) FROM jobs WHERE status = 'queued'") == 0
    for rel in EDITABLE:  # notes of the content on disk
        sha = git(root, "hash-object", rel).strip()
        assert _q(
            root,
            "SELECT count(*) FROM notes WHERE path = ? AND blob_sha = ? AND backend = 'fake'",
            rel,
            sha,
        ), rel
    text = log.read_text() + final.read_text()
    assert "Traceback" not in text and "locked" not in text.lower(), text[-3000:]
    assert _lock_is_free(root)
    print(f"\nwatch: {KILLS} kills survived ({where}), queue drained after")
    assert where.get("writing notes", 0) >= 1, where
