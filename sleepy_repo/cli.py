"""``sleepy-repo``: argument parsing and dispatch only. Each command is a small function
that calls ``sleepy_repo.api`` and returns an exit code.

Exit codes: 0 success, 1 a check failed, 2 an expected error (``SleepyError``: the message
says what to do), 130 interrupted, 3 a bug (with a traceback in the log).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sleepy_repo import __version__, api
from sleepy_repo.config import BACKENDS, EFFORTS
from sleepy_repo.errors import SleepyError

log = logging.getLogger("sleepy_repo")

# C0 controls but newline and tab, DEL and C1: a file name or a docstring that carries ESC
# sequences must not recolour, retitle or rewrite the user's terminal (rich passes ESC on)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def name(text: str) -> str:
    """A path or name from the repository, on one line: newlines escaped too."""
    return _visible(text).replace("\n", "\\n")


class _Console(Console):
    """Human output: control characters in what it prints are shown escaped."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(_visible(o) if isinstance(o, str) else o for o in objects), **kwargs)


err = _Console(stderr=True, highlight=False, soft_wrap=True)
out = _Console(highlight=False, soft_wrap=True, markup=False)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def _progress(enabled: bool) -> Iterator[api.Progress | None]:
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    # redrawn from the caller's thread (no refresh thread): the indexer forks its worker
    # processes only from a single-threaded process (``index.start_method``)
    with Progress(*columns, console=err, transient=True, auto_refresh=False) as bar:
        tasks: dict[str, Any] = {}
        drawn = [0.0]

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            now = time.monotonic()
            redraw = done >= total or now - drawn[0] >= 0.1
            if redraw:
                drawn[0] = now
            bar.update(tasks[phase], completed=done, total=total, refresh=redraw)

        yield update


# -- commands ------------------------------------------------------------------------------
def cmd_init(repo: str | None, rebuild: bool, as_json: bool) -> int:
    result = api.init(repo, rebuild=rebuild)
    if as_json:
        _print_json(result)
        return 0
    for written in result["written"]:
        out.print(f"wrote {written}")
    if result["moved_aside"]:
        out.print(f"moved the old store aside to {result['moved_aside']}")
    out.print(f"store ready at {result['store']}")
    return 0


def cmd_trust(repo: str | None, revoke: bool, as_json: bool) -> int:
    result = api.trust(repo, revoke=revoke)
    if as_json:
        _print_json(result)
    elif revoke:
        what = "no longer trusted" if result["revoked"] else "was not trusted"
        out.print(f"{result['config']}: {what}")
    else:
        out.print(
            f"trusted {result['config']} (sha256 {result['sha256'][:12]}): every key is "
            "honoured until the file changes; `sleepy-repo trust --revoke` undoes this"
        )
    return 0


def cmd_refresh(
    repo: str | None,
    paths: list[str],
    backend: str | None,
    effort: str | None,
    as_json: bool,
    budget_tokens: int | None = None,
    dry_run: bool = False,
) -> int:
    r = api.open_repo(repo)
    with _progress(not as_json) as progress:
        result = api.refresh(
            r,
            paths or None,
            backend=backend,
            effort=effort,
            progress=progress,
            budget_tokens=budget_tokens,
            dry_run=dry_run,
        )
    if as_json:
        _print_json(result)
        return 0
    for w in result["warnings"]:
        err.print(f"warning: {w}", style="yellow", markup=False)
    for s in result["skipped"]:
        err.print(f"skipped {name(s['path'])}: {s['reason']}", style="yellow", markup=False)
    for sub in result["submodules"]:
        err.print(f"skipped submodule {sub}", style="yellow", markup=False)
    notes = ", ".join(
        f"{b}: {n['written']} written, {n['reused']} reused"
        + (f", {len(n['failed'])} failed" if n["failed"] else "")
        for b, n in result["notes"].items()
    )
    out.print(
        f"{result['modules']} modules ({result['parsed']} parsed, "
        f"{len(result['removed'])} removed) in {result['seconds']:.2f}s; notes {notes}"
    )
    sem = result["semantic_index"]
    if sem["model"] and sem["modules"]:
        left = f", {sem['left']} modules left for the next refresh" if sem["left"] else ""
        out.print(
            f"semantic index ({sem['model']}): {sem['modules']} modules, {sem['units']} units "
            f"embedded in {sem['seconds']:.1f}s{left}"
        )
    elif sem.get("error"):  # a configured model that cannot load (off and no extra: quiet)
        err.print(f"semantic index: {sem['reason']}", style="yellow", markup=False)
    if result.get("model"):
        _print_model_run(result["model"], result["notes"][result["model"]["backend"]])
    if result.get("dry_run"):
        _print_plan(result["dry_run"])
    elif dry_run:
        out.print("dry run: no model backend is chosen; static notes cost nothing")
    return 0


