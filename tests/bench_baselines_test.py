"""The frozen ``raw`` baseline and the ``whole-files`` strategy on the shop fixture."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from sleepy_repo import api
from sleepy_repo.bench import baselines
from sleepy_repo.bench.strategies import RawChunks, StateEnv, WholeFiles
from sleepy_repo.tokens import count_tokens

from helpers import ROOT, git

C1 = "Apply coupon discounts before VAT is computed"
C2 = "Retry transient payment gateway errors with exponential backoff"


def _env(root: Path, state: str = "HEAD") -> StateEnv:
    repo = api.open_repo(root)
    api.refresh(repo)
    return StateEnv(root=root, state=state, repo=repo)


def _spans(served: list[object]) -> list[list[tuple[str, int, int]]]:
    return [[(i.path, i.start_line, i.end_line) for i in s.items] for s in served]  # type: ignore[attr-defined]


def test_raw_output_is_pinned(make_repo: Callable[..., Path]) -> None:
    """The baseline is frozen: these are its exact windows on the shop fixture's HEAD. A
    change here changes every number measured against it; it needs a reason."""
    env = _env(make_repo("shop"))
    raw = RawChunks()
    try:
        c1 = raw.run(env, C1, [500, 1500])
        c2 = raw.run(env, C2, [500, 1500])
    finally:
        raw.close()
    assert _spans(c1) == [
        [("tests/test_cart.py", 1, 40)],
        [
            ("tests/test_cart.py", 1, 40),
            ("shop/tax.py", 1, 40),
            ("tests/test_cart.py", 41, 56),
            ("shop/pricing.py", 81, 102),
        ],
    ]
    assert _spans(c2) == [
        [("shop/payments.py", 1, 40), ("shop/payments.py", 81, 91)],
        [
            ("shop/payments.py", 1, 40),
            ("shop/payments.py", 41, 80),
            ("web/src/api.ts", 1, 40),
            ("web/src/api.ts", 41, 70),
            ("shop/money.py", 41, 48),
        ],
    ]
    for s in (*c1, *c2):
        # one counter on exactly the served text; every item is code of its lines
        assert s.tokens == count_tokens(s.text) <= 1500
        for item in s.items:
            assert item.kind == "code"
            lines = (env.root / item.path).read_text().split("\n")
            assert item.text == "\n".join(lines[item.start_line - 1 : item.end_line])
            assert f"{item.path}:{item.start_line}-{item.end_line}\n{item.text}" in s.text


def test_raw_words_and_query() -> None:
    assert baselines.words("parseHTTPHeader snake_case x2") == [
        "parse",
        "http",
        "header",
        "snake",
        "case",
        "x",
        "2",
    ]
    assert baselines.query_words("Fix the parseHeader of a 404 page, fix it") == [
        "fix",
        "parse",
        "header",
        "page",
    ]


def test_raw_index_follows_each_state_like_a_fresh_one(make_repo: Callable[..., Path]) -> None:
    root = make_repo("shop")
    env = _env(root)
    kept = RawChunks()
    questions = [C1, C2, "format money in the web client", "zanzibar rate"]
    first = [kept.run(env, q, [2000]) for q in questions]
    assert all(s[0].items for s in first[:3])
    index = kept.index(env)
    reads = index.reads
    (root / "shop" / "tax.py").write_text('"""Tax."""\n\ndef coupon_vat():\n    return 0\n')
    (root / "shop" / "storage.py").unlink()
    (root / "shop" / "coupons.py").write_text('"""Coupons."""\n\ndef zanzibar_rate():\n    pass\n')
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "edit")
    env = _env(root, "s1")
    fresh = RawChunks()
    try:
        for q in questions:
            assert kept.run(env, q, [2000]) == fresh.run(env, q, [2000])
        assert kept.index(env).reads == reads + 2  # only tax.py and coupons.py re-read
        assert "shop/storage.py" not in kept.index(env).files
        assert kept.run(env, "zanzibar rate", [2000])[0].files[0] == "shop/coupons.py"
    finally:
        kept.close()
        fresh.close()


def test_raw_shares_no_code_with_the_product_ranking() -> None:
    tree = ast.parse((ROOT / "sleepy_repo" / "bench" / "baselines.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    product = {m for m in imported if m.startswith("sleepy_repo")}
    assert product == {"sleepy_repo.parse.languages"}  # which files are code, nothing else


def test_whole_files_serves_files_in_rank_order_the_last_truncated(
    make_repo: Callable[..., Path],
) -> None:
    env = _env(make_repo("shop"))
    whole = WholeFiles()
    try:
        ranked = whole.ranked(env, C1)
        small, big = whole.run(env, C1, [300, 2000])
    finally:
        whole.close()
    for s, budget in ((small, 300), (big, 2000)):
        assert s.tokens == count_tokens(s.text) <= budget
        assert [i.path for i in s.items] == ranked[: len(s.items)]
        for item in s.items[:-1]:  # whole
            n = len((env.root / item.path).read_text().splitlines())
            assert (item.start_line, item.end_line) == (1, n)
    # at 300 tokens the first file does not fit: its first lines that do
    (only,) = small.items
    lines = (env.root / only.path).read_text().split("\n")
    assert only.start_line == 1 and only.end_line < len(lines) - 1
    assert only.text == "\n".join(lines[: only.end_line])
    longer = f"{only.path}:1-{only.end_line + 1}\n" + "\n".join(lines[: only.end_line + 1])
    assert count_tokens(longer) > 300
