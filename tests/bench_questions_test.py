"""The committed question sets (bench/questions/*.jsonl) are well-formed cases."""

from __future__ import annotations

import tomllib

from sleepy_repo.bench.mine import read_cases

from helpers import ROOT


def test_click_questions() -> None:
    cases = read_cases(ROOT / "bench" / "questions" / "click.jsonl")
    dev = tomllib.loads((ROOT / "bench" / "holdout.toml").read_text())["development"]
    click = next(d["commit"] for d in dev if d["repo"] == "pallets/click")
    assert len(cases) >= 30
    assert len({c.id for c in cases}) == len(cases)
    for c in cases:
        assert c.state == click and c.commit is None and c.id
        assert c.gold_symbols and c.gold_files
        assert all(p.startswith("src/click/") and p.endswith(".py") for p in c.gold_files)
        assert c.query.endswith("?")
