"""The localization report: per-budget means, the headline, sleep-time cost, table, plot.

``summarize`` turns the per-case records of ``run_localize`` into:

* ``strategies[name]["by_budget"]``: per budget, the mean gold-line coverage and pointer
  coverage (over the cases with gold lines), mean symbol hit@1/3/5 (over the cases with
  gold symbols), mean file hit@1/3/5 and mean tokens served (over all cases), and the
  number of results that leaked the case's own commit subject;
* ``coverage_headline``: for ``raw``'s mean coverage at 2,000 and at 4,000 tokens (the
  *targets*), the tokens each strategy needs to reach it: its coverage curve against its
  mean tokens *served* per budget (not the nominal budget), interpolated linearly on
  log(tokens) between the two budgets around the first crossing (its first point if that
  already reaches it), and ``ratio`` = those tokens / raw's mean served tokens at that
  budget; "not reached" when the curve never gets there;
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
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from sleepy_repo.bench import predict

EPS = 1e-9
BASELINES = ("raw", "paths")


def _mean(xs: list[float]) -> float:
    return fmean(xs) if xs else 0.0


LINE_KEYS = ("coverage", "pointer_coverage")
SYMBOL_KEYS = ("symbol_hit@1", "symbol_hit@3", "symbol_hit@5")
COVERAGE_REFERENCE = (2000, 4000)  # raw's budgets whose coverage the headline targets


def _mean_known(recs: list[dict[str, Any]], key: str) -> float | None:
    """Mean of ``key`` over the records where it is known (None: none is)."""
    xs = [r[key] for r in recs if r.get(key) is not None]
    return fmean(xs) if xs else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    budgets: list[int] = result["budgets"]
    curves: dict[str, list[float]] = {}  # unrounded mean hit@3 per budget
    coverage: dict[str, list[float]] = {}  # unrounded mean coverage per budget
    served: dict[str, list[float]] = {}  # unrounded mean tokens served per budget
    for name, info in result["strategies"].items():
        info["by_budget"] = []
        if info["status"] != "ok":
            continue
        means: list[dict[str, Any]] = []
        for j, budget in enumerate(budgets):
            recs = [c["results"][name][j] for c in result["per_case"]]
            means.append(
                {
                    "budget": budget,
                    **{
                        key: _mean([r[key] for r in recs])
                        for key in ("hit@1", "hit@3", "hit@5", "tokens")
                    },
                    **{key: _mean_known(recs, key) for key in (*LINE_KEYS, *SYMBOL_KEYS)},
                    "leaks": sum(1 for r in recs if r.get("leak")),
                    **_reader_means(recs),
                }
            )
        curves[name] = [m["hit@3"] for m in means]
        coverage[name] = [m["coverage"] or 0.0 for m in means]
        served[name] = [m["tokens"] for m in means]
        info["cases_with_gold_lines"] = sum(
            1 for c in result["per_case"] if c["results"][name][0].get("coverage") is not None
        )
        info["cases_with_gold_symbols"] = sum(
            1 for c in result["per_case"] if c["results"][name][0].get("symbol_hit@1") is not None
        )
        best = max(curves[name])
        info["best_hit@3"] = round(best, 6)
        info["best_budget"] = min(
            b for b, h in zip(budgets, curves[name], strict=True) if h >= best - EPS
        )
        info["by_budget"] = [
            {
                "budget": m["budget"],
                **{key: _round(m[key]) for key in (*LINE_KEYS, *SYMBOL_KEYS)},
                "hit@1": round(m["hit@1"], 6),
                "hit@3": round(m["hit@3"], 6),
                "hit@5": round(m["hit@5"], 6),
                "mean_tokens": round(m["tokens"], 1),
                "leaks": m["leaks"],
                **_reader_row(m),
            }
            for m in means
        ]
    result["headline"] = headline(result, curves)
    result["coverage_headline"] = coverage_headline(budgets, coverage, served)
    result["sleep_time"] = sleep_time(result)
    result["amortized"] = amortized(result)
    result["planner"] = predict.summarize(result)
    return result


def _reader_means(recs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean reader F1, precision, recall and tokens over the cases (when a reader ran)."""
    read = [r["reader"] for r in recs if "reader" in r]
    if not read or len(read) != len(recs):
        return {}
    return {
        f"reader_{key}": _mean([x[key] for x in read])
        for key in ("f1", "precision", "recall", "input_tokens", "output_tokens")
    }


