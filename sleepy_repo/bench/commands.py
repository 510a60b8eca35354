"""``sleepy-repo bench ...``: parser registration and dispatch for the benchmarks.

Heavy imports stay inside the command functions so ``sleepy-repo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _emit(result: dict[str, Any], as_json: bool, out_file: str | None, table: str) -> None:
    if out_file:
        Path(out_file).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(table + "\n")


def cmd_index(
    path: str | None, as_json: bool, out_file: str | None, keep: bool, repeat: int
) -> int:
    from sleepy_repo.bench.index import render_table, run_index_bench
    from sleepy_repo.errors import SleepyError

    if repeat < 1:
        raise SleepyError(f"--repeat must be >= 1, got {repeat}")
    result = run_index_bench(Path(path) if path else None, keep=keep, repeat=repeat)
    _emit(result, as_json, out_file, render_table(result))
    return 0


def cmd_mine(
    repo: str | None, n: int, out_file: str | None, rejected_file: str | None, opts: dict[str, Any]
) -> int:
    from sleepy_repo.bench.localize import repo_root
    from sleepy_repo.bench.mine import MineOptions, mine, write_cases, write_rejected

    root = repo_root(Path(repo) if repo else Path.cwd())
    result = mine(root, MineOptions(n=n, **opts))
    if out_file:
        with open(out_file, "w", encoding="utf-8") as fh:
            write_cases(result.cases, fh)
    else:
        write_cases(result.cases, sys.stdout)
    if rejected_file:
        with open(rejected_file, "w", encoding="utf-8") as fh:
            write_rejected(result.rejected, fh)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.reason_counts().items()))
    sys.stderr.write(
        f"mined {len(result.cases)} cases from {result.walked} commits of "
        f"{root}" + (f"; rejected: {counts}" if counts else "") + "\n"
    )
    return 0


def cmd_localize(
    repo: str | None,
    cases_file: str,
    budgets: list[int] | None,
    strategy_names: list[str] | None,
    as_json: bool,
    limit: int | None,
    out_dir: str,
    aider_python: str | None,
    answer_model: str | None = None,
    model_backend: str | None = None,
    model_paths: list[str] | None = None,
    model_share: float | None = None,
) -> int:
    from rich.console import Console

    from sleepy_repo.bench import report
    from sleepy_repo.bench.aider_map import AiderMap
    from sleepy_repo.bench.localize import DEFAULT_BUDGETS, repo_root, run_localize
    from sleepy_repo.bench.mine import read_cases
    from sleepy_repo.bench.reader import Reader
    from sleepy_repo.bench.strategies import DEFAULT_STRATEGIES, ModelNotes, Strategy, select
    from sleepy_repo.config import load_config
    from sleepy_repo.errors import SleepyError
    from sleepy_repo.models.structured import get_model

    root = repo_root(Path(repo) if repo else Path.cwd())
    config = load_config(root)
    overrides: dict[str, Strategy] = {"aider-map": AiderMap(aider_python)} if aider_python else {}
    notes_backend = model_backend or config.notes.backend
    if model_share is not None and not 0 < model_share <= 1:
        raise SleepyError(f"--model-share must be in (0, 1], got {model_share}")
    overrides["model"] = ModelNotes(
        notes_backend if notes_backend != "static" else None, model_paths or (), model_share
    )
    strategies = select(strategy_names or DEFAULT_STRATEGIES, overrides)
    reader = None
    if answer_model:
        model = get_model(answer_model, config)
        if model is None:
            raise SleepyError("--answer-model static is no model: pass local, anthropic or fake")
        model.ready()
        reader = Reader(model)
    err = Console(stderr=True, highlight=False)
    with _bench_progress(err) as progress:
        result = run_localize(
            root,
            read_cases(Path(cases_file)),
            strategies,
            budgets=budgets or DEFAULT_BUDGETS,
            limit=limit,
            command=sys.argv,
            cases_file=str(Path(cases_file).resolve()),
            progress=progress,
            reader=reader,
            config=config,
        )
    report.save(result, Path(out_dir))
    if result["png_skipped"]:
        err.print(result["png_skipped"])
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    else:
        console = Console(highlight=False, soft_wrap=False)
        if not console.is_terminal:  # a file or a pipe: room for every column
            console.width = max(console.width, 120)
        report.render(result, console)
        png = (
            result["png"]
            or "no PNG (matplotlib is not installed: pip install 'sleepy-repo[bench]')"
        )
        console.print(f"wrote {result['json']} and {png}", markup=False)
    return 0


@contextlib.contextmanager
def _bench_progress(console: Any) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal, else nothing."""
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("localize {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield update


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("budgets must be positive integers")
    return values


def _name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    p = sub.add_parser("index", help="time static indexing (default corpus: the stdlib)")
    p.add_argument(
        "path",
        nargs="?",
        help="directory to copy and index "
        "(default: this Python's standard library without site-packages)",
    )
    p.add_argument("--json", action="store_true", help="print the JSON result")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="time the baseline and a cold index N times, alternating, and report the "
        "median ratio (shared machines are noisy; default 1)",
    )

    p = sub.add_parser(
        "mine",
        help="mine localization cases (commit message -> files changed) from history",
        description="Write JSONL cases {state, commit, query, gold_files}: the most recent "
        "non-merge commits with a descriptive message that modify 1-4 source files "
        "(see `sleepy_repo.bench.mine` for every filter).",
    )
    p.add_argument("--repo", help="git repository (default: the enclosing one of the cwd)")
    p.add_argument("-n", type=int, default=100, help="number of cases (default 100)")
    p.add_argument("--out", help="write the cases here (default: stdout)")
    p.add_argument("--rev", default="HEAD", help="walk the history of this revision")
    p.add_argument(
        "--first-parent", action="store_true", help="follow only the first parent of merges"
    )
    p.add_argument("--min-files", type=int, default=1, help="min modified source files")
    p.add_argument("--max-files", type=int, default=4, help="max modified source files")
    p.add_argument(
        "--min-message-chars", type=int, default=25, help="min length of the cleaned message"
    )
    p.add_argument(
        "--max-per-gold",
        type=int,
        default=2,
        help="max cases with the same gold file set (newest kept)",
    )
    p.add_argument(
        "--test-glob",
        action="append",
        default=[],
        metavar="GLOB",
        help="gitignore-style pattern of test files (repeatable; added to the "
        "defaults: tests/ dirs and Python/JS/TS/Go/Rust test file names)",
    )
    p.add_argument(
        "--no-default-test-globs", action="store_true", help="use only the --test-glob patterns"
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help="turn off one subject keyword rule (repeatable): version-bump, "
        "typo, style, format, ci, docs",
    )
    p.add_argument(
        "--rejected", metavar="FILE", help="write the rejected commits with their reasons (JSONL)"
    )

    p = sub.add_parser(
        "localize",
        help="localization benchmark: gold-line coverage and hit@k per strategy and budget",
        description="Walk the cases oldest state first in one temporary worktree, refresh "
        "the store incrementally, and report gold-line coverage, pointer coverage, symbol "
        "and file hit@k and tokens per strategy and budget, the tokens each strategy needs "
        "to reach raw's coverage at 2,000 and 4,000 tokens, the hit@3 headline against the "
        "better of raw and paths, and sleep-time cost (docs/benchmark.md).",
    )
    p.add_argument("--repo", help="git repository (default: the enclosing one of the cwd)")
    p.add_argument(
        "--cases",
        required=True,
        help="JSONL file from `bench mine`, or of written questions "
        "{state, query, gold_files, gold_symbols} (e.g. bench/questions/click.jsonl)",
    )
    p.add_argument(
        "--budgets",
        type=_int_list,
        help="comma-separated token budgets (default: 250,375,500,750,1000,1500,"
        "2000,3000,4000,6000,8000)",
    )
    p.add_argument(
        "--strategies",
        type=_name_list,
        help="comma-separated strategies (default: raw,paths,whole-files,static,"
        "static-paths,aider-map)",
    )
    p.add_argument("--json", action="store_true", help="print the JSON result, not tables")
    p.add_argument("--limit", type=int, help="only the N most recent cases")
    p.add_argument(
        "--out-dir",
        default="sleepy-bench-localize",
        help="where localize.json and pareto.png go (default: ./sleepy-bench-localize)",
    )
    p.add_argument(
        "--answer-model",
        choices=["local", "anthropic", "fake"],
        help="a reader model that reads each served context and names the files to change "
        "(scored with F1; its tokens are the test-time tokens)",
    )
    p.add_argument(
        "--model-backend",
        choices=["local", "anthropic", "fake"],
        help="the backend writing notes for the `model` strategy at each state "
        "(default: [notes] backend of the repo's config)",
    )
    p.add_argument(
        "--model-paths",
        type=_name_list,
        help="comma-separated path prefixes that get model notes (default: every module; "
        "the others keep static notes)",
    )
    p.add_argument(
        "--model-share",
        type=float,
        default=None,
        help="give model notes only to this share of the modules (under --model-paths), the "
        "planner's top ones at each state: sleep-time work spent in priority order",
    )
    p.add_argument(
        "--aider-python",
        help="python of an environment with aider-chat "
        "installed (default: install it once into the cache dir; also "
        "$SLEEPY_REPO_AIDER_PYTHON)",
    )


def dispatch(args: argparse.Namespace) -> int:
    if args.bench_command == "index":
        return cmd_index(args.path, args.json, args.out, args.keep, args.repeat)
    if args.bench_command == "mine":
        from sleepy_repo.bench.mine import DEFAULT_TEST_GLOBS

        globs = [] if args.no_default_test_globs else list(DEFAULT_TEST_GLOBS)
        opts = {
            "rev": args.rev,
            "first_parent": args.first_parent,
            "min_files": args.min_files,
            "max_files": args.max_files,
            "min_message_chars": args.min_message_chars,
            "max_per_gold": args.max_per_gold,
            "test_globs": tuple(globs + args.test_glob),
            "allow": frozenset(args.allow),
        }
        return cmd_mine(args.repo, args.n, args.out, args.rejected, opts)
    if args.bench_command == "localize":
        return cmd_localize(
            args.repo,
            args.cases,
            args.budgets,
            args.strategies,
            args.json,
            args.limit,
            args.out_dir,
            args.aider_python,
            args.answer_model,
            args.model_backend,
            args.model_paths,
            args.model_share,
        )
    raise AssertionError(f"unknown bench command {args.bench_command}")
