"""The localization report: per-budget means, the headline, sleep-time cost, table, plot.

``summarize`` turns the per-case records of ``run_localize`` into:

* ``strategies[name]["by_budget"]``: mean hit@1/3/5 and mean tokens served per budget;
* ``headline``: the *baseline* is the better of ``raw`` and ``paths`` (higher best mean
  hit@3; on a tie, the one reaching it at the lower budget). Its *target* is that best
  hit@3 and its *budget* the smallest grid budget where it attains it. For every strategy
  the headline gives the budget at which its hit@3 curve first reaches the target,
  interpolated linearly on log(budget) between the two grid points around the crossing
  (the first grid budget if it is reached there already), and that budget as a ratio to
  the baseline's (``ratio`` < 1 means fewer tokens; ``savings`` = 1 / ratio). A strategy
  that never reaches the target is "not reached";
* ``sleep_time`` per strategy family: tokens spent per state (ledger delta) and the share
  of modules re-noted per state (notes written / modules), the first (cold) state apart
  from the incremental ones.

``render`` prints the tables with rich; ``plot_pareto`` draws mean test-time tokens served
(log x) against hit@3, one line per strategy, with the baseline's target as a dashed line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import fmean
from typing import Any

from sleepy_repo.bench import predict

EPS = 1e-9
BASELINES = ("raw", "paths")


def _mean(xs: list[float]) -> float:
    return fmean(xs) if xs else 0.0


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    budgets: list[int] = result["budgets"]
    curves: dict[str, list[float]] = {}  # unrounded mean hit@3 per budget
    for name, info in result["strategies"].items():
        info["by_budget"] = []
        if info["status"] != "ok":
            continue
        means = []
        for j, budget in enumerate(budgets):
            recs = [c["results"][name][j] for c in result["per_case"]]
            means.append(
                {
                    "budget": budget,
                    **{
                        key: _mean([r[key] for r in recs])
                        for key in ("hit@1", "hit@3", "hit@5", "tokens")
                    },
                }
            )
        curves[name] = [m["hit@3"] for m in means]
        best = max(curves[name])
        info["best_hit@3"] = round(best, 6)
        info["best_budget"] = min(
            b for b, h in zip(budgets, curves[name], strict=True) if h >= best - EPS
        )
        info["by_budget"] = [
            {
                "budget": m["budget"],
                "hit@1": round(m["hit@1"], 6),
                "hit@3": round(m["hit@3"], 6),
                "hit@5": round(m["hit@5"], 6),
                "mean_tokens": round(m["tokens"], 1),
            }
            for m in means
        ]
    result["headline"] = headline(result, curves)
    result["sleep_time"] = sleep_time(result)
    result["planner"] = predict.summarize(result)
    return result


def reach_budget(budgets: list[int], hits: list[float], target: float) -> float | None:
    """Budget where ``hits`` first reaches ``target``, linear in log(budget) between grid
    points; None if never reached."""
    for i, (b, h) in enumerate(zip(budgets, hits, strict=True)):
        if h >= target - EPS:
            if i == 0:
                return float(b)
            b0, h0 = budgets[i - 1], hits[i - 1]
            t = (target - h0) / (h - h0)
            return math.exp(math.log(b0) + t * (math.log(b) - math.log(b0)))
    return None


def headline(result: dict[str, Any], curves: dict[str, list[float]]) -> dict[str, Any]:
    """See the module docstring; ``curves`` are the unrounded mean hit@3 per budget."""
    budgets: list[int] = result["budgets"]
    strategies = result["strategies"]
    candidates = [n for n in BASELINES if n in curves]
    if not candidates:
        return {"baseline": None, "reason": "neither raw nor paths ran", "strategies": {}}
    baseline = sorted(
        candidates, key=lambda n: (-round(max(curves[n]), 9), strategies[n]["best_budget"])
    )[0]
    target = max(curves[baseline])
    base_budget = strategies[baseline]["best_budget"]
    out: dict[str, Any] = {
        "baseline": baseline,
        "target_hit@3": round(target, 6),
        "baseline_budget": base_budget,
        "definition": "budget at which each strategy's mean hit@3 first reaches the "
        "baseline's best, interpolated linearly on log(budget); ratio = that "
        "budget / the baseline's budget; savings = 1 / ratio",
        "strategies": {},
    }
    for name, hits in curves.items():
        needed = reach_budget(budgets, hits, target)
        out["strategies"][name] = {
            "reached": needed is not None,
            "budget": round(needed, 1) if needed is not None else None,
            "ratio": round(needed / base_budget, 4) if needed is not None else None,
            "savings": round(base_budget / needed, 4) if needed is not None else None,
        }
    return out


def sleep_time(result: dict[str, Any]) -> dict[str, Any]:
    families: dict[str, list[str]] = {}
    for name, info in result["strategies"].items():
        if info["status"] == "ok":
            families.setdefault(info["family"], []).append(name)
    out: dict[str, Any] = {}
    for family, names in families.items():
        states = [s["families"][family] for s in result["per_state"]]
        share = [s["written"] / s["modules"] if s["modules"] else 0.0 for s in states]
        later = states[1:]
        out[family] = {
            "strategies": names,
            "states": len(states),
            "cold_tokens": states[0]["tokens"] if states else 0,
            "cold_share_renoted": round(share[0], 4) if states else 0.0,
            "tokens_per_state": round(_mean([s["tokens"] for s in later]), 1) if later else None,
            "share_renoted_per_state": round(_mean(share[1:]), 4) if later else None,
            "total_tokens": sum(s["tokens"] for s in states),
        }
    return out


def save(result: dict[str, Any], out_dir: Path) -> None:
    """Write ``localize.json`` and ``pareto.png`` to ``out_dir``; record both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result["png"] = str(plot_pareto(result, out_dir / "pareto.png").resolve())
    result["json"] = str((out_dir / "localize.json").resolve())
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    Path(result["json"]).write_text(text, encoding="utf-8")