def _print_model_run(m: dict[str, Any], notes: dict[str, Any]) -> None:
    for f in notes["failed"]:
        err.print(f"notes failed: {f['path']}: {f['error']}", style="yellow", markup=False)
    for n in m["not_sent"]:
        err.print(f"not sent: {n['path']}: {n['reason']}", markup=False)
    sp = m["spent"]
    out.print(
        f"{m['backend']} ({m['model']}): {sp['calls']} calls, {sp['input_tokens']:,} in + "
        f"{sp['output_tokens']:,} out tokens ({sp['cache_read_tokens']:,} cache read, "
        f"{sp['cache_write_tokens']:,} cache write), ${sp['cost_usd']:.4f}"
    )
    if m["queued"] or m["stopped"]:
        why = f": {m['stopped']}" if m["stopped"] else ""
        out.print(f"{m['queued']} modules left queued for later{why}")
    if m.get("batched"):
        out.print(f"{m['batched']} modules wait in a Message Batch; a later refresh collects them")


def _print_plan(plan: dict[str, Any]) -> None:
    out.print(
        f"dry run: {plan['backend']} ({plan['model']}, {plan['effort']}) would note "
        f"{plan['total']['modules']} modules ({plan['reused']} already have notes); no call made"
    )
    for t in plan["modules"]:
        out.print(
            f"  {t['path']}: {t['calls']} call(s), ~{t['input_tokens']:,} in + up to "
            f"{t['max_output_tokens']:,} out tokens, at most ${t['cost_usd']:.4f}"
        )
    for n in plan["not_sent"]:
        out.print(f"  not sent: {n['path']}: {n['reason']}")
    tot = plan["total"]
    out.print(
        f"estimate: ~{tot['input_tokens']:,} input + up to {tot['max_output_tokens']:,} output "
        f"tokens, at most ${tot['cost_usd']:.4f} (before prompt caching)"
    )


def cmd_status(repo: str | None, as_json: bool) -> int:
    s = api.status(api.open_repo(repo, create=False))
    if as_json:
        _print_json(s)
        return 0
    git_state = s["git"]["branch"] or "detached"
    where = f"git, {git_state}" if s["git"]["is_git"] else "not git"
    m = s["modules"]
    out.print(f"repo {s['repo']} ({where})")
    c = s["config"]
    if c["repo_file"]:
        trusted = "trusted" if c["trusted"] else "not trusted (`sleepy-repo trust` to trust it)"
        ignored = f"; ignored: {', '.join(c['ignored'])}" if c["ignored"] else ""
        out.print(f"config: {c['repo_file']} {trusted}{ignored}")
    out.print(
        f"modules: {m['indexed']} indexed, {m['skipped']} skipped; notes ({s['backend']}): "
        f"{m['fresh']} fresh, {m['stale']} stale, {m['missing']} missing"
    )
    out.print(
        f"queued {s['queued']}, failed {s['failed']}; spent {s['spent']['input_tokens']} "
        f"in + {s['spent']['output_tokens']} out tokens, ${s['spent']['cost_usd']:.4f}; "
        f"dropped citations {s['dropped_citations']['count']}"
    )
    unknown = s["spent"].get("unknown") or {}
    if unknown.get("calls"):
        out.print(
            f"{unknown['calls']} calls of unknown outcome (their process was killed), "
            f"estimate counted: {unknown['tokens']:,} tokens, ${unknown['cost_usd']:.4f}"
        )
    b = s.get("budget") or {}
    if b.get("reservations"):
        out.print(
            f"in flight: {b['reservations']} calls holding {b['held_tokens']:,} tokens, "
            f"${b['held_usd']:.4f}"
        )
    if b.get("daily_tokens") or b.get("daily_usd"):
        limit = " / ".join(
            x
            for x in (
                f"{b['daily_tokens']:,} tokens" if b["daily_tokens"] else "",
                f"${b['daily_usd']:.2f}" if b["daily_usd"] else "",
            )
            if x
        )
        out.print(
            f"today: {b['today_tokens']:,} tokens, ${b['today_usd']:.4f} (daily limit {limit})"
        )
    sl = s["sleeper"]
    idle = "never active" if sl["idle_for"] is None else f"idle for {sl['idle_for']:g} s"
    if sl["running"]:
        out.print(
            f"sleeper: pid {sl['pid']}, {sl['state']} ({idle}; needs {sl['idle_seconds']:g} s)"
        )
    else:
        out.print(f"sleeper: not running ({idle}); start one with `sleepy-repo watch`")
    if s["queue"]:
        out.print(f"queue ({len(s['queue'])} shown, most likely asked first):")
        for q in s["queue"][:10]:
            why = ", ".join(f"{k} {v:+.2f}" for k, v in q["reasons"].items() if v)
            error = f" [last error: {q['last_error']}]" if q["last_error"] else ""
            out.print(f"  {q['score']:6.2f}  {q['path']}  ({q['reason']}: {why}){error}")
    out.print(
        f"history notes: {s['history']['modules']} modules, {s['history']['stretches']} "
        "stretches of lines by the commit that last changed them"
    )
    t = s["tuning"]
    out.print(f"ranking weights: {t['weights']} ({t['reason']})")
    sem = s["semantic_index"]
    if sem["model"]:
        out.print(
            f"semantic index: {sem['model']}, {sem['modules']} modules embedded "
            f"({sem['mb']:.1f} MB, {sem['seconds']:.1f}s of idle time)"
        )
    else:
        out.print(f"semantic index: {sem['reason']}")
    for f in s["failed_jobs"][:10]:
        out.print(f"  failed {f['path']} ({f['backend']}): {f['error']}")
    if s["local_backend_off"]:
        out.print(f"local backend: {s['local_backend_off']}")
    pay = s["payoff"]
    out.print(
        f"payoff: {pay['hits']} note hits, ~{pay['tokens_saved']:,} tokens saved; "
        f"{len(pay['never_paid_off'])} modules' model notes never served"
    )
    for sk in s["skipped"]:
        out.print(f"  skipped {name(sk['path'])}: {sk['reason']}")
    return 0


