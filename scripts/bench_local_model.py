#!/usr/bin/env python3
"""Measure the local backend on real repositories: notes per minute, tokens per module,
citations dropped by grounding, and the cost of a rethink vs a full rewrite.

    python scripts/bench_local_model.py [REPO ...] [--paths P ...] [--limit N]
        [--effort brief|standard|deep] [--max-tokens N] [--n-ctx N] [--threads N]
        [--part-tokens N] [--model-path GGUF] [--variant LABEL=PYTHON[:PYTHONPATH] ...]
        [--rounds N] [--no-rethink] [--json OUT]

REPO is a git repository (cloned into a temporary directory first, so nothing is written
to it) or ``shop`` (the bundled fixture; the default). Per repository:

1. ``refresh --backend static`` indexes it (not timed as model work);
2. ``refresh PATHS --backend local`` writes model notes for the chosen modules (``--paths``,
   else every indexed non-test module in path order, at most ``--limit``), timed: notes per
   minute = modules written / wall minutes (the model load, about a second, included);
3. the ledger gives each module's prompt and completion tokens (the model's tokenizer);
   ``status --json`` gives the citations dropped by grounding;
4. rethink: one top-level function of the largest noted Python module gets a changed line
   (a comment appended to its last line), and ``refresh PATH --backend local`` re-notes it
   from the old notes + the diff; its ledger row (reason ``rethink``) is compared with the
   tokens the module's full write took in step 2, and with ``full_rewrite_tokens`` (the
   estimate a full rewrite would have reserved) from the row's ``detail``.

Each ``--variant`` runs ``PYTHON -m sleepy_repo.cli`` (with ``PYTHONPATH`` set when given:
another checkout, or another llama-cpp-python build); variants run one after the other on
their own clone of each repository, ``--rounds`` times, so builds and code versions are
compared interleaved under the same load. The default is this interpreter. The load
average is recorded before and after each run. The model process logs llama.cpp's timings
(``SLEEPY_REPO_TIMINGS_LOG``), which split the time into model load, prompt evaluation and
generation (sampling, grammar included, is the wall time left); code older than that log
shows ``-``. Per-module seconds come from the ledger's timestamps.

Needs the ``[local]`` extra and a model (``python scripts/fetch_model.py``). Prints a table;
``--json OUT`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TIMINGS_LOG_ENV = "SLEEPY_REPO_TIMINGS_LOG"  # sleepy_repo.models.llama_process
TEST_MARKS = ("tests/", "test/", "testing/", "/test_", "_test.", "conftest.py", "docs/")


class Variant:
    """An interpreter (and optional PYTHONPATH) that runs ``sleepy_repo.cli``."""

    def __init__(self, spec: str) -> None:
        label, _, rest = spec.partition("=")
        python, _, pythonpath = (rest or sys.executable).partition(":")
        self.label = label or "default"
        self.python = python
        self.env = dict(os.environ)
        if pythonpath:
            self.env["PYTHONPATH"] = pythonpath
        self.timings = ""


def _run(*args: str, repo: Path, variant: Variant) -> dict[str, Any]:
    env = dict(variant.env)
    if variant.timings:
        env[TIMINGS_LOG_ENV] = variant.timings
    proc = subprocess.run(
        [variant.python, "-m", "sleepy_repo.cli", *args, "--repo", str(repo), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"sleepy-repo {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _rows(repo: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    with sqlite3.connect(repo / ".sleepy" / "index.db") as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()


def _prepare(spec: str, work: Path) -> Path:
    if spec == "shop":
        dest = work / "shop"
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(ROOT / "fixtures" / "build.py"), "shop", str(dest)],
            check=True,
            capture_output=True,
        )
        return dest
    src = Path(spec).resolve()
    dest = work / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(src), str(dest)], check=True)
    return dest


def _configure(repo: Path, args: argparse.Namespace) -> None:
    local = {"max_tokens": args.max_tokens, "n_threads": args.threads}
    if args.n_ctx:
        local["n_ctx"] = args.n_ctx
    if args.part_tokens:
        local["part_tokens"] = args.part_tokens
    if args.model_path:
        local["model_path"] = str(Path(args.model_path).expanduser().resolve())
    lines = ["[notes]", 'backend = "local"', f'effort = "{args.effort}"', "[local]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in local.items()]
    # a temporary user config, beside the clone: a repository's own config may not choose
    # the backend or its [local] settings (README, "Configuration")
    user = repo.parent / "xdg-config"
    (user / "sleepy-repo").mkdir(parents=True, exist_ok=True)
    (user / "sleepy-repo" / "config.toml").write_text("\n".join(lines) + "\n")
    os.environ["XDG_CONFIG_HOME"] = str(user)  # inherited by every command run below


def _choose(repo: Path, args: argparse.Namespace) -> list[str]:
    indexed = [
        r["path"]
        for r in _rows(repo, "SELECT path FROM modules WHERE status = 'indexed' ORDER BY path")
    ]
    if args.paths:
        return [p for p in args.paths if p in set(indexed)]
    chosen = [p for p in indexed if not any(m in f"/{p}" for m in TEST_MARKS)]
    return chosen[: args.limit] if args.limit else chosen


def _per_module(repo: Path, reason_in: tuple[str, ...], after_id: int = 0) -> dict[str, Any]:
    marks = ",".join("?" * len(reason_in))
    out: dict[str, Any] = {}
    for r in _rows(
        repo,
        "SELECT path, ts, reason, input_tokens, output_tokens, detail FROM ledger "
        f"WHERE backend = 'local' AND id > ? AND reason IN ({marks}) ORDER BY id",
        (after_id, *reason_in),
    ):
        m = out.setdefault(r["path"], {"calls": 0, "input_tokens": 0, "output_tokens": 0})
        m["ts"] = r["ts"]  # of its last call
        m["calls"] += 1
        m["input_tokens"] += r["input_tokens"]
        m["output_tokens"] += r["output_tokens"]
        m["reason"] = r["reason"]
        if r["detail"]:
            m["detail"] = json.loads(r["detail"])
    return out


def _change_one_function(repo: Path, path: str) -> str | None:
    """Append a comment to the last line of the module's largest top-level function; its
    qualified name, or None when there is none."""
    (row,) = _rows(repo, "SELECT facts_json FROM modules WHERE path = ?", (path,))
    facts = json.loads(row["facts_json"])
    funcs = [
        s
        for s in facts.get("symbols", [])
        if s.get("kind") in ("function", "method")
        and s["end_line"] - s["start_line"] >= 3
        and s.get("parent") is None
    ] or [
        s
        for s in facts.get("symbols", [])
        if s.get("kind") in ("function", "method") and s["end_line"] - s["start_line"] >= 3
    ]
    if not funcs:
        return None
    sym = max(funcs, key=lambda s: s["end_line"] - s["start_line"])
    file = repo / path
    lines = file.read_text(encoding="utf-8").split("\n")
    i = sym["end_line"] - 1
    if lines[i].rstrip().endswith("\\"):
        return None
    lines[i] = lines[i] + "  # changed by bench_local_model"
    file.write_text("\n".join(lines), encoding="utf-8")
    return str(sym["qualname"])


def _phases(log: Path) -> dict[str, Any] | None:
    """The model process's timings log summed: load, prompt evaluation, generation and the
    rest of the calls' wall time (sampling with the grammar, streaming); None without one."""
    if not log.exists():
        return None
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    calls = [r for r in rows if "wall_seconds" in r]
    out: dict[str, Any] = {
        "load_seconds": round(sum(r.get("load_seconds", 0) for r in rows), 2),
        "calls": len(calls),
    }
    for key in ("prompt_tokens", "prompt_seconds", "generated_tokens", "generate_seconds"):
        out[key] = round(sum(r[key] for r in calls), 2)
    wall = sum(r["wall_seconds"] for r in calls)
    out["call_seconds"] = round(wall, 2)
    out["sampling_seconds"] = round(wall - out["prompt_seconds"] - out["generate_seconds"], 2)
    return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_repo(spec: str, args: argparse.Namespace, work: Path, variant: Variant) -> dict[str, Any]:
    repo = _prepare(spec, work)
    _configure(repo, args)
    log = work / "timings.jsonl"
    variant.timings = str(log)
    t0 = time.monotonic()
    _run("refresh", "--backend", "static", repo=repo, variant=variant)
    index_s = time.monotonic() - t0
    paths = _choose(repo, args)
    if not paths:
        raise SystemExit(f"{spec}: no module chosen")
    print(
        f"{spec} [{variant.label}]: noting {len(paths)} modules with the local model ...",
        file=sys.stderr,
    )
    load_before = _load()
    started = time.time()
    t0 = time.monotonic()
    result = _run("refresh", *paths, "--backend", "local", repo=repo, variant=variant)
    notes_s = time.monotonic() - t0
    load_after = _load()
    phases = _phases(log)
    local = result["notes"]["local"]
    written = _per_module(repo, ("notes", "notes-retry"))
    ok = [p for p in paths if p in written]
    status = _run("status", repo=repo, variant=variant)
    n = max(len(ok), 1)
    previous = started
    for p in sorted(ok, key=lambda p: written[p]["ts"]):
        written[p]["seconds"] = round(written[p]["ts"] - previous, 1)
        previous = written[p]["ts"]
    out: dict[str, Any] = {
        "repo": spec,
        "variant": variant.label,
        "python": variant.python,
        "pythonpath": variant.env.get("PYTHONPATH", ""),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "phases": phases,
        "head": subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "effort": args.effort,
        "max_tokens": args.max_tokens,
        "n_ctx": args.n_ctx or "default",
        "part_tokens": args.part_tokens or "default",
        "n_threads": args.threads,
        "index_seconds": round(index_s, 2),
        "modules_asked": len(paths),
        "written": local["written"],
        "failed": local["failed"],
        "notes_seconds": round(notes_s, 2),
        "notes_per_minute": round(local["written"] / (notes_s / 60), 2) if notes_s else 0,
        "calls": result["model"]["spent"]["calls"],
        "input_tokens_per_module": round(sum(written[p]["input_tokens"] for p in ok) / n, 1),
        "output_tokens_per_module": round(sum(written[p]["output_tokens"] for p in ok) / n, 1),
        "dropped_citations": status["dropped_citations"],
        "modules": {p: written.get(p) for p in paths},
    }
    if not args.no_rethink:
        out["rethink"] = _rethink(repo, ok, written, variant)
    return out


