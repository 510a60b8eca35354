"""`sleepy-repo bench index` through the installed CLI, on a small corpus (no timing asserts:
speed targets live in the benchmark's own table)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import CLI, ROOT


def test_bench_index_reports_every_phase(cli: CLI, tmp_path: Path) -> None:
    corpus = ROOT / "fixtures" / "repos" / "relay" / "tree"
    out = tmp_path / "index.json"
    r = cli.run("bench", "index", str(corpus), "--json", "--out", str(out), "--repeat", "3")
    result = json.loads(r.stdout)
    assert result == json.loads(out.read_text())
    sources = [p for p in corpus.rglob("*") if p.suffix in {".go", ".rs", ".py"}]
    assert result["files"] == len(sources) == result["modules"]
    assert result["edit_parsed"] == 1  # one edited file, one parse
    for key in ("baseline_parse_only_s", "cold_s", "warm_s", "edit_s", "peak_rss_mb"):
        assert result[key] > 0, key
    # the ratio is of the unrounded times; the printed times are rounded to 1 ms
    implied = result["cold_ratio"] * result["baseline_parse_only_s"]
    assert abs(implied - result["cold_s"]) <= 0.0005 * (1 + result["cold_ratio"]) + 1e-6
    assert set(result["meets"]) == {"cold_ratio", "warm_s", "edit_s"}
    # three alternating pairs; the reported one is the median ratio's
    assert result["repeat"] == len(result["runs"]) == 3
    ratios = sorted(run["ratio"] for run in result["runs"])
    assert result["cold_ratio"] == ratios[1]
    assert all(0 < run["cold_index_s"] <= run["cold_s"] for run in result["runs"])
    # CPU seconds of each side (the index's worker processes included)
    for run in result["runs"]:
        assert run["cold_cpu_s"] > 0 and run["baseline_cpu_s"] >= 0
        if run["baseline_cpu_s"]:  # a ratio of unrounded times, like the wall one
            implied = run["cpu_ratio"] * run["baseline_cpu_s"]
            assert abs(implied - run["cold_cpu_s"]) <= 0.0005 * (1 + run["cpu_ratio"]) + 1e-6
    median = next(r for r in result["runs"] if r["ratio"] == ratios[1])
    assert result["cpu_ratio"] == median["cpu_ratio"]
    assert result["cold_index_s"] <= result["cold_s"]
    table = cli.run("bench", "index", str(corpus)).stdout
    assert "parse-only baseline" in table and "cold index" in table
    assert "static notes" in table and "workers included" in table
    bad = cli.run("bench", "index", str(corpus), "--repeat", "0", check=False)
    assert bad.returncode == 2 and "--repeat must be >= 1" in bad.stderr