def cmd_tune(repo: str | None, cases: int | None, as_json: bool) -> int:
    with _progress(not as_json) as progress:
        result = api.tune(api.open_repo(repo), cases=cases, progress=progress)
    if as_json:
        _print_json(result)
        return 0
    out.print(
        f"tuned on {result['fit_cases']} commits ({result['fit_range'] or 'none'}), scored on "
        f"the {result['score_cases']} newer ones in {result['seconds']:.0f}s: {result['reason']}"
    )
    return 0


def cmd_notes(repo: str | None, path: str, as_json: bool) -> int:
    n = api.module_notes(api.open_repo(repo, create=False), path)
    if as_json:
        _print_json(n)
        return 0
    if n["status"] == "overview":
        out.print(f"# repo overview note ({len(n['notes'])} note sets)")
    else:
        out.print(f"# {name(n['path'])} ({n['lang']}, blob {str(n['blob_sha'])[:12]})")
    if n["status"] not in ("indexed", "overview"):
        out.print(f"skipped: {n['reason']}")
    sem = n.get("semantic_index") or {}
    if sem.get("model"):
        out.print(f"semantic index: {sem['units']} units embedded with {sem['model']}")
    if n.get("history"):
        out.print("\n## history (the commits that last changed its lines)")
        for h in n["history"][:10]:
            out.print(f"- {h['commit'][:10]} {h['summary']} ({h['lines']} lines)")
    for note in n["notes"]:
        out.print(f"\n## {note['backend']} {note['model']} ({note['origin']})")
        for item in note["items"]:
            stale = " (stale)" if item["stale"] else ""
            head = f"Q: {item['question']}\n   " if item["question"] else ""
            out.print(
                f"- [{item['kind']}] {head}{item['text']}  "
                f"({item['path']}:{item['start_line']}-{item['end_line']}){stale}"
            )
    return 0


def cmd_context(repo: str | None, question: str, budget: int | None, as_json: bool) -> int:
    ctx = api.get_context(api.open_repo(repo, create=False), question, budget)
    if as_json:
        _print_json(ctx.to_json())
        return 0
    for item in ctx.items:
        out.print(item.render())
    err.print(f"{ctx.tokens}/{ctx.budget} tokens, {len(ctx.items)} items")
    return 0


def cmd_gc(repo: str | None, as_json: bool) -> int:
    result = api.gc(api.open_repo(repo))
    if as_json:
        _print_json(result)
        return 0
    out.print(
        f"removed {result['notes_removed']} notes ({result['items_removed']} items); "
        f"store {result['bytes_before']:,} -> {result['bytes_after']:,} bytes"
    )
    return 0