def _reader_row(m: dict[str, float]) -> dict[str, float]:
    if "reader_f1" not in m:
        return {}
    out = {k: round(v, 6) for k, v in m.items() if k.startswith("reader_")}
    out["test_time_tokens"] = round(m["reader_input_tokens"] + m["reader_output_tokens"], 1)
    return out


QUERIES_PER_STATE = (1, 3, 10)
HYPOTHETICAL = ("local", "fake")  # backends priced as if they were the configured model


def _usd(tokens: dict[str, Any], prices: dict[str, float]) -> float:
    return (
        float(
            tokens.get("input_tokens", 0) * prices["input"]
            + tokens.get("output_tokens", 0) * prices["output"]
            + tokens.get("cache_read_tokens", 0) * prices["cache_read"]
            + tokens.get("cache_write_tokens", 0) * prices["cache_write"]
        )
        / 1e6
    )


def amortized(result: dict[str, Any]) -> dict[str, Any]:
    """Cost per query at 1, 3 and 10 queries per state: the family's sleep-time tokens per
    state (the walk's total over its states, the cold first state included) priced at the
    configured Anthropic model's batch rate, divided by the queries; plus the mean
    test-time tokens per query at its normal rate (the reader's input and output when a
    reader ran, else the served tokens as input). Local and fake models are priced as if
    they were that model, and marked hypothetical."""
    pr = result.get("pricing")
    if not pr:
        return {}
    prices = pr["usd_per_million"]
    batch = prices.get("batch", 1.0)
    reader = result.get("reader") or {}
    states = result["per_state"]
    out: dict[str, Any] = {
        "pricing_model": pr["model"],
        "usd_per_million": prices,
        "queries_per_state": list(QUERIES_PER_STATE),
        "definition": "usd_per_query[q] = sleep-time tokens per state (walk total / "
        "states, cold state included) at the batch rate / q + mean test-time tokens per "
        "query at the normal rate; test-time = the reader's input + output tokens when a "
        "reader ran, else the served tokens (as input)",
        "strategies": {},
    }
    for name, info in result["strategies"].items():
        if info["status"] != "ok":
            continue
        family = info["family"]
        sleep = [s.get("usage", {}).get(family, {}) for s in states]
        tokens = {k: sum(f.get(k, 0) for f in sleep) / max(len(sleep), 1) for k in _KINDS}
        sleep_usd = _usd(tokens, prices) * batch
        rows = []
        for j, b in enumerate(result["budgets"]):
            recs = [c["results"][name][j] for c in result["per_case"]]
            if all("reader" in r for r in recs) and recs:
                test = [
                    _usd(
                        {
                            "input_tokens": r["reader"]["input_tokens"],
                            "output_tokens": r["reader"]["output_tokens"],
                        },
                        prices,
                    )
                    for r in recs
                ]
                test_tokens = [
                    r["reader"]["input_tokens"] + r["reader"]["output_tokens"] for r in recs
                ]
            else:
                test = [_usd({"input_tokens": r["tokens"]}, prices) for r in recs]
                test_tokens = [r["tokens"] for r in recs]
            test_usd = _mean(test)
            rows.append(
                {
                    "budget": b,
                    "test_time_tokens": round(_mean([float(t) for t in test_tokens]), 1),
                    "test_usd_per_query": round(test_usd, 8),
                    "usd_per_query": {
                        str(q): round(sleep_usd / q + test_usd, 8) for q in QUERIES_PER_STATE
                    },
                }
            )
        out["strategies"][name] = {
            "family": family,
            "sleep_tokens_per_state": round(
                tokens["input_tokens"] + tokens["output_tokens"] + tokens["cache_write_tokens"], 1
            ),
            "sleep_usd_per_state": round(sleep_usd, 8),
            "hypothetical": family in HYPOTHETICAL or reader.get("backend") in HYPOTHETICAL,
            "by_budget": rows,
        }
    return out


