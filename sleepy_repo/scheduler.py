"""The sleep scheduler: model notes are written only while the developer is idle.

``Scheduler.plan`` queues every module that lacks notes of the configured model backend for
its current blob (durably, in the store's ``jobs`` table), scored by the planner; a module
queued because a dependency's exported signature changed gets a lower score. ``step`` runs
the best job when the repository has been idle for ``[sleep] idle_seconds`` (activity of
any process, see ``activity``), one module at a time, so new activity pauses the work
within one call: an in-flight API call finishes and its notes are kept; a backend that
generates locally is asked to cancel between chunks (its ``cancel_check``), and the job
stays queued. The daily budget is spent top-down: when it refuses the next job, the
sleeper stops and ``state`` says why.

``SleepThread`` runs steps in the background (in the ``watch`` daemon or the language
server). ``SleeperLock`` allows one sleeper per repository: a file lock next to the store,
separate from SQLite's locking, so hooks and the CLI never wait for it.

A kill -9 loses nothing: a job row stays until its notes are stored (in one transaction
with the job's deletion), so the next sleeper re-runs it, and notes are unique per key.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sleepy_repo import activity, planner
from sleepy_repo.budget import Budget
from sleepy_repo.config import Config
from sleepy_repo.errors import ModelCancelledError, ModelError, SleepyError
from sleepy_repo.models.base import Backend
from sleepy_repo.models.structured import model_for
from sleepy_repo.overview import LEDGER_PATH as OVERVIEW_PATH
from sleepy_repo.overview import write_overview
from sleepy_repo.redact import DenyList
from sleepy_repo.sleep import note_key, write_notes
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

LOCK_NAME = "sleeper.lock"
DEPENDENCY_REASON = "dependency changed"
STATE_KEY = "sleeper"  # meta row: what the sleeper is doing, for `status`
TUNE_CHECK_SECONDS = 600.0  # how often the sleeper asks git whether tuning is due
TUNE_RETRY_SECONDS = 3600.0  # after a failed fit
TUNE_IDLE_FACTOR = 5.0  # tuning starts after this many times [sleep] idle_seconds idle
TUNE_PAUSE_SECONDS = 900.0  # a fit stopped by the developer starts again no sooner
TUNE_POLL_SECONDS = 0.5  # how often a running fit's child is checked (activity, stop)
TUNE_STOP_SECONDS = 10.0  # a stopped fit's child gets this long to clean up before a kill
Clock = Callable[[], float]


class SleeperBusyError(SleepyError):
    pass


class SleeperLock:
    """One sleeper per repository (``flock`` on ``<store dir>/sleeper.lock``; the kernel
    releases it when the holder dies, even on kill -9)."""

    def __init__(self, store_dir: Path) -> None:
        self.path = store_dir / LOCK_NAME
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise SleeperBusyError(
                f"another sleeper (pid {holder}) already runs for this repository "
                f"(lock {self.path}); stop it first, or let it do the work"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.seek(0)
                self._fh.truncate()
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> SleeperLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class StepResult:
    state: str  # busy | empty | ran | paused | budget | no-backend
    path: str | None = None
    detail: str = ""
    written: int = 0


@dataclass
class Scheduler:
    root: Path
    is_git: bool
    store: NoteStore
    config: Config
    backend: Backend | None
    effort: str = "standard"
    clock: Clock = time.time
    history: planner.History | None = None  # fixed history (benchmarks); else read from git
    dependency_changed: set[str] = field(default_factory=set)
    _overview_seen: tuple[Any, ...] = ()  # notes/index state the overview last considered
    _tune_after: float = 0.0  # no tuning check before this time
    stop_requested: Callable[[], bool] = lambda: False  # the sleeper thread is stopping

    # -- idle --------------------------------------------------------------------------
    def idle_for(self) -> float:
        return activity.idle_for(self.store, self.clock)

    def is_idle(self) -> bool:
        return self.idle_for() >= self.config.sleep.idle_seconds

    # -- queue -------------------------------------------------------------------------
    def mark_dependency_changed(self, paths: Iterable[str]) -> None:
        """Modules whose notes may be outdated because an import's exported signatures
        changed: queued again (their notes re-written) at a lower priority."""
        self.dependency_changed |= set(paths)

    def plan(self) -> list[planner.Scored]:
        """Queue what lacks notes (current blobs), score the queue, drop outdated jobs."""
        if self.backend is None:
            return []
        backend = self.backend
        with self.store.read() as conn:
            rows = conn.execute(
                "SELECT path, blob_sha FROM modules WHERE status = 'indexed'"
            ).fetchall()
            current = {p: b for p, b in rows}
            todo: dict[str, str] = {}
            deny = DenyList(self.config.scan.deny)  # never sent: never queued
            for path, blob in rows:
                if deny.denied(path):
                    continue
                key = note_key(backend, path, blob, self.effort)
                if path in self.dependency_changed or not self.store.has_notes(
                    conn, key, written_only=True
                ):
                    todo[path] = DEPENDENCY_REASON if path in self.dependency_changed else "notes"
        scored = planner.rank(
            self.root,
            self.store,
            self.config.sleep,
            is_git=self.is_git,
            paths=todo,
            dependency_only={p for p, r in todo.items() if r == DEPENDENCY_REASON},
            history=self.history,
            now=self.clock(),
        )
        now = self.clock()
        with self.store.write() as conn:
            old = conn.execute(
                "SELECT id, path, blob_sha FROM jobs WHERE backend = ? AND status = 'queued'",
                (backend.name,),
            ).fetchall()
            gone = [(r[0],) for r in old if current.get(r[1]) != r[2]]
            conn.executemany("DELETE FROM jobs WHERE id = ?", gone)
            conn.executemany(
                "INSERT INTO jobs(path, blob_sha, backend, reason, priority, status, created_at, "
                "updated_at, reasons_json) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?) "
                "ON CONFLICT(path, blob_sha, backend) DO UPDATE SET "
                "priority = excluded.priority, reasons_json = excluded.reasons_json, "
                "reason = excluded.reason, updated_at = excluded.updated_at "
                "WHERE jobs.status = 'queued'",
                [
                    (
                        s.path,
                        current[s.path],
                        backend.name,
                        todo[s.path],
                        s.score,
                        now,
                        now,
                        json.dumps(s.reasons),
                    )
                    for s in scored
                ],
            )
        return scored

    def _next_job(self) -> tuple[str, str, str] | None:
        assert self.backend is not None
        with self.store.read() as conn:
            row = conn.execute(
                "SELECT j.path, j.blob_sha, j.reason FROM jobs j JOIN modules m "
                "ON m.path = j.path AND m.blob_sha = j.blob_sha AND m.status = 'indexed' "
                "WHERE j.backend = ? AND j.status = 'queued' "
                "ORDER BY j.priority DESC, j.path LIMIT 1",
                (self.backend.name,),
            ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    # -- work --------------------------------------------------------------------------
    def step(self) -> StepResult:
        """Run the best queued job if the repository is idle; with none queued, the repo
        overview (``deep`` effort), then the ranking's tuning when it is due."""
        if self.backend is None:
            return (self._tune() if self.is_idle() else None) or StepResult("no-backend")
        if not self.is_idle():
            self.set_state("waiting for idle")
            return StepResult("busy")
        job = self._next_job()
        if job is None:
            if self.effort == "deep":
                result = self._overview()
                if result.state != "empty":
                    return result
            tuned = self._tune()
            if tuned is not None:
                return tuned
            self.set_state("idle: nothing queued")
            return StepResult("empty")
        path, blob, reason = job
        backend = self.backend
        if hasattr(backend, "cancel_check"):
            backend.cancel_check = lambda: not self.is_idle()
        self.set_state(f"writing notes for {path}")
        report = write_notes(
            self.root,
            self.store,
            backend,
            effort=self.effort,
            paths=[path],
            force=[path] if reason == DEPENDENCY_REASON else (),
            budget=Budget(self.store, self.config.budget),
            deny=self.config.scan.deny,
        )
        if report.written:
            self.dependency_changed.discard(path)
        if report.stopped and report.stopped.startswith("cancelled"):
            self.set_state("paused: the developer is back")
            return StepResult("paused", path, report.stopped)
        if report.stopped:
            self.set_state(f"stopped: {report.stopped}")
            return StepResult("budget", path, report.stopped)
        if report.failed and not report.written:
            detail = report.failed[0][1]
            with self.store.write() as conn:  # let the next job go first
                conn.execute(
                    "UPDATE jobs SET priority = priority - 1 WHERE path = ? AND blob_sha = ? "
                    "AND backend = ? AND status = 'queued'",
                    (path, blob, backend.name),
                )
            return StepResult("ran", path, detail)
        return StepResult("ran", path, written=report.written)

    def _tune(self) -> StepResult | None:
        """Fit the ranking's weights on the repository's history if it is due (``[sleep]
        tune``, ``retune_commits``); None when there is nothing to do. The fit runs in a
        child process (``python -m sleepy_repo.tune``: minutes of Python work that must not
        hold the language server's interpreter), stopped as soon as the developer is back or
        the sleeper stops; it stores its run only when it finishes. A failed fit waits an
        hour."""
        from sleepy_repo import tune

        cfg = self.config.sleep
        if not (self.is_git and cfg.tune) or self.clock() < self._tune_after:
            return None
        if self.idle_for() < TUNE_IDLE_FACTOR * cfg.idle_seconds:
            return None  # minutes of work: only in a longer idle spell than notes need
        if not tune.due(self.root, self.store, cfg.retune_commits):
            self._tune_after = self.clock() + TUNE_CHECK_SECONDS
            return None
        self.set_state("tuning the ranking on the repository's history")
        # stderr to a file: a pipe could fill while nobody reads it
        with tempfile.TemporaryFile("w+") as errors:
            child = [sys.executable, "-m", "sleepy_repo.tune", str(self.root)]
            proc = subprocess.Popen(
                [*child, "--cases", str(tune.CASES)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            return self._tune_wait(proc, errors)

    def _tune_wait(self, proc: subprocess.Popen[bytes], errors: IO[str]) -> StepResult:
        while proc.poll() is None:
            if not self.is_idle() or self.stop_requested():
                proc.terminate()  # the child removes its worktree on SIGTERM
                try:
                    proc.wait(TUNE_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                self.set_state("paused: the developer is back")
                self._tune_after = self.clock() + TUNE_PAUSE_SECONDS  # not every idle spell
                return StepResult("paused", None, "tuning stopped: the developer is back")
            time.sleep(TUNE_POLL_SECONDS)
        errors.seek(0)
        err = errors.read().strip()
        if proc.returncode != 0:
            why = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
            log.warning("tuning failed: %s", why)
            self._tune_after = self.clock() + TUNE_RETRY_SECONDS
            return StepResult("ran", None, f"tuning failed: {why}")
        with self.store.read() as conn:
            run = self.store.latest_tuning(conn)
        reason = run["detail"].get("reason", "") if run else ""
        return StepResult("ran", None, f"tuning: {reason}")

    def _overview(self) -> StepResult:
        """With every module noted (``deep`` effort), the repo overview note, when the
        notes or the index changed since it was last considered."""
        assert self.backend is not None
        seen = self._notes_state()
        if seen == self._overview_seen:
            self.set_state("idle: nothing queued")
            return StepResult("empty")
        model = model_for(self.backend, self.config)
        if model is None:
            self._overview_seen = seen
            return StepResult("empty")
        if hasattr(self.backend, "cancel_check"):  # a local call stops when activity returns
            self.backend.cancel_check = lambda: not self.is_idle()
        self.set_state("writing the repo overview note")
        try:
            report = write_overview(self.root, self.store, model, self.config)
        except ModelCancelledError as exc:
            self.set_state("paused: the developer is back")
            return StepResult("paused", OVERVIEW_PATH, str(exc))
        except ModelError as exc:
            log.warning("the repo overview note failed: %s", exc)
            self._overview_seen = seen  # tried for this state; retried once it changes
            return StepResult("ran", OVERVIEW_PATH, str(exc))
        if report.refused:
            self.set_state(f"stopped: {report.refused}")
            return StepResult("budget", OVERVIEW_PATH, report.refused)
        self._overview_seen = self._notes_state()  # what the overview wrote counts as seen
        if not report.written:
            self.set_state("idle: nothing queued")
            return StepResult("empty")
        return StepResult("ran", OVERVIEW_PATH, written=report.written)

    def _notes_state(self) -> tuple[Any, ...]:
        """Changes when notes are written or the index changes (newest note, newest row)."""
        with self.store.read() as conn:
            return tuple(
                conn.execute(
                    "SELECT (SELECT coalesce(max(id), 0) FROM notes), "
                    "(SELECT coalesce(max(updated_at), 0) FROM modules)"
                ).fetchone()
            )

    def set_state(self, state: str) -> None:
        value = {"state": state, "pid": os.getpid(), "ts": self.clock()}
        try:
            with self.store.write() as conn:
                self.store.set_meta(conn, STATE_KEY, value)
        except SleepyError as exc:  # status is best effort; the work is not
            log.debug("could not record the sleeper state: %s", exc)


class SleepThread(threading.Thread):
    """Runs ``Scheduler`` steps in the background until ``stop()``.

    It re-plans when the index changed (another process refreshed) or the repository just
    became idle, and runs ``housekeeping`` (e.g. gc to the store size limit) at most every
    ``housekeeping_seconds`` while idle."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        tick: float = 0.5,
        housekeeping: Callable[[], Any] | None = None,
        housekeeping_seconds: float = 3600.0,
    ) -> None:
        super().__init__(name="sleepy-sleeper", daemon=True)
        self.scheduler = scheduler
        scheduler.stop_requested = self._stopping
        self.tick = tick
        self.housekeeping = housekeeping
        self.housekeeping_seconds = housekeeping_seconds
        self._stop_event = threading.Event()
        self._last_scan: Any = None
        self._was_idle = False
        self._last_housekeeping = 0.0
        self.steps: list[StepResult] = []

    def _stopping(self) -> bool:
        return self._stop_event.is_set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def _index_changed(self) -> bool:
        with self.scheduler.store.read() as conn:
            scan = self.scheduler.store.get_meta(conn, "last_scan", None)
        changed: bool = scan != self._last_scan
        self._last_scan = scan
        return changed

    def run_once(self) -> StepResult:
        sch = self.scheduler
        idle = sch.is_idle()
        if not idle:
            self._was_idle = False
            sch.set_state("waiting for idle")
            return StepResult("busy")
        if self._index_changed() or not self._was_idle:
            sch.plan()
        self._was_idle = True
        now = sch.clock()
        if self.housekeeping and now - self._last_housekeeping >= self.housekeeping_seconds:
            self._last_housekeeping = now
            try:
                self.housekeeping()
            except SleepyError as exc:
                log.warning("housekeeping failed: %s", exc)
        result = sch.step()
        self.steps.append(result)
        del self.steps[:-100]
        return result

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                result = self.run_once()
            except SleepyError as exc:
                log.warning("sleeper: %s", exc)
                result = StepResult("busy", detail=str(exc))
            except Exception:  # a bug must not kill the daemon silently
                log.exception("sleeper step failed")
                result = StepResult("busy")
            # after real work, look again at once; otherwise wait a tick (or a longer
            # pause when the budget stopped the work)
            wait = 0.0 if result.state == "ran" else self.tick
            if result.state == "budget":
                wait = max(self.tick, 60.0)
            self._stop_event.wait(wait)
