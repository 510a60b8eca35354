"""The planner under test: predictability and priority spending in ``bench localize``.

At every state the planner ranks the indexed modules (``planner.rank``: recency and churn
from the history *before* the state, PageRank, past questions; no editor is open). For each
case this records where its gold modules fall:

* ``likelihood``: the mean percentile of the gold modules' scores (1 = the planner's top
  module, 0 = its last); gold files that are not indexed modules (docs, data) are left out;
* ``covered``: under a budget that notes only ``SPEND_SHARE`` of the modules, the share of
  the gold modules that would have model notes, for three orders: the planner's, random
  (seeded per state) and alphabetical.

``summarize`` turns them into the two tables of the sleep-engine issue:

* **priority spending**: mean ``covered`` per order;
* **predictability** (the paper's finding, applied to code): cases binned into quintiles of
  ``likelihood``; per bin, each strategy's hit@3 gain over ``raw`` at each reported budget.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from sleepy_repo import api, planner

SPEND_SHARE = 0.2
ORDERS = ("planner", "random", "alphabetical")
BINS = 5
REPORT_BUDGETS = (250, 1000)


def planner_order(repo: api.Repo) -> list[str]:
    """The indexed modules in the planner's order at the repository's current state."""
    ranked = planner.rank(repo.root, repo.store, repo.config.sleep, is_git=repo.is_git)
    return [s.path for s in ranked]


def state_orders(paths: list[str], state: str) -> dict[str, list[str]]:
    """Module orders at this state from the planner's (``planner_order``): the planner's,
    a seeded random one, alphabetical."""
    shuffled = sorted(paths)
    random.Random(state).shuffle(shuffled)
    return {"planner": paths, "random": shuffled, "alphabetical": sorted(paths)}


def case_record(orders: dict[str, list[str]], gold: Sequence[str]) -> dict[str, Any]:
    order = orders["planner"]
    n = len(order)
    pos = {p: i for i, p in enumerate(order)}
    gold_modules = [g for g in gold if g in pos]
    out: dict[str, Any] = {"gold_modules": len(gold_modules), "modules": n}
    if not gold_modules or n == 0:
        out["likelihood"] = None
        out["covered"] = None
        return out
    out["likelihood"] = round(
        sum(1 - pos[g] / max(1, n - 1) for g in gold_modules) / len(gold_modules), 6
    )
    spend = max(1, round(SPEND_SHARE * n))
    covered = {}
    for name in ORDERS:
        top = set(orders[name][:spend])
        covered[name] = round(sum(g in top for g in gold_modules) / len(gold_modules), 6)
    out["covered"] = covered
    return out


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 6) if xs else None


def summarize(result: dict[str, Any]) -> dict[str, Any] | None:
    cases = [
        c for c in result["per_case"] if (c.get("planner") or {}).get("likelihood") is not None
    ]
    if not cases:
        return None
    spending = {name: _mean([c["planner"]["covered"][name] for c in cases]) for name in ORDERS}
    ordered = sorted(cases, key=lambda c: c["planner"]["likelihood"])
    bins: list[list[dict[str, Any]]] = [[] for _ in range(BINS)]
    for i, c in enumerate(ordered):
        bins[min(BINS - 1, i * BINS // len(ordered))].append(c)
    budgets: list[int] = result["budgets"]
    shown = [b for b in REPORT_BUDGETS if b in budgets] or budgets[:1]
    strategies = [
        n for n, info in result["strategies"].items() if info["status"] == "ok" and n != "raw"
    ]
    has_raw = result["strategies"].get("raw", {}).get("status") == "ok"
    rows = []
    for q, group in enumerate(bins, 1):
        if not group:
            continue
        row: dict[str, Any] = {
            "quintile": q,
            "cases": len(group),
            "likelihood": [
                group[0]["planner"]["likelihood"],
                group[-1]["planner"]["likelihood"],
            ],
            "gain_over_raw": {},
        }
        for b in shown:
            j = budgets.index(b)
            for name in strategies:
                if not has_raw:
                    continue
                gains = [
                    c["results"][name][j]["hit@3"] - c["results"]["raw"][j]["hit@3"]
                    for c in group
                    if name in c["results"] and "raw" in c["results"]
                ]
                row["gain_over_raw"].setdefault(str(b), {})[name] = _mean(gains)
        rows.append(row)
    return {
        "spend_share": SPEND_SHARE,
        "cases": len(cases),
        "priority_spending": spending,
        "predictability": rows,
        "note": (
            "likelihood = mean percentile of the gold modules in the planner's order at the "
            "state (1 = first); covered = share of gold modules inside the first "
            f"{SPEND_SHARE:.0%} of modules under each order"
        ),
    }


def render(summary: dict[str, Any] | None, console: Any) -> None:
    if not summary:
        return
    from rich.table import Table

    share = summary["spend_share"]
    t = Table(
        title=f"priority spending: gold modules noted with a budget for {share:.0%} "
        f"of modules ({summary['cases']} cases)"
    )
    for name in ORDERS:
        t.add_column(name, justify="right")
    t.add_row(*(f"{summary['priority_spending'][n]:.3f}" for n in ORDERS))
    console.print(t)
    rows = summary["predictability"]
    if not rows or not rows[0]["gain_over_raw"]:
        return
    t = Table(title="predictability: hit@3 gain over raw by planner-likelihood quintile")
    t.add_column("quintile")
    t.add_column("cases", justify="right")
    t.add_column("likelihood")
    cols = [(b, n) for b, per in rows[0]["gain_over_raw"].items() for n in per]
    for b, n in cols:
        t.add_column(f"{n}@{b}", justify="right")
    for r in rows:
        lo, hi = r["likelihood"]
        cells = []
        for b, n in cols:
            v = r["gain_over_raw"].get(b, {}).get(n)
            cells.append("-" if v is None else f"{v:+.3f}")
        t.add_row(f"Q{r['quintile']}", str(r["cases"]), f"{lo:.2f}–{hi:.2f}", *cells)
    console.print(t)
