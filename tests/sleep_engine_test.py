"""The sleep engine in process: planner, idle scheduler (an injectable clock, never real
sleeps), pausing, the sleeper lock, the watcher's batching and its polling fallback,
dependency propagation, payoff accounting and the store size limit. Real git repos built
from ``fixtures/repos/``; the ``fake`` backend stands in for a model."""

from __future__ import annotations

import errno
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sleepy_repo import activity, api, daemon, planner
from sleepy_repo.config import SleepConfig
from sleepy_repo.errors import ModelCancelledError
from sleepy_repo.models.base import NoteRequest
from sleepy_repo.models.fake import FakeBackend
from sleepy_repo.notes import NoteDraft
from sleepy_repo.scheduler import Scheduler, SleeperBusyError, SleeperLock, SleepThread
from sleepy_repo.watch import Batch, Watcher

from helpers import git, trusted_config


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _config(root: Path, text: str) -> None:
    (root / ".sleepy").mkdir(exist_ok=True)
    trusted_config(root, text)


@pytest.fixture
def shop(make_repo: Callable[..., Path]) -> api.Repo:
    root = make_repo("shop")
    _config(root, '[notes]\nbackend = "fake"\n[sleep]\nidle_seconds = 30\n')
    repo = api.open_repo(root)
    api.refresh(repo, backend="static")
    return repo


def _scheduler(repo: api.Repo, clock: Clock, backend: Any = None) -> Scheduler:
    return Scheduler(
        repo.root, repo.is_git, repo.store, repo.config, backend or FakeBackend(), clock=clock
    )


def _ledger_calls(repo: api.Repo) -> int:
    with repo.store.read() as conn:
        return conn.execute("SELECT count(*) FROM ledger WHERE backend = 'fake'").fetchone()[0]


def _queued(repo: api.Repo) -> dict[str, dict[str, Any]]:
    with repo.store.read() as conn:
        return {
            r["path"]: dict(r)
            for r in conn.execute("SELECT * FROM jobs WHERE status = 'queued'").fetchall()
        }


# -- planner --------------------------------------------------------------------------------
def test_pagerank_favours_what_many_import() -> None:
    ranks = planner.pagerank("abcd", [("a", "d"), ("b", "d"), ("c", "d"), ("d", "a")])
    assert ranks["d"] == 1.0
    assert ranks["a"] > ranks["b"] == ranks["c"]


def test_planner_signals_and_reasons(shop: api.Repo) -> None:
    clock = Clock()
    base = {s.path: s for s in planner.rank(shop.root, shop.store, SleepConfig(), now=clock())}
    assert set(base) >= {"shop/cart.py", "shop/money.py"}
    money = base["shop/money.py"]
    assert money.reasons["centrality"] > base["shop/api.py"].reasons["centrality"]
    assert all(0 <= v <= 2 for s in base.values() for v in s.reasons.values())
    assert "centrality" in money.explain()

    # an editor opens tax.py: it (and, less, its imports) move up
    rec = activity.Recorder(shop.store, activity.source_name("lsp"), clock=clock)
    rec.opened("shop/tax.py")
    opened = {s.path: s for s in planner.rank(shop.root, shop.store, SleepConfig(), now=clock())}
    assert opened["shop/tax.py"].reasons["open"] == 2.0
    assert opened["shop/tax.py"].score == pytest.approx(base["shop/tax.py"].score + 2.0)
    assert 0 < opened["shop/models.py"].reasons["open"] < 2.0
    rec.forget()

    # questions answered by inventory.py make it likelier
    api.get_context(shop, "how is stock reserved in the inventory?", 400)
    hit = {s.path: s for s in planner.rank(shop.root, shop.store, SleepConfig(), now=clock())}
    assert hit["shop/inventory.py"].reasons["hits"] > 0
    assert hit["shop/inventory.py"].score > base["shop/inventory.py"].score

    # weights are configurable: only churn counts
    only_churn = SleepConfig(
        weight_recency=0, weight_centrality=0, weight_open=0, weight_hits=0, weight_churn=1
    )
    ranked = planner.rank(shop.root, shop.store, only_churn, now=clock())
    touches = planner.git_history(shop.root, 200).touches
    assert ranked[0].path == max(
        (s.path for s in ranked), key=lambda p: (touches.get(p, 0), p == ranked[0].path)
    )


def test_uncommitted_change_is_most_recent(shop: api.Repo) -> None:
    (shop.root / "shop" / "storage.py").write_text(
        (shop.root / "shop" / "storage.py").read_text() + "\n# edited\n"
    )
    ranked = {s.path: s for s in planner.rank(shop.root, shop.store, SleepConfig())}
    assert ranked["shop/storage.py"].reasons["recency"] == 1.0


