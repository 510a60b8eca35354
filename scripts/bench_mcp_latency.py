"""MCP `context` round-trip latency over stdio: the mcp SDK client -> `sleepy-repo mcp`.

Usage: python scripts/bench_mcp_latency.py [N]   (needs sleepy-repo installed; builds the
`shop` fixture in a temp dir, refreshes it, then times N `context` calls)
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "How are coupon discounts applied before VAT?",
    "where is the cart total computed",
    "how does the web client format prices",
    "what happens when a payment fails",
    "inventory reservation on checkout",
]


async def measure(repo: str, n: int) -> None:
    exe = shutil.which("sleepy-repo")
    assert exe, "sleepy-repo is not installed"
    params = StdioServerParameters(command=exe, args=["mcp", "--repo", repo])
    async with Client(params) as client:
        await client.call_tool("context", {"question": "warm up", "budget": 1500})
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            r = await client.call_tool(
                "context", {"question": QUESTIONS[i % len(QUESTIONS)], "budget": 1500}
            )
            times.append((time.perf_counter() - t0) * 1000)
            assert not r.is_error
    times.sort()
    p95 = statistics.quantiles(times, n=20)[18]
    p50 = statistics.median(times)
    print("| calls | p50 ms | p95 ms | min ms | max ms |\n|---|---|---|---|---|")
    print(f"| {n} | {p50:.1f} | {p95:.1f} | {times[0]:.1f} | {times[-1]:.1f} |")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    repo = Path(tempfile.mkdtemp()) / "shop"
    build = [sys.executable, str(ROOT / "fixtures" / "build.py"), "shop", str(repo)]
    subprocess.run(build, check=True, capture_output=True)
    subprocess.run(["sleepy-repo", "refresh", "--repo", str(repo)], check=True, capture_output=True)
    anyio.run(measure, str(repo), n)


if __name__ == "__main__":
    main()