def _rethink(
    repo: Path, ok: list[str], written: dict[str, Any], variant: Variant
) -> dict[str, Any] | None:
    sizes = {
        r["path"]: r["n"]
        for r in _rows(
            repo,
            "SELECT path, length(facts_json) AS n FROM modules WHERE lang = 'python' AND path IN "
            f"({','.join('?' * len(ok))})",
            tuple(ok),
        )
    }
    for path in sorted(sizes, key=lambda p: -sizes[p]):
        if written[path]["calls"] != 1:
            continue  # a split module: keep the comparison one call against one call
        symbol = _change_one_function(repo, path)
        if symbol is None:
            continue
        last = _rows(repo, "SELECT coalesce(max(id), 0) AS m FROM ledger")[0]["m"]
        t0 = time.monotonic()
        _run("refresh", path, "--backend", "local", repo=repo, variant=variant)
        seconds = time.monotonic() - t0
        rows = _per_module(repo, ("rethink", "notes", "notes-retry"), after_id=last)
        got = rows.get(path)
        if got is None:
            return {"path": path, "symbol": symbol, "error": "no model call recorded"}
        full = written[path]
        rethink_tokens = got["input_tokens"] + got["output_tokens"]
        full_tokens = full["input_tokens"] + full["output_tokens"]
        return {
            "path": path,
            "symbol": symbol,
            "reason": got["reason"],
            "seconds": round(seconds, 2),
            "rethink": {k: got[k] for k in ("calls", "input_tokens", "output_tokens")},
            "full_write": {k: full[k] for k in ("calls", "input_tokens", "output_tokens")},
            "ratio": round(rethink_tokens / full_tokens, 3) if full_tokens else None,
            "full_rewrite_estimate_tokens": got.get("detail", {}).get("full_rewrite_tokens"),
        }
    return None