# -- scheduler: idle, order, pause ----------------------------------------------------------
def test_model_work_runs_only_when_idle(shop: api.Repo) -> None:
    clock = Clock()
    rec = api.activity_recorder(shop, "lsp", clock=clock)
    rec.touch("change", "shop/cart.py")
    sch = _scheduler(shop, clock)
    queue = sch.plan()
    assert len(queue) == len(_queued(shop)) >= 15
    assert [s.path for s in queue] == sorted(
        (s.path for s in queue), key=lambda p: (-_queued(shop)[p]["priority"], p)
    )

    clock.t += 29
    assert sch.step().state == "busy"
    assert _ledger_calls(shop) == 0
    clock.t += 2
    first = sch.step()
    assert first.state == "ran" and first.path == queue[0].path and first.written == 1
    assert _ledger_calls(shop) == 1
    assert queue[0].path not in _queued(shop)

    # hovers and queries are not activity: still idle
    api.get_context(shop, "coupon discount", 300)
    assert sch.step().state == "ran"
    # the developer types again: the next job waits
    rec.touch("change", "shop/cart.py")
    assert sch.step().state == "busy"
    assert _ledger_calls(shop) == 2


def test_activity_from_another_process_counts(shop: api.Repo) -> None:
    clock = Clock()
    sch = _scheduler(shop, clock)
    assert sch.is_idle()  # nothing ever recorded
    with shop.store.write() as conn:  # a language server that is still running
        conn.execute(
            "INSERT INTO activity(source, ts, kind, path) VALUES (?, ?, 'save', 'x.py')",
            (f"lsp:{__import__('os').getppid()}", clock.t - 5),
        )
    assert not sch.is_idle()
    with shop.store.write() as conn:  # ... one whose process is gone does not count
        conn.execute("UPDATE activity SET source = 'lsp:999999999'")
    assert sch.is_idle()


class Cancellable(FakeBackend):
    """A fake local model: generation checks ``cancel_check`` between chunks."""

    def __init__(self, on_call: Callable[[], None]) -> None:
        super().__init__(handler=self._generate)
        self.cancel_check: Callable[[], bool] | None = None
        self.on_call = on_call
        self.cancelled = 0

    def _generate(self, request: NoteRequest) -> NoteDraft:
        self.on_call()
        if self.cancel_check is not None and self.cancel_check():
            self.cancelled += 1
            raise ModelCancelledError("cancelled between chunks")
        self.handler = None
        try:
            return FakeBackend.write_notes(self, request)
        finally:
            self.handler = self._generate


def test_activity_during_a_local_job_cancels_and_requeues_it(shop: api.Repo) -> None:
    clock = Clock()
    rec = api.activity_recorder(shop, "lsp", clock=clock)
    typing = {"now": True}

    def developer_returns() -> None:
        if typing["now"]:
            rec.touch("change", "shop/cart.py")

    backend = Cancellable(developer_returns)
    sch = _scheduler(shop, clock, backend)
    sch.plan()
    before = len(_queued(shop))
    result = sch.step()
    assert result.state == "paused" and backend.cancelled == 1
    assert len(_queued(shop)) == before  # kept for later
    with shop.store.read() as conn:
        assert conn.execute("SELECT count(*) FROM notes WHERE backend = 'fake'").fetchone()[0] == 0
        state = shop.store.get_meta(conn, "sleeper")
    assert state["state"].startswith("paused")
    assert sch.step().state == "busy"
    typing["now"] = False
    clock.t += 31
    assert sch.step().state == "ran"
    assert len(_queued(shop)) == before - 1


def test_an_api_call_in_flight_finishes_and_the_next_waits(shop: api.Repo) -> None:
    clock = Clock()
    rec = api.activity_recorder(shop, "lsp", clock=clock)

    def handler(request: NoteRequest) -> NoteDraft:
        rec.touch("save", "shop/cart.py")  # the developer comes back mid-call
        backend.handler = None
        try:
            return FakeBackend.write_notes(backend, request)
        finally:
            backend.handler = handler

    backend = FakeBackend(handler=handler)  # no cancel_check: an API call cannot stop
    sch = _scheduler(shop, clock, backend)
    thread = SleepThread(sch, tick=0)
    assert thread.run_once().state == "ran"  # kept
    assert thread.run_once().state == "busy"
    with shop.store.read() as conn:
        assert conn.execute("SELECT count(*) FROM notes WHERE backend = 'fake'").fetchone()[0] == 1


