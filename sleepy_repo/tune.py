"""Tune: fit the ranking's fusion weights on the repository's own past (issue 17 §4).

A question cannot compute this; idle time can. The recent history is mined into cases with
the ``bench mine`` rules (a commit's message is the question, the lines it changed are the
answer). The cases are walked oldest first in a temporary worktree whose own store is
refreshed at each case's parent, so every signal (chunks, static notes, history notes) is
as of that parent and nothing the case's commit wrote is in it. At each case the real
``retrieve.rank`` + ``retrieve.pack`` serve 1,000 tokens with each candidate weight set,
scored by gold-line coverage plus file hit@3 (the bench's metrics).

Forward in time: the older ``FIT_SHARE`` of the cases choose the weights (the candidate
with the best mean score on them: the defaults, one weight set to nothing or doubled, or
long units ranked whole or cut into smaller pieces); the newer rest score that choice against the
defaults. The weights are adopted only if they score better there, so a fit that does not
carry forward changes nothing. The run is stored (``tuning``: both commit ranges, both
scores, the weights) and ``retrieve.rank`` uses adopted weights for every question after it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sleepy_repo import api, retrieve
from sleepy_repo.bench.gold import case_gold, coverage
from sleepy_repo.bench.localize import (
    _git,
    checkout,
    history_order,
    hit_at_k,
    remove_stale_worktrees,
    worktree,
)
from sleepy_repo.bench.mine import Case, MineOptions, mine
from sleepy_repo.bench.strategies import served_item
from sleepy_repo.config import StoreConfig
from sleepy_repo.embed import Embedder
from sleepy_repo.errors import RepoError, SleepyError
from sleepy_repo.redact import DenyList
from sleepy_repo.retrieve import DEFAULT_WEIGHTS, Weights
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

CASES = 60  # mined from the most recent history
MIN_CASES = 30  # fewer: the repository is too young to tune, defaults stay
MIN_SCORED = 10  # newer cases the choice must be scored on before it can be adopted
MARGIN = 0.01  # and by how much it must beat the defaults there (of a score in [0, 2])
WORKTREE_PREFIX = "sleepy-tune-"
FIT_SHARE = 2 / 3  # the older share chooses, the newer rest scores the choice
BUDGET = 1000  # tokens served per candidate and case
FACTORS = (0.0, 2.0)  # each weight alone is tried at these multiples of its default
PIECES = (0, 30, 40)  # and the pieces long units are ranked in, at these sizes (0: whole)

#: (cases done, cases total, what is happening)
Progress = Callable[[int, int, str], None]


class TuningCancelled(SleepyError):
    """The developer came back: the fit stopped between cases and nothing was stored."""


def candidates(base: Weights = DEFAULT_WEIGHTS) -> dict[str, Weights]:
    """The weight sets tried: ``base``, ``base`` with one weight at each of ``FACTORS``
    times its value, and ``base`` with pieces of each of ``PIECES`` lines."""
    out = {"default": base}
    for name, w in base.files.items():
        for f in FACTORS:
            files = {**base.files, name: w * f}
            out[f"files.{name}x{f:g}"] = Weights(files, base.graph, base.units, base.piece_lines)
    for f in FACTORS:
        out[f"graphx{f:g}"] = Weights(base.files, base.graph * f, base.units, base.piece_lines)
    for name, w in base.units.items():
        for f in FACTORS:
            units = {**base.units, name: w * f}
            out[f"units.{name}x{f:g}"] = Weights(base.files, base.graph, units, base.piece_lines)
    for lines in PIECES:
        out[f"pieces{lines}"] = Weights(base.files, base.graph, base.units, lines)
    return out


def defaults_key() -> str:
    """The digest of the code's default weights that a run records."""
    return DEFAULT_WEIGHTS.digest()


