"""The planner: how likely each module is to be asked about next (the sleep queue's order).

Sleep-time compute pays off when it is spent on what will be asked (the paper's
predictability finding), so model work is ordered by a predicted-query likelihood. Each
signal is scaled to [0, 1]; the score is their weighted sum (``[sleep] weight_*``):

* ``recency``: the file changed recently: uncommitted changes count 1, else it halves every
  ``RECENCY_HALF_COMMITS`` commits back in the last ``churn_commits`` commits;
* ``churn``: how many of those commits touched it (log-scaled against the busiest file);
* ``centrality``: PageRank over the import graph (what many modules depend on);
* ``open``: open in an editor now (1), or importing/imported by an open file (0.3);
* ``hits``: past questions this module answered (``context``, ``ask``, hovers), decayed with a
  half-life of ``HITS_HALF_LIFE_DAYS`` and log-scaled.

Two multipliers then lower a module's priority: its earlier notes never paid off (no hit
after ``payoff_after_days``; ×``NO_PAYOFF_FACTOR``), or it is queued only because a
dependency's exported signature changed (×``DEPENDENCY_FACTOR``).

``rank`` reads everything from the store and git; ``Scored.reasons`` says why.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sleepy_repo import activity
from sleepy_repo.config import SleepConfig
from sleepy_repo.scan import uncommitted
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

RECENCY_HALF_COMMITS = 10.0
HITS_HALF_LIFE_DAYS = 7.0
NO_PAYOFF_FACTOR = 0.5
DEPENDENCY_FACTOR = 0.5
NEIGHBOUR_OF_OPEN = 0.3
PAGERANK_DAMPING = 0.85
PAGERANK_ITERATIONS = 30


@dataclass
class Scored:
    path: str
    score: float
    reasons: dict[str, float] = field(default_factory=dict)  # signal -> weighted value

    def explain(self) -> str:
        parts = [f"{k} {v:.2f}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1])]
        return ", ".join(p for p in parts if not p.endswith(" 0.00")) or "no signal"


@dataclass
class History:
    """What git says about the last N commits: per path, the index (0 = newest) of the
    newest commit touching it, and how many commits touched it; plus uncommitted paths."""

    newest: dict[str, int] = field(default_factory=dict)
    touches: Counter[str] = field(default_factory=Counter)
    dirty: set[str] = field(default_factory=set)
    commits: int = 0


def git_history(root: Path, commits: int, rev: str = "HEAD", *, dirty: bool = True) -> History:
    """Recency and churn from ``git log`` (an empty history outside git or on error)."""
    hist = History()
    out = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "log",
            f"-n{commits}",
            "--name-only",
            "-z",
            "--format=%x01",
            "--no-renames",
            rev,
            "--",
        ],
        capture_output=True,
        check=False,
    )
    if out.returncode != 0:
        return hist
    index = -1
    for token in out.stdout.decode("utf-8", "surrogateescape").split("\0"):
        token = token.strip("\n")
        if token.startswith("\x01"):
            index += 1
            token = token[1:].strip("\n")
        if not token or index < 0:
            continue
        hist.touches[token] += 1
        hist.newest.setdefault(token, index)
    hist.commits = index + 1
    if dirty:
        hist.dirty.update(uncommitted(root))
    return hist


def pagerank(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, float]:
    """PageRank where an import ``src -> dst`` passes rank to ``dst``; scaled so the top
    module is 1."""
    nodes = sorted(set(nodes))
    if not nodes:
        return {}
    idx = {n: i for i, n in enumerate(nodes)}
    out: dict[int, list[int]] = defaultdict(list)
    for src, dst in edges:
        if src in idx and dst in idx and src != dst:
            out[idx[src]].append(idx[dst])
    n = len(nodes)
    rank = [1.0 / n] * n
    for _ in range(PAGERANK_ITERATIONS):
        nxt = [(1.0 - PAGERANK_DAMPING) / n] * n
        dangling = sum(rank[i] for i in range(n) if not out.get(i))
        share = PAGERANK_DAMPING * dangling / n
        for i in range(n):
            nxt[i] += share
        for i, dsts in out.items():
            give = PAGERANK_DAMPING * rank[i] / len(dsts)
            for j in dsts:
                nxt[j] += give
        rank = nxt
    top = max(rank)
    return {node: rank[i] / top for node, i in idx.items()}


def _hits(conn: sqlite3.Connection, now: float) -> dict[str, float]:
    decay = math.log(2) / (HITS_HALF_LIFE_DAYS * 86400)
    out: dict[str, float] = defaultdict(float)
    for ts, paths_json in conn.execute("SELECT ts, paths_json FROM hits"):
        try:
            paths = json.loads(paths_json)
        except ValueError:
            continue
        w = math.exp(-decay * max(0.0, now - ts))
        for rank, p in enumerate(paths if isinstance(paths, list) else []):
            if isinstance(p, str):
                out[p] += w / (1 + rank)  # the first files served answered it best
    return out


def _never_paid_off(conn: sqlite3.Connection, now: float, after_days: float) -> set[str]:
    """Modules whose generated notes are older than ``after_days`` and were never served."""
    cutoff = now - after_days * 86400
    rows = conn.execute(
        "SELECT DISTINCT n.path FROM notes n JOIN modules m "
        "ON m.path = n.path AND m.blob_sha = n.blob_sha "
        "LEFT JOIN payoff p ON p.note_id = n.id "
        "WHERE n.backend != 'static' AND n.created_at < ? "
        "GROUP BY n.id HAVING coalesce(max(p.hits), 0) = 0",
        (cutoff,),
    ).fetchall()
    return {r[0] for r in rows}


def _log_scaled(values: dict[str, float]) -> dict[str, float]:
    top = max(values.values(), default=0.0)
    if top <= 0:
        return {}
    return {k: math.log1p(v) / math.log1p(top) for k, v in values.items() if v > 0}


def rank(
    root: Path,
    store: NoteStore,
    config: SleepConfig,
    *,
    is_git: bool = True,
    paths: Iterable[str] | None = None,
    dependency_only: Iterable[str] = (),
    history: History | None = None,
    now: float | None = None,
) -> list[Scored]:
    """Every indexed module (or ``paths``), most likely to be asked about first."""
    now = time.time() if now is None else now
    if history is None:
        history = git_history(root, config.churn_commits) if is_git else History()
    with store.read() as conn:
        modules = [r[0] for r in conn.execute("SELECT path FROM modules WHERE status = 'indexed'")]
        edges = [(r[0], r[1]) for r in conn.execute("SELECT src, dst FROM edges")]
        hits = _log_scaled(_hits(conn, now))
        no_payoff = _never_paid_off(conn, now, config.payoff_after_days)
        opened = activity.open_files(store, conn)
    central = pagerank(modules, edges)
    neighbours: set[str] = set()
    for src, dst in edges:
        if src in opened:
            neighbours.add(dst)
        if dst in opened:
            neighbours.add(src)
    churn = _log_scaled({p: float(c) for p, c in history.touches.items()})
    dep_only = set(dependency_only)
    wanted = set(paths) if paths is not None else None
    out = []
    for p in modules:
        if wanted is not None and p not in wanted:
            continue
        if p in history.dirty:
            recency = 1.0
        elif p in history.newest:
            recency = 0.5 ** (history.newest[p] / RECENCY_HALF_COMMITS)
        else:
            recency = 0.0
        signals = {
            "recency": config.weight_recency * recency,
            "churn": config.weight_churn * churn.get(p, 0.0),
            "centrality": config.weight_centrality * central.get(p, 0.0),
            "open": config.weight_open
            * (1.0 if p in opened else NEIGHBOUR_OF_OPEN if p in neighbours else 0.0),
            "hits": config.weight_hits * hits.get(p, 0.0),
        }
        score = sum(signals.values())
        if p in no_payoff:
            signals["never_paid_off"] = -score * (1 - NO_PAYOFF_FACTOR)
            score *= NO_PAYOFF_FACTOR
        if p in dep_only:
            signals["dependency_changed"] = -score * (1 - DEPENDENCY_FACTOR)
            score *= DEPENDENCY_FACTOR
        out.append(Scored(p, round(score, 6), {k: round(v, 4) for k, v in signals.items()}))
    out.sort(key=lambda s: (-s.score, s.path))
    return out
