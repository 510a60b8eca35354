"""``sleepy-repo bench localize``: every reported number of a scripted run, worked out by
hand, and the real strategies end to end through the CLI."""

from __future__ import annotations

import io
import json
import math
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sleepy_repo.bench import report
from sleepy_repo.bench.localize import hit_at_k, run_localize
from sleepy_repo.bench.mine import Case
from sleepy_repo.bench.strategies import Served, StateEnv, StaticNotes, StrategyError
from sleepy_repo.errors import RepoError
from sleepy_repo.tokens import count_tokens


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def test_hit_at_k() -> None:
    gold = ["a.py", "b.py"]
    assert hit_at_k(["a.py", "a.py", "c.py", "b.py"], gold, 1) == 1.0
    assert hit_at_k(["a.py", "a.py", "c.py", "b.py"], gold, 3) == 1.0  # distinct files
    assert hit_at_k(["c.py", "d.py", "e.py", "a.py"], gold, 3) == 0.0
    assert hit_at_k(["c.py", "a.py"], gold, 1) == 0.0
    assert hit_at_k(["a.py"], gold, 5) == 0.5  # divided by min(k, |gold|) = 2
    assert hit_at_k(["a.py"], ["a.py", "b.py", "c.py", "d.py"], 1) == 1.0
    assert hit_at_k([], gold, 3) == 0.0


def test_reach_budget() -> None:
    # reached at the first grid point: that budget, no extrapolation below the grid
    assert report.reach_budget([100, 200], [0.7, 0.9], 0.5) == 100.0
    # between 100 (0.2) and 400 (0.8): t = (0.5 - 0.2) / 0.6 = 0.5 -> sqrt(100 * 400)
    assert report.reach_budget([100, 400], [0.2, 0.8], 0.5) == pytest.approx(200.0)
    assert report.reach_budget([100, 400], [0.2, 0.4], 0.5) is None
    # the first crossing counts, even if the curve dips later
    assert report.reach_budget([100, 200, 400], [0.6, 0.3, 0.9], 0.5) == 100.0


# -- a scripted run --------------------------------------------------------------------------
# Cases from the shop fixture (fixtures/README.md), given out of order on purpose:
C1 = "Apply coupon discounts before VAT is computed"  # gold cart, pricing; state #1
C2 = "Retry transient payment gateway errors with exponential backoff"  # gold payments; #5
C3 = "Round VAT per line item instead of per order to match invoices"  # gold pricing, tax; #8
GOLD = {
    C1: ["shop/cart.py", "shop/pricing.py"],
    C2: ["shop/payments.py"],
    C3: ["shop/pricing.py", "shop/tax.py"],
}
BUDGETS = [100, 200, 400, 800]

# What each scripted strategy serves: case -> one (files, tokens) per budget.
# Short names stand for shop/<name>.py.
SCRIPT: dict[str, dict[str, list[tuple[list[str], int]]]] = {
    "raw": {
        C1: [
            (["api", "models"], 95),
            (["cart", "api"], 190),
            (["cart", "api", "cart", "pricing"], 380),
            (["cart", "api", "cart", "pricing"], 790),
        ],
        C2: [([], 0), (["payments"], 120), (["payments"], 120), (["payments", "api"], 610)],
        C3: [
            (["pricing"], 40),
            (["api", "models", "cart", "tax"], 200),
            (["models", "api", "cart", "tax", "pricing"], 399),
            (["models", "api", "cart", "tax", "pricing"], 800),
        ],
    },
    "paths": {
        C1: [
            (["pricing", "api"], 12),
            (["cart", "pricing"], 25),
            (["cart", "pricing"], 25),
            (["cart", "pricing"], 25),
        ],
        C2: [
            (["api"], 6),
            (["api", "models"], 13),
            (["api", "models", "cart", "storage", "payments"], 31),
            (["api", "models", "cart", "storage", "payments"], 31),
        ],
        C3: [
            (["tax"], 5),
            (["tax", "api", "pricing"], 19),
            (["tax", "api", "pricing"], 19),
            (["tax", "api", "pricing"], 19),
        ],
    },
    "notes": {
        C1: [
            (["cart"], 80),
            (["pricing", "cart"], 150),
            (["pricing", "cart"], 300),
            (["pricing", "cart"], 300),
        ],
        C2: [(["api"], 70), (["payments"], 160), (["payments"], 320), (["payments"], 320)],
        C3: [
            (["api"], 90),
            (["tax", "models"], 170),
            (["tax", "pricing"], 340),
            (["tax", "pricing"], 340),
        ],
    },
    "slow": {
        C1: [
            ([], 0),
            (["api", "models", "tax", "pricing"], 10),
            (["api", "models", "tax", "pricing"], 20),
            (["api", "models", "tax", "pricing"], 30),
        ],
        C2: [
            ([], 0),
            ([], 10),
            (["api", "models", "payments"], 20),
            (["api", "models", "payments"], 30),
        ],
        C3: [([], 0), (["tax"], 10), (["storage"], 20), (["tax", "models", "storage"], 30)],
    },
}


