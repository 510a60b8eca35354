"""Budgets: reserve before a call, settle to the real usage, release on failure."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sleepy_repo.budget import Budget, local_midnight, spent_today
from sleepy_repo.config import BudgetConfig, parse_config
from sleepy_repo.errors import ConfigError
from sleepy_repo.models.base import Estimate
from sleepy_repo.notes import Usage
from sleepy_repo.store import NoteStore

SRC = Path("/repo/.sleepy/config.toml")


@pytest.fixture
def store(tmp_path: Path) -> NoteStore:
    s = NoteStore(tmp_path / ".sleepy")
    s.ensure()
    return s


def spend(store: NoteStore, tokens: int, usd: float = 0.0, ts: float | None = None) -> None:
    with store.write() as conn:
        store.add_ledger(
            conn,
            backend="anthropic",
            model="m",
            path="a.py",
            reason="notes",
            input_tokens=tokens,
            cost_usd=usd,
        )
        if ts is not None:
            conn.execute("UPDATE ledger SET ts = ? WHERE id = last_insert_rowid()", (ts,))


def test_per_refresh_limit_counts_reservations_then_real_usage(store: NoteStore) -> None:
    b = Budget(store, BudgetConfig(per_refresh_tokens=1000))
    first = b.reserve(Estimate(400, 200, 0.0, 1))
    assert first is not None
    assert b.reserve(Estimate(300, 200, 0.0, 1)) is None  # 600 held + 500 > 1000
    assert "per-refresh token budget" in (b.refused or "")
    with store.write() as conn:
        b.settle(conn, first, [Usage("m", input_tokens=100, output_tokens=50)])
    assert b.spent_tokens == 150
    assert b.reserve(Estimate(300, 200, 0.0, 1)) is not None  # 150 + 500 <= 1000


def test_a_released_reservation_frees_the_budget(store: NoteStore) -> None:
    b = Budget(store, BudgetConfig(per_refresh_usd=1.0, daily_usd=1.0))
    res = b.reserve(Estimate(10, 10, 0.9, 1))
    assert res is not None and b.reserve(Estimate(10, 10, 0.2, 1)) is None
    assert "dollar budget" in (b.refused or "")
    b.release(res)
    assert b.spent_usd == 0 and b.reserve(Estimate(10, 10, 0.9, 1)) is not None


def test_daily_limit_counts_today_only_and_other_processes(store: NoteStore) -> None:
    spend(store, 5000, ts=local_midnight() - 60)  # yesterday
    spend(store, 700)
    with store.read() as conn:
        assert spent_today(conn)[0] == 700
    other = Budget(store, BudgetConfig(daily_tokens=1000))  # another process
    held = other.reserve(Estimate(100, 100, 0.0, 1))
    assert held is not None
    b = Budget(store, BudgetConfig(daily_tokens=1000))
    assert b.reserve(Estimate(50, 100, 0.0, 1)) is None  # 700 + 200 held + 150 > 1000
    other.release(held)
    assert b.reserve(Estimate(50, 100, 0.0, 1)) is not None


def test_expired_reservations_do_not_hold_budget(store: NoteStore) -> None:
    crashed = Budget(store, BudgetConfig(daily_tokens=1000), hold_seconds=0.01)
    assert crashed.reserve(Estimate(900, 0, 0.0, 1)) is not None
    time.sleep(0.05)
    assert Budget(store, BudgetConfig(daily_tokens=1000)).reserve(Estimate(900, 0)) is not None


def test_concurrent_reservations_never_exceed_the_limit(store: NoteStore) -> None:
    b = Budget(store, BudgetConfig(per_refresh_tokens=10_000, daily_tokens=10_000))
    got: list[object] = []

    def worker() -> None:
        for _ in range(20):
            r = b.reserve(Estimate(300, 200, 0.0, 1))
            if r is not None:
                got.append(r)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 20  # 20 x 500 = 10,000


def test_budget_config_allows_zero_and_rejects_negatives() -> None:
    c = parse_config("[budget]\ndaily_tokens = 0\ndaily_usd = 2.5\nper_refresh_usd = 1\n", SRC)
    assert c.budget.daily_tokens == 0 and c.budget.daily_usd == 2.5
    assert c.budget.per_refresh_usd == 1.0
    with pytest.raises(ConfigError, match=r"\[budget\] daily_usd must be a number >= 0"):
        parse_config("[budget]\ndaily_usd = -1\n", SRC)
    with pytest.raises(ConfigError, match="per_refresh_tokens must be an integer >= 0"):
        parse_config('[budget]\nper_refresh_tokens = "x"\n', SRC)


def test_anthropic_config_and_price_table() -> None:
    c = parse_config(
        '[anthropic]\nmodel = "claude-x"\ntimeout = 30\nbase_url = "http://127.0.0.1:9"\n'
        "[anthropic.prices.claude-x]\ninput = 2\noutput = 10\n",
        SRC,
    )
    assert c.anthropic.model == "claude-x" and c.anthropic.timeout == 30.0
    assert c.anthropic.prices["claude-x"] == {
        "input": 2.0,
        "output": 10.0,
        "cache_read": 0.2,
        "cache_write": 2.5,
        "batch": 0.5,
    }
    assert "claude-sonnet-4-5" in c.anthropic.prices  # merged over the built-in table
    for bad, message in [
        ("[anthropic.prices.m]\ninput = 1\n", "needs at least `input` and `output`"),
        ("[anthropic.prices.m]\ninput = 1\noutput = 1\nfoo = 1\n", "unknown rate 'foo'"),
        ("[anthropic]\ntimeout = 0\n", "must be a positive number"),
        ("[anthropic]\nconcurrency = 0\n", "must be a positive integer"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(bad, SRC)
