"""``sleepy-repo bench mine``: cases from the fixtures' scripted histories, and every filter."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sleepy_repo.bench.mine import (
    DEFAULT_TEST_GLOBS,
    clean_message,
    is_source,
    make_test_matcher,
    subject_rules,
)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def _shas(repo: Path) -> dict[str, str]:
    """subject -> sha of every commit reachable from HEAD."""
    out = _git(repo, "log", "--format=%H %s")
    return {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in out.splitlines()}


def _mine(
    cli: Any, repo: Path, tmp_path: Path, *args: str
) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    out, rej = tmp_path / "cases.jsonl", tmp_path / "rejected.jsonl"
    cli.run("bench", "mine", "--out", str(out), "--rejected", str(rej), *args, repo=repo)
    cases = [json.loads(line) for line in out.read_text().splitlines()]
    rejected = {}
    for line in rej.read_text().splitlines():
        r = json.loads(line)
        rejected[r["subject"]] = r["reasons"]
    return cases, rejected


SHOP_CASES = [  # fixtures/README.md, "The 7 good shop commits", oldest first
    (
        "Apply coupon discounts before VAT is computed (#12)",
        "Apply coupon discounts before VAT is computed\n\n"
        "The coupon used to be subtracted from the gross total, so customers paid VAT\n"
        "on money they never spent. price_cart now takes the coupon, spreads the\n"
        "discount over the lines and charges VAT on the discounted net amounts.",
        ["shop/cart.py", "shop/pricing.py"],
    ),
    (
        "Reserve inventory stock when an order is placed so concurrent checkouts cannot oversell",
        "Reserve inventory stock when an order is placed so concurrent checkouts cannot "
        "oversell\n\n"
        "Checkout used to check availability, charge the card and only then remove\n"
        "the units, so two customers could both buy the last item. Stock is now\n"
        "reserved before charging, released when the payment fails and committed\n"
        "once the order is paid.",
        ["shop/api.py", "shop/inventory.py"],
    ),
    (
        "Retry transient payment gateway errors with exponential backoff",
        "Retry transient payment gateway errors with exponential backoff\n\n"
        "See - gateway timeouts during the\n"
        "spring sale failed checkouts that would have succeeded a moment later.\n"
        "Declined cards are still not retried.",
        ["shop/payments.py"],
    ),
    (
        "Round VAT per line item instead of per order to match invoices (#18)",
        "Round VAT per line item instead of per order to match invoices",
        ["shop/pricing.py", "shop/tax.py"],
    ),
    (
        "Persist carts to the JSON storage backend and reload them on startup",
        "Persist carts to the JSON storage backend and reload them on startup\n\n"
        "Carts were only kept in memory and were lost on every deploy.",
        ["shop/api.py", "shop/cart.py", "shop/storage.py"],
    ),
    (
        "Show the applied coupon discount and VAT breakdown in the cart summary",
        "Show the applied coupon discount and VAT breakdown in the cart summary",
        ["web/src/components/CartSummary.tsx", "web/src/format.ts"],
    ),
    (
        "Reject orders shipping to unsupported countries with a clear error (#23)",
        "Reject orders shipping to unsupported countries with a clear error",
        ["shop/api.py", "shop/models.py"],
    ),
]

SHOP_REJECTED = {
    "Initial import of the shop backend and web client": [
        "root",
        "adds-source",
        "no-modified-source",
    ],
    "Add unit tests for cart quantity limits and coupon pricing": ["no-modified-source"],
    "Fix typo": ["short-message", "typo"],
    "wip": ["short-message"],
    "Document the checkout flow and coupon rules in the README": ["no-modified-source", "docs"],
    "Add gift cards with a balance that can be redeemed at checkout": [
        "adds-source",
        "no-modified-source",
    ],
    "Merge branch 'feature/gift-cards'": ["merge"],
    "Bump version to 0.2.0": ["short-message", "version-bump"],
    "Remove the legacy CSV order exporter now that accounting reads orders.json": [
        "deletes-source"
    ],
}


def test_mine_shop_gives_the_seven_good_commits(cli: Any, make_repo: Any, tmp_path: Path) -> None:
    repo = make_repo("shop")
    cases, rejected = _mine(cli, repo, tmp_path)
    shas = _shas(repo)
    expected = [
        {
            "state": _git(repo, "rev-parse", f"{shas[subject]}^").strip(),
            "commit": shas[subject],
            "query": query,
            "gold_files": gold,
        }
        for subject, query, gold in SHOP_CASES
    ]
    assert cases == expected
    assert rejected == SHOP_REJECTED
    # stdout is the default output, and it is the same JSONL
    proc = cli.run("bench", "mine", "-n", "100", repo=repo)
    assert [json.loads(line) for line in proc.stdout.splitlines()] == expected
    assert "mined 7 cases from 16 commits" in proc.stderr


def test_mine_relay_renames_count_as_add_and_delete(
    cli: Any, make_repo: Any, tmp_path: Path
) -> None:
    repo = make_repo("relay")
    cases, rejected = _mine(cli, repo, tmp_path)
    assert [(c["query"].splitlines()[0], c["gold_files"]) for c in cases] == [
        (
            "Retry failed deliveries with exponential backoff and jitter",
            ["internal/broker/broker.go", "internal/retry/backoff.go", "main.go"],
        ),
        (
            "Add a streaming Checksum trait with a table-driven CRC-32 implementation",
            ["src/checksum.rs", "src/frame.rs", "src/lib.rs"],
        ),
        (
            "Verify frame checksums on decode and reject corrupted payloads",
            ["src/error.rs", "src/frame.rs"],
        ),
        (
            "Dead-letter deliveries that still fail after the last retry",
            ["internal/broker/broker.go", "main.go"],
        ),
    ]
    assert rejected == {
        "Initial relay service with broker, HTTP transport and frame codec": [
            "root",
            "adds-source",
            "no-modified-source",
        ],
        "Rename the crc module to checksum": ["adds-source", "deletes-source"],
        "Add a script that replays dead-lettered messages": ["adds-source", "no-modified-source"],
    }


def _commit(
    repo: Path,
    subject: str,
    edits: list[str],
    adds: dict[str, str] | None = None,
) -> None:
    """Append a line to each of ``edits`` (and create ``adds``), then commit."""
    for rel in edits:
        with (repo / rel).open("a", encoding="utf-8") as fh:
            fh.write(f"# {subject[:20]}\n" if rel.endswith(".py") else f"// {subject[:20]}\n")
    for rel, text in (adds or {}).items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text, encoding="utf-8")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", subject)


EXTRA = [  # (subject, modified source files, added files), oldest first
    (
        "Tidy the pricing, tax, cart, money and storage modules",
        ["shop/pricing.py", "shop/tax.py", "shop/cart.py", "shop/money.py", "shop/storage.py"],
        None,
    ),
    ("style: sort the imports of the payments module", ["shop/payments.py"], None),
    ("Apply black to the inventory module and its helpers", ["shop/inventory.py"], None),
    ("Run the storage checks on Python 3.12 in CI as well", ["shop/storage.py"], None),
    ("Clarify the docstrings of the money helpers for contributors", ["shop/money.py"], None),
    ("Bump version to 0.3.0 for the spring release of the shop", ["shop/__init__.py"], None),
    ("Correct a typo in the VAT rounding error message shown to users", ["shop/tax.py"], None),
    ("Use banker's rounding for VAT amounts in every country", ["shop/tax.py"], None),
    ("Cache the VAT rate lookup per country code for speed", ["shop/tax.py"], None),
    ("Raise a clear error for unknown VAT categories in tax", ["shop/tax.py"], None),
    (
        "Validate coupon codes case-insensitively at checkout",
        ["shop/cart.py"],
        {"tests/test_coupons.py": "def test_x():\n    pass\n", "docs/coupons.md": "# Coupons\n"},
    ),
]


@pytest.fixture
def busy_shop(make_repo: Any) -> Path:
    repo = make_repo("shop")
    for subject, edits, adds in EXTRA:
        _commit(repo, subject, edits, adds)
    return repo


def test_every_filter_rejects_a_commit(cli: Any, busy_shop: Path, tmp_path: Path) -> None:
    cases, rejected = _mine(cli, busy_shop, tmp_path)
    got = [(c["query"], c["gold_files"]) for c in cases]
    assert got[-3:] == [
        ("Cache the VAT rate lookup per country code for speed", ["shop/tax.py"]),
        ("Raise a clear error for unknown VAT categories in tax", ["shop/tax.py"]),
        # a test and a doc file may be added next to a modified source file
        ("Validate coupon codes case-insensitively at checkout", ["shop/cart.py"]),
    ]
    assert got[:-3] == [(query, gold) for _, query, gold in SHOP_CASES]
    assert {s: rejected[s] for s, _, _ in EXTRA if s in rejected} == {
        "Tidy the pricing, tax, cart, money and storage modules": ["too-many-files"],
        "style: sort the imports of the payments module": ["style"],
        "Apply black to the inventory module and its helpers": ["format"],
        "Run the storage checks on Python 3.12 in CI as well": ["ci"],
        "Clarify the docstrings of the money helpers for contributors": ["docs"],
        "Bump version to 0.3.0 for the spring release of the shop": ["version-bump"],
        "Correct a typo in the VAT rounding error message shown to users": ["typo"],
        # the third case with gold {shop/tax.py}: the two newest are kept
        "Use banker's rounding for VAT amounts in every country": ["duplicate-gold"],
    }
    # together with the plain shop history, every reason occurs
    reasons = {r for rs in rejected.values() for r in rs}
    assert reasons == {
        "merge",
        "root",
        "adds-source",
        "deletes-source",
        "no-modified-source",
        "too-many-files",
        "short-message",
        "version-bump",
        "typo",
        "style",
        "format",
        "ci",
        "docs",
        "duplicate-gold",
    }


def test_filters_are_configurable(cli: Any, busy_shop: Path, tmp_path: Path) -> None:
    # the most recent N, written oldest first
    cases, _ = _mine(cli, busy_shop, tmp_path, "-n", "2")
    assert [c["query"] for c in cases] == [
        "Raise a clear error for unknown VAT categories in tax",
        "Validate coupon codes case-insensitively at checkout",
    ]
    cases, rejected = _mine(
        cli,
        busy_shop,
        tmp_path,
        "--allow",
        "typo",
        "--max-files",
        "5",
        "--max-per-gold",
        "5",
        "--min-message-chars",
        "60",
    )
    queries = [c["query"].splitlines()[0] for c in cases]
    assert "Correct a typo in the VAT rounding error message shown to users" in queries
    assert "Tidy the pricing, tax, cart, money and storage modules" not in queries  # < 60
    assert rejected["Tidy the pricing, tax, cart, money and storage modules"] == ["short-message"]
    cases, rejected = _mine(cli, busy_shop, tmp_path, "--test-glob", "shop/tax.py")
    assert all("shop/tax.py" not in c["gold_files"] for c in cases)
    assert rejected["Raise a clear error for unknown VAT categories in tax"] == [
        "no-modified-source"
    ]
    bad = cli.run("bench", "mine", "--allow", "nonsense", repo=busy_shop, check=False)
    assert bad.returncode == 2 and "unknown keyword rules" in bad.stderr


@pytest.mark.parametrize(
    ("message", "query"),
    [
        ("Fix the parser (#12)", "Fix the parser"),
        ("Fix the parser (#12, #13)\n\nfixes #3, closes GH-4", "Fix the parser"),
        ("Handle GH-77 edge case in the lexer", "Handle edge case in the lexer"),
        (
            "Merge upstream change pallets/click#2000 into the parser",
            "Merge upstream change into the parser",
        ),
        ("Keep &#39; entities but drop #7 refs", "Keep &#39; entities but drop refs"),
        (
            "Use the new API\n\nSee https://example.com/a?b=1 and www.example.org/x for details.",
            "Use the new API\n\nSee and for details.",
        ),
        (
            "Add retry\n\n\n\nBody  text\n\nSigned-off-by: A <a@b.c>\nCo-authored-by: B <b@c.d>",
            "Add retry\n\nBody text",
        ),
        ("Resolves: #9 - make the cache thread-safe", "- make the cache thread-safe"),
    ],
)
def test_clean_message(message: str, query: str) -> None:
    assert clean_message(message) == query


@pytest.mark.parametrize(
    ("subject", "rules"),
    [
        ("Bump version to 1.2.3", ["version-bump"]),
        ("Release version 8.1.7", ["version-bump"]),
        ("start version 8.2.0", ["version-bump"]),
        ("1.4.0", ["version-bump"]),
        ("Fix typos in help output", ["typo"]),
        ("pre-commit autoupdate", ["style"]),
        ("Reformat with ruff format", ["format"]),
        ("Use click.style for the colored prompt", []),
        ("Fix help formatting of long options", []),
        ("ci: cache pip in GitHub Actions", ["ci"]),
        ("docs: explain the context budget", ["docs"]),
        ("Add bright black to the color names", []),
        ("Add a --budget option to the context command", []),
    ],
)
def test_subject_rules(subject: str, rules: list[str]) -> None:
    assert subject_rules(subject) == rules


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("shop/cart.py", True),
        ("src/click/testing.py", True),  # a module named testing, not a test
        ("tests/test_cart.py", False),
        ("pkg/sub/tests/helpers.py", False),
        ("test/unit.rs", False),
        ("shop/cart_test.py", False),
        ("test_cart.py", False),
        ("conftest.py", False),
        ("web/src/format.test.ts", False),
        ("web/src/Cart.spec.tsx", False),
        ("web/src/__tests__/cart.js", False),
        ("internal/broker/broker_test.go", False),
        ("internal/testdata/x.go", False),
        ("src/frame_test.rs", False),
        ("README.md", False),
        ("pyproject.toml", False),
    ],
)
def test_source_files(path: str, source: bool) -> None:
    assert is_source(path, make_test_matcher(DEFAULT_TEST_GLOBS)) is source