@dataclass
class TuneResult:
    head: str
    fit: list[Case]
    scored: list[Case]
    chosen: str  # the candidate the fit cases chose
    weights: Weights
    fit_scores: dict[str, float]  # candidate -> mean score on the fit cases
    default_score: float  # on the scored cases
    tuned_score: float
    adopted: bool
    seconds: float
    reason: str = ""
    refresh_s: float = 0.0
    skipped: int = 0  # mined cases left out (their commit is among ``exclude``)
    per_case: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The ``tuning`` row (``NoteStore.save_tuning``)."""

        def span(cases: list[Case]) -> str:
            return f"{cases[0].commit}..{cases[-1].commit}" if cases else ""

        return {
            "created_at": time.time(),
            "head": self.head,
            "fit_range": span(self.fit),
            "score_range": span(self.scored),
            "fit_cases": len(self.fit),
            "score_cases": len(self.scored),
            "weights": self.weights.to_json(),
            "default_score": round(self.default_score, 4),
            "tuned_score": round(self.tuned_score, 4),
            "adopted": int(self.adopted),
            "seconds": round(self.seconds, 1),
            "detail": {
                "defaults": defaults_key(),
                "chosen": self.chosen,
                "reason": self.reason,
                "budget": BUDGET,
                "metric": "gold-line coverage + file hit@3 at 1,000 tokens, mean over cases",
                "fit_scores": {k: round(v, 4) for k, v in self.fit_scores.items()},
                "refresh_s": round(self.refresh_s, 1),
            },
        }


def _commit_times(root: Path, commits: list[str]) -> dict[str, int]:
    """Committer time of each commit."""
    if not commits:
        return {}
    out = _git(root, "log", "--no-walk=unsorted", "--format=%H %ct", *commits)
    return {sha: int(t) for sha, t in (line.split() for line in out.splitlines() if line)}


def score_case(
    conn: Any,
    case: Case,
    root: Path,
    weights: Weights,
    deny: DenyList,
    embedder: Embedder | None = None,
) -> tuple[float, float]:
    """(gold-line coverage, file hit@3) of the context served for ``case`` with
    ``weights`` at ``BUDGET`` tokens, in the worktree ``root`` at the case's state."""
    gold = case_gold(root, case)
    ranking = retrieve.rank(conn, case.query, weights=weights, embedder=embedder)
    ctx = retrieve.pack(ranking, conn, case.query, BUDGET, deny=deny)
    items = [served_item(i) for i in ctx.items]
    cov = coverage(gold, items) or 0.0
    return cov, hit_at_k([i.path for i in ctx.items], case.gold_files, 3)