class Scripted:
    """Serves SCRIPT[name]; checks it only ever sees the case's state."""

    def __init__(
        self,
        name: str,
        family: str = "none",
        skip: str | None = None,
        fail_on: str | None = None,
        crash_on: str | None = None,
    ) -> None:
        self.name, self.family, self.skip = name, family, skip
        self.fail_on, self.crash_on = fail_on, crash_on
        self.description = f"scripted {name}"
        self.seen: list[tuple[str, str, int]] = []  # (subject, HEAD, mtime of money.py)
        self.closed = False

    def setup(self) -> str | None:
        return self.skip

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        subject = query.splitlines()[0]
        assert list(budgets) == BUDGETS
        head = _git(env.root, "rev-parse", "HEAD").strip()
        assert head == env.state
        if subject == C2:  # the state is before the commit: no retry policy yet
            assert "RetryPolicy" not in (env.root / "shop/payments.py").read_text()
        self.seen.append((subject, head, (env.root / "shop/money.py").stat().st_mtime_ns))
        if subject == self.fail_on:
            raise StrategyError("the model is unreachable")
        if subject == self.crash_on:
            raise RuntimeError("a bug")
        return [
            Served([f"shop/{n}.py" for n in files], tokens)
            for files, tokens in SCRIPT[self.name][subject]
        ]

    def close(self) -> None:
        self.closed = True


def _cases(repo: Path) -> list[Case]:
    log = _git(repo, "log", "--format=%H %P %s").splitlines()
    by_subject = {line.split(" ", 2)[2]: line.split(" ")[:2] for line in log}
    out = []
    for query, subject in ((C3, C3 + " (#18)"), (C1, C1 + " (#12)"), (C2, C2)):
        sha, parent = by_subject[subject]
        out.append(Case(state=parent, commit=sha, query=query, gold_files=GOLD[query]))
    return out


HIT_KEYS = ("budget", "hit@1", "hit@3", "hit@5", "mean_tokens")