_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def reach_budget(budgets: Sequence[float], hits: Sequence[float], target: float) -> float | None:
    """Budget where ``hits`` first reaches ``target``, linear in log(budget) between grid
    points (budgets below 1 count as 1); None if never reached."""
    for i, (b, h) in enumerate(zip(budgets, hits, strict=True)):
        if h >= target - EPS:
            if i == 0:
                return float(b)
            b0, h0 = max(budgets[i - 1], 1.0), hits[i - 1]
            b1 = max(b, 1.0)
            t = (target - h0) / (h - h0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return None


def coverage_headline(
    budgets: list[int], coverage: dict[str, list[float]], served: dict[str, list[float]]
) -> dict[str, Any]:
    """See the module docstring; ``coverage`` and ``served`` are the unrounded mean
    coverage and mean tokens served per budget of each strategy that ran."""
    out: dict[str, Any] = {
        "baseline": "raw",
        "definition": "tokens at which each strategy's mean gold-line coverage first "
        "reaches raw's at the reference budget, on its curve of coverage against mean "
        "tokens served per budget, interpolated linearly on log(tokens); ratio = those "
        "tokens / raw's mean tokens served at the reference budget",
        "targets": [],
    }
    if "raw" not in coverage:
        out["reason"] = "raw did not run"
        return out
    for ref in COVERAGE_REFERENCE:
        if ref not in budgets:
            out["targets"].append({"raw_budget": ref, "reason": f"{ref} is not a budget"})
            continue
        j = budgets.index(ref)
        target, raw_tokens = coverage["raw"][j], served["raw"][j]
        per: dict[str, Any] = {}
        for name, cov in coverage.items():
            needed = reach_budget(served[name], cov, target)
            per[name] = {
                "reached": needed is not None,
                "tokens": round(needed, 1) if needed is not None else None,
                "ratio": (
                    round(needed / raw_tokens, 4) if needed is not None and raw_tokens else None
                ),
            }
        out["targets"].append(
            {
                "raw_budget": ref,
                "raw_coverage": round(target, 6),
                "raw_tokens": round(raw_tokens, 1),
                "strategies": per,
            }
        )
    return out


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


PNG_SKIPPED = (
    "matplotlib is not installed, so pareto.png was not drawn; "
    "install it with: pip install 'sleepy-repo[bench]'"
)


def save(result: dict[str, Any], out_dir: Path) -> None:
    """Write ``localize.json`` and ``pareto.png`` to ``out_dir``; record both paths. Without
    matplotlib (the ``bench`` extra) the PNG is skipped: ``png`` is None and
    ``png_skipped`` says why and how to get it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        result["png"] = str(plot_pareto(result, out_dir / "pareto.png").resolve())
        result["png_skipped"] = None
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "matplotlib":
            raise
        result["png"] = None
        result["png_skipped"] = PNG_SKIPPED
    result["json"] = str((out_dir / "localize.json").resolve())
    text = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    Path(result["json"]).write_text(text, encoding="utf-8")


# -- rendering -----------------------------------------------------------------------------
def _fmt_budget(b: float | None) -> str:
    return "not reached" if b is None else f"{b:,.0f}"


def _fmt3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_coverage_headline(result: dict[str, Any], console: Any) -> None:
    """The coverage headline: tokens to reach raw's coverage at 2,000 and 4,000 tokens."""
    from rich.table import Table

    h = result.get("coverage_headline") or {}
    targets = [x for x in h.get("targets", []) if "strategies" in x]
    t = Table(title="headline: tokens to reach raw's gold-line coverage (ratio to raw's)")
    t.add_column("strategy")
    for x in targets:
        t.add_column(f"raw @{x['raw_budget']:,}: {x['raw_coverage']:.3f}", justify="right")
    for name, info in result["strategies"].items():
        if info["status"] != "ok":
            continue
        cells = []
        for x in targets:
            s = x["strategies"][name]
            cells.append(
                f"{s['tokens']:,.0f} ({s['ratio']:.2f}x)"
                if s["reached"] and s["ratio"] is not None
                else "not reached"
            )
        t.add_row(name, *cells)
    notes = [x["reason"] for x in h.get("targets", []) if "reason" in x]
    if h.get("reason"):
        notes.append(h["reason"])
    t.caption = "; ".join(
        [
            "tokens = mean tokens served, interpolated on log(tokens); ratio to raw's mean "
            "tokens served at that budget",
            *notes,
        ]
    )
    console.print(t)
    leaks = {
        n: sum(r.get("leaks", 0) for r in i["by_budget"])
        for n, i in result["strategies"].items()
        if i["status"] == "ok"
    }
    if any(leaks.values()):
        console.print(
            "[bold red]leak[/]: served the case's own commit subject: "
            + ", ".join(f"{n} {c}" for n, c in leaks.items() if c)
        )


def render(result: dict[str, Any], console: Any) -> None:
    """Print the report tables to a rich console."""
    from rich.table import Table

    rng = result["commit_range"]
    console.print(
        f"localize: {result['repo']} - {result['cases']} cases over {rng['states']} states "
        f"({rng['oldest_state'][:10]}..{(rng['newest_commit'] or rng['newest_state'])[:10]}), "
        "sleepy-repo "
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
    render_coverage_headline(result, console)

    reader = result.get("reader")
    title = "gold-line coverage, pointer coverage, symbol and file hit@k, tokens per budget"
    if reader:
        title += f"; reader {reader['backend']} ({reader['model']}): F1 and its tokens"
    t = Table(title=title)
    t.add_column("strategy")
    t.add_column("budget", justify="right")
    cols = ["coverage", "pointer cov", "sym@1", "sym@3", "hit@1", "hit@3", "hit@5", "tokens"]
    if reader:
        cols += ["reader F1", "reader P", "reader R", "reader in+out"]
    for col in cols:
        t.add_column(col, justify="right")
    for name, info in result["strategies"].items():
        for i, r in enumerate(info["by_budget"]):
            cells = [
                *(_fmt3(r.get(k)) for k in ("coverage", "pointer_coverage")),
                *(_fmt3(r.get(k)) for k in ("symbol_hit@1", "symbol_hit@3")),
                f"{r['hit@1']:.3f}",
                f"{r['hit@3']:.3f}",
                f"{r['hit@5']:.3f}",
                f"{r['mean_tokens']:,.0f}",
            ]
            if reader:
                cells += (
                    [
                        f"{r['reader_f1']:.3f}",
                        f"{r['reader_precision']:.3f}",
                        f"{r['reader_recall']:.3f}",
                        f"{r['test_time_tokens']:,.0f}",
                    ]
                    if "reader_f1" in r
                    else ["-"] * 4
                )
            t.add_row(
                name if i == 0 else "",
                f"{r['budget']:,}",
                *cells,
                end_section=i == len(info["by_budget"]) - 1,
            )
    if reader:
        t.caption = (
            f"reader: {reader['calls']} calls, {reader['failures']} failed (counted as "
            "choosing nothing); F1 of the named files vs gold"
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
    render_amortized(result.get("amortized") or {}, console)
    predict.render(result.get("planner"), console)


def render_amortized(a: dict[str, Any], console: Any) -> None:
    """The amortized cost table: $ per query at 1, 3 and 10 queries per state."""
    from rich.table import Table

    if not a.get("strategies"):
        return
    qs = a["queries_per_state"]
    t = Table(title=f"amortized cost per query, priced as {a['pricing_model']} (USD)")
    for col in ("strategy", "budget", "sleep tokens / state", "test-time tokens"):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for q in qs:
        t.add_column(f"$/query @{q}", justify="right")
    hypothetical = False
    for name, s in a["strategies"].items():
        label = name + (" *" if s["hypothetical"] else "")
        hypothetical = hypothetical or s["hypothetical"]
        for i, r in enumerate(s["by_budget"]):
            t.add_row(
                label if i == 0 else "",
                f"{r['budget']:,}",
                f"{s['sleep_tokens_per_state']:,.0f}" if i == 0 else "",
                f"{r['test_time_tokens']:,.0f}",
                *(f"{r['usd_per_query'][str(q)]:.5f}" for q in qs),
                end_section=i == len(s["by_budget"]) - 1,
            )
    t.caption = (
        "sleep-time tokens at the batch rate, amortized over q queries per state; "
        "test-time tokens at the normal rate"
        + (
            "; * hypothetical: a local/fake model priced as if it were that model"
            if hypothetical
            else ""
        )
    )
    console.print(t)


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
