"""``sleepy-repo bench localize``: commit message -> files changed, per strategy and budget.

The SWE-Features analog of the sleep-time compute paper (DESIGN §6). Cases come from
``bench mine``. For each case the strategies get the question (the cleaned commit message)
and the repository at the case's *state* (the commit's parent), and serve a context per
token budget. Nothing else: no strategy sees the commit's diff or any later commit.

The walk
    Cases are taken in history order, oldest state first (``git rev-list --date-order``
    over the states). Every state is checked out in ONE temporary worktree
    (``git worktree add --detach`` for the first, ``git checkout --detach`` for the next,
    so only files that changed get new mtimes), and the store in ``<worktree>/.sleepy/``
    is refreshed incrementally with ``api.refresh``: unchanged modules keep their notes.
    The worktree is removed at the end, also on error or Ctrl-C.

The metrics
    **gold-line coverage** (the share of the case's gold lines whose text a served code
    item carries), **pointer coverage** and **symbol hit@k**: see
    ``sleepy_repo.bench.gold`` and docs/benchmark.md. **hit@k** (k = 1, 3, 5) of one
    context = |gold ∩ F_k| / min(k, |gold|), where F_k is the first k *distinct* files the
    context cites, in context order (for ``aider-map``, in aider's rank order: its map
    lists files alphabetically). Dumping many paths earns nothing beyond the first k; a
    case with more gold files than k can still score 1. Reported values are means over
    cases (over the cases that have gold lines, or gold symbols), with the mean tokens
    actually served.

    **leak**: a result whose served text contains the case's own commit subject (20
    characters or more) is flagged; the report counts them per strategy. History notes
    must never serve the commit a case asks about.

Sleep-time cost
    Per strategy family (``none``, ``static``, later model backends): tokens spent per
    state (the ledger delta, ``sum(input_tokens + output_tokens + cache_write_tokens)``)
    and the share of modules re-noted (notes written by the refresh / modules). Static
    notes cost no tokens, but the columns are there.

The headline, the table and the Pareto plot are built by ``sleepy_repo.bench.report``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleepy_repo import __version__, api
from sleepy_repo.bench import predict, report
from sleepy_repo.bench.aider_map import AiderMapError
from sleepy_repo.bench.gold import (
    POINTER_MAX_LINES,
    Gold,
    case_gold,
    coverage,
    pointer_coverage,
    served_symbols,
    symbol_hit,
)
from sleepy_repo.bench.mine import Case
from sleepy_repo.bench.reader import Reader
from sleepy_repo.bench.strategies import Served, StateEnv, Strategy, StrategyError
from sleepy_repo.config import CONFIG_DIR, Config, StoreConfig, load_config
from sleepy_repo.errors import RepoError, SleepyError
from sleepy_repo.redact import DenyList
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DEFAULT_BUDGETS: tuple[int, ...] = (250, 375, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
KS: tuple[int, ...] = (1, 3, 5)
FILES_KEPT = 10  # distinct files kept per case result in the JSON, for inspection

#: (cases done, cases total, what is happening)
Progress = Callable[[int, int, str], None]


def hit_at_k(files: Sequence[str], gold: Sequence[str], k: int) -> float:
    """|gold ∩ first k distinct files, in order| / min(k, |gold|)."""
    if not gold:
        raise SleepyError("a case needs at least one gold file")
    first = list(dict.fromkeys(files))[:k]
    return len(set(first) & set(gold)) / min(k, len(set(gold)))


# -- git -----------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RepoError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout


def repo_root(path: Path) -> Path:
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").strip())
    except RepoError:
        raise RepoError(f"{path} is not inside a git repository") from None


def history_order(repo: Path, cases: Sequence[Case]) -> list[Case]:
    """The cases with their states oldest first (ties: the file's order)."""
    states = list(dict.fromkeys(c.state for c in cases))
    full: dict[str, str] = {}
    for s in states:
        try:
            full[s] = _git(repo, "rev-parse", "--verify", "-q", f"{s}^{{commit}}").strip()
        except RepoError:
            raise RepoError(
                f"state {s} of the cases is not a commit of {repo}; were the "
                "cases mined from another repository?"
            ) from None
    position = {
        sha: i
        for i, sha in enumerate(
            reversed(_git(repo, "rev-list", "--date-order", *full.values()).split())
        )
    }
    order = sorted(range(len(cases)), key=lambda i: (position[full[cases[i].state]], i))
    return [cases[i] for i in order]


# git in a temporary worktree: no hook of the user's runs, no LFS download, no lazy fetch
# of a partial clone's missing objects (a case whose state lacks them is left out)
_QUIET_GIT = ("-c", "core.hooksPath=/dev/null")
_QUIET_ENV = {"GIT_LFS_SKIP_SMUDGE": "1", "GIT_NO_LAZY_FETCH": "1"}
WORKTREE_PREFIX = "sleepy-bench-localize-"


def _quiet_git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *_QUIET_GIT, "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **_QUIET_ENV},
    )
    if proc.returncode != 0:
        raise RepoError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout


