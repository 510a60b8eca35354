#!/usr/bin/env python3
"""Estimate how much of a refresh's input falls in the Anthropic prompt-cache prefix, from the
requests the real SDK sends.

    python scripts/bench_prompt_cache.py [REPO ...] [--effort brief|standard|deep]
        [--paths PREFIX ...] [--model NAME] [--json OUT]

REPO is a git repository (cloned into a temporary directory, so nothing is written to it)
or ``shop`` / ``relay`` (bundled fixtures; default: ``shop``). Per repository, a full
``refresh --backend anthropic`` runs against a fake Messages API on 127.0.0.1 (the test
suite's ``tests/fake_anthropic.py``; no network, no key, nothing billed) that records every
request body the SDK sends. For each recorded request:

* ``prefix`` = the tokens up to and including the block marked ``cache_control`` (the tool
  definitions, then the system block: instructions + repo overview + README head), which is
  what Anthropic caches; ``total`` = the whole request (prefix + the module's message);
* tokens are ``sleepy_repo.tokens`` estimates (within about ±15% of Claude's counts).

The report per refresh: calls, total input tokens, prefix tokens per call, the share of
input in the prefix, whether the prefix reaches the model's minimum cacheable length (1,024
tokens for Sonnet/Opus, 2,048 for Haiku: shorter prefixes are not cached at all), and the
input cost at the configured prices without caching vs with it (the first call writes the
cache at the cache-write rate, every later call within the 5-minute TTL reads it at the
cache-read rate). The overview call of ``--effort deep`` has no cached prefix of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fake Messages API of the test suite

from fake_anthropic import FakeAnthropic, Recorded  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sleepy_repo import api  # noqa: E402
from sleepy_repo.config import load_config  # noqa: E402
from sleepy_repo.tokens import count_tokens  # noqa: E402

MIN_CACHEABLE = {"haiku": 2048}  # else 1024


def prepare(repo: str, dest: Path) -> Path:
    if repo in ("shop", "relay"):
        subprocess.run(
            [sys.executable, str(ROOT / "fixtures" / "build.py"), repo, str(dest)],
            check=True,
            capture_output=True,
        )
        return dest
    subprocess.run(["git", "clone", "-q", repo, str(dest)], check=True)
    return dest


def split(req: Recorded) -> tuple[int, int]:
    """(prefix tokens, total tokens) of one messages request: tools, then system blocks, then
    messages; the prefix ends with the last block carrying cache_control."""
    body = req.json
    parts: list[tuple[str, bool]] = [(json.dumps(t), False) for t in body.get("tools", [])]
    system = body.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    parts += [(b.get("text", ""), "cache_control" in b) for b in system]
    for m in body.get("messages", []):
        content = m["content"]
        blocks = [{"text": content}] if isinstance(content, str) else content
        parts += [(b.get("text", ""), "cache_control" in b) for b in blocks]
    counts = [count_tokens(text) for text, _ in parts]
    marks = [i for i, (_, cached) in enumerate(parts) if cached]
    prefix = sum(counts[: marks[-1] + 1]) if marks else 0
    return prefix, sum(counts)


def measure(repo: str, effort: str, paths: list[str], model: str | None) -> dict[str, Any]:
    fake = FakeAnthropic()
    try:
        with tempfile.TemporaryDirectory(prefix="sleepy-cache-") as tmp:
            root = prepare(repo, Path(tmp) / "repo")
            store = root / ".sleepy"
            store.mkdir(exist_ok=True)
            lines = [
                "[anthropic]",
                f'base_url = "{fake.url}"',
                "batch_threshold = 0",  # one request per module, as an interactive refresh
                "max_retries = 1",
            ]
            if model:
                lines = ["[notes]", f'model = "{model}"', *lines]
            # the user's own config (a temporary one): a repository's config may not choose
            # where requests go (see "Configuration" in README)
            user = Path(tmp) / "xdg"
            (user / "sleepy-repo").mkdir(parents=True)
            (user / "sleepy-repo" / "config.toml").write_text("\n".join(lines) + "\n")
            os.environ["XDG_CONFIG_HOME"] = str(user)
            os.environ.setdefault("ANTHROPIC_API_KEY", "bench-not-a-key")
            r = api.open_repo(root)
            api.refresh(r)  # index + static notes first (no model)
            chosen = None
            if paths:  # path prefixes -> the tracked files under them
                out = subprocess.run(
                    ["git", "-C", str(root), "ls-files", "-z", "--", *paths],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                chosen = [str(root / p) for p in out.split("\0") if p]
            result = api.refresh(r, chosen, backend="anthropic", effort=effort)
            config = load_config(root)
        reqs = [q for q in fake.message_requests]
        rows = [split(q) for q in reqs]
        cached_calls = [(p, t) for p, t in rows if p]
        model_name = result["model"]["model"] if result["model"] else "?"
        prices = config.anthropic.prices.get(model_name)
        minimum = next((v for k, v in MIN_CACHEABLE.items() if k in model_name), 1024)
        prefixes = sorted({p for p, _ in cached_calls})
        total = sum(t for _, t in rows)
        prefix_total = sum(p for p, _ in cached_calls)
        out: dict[str, Any] = {
            "repo": repo,
            "effort": effort,
            "model": model_name,
            "calls": len(rows),
            "calls_with_prefix": len(cached_calls),
            "distinct_prefixes": len(prefixes),
            "prefix_tokens_per_call": prefixes[0] if len(prefixes) == 1 else prefixes,
            "input_tokens": total,
            "prefix_tokens": prefix_total,
            "prefix_share": round(prefix_total / total, 4) if total else 0.0,
            "min_cacheable": minimum,
            "cacheable": bool(prefixes) and min(prefixes) >= minimum,
        }
        if prices is not None and cached_calls:
            write = sum(prefixes)  # each distinct prefix is written once
            read = prefix_total - write
            rest = total - prefix_total
            plain = total * prices["input"] / 1e6
            if out["cacheable"]:
                cached = (write * prices["cache_write"] + read * prices["cache_read"]) / 1e6
                cached += rest * prices["input"] / 1e6
            else:
                cached = plain
            out.update(
                cache_write_tokens=write if out["cacheable"] else 0,
                cache_read_tokens=read if out["cacheable"] else 0,
                input_usd_without_cache=round(plain, 4),
                input_usd_with_cache=round(cached, 4),
                saved_share=round(1 - cached / plain, 4) if plain else 0.0,
            )
        return out
    finally:
        fake.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repos", nargs="*", default=["shop"])
    ap.add_argument("--effort", default="standard", choices=("brief", "standard", "deep"))
    ap.add_argument("--paths", nargs="*", default=[], help="only modules under these prefixes")
    ap.add_argument("--model", default=None, help="[notes] model (default: by effort)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = [measure(repo, args.effort, args.paths, args.model) for repo in args.repos]
    table = Table(title="Prompt-cache prefix per refresh (estimated tokens, recorded requests)")
    for col in (
        "repo",
        "model",
        "calls",
        "input tokens",
        "prefix/call",
        "in prefix",
        "cacheable",
        "input $ no cache",
        "with cache",
        "saved",
    ):
        table.add_column(col, justify="left" if col in ("repo", "model") else "right")
    for r in results:
        table.add_row(
            Path(r["repo"]).name,
            r["model"],
            str(r["calls"]),
            f"{r['input_tokens']:,}",
            str(r["prefix_tokens_per_call"]),
            f"{r['prefix_share']:.1%}",
            f"yes (≥{r['min_cacheable']})" if r["cacheable"] else f"no (<{r['min_cacheable']})",
            f"{r.get('input_usd_without_cache', 0):.4f}",
            f"{r.get('input_usd_with_cache', 0):.4f}",
            f"{r.get('saved_share', 0):.1%}",
        )
    Console(width=160).print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
