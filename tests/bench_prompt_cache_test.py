"""scripts/bench_prompt_cache.py: the cached prefix is measured on the requests the real SDK
sends (to the fake Messages API), one identical prefix per refresh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import ROOT


def test_the_prefix_estimate_comes_from_recorded_requests(tmp_path: Path) -> None:
    out = tmp_path / "cache.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_prompt_cache.py"),
            "shop",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Prompt-cache prefix per refresh" in proc.stdout
    (r,) = json.loads(out.read_text())
    assert r["calls"] >= 10 and r["calls_with_prefix"] == r["calls"]
    assert r["distinct_prefixes"] == 1  # byte-identical system block across modules
    per_call = r["prefix_tokens_per_call"]
    assert r["prefix_tokens"] == per_call * r["calls"]
    assert 0 < r["prefix_share"] < 1 and r["input_tokens"] > r["prefix_tokens"]
    assert r["cacheable"] == (per_call >= r["min_cacheable"])
    assert r["cache_write_tokens"] + r["cache_read_tokens"] == (
        r["prefix_tokens"] if r["cacheable"] else 0
    )
    assert r["input_usd_with_cache"] <= r["input_usd_without_cache"]