def test_budget_is_spent_top_down_and_status_says_why(shop: api.Repo) -> None:
    text = (shop.root / ".sleepy" / "config.toml").read_text()
    _config(shop.root, text + "[budget]\ndaily_tokens = 1500\n")
    repo = api.open_repo(shop.root)
    sch = _scheduler(repo, Clock())
    queue = sch.plan()
    ran = []
    while (r := sch.step()).state == "ran":
        ran.append(r.path)
    assert r.state == "budget" and "budget" in r.detail
    assert ran == [s.path for s in queue[: len(ran)]]  # in the planner's order
    assert 0 < len(ran) < len(queue)
    status = api.status(repo)
    assert [q["path"] for q in status["queue"]] == [s.path for s in queue[len(ran) :]][:50]
    assert status["queue"][0]["reasons"] and "score" in status["queue"][0]


def test_sleeper_lock_one_per_repo(shop: api.Repo) -> None:
    a = SleeperLock(shop.config.store_dir(shop.root))
    a.acquire()
    b = SleeperLock(shop.config.store_dir(shop.root))
    with pytest.raises(SleeperBusyError, match="another sleeper"):
        b.acquire()
    # the CLI and hooks are not blocked by it
    assert api.get_context(shop, "tax", 200).items
    a.release()
    b.acquire()
    b.release()


def test_kill_between_jobs_loses_nothing(shop: api.Repo) -> None:
    """A job row outlives a crash: a new scheduler runs it, with no duplicate notes."""
    sch = _scheduler(shop, Clock())
    sch.plan()
    sch.step()
    left = set(_queued(shop))
    sch2 = _scheduler(shop, Clock())  # "restart": planning again changes nothing
    sch2.plan()
    assert set(_queued(shop)) == left
    while sch2.step().state == "ran":
        pass
    with shop.store.read() as conn:
        dup = conn.execute(
            "SELECT count(*) FROM (SELECT path, blob_sha, count(*) c FROM notes "
            "WHERE backend = 'fake' GROUP BY path, blob_sha HAVING c > 1)"
        ).fetchone()[0]
        n = conn.execute("SELECT count(*) FROM notes WHERE backend = 'fake'").fetchone()[0]
    assert dup == 0 and n == len(left) + 1 and not _queued(shop)


# -- dependency propagation -----------------------------------------------------------------
def test_changed_signature_queues_importers_lower(shop: api.Repo) -> None:
    clock = Clock()
    sch = _scheduler(shop, clock)
    sch.plan()
    while sch.step().state == "ran":
        pass
    assert not _queued(shop)
    clock.t = time.time() + 3600  # idle again after the watcher's activity mark below
    money = shop.root / "shop" / "money.py"
    text = money.read_text()
    m = re.search(r"^def (\w+)\(([^)]*)\)", text, re.M)
    assert m, "money.py has a top-level function"
    money.write_text(text.replace(m.group(0), f"def {m.group(1)}({m.group(2)}, *, extra=None)", 1))
    stats = daemon.WatchStats()
    rec = api.activity_recorder(shop, "watch")
    sleeper = daemon.Sleeper(SleeperLock(shop.config.store_dir(shop.root)), sch, SleepThread(sch))
    daemon.handle_batch(shop, Batch({"shop/money.py"}, events=1), rec, sleeper, stats)
    importers = daemon.importers(shop, ["shop/money.py"])
    assert stats.dependency_changed == importers and "shop/tax.py" in importers
    queue = sch.plan()
    reasons = {p: q["reason"] for p, q in _queued(shop).items()}
    assert reasons["shop/money.py"] == "notes"  # its own content changed
    for p in importers:
        assert reasons[p] == "dependency changed"
    scored = {s.path: s for s in queue}
    assert all(scored[p].reasons["dependency_changed"] < 0 for p in importers)
    # re-noted although their blobs did not change
    calls = _ledger_calls(shop)
    while sch.step().state == "ran":
        pass
    assert _ledger_calls(shop) == calls + len(importers) + 1
    assert not _queued(shop)


# -- payoff and store limit -----------------------------------------------------------------
def test_payoff_counts_hits_and_lists_notes_that_never_paid_off(shop: api.Repo) -> None:
    api.refresh(shop, backend="fake")
    api.get_context(shop, "how is VAT computed for a country?", 400)
    status = api.status(shop)
    assert status["payoff"]["hits"] > 0 and status["payoff"]["tokens_saved"] > 0
    top = {t["path"] for t in status["payoff"]["top"]}
    assert "shop/tax.py" in top
    _config(shop.root, '[notes]\nbackend = "fake"\n[sleep]\npayoff_after_days = 0\n')
    repo = api.open_repo(shop.root)
    never = set(api.status(repo)["payoff"]["never_paid_off"])
    assert never and "shop/tax.py" not in never
    ranked = {s.path: s for s in planner.rank(repo.root, repo.store, repo.config.sleep)}
    some = sorted(never)[0]
    assert ranked[some].reasons["never_paid_off"] < 0


