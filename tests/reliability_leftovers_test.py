"""Crash hygiene: what a ``kill -9`` leaves behind is cleared by the next command.

* budget reservations of the killed process are released at once, and each call it had in
  flight becomes a ledger row of reason ``unknown`` at its reserved estimate, which
  ``status`` counts in spending (with or without a daily limit);
* reservations of live processes are kept;
* the temporary database (and journal) of a store creation cut short is deleted, while the
  live ``index.db`` and its WAL are never touched, even with the store open elsewhere.

The model calls go through the real SDK to ``FakeAnthropic``, whose replies are held so the
calls are in flight when the refresh is killed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic

from helpers import CLI, EXE, trusted_config

CONCURRENCY = 2


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    yield server
    server.close()


def _configure(repo: Path, fake: FakeAnthropic, daily_tokens: int) -> None:
    lines = [
        "[anthropic]",
        f'base_url = "{fake.url}"',
        "max_retries = 1",
        "timeout = 120.0",
        f"concurrency = {CONCURRENCY}",
    ]
    if daily_tokens:
        lines += ["[budget]", f"daily_tokens = {daily_tokens}"]
    trusted_config(repo, "\n".join(lines) + "\n")


def _rows(repo: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(repo / ".sleepy" / "index.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, args)]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _kill_with_calls_in_flight(repo: Path, fake: FakeAnthropic) -> list[str]:
    """Start a model refresh, kill -9 it once ``CONCURRENCY`` calls wait for their reply;
    the modules of the calls in flight."""
    assert EXE
    fake.delay = 60.0  # no reply before the kill
    proc = subprocess.Popen(
        [EXE, "refresh", "--backend", "anthropic", "--repo", str(repo)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while fake.in_flight < CONCURRENCY:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the calls never started"
        time.sleep(0.02)
    time.sleep(0.2)  # nothing else is sent meanwhile: the workers are all busy
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    modules = [r.module for r in fake.message_requests]
    assert len(modules) == CONCURRENCY and all(modules)
    return [m for m in modules if m]


@pytest.mark.parametrize("daily_tokens", [0, 60_000], ids=["no-limit", "daily-limit"])
def test_a_kill_9_releases_its_reservations_and_records_its_calls_as_unknown(
    make_repo, cli: CLI, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, daily_tokens: int
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
    repo = make_repo("shop")
    _configure(repo, fake, daily_tokens)
    plan = cli.json("refresh", "--backend", "anthropic", "--dry-run", repo=repo)["dry_run"]
    estimate = {m["path"]: m for m in plan["modules"]}

    from sleepy_repo import procs  # (imported here: the old code had no such module)

    in_flight = _kill_with_calls_in_flight(repo, fake)
    left = _rows(repo, "SELECT 1 FROM reservations")  # the killed run's; none must survive
    assert len(left) == CONCURRENCY  # every call in flight was reserved, limit or not
    # another process is alive and holds budget for a call of its own: that stays held
    with sqlite3.connect(repo / ".sleepy" / "index.db") as conn:
        conn.execute(
            "INSERT INTO reservations(ts, expires, owner, tokens, cost_usd, pid, process, "
            "backend, model, path, reason, input_tokens, output_tokens) "
            "VALUES (?, ?, 'live', 1000, 0.01, ?, ?, 'anthropic', 'm', 'x.py', 'notes', 800, 200)",
            (time.time(), time.time() + 3600, os.getpid(), procs.identity()),
        )

    status = cli.json("status", repo=repo)

    held = _rows(repo, "SELECT owner FROM reservations")
    assert held == [{"owner": "live"}]  # the dead process holds nothing, the live one holds
    assert status["budget"]["reservations"] == 1 and status["budget"]["held_tokens"] == 1000
    unknown = _rows(repo, "SELECT * FROM ledger WHERE reason = 'unknown' ORDER BY path")
    assert sorted(r["path"] for r in unknown) == sorted(in_flight)
    tokens = usd = 0.0
    for row in unknown:
        est = estimate[row["path"]]
        assert row["input_tokens"] == est["input_tokens"]
        assert row["output_tokens"] == est["max_output_tokens"]
        assert row["cost_usd"] == pytest.approx(est["cost_usd"], abs=1e-5)
        assert row["backend"] == "anthropic" and json.loads(row["detail"])["call"] == "notes"
        tokens += est["tokens"]
        usd += est["cost_usd"]
    spent = status["spent"]
    assert spent["calls"] == CONCURRENCY  # no call finished: spending is the estimates
    assert spent["input_tokens"] + spent["output_tokens"] == tokens
    assert spent["cost_usd"] == pytest.approx(usd, abs=1e-5)
    assert spent["unknown"] == {
        "calls": CONCURRENCY,
        "tokens": tokens,
        "cost_usd": spent["cost_usd"],
    }
    assert status["budget"]["today_tokens"] == tokens
    text = cli.run("status", repo=repo).stdout
    assert f"{CONCURRENCY} calls of unknown outcome" in text

    # recorded once: later commands find nothing more to record
    cli.json("status", repo=repo)
    assert len(_rows(repo, "SELECT id FROM ledger WHERE reason = 'unknown'")) == CONCURRENCY

    # the next refresh re-runs the killed modules (they stayed queued) under the same budget
    fake.delay = 0.0
    again = cli.json("refresh", "--backend", "anthropic", repo=repo)
    assert again["model"]["stopped"] is None
    assert again["notes"]["anthropic"]["written"] == len(estimate)
    assert _rows(repo, "SELECT owner FROM reservations") == [{"owner": "live"}]


def test_a_dead_pid_reused_by_a_live_process_does_not_hold_budget(make_repo, cli: CLI) -> None:
    """A reservation names its process by pid and start time: a live process that got the
    pid later does not keep it alive."""
    from sleepy_repo import procs

    repo = make_repo("shop")
    cli.json("refresh", repo=repo)
    boot = procs.boot_id()
    if not boot:
        pytest.skip("no /proc: liveness is judged by pid alone")
    with sqlite3.connect(repo / ".sleepy" / "index.db") as conn:
        for owner, process in (("reused", f"{boot}/1"), ("rebooted", "another-boot/5")):
            conn.execute(
                "INSERT INTO reservations(ts, expires, owner, tokens, cost_usd, pid, process, "
                "backend, model, path, reason, input_tokens, output_tokens) "
                "VALUES (?, ?, ?, 700, 0.02, ?, ?, 'anthropic', 'm', 'a.py', 'ask', 500, 200)",
                (time.time(), time.time() + 3600, owner, os.getpid(), process),
            )
    status = cli.json("status", repo=repo)
    assert status["budget"]["reservations"] == 0
    assert status["spent"]["unknown"]["calls"] == 2
    assert status["spent"]["unknown"]["tokens"] == 1400


# a second process holds the store open (WAL and shm in use), then writes again on cue
HOLDER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("INSERT INTO meta(key, value) VALUES ('held-1', '1')")
    print("ready", flush=True)
    sys.stdin.readline()
    conn.execute("INSERT INTO meta(key, value) VALUES ('held-2', '2')")
    n = conn.execute("SELECT count(*) FROM meta WHERE key LIKE 'held-%'").fetchone()[0]
    print(n, flush=True)
    """
)