@contextlib.contextmanager
def worktree(repo: Path, first: str, prefix: str = WORKTREE_PREFIX) -> Iterator[Path]:
    """One detached worktree in a temp dir, removed at the end whatever happens (only this
    one: the repository's other worktrees are never pruned)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    path = tmp / "worktree"
    try:
        _quiet_git(repo, "worktree", "add", "--detach", "--quiet", str(path), first)
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_worktrees(repo: Path, prefix: str) -> int:
    """Remove the repository's worktrees in temp dirs named ``prefix`` (left by a process
    that was killed); returns how many."""
    gone = 0
    for line in _git(repo, "worktree", "list", "--porcelain").splitlines():
        if not line.startswith("worktree "):
            continue
        path = Path(line.removeprefix("worktree "))
        if path.parent.name.startswith(prefix) and path.parent.parent == Path(
            tempfile.gettempdir()
        ):
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
                capture_output=True,
            )
            shutil.rmtree(path.parent, ignore_errors=True)
            gone += 1
    return gone


def checkout(path: Path, state: str) -> None:
    _quiet_git(path, "checkout", "--detach", "--force", "--quiet", state)


# -- the run -------------------------------------------------------------------------------
@dataclass
class _Track:
    strategy: Strategy
    wall_s: float = 0.0
    setup_s: float = 0.0
    reader_s: float = 0.0
    skipped: str | None = None


_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _ledger(repo: api.Repo) -> dict[str, int]:
    """The ledger's totals: input, output, cache-read and cache-write tokens."""
    with repo.store.read() as conn:
        row = conn.execute(
            "SELECT " + ", ".join(f"coalesce(sum({k}), 0)" for k in _USAGE_KEYS) + " FROM ledger"
        ).fetchone()
    return {k: int(v) for k, v in zip(_USAGE_KEYS, row, strict=True)}


def _spent(repo: api.Repo, before: dict[str, int]) -> dict[str, int]:
    """Ledger delta since ``before``; ``tokens`` = input + output + cache-write."""
    after = _ledger(repo)
    delta = {k: after[k] - before[k] for k in _USAGE_KEYS}
    tokens = delta["input_tokens"] + delta["output_tokens"] + delta["cache_write_tokens"]
    return {"tokens": tokens, **delta}


def family_repo(root: Path, family: str, config: Config, path: str | None = None) -> api.Repo:
    """The store of ``family``'s model notes in the worktree ``root`` (beside the main
    one, so strategies on static notes never see model notes); with ``path``, the store
    there (the static one). Always inside the worktree, whatever the config says: an
    absolute ``[store] path`` would otherwise be the user's own store."""
    cfg = dataclasses.replace(config, store=StoreConfig(path=path or f".sleepy/bench-{family}"))
    store = NoteStore(cfg.store_dir(root))
    store.ensure()
    return api.Repo(root=root, is_git=True, config=cfg, store=store)


def _model_paths(root: Path, prefixes: Sequence[str]) -> list[str] | None:
    """Absolute paths of the tracked files under ``prefixes`` (None = every module)."""
    if not prefixes:
        return None
    out = _git(root, "-c", "core.quotePath=false", "ls-files", "-z", "--", *prefixes)
    return [str(root / p) for p in out.split("\0") if p]


