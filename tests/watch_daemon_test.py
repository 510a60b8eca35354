"""``sleepy-repo watch`` as a user runs it: a real daemon process on a real git repo, real
file-system events, the ``fake`` backend as the model, and the ledger as the witness of
every model call."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import CLI, EXE, git, trusted_config

IDLE = 0.6


def _config(root: Path, extra: str = "") -> None:
    (root / ".sleepy").mkdir(exist_ok=True)
    trusted_config(
        root,
        f'[notes]\nbackend = "fake"\n[sleep]\nidle_seconds = {IDLE}\ndebounce_seconds = 0.2\n'
        + extra,
    )


def _db(root: Path) -> sqlite3.Connection:
    return closing(sqlite3.connect(root / ".sleepy" / "index.db", timeout=30))  # type: ignore[return-value]


def _q(root: Path, sql: str, *args: Any) -> Any:
    with _db(root) as conn:  # type: ignore[attr-defined]
        return conn.execute(sql, args).fetchone()[0]


def _rows(root: Path, sql: str) -> list[Any]:
    with _db(root) as conn:  # type: ignore[attr-defined]
        return conn.execute(sql).fetchall()


def _calls(root: Path) -> int:
    return _q(root, "SELECT count(*) FROM ledger WHERE backend = 'fake'")


def _settled(root: Path) -> bool:
    """Every indexed module has fake notes for its current blob, and nothing is queued."""
    missing = _q(
        root,
        "SELECT count(*) FROM modules m WHERE m.status = 'indexed' AND NOT EXISTS ("
        "SELECT 1 FROM notes n WHERE n.path = m.path AND n.blob_sha = m.blob_sha "
        "AND n.backend = 'fake' AND n.origin = 'written')",
    )
    queued = _q(root, "SELECT count(*) FROM jobs WHERE status = 'queued' AND backend = 'fake'")
    return missing == 0 and queued == 0


def _wait(cond: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or cond}")


def _head_blob(root: Path, path: str) -> str:
    return git(root, "hash-object", path).strip()


def _indexed_blob(root: Path, path: str) -> str | None:
    with _db(root) as conn:  # type: ignore[attr-defined]
        row = conn.execute("SELECT blob_sha FROM modules WHERE path = ?", (path,)).fetchone()
    return row[0] if row else None


@contextmanager
def daemon(root: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    log = root.parent / f"watch-{time.monotonic_ns()}.log"
    fh = open(log, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [EXE, "watch", "--repo", str(root), *extra],
        stdout=subprocess.DEVNULL,
        stderr=fh,
        env={**os.environ, **(env or {})},
    )
    proc.log = log  # type: ignore[attr-defined]
    try:
        _wait(lambda: "watching" in log.read_text() or proc.poll() is not None, 60, "the watcher")
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        fh.close()


@pytest.fixture
def shop(make_repo: Callable[..., Path], cli: CLI) -> Path:
    root = make_repo("shop")
    _config(root)
    cli.run("refresh", "--backend", "static", repo=root)
    return root


def test_edits_and_branch_switches(shop: Path) -> None:
    root = shop
    with daemon(root):
        _wait(lambda: _settled(root), 60, "model notes on main")
        main_calls = _calls(root)
        assert main_calls >= 15

        # edit, create, delete, rename: static notes at once, model notes when idle
        cart = root / "shop" / "cart.py"
        cart.write_text(cart.read_text() + "\n\ndef loyalty_bonus(total):\n    return total\n")
        (root / "shop" / "wishlist.py").write_text(
            '"""Wish lists."""\n\ndef wish(x):\n    return x\n'
        )
        (root / "shop" / "giftcards.py").unlink()
        os.rename(root / "shop" / "inventory.py", root / "shop" / "stock.py")
        _wait(
            lambda: (
                _indexed_blob(root, "shop/cart.py") == _head_blob(root, "shop/cart.py")
                and _indexed_blob(root, "shop/wishlist.py") is not None
                and _indexed_blob(root, "shop/giftcards.py") is None
                and _indexed_blob(root, "shop/stock.py") is not None
                and _indexed_blob(root, "shop/inventory.py") is None
            ),
            30,
            "the index to follow the edits",
        )
        _wait(lambda: _settled(root), 60, "model notes after the edits")
        # cart (changed) and wishlist (new) needed the model; stock.py is inventory.py's
        # blob under a new name, whose notes are keyed by blob... but by path too
        after_edits = _calls(root)
        with _db(root) as conn:  # type: ignore[attr-defined]
            paths = sorted(r[0] for r in conn.execute("SELECT path FROM ledger ORDER BY id"))[
                main_calls:
            ]
        called = sorted(
            r[0]
            for r in _rows(root, "SELECT path FROM ledger WHERE backend = 'fake' ORDER BY id")[
                main_calls:
            ]
        )
        assert called == ["shop/cart.py", "shop/stock.py", "shop/wishlist.py"], paths
        git(root, "checkout", "-q", "--", ".")
        git(root, "clean", "-qfd", "shop")
        _wait(lambda: _settled(root), 60, "restored tree")
        restored = _calls(root)

        # first visit to the branch: its changed modules get notes
        git(root, "checkout", "-q", "feature/gift-cards")
        _wait(
            lambda: (
                _indexed_blob(root, "shop/giftcards.py") == _head_blob(root, "shop/giftcards.py")
            ),
            30,
            "the branch's files",
        )
        _wait(lambda: _settled(root), 60, "notes on the branch")
        branch_calls = _calls(root)

        # back and forth again: zero backend calls
        for ref in ("main", "feature/gift-cards", "main"):
            git(root, "checkout", "-q", ref)
            _wait(
                lambda: _indexed_blob(root, "shop/cart.py") == _head_blob(root, "shop/cart.py"),
                30,
                f"checkout of {ref}",
            )
            time.sleep(IDLE + 1)  # the sleeper had time to act
            _wait(lambda: _settled(root), 60, f"settled on {ref}")
            assert _calls(root) == branch_calls, f"a second visit to {ref} called the model"

        # ... while a file changed since does get one call
        tax = root / "shop" / "tax.py"
        tax.write_text(tax.read_text() + "\n# a comment\n")
        _wait(lambda: _calls(root) == branch_calls + 1, 60, "one call for the changed file")
        time.sleep(IDLE + 1)
        assert _calls(root) == branch_calls + 1
    assert restored >= after_edits


def test_second_daemon_refuses(shop: Path, cli: CLI) -> None:
    with daemon(shop) as first:
        proc = cli.run("watch", repo=shop, check=False, timeout=60)
        assert proc.returncode == 2
        assert "another sleeper" in proc.stderr and str(first.pid) in proc.stderr
        # the CLI is not blocked by the sleeper's lock
        assert cli.json("status", repo=shop)["sleeper"]["running"] is True


def test_status_shows_the_queue_with_reasons(shop: Path, cli: CLI) -> None:
    _config(shop, "[budget]\ndaily_tokens = 1\n")  # nothing can be spent
    with daemon(shop):
        _wait(
            lambda: (cli.json("status", repo=shop)["sleeper"]["state"] or "").startswith("stopped"),
            60,
            "the budget stop",
        )
        status = cli.json("status", repo=shop)
    assert "budget" in status["sleeper"]["state"] or "budget" in json.dumps(status["queue"])
    q = status["queue"]
    assert len(q) >= 15
    assert q == sorted(q, key=lambda j: -j["score"])
    assert set(q[0]["reasons"]) >= {"recency", "churn", "centrality", "open", "hits"}
    text = cli.run("status", repo=shop).stdout
    assert "queue" in text.lower()


def test_kill_9_mid_job_loses_nothing(shop: Path) -> None:
    env = {"SLEEPY_REPO_FAKE_DELAY": "0.4"}
    for _ in range(3):
        with daemon(shop, env=env) as proc:
            _wait(
                lambda: (
                    _q(
                        shop,
                        "SELECT count(*) FROM meta WHERE key = 'sleeper' AND value LIKE "
                        "'%writing notes%'",
                    )
                    == 1
                ),
                30,
                "a job in flight",
            )
            time.sleep(0.2)
            proc.kill()  # SIGKILL mid-call
            proc.wait(10)
        with _db(shop) as conn:  # type: ignore[attr-defined]
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with daemon(shop, env={"SLEEPY_REPO_FAKE_DELAY": "0"}):
        _wait(lambda: _settled(shop), 90, "the queue to drain after the kills")
    dup = _q(
        shop,
        "SELECT count(*) FROM (SELECT path, blob_sha, count(*) c FROM notes WHERE "
        "backend = 'fake' GROUP BY path, blob_sha HAVING c > 1)",
    )
    assert dup == 0


def test_polling_mode(shop: Path) -> None:
    _config(shop, "poll_seconds = 0.3\n")
    with daemon(shop, "--poll") as proc:
        assert "polling" in proc.log.read_text()
        cart = shop / "shop" / "cart.py"
        cart.write_text(cart.read_text() + "\n# polled\n")
        _wait(
            lambda: _indexed_blob(shop, "shop/cart.py") == _head_blob(shop, "shop/cart.py"),
            30,
            "a polled change",
        )


def test_a_deep_sleeper_writes_the_repo_overview_once(shop: Path, cli: CLI) -> None:
    def overviews() -> int:
        return _q(shop, "SELECT count(*) FROM ledger WHERE reason = 'overview'")

    with daemon(shop, "--effort", "deep"):
        _wait(lambda: overviews() == 1, 90, "the overview after every module's notes")
        # the modules' notes came first: no module was left when the overview was written
        assert _settled(shop)
        time.sleep(3 * IDLE)  # idle ticks with nothing changed: no second call
        assert overviews() == 1
    notes = cli.json("notes", ".", repo=shop)["notes"]
    assert notes[0]["backend"] == "fake" and notes[0]["items"]