def _phase_table(results: list[dict[str, Any]]) -> str:
    head = (
        "| repo | variant | load avg | calls | model load s | prompt tok | prompt s "
        "| generated tok | generate s | sampling+rest s | seconds per module |"
    )
    out = [head, "|" + "---|" * 11]
    for r in results:
        ph = r.get("phases") or {}
        per = ", ".join(
            f"{p.rsplit('/', 1)[-1]} {m['seconds']}"
            for p, m in r["modules"].items()
            if m and "seconds" in m
        )
        cells = [
            ph.get(k, "-")
            for k in (
                "calls",
                "load_seconds",
                "prompt_tokens",
                "prompt_seconds",
                "generated_tokens",
                "generate_seconds",
                "sampling_seconds",
            )
        ]
        load = f"{r['load_average_before'][0]}->{r['load_average_after'][0]}"
        out.append(
            f"| {r['repo']} | {r['variant']} | {load} | "
            + " | ".join(str(c) for c in cells)
            + f" | {per} |"
        )
    return "\n".join(out)


def _table(results: list[dict[str, Any]]) -> str:
    head = (
        "| repo | variant | modules | failed | seconds | notes/min | in tok/module "
        "| out tok/module | dropped | rethink in+out | full write in+out | rethink/full |"
    )
    out = [head, "|" + "---|" * 12]
    for r in results:
        rt = r.get("rethink") or {}
        rth = rt.get("rethink") or {}
        fw = rt.get("full_write") or {}
        dropped = r["dropped_citations"]
        out.append(
            f"| {r['repo']} | {r['variant']} | {r['written']}/{r['modules_asked']} "
            f"| {len(r['failed'])} "
            f"| {r['notes_seconds']} | {r['notes_per_minute']} | {r['input_tokens_per_module']} "
            f"| {r['output_tokens_per_module']} | {dropped['count']} ({dropped['share']:.1%}) "
            f"| {rth.get('input_tokens', '-')}+{rth.get('output_tokens', '-')} "
            f"| {fw.get('input_tokens', '-')}+{fw.get('output_tokens', '-')} "
            f"| {rt.get('ratio', '-')} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("repos", nargs="*", default=["shop"], help="git repositories, or 'shop'")
    p.add_argument("--paths", nargs="+", help="modules to note (repo-relative)")
    p.add_argument("--limit", type=int, default=0, help="at most N modules per repo (0 = all)")
    p.add_argument("--effort", default="standard", choices=("brief", "standard", "deep"))
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--n-ctx", type=int, default=0, help="[local] n_ctx (0 = its default)")
    p.add_argument("--part-tokens", type=int, default=0, help="[local] part_tokens (0 = default)")
    p.add_argument(
        "--variant",
        action="append",
        metavar="LABEL=PYTHON[:PYTHONPATH]",
        help="an interpreter (and PYTHONPATH) to run sleepy_repo.cli with; repeat to compare",
    )
    p.add_argument("--rounds", type=int, default=1, help="run every variant N times")
    p.add_argument("--threads", type=int, default=0, help="[local] n_threads (0 = every core)")
    p.add_argument("--model-path", help="a GGUF model (default: [local] model_path's default)")
    p.add_argument("--no-rethink", action="store_true")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the results here")
    p.add_argument("--keep", action="store_true", help="keep the temporary clones")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sleepy-bench-local-"))
    results = []
    try:
        variants = [Variant(v) for v in args.variant or ["default="]]
        for spec in args.repos:
            for n in range(args.rounds):
                for i, variant in enumerate(variants):
                    where = work / f"r{n}-v{i}"
                    results.append(bench_repo(spec, args, where, variant))
    finally:
        if args.keep:
            print(f"clones kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(_table(results))
    print()
    print(_phase_table(results))
    for r in results:
        if r.get("rethink"):
            rt = r["rethink"]
            print(
                f"{r['repo']} [{r['variant']}]: rethink of {rt['path']} after changing "
                f"{rt.get('symbol')}: "
                f"{rt.get('reason')}, {rt.get('seconds')} s; a full rewrite would reserve "
                f"{rt.get('full_rewrite_estimate_tokens')} tokens (estimate)"
            )
        for f in r["failed"]:
            print(f"{r['repo']} [{r['variant']}]: failed {f['path']}: {f['error']}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "cpus": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