# -- rendering -----------------------------------------------------------------------------
def _fmt_budget(b: float | None) -> str:
    return "not reached" if b is None else f"{b:,.0f}"


def render(result: dict[str, Any], console: Any) -> None:
    """Print the report tables to a rich console."""
    from rich.table import Table

    rng = result["commit_range"]
    console.print(
        f"localize: {result['repo']} - {result['cases']} cases over {rng['states']} states "
        f"({rng['oldest_state'][:10]}..{rng['newest_commit'][:10]}), sleepy-repo "
        f"{result['sleepy_repo_version']}, {result['wall_s']:.1f} s"
    )
    h = result["headline"]
    t = Table(title="headline: budget to reach the baseline's best hit@3")
    for col in (
        "strategy",
        "budget needed",
        "ratio to baseline",
        "savings",
        "best hit@3",
        "wall s",
    ):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for name, info in result["strategies"].items():
        if info["status"] != "ok":
            t.add_row(name, f"skipped: {info['skip_reason']}", "", "", "", "")
            continue
        hs = h["strategies"].get(name, {})
        t.add_row(
            name + (" (baseline)" if name == h.get("baseline") else ""),
            _fmt_budget(hs.get("budget")),
            f"{hs['ratio']:.3f}" if hs.get("ratio") is not None else "-",
            f"{hs['savings']:.2f}x" if hs.get("savings") is not None else "-",
            f"{info['best_hit@3']:.3f} @ {info['best_budget']}",
            f"{info['wall_s'] + info['setup_s']:.1f}",
        )
    if h.get("baseline"):
        t.caption = (
            f"baseline {h['baseline']}: best hit@3 {h['target_hit@3']:.3f} at "
            f"{h['baseline_budget']} tokens; budgets interpolated on log(budget)"
        )
    else:
        t.caption = h.get("reason", "")
    console.print(t)

    t = Table(title="hit@k and mean tokens served per budget")
    t.add_column("strategy")
    t.add_column("budget", justify="right")
    for col in ("hit@1", "hit@3", "hit@5", "tokens"):
        t.add_column(col, justify="right")
    for name, info in result["strategies"].items():
        for i, r in enumerate(info["by_budget"]):
            t.add_row(
                name if i == 0 else "",
                f"{r['budget']:,}",
                f"{r['hit@1']:.3f}",
                f"{r['hit@3']:.3f}",
                f"{r['hit@5']:.3f}",
                f"{r['mean_tokens']:,.0f}",
                end_section=i == len(info["by_budget"]) - 1,
            )
    console.print(t)

    t = Table(title="sleep-time cost per strategy family")
    for col in (
        "family",
        "strategies",
        "cold tokens",
        "cold share re-noted",
        "tokens / state",
        "share re-noted / state",
    ):
        t.add_column(col, justify="left" if col in ("family", "strategies") else "right")
    for family, s in result["sleep_time"].items():
        t.add_row(
            family,
            ", ".join(s["strategies"]),
            f"{s['cold_tokens']:,}",
            f"{s['cold_share_renoted']:.3f}",
            "-" if s["tokens_per_state"] is None else f"{s['tokens_per_state']:,.1f}",
            "-" if s["share_renoted_per_state"] is None else f"{s['share_renoted_per_state']:.3f}",
        )
    t.caption = "cold = the first state (a full index); per state = the later states"
    console.print(t)
    predict.render(result.get("planner"), console)


def plot_pareto(result: dict[str, Any], path: Path) -> Path:
    """Mean test-time tokens served (log x) vs hit@3, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    markers = "osD^vP*Xh"
    for i, (name, info) in enumerate(result["strategies"].items()):
        rows = info["by_budget"]
        if not rows:
            continue
        xs = [max(r["mean_tokens"], 1.0) for r in rows]
        ys = [r["hit@3"] for r in rows]
        ax.plot(xs, ys, marker=markers[i % len(markers)], label=name, linewidth=1.5, markersize=4)
    h = result["headline"]
    if h.get("baseline"):
        ax.axhline(
            h["target_hit@3"],
            linestyle="--",
            color="grey",
            linewidth=1,
            label=f"best hit@3 of {h['baseline']}",
        )
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.xaxis.set_major_locator(FixedLocator([float(b) for b in result["budgets"]]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    ax.set_xlabel("test-time tokens served (mean per case, log scale)")
    ax.set_ylabel("hit@3")
    ax.set_ylim(0, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    repo = Path(result["repo"]).name
    ax.set_title(
        f"localization on {repo}: {result['cases']} cases, "
        f"budgets {result['budgets'][0]}-{result['budgets'][-1]}"
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