def _planner_top(
    repo: api.Repo, ranked: list[str], paths: list[str] | None, share: float
) -> list[str]:
    """The planner's top ``share`` of ``paths`` (absolute; None = every indexed module),
    ``ranked`` being the planner's order at this state; best first, at least one."""
    root = repo.root.resolve()
    deny = DenyList(repo.config.scan.deny)  # never sent to a model: not part of the share
    wanted = None
    if paths is not None:
        wanted = {Path(p).resolve().relative_to(root).as_posix() for p in paths}
    eligible = [p for p in ranked if (wanted is None or p in wanted) and not deny.denied(p)]
    if not eligible:
        return []
    return [str(root / p) for p in eligible[: max(1, round(share * len(eligible)))]]


def _refresh(
    repo: api.Repo,
    families: Sequence[str],
    family_repos: Mapping[str, api.Repo] | None = None,
    model_paths: Mapping[str, Sequence[str]] | None = None,
    model_share: Mapping[str, float | None] | None = None,
    planner_order: Callable[[], list[str]] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]], float]:
    """Refresh the stores for one state; per family: tokens, notes written and modules,
    and the tokens by kind (input, output, cache read/write: what pricing needs). Model
    families refresh their own store (``family_repos``), limited to ``model_paths[family]``
    when given, and to the planner's top ``model_share[family]`` of those when given
    (``planner_order``: the planner's order after the static refresh)."""
    t0 = time.perf_counter()
    before = _ledger(repo)
    result = api.refresh(repo, backend="static")
    modules = int(result["modules"])
    usage: dict[str, dict[str, int]] = {
        "none": {"tokens": 0, **dict.fromkeys(_USAGE_KEYS, 0)},
        "static": _spent(repo, before),
    }
    out: dict[str, dict[str, Any]] = {
        "none": {"tokens": 0, "written": 0, "modules": modules},
        "static": {
            "tokens": usage["static"]["tokens"],
            "written": int(result["notes"]["static"]["written"]),
            "modules": modules,
        },
    }
    for family in families:
        if family in out:
            continue
        target = (family_repos or {}).get(family, repo)
        before = _ledger(target)
        paths = _model_paths(target.root, (model_paths or {}).get(family, ()))
        share = (model_share or {}).get(family)
        if share is not None:
            assert planner_order is not None, "model_share needs the planner's order"
            paths = _planner_top(repo, planner_order(), paths, share)
        if paths == []:  # no module under the prefixes at this state: index only
            r = api.refresh(target, backend="static")
            written = 0
        else:
            r = api.refresh(target, paths, backend=family)
            written = int(r["notes"].get(family, {}).get("written", 0))
        usage[family] = _spent(target, before)
        out[family] = {
            "tokens": usage[family]["tokens"],
            "written": written,
            "modules": len(paths) if paths is not None else int(r["modules"]),
        }
        if share is not None and paths is not None:  # the modules the planner chose
            top = target.root.resolve()
            out[family]["noted"] = [Path(p).resolve().relative_to(top).as_posix() for p in paths]
    return {f: out[f] for f in families}, {f: usage[f] for f in families}, time.perf_counter() - t0


def pricing(config: Config) -> dict[str, Any]:
    """The prices the amortized cost uses: the configured Anthropic model's."""
    model = config.notes.model or config.anthropic.model
    prices = config.anthropic.prices.get(model)
    if prices is None:
        raise SleepyError(f"no price for model {model!r} in [anthropic.prices]")
    return {"model": model, "usd_per_million": dict(prices)}


