"""Crash safety: ``kill -9`` a running ``sleepy-repo refresh`` at random points. After each
kill the store opens, passes ``PRAGMA integrity_check`` and the FTS consistency checks, and a
re-run completes with no duplicate rows and notes for every module's current content.

The corpus is part of the Python standard library (~150 modules, a cold refresh takes ~2 s).
Default: 10 kills; ``SLEEPY_SOAK=1``: 50. ``SLEEPY_CRASH_SEED`` picks the kill points.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path

import pytest

from sleepy_repo.store import NoteStore

from helpers import EXE, git

SOAK = os.environ.get("SLEEPY_SOAK") == "1"
KILLS = 50 if SOAK else 10
PACKAGES = ("email", "json", "asyncio", "http", "logging", "unittest", "concurrent", "importlib")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dest = tmp_path_factory.mktemp("crash") / "stdlib"
    for pkg in PACKAGES:
        shutil.copytree(stdlib / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "corpus"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env, capture_output=True)
    return dest


def _refresh(repo: Path) -> subprocess.Popen[bytes]:
    assert EXE
    return subprocess.Popen(
        [EXE, "refresh", "--json", "--repo", str(repo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _edit(repo: Path, files: list[Path], rng: random.Random, round_: int) -> None:
    """New content for a random half of the modules, so the next refresh has work."""
    for f in rng.sample(files, len(files) // 2):
        with f.open("a", encoding="utf-8") as fh:
            fh.write(f"\n\ndef _crash_round_{round_}():\n    return {round_}\n")


def _duplicates(store: NoteStore) -> dict[str, int]:
    queries = {
        "notes": "SELECT path, blob_sha, prompt_version, backend, model, effort FROM notes "
        "GROUP BY 1, 2, 3, 4, 5, 6 HAVING count(*) > 1",
        "modules": "SELECT path FROM modules GROUP BY path HAVING count(*) > 1",
        "chunks": "SELECT path, start_line, end_line FROM chunks GROUP BY 1, 2, 3 "
        "HAVING count(*) > 1",
        "symbols": "SELECT path, qualname, start_line FROM symbols GROUP BY 1, 2, 3 "
        "HAVING count(*) > 1",
    }
    with store.read() as conn:
        found = {t: len(conn.execute(q).fetchall()) for t, q in queries.items()}
    return {t: n for t, n in found.items() if n}


def test_kill_9_mid_refresh_leaves_a_consistent_store(corpus: Path) -> None:
    seed = int(os.environ.get("SLEEPY_CRASH_SEED", "20261126"))
    rng = random.Random(seed)
    files = sorted(corpus.rglob("*.py"))
    store = NoteStore(corpus / ".sleepy")

    t0 = time.monotonic()
    first = _refresh(corpus)  # the cold run's duration bounds the kill points
    _, errs = first.communicate(timeout=120)
    assert first.returncode == 0, errs.decode()
    cold = time.monotonic() - t0

    killed_mid_run = 0
    for k in range(KILLS):
        _edit(corpus, files, rng, k)
        proc = _refresh(corpus)
        delay = rng.uniform(0.05, 0.7 * cold)  # half the modules changed: a shorter run
        time.sleep(delay)
        if proc.poll() is None:
            killed_mid_run += 1
        with contextlib.suppress(ProcessLookupError):  # (it may have finished first)
            os.killpg(proc.pid, signal.SIGKILL)  # the refresh and any parse workers
        proc.communicate(timeout=30)

        where = f"kill {k} after {delay:.2f}s (seed {seed})"
        assert store.integrity_errors() == [], where
        assert _duplicates(store) == {}, where

        rerun = _refresh(corpus)
        _, errs = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, f"{where}: re-run failed\n{errs.decode()}"
        assert store.integrity_errors() == [], where
        assert _duplicates(store) == {}, where
        with store.read() as conn:
            missing = conn.execute(
                "SELECT m.path FROM modules m WHERE m.status = 'indexed' AND NOT EXISTS "
                "(SELECT 1 FROM notes n WHERE n.path = m.path AND n.blob_sha = m.blob_sha "
                "AND n.backend = 'static')"
            ).fetchall()
            assert [r[0] for r in missing] == [], where
            stored = dict(conn.execute("SELECT path, blob_sha FROM modules").fetchall())
        sample = [f.relative_to(corpus).as_posix() for f in rng.sample(files, 5)]
        on_disk = git(corpus, "hash-object", *sample).split()
        assert [stored[p] for p in sample] == on_disk, where

    print(f"\n{KILLS} kills ({killed_mid_run} mid-run), cold refresh {cold:.2f}s, all survived")
    assert killed_mid_run >= KILLS // 2