def cmd_watch(
    repo: str | None, backend: str | None, effort: str | None, poll: bool, as_json: bool
) -> int:
    """The watcher + idle-time sleeper daemon, until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from sleepy_repo import daemon

    r = api.open_repo(repo)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("sleepy_repo").setLevel(
        min(logging.getLogger().level, logging.INFO) or logging.INFO
    )

    def ready(stats: daemon.WatchStats) -> None:
        if stats.warning:
            err.print(f"warning: {stats.warning}", style="yellow", markup=False)
        err.print(
            f"watching {r.root} ({stats.mode}); model notes after "
            f"{r.config.sleep.idle_seconds:g} s idle; Ctrl-C to stop",
            markup=False,
        )

    try:
        stats = daemon.watch(
            r, backend=backend, effort=effort, force_polling=poll, stop=stop, on_ready=ready
        )
    except KeyboardInterrupt:
        stop.set()
        return 130
    summary = {
        "schema_version": api.SCHEMA_VERSION,
        "batches": stats.batches,
        "events": stats.events,
        "refreshes": stats.refreshes,
        "mode": stats.mode,
        "dependency_changed": sorted(stats.dependency_changed),
    }
    if as_json:
        _print_json(summary)
    else:
        err.print(f"stopped after {stats.batches} batches ({stats.events} events)")
    return 0


def cmd_ask(
    repo: str | None, question: str, budget: int | None, backend: str | None, as_json: bool
) -> int:
    result = api.ask(api.open_repo(repo, create=False), question, budget, backend=backend)
    if as_json:
        _print_json(result)
        return 0
    if result["answer"] is not None:
        out.print(result["markdown"], markup=False)
        err.print(result["message"], markup=False)
        return 0
    err.print(result["message"], markup=False)
    ctx = result["context"]
    for item in ctx["items"]:
        stale = " (stale)" if item["stale"] else ""
        out.print(f"{item['path']}:{item['start_line']}-{item['end_line']} [{item['kind']}]{stale}")
        out.print(f"  {item['text']}")
    err.print(f"{ctx['tokens']}/{ctx['budget']} tokens, {len(ctx['items'])} items")
    return 0


def cmd_mcp(repo: str | None) -> int:
    from sleepy_repo.mcp_server import serve  # the MCP SDK loads only for this command

    serve(repo)
    return 0


def cmd_lsp(repo: str | None, tcp: str | None, log_file: str | None) -> int:
    from sleepy_repo.lsp_server import serve  # pygls loads only for this command

    serve(repo, tcp=tcp, log_file=log_file)
    return 0


def cmd_hook(
    repo: str | None, files: list[str], check: bool, all_files: bool, as_json: bool
) -> int:
    """``hook pre-commit``: never fails a commit (problems are warnings on stderr), except
    with ``--check``, which exits 1 when a file's mirror is stale (for CI)."""
    try:
        r = api.open_repo(repo)
        if check:
            result = api.check_mirrors(r, files, all_files=all_files)
        else:
            result = api.pre_commit(r, files, all_files=all_files)
    except SleepyError as exc:
        if check:
            raise
        err.print(f"sleepy-repo: warning: notes not updated: {exc}", style="yellow", markup=False)
        return 0
    if as_json:
        _print_json(result)
    for w in result["warnings"]:
        err.print(f"sleepy-repo: warning: {w}", style="yellow", markup=False)
    for s in result.get("stale", []):
        err.print(f"stale notes: {s['path']}: {s['reason']} ({s['mirror']})", markup=False)
    if check and result["stale"]:
        err.print("run `sleepy-repo hook pre-commit --all` and commit .sleepy/notes/", markup=False)
        return 1
    return 0


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sleepy-repo", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"sleepy-repo {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output on stderr (-vv for debug)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--repo", help="repository (default: the enclosing git repo of the cwd)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = command(
        "init", "write .sleepy/config.toml, ignore the index in .gitignore, create the store"
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="move a corrupt or foreign index.db aside and build a new one",
    )

    p = command(
        "trust",
        "honour every key of this repository's .sleepy/config.toml (until the file changes)",
    )
    p.add_argument("--revoke", action="store_true", help="stop trusting the repository's config")

    p = command("refresh", "index changed files and write missing notes now")
    p.add_argument("paths", nargs="*", help="only these files (default: all)")
    p.add_argument("--backend", choices=BACKENDS, help="notes backend (default: from config)")
    p.add_argument("--effort", choices=EFFORTS, help="effort level for model backends")
    p.add_argument(
        "--budget-tokens",
        type=int,
        metavar="N",
        help="model token budget for this refresh (default: [budget] per_refresh_tokens)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="price the model work (modules, tokens, dollars) without calling the model",
    )

    command("status", "modules, fresh/stale/missing notes, queue, spending")

    p = command(
        "tune",
        "fit the ranking's weights on this repository's past commits; adopt them if they "
        "score better on the newer ones",
    )
    p.add_argument(
        "--cases", type=int, metavar="N", help="recent commits to learn from (default 60)"
    )

    p = command("notes", "the notes of one module")
    p.add_argument("path")

    p = command("context", "cited context for a question, packed into a token budget")
    p.add_argument("question")
    p.add_argument("--budget", type=int, help="token budget (default: from config, 1500)")

    command("gc", "drop notes of blobs no longer reachable; compact the store")

    p = command("ask", "answer a question with citations from the packed context")
    p.add_argument("question")
    p.add_argument("--budget", type=int, help="token budget (default: from config, 1500)")
    p.add_argument(
        "--backend",
        "--answer-backend",
        dest="answer_backend",
        choices=["static", "anthropic", "local", "fake"],
        help="the answering model (default: [notes] backend; static = no model, the context)",
    )

    command("mcp", "the MCP server on stdio (stdout carries protocol only)", json_flag=False)

    p = command(
        "lsp",
        "the language server (stdio by default; stdout carries protocol only)",
        json_flag=False,
    )
    p.add_argument("--tcp", metavar="HOST:PORT", help="serve on a TCP socket instead of stdio")
    p.add_argument("--log-file", metavar="FILE", help="write the log here instead of stderr")

    p = command("watch", "watch the repo: static notes at once, model notes while idle")
    p.add_argument("--backend", choices=BACKENDS, help="notes backend (default: from config)")
    p.add_argument("--effort", choices=EFFORTS, help="effort level for model backends")
    p.add_argument(
        "--poll", action="store_true", help="poll `git status` instead of file-system events"
    )

    hooks = sub.add_parser("hook", help="git hook entry points (see .pre-commit-hooks.yaml)")
    hook_sub = hooks.add_subparsers(dest="hook", required=True, metavar="HOOK")
    hook_help = "notes and their markdown mirror for staged files (never blocks a commit)"
    p = hook_sub.add_parser("pre-commit", help=hook_help, description=hook_help)
    p.add_argument("--repo", help="repository (default: the enclosing git repo of the cwd)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("files", nargs="*", help="staged files (pre-commit passes them)")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a file's mirror in .sleepy/notes/ records other content (for CI)",
    )
    p.add_argument("--all", dest="all_files", action="store_true", help="every tracked source file")

    from sleepy_repo.bench.commands import register

    register(sub.add_parser("bench", help="benchmarks (index speed, localization)"))
    return parser


def dispatch(args: argparse.Namespace) -> int:
    c = args.command
    handlers: dict[str, Callable[[], int]] = {
        "init": lambda: cmd_init(args.repo, args.rebuild, args.json),
        "refresh": lambda: cmd_refresh(
            args.repo,
            args.paths,
            args.backend,
            args.effort,
            args.json,
            args.budget_tokens,
            args.dry_run,
        ),
        "status": lambda: cmd_status(args.repo, args.json),
        "trust": lambda: cmd_trust(args.repo, args.revoke, args.json),
        "notes": lambda: cmd_notes(args.repo, args.path, args.json),
        "tune": lambda: cmd_tune(args.repo, args.cases, args.json),
        "context": lambda: cmd_context(args.repo, args.question, args.budget, args.json),
        "gc": lambda: cmd_gc(args.repo, args.json),
        "ask": lambda: cmd_ask(
            args.repo, args.question, args.budget, args.answer_backend, args.json
        ),
        "mcp": lambda: cmd_mcp(args.repo),
        "lsp": lambda: cmd_lsp(args.repo, args.tcp, args.log_file),
        "watch": lambda: cmd_watch(args.repo, args.backend, args.effort, args.poll, args.json),
        "hook": lambda: cmd_hook(args.repo, args.files, args.check, args.all_files, args.json),
    }
    if c == "bench":
        from sleepy_repo.bench.commands import dispatch as bench_dispatch

        return bench_dispatch(args)
    return handlers[c]()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return dispatch(args)
    except SleepyError as exc:
        err.print(f"error: {exc}", style="red", markup=False)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            log.exception("unexpected error (a bug in sleepy-repo; please report it)")
            return 3
        where = exc.filename or "the store"
        what = "disk full" if exc.errno != errno.EROFS else "read-only file system"
        err.print(f"error: {what} at {where}: {exc.strerror}", style="red", markup=False)
        return 2
    except Exception:
        log.exception("unexpected error (a bug in sleepy-repo; please report it)")
        return 3


if __name__ == "__main__":
    sys.exit(main())
