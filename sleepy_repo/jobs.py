"""Model work: modules waiting for model notes, run under a budget with bounded concurrency.

``sleep.write_notes`` hands a model backend's to-do list here. Every module is a row in
``jobs`` (status ``queued``) until its notes are stored, when the row is deleted; so work
a budget or an outage stopped stays queued for the next run, and ``status`` shows it.

For each module, in order: build the request, reserve its estimate (``budget.Budget``),
call the backend on a worker thread (at most ``backend.concurrency`` at once), then, on
the main thread and in one transaction, store the grounded notes, write one ledger row per
call with its real usage, settle the reservation and delete the job. When a reservation is
refused, the run waits for calls in flight to settle and tries again; if nothing is in
flight, it stops and the rest stays queued.

Outcomes per module:

* notes stored (their claims grounded in the parse);
* every claim failed grounding: retried once with a reminder, then failed;
* ``ModelUnavailableError`` (retries exhausted, timeouts, garbled replies): the job stays
  queued with the error; three in a row stop the run;
* ``ModelCrashedError`` (the local model's process died or stalled): likewise, and the
  job's ``crashes`` count goes up; its third crash fails it, so a module that crashes the
  model cannot keep the sleeper crashing forever;
* ``ModelCancelledError`` (the backend's ``cancel_check`` fired): the job stays queued and
  the run stops at once;
* ``ModelError`` / ``ModelOutputError``: the job fails with the error (billed calls are
  still in the ledger);
* ``ConfigError`` (the API refused the key or the model): the run stops and the error is
  raised once calls in flight have finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sleepy_repo.budget import Budget, Call, Reservation
from sleepy_repo.errors import (
    ConfigError,
    ModelCancelledError,
    ModelCrashedError,
    ModelError,
    ModelOutputError,
    ModelUnavailableError,
)
from sleepy_repo.models.base import Backend, Estimate, NoteRequest
from sleepy_repo.notes import NoteDraft, NoteKey, Usage, ground
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

MAX_UNAVAILABLE_IN_A_ROW = 3
MAX_CRASHES = 3  # crashes of the local model's process on one module fail its job


@dataclass(frozen=True)
class Job:
    path: str
    blob: str
    attempt: int = 1


@dataclass
class JobsReport:
    written: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    dropped_citations: int = 0
    usage: list[Usage] = field(default_factory=list)
    queued: int = 0  # left in the queue by this run
    stopped: str | None = None  # why the run stopped early


def enqueue(store: NoteStore, backend: str, jobs: Iterable[Job], reason: str) -> None:
    now = time.time()
    with store.write() as conn:
        conn.executemany(
            "INSERT INTO jobs(path, blob_sha, backend, reason, priority, status, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, 0, 'queued', ?, ?) "
            "ON CONFLICT(path, blob_sha, backend) DO UPDATE SET status = 'queued', "
            "updated_at = excluded.updated_at",
            [(j.path, j.blob, backend, reason, now, now) for j in jobs],
        )


def _mark(store: NoteStore, backend: str, job: Job, status: str, error: str) -> None:
    with store.write() as conn:
        conn.execute(
            "UPDATE jobs SET status = ?, error = ?, updated_at = ? "
            "WHERE path = ? AND blob_sha = ? AND backend = ?",
            (status, error[:2000], time.time(), job.path, job.blob, backend),
        )


def _crashed(store: NoteStore, backend: str, job: Job) -> bool:
    """Count one crash of the model's process on ``job``; True on its ``MAX_CRASHES``th."""
    with store.write() as conn:
        row = conn.execute(
            "UPDATE jobs SET crashes = crashes + 1 "
            "WHERE path = ? AND blob_sha = ? AND backend = ? RETURNING crashes",
            (job.path, job.blob, backend),
        ).fetchone()
    return row is not None and row[0] >= MAX_CRASHES


class _Named(Protocol):
    name: str
    model: str