def _hits(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file-hit columns of per-budget rows (the scripted strategies serve no items)."""
    return [{k: row[k] for k in HIT_KEYS} for row in rows]


def test_scripted_run_every_number(make_repo: Any, tmp_path: Path) -> None:
    repo = make_repo("shop")
    cases = _cases(repo)
    strategies = {
        "raw": Scripted("raw"),
        "paths": Scripted("paths"),
        "notes": Scripted("notes", family="static"),
        "slow": Scripted("slow"),
        "broken": Scripted("broken", skip="no model configured"),
    }
    r = run_localize(
        repo,
        cases,
        strategies,
        budgets=[800, 100, 400, 200],
        command=["sleepy-repo", "bench", "localize"],
        cases_file="cases.jsonl",
    )

    # walked in history order (oldest state first), one worktree, removed at the end
    assert [s for s, _, _ in strategies["raw"].seen] == [C1, C2, C3]
    assert [h for _, h, _ in strategies["raw"].seen] == [
        c.state for c in (cases[1], cases[2], cases[0])
    ]
    # shop/money.py never changes: `git checkout` kept its mtime through all three states
    assert len({m for _, _, m in strategies["raw"].seen}) == 1
    assert _git(repo, "worktree", "list").count("\n") == 1
    assert all(s.closed for s in strategies.values())

    assert r["schema_version"] == 2
    assert r["benchmark"] == "localize"
    assert r["command"] == ["sleepy-repo", "bench", "localize"]
    assert r["repo"] == str(repo)
    assert r["cases"] == 3
    assert r["budgets"] == BUDGETS
    assert r["commit_range"] == {
        "oldest_state": cases[1].state,
        "newest_state": cases[0].state,
        "newest_commit": cases[0].commit,
        "states": 3,
    }
    assert r["strategies"]["broken"]["status"] == "skipped"
    assert r["strategies"]["broken"]["skip_reason"] == "no model configured"
    assert r["strategies"]["broken"]["by_budget"] == []
    assert {n: s["status"] for n, s in r["strategies"].items()} == {
        "raw": "ok",
        "paths": "ok",
        "notes": "ok",
        "slow": "ok",
        "broken": "skipped",
    }

    # hit@k = |gold ∩ first k distinct files| / min(k, |gold|); means over C1, C2, C3.
    def rows(*values: tuple[int, float, float, float, float]) -> list[dict[str, Any]]:
        return [
            {"budget": b, "hit@1": h1, "hit@3": h3, "hit@5": h5, "mean_tokens": t}
            for b, h1, h3, h5, t in values
        ]

    # raw, per case (hit@1, hit@3, hit@5):
    #   100: C1 [api, models] 0,0,0 | C2 [] 0,0,0 | C3 [pricing] 1,1/2,1/2
    #   200: C1 [cart, api] 1,1/2,1/2 | C2 [payments] 1,1,1 | C3 [api, models, cart, tax] 0,0,1/2
    #   400, 800: C1 distinct [cart, api, pricing] 1,1,1 | C2 1,1,1 | C3 [models, api, cart,
    #   tax, pricing] 0,0,1
    # tokens: (95+0+40)/3 = 45, (190+120+200)/3 = 170, (380+120+399)/3 = 299.67,
    #   (790+610+800)/3 = 733.33
    assert _hits(r["strategies"]["raw"]["by_budget"]) == rows(
        (100, 0.333333, 0.166667, 0.166667, 45.0),
        (200, 0.666667, 0.5, 0.666667, 170.0),
        (400, 0.666667, 0.666667, 1.0, 299.7),
        (800, 0.666667, 0.666667, 1.0, 733.3),
    )
    # paths: 100: C1 [pricing, api] 1,1/2,1/2 | C2 [api] 0 | C3 [tax] 1,1/2,1/2
    #   200: C1 [cart, pricing] 1,1,1 | C2 [api, models] 0,0,0 | C3 [tax, api, pricing] 1,1,1
    #   400, 800: as 200, but C2 [api, models, cart, storage, payments] 0,0,1
    # tokens: 23/3 = 7.67, 57/3 = 19, 75/3 = 25, 25
    assert _hits(r["strategies"]["paths"]["by_budget"]) == rows(
        (100, 0.666667, 0.333333, 0.333333, 7.7),
        (200, 0.666667, 0.666667, 0.666667, 19.0),
        (400, 0.666667, 0.666667, 1.0, 25.0),
        (800, 0.666667, 0.666667, 1.0, 25.0),
    )
    # notes: 100: C1 [cart] 1,1/2,1/2 | C2 [api] 0 | C3 [api] 0
    #   200: C1 [pricing, cart] 1,1,1 | C2 [payments] 1,1,1 | C3 [tax, models] 1,1/2,1/2
    #   400, 800: everything 1
    assert _hits(r["strategies"]["notes"]["by_budget"]) == rows(
        (100, 0.333333, 0.166667, 0.166667, 80.0),
        (200, 1.0, 0.833333, 0.833333, 160.0),
        (400, 1.0, 1.0, 1.0, 320.0),
        (800, 1.0, 1.0, 1.0, 320.0),
    )
    # slow: 100: nothing
    #   200: C1 [api, models, tax, pricing] 0,0,1/2 | C2 [] 0 | C3 [tax] 1,1/2,1/2
    #   400: C1 0,0,1/2 | C2 [api, models, payments] 0,1,1 | C3 [storage] 0,0,0
    #   800: C1 0,0,1/2 | C2 0,1,1 | C3 [tax, models, storage] 1,1/2,1/2
    assert _hits(r["strategies"]["slow"]["by_budget"]) == rows(
        (100, 0.0, 0.0, 0.0, 0.0),
        (200, 0.333333, 0.166667, 0.333333, 10.0),
        (400, 0.0, 0.333333, 0.5, 20.0),
        (800, 0.333333, 0.5, 0.666667, 30.0),
    )
    assert {n: (s.get("best_hit@3"), s.get("best_budget")) for n, s in r["strategies"].items()} == {
        "raw": (0.666667, 400),
        "paths": (0.666667, 200),
        "notes": (1.0, 400),
        "slow": (0.5, 800),
        "broken": (None, None),
    }

    # Headline: raw and paths tie on best hit@3 (2/3); paths reaches it at the lower budget
    # (200 < 400), so paths is the baseline: target 2/3 at 200 tokens.
    #   raw first reaches 2/3 at 400 (1/2 at 200): t = (2/3 - 1/2) / (2/3 - 1/2) = 1 -> 400
    #   notes: 1/6 at 100, 5/6 at 200: t = (2/3 - 1/6) / (5/6 - 1/6) = 3/4
    #     -> exp(log 100 + 3/4 (log 200 - log 100)) = 100 * 2^0.75 = 168.18; ratio 2^-0.25
    #     = 0.8409, savings 2^0.25 = 1.1892
    #   slow: best 1/2 < 2/3: not reached
    assert round(100 * 2**0.75, 3) == 168.179
    h = r["headline"]
    assert (h["baseline"], h["target_hit@3"], h["baseline_budget"]) == ("paths", 0.666667, 200)
    assert h["strategies"] == {
        "raw": {"reached": True, "budget": 400.0, "ratio": 2.0, "savings": 0.5},
        "paths": {"reached": True, "budget": 200.0, "ratio": 1.0, "savings": 1.0},
        "notes": {"reached": True, "budget": 168.2, "ratio": 0.8409, "savings": 1.1892},
        "slow": {"reached": False, "budget": None, "ratio": None, "savings": None},
    }

    # Sleep time. The shop states: #1 (17 modules: 11 in shop/, tests/test_cart.py, 5 in
    # web/) is indexed cold, all 17 noted; to #5: pricing, cart, test_cart, api, inventory
    # and models changed -> 6 re-noted; to #8: payments and web/src/api.ts -> 2.
    # Share per later state: (6/17 + 2/17) / 2 = 4/17 = 0.2353. No model: 0 tokens.
    assert [(s["cases"], s["families"]) for s in r["per_state"]] == [
        (
            1,
            {
                "none": {"tokens": 0, "written": 0, "modules": 17},
                "static": {"tokens": 0, "written": 17, "modules": 17},
            },
        ),
        (
            1,
            {
                "none": {"tokens": 0, "written": 0, "modules": 17},
                "static": {"tokens": 0, "written": 6, "modules": 17},
            },
        ),
        (
            1,
            {
                "none": {"tokens": 0, "written": 0, "modules": 17},
                "static": {"tokens": 0, "written": 2, "modules": 17},
            },
        ),
    ]
    assert r["sleep_time"] == {
        "none": {
            "strategies": ["raw", "paths", "slow"],
            "states": 3,
            "cold_tokens": 0,
            "cold_share_renoted": 0.0,
            "tokens_per_state": 0.0,
            "share_renoted_per_state": 0.0,
            "total_tokens": 0,
        },
        "static": {
            "strategies": ["notes"],
            "states": 3,
            "cold_tokens": 0,
            "cold_share_renoted": 1.0,
            "tokens_per_state": 0.0,
            "share_renoted_per_state": 0.2353,
            "total_tokens": 0,
        },
    }

    # per case: the scores and the first distinct files, in history order
    c1_raw = r["per_case"][0]["results"]["raw"]
    assert r["per_case"][0]["commit"] == cases[1].commit
    assert c1_raw[2] == {
        "budget": 400,
        "tokens": 380,
        "coverage": 0.0,  # no items served: no line carried
        "pointer_coverage": 0.0,
        "symbol_hit@1": 0.0,
        "symbol_hit@3": 0.0,
        "symbol_hit@5": 0.0,
        "hit@1": 1.0,
        "hit@3": 1.0,
        "hit@5": 1.0,
        "leak": False,
        "files": ["shop/cart.py", "shop/api.py", "shop/pricing.py"],
    }
    assert set(r["per_case"][0]["results"]) == {"raw", "paths", "notes", "slow"}
    assert all(s["wall_s"] >= 0 and s["setup_s"] >= 0 for s in r["strategies"].values())

    # the table and the plot
    buf = io.StringIO()
    report.render(r, Console(file=buf, width=200, highlight=False))
    table = buf.getvalue()
    for text in (
        "paths (baseline)",
        "168",
        "0.841",
        "1.19x",
        "not reached",
        "skipped: no model configured",
        "0.235",
        "baseline paths: best hit@3 0.667 at 200 tokens",
    ):
        assert text in table, text
    png = report.plot_pareto(r, tmp_path / "out" / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_strategies(make_repo: Any) -> None:
    repo = make_repo("shop")
    cases = _cases(repo)
    flaky = Scripted("raw", fail_on=C2)
    r = run_localize(repo, cases, {"raw": flaky, "paths": Scripted("paths")}, budgets=BUDGETS)
    # a StrategyError drops the strategy, with the reason, and no partial numbers
    assert r["strategies"]["raw"]["status"] == "skipped"
    assert r["strategies"]["raw"]["skip_reason"] == (
        f"failed on commit {cases[2].commit[:12]}: the model is unreachable"
    )
    assert all("raw" not in c["results"] for c in r["per_case"])
    assert r["headline"]["baseline"] == "paths"
    # any other error propagates, and the worktree is still removed
    crash = Scripted("paths", crash_on=C2)
    with pytest.raises(RuntimeError, match="a bug"):
        run_localize(repo, cases, {"paths": crash}, budgets=BUDGETS)
    assert crash.closed
    assert _git(repo, "worktree", "list").count("\n") == 1
    # cases from another repository
    bogus = Case(state="0" * 40, commit="1" * 40, query="x", gold_files=["a.py"])
    with pytest.raises(RepoError, match="is not a commit of"):
        run_localize(repo, [bogus], {"paths": Scripted("paths")}, budgets=BUDGETS)


def test_static_strategy_logs_no_hits(make_repo: Any) -> None:
    repo = make_repo("shop")

    class Spy(StaticNotes):
        def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
            served = super().run(env, query, budgets)
            with env.repo.store.read() as conn:
                assert conn.execute("SELECT count(*) FROM hits").fetchone()[0] == 0
            return served

    r = run_localize(repo, _cases(repo), {"static": Spy()}, budgets=[300])
    assert r["strategies"]["static"]["status"] == "ok"
    assert r["headline"] == {
        "baseline": None,
        "reason": "neither raw nor paths ran",
        "strategies": {},
    }


def test_cli_real_strategies_on_shop(cli: Any, make_repo: Any, tmp_path: Path) -> None:
    repo = make_repo("shop")
    cases = tmp_path / "cases.jsonl"
    cli.run("bench", "mine", "--out", str(cases), repo=repo)
    out = tmp_path / "bench"
    proc = cli.run(
        "bench",
        "localize",
        "--cases",
        str(cases),
        "--budgets",
        "250,500,1000",
        "--strategies",
        "raw,paths,static,static-paths,aider-map",
        "--aider-python",
        str(tmp_path / "missing" / "python"),
        "--out-dir",
        str(out),
        "--json",
        repo=repo,
    )
    r = json.loads(proc.stdout)
    assert r == json.loads((out / "localize.json").read_text())
    assert r["schema_version"] == 2
    assert r["cases"] == 7 and r["commit_range"]["states"] == 7
    assert "--json" in r["command"] and "localize" in r["command"]
    assert r["sleepy_repo_version"]
    assert r["budgets"] == [250, 500, 1000]
    aider = r["strategies"]["aider-map"]
    assert aider["status"] == "skipped"
    assert aider["skip_reason"] == f"aider python {tmp_path / 'missing' / 'python'} does not exist"
    names = ["raw", "paths", "static", "static-paths"]
    for name in names:
        s = r["strategies"][name]
        assert s["status"] == "ok" and len(s["by_budget"]) == 3
        for row in s["by_budget"]:
            assert 0 <= row["hit@1"] <= 1 and 0 <= row["hit@3"] <= 1 and 0 <= row["hit@5"] <= 1
            assert 0 <= row["mean_tokens"] <= row["budget"]
    for case in r["per_case"]:
        assert set(case["results"]) == set(names)
        for name in names:
            for res in case["results"][name]:
                assert 0 <= res["tokens"] <= res["budget"]
                assert all(0 <= res[k] <= 1 for k in ("hit@1", "hit@3", "hit@5"))
                assert len(res["files"]) == len(set(res["files"]))
    assert r["strategies"]["static"]["family"] == "static"
    assert r["sleep_time"]["static"]["cold_share_renoted"] == 1.0
    assert r["sleep_time"]["static"]["total_tokens"] == 0
    assert r["sleep_time"]["none"]["strategies"] == ["raw", "paths"]
    assert r["headline"]["baseline"] in ("raw", "paths")
    assert r["headline"]["strategies"][r["headline"]["baseline"]]["ratio"] == 1.0
    png = Path(r["png"])
    assert png == out / "pareto.png" and png.stat().st_size > 1000
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert _git(repo, "worktree", "list").count("\n") == 1
    assert not math.isnan(r["wall_s"])

    # the planner at each state: where the gold modules fell, and the summary tables
    recs = [c["planner"] for c in r["per_case"]]
    assert all(0 <= x["likelihood"] <= 1 for x in recs if x["likelihood"] is not None)
    scored = [x for x in recs if x["covered"] is not None]
    assert scored and set(scored[0]["covered"]) == {"planner", "random", "alphabetical"}
    pl = r["planner"]
    assert pl["cases"] == len(scored)
    for order in ("planner", "random", "alphabetical"):
        mean = sum(x["covered"][order] for x in scored) / len(scored)
        assert pl["priority_spending"][order] == pytest.approx(mean, abs=1e-6)
    assert sum(row["cases"] for row in pl["predictability"]) == len(scored)

    # the table, and --limit (the most recent cases)
    proc = cli.run(
        "bench",
        "localize",
        "--cases",
        str(cases),
        "--budgets",
        "250",
        "--strategies",
        "paths,static",
        "--limit",
        "2",
        "--out-dir",
        str(out),
        repo=repo,
    )
    assert "headline" in proc.stdout and "paths (baseline)" in proc.stdout
    assert "sleep-time cost per strategy family" in proc.stdout
    assert "priority spending" in proc.stdout
    r2 = json.loads((out / "localize.json").read_text())
    assert [c["commit"] for c in r2["per_case"]] == [c["commit"] for c in r["per_case"][-2:]]

    bad = cli.run(
        "bench", "localize", "--cases", str(cases), "--strategies", "nope", repo=repo, check=False
    )
    assert bad.returncode == 2 and "unknown strategies" in bad.stderr


def test_paths_baseline_index_follows_each_state_like_a_fresh_one(make_repo: Any) -> None:
    """The whole-file BM25 baseline keeps its own index and brings it in step with each
    state by blob sha: after edits, a deletion and an addition it ranks exactly as an
    index built from scratch on the same store, and it indexes every module once."""
    from sleepy_repo import api
    from sleepy_repo.bench.strategies import BM25Paths

    from helpers import git

    root = make_repo("shop")
    repo = api.open_repo(root)
    api.refresh(repo)
    env = StateEnv(root=root, state="s0", repo=repo)
    questions = ["cart total with coupons", "format money in the web client", "vat order"]
    kept = BM25Paths()
    first = [kept.run(env, q, [4000])[0].files for q in questions]
    assert all(first)
    (root / "shop" / "tax.py").write_text('"""Tax."""\n\ndef coupon_vat():\n    return 0\n')
    (root / "shop" / "storage.py").unlink()
    (root / "shop" / "coupons.py").write_text('"""Coupons."""\n\ndef zanzibar_rate():\n    pass\n')
    git(root, "add", "-A")
    api.refresh(repo)
    env = StateEnv(root=root, state="s1", repo=repo)
    fresh = BM25Paths()
    try:
        for q in questions:
            assert kept.run(env, q, [4000]) == fresh.run(env, q, [4000])
        with repo.store.read() as conn:
            indexed = {
                r[0] for r in conn.execute("SELECT path FROM modules WHERE status = 'indexed'")
            }
        assert set(kept._rows) == indexed == set(fresh._rows)
        assert "shop/storage.py" not in kept._rows
        assert kept.run(env, "zanzibar rate", [4000])[0].files[0] == "shop/coupons.py"
    finally:
        kept.close()
        fresh.close()


def test_coverage_headline_by_hand() -> None:
    budgets = [250, 500, 1000, 2000, 4000]
    coverage = {
        "raw": [0.0, 0.1, 0.2, 0.3, 0.5],
        "s": [0.1, 0.3, 0.4, 0.4, 0.6],
        "n": [0.1] * 5,
    }
    served = {
        "raw": [200.0, 450.0, 900.0, 1800.0, 3600.0],
        "s": [100.0, 400.0, 800.0, 1600.0, 3200.0],
        "n": [250.0, 500.0, 1000.0, 2000.0, 4000.0],
    }
    h = report.coverage_headline(budgets, coverage, served)
    at2k, at4k = h["targets"]
    # raw @2000: 0.3 with 1800 tokens served. s reaches 0.3 at its 500 point (400 tokens;
    # 0.1 at 100 before it): t = 1 -> 400 tokens, ratio 400 / 1800
    assert (at2k["raw_budget"], at2k["raw_coverage"], at2k["raw_tokens"]) == (2000, 0.3, 1800.0)
    assert at2k["strategies"]["s"] == {"reached": True, "tokens": 400.0, "ratio": 0.2222}
    assert at2k["strategies"]["raw"] == {"reached": True, "tokens": 1800.0, "ratio": 1.0}
    assert at2k["strategies"]["n"] == {"reached": False, "tokens": None, "ratio": None}
    # raw @4000: 0.5 with 3600 served. s: 0.4 at 1600, 0.6 at 3200: t = 1/2 on log tokens
    # -> sqrt(1600 * 3200) = 2262.7, ratio 2262.7 / 3600 = 0.6285
    assert at4k["strategies"]["s"]["tokens"] == pytest.approx(2262.7, abs=0.05)
    assert at4k["strategies"]["s"]["ratio"] == pytest.approx(0.6285, abs=1e-4)
    assert report.coverage_headline([250, 1000], coverage, served)["targets"] == [
        {"raw_budget": 2000, "reason": "2000 is not a budget"},
        {"raw_budget": 4000, "reason": "4000 is not a budget"},
    ]
    assert report.coverage_headline(budgets, {}, {})["reason"] == "raw did not run"


def _mined(cli: Any, make_repo: Any, tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo("shop")
    cases = tmp_path / "cases.jsonl"
    cli.run("bench", "mine", "--out", str(cases), repo=repo)
    return repo, cases


def test_smoke_limit_2_every_metric(cli: Any, make_repo: Any, tmp_path: Path) -> None:
    """The CI smoke run: the real strategies, default budgets, two cases, through the CLI."""
    repo, cases = _mined(cli, make_repo, tmp_path)
    out = tmp_path / "smoke"
    proc = cli.run(
        "bench",
        "localize",
        "--cases",
        str(cases),
        "--limit",
        "2",
        "--strategies",
        "raw,paths,whole-files,static,static-no-pieces,static-tuned",
        "--out-dir",
        str(out),
        repo=repo,
    )
    for text in (
        "tokens to reach raw's gold-line coverage",
        "coverage",
        "pointer cov",
        "sym@3",
        "whole-files",
    ):
        assert text in proc.stdout, text
    r = json.loads((out / "localize.json").read_text())
    assert r["budgets"] == [250, 375, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000]
    assert r["png_skipped"] is None and Path(r["png"]).exists()
    assert [t["raw_budget"] for t in r["coverage_headline"]["targets"]] == [2000, 4000]
    # the tuned row fitted on the history before the oldest case (too short here: defaults)
    tuned = r["strategies"]["static-tuned"]["description"]
    assert "fitted on the commits before the oldest case: " in tuned, tuned
    assert "history too short" in tuned, tuned
    for name in ("raw", "paths", "whole-files", "static", "static-no-pieces", "static-tuned"):
        s = r["strategies"][name]
        assert s["status"] == "ok" and s["cases_with_gold_lines"] == 2
        for row in s["by_budget"]:
            for key in ("coverage", "pointer_coverage", "symbol_hit@1", "symbol_hit@3"):
                assert 0 <= row[key] <= 1
            assert row["coverage"] <= row["pointer_coverage"] + 1e-9
            assert row["leaks"] == 0
        assert s["by_budget"][0]["mean_tokens"] <= 250
    # paths serves no code: no line is covered or pointed at
    assert all(row["coverage"] == 0 for row in r["strategies"]["paths"]["by_budget"])
    # raw and whole files cover some gold lines by 8,000 tokens on this small repo
    assert r["strategies"]["raw"]["by_budget"][-1]["coverage"] > 0
    assert r["strategies"]["whole-files"]["by_budget"][-1]["coverage"] > 0
    for case in r["per_case"]:
        assert sum(case["gold_lines"].values()) > 0 and case["gold_symbols"]


def test_without_matplotlib_the_bench_finishes(
    cli: Any, make_repo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`pip install .` has no matplotlib: the command writes the JSON and says how to get
    the PNG (the real command path, in process, with the import failing)."""
    import sys

    from sleepy_repo import cli as cli_module

    repo, cases = _mined(cli, make_repo, tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "nompl"
    argv = ["bench", "localize", "--repo", str(repo), "--cases", str(cases), "--limit", "1"]
    argv += ["--budgets", "250,2000", "--strategies", "raw,paths", "--out-dir", str(out)]
    assert cli_module.main(argv) == 0
    captured = capsys.readouterr()
    assert "pip install 'sleepy-repo[bench]'" in captured.out + captured.err
    r = json.loads((out / "localize.json").read_text())
    assert r["png"] is None and "sleepy-repo[bench]" in r["png_skipped"]
    assert not (out / "pareto.png").exists()


def test_product_code_items_carry_their_lines(make_repo: Any) -> None:
    """The static strategy's served items: a code item's text is its lines, so coverage
    can score it; note items carry their citations."""
    from sleepy_repo import api

    root = make_repo("shop")
    repo = api.open_repo(root)
    api.refresh(repo)
    env = StateEnv(root=root, state="HEAD", repo=repo)
    (served,) = StaticNotes().run(env, "coupon discount before VAT", [4000])
    assert served.tokens == count_tokens(served.text)
    kinds = {i.kind for i in served.items}
    assert "code" in kinds and kinds - {"code"}
    for item in served.items:
        if item.kind == "code":
            lines = (root / item.path).read_text().split("\n")
            assert item.text == "\n".join(lines[item.start_line - 1 : item.end_line])
    assert any(i.citations for i in served.items if i.kind != "code")


def test_written_questions_through_the_cli(cli: Any, make_repo: Any, tmp_path: Path) -> None:
    """A question case (no commit): gold lines are its symbols' spans; the table renders."""
    repo = make_repo("shop")
    head = _git(repo, "rev-parse", "HEAD").strip()
    questions = tmp_path / "questions.jsonl"
    rows = [
        {
            "id": "price",
            "state": head,
            "query": "where is the cart priced with coupons and VAT?",
            "gold_files": ["shop/pricing.py"],
            "gold_symbols": ["price_cart", "Coupon.check"],
        }
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "q"
    proc = cli.run(
        "bench",
        "localize",
        "--cases",
        str(questions),
        "--budgets",
        "500,2000,4000",
        "--strategies",
        "raw,whole-files,static",
        "--out-dir",
        str(out),
        repo=repo,
    )
    assert "1 cases over 1 states" in proc.stdout
    r = json.loads((out / "localize.json").read_text())
    (case,) = r["per_case"]
    assert case["commit"] is None and case["id"] == "price"
    assert case["gold_symbols"] == ["shop/pricing.py::price_cart", "shop/pricing.py::Coupon.check"]
    assert "missing_symbols" not in case
    # whole files at 4,000 tokens serves pricing.py whole or nearly: most of its gold lines
    assert r["strategies"]["whole-files"]["by_budget"][-1]["coverage"] > 0
