"""Latency of the language server as an editor sees it: ``textDocument/hover`` and
``sleepy/context`` round trips over stdio, p50/p95, plus the server's peak RSS.

Two stores: the ``shop`` fixture (17 modules) and the CPython standard library copied
without ``site-packages`` (a plain directory, ~1,800 modules). Both are refreshed with the
CLI first (static notes); ``--work DIR`` keeps them for the next run.

    python scripts/bench_lsp_latency.py [--n 200] [--json OUT] [--work DIR]

Targets: hover p95 <= 20 ms, context p95 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from sleepy_repo.lsp_server import plain_converter

ROOT = Path(__file__).resolve().parent.parent
STDLIB = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
EXE = shutil.which("sleepy-repo", path=str(Path(sys.executable).parent)) or "sleepy-repo"
TARGETS = {"hover": 20.0, "context": 50.0}  # p95, ms

QUESTIONS = {
    "shop": [
        "How are coupon discounts applied before VAT?",
        "Where is the cart total computed?",
        "What happens when a gift card balance is too low?",
        "How is inventory reserved for an order?",
        "Which function rounds money amounts?",
        "How does the web client format prices?",
    ],
    "stdlib": [
        "How does json encode floats that are not finite?",
        "Where is the default SSL context created?",
        "How does subprocess handle a timeout when communicating?",
        "How does the logging module rotate files?",
        "Where does asyncio create the default event loop?",
        "How are HTTP redirects followed by urllib?",
        "How does pathlib resolve symlinks?",
        "How does the csv sniffer guess a delimiter?",
        "How does argparse format the help of subcommands?",
        "Where does shutil copy file permissions?",
        "How does the tarfile module detect compression?",
        "How are zip archives extracted safely?",
        "How does the email parser handle multipart messages?",
        "Where does http.client read chunked responses?",
        "How does textwrap break long words?",
        "How does the datetime module parse ISO format strings?",
        "How does threading implement a condition variable wait with a timeout?",
        "How does the tempfile module pick a temporary directory?",
        "How does unittest discover test modules?",
        "How does the inspect module get a function signature?",
        "Where does the importlib machinery find a module spec?",
        "How does sqlite3 adapt Python types to SQL?",
        "How does the random module seed its generator?",
        "How does heapq merge sorted inputs?",
        "How does functools cache results of a function?",
        "How does the socket module create a connection with a timeout?",
        "How does configparser interpolate values?",
        "How does the gzip module write a header?",
        "How does base64 decode with an alternative alphabet?",
        "How does the pickle module serialize a class instance?",
        "How does dataclasses generate the init method?",
        "How does enum create members from a class body?",
        "How does the traceback module format an exception chain?",
        "How does the locale module get the preferred encoding?",
        "How does the ssl module verify a host name?",
        "How does the queue module block when it is full?",
        "How does the multiprocessing pool distribute tasks?",
        "How does the statistics module compute the median?",
        "How does the difflib module find matching blocks?",
        "How does the shlex module split a command line?",
    ],
}


@dataclass
class Result:
    repo: str
    modules: int
    hovers: int
    hover_hits: int
    hover_p50_ms: float
    hover_p95_ms: float
    hover_max_ms: float
    contexts: int
    context_p50_ms: float
    context_p95_ms: float
    context_max_ms: float
    peak_rss_mb: float


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_shop(dest: Path) -> Path:
    spec = importlib.util.spec_from_file_location("fixture_build", ROOT / "fixtures" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fixture_build"] = module
    spec.loader.exec_module(module)
    return Path(module.build_repo("shop", dest))


def copy_stdlib(dest: Path) -> Path:
    shutil.copytree(
        STDLIB, dest, ignore=shutil.ignore_patterns("site-packages", "__pycache__"), symlinks=True
    )
    return dest


def refresh(repo: Path) -> None:
    t = time.perf_counter()
    subprocess.run([EXE, "refresh", "--repo", str(repo)], check=True, capture_output=True)
    print(f"refreshed {repo} in {time.perf_counter() - t:.1f}s", file=sys.stderr)


def prepare(work: Path) -> dict[str, Path]:
    repos: dict[str, Path] = {}
    shop = work / "shop"
    if not (shop / ".sleepy" / "index.db").exists():
        shutil.rmtree(shop, ignore_errors=True)
        build_shop(shop)
        refresh(shop)
    repos["shop"] = shop
    stdlib = work / "stdlib"
    if not (stdlib / ".sleepy" / "index.db").exists():
        shutil.rmtree(stdlib, ignore_errors=True)
        copy_stdlib(stdlib)
        refresh(stdlib)
    repos["stdlib"] = stdlib
    return repos


def hover_targets(repo: Path, n: int, rng: random.Random) -> tuple[int, list[tuple[str, int]]]:
    """Positions to hover: symbol lines and module first lines of indexed modules, mixed
    with lines that have nothing (the common case while reading code)."""
    with closing(sqlite3.connect(repo / ".sleepy" / "index.db")) as conn:
        modules = [r[0] for r in conn.execute("SELECT path FROM modules WHERE status='indexed'")]
        symbols = conn.execute("SELECT path, start_line, end_line FROM symbols").fetchall()
    targets: list[tuple[str, int]] = []
    for i in range(n):
        if i % 4 == 0:
            targets.append((rng.choice(modules), 1))
        else:
            path, start, end = rng.choice(symbols)
            targets.append((path, rng.randint(start, end)))
    return len(modules), targets


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(name: str, repo: Path, n: int, seed: int) -> Result:
    rng = random.Random(seed)
    modules, targets = hover_targets(repo, n, rng)
    client = LanguageClient("bench", "1", converter_factory=plain_converter)
    await client.start_io(EXE, "lsp")
    assert client._server is not None
    pid = client._server.pid
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            workspace_folders=[types.WorkspaceFolder(uri=repo.as_uri(), name=name)],
        )
    )
    client.initialized(types.InitializedParams())

    async def hover(path: str, line: int) -> Any:
        return await client.text_document_hover_async(
            types.HoverParams(
                text_document=types.TextDocumentIdentifier(uri=(repo / path).as_uri()),
                position=types.Position(line=line - 1, character=0),
            )
        )

    for path, line in targets[:10]:  # warm up (imports, page cache)
        await hover(path, line)
    hover_ms: list[float] = []
    hits = 0
    for path, line in targets:
        t = time.perf_counter()
        result = await hover(path, line)
        hover_ms.append((time.perf_counter() - t) * 1000)
        hits += result is not None

    # at the default --n every request is a new question (a repeat would find its files'
    # code cached); a larger --n asks them again
    questions = QUESTIONS[name]
    await client.protocol.send_request_async("sleepy/context", {"question": "warm up"})
    context_ms: list[float] = []
    for i in range(max(len(questions), n // 5)):
        t = time.perf_counter()
        ctx = await client.protocol.send_request_async(
            "sleepy/context", {"question": questions[i % len(questions)], "budget": 1500}
        )
        context_ms.append((time.perf_counter() - t) * 1000)
        assert ctx["items"], ctx
    rss = peak_rss_mb(pid)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return Result(
        repo=name,
        modules=modules,
        hovers=len(hover_ms),
        hover_hits=hits,
        hover_p50_ms=round(statistics.median(hover_ms), 2),
        hover_p95_ms=round(pct(hover_ms, 0.95), 2),
        hover_max_ms=round(max(hover_ms), 2),
        contexts=len(context_ms),
        context_p50_ms=round(statistics.median(context_ms), 2),
        context_p95_ms=round(pct(context_ms, 0.95), 2),
        context_max_ms=round(max(context_ms), 2),
        peak_rss_mb=round(rss, 1),
    )


def table(results: list[Result]) -> str:
    head = (
        f"{'repo':8} {'modules':>7} {'hovers':>7} {'hits':>5} {'hover p50':>10} "
        f"{'hover p95':>10} {'ctx n':>6} {'ctx p50':>8} {'ctx p95':>8} {'peak RSS':>9}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(
            f"{r.repo:8} {r.modules:7d} {r.hovers:7d} {r.hover_hits:5d} "
            f"{r.hover_p50_ms:8.2f}ms {r.hover_p95_ms:8.2f}ms {r.contexts:6d} "
            f"{r.context_p50_ms:6.1f}ms {r.context_p95_ms:6.1f}ms {r.peak_rss_mb:7.1f}MB"
        )
    rows.append(
        f"targets: hover p95 <= {TARGETS['hover']:.0f} ms, context p95 <= "
        f"{TARGETS['context']:.0f} ms"
    )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=int, default=200, help="hovers per repo; n/5 context requests (default 200)"
    )
    parser.add_argument("--work", type=Path, help="keep the repos and stores here (reused)")
    parser.add_argument("--only", choices=sorted(QUESTIONS), help="one repo only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    args = parser.parse_args()
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-lsp-")
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    try:
        repos = prepare(work)
        results = [
            asyncio.run(measure(name, path, args.n, args.seed))
            for name, path in repos.items()
            if args.only in (None, name)
        ]
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(table(results))
    ok = all(
        r.hover_p95_ms <= TARGETS["hover"] and r.context_p95_ms <= TARGETS["context"]
        for r in results
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "schema_version": 1,
                    "targets_p95_ms": TARGETS,
                    "met": ok,
                    "python": sys.version.split()[0],
                    "stdlib": str(STDLIB),
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