def _temp_db(path: Path) -> None:
    """A half-made temporary store with its rollback journal, as a kill mid-create leaves."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    path.with_name(path.name + "-journal").write_bytes(b"\0" * 512)


def test_temp_files_of_a_killed_create_go_and_the_open_store_is_untouched(
    make_repo, cli: CLI
) -> None:
    repo = make_repo("shop")
    before = cli.json("refresh", repo=repo)
    d = repo / ".sleepy"
    dead = d / f".index-{_dead_pid()}-k2j4x9q1.tmp"  # its creator was killed
    old = d / ".index-a8f_3kzq.tmp"  # named as before schema 13: stale by its age
    live = d / f".index-{os.getpid()}-zz00yy11.tmp"  # a create in progress: kept
    for tmp in (dead, old, live):
        _temp_db(tmp)
    hour_ago = time.time() - 3600
    for f in (old, old.with_name(old.name + "-journal")):
        os.utime(f, (hour_ago, hour_ago))

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(d / "index.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout and holder.stdin
        assert holder.stdout.readline().strip() == "ready"
        sides = [d / "index.db-wal", d / "index.db-shm"]
        assert all(p.exists() for p in sides)

        status = cli.json("status", repo=repo)

        leftovers = sorted(p.name for p in d.glob(".index-*"))
        assert leftovers == sorted([live.name, live.name + "-journal"])
        assert all(p.exists() for p in [d / "index.db", *sides])
        assert status["modules"]["indexed"] == before["modules"]
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "2"  # its connection still works
    finally:
        holder.kill()
        holder.wait()
    rows = _rows(repo, "SELECT key FROM meta WHERE key LIKE 'held-%' ORDER BY key")
    assert [r["key"] for r in rows] == ["held-1", "held-2"]  # nothing it wrote was lost
    assert cli.json("status", repo=repo)["modules"]["indexed"] == before["modules"]


def test_temp_mirror_files_of_a_killed_hook_go(make_repo, cli: CLI) -> None:
    """A hook killed while it writes a mirror leaves ``.mirror-*.tmp`` in
    ``.sleepy/notes`` (untracked files in ``git status``); the next hook run removes those
    of dead writers, and keeps a live writer's."""
    repo = make_repo("shop")
    trusted_config(repo, "[notes]\ncommit = true\n")
    cli.run("hook", "pre-commit", "--all", "--json", cwd=repo)
    notes = repo / ".sleepy" / "notes" / "shop"
    assert (notes / "cart.py.md").exists()
    dead = notes / f".mirror-{_dead_pid()}-k2j4x9q1.tmp"  # its writer was killed
    old = notes / ".mirror-a8f_3kzq.tmp"  # named as before: stale by its age
    live = notes / f".mirror-{os.getpid()}-zz00yy11.tmp"  # a write in progress: kept
    for tmp in (dead, old, live):
        tmp.write_text("half a mirror", encoding="utf-8")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))

    cli.run("hook", "pre-commit", "--all", "--json", cwd=repo)

    assert sorted(p.name for p in notes.glob(".mirror-*")) == [live.name]
    assert (notes / "cart.py.md").exists()