def run_localize(
    repo_path: Path,
    cases: Sequence[Case],
    strategies: Mapping[str, Strategy],
    *,
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    limit: int | None = None,
    command: Sequence[str] | None = None,
    cases_file: str | None = None,
    progress: Progress | None = None,
    reader: Reader | None = None,
    config: Config | None = None,
) -> dict[str, Any]:
    """Run every strategy on every case and return the result (``report`` adds the
    summary: per-budget means, headline, sleep-time cost and amortized cost per query).

    ``reader``: a model that reads every served context and names the files to change
    (scored with F1). ``config``: model backends' settings and prices (default: the
    repository's ``.sleepy/config.toml``)."""
    budgets = sorted(set(budgets))
    if not budgets or budgets[0] <= 0:
        raise SleepyError("budgets must be positive numbers of tokens")
    if not strategies:
        raise SleepyError("no strategies to run")
    root = repo_root(repo_path)
    config = config or load_config(root)
    ordered = history_order(root, cases)
    if limit is not None:
        ordered = ordered[-limit:] if limit > 0 else []
    if not ordered:
        raise SleepyError("no cases to run (is the cases file empty?)")
    t_start = time.perf_counter()

    tracks = {name: _Track(s) for name, s in strategies.items()}
    try:
        for name, track in tracks.items():
            t0 = time.perf_counter()
            track.skipped = track.strategy.setup()
            track.setup_s = time.perf_counter() - t0
            if track.skipped:
                log.warning("skipping %s: %s", name, track.skipped)
        families = list(
            dict.fromkeys(
                ["none", "static", *(t.strategy.family for t in tracks.values() if not t.skipped)]
            )
        )
        model_paths = {
            t.strategy.family: tuple(getattr(t.strategy, "paths", ()))
            for t in tracks.values()
            if not t.skipped and t.strategy.family not in ("none", "static")
        }
        model_share = {
            t.strategy.family: getattr(t.strategy, "share", None)
            for t in tracks.values()
            if not t.skipped and t.strategy.family not in ("none", "static")
        }
        family_repos: dict[str, api.Repo] = {}
        per_state: list[dict[str, Any]] = []
        per_case: list[dict[str, Any]] = []
        refresh_s = 0.0
        with worktree(root, ordered[0].state) as wt:
            repo: api.Repo | None = None
            current: str | None = None
            env: StateEnv | None = None
            orders: dict[str, list[str]] = {}
            for i, case in enumerate(ordered):
                if case.state != current:
                    if progress:
                        progress(i, len(ordered), f"refresh {case.state[:10]}")
                    checkout(wt, case.state)
                    repo = repo or family_repo(wt, "", config, path=CONFIG_DIR)
                    for family in model_paths:
                        if family not in family_repos:
                            family_repos[family] = family_repo(wt, family, config)
                    # the planner ranks each state once: for --model-share and the report
                    ranked = functools.cache(functools.partial(predict.planner_order, repo))
                    sleep, usage, secs = _refresh(
                        repo, families, family_repos, model_paths, model_share, ranked
                    )
                    refresh_s += secs
                    per_state.append(
                        {
                            "state": case.state,
                            "cases": 0,
                            "refresh_s": round(secs, 3),
                            "families": sleep,
                            "usage": usage,
                        }
                    )
                    current = case.state
                    env = StateEnv(root=wt, state=case.state, repo=repo, family_repos=family_repos)
                    orders = predict.state_orders(ranked(), case.state)
                assert env is not None
                per_state[-1]["cases"] += 1
                if progress:
                    progress(i, len(ordered), case.label[:10])
                rec = _run_case(case, env, tracks, budgets, reader)
                rec["planner"] = predict.case_record(orders, case.gold_files)
                per_case.append(rec)
        if progress:
            progress(len(ordered), len(ordered), "done")
    finally:
        for track in tracks.values():
            with contextlib.suppress(Exception):
                track.strategy.close()

    for name, track in tracks.items():
        if track.skipped:
            for rec in per_case:
                rec["results"].pop(name, None)
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "localize",
        "sleepy_repo_version": __version__,
        "command": list(command if command is not None else sys.argv),
        "repo": str(root),
        "cases_file": cases_file,
        "commit_range": {
            "oldest_state": ordered[0].state,
            "newest_state": ordered[-1].state,
            "newest_commit": ordered[-1].commit,
            "states": len(per_state),
        },
        "cases": len(ordered),
        "budgets": budgets,
        "metric": (
            "coverage = share of gold lines (the '-' side of git diff -U0 state commit per "
            "gold file; a pure insertion: the line it follows; a question: its gold "
            "symbols' spans) whose text a served code item carries at that line; pointer "
            "coverage = share inside a served span or citation of at most "
            f"{POINTER_MAX_LINES} lines (a code item's span always); symbol hit@k = "
            "|gold symbols ∩ first k distinct served symbols| / min(k, |gold symbols|); "
            "hit@k = |gold ∩ first k distinct files the context cites, in context "
            "order| / min(k, |gold|); means over cases (docs/benchmark.md)"
        ),
        "strategies": {
            name: {
                "family": t.strategy.family,
                "description": t.strategy.description,
                "status": "skipped" if t.skipped else "ok",
                "skip_reason": t.skipped,
                "wall_s": round(t.wall_s, 3),
                "setup_s": round(t.setup_s, 3),
                "reader_s": round(t.reader_s, 3),
            }
            for name, t in tracks.items()
        },
        "reader": (
            {
                "backend": reader.model.name,
                "model": reader.model.model,
                "calls": reader.calls,
                "failures": reader.failures,
                "metric": "F1 of the files the reader names (from the context's files) "
                "against the gold files; its input + output tokens are the test-time tokens",
            }
            if reader is not None
            else None
        ),
        "pricing": pricing(config),
        "per_state": per_state,
        "per_case": per_case,
        "refresh_s": round(refresh_s, 3),
        "wall_s": round(time.perf_counter() - t_start, 3),
    }
    return report.summarize(result)


