"""``sleepy-repo bench index``: static indexing speed against a bare tree-sitter baseline.

The corpus is a copy of a directory (default: this interpreter's standard library without
``site-packages``, about 1,800 .py files). One run measures, in this order:

1. parse-only baseline: read + tree-sitter parse + tags query of every module, no store;
2. cold index: ``refresh`` (static notes) into an empty store;
3. warm re-run with nothing changed;
4. re-run after a content edit to one file;

plus the process's peak RSS. ``--repeat N`` alternates steps 1 and 2 N times (each cold
index into a new store) and reports the median ratio with every pair. The cold time is
split into scan + parse + store and the static notes, and the CPU seconds of both sides
(worker processes included; steadier than wall time on a shared machine) are reported
next to it. Targets (2 cores): cold <= 1.5x
baseline, warm <= 0.5 s, one edited file <= 200 ms. Ratios measured in one run are what to
compare across machines.
"""

from __future__ import annotations

import os
import resource
import shutil
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from tree_sitter import Parser, QueryCursor

from sleepy_repo import __version__, api
from sleepy_repo.parse.languages import language_for_path, tags_query, ts_language

TARGETS = {"cold_ratio": 1.5, "warm_s": 0.5, "edit_s": 0.2}


def default_corpus() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def copy_corpus(src: Path, dest: Path) -> int:
    """Copy the parseable files of ``src`` (no site-packages, no symlinks) to ``dest``."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(
            d for d in dirnames if d not in ("site-packages", "__pycache__", ".git")
        )
        rel = Path(dirpath).relative_to(src)
        for f in filenames:
            full = Path(dirpath, f)
            if full.is_symlink() or language_for_path(f) is None:
                continue
            (dest / rel).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(full, dest / rel / f)
            n += 1
    return n


def parse_only(root: Path) -> tuple[float, int]:
    """Baseline: read, parse and run the tags query over every module."""
    parsers: dict[str, Parser] = {}
    t0 = time.perf_counter()
    files = 0
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            lang = language_for_path(f)
            if lang is None:
                continue
            data = Path(dirpath, f).read_bytes()
            parser = parsers.get(lang) or parsers.setdefault(lang, Parser(ts_language(lang)))
            tree = parser.parse(data)
            QueryCursor(tags_query(lang)).captures(tree.root_node)
            files += 1
    return time.perf_counter() - t0, files


def run_index_bench(
    src: Path | None = None, *, keep: bool = False, repeat: int = 1
) -> dict[str, Any]:
    """One run of the benchmark; ``repeat`` > 1 times the baseline and a cold index (into a
    new store) that many times, alternating, and reports the medians: on a shared machine
    one pair can land in a busy second."""
    src = (src or default_corpus()).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="sleepy-bench-index-"))
    corpus = tmp / "corpus"
    runs: list[dict[str, Any]] = []
    try:
        files = copy_corpus(src, corpus)
        parse_only(corpus)  # warm the page cache and grammar loading for both sides
        for i in range(repeat):
            cpu0 = _cpu_s()
            baseline_s, _ = parse_only(corpus)
            baseline_cpu = _cpu_s() - cpu0
            if i:  # a cold index again: a new store
                shutil.rmtree(corpus / ".sleepy")
            repo = api.open_repo(corpus)
            cpu0 = _cpu_s()
            t0 = time.perf_counter()
            cold = api.refresh(repo)
            cold_s = time.perf_counter() - t0
            cold_cpu = _cpu_s() - cpu0
            runs.append(
                {
                    "baseline_s": round(baseline_s, 3),
                    "cold_s": round(cold_s, 3),
                    # scan, parse and store; the rest is writing the static notes
                    "cold_index_s": round(cold["seconds"], 3),
                    "ratio": round(cold_s / baseline_s, 3),
                    # CPU seconds, worker processes included: steadier than wall time on
                    # a shared machine, so what to compare when changing the indexer
                    "baseline_cpu_s": round(baseline_cpu, 3),
                    "cold_cpu_s": round(cold_cpu, 3),
                    "cpu_ratio": round(cold_cpu / baseline_cpu, 3) if baseline_cpu else None,
                }
            )

        t0 = time.perf_counter()
        api.refresh(repo)
        warm_s = time.perf_counter() - t0

        target = _pick_edit_target(corpus)
        with target.open("a", encoding="utf-8") as fh:
            fh.write("\n\ndef _sleepy_bench_edit():\n    return 42\n")
        t0 = time.perf_counter()
        edit = api.refresh(repo)
        edit_s = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        store_mb = repo.store.path.stat().st_size / 2**20
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    mid = sorted(runs, key=lambda r: r["ratio"])[(len(runs) - 1) // 2]  # the median run
    result = {
        "schema_version": 1,
        "sleepy_repo_version": __version__,
        "corpus": str(src),
        "files": files,
        "modules": cold["modules"],
        "repeat": repeat,
        "baseline_parse_only_s": mid["baseline_s"],
        "cold_s": mid["cold_s"],
        "cold_index_s": mid["cold_index_s"],
        "cold_ratio": mid["ratio"],
        "cold_index_ratio": round(mid["cold_index_s"] / mid["baseline_s"], 3),
        "baseline_cpu_s": mid["baseline_cpu_s"],
        "cold_cpu_s": mid["cold_cpu_s"],
        "cpu_ratio": mid["cpu_ratio"],
        "runs": runs,
        "warm_s": round(warm_s, 3),
        "edit_s": round(edit_s, 3),
        "edit_parsed": edit["parsed"],
        "peak_rss_mb": round(peak_mb, 1),
        "store_mb": round(store_mb, 1),
        "targets": TARGETS,
        "kept": str(tmp) if keep else None,
    }
    result["meets"] = {
        "cold_ratio": mid["ratio"] <= TARGETS["cold_ratio"],
        "warm_s": warm_s <= TARGETS["warm_s"],
        "edit_s": edit_s <= TARGETS["edit_s"],
    }
    return result


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (the index's
    worker processes end with each refresh)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _pick_edit_target(corpus: Path) -> Path:
    """A mid-sized module (deterministic), so the edit is typical, not the cheapest."""
    files = sorted(p for p in corpus.rglob("*.py") if p.is_file())
    files.sort(key=lambda p: p.stat().st_size)
    return files[len(files) // 2]


def render_table(r: dict[str, Any]) -> str:
    ok = {True: "ok", False: "MISSED"}
    rows = [
        ("corpus", f"{r['corpus']} ({r['files']} files, {r['modules']} modules)"),
        ("parse-only baseline", f"{r['baseline_parse_only_s']:.2f} s"),
        (
            "cold index",
            f"{r['cold_s']:.2f} s = {r['cold_ratio']:.2f}x baseline "
            f"(target <= {TARGETS['cold_ratio']}x: {ok[r['meets']['cold_ratio']]})"
            + (f", median of {r['repeat']}" if r["repeat"] > 1 else ""),
        ),
        (
            "  of which",
            f"{r['cold_index_s']:.2f} s scan + parse + store "
            f"({r['cold_index_ratio']:.2f}x), {r['cold_s'] - r['cold_index_s']:.2f} s static notes",
        ),
        (
            "  CPU",
            f"{r['cold_cpu_s']:.2f} s (workers included) vs {r['baseline_cpu_s']:.2f} s "
            + (
                f"baseline = {r['cpu_ratio']:.2f}x (2 cores: wall can reach half of it)"
                if r["cpu_ratio"] is not None
                else "baseline"
            ),
        ),
        (
            "warm re-run",
            f"{r['warm_s'] * 1000:.0f} ms (target <= "
            f"{TARGETS['warm_s'] * 1000:.0f} ms: {ok[r['meets']['warm_s']]})",
        ),
        (
            "one edited file",
            f"{r['edit_s'] * 1000:.0f} ms, {r['edit_parsed']} parsed (target "
            f"<= {TARGETS['edit_s'] * 1000:.0f} ms: {ok[r['meets']['edit_s']]})",
        ),
        ("peak RSS", f"{r['peak_rss_mb']:.0f} MB"),
        ("store size", f"{r['store_mb']:.0f} MB"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