def fit(
    repo_path: Path,
    *,
    rev: str = "HEAD",
    n_cases: int = CASES,
    exclude: Sequence[str] = (),
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TuneResult:
    """Fit and score weights on the history of ``rev`` (see the module docstring).
    ``exclude``: commits never used. ``cancel``: asked before each case; when it returns
    True the fit stops with ``TuningCancelled``."""
    t0 = time.perf_counter()
    root = Path(repo_path)
    head = _git(root, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}").strip()
    mined = mine(root, MineOptions(n=n_cases, rev=rev)).cases
    skip = set(exclude)
    cases = [c for c in mined if c.commit not in skip]
    skipped = len(mined) - len(cases)
    base = TuneResult(
        head=head,
        fit=[],
        scored=[],
        chosen="default",
        weights=DEFAULT_WEIGHTS,
        fit_scores={},
        default_score=0.0,
        tuned_score=0.0,
        adopted=False,
        seconds=0.0,
        skipped=skipped,
    )
    if len(cases) < MIN_CASES:
        base.reason = f"history too short: {len(cases)} cases (at least {MIN_CASES} needed)"
        base.seconds = time.perf_counter() - t0
        return base
    # forward in time by the cases' own commit times: every fit commit is older than every
    # scored one (a branch's commit can have an old parent); each part is walked in
    # history order
    when = _commit_times(root, [c.commit for c in cases if c.commit])
    by_time = sorted(cases, key=lambda c: when.get(c.commit or "", 0))
    n_fit = int(len(by_time) * FIT_SHARE)
    fit_part = history_order(root, by_time[:n_fit])
    score_part = history_order(root, by_time[n_fit:])
    ordered = fit_part + score_part
    base.fit, base.scored = fit_part, score_part
    cands = candidates()
    sums = dict.fromkeys(cands, 0.0)
    tuned_sum = default_sum = 0.0
    chosen: str | None = None
    main = api.open_repo(root)
    # the worktree's own store, whatever the config says (an absolute [store] path would
    # otherwise be the user's own store), and the main repository's config and deny list
    cfg = dataclasses.replace(main.config, store=StoreConfig(path=".sleepy/tune"))
    deny = DenyList(cfg.scan.deny)
    semantic = api.embedder(main)
    remove_stale_worktrees(root, WORKTREE_PREFIX)
    unusable: set[int] = set()  # cases whose state could not be checked out
    fit_used = score_used = 0

    def choose() -> str:
        """The best candidate on the fit cases; ties keep the defaults."""
        base.fit_scores = {k: v / max(fit_used, 1) for k, v in sums.items()}
        return max(cands, key=lambda k: (sums[k], k == "default"))

    with worktree(root, ordered[0].state, prefix=WORKTREE_PREFIX) as wt:
        repo: api.Repo | None = None
        current: str | None = None
        for i, case in enumerate(ordered):
            if cancel is not None and cancel():
                raise TuningCancelled(f"tuning stopped after {i} of {len(ordered)} cases")
            if progress:
                progress(i, len(ordered), case.label[:10])
            if case.state != current:
                try:
                    checkout(wt, case.state)
                except RepoError as exc:  # e.g. a blob this clone lacks: the case is left out
                    log.warning("tuning skips %s: %s", case.label, exc)
                    base.skipped += 1
                    unusable.add(i)
                    current = None
                    continue
                if repo is None:
                    store = NoteStore(cfg.store_dir(wt))
                    if store.path.resolve() == main.store.path.resolve():
                        raise SleepyError("tuning would write into the repository's own store")
                    store.ensure()
                    repo = api.Repo(root=wt, is_git=True, config=cfg, store=store)
                r0 = time.perf_counter()
                api.refresh(repo, backend="static")
                base.refresh_s += time.perf_counter() - r0
                current = case.state
            assert repo is not None
            with repo.store.read() as conn:
                if i < n_fit:
                    rec: dict[str, Any] = {"commit": case.commit, "part": "fit"}
                    for name, w in cands.items():
                        cov, hit = score_case(conn, case, wt, w, deny, semantic)
                        sums[name] += cov + hit
                        rec[name] = round(cov + hit, 4)
                    fit_used += 1
                else:
                    if chosen is None:
                        chosen = choose()
                    dc, dh = score_case(conn, case, wt, cands["default"], deny, semantic)
                    tc, th = (
                        (dc, dh)
                        if chosen == "default"
                        else score_case(conn, case, wt, cands[chosen], deny, semantic)
                    )
                    default_sum += dc + dh
                    tuned_sum += tc + th
                    rec = {"commit": case.commit, "part": "score", "default": dc + dh}
                    rec[chosen] = tc + th
                    score_used += 1
                base.per_case.append(rec)
    if progress:
        progress(len(ordered), len(ordered), "done")
    if chosen is None:
        chosen = choose()
    base.fit = [c for i, c in enumerate(base.fit) if i not in unusable]
    base.scored = [c for i, c in enumerate(base.scored, n_fit) if i not in unusable]
    n_score = max(score_used, 1)
    base.chosen = chosen
    base.weights = cands[chosen]
    base.default_score = default_sum / n_score
    base.tuned_score = tuned_sum / n_score
    base.adopted = chosen != "default" and score_used > 0 and base.tuned_score > base.default_score
    base.reason = (
        f"{chosen} scored {base.tuned_score:.3f} on the {score_used} newer cases, the defaults "
        f"{base.default_score:.3f}: "
        + ("adopted" if base.adopted else f"defaults kept (adopted at +{MARGIN} or more)")
        if chosen != "default"
        else "the defaults scored best on the fit cases"
    )
    base.seconds = time.perf_counter() - t0
    return base


def tune(
    root: Path,
    store: NoteStore,
    *,
    n_cases: int = CASES,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TuneResult:
    """Fit on the history of the repository at ``root`` and store the run in ``store``;
    adopted weights rank every question after it."""
    result = fit(root, n_cases=n_cases, progress=progress, cancel=cancel)
    with store.write() as conn:
        store.save_tuning(conn, result.record())
    log.info("tuning: %s", result.reason)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sleepy_repo.tune REPO [--cases N]``: the sleeper's child process. It fits,
    stores the run in REPO's store and exits 0; SIGTERM stops it, its worktree removed."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="python -m sleepy_repo.tune")
    parser.add_argument("repo")
    parser.add_argument("--cases", type=int, default=CASES)
    args = parser.parse_args(argv)

    import os

    stopped: list[int] = []
    parent = os.getppid()
    # SIGTERM only sets a flag, checked between cases: the worktree is always removed
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    try:
        api.tune(
            api.open_repo(args.repo),
            cases=args.cases,
            cancel=lambda: bool(stopped) or os.getppid() != parent,  # or the sleeper died
        )
    except TuningCancelled:
        return 130
    except SleepyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def due(root: Path, store: NoteStore, retune_commits: int) -> bool:
    """Whether the sleeper should tune: never tuned, tuned for other default weights, or
    HEAD is ``retune_commits`` or more commits past the newest run's head."""
    with store.read() as conn:
        run = store.latest_tuning(conn)
    if run is None or run["detail"].get("defaults") != defaults_key():
        return True
    try:
        ahead = int(_git(root, "rev-list", "--count", f"{run['head']}..HEAD").strip())
    except (SleepyError, ValueError):
        return True  # the old head is gone (history rewritten): tune again
    return ahead >= retune_commits


if __name__ == "__main__":
    raise SystemExit(main())