def record_usage(
    store: NoteStore,
    conn: sqlite3.Connection,
    backend: _Named,
    path: str,
    usage: Iterable[Usage],
    reason: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """One ledger row per call (one zero row for a model without usage, like ``fake``)."""
    rows = list(usage) or [Usage(model=backend.model)]
    for u in rows:
        store.add_ledger(
            conn,
            backend=backend.name,
            model=u.model,
            path=path,
            reason=reason,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            cost_usd=u.cost_usd,
            detail={**(detail or {}), **({"batch": True} if u.batch else {})} or None,
        )


class _Run:
    def __init__(
        self,
        store: NoteStore,
        backend: Backend,
        budget: Budget,
        key_of: Callable[[str, str], NoteKey],
        report: JobsReport,
    ) -> None:
        self.store = store
        self.backend = backend
        self.budget = budget
        self.key_of = key_of
        self.report = report
        self.unavailable_in_a_row = 0
        self.fatal: ConfigError | None = None

    def _settle(self, res: Reservation, job: Job, usage: tuple[Usage, ...], reason: str) -> None:
        if not usage:
            self.budget.release(res)
            return
        with self.store.write() as conn:
            record_usage(self.store, conn, self.backend, job.path, usage, reason)
            self.budget.settle(conn, res, usage)
        self.report.usage.extend(usage)

    def finish(
        self,
        fut: Future[NoteDraft],
        job: Job,
        request: NoteRequest,
        res: Reservation,
        full: Estimate | None = None,
    ) -> Job | None:
        """Store one finished call's outcome; a job to retry, or None."""
        name = self.backend.name
        try:
            draft = fut.result()
        except ConfigError as exc:
            self.budget.release(res)
            _mark(self.store, name, job, "queued", str(exc))
            self.fatal = self.fatal or exc
            self.report.stopped = self.report.stopped or str(exc)
            return None
        except ModelCancelledError as exc:  # asked to stop (the developer is back)
            self._settle(res, job, exc.usage, "notes-cancelled")
            _mark(self.store, name, job, "queued", str(exc))
            self.report.stopped = self.report.stopped or f"cancelled: {exc}"
            return None
        except ModelUnavailableError as exc:
            self._settle(res, job, exc.usage, "notes-failed")
            if isinstance(exc, ModelCrashedError) and _crashed(self.store, name, job):
                error = f"crashed the local model {MAX_CRASHES} times (last: {exc})"
                _mark(self.store, name, job, "failed", error)
                self.report.failed.append((job.path, error))
                log.warning("notes for %s failed: %s", job.path, error)
                self.unavailable_in_a_row += 1
                if self.unavailable_in_a_row >= MAX_UNAVAILABLE_IN_A_ROW:
                    self.report.stopped = self.report.stopped or (
                        f"the local model failed {MAX_UNAVAILABLE_IN_A_ROW} times in a row "
                        f"(last: {exc})"
                    )
                return None
            _mark(self.store, name, job, "queued", str(exc))
            self.report.failed.append((job.path, str(exc)))
            self.unavailable_in_a_row += 1
            log.warning("notes for %s failed (kept queued): %s", job.path, exc)
            if self.unavailable_in_a_row >= MAX_UNAVAILABLE_IN_A_ROW:
                self.report.stopped = self.report.stopped or (
                    f"the model API is unavailable ({MAX_UNAVAILABLE_IN_A_ROW} failures in a "
                    f"row; last: {exc})"
                )
            return None
        except ModelError as exc:
            self._settle(res, job, exc.usage, "notes-failed")
            _mark(self.store, name, job, "failed", str(exc))
            self.report.failed.append((job.path, str(exc)))
            log.warning("notes for %s failed: %s", job.path, exc)
            return None
        except Exception as exc:  # a bug: this module fails, the run goes on
            self.budget.release(res)
            _mark(self.store, name, job, "failed", f"{type(exc).__name__}: {exc}")
            self.report.failed.append((job.path, f"{type(exc).__name__}: {exc}"))
            log.exception("notes for %s failed unexpectedly", job.path)
            return None
        self.unavailable_in_a_row = 0
        notes = ground(draft, request.facts, request.lines, self.key_of(job.path, job.blob))
        if draft.items and not notes.items:
            claims = len(draft.items)
            if job.attempt == 1:
                self._settle(res, job, draft.usage, "notes-discarded")
                log.info("notes for %s cited no known symbol; retrying once", job.path)
                return Job(job.path, job.blob, attempt=2)
            self._settle(res, job, draft.usage, "notes-retry")
            error = f"all {claims} claims cited unknown symbols, twice"
            _mark(self.store, name, job, "failed", error)
            self.report.failed.append((job.path, error))
            self.report.dropped_citations += notes.dropped_citations
            return None
        reason = "notes" if job.attempt == 1 else "notes-retry"
        detail = None
        if request.previous is not None and full is not None:
            # a rethink: what rewriting the notes from scratch would have cost, for comparison
            reason = "rethink"
            detail = {"full_rewrite_tokens": full.tokens, "full_rewrite_usd": full.cost_usd}
        with self.store.write() as conn:
            self.store.put_notes(conn, notes, origin="written")
            record_usage(self.store, conn, self.backend, job.path, draft.usage, reason, detail)
            conn.execute(
                "DELETE FROM jobs WHERE path = ? AND blob_sha = ? AND backend = ?",
                (job.path, job.blob, name),
            )
            self.budget.settle(conn, res, draft.usage)
        self.report.usage.extend(draft.usage)
        self.report.written += 1
        self.report.dropped_citations += notes.dropped_citations
        return None


def run_jobs(
    store: NoteStore,
    backend: Backend,
    jobs: list[Job],
    *,
    make_request: Callable[[Job], NoteRequest | None],
    key_of: Callable[[str, str], NoteKey],
    budget: Budget,
    reason: str = "notes",
    progress: Callable[[int, int], None] | None = None,
) -> JobsReport:
    """Write model notes for ``jobs`` (see the module docstring)."""
    report = JobsReport()
    if not jobs:
        return report
    enqueue(store, backend.name, jobs, reason)
    run = _Run(store, backend, budget, key_of, report)
    pending = deque(jobs)
    running: dict[Future[NoteDraft], tuple[Job, NoteRequest, Reservation, Estimate | None]] = {}
    total, done = len(jobs), 0
    workers = max(1, backend.concurrency)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sleepy-model")
    try:
        while True:
            while report.stopped is None and pending and len(running) < workers:
                job = pending[0]
                request = make_request(job)
                if request is None:  # changed since it was indexed: next refresh
                    pending.popleft()
                    done += 1
                    continue
                try:
                    est = backend.estimate(request)
                except ModelError as exc:  # e.g. refused to send: the job fails
                    pending.popleft()
                    _mark(store, backend.name, job, "failed", str(exc))
                    report.failed.append((job.path, str(exc)))
                    done += 1
                    continue
                full = None
                if request.previous is not None:
                    full = backend.estimate(dataclasses.replace(request, previous=None))
                res = budget.reserve(est, call=Call(backend.name, backend.model, job.path, reason))
                if res is None:
                    if not running:
                        report.stopped = budget.refused
                    break  # wait for calls in flight to settle, then try again
                pending.popleft()
                running[pool.submit(backend.write_notes, request)] = (job, request, res, full)
            if not running:
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                job, request, res, full = running.pop(fut)
                retry = run.finish(fut, job, request, res, full)
                if retry is not None:
                    pending.appendleft(retry)
                else:
                    done += 1
                if progress:
                    progress(done, total)
    except BaseException:
        for fut in running:
            fut.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        budget.release_all()
    mine = {(j.path, j.blob) for j in jobs}
    with store.read() as conn:
        rows = conn.execute(
            "SELECT path, blob_sha FROM jobs WHERE backend = ? AND status = 'queued'",
            (backend.name,),
        ).fetchall()
    report.queued = sum(1 for p, b in rows if (p, b) in mine)
    if run.fatal is not None:
        raise run.fatal
    return report


# -- Message Batches -----------------------------------------------------------------------
BATCH_HOLD_SECONDS = 30 * 3600.0  # a batch may take 24 h; its reservation outlives that


@runtime_checkable
class BatchBackend(Protocol):
    """A backend that can also send its requests as one asynchronous, cheaper batch."""

    name: str
    model: str
    prompt_version: str
    batch_threshold: int
    batch_poll_seconds: float
    batch_wait_seconds: float

    def calls(self, request: NoteRequest) -> list[Any]: ...

    def estimate_calls(self, calls: list[Any], *, batch: bool = False) -> Estimate: ...

    def usage_of(self, raw: dict[str, Any], *, batch: bool = False) -> Usage: ...

    def submit_batch(self, requests: list[dict[str, Any]]) -> str: ...

    def batch_status(self, batch_id: str) -> str: ...

    def batch_results(self, batch_id: str) -> dict[str, tuple[str, dict[str, Any] | None]]: ...

    def draft_from_replies(self, replies: list[dict[str, Any]], *, batch: bool) -> NoteDraft: ...


def submit_batch(
    store: NoteStore,
    backend: BatchBackend,
    jobs: list[Job],
    *,
    effort: str,
    make_request: Callable[[Job], NoteRequest | None],
    budget: Budget,
    report: JobsReport,
) -> str | None:
    """Send ``jobs`` as one Message Batch (reserved whole, at the batch rate); its id, or
    None when the budget cannot hold it (then the jobs run one by one, under the budget).
    The batch id is stored, so a later run collects it even after a restart."""
    enqueue(store, backend.name, jobs, "notes")
    requests: list[dict[str, Any]] = []
    meta: list[dict[str, Any]] = []
    tokens_in = tokens_out = calls_n = 0
    usd = 0.0
    for i, job in enumerate(jobs):
        request = make_request(job)
        if request is None:
            continue
        try:
            calls = backend.calls(request)
        except ModelError as exc:
            _mark(store, backend.name, job, "failed", str(exc))
            report.failed.append((job.path, str(exc)))
            continue
        est = backend.estimate_calls(calls, batch=True)
        tokens_in, tokens_out = tokens_in + est.input_tokens, tokens_out + est.output_tokens
        usd, calls_n = usd + est.cost_usd, calls_n + est.calls
        ids = [f"m{i}p{k}" for k in range(len(calls))]
        requests += [
            {"custom_id": c, "params": call.params} for c, call in zip(ids, calls, strict=True)
        ]
        meta.append({"path": job.path, "blob": job.blob, "ids": ids})
    if not meta:
        return None
    res = budget.reserve(
        Estimate(tokens_in, tokens_out, usd, calls_n),
        call=Call(backend.name, backend.model, None, "notes-batch"),
        hold_seconds=BATCH_HOLD_SECONDS,
    )
    if res is None:
        return None
    try:
        batch_id = backend.submit_batch(requests)
    except ModelError as exc:
        budget.release(res)
        log.warning("could not create a Message Batch (%s); sending one by one", exc)
        return None
    except BaseException:
        budget.release(res)
        raise
    now = time.time()
    info = {"jobs": meta, "owner": budget.owner, "tokens": res.tokens, "cost_usd": res.cost_usd}
    with store.write() as conn:
        conn.execute(
            "INSERT INTO batches(id, backend, model, effort, status, requests_json, "
            "reservation_id, created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
            (batch_id, backend.name, backend.model, effort, json.dumps(info), res.row_id, now, now),
        )
        conn.executemany(
            "UPDATE jobs SET status = 'batched', error = ?, updated_at = ? "
            "WHERE path = ? AND blob_sha = ? AND backend = ?",
            [(f"in batch {batch_id}", now, m["path"], m["blob"], backend.name) for m in meta],
        )
    log.info("sent %d modules as Message Batch %s", len(meta), batch_id)
    return batch_id


def pending_batches(store: NoteStore, backend: str) -> dict[str, set[tuple[str, str]]]:
    """Pending batch id -> the (path, blob) of the modules it notes."""
    with store.read() as conn:
        rows = conn.execute(
            "SELECT id, requests_json FROM batches WHERE backend = ? AND status = 'pending'",
            (backend,),
        ).fetchall()
    return {
        batch_id: {(m["path"], m["blob"]) for m in json.loads(info)["jobs"]}
        for batch_id, info in rows
    }


def collect_batches(
    store: NoteStore,
    backend: BatchBackend,
    *,
    effort: str,
    make_request: Callable[[Job], NoteRequest | None],
    key_of: Callable[[str, str], NoteKey],
    budget: Budget,
    report: JobsReport,
) -> list[str]:
    """Store the notes of every ended batch of ``backend``; the ids still pending."""
    with store.read() as conn:
        rows = conn.execute(
            "SELECT id, requests_json, reservation_id FROM batches "
            "WHERE backend = ? AND model = ? AND effort = ? AND status = 'pending' "
            "ORDER BY created_at",
            (backend.name, backend.model, effort),
        ).fetchall()
    pending = []
    for batch_id, info_json, reservation_id in rows:
        try:
            state = backend.batch_status(batch_id)
            results = backend.batch_results(batch_id) if state == "ended" else None
        except ModelError as exc:
            log.warning("Message Batch %s not collected yet: %s", batch_id, exc)
            pending.append(batch_id)
            continue
        if results is None:
            pending.append(batch_id)
            continue
        info = json.loads(info_json)
        spent: list[Usage] = []
        for m in info["jobs"]:
            spent += _collect_one(
                store, backend, batch_id, m, results, make_request, key_of, report
            )
        mine = info.get("owner") == budget.owner
        res = Reservation(
            int(info["tokens"]) if mine else 0,
            float(info["cost_usd"]) if mine else 0.0,
            reservation_id,
        )
        with store.write() as conn:
            budget.settle(conn, res, spent)
            conn.execute(
                "UPDATE batches SET status = 'done', updated_at = ? WHERE id = ?",
                (time.time(), batch_id),
            )
    return pending


def _collect_one(
    store: NoteStore,
    backend: BatchBackend,
    batch_id: str,
    m: dict[str, Any],
    results: dict[str, tuple[str, dict[str, Any] | None]],
    make_request: Callable[[Job], NoteRequest | None],
    key_of: Callable[[str, str], NoteKey],
    report: JobsReport,
) -> list[Usage]:
    """One module's results from a batch; the usage it recorded."""
    job = Job(m["path"], m["blob"])
    got = [results.get(c) for c in m["ids"]]
    replies = [g[1] for g in got if g is not None and g[0] == "succeeded" and g[1] is not None]
    name = backend.name
    if len(replies) != len(m["ids"]):
        usage = [backend.usage_of(r, batch=True) for r in replies]
        kinds = sorted({g[0] if g else "missing" for g in got} - {"succeeded"})
        error = f"batch {batch_id}: {', '.join(kinds)}; queued again"
        _record(store, backend, job, usage, "notes-failed")
        _mark(store, name, job, "queued", error)
        report.failed.append((job.path, error))
        report.usage += usage
        return usage
    try:
        draft = backend.draft_from_replies(replies, batch=True)
    except ModelOutputError as exc:
        usage = list(exc.usage)
        _record(store, backend, job, usage, "notes-failed")
        _mark(store, name, job, "failed", str(exc))
        report.failed.append((job.path, str(exc)))
        report.usage += usage
        return usage
    usage = list(draft.usage)
    report.usage += usage
    request = make_request(job)
    notes = (
        ground(draft, request.facts, request.lines, key_of(job.path, job.blob)) if request else None
    )
    if notes is None or (draft.items and not notes.items):
        # changed since it was sent, or nothing grounded: paid for, queued again
        _record(store, backend, job, usage, "notes-discarded")
        _mark(store, name, job, "queued", f"batch {batch_id}: notes discarded; queued again")
        return usage
    with store.write() as conn:
        store.put_notes(conn, notes, origin="written")
        record_usage(store, conn, backend, job.path, usage, "notes")
        conn.execute(
            "DELETE FROM jobs WHERE path = ? AND blob_sha = ? AND backend = ?",
            (job.path, job.blob, name),
        )
    report.written += 1
    report.dropped_citations += notes.dropped_citations
    return usage


def _record(
    store: NoteStore, backend: BatchBackend, job: Job, usage: list[Usage], reason: str
) -> None:
    if usage:
        with store.write() as conn:
            record_usage(store, conn, backend, job.path, usage, reason)