def _run_case(
    case: Case,
    env: StateEnv,
    tracks: Mapping[str, _Track],
    budgets: Sequence[int],
    reader: Reader | None = None,
) -> dict[str, Any]:
    gold = case_gold(env.root, case)
    rec: dict[str, Any] = {
        "state": case.state,
        "commit": case.commit,
        "query": case.query,
        "gold_files": case.gold_files,
        "gold_lines": gold.per_file(),
        "gold_symbols": [f"{p}::{q}" for p, q in gold.symbols],
        "results": {},
    }
    if case.id:
        rec["id"] = case.id
    if gold.missing_symbols:
        rec["missing_symbols"] = gold.missing_symbols
    for name, track in tracks.items():
        if track.skipped:
            continue
        t0 = time.perf_counter()
        try:
            served = track.strategy.run(env, case.query, budgets)
        except (StrategyError, AiderMapError) as exc:
            what = f"commit {case.label}" if case.commit else f"question {case.label}"
            track.skipped = f"failed on {what}: {exc}"
            log.warning("dropping %s: %s", name, track.skipped)
            continue
        finally:
            track.wall_s += time.perf_counter() - t0
        if len(served) != len(budgets):
            raise SleepyError(
                f"strategy {name} served {len(served)} contexts for {len(budgets)} budgets"
            )
        scores = [_score(s, b, case, gold, env.root) for s, b in zip(served, budgets, strict=True)]
        if reader is not None:
            t0 = time.perf_counter()
            for score, s in zip(scores, served, strict=True):
                score["reader"] = reader.locate(case.query, s).to_json(case.gold_files)
            track.reader_s += time.perf_counter() - t0
        rec["results"][name] = scores
    return rec


def _score(served: Served, budget: int, case: Case, gold: Gold, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"budget": budget, "tokens": served.tokens}
    out["coverage"] = coverage(gold, served.items)
    out["pointer_coverage"] = pointer_coverage(gold, served.items)
    symbols = served_symbols(root, served.items)
    for k in KS:
        out[f"symbol_hit@{k}"] = symbol_hit(gold, symbols, k)
    for k in KS:
        out[f"hit@{k}"] = hit_at_k(served.files, case.gold_files, k)
    out["leak"] = leaked(case, served.text)
    out["files"] = list(dict.fromkeys(served.files))[:FILES_KEPT]
    return out


LEAK_MIN_CHARS = 20


def leaked(case: Case, text: str) -> bool:
    """Whether ``text`` holds the case's own commit subject (see the module docstring)."""
    if not case.commit:
        return False
    subject = case.query.splitlines()[0].strip() if case.query.strip() else ""
    return len(subject) >= LEAK_MIN_CHARS and subject in text