def test_gc_enforces_the_store_size_limit(shop: api.Repo) -> None:
    api.refresh(shop, backend="fake")
    _config(shop.root, '[notes]\nbackend = "fake"\n[sleep]\nstore_limit_mb = 0.5\n')
    repo = api.open_repo(shop.root)
    size = api._store_bytes(repo.store)
    assert size > 512 * 1024, "the fixture store should start over the 0.5 MB limit"
    with repo.store.read() as conn:
        static = conn.execute("SELECT count(*) FROM notes WHERE backend = 'static'").fetchone()[0]
    result = api.enforce_store_limit(repo)
    assert result is not None and result["notes_removed_over_limit"] > 0
    with repo.store.read() as conn:
        after = conn.execute("SELECT count(*) FROM notes WHERE backend = 'static'").fetchone()[0]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert after == static  # static notes of current blobs stay


# -- watcher --------------------------------------------------------------------------------
def test_watcher_batches_a_burst_and_ignores_internals(shop: api.Repo) -> None:
    with Watcher(shop.root, debounce=0.3) as w:
        assert w.mode == "events"
        (shop.root / "gen").mkdir()
        for i in range(1000):
            (shop.root / "gen" / f"m{i}.py").write_text(f"X = {i}\n")
        (shop.root / ".sleepy" / "junk").write_text("x")
        (shop.root / "ignored.log").write_text("x")
        (shop.root / ".gitignore").write_text("*.log\n")
        batches = []
        while (b := w.next_batch(timeout=3)) is not None:
            batches.append(b)
    paths = set().union(*(b.paths for b in batches))
    assert {f"gen/m{i}.py" for i in range(1000)} <= paths
    assert not any(p.startswith(".sleepy") or p.startswith(".git/") for p in paths)
    assert "ignored.log" not in paths
    assert len(batches) <= 3, [len(b.paths) for b in batches]


def test_watcher_notices_branch_switches(shop: api.Repo) -> None:
    with Watcher(shop.root, debounce=0.2) as w:
        git(shop.root, "checkout", "-q", "feature/gift-cards")
        b = w.next_batch(timeout=5)
        assert b is not None
        while (more := w.next_batch(timeout=1)) is not None:
            b.merge(more)
    assert b.head_changed


def test_watch_limit_falls_back_to_polling(
    shop: api.Repo, caplog: pytest.LogCaptureFixture
) -> None:
    class Refusing:
        def schedule(self, *a: object, **k: object) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

        def start(self) -> None: ...

        def stop(self) -> None: ...

        def is_alive(self) -> bool:
            return False

    w = Watcher(shop.root, debounce=0.1, poll_seconds=0.2, observer_factory=Refusing)
    with caplog.at_level("WARNING"), w:
        assert w.mode == "polling"
        assert "max_user_watches" in (w.warning or "")
        (shop.root / "shop" / "cart.py").write_text("# changed\n")
        b = w.next_batch(timeout=5)
        assert b is not None and "shop/cart.py" in b.paths
        git(shop.root, "checkout", "-q", "-f", "feature/gift-cards")
        seen = Batch()
        while (more := w.next_batch(timeout=1.5)) is not None:
            seen.merge(more)
        assert seen.head_changed
    assert "polling" in caplog.text


def test_other_os_errors_are_not_hidden(shop: api.Repo) -> None:
    class Broken:
        def schedule(self, *a: object, **k: object) -> None:
            raise OSError(errno.EACCES, "permission denied")

        def stop(self) -> None: ...

        def is_alive(self) -> bool:
            return False

    with pytest.raises(OSError, match="permission denied"):
        Watcher(shop.root, observer_factory=Broken).start()


def test_daemon_runs_in_process_and_stops(shop: api.Repo) -> None:
    stop = threading.Event()
    ready = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        result["stats"] = daemon.watch(shop, stop=stop, on_ready=lambda s: ready.set())

    t = threading.Thread(target=run)
    t.start()
    try:
        assert ready.wait(30)
        with pytest.raises(SleeperBusyError):
            daemon.start_sleeper(api.open_repo(shop.root))
        (shop.root / "shop" / "tax.py").write_text(
            (shop.root / "shop" / "tax.py").read_text() + "\n\ndef surcharge(x):\n    return x\n"
        )
        for _ in range(100):
            with shop.store.read() as conn:
                got = conn.execute(
                    "SELECT count(*) FROM symbols WHERE path = 'shop/tax.py' AND name = 'surcharge'"
                ).fetchone()[0]
            if got:
                break
            threading.Event().wait(0.1)
        assert got == 1
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive() and result["stats"].batches >= 1
    status = api.status(shop)
    assert status["sleeper"]["running"] is False
    assert json.dumps(status)  # serialisable
