"""Model spending limits (``[budget]``), enforced *before* every call.

Before a call its estimate is reserved: input tokens (``sleepy_repo.tokens``) plus
``max_tokens`` of output, and their price. After the call the reservation is settled to the
real ``usage`` in the same transaction that writes the ledger row; a failed call releases it.
A call is only made when everything spent plus everything reserved plus its own estimate
fits every limit, so concurrent calls can never push spending past a limit (as long as
the API bills no more than the estimate, which is conservative by construction).

* per-refresh limits count this run (in memory);
* daily limits count the ledger since local midnight plus the live reservations of every
  process (the ``reservations`` table), so a watcher and a CLI refresh share them.

Every reservation is a row in ``reservations``, limits or not, naming its process (PID and
start time, ``sleepy_repo.procs``) and its call (backend, model, path). A process killed
with calls in flight cannot settle them: the next start (``NoteStore.ensure``), or the next
daily reservation of any process, finds its reservations, records each as a ledger row of
reason ``unknown`` at its reserved estimate (the call may have been billed) and releases
it. So a kill never holds budget, and spending is never under-counted. A reservation also
expires, for rows whose process cannot be judged.

0 means unlimited. Tokens count input, output, cache-read and cache-write tokens.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sleepy_repo import procs
from sleepy_repo.config import BudgetConfig
from sleepy_repo.models.base import Estimate
from sleepy_repo.notes import Usage
from sleepy_repo.store import NoteStore

DEFAULT_HOLD_SECONDS = 3600.0  # a reservation outlives no call by more than this


def local_midnight(now: float | None = None) -> float:
    """The epoch time of the last local midnight."""
    dt = datetime.fromtimestamp(time.time() if now is None else now).astimezone()
    return dt.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def spent_today(conn: sqlite3.Connection, now: float | None = None) -> tuple[int, float]:
    """(tokens, USD) in the ledger since local midnight."""
    row = conn.execute(
        "SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens "
        "+ cache_write_tokens), 0), coalesce(sum(cost_usd), 0) FROM ledger WHERE ts >= ?",
        (local_midnight(now),),
    ).fetchone()
    return int(row[0]), float(row[1])


def held(conn: sqlite3.Connection, now: float | None = None) -> tuple[int, float]:
    """(tokens, USD) reserved by calls in flight, in any process."""
    row = conn.execute(
        "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_usd), 0) FROM reservations "
        "WHERE expires > ?",
        (time.time() if now is None else now,),
    ).fetchone()
    return int(row[0]), float(row[1])


@dataclass
class Reservation:
    tokens: int
    cost_usd: float
    row_id: int | None = None  # in ``reservations``


@dataclass(frozen=True)
class Call:
    """What a reservation pays for: the ledger row it becomes if its process dies."""

    backend: str
    model: str
    path: str | None
    reason: str


def _fmt_tokens(n: int | float) -> str:
    return f"{int(n):,} tokens"


def _fmt_usd(x: float) -> str:
    return f"${x:,.4f}"


class Budget:
    """The limits of one run (a refresh) against one store. Thread-safe."""

    def __init__(
        self,
        store: NoteStore,
        limits: BudgetConfig,
        *,
        hold_seconds: float = DEFAULT_HOLD_SECONDS,
    ) -> None:
        self.store = store
        self.limits = limits
        self.hold_seconds = hold_seconds
        self.owner = f"{os.getpid()}@{time.time():.0f}"
        self.process = procs.identity()
        self.spent_tokens = 0
        self.spent_usd = 0.0
        self._held_tokens = 0
        self._held_usd = 0.0
        self._lock = threading.Lock()
        self.refused: str | None = None  # why the last reservation was refused

    @property
    def daily(self) -> bool:
        return bool(self.limits.daily_tokens or self.limits.daily_usd)

    def reserve(
        self, est: Estimate, *, call: Call | None = None, hold_seconds: float | None = None
    ) -> Reservation | None:
        """Hold ``est`` (for ``call``) against every limit; None (and ``refused`` says why)
        if it would exceed one."""
        with self._lock:
            self.refused = None
            tokens, usd = est.tokens, est.cost_usd
            lim = self.limits
            run_tokens = self.spent_tokens + self._held_tokens
            run_usd = self.spent_usd + self._held_usd
            why = self._check(
                "per-refresh", lim.per_refresh_tokens, lim.per_refresh_usd, run_tokens, run_usd, est
            )
            if why:
                self.refused = why
                return None
            res = Reservation(tokens, usd)
            now = time.time()
            with self.store.write() as conn:
                if self.daily:
                    # a dead process's calls count as spent (estimated), never as held
                    self.store.record_dead_reservations(conn)
                    conn.execute("DELETE FROM reservations WHERE expires <= ?", (now,))
                    day_tokens, day_usd = spent_today(conn, now)
                    held_tokens, held_usd = held(conn, now)
                    why = self._check(
                        "daily",
                        lim.daily_tokens,
                        lim.daily_usd,
                        day_tokens + held_tokens,
                        day_usd + held_usd,
                        est,
                    )
                    if why:
                        self.refused = why
                        return None
                res.row_id = self._insert(conn, now, est, call, hold_seconds)
            self._held_tokens += tokens
            self._held_usd += usd
            return res

    def _insert(
        self,
        conn: sqlite3.Connection,
        now: float,
        est: Estimate,
        call: Call | None,
        hold_seconds: float | None,
    ) -> int | None:
        call = call or Call("", "", None, "")
        cur = conn.execute(
            "INSERT INTO reservations(ts, expires, owner, tokens, cost_usd, pid, process, "
            "backend, model, path, reason, input_tokens, output_tokens) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                now,
                now + (hold_seconds or self.hold_seconds),
                self.owner,
                est.tokens,
                est.cost_usd,
                os.getpid(),
                self.process,
                call.backend or None,
                call.model or None,
                call.path,
                call.reason or None,
                est.input_tokens,
                est.output_tokens,
            ),
        )
        return cur.lastrowid

    @staticmethod
    def _check(
        scope: str, max_tokens: int, max_usd: float, tokens: int, usd: float, est: Estimate
    ) -> str | None:
        if max_tokens and tokens + est.tokens > max_tokens:
            return (
                f"{scope} token budget reached: {_fmt_tokens(tokens)} of "
                f"{_fmt_tokens(max_tokens)} spent or reserved, the next call needs up to "
                f"{_fmt_tokens(est.tokens)}"
            )
        if max_usd and usd + est.cost_usd > max_usd:
            return (
                f"{scope} dollar budget reached: {_fmt_usd(usd)} of {_fmt_usd(max_usd)} "
                f"spent or reserved, the next call may cost up to {_fmt_usd(est.cost_usd)}"
            )
        return None

    def settle(self, conn: sqlite3.Connection, res: Reservation, usage: Iterable[Usage]) -> None:
        """Replace the reservation by the real usage, inside the caller's write transaction
        (the one that writes the ledger rows of ``usage``)."""
        if res.row_id is not None:
            conn.execute("DELETE FROM reservations WHERE id = ?", (res.row_id,))
        tokens = usd = 0.0
        for u in usage:
            tokens += u.tokens
            usd += u.cost_usd
        with self._lock:
            self._held_tokens -= res.tokens
            self._held_usd -= res.cost_usd
            self.spent_tokens += int(tokens)
            self.spent_usd += usd

    def release(self, res: Reservation) -> None:
        """Give a reservation back: its call failed before anything was billed."""
        if res.row_id is not None:
            with self.store.write() as conn:
                conn.execute("DELETE FROM reservations WHERE id = ?", (res.row_id,))
        with self._lock:
            self._held_tokens -= res.tokens
            self._held_usd -= res.cost_usd

    def release_all(self) -> None:
        """Clear this run's reservations left in the store (after an interrupted run). A
        call still reserved was in flight when the run stopped and its reply was never
        read: it is recorded as ``unknown`` at its estimate, like a killed process's. A
        batch's reservation is dropped: the batch is settled when it is collected."""
        with self.store.write() as conn:
            rows = conn.execute(
                "SELECT * FROM reservations WHERE owner = ? AND id NOT IN "
                "(SELECT reservation_id FROM batches WHERE reservation_id IS NOT NULL)",
                (self.owner,),
            ).fetchall()
            self.store.record_dead_reservations(conn, rows)
            conn.execute("DELETE FROM reservations WHERE owner = ?", (self.owner,))
