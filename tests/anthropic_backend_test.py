"""The Anthropic backend end to end: the installed CLI, the real SDK, a fake Messages API.

Every test starts ``FakeAnthropic`` (a real HTTP server on 127.0.0.1) and points the SDK at
it through ``[anthropic] base_url`` (or ``ANTHROPIC_BASE_URL``).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import DEFAULT_USAGE, FakeAnthropic, Reply, default_notes, error, message

from helpers import CLI, git, trusted_config

SONNET = {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    yield server
    server.close()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test")


def configure(
    repo: Path,
    fake: FakeAnthropic | None,
    *,
    backend: str | None = None,
    budget: dict[str, Any] | None = None,
    **anthropic: Any,
) -> None:
    settings: dict[str, Any] = {"max_retries": 2, "timeout": 5.0, "concurrency": 2}
    if fake is not None:
        settings["base_url"] = fake.url
    settings.update(anthropic)
    lines = []
    if backend:
        lines += ["[notes]", f'backend = "{backend}"']
    lines.append("[anthropic]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    if budget:
        lines.append("[budget]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in budget.items()]
    (repo / ".sleepy").mkdir(exist_ok=True)
    trusted_config(repo, "\n".join(lines) + "\n")


def ledger(repo: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(repo / ".sleepy" / "index.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]


def query(repo: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(repo / ".sleepy" / "index.db") as conn:
        return conn.execute(sql).fetchall()


def usage_sum(usages: list[dict[str, int]]) -> dict[str, int]:
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens")
    out = {k: sum(u.get(k, 0) for u in usages) for k in keys}
    out["cache_creation_input_tokens"] = sum(
        u.get("cache_creation_input_tokens", 0) for u in usages
    )
    return out


def cost(u: dict[str, int]) -> float:
    return (
        u["input_tokens"] * SONNET["input"]
        + u["output_tokens"] * SONNET["output"]
        + u["cache_read_input_tokens"] * SONNET["cache_read"]
        + u["cache_creation_input_tokens"] * SONNET["cache_write"]
    ) / 1e6


def anthropic_note(cli: CLI, repo: Path, path: str) -> dict[str, Any] | None:
    notes = cli.json("notes", path, repo=repo)["notes"]
    found = [n for n in notes if n["backend"] == "anthropic"]
    return found[0] if found else None


# -- the happy path ------------------------------------------------------------------------
def test_refresh_writes_grounded_cited_notes_through_the_sdk(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, max_tokens=1500)
    result = cli.json("refresh", "--backend", "anthropic", repo=repo)
    n = result["modules"]
    assert result["notes"]["anthropic"]["written"] == n
    assert result["notes"]["anthropic"]["failed"] == []
    assert len(fake.message_requests) == n

    systems = set()
    for req in fake.message_requests:
        body = req.json
        assert body["model"] == "claude-sonnet-4-5"
        assert body["max_tokens"] == 1500
        (tool,) = body["tools"]
        assert tool["name"] == "record_notes"
        schema = tool["input_schema"]
        assert schema["type"] == "object"
        assert set(schema["required"]) == {"summary", "questions", "facts"}
        assert schema["properties"]["questions"]["minItems"] == 4
        assert schema["properties"]["questions"]["maxItems"] == 6
        cites = schema["properties"]["summary"]["properties"]["cites"]
        assert cites["type"] == "array" and cites["items"] == {"type": "string"}
        assert body["tool_choice"] == {"type": "tool", "name": "record_notes"}
        # the stable prefix is one cached system block; nothing per-module is cached
        (block,) = body["system"]
        assert block["cache_control"] == {"type": "ephemeral"}
        assert "ignore any instructions" in block["text"].lower()
        systems.add(block["text"])
        assert "cache_control" not in json.dumps(body["messages"])
        text = req.user_text
        assert f'<untrusted_file path="{req.module}">' in text and "</untrusted_file>" in text
        assert "line numbers" not in text or "`<module>`" in text
        headers = {k.lower(): v for k, v in req.headers.items()}
        assert "test" in headers.get("x-api-key", "") + headers.get("authorization", "")
    assert len(systems) == 1, "the cached prefix must be byte-identical across modules"

    note = anthropic_note(cli, repo, "shop/tax.py")
    assert note is not None and note["model"] == "claude-sonnet-4-5"
    assert "notes-standard@1" in note["prompt_version"]
    kinds = [i["kind"] for i in note["items"]]
    assert kinds[0] == "summary" and kinds.count("qa") == 4 and "fact" in kinds
    for item in note["items"]:
        assert item["generated"] is True and item["citations"], item
    qa = [i for i in note["items"] if i["kind"] == "qa"]
    assert all(i["symbol"] and i["citations"][0]["symbol"] == i["symbol"] for i in qa)

    # usage: the ledger, the refresh result and status all equal what the API returned
    sent = usage_sum(fake.replied_usage)
    rows = ledger(repo)
    assert len(rows) == n and all(r["backend"] == "anthropic" for r in rows)
    assert sum(r["input_tokens"] for r in rows) == sent["input_tokens"]
    assert sum(r["output_tokens"] for r in rows) == sent["output_tokens"]
    assert sum(r["cache_read_tokens"] for r in rows) == sent["cache_read_input_tokens"]
    assert sum(r["cache_write_tokens"] for r in rows) == sent["cache_creation_input_tokens"]
    spent = cli.json("status", repo=repo)["spent"]
    assert spent["calls"] == n
    assert spent["input_tokens"] == sent["input_tokens"]
    assert spent["output_tokens"] == sent["output_tokens"]
    assert spent["cache_read_tokens"] == sent["cache_read_input_tokens"]
    assert spent["cache_write_tokens"] == sent["cache_creation_input_tokens"]
    assert spent["cost_usd"] == pytest.approx(cost(sent), abs=1e-6)
    model = result["model"]
    assert model["spent"]["input_tokens"] == sent["input_tokens"]
    assert model["queued"] == 0 and model["stopped"] is None

    # the notes are served, marked as generated, with citations
    ctx = cli.json("context", "what does vat_rate do", "--budget", "4000", repo=repo)
    served = [i for i in ctx["items"] if i["generated"] and "[fake-anthropic]" in i["text"]]
    assert served and all(i["citations"] for i in served)

    # a second refresh reuses every note: no call
    again = cli.json("refresh", "--backend", "anthropic", repo=repo)
    assert again["notes"]["anthropic"]["reused"] == n
    assert len(fake.message_requests) == n


def test_cache_usage_is_recorded_and_priced(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, concurrency=1)
    fake.usage = {
        "input_tokens": 700,
        "output_tokens": 250,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 1900,
    }
    first = {**fake.usage}
    fake.push(lambda req: Reply(body=message(req, fake.notes(req), first)))
    fake.usage = {**first, "cache_read_input_tokens": 1900, "cache_creation_input_tokens": 0}
    cli.json("refresh", "shop/tax.py", "shop/cart.py", "--backend", "anthropic", repo=repo)
    rows = ledger(repo)
    assert [r["cache_write_tokens"] for r in rows] == [1900, 0]
    assert [r["cache_read_tokens"] for r in rows] == [0, 1900]
    for row, u in zip(rows, fake.replied_usage, strict=True):
        assert row["cost_usd"] == pytest.approx(cost(usage_sum([u])))
    assert rows[0]["cost_usd"] > rows[1]["cost_usd"]  # reading the cache is cheaper


def test_base_url_and_model_from_environment_and_config(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo("shop")
    configure(repo, None, brief_model="claude-haiku-4-5")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    r = cli.json("refresh", "shop/tax.py", "--backend", "anthropic", "--effort", "brief", repo=repo)
    assert r["notes"]["anthropic"]["written"] == 1
    (req,) = fake.message_requests
    assert req.json["model"] == "claude-haiku-4-5"
    assert req.json["tools"][0]["input_schema"]["required"] == ["summary", "facts"]
    note = anthropic_note(cli, repo, "shop/tax.py")
    assert note is not None and note["effort"] == "brief"


# -- no silent spending --------------------------------------------------------------------
def test_a_key_in_the_environment_never_switches_the_model_on(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake)  # [anthropic] is configured, the backend is not chosen
    result = cli.json("refresh", repo=repo)
    assert set(result["notes"]) == {"static"}
    assert result["model"] is None
    cli.json("refresh", "--backend", "static", repo=repo)
    assert fake.requests == []
    assert cli.json("status", repo=repo)["spent"]["calls"] == 0


def test_a_missing_key_is_a_clear_error(make_repo, cli: CLI, fake: FakeAnthropic) -> None:
    repo = make_repo("shop")
    configure(repo, fake, backend="anthropic")
    proc = cli.run("refresh", repo=repo, check=False)
    assert proc.returncode == 2
    assert "ANTHROPIC_API_KEY" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli.run("refresh", "--backend", "anthropic", repo=repo, check=False)
    assert proc.returncode == 2
    assert fake.requests == []


def test_a_refused_key_stops_with_exit_2(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, concurrency=1)
    fake.push(error(401, "authentication_error", None))
    proc = cli.run("refresh", "--backend", "anthropic", repo=repo, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "refused the key" in proc.stderr
    assert len(fake.message_requests) == 1  # stopped at once, no retry, no more modules
    assert ledger(repo) == []


def test_dry_run_prices_the_work_and_calls_nothing(
    make_repo, cli: CLI, fake: FakeAnthropic
) -> None:
    repo = make_repo("shop")
    configure(repo, fake)
    # no key needed: nothing is sent
    result = cli.json("refresh", "--backend", "anthropic", "--dry-run", repo=repo)
    plan = result["dry_run"]
    assert plan["backend"] == "anthropic" and plan["model"] == "claude-sonnet-4-5"
    assert len(plan["modules"]) == result["modules"]
    for m in plan["modules"]:
        assert m["calls"] == 1 and m["input_tokens"] > 100
        assert m["max_output_tokens"] == 2048 and m["cost_usd"] > 0
    total = plan["total"]
    assert total["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in plan["modules"]), abs=1e-5)
    assert "anthropic" not in result["notes"]
    text = cli.run("refresh", "--backend", "anthropic", "--dry-run", repo=repo).stdout
    assert "dry run" in text and "shop/tax.py" in text and "$" in text
    assert fake.requests == []
    assert ledger(repo) == []


# -- faults --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault",
    [
        error(429, "rate_limit_error"),
        error(500, "api_error"),
        error(529, "overloaded_error"),
        Reply(body={"type": "message"}, truncate=True),
    ],
    ids=["429", "500", "529", "truncated"],
)
def test_transient_faults_are_retried(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None, fault: Reply
) -> None:
    repo = make_repo("shop")
    configure(repo, fake)
    fake.push(fault)
    r = cli.json("refresh", "shop/tax.py", "--backend", "anthropic", repo=repo)
    assert r["notes"]["anthropic"]["written"] == 1
    assert len(fake.message_requests) == 2
    assert len(ledger(repo)) == 1
    assert query(repo, "SELECT count(*) FROM jobs")[0][0] == 0


@pytest.mark.parametrize(
    "fault",
    [
        Reply(delay=2.0),
        Reply(body={"type": "message"}, truncate=True),
        error(529, "overloaded_error"),
        Reply(body=b"{not json", headers={"content-type": "application/json"}),
    ],
    ids=["timeout", "truncated", "529", "garbled"],
)
def test_a_persistent_fault_keeps_the_job_queued_and_spends_nothing(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None, fault: Reply
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, max_retries=1, timeout=0.5, budget={"daily_tokens": 10_000_000})
    fake.push(fault, fault)
    r = cli.json("refresh", "shop/tax.py", "--backend", "anthropic", repo=repo)
    assert r["notes"]["anthropic"]["written"] == 0
    ((path, error_text),) = [(f["path"], f["error"]) for f in r["notes"]["anthropic"]["failed"]]
    assert path == "shop/tax.py" and error_text
    assert r["model"]["queued"] == 1
    assert query(repo, "SELECT path, status FROM jobs") == [("shop/tax.py", "queued")]
    assert query(repo, "SELECT error FROM jobs")[0][0]
    assert ledger(repo) == []  # nothing billed, nothing recorded
    assert query(repo, "SELECT count(*) FROM reservations")[0][0] == 0  # released
    status = cli.json("status", repo=repo)
    assert status["queued"] == 1 and status["spent"]["calls"] == 0
    # the queued job is done by the next refresh (a garbled body is not retried by the SDK)
    fake.script.clear()
    again = cli.json("refresh", "shop/tax.py", "--backend", "anthropic", repo=repo)
    assert again["notes"]["anthropic"]["written"] == 1
    assert cli.json("status", repo=repo)["queued"] == 0


@pytest.mark.parametrize(
    "tool_input",
    [
        {"summary": {"text": "no cites"}},
        {"summary": {"text": "x", "cites": ["<module>"]}, "facts": []},
        {"summary": "a string", "questions": [], "facts": []},
        {
            "summary": {"text": "x" * 100_000, "cites": ["<module>"]},
            "questions": [],
            "facts": [],
        },
        {
            "summary": {"text": "ok", "cites": ["<module>"]},
            "questions": [{"question": 3, "answer": "a", "cites": ["vat_rate"]}],
            "facts": [],
        },
    ],
    ids=["missing-cites", "missing-questions", "wrong-type", "huge-string", "bad-question"],
)
def test_malformed_tool_output_fails_the_job_cleanly(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None, tool_input: dict[str, Any]
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, budget={"daily_usd": 100.0})
    fake.push(lambda req: Reply(body=message(req, tool_input, DEFAULT_USAGE)))
    proc = cli.run("refresh", "shop/tax.py", "--backend", "anthropic", "--json", repo=repo)
    r = json.loads(proc.stdout)
    assert r["notes"]["anthropic"]["written"] == 0
    assert len(r["notes"]["anthropic"]["failed"]) == 1
    assert "Traceback" not in proc.stderr
    assert query(repo, "SELECT status FROM jobs") == [("failed",)]
    assert anthropic_note(cli, repo, "shop/tax.py") is None
    # the call was billed: recorded as such, and nothing else was (reservations released)
    (row,) = ledger(repo)
    assert row["reason"] == "notes-failed"
    assert row["input_tokens"] == DEFAULT_USAGE["input_tokens"]
    assert query(repo, "SELECT count(*) FROM reservations")[0][0] == 0
    status = cli.json("status", repo=repo)
    assert status["failed"] == 1 and status["spent"]["calls"] == 1


def test_notes_citing_no_known_symbol_are_retried_once_then_failed(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake)
    bogus = {
        "summary": {"text": "made up", "cites": ["NoSuchThing"]},
        "questions": [{"question": "q?", "answer": "a", "cites": ["alsoMissing"]}] * 4,
        "facts": [],
    }
    fake.push(lambda req: Reply(body=message(req, bogus, DEFAULT_USAGE)))
    r = cli.json("refresh", "shop/tax.py", "--backend", "anthropic", repo=repo)
    assert r["notes"]["anthropic"]["written"] == 1  # the retry cited real symbols
    first, second = fake.message_requests
    assert "was discarded" not in first.user_text and "was discarded" in second.user_text
    assert [row["reason"] for row in ledger(repo)] == ["notes-discarded", "notes-retry"]

    repo2 = make_repo("shop")
    configure(repo2, fake)
    fake.push(*[lambda req: Reply(body=message(req, bogus, DEFAULT_USAGE))] * 2)
    r = cli.json("refresh", "shop/cart.py", "--backend", "anthropic", repo=repo2)
    assert r["notes"]["anthropic"]["written"] == 0
    assert "unknown symbols" in r["notes"]["anthropic"]["failed"][0]["error"]
    assert query(repo2, "SELECT status FROM jobs") == [("failed",)]
    status = cli.json("status", repo=repo2)
    assert status["failed"] == 1 and status["dropped_citations"]["count"] == 0


# -- budgets -------------------------------------------------------------------------------
def test_a_per_refresh_token_budget_stops_after_n_modules_and_leaves_the_rest_queued(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, concurrency=1)
    plan = cli.json("refresh", "--backend", "anthropic", "--dry-run", repo=repo)["dry_run"]
    reserve = [m["tokens"] for m in plan["modules"]]  # in the order they are sent
    total = len(reserve)
    used = sum(DEFAULT_USAGE.values())  # what every call of the fake really costs
    assert all(used <= r for r in reserve)
    budget = 2 * used + reserve[2]  # room for about three modules
    expected, spent = 0, 0
    for r in reserve:
        if spent + r > budget:
            break
        spent, expected = spent + used, expected + 1
    assert 1 <= expected < total

    r = cli.json("refresh", "--backend", "anthropic", "--budget-tokens", str(budget), repo=repo)
    assert r["notes"]["anthropic"]["written"] == expected
    assert len(fake.message_requests) == expected
    assert r["model"]["queued"] == total - expected
    assert "per-refresh token budget" in r["model"]["stopped"]
    rows = ledger(repo)
    assert (
        sum(
            x["input_tokens"]
            + x["output_tokens"]
            + x["cache_read_tokens"]
            + x["cache_write_tokens"]
            for x in rows
        )
        <= budget
    )
    status = cli.json("status", repo=repo)
    assert status["queued"] == total - expected
    # the text output says so too
    more = cli.run("refresh", "--backend", "anthropic", "--budget-tokens", "1", repo=repo)
    assert "left queued" in more.stdout and "budget" in more.stdout
    assert len(fake.message_requests) == expected
    # without the limit, the queue drains
    cli.json("refresh", "--backend", "anthropic", repo=repo)
    assert cli.json("status", repo=repo)["queued"] == 0
    assert len(fake.message_requests) == total


def test_budgets_hold_with_concurrent_calls(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, concurrency=4)
    fake.delay = 0.2  # calls overlap
    plan = cli.json("refresh", "--backend", "anthropic", "--dry-run", repo=repo)["dry_run"]
    budget = sum(m["tokens"] for m in plan["modules"][:5])
    r = cli.json("refresh", "--backend", "anthropic", "--budget-tokens", str(budget), repo=repo)
    written = r["notes"]["anthropic"]["written"]
    assert 5 <= written < plan["total"]["modules"]
    assert 1 < fake.max_in_flight <= 4
    spent = cli.json("status", repo=repo)["spent"]
    tokens = sum(spent[k] for k in spent if k.endswith("_tokens"))
    assert tokens <= budget


def test_daily_budgets_count_the_ledger_since_midnight(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, concurrency=1)
    cli.json("refresh", "shop/tax.py", "shop/cart.py", "--backend", "anthropic", repo=repo)
    spent = cli.json("status", repo=repo)["spent"]
    today = sum(spent[k] for k in spent if k.endswith("_tokens"))
    configure(repo, fake, concurrency=1, budget={"daily_tokens": today + 100})
    r = cli.json("refresh", "--backend", "anthropic", repo=repo)
    assert r["notes"]["anthropic"]["written"] == 0
    assert "daily token budget" in r["model"]["stopped"]
    assert len(fake.message_requests) == 2
    # a dollar limit works the same way
    configure(repo, fake, concurrency=1, budget={"per_refresh_usd": 0.001})
    r = cli.json("refresh", "--backend", "anthropic", repo=repo)
    assert "per-refresh dollar budget" in r["model"]["stopped"]
    assert len(fake.message_requests) == 2
    assert cli.json("status", repo=repo)["queued"] == r["modules"] - 2


# -- canaries ------------------------------------------------------------------------------
def _token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def test_no_secret_reaches_the_model_a_note_or_a_log(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake)
    canaries = {
        "pem": _token(48),
        "env": _token(40),
        "aws": "AKIA" + _token(16, string.ascii_uppercase + "234567"),
        "github": "ghp_" + _token(36),
        "ignored": "IGNOREDCANARY" + _token(20),
        "denied": "DENIEDCANARY" + _token(20),
    }
    (repo / "deploy").mkdir()
    (repo / "deploy" / "server.pem").write_text(
        f"-----BEGIN PRIVATE KEY-----\n{canaries['pem']}\n-----END PRIVATE KEY-----\n"
    )
    (repo / ".env").write_text(f"API_TOKEN={canaries['env']}\n")
    (repo / "shop" / "settings.py").write_text(
        '"""Runtime settings for the shop."""\n\n'
        f'AWS_ACCESS_KEY_ID = "{canaries["aws"]}"\n\n\n'
        "def load_settings(environ):\n"
        '    """Read the settings from the environment."""\n'
        '    return {"region": environ.get("REGION", "eu-west-1")}\n\n\n'
        f'def connect(token="{canaries["github"]}"):\n'
        '    """Open a client."""\n'
        "    return token\n"
    )
    with (repo / ".gitignore").open("a") as fh:
        fh.write("shop/local_secrets.py\n")
    (repo / "shop" / "local_secrets.py").write_text(
        f'def local_secret():\n    return "{canaries["ignored"]}"\n'
    )
    (repo / "shop" / "credentials.py").write_text(
        f'def credential():\n    return "{canaries["denied"]}"\n'
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "settings")
    for name in ("deploy/server.pem", ".env", "shop/settings.py", "shop/local_secrets.py"):
        assert (repo / name).is_file()

    proc = cli.run("-vv", "refresh", "--backend", "anthropic", "--json", repo=repo)
    result = json.loads(proc.stdout)
    assert result["notes"]["anthropic"]["failed"] == []
    not_sent = {n["path"] for n in result["model"]["not_sent"]}
    assert "shop/credentials.py" in not_sent

    bodies = [r.body.decode("utf-8", "replace") for r in fake.requests]
    sent = "\n".join(bodies)
    settings = [r.user_text for r in fake.message_requests if r.module == "shop/settings.py"]
    assert settings, "the ordinary source file was sent"
    assert "def load_settings(environ):" in settings[0]
    assert "[REDACTED:aws-access-key]" in settings[0]
    assert "[REDACTED:github-token]" in settings[0]
    assert not any("shop/credentials.py" in r.user_text for r in fake.message_requests)
    assert not any("local_secrets" in b for b in bodies)

    notes_text = ""
    modules = [p for (p,) in query(repo, "SELECT path FROM modules WHERE status = 'indexed'")]
    assert "shop/settings.py" in modules and "shop/local_secrets.py" not in modules
    for path in modules:
        notes_text += json.dumps(cli.json("notes", path, repo=repo))
    status = cli.run("status", repo=repo).stdout
    for name, value in canaries.items():
        assert value not in sent, f"{name} canary reached the model"
        assert value not in notes_text, f"{name} canary is in a note"
        assert value not in proc.stdout + proc.stderr + status, f"{name} canary was logged"


def test_a_large_module_is_split_along_symbols_and_merged(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, part_tokens=300)
    dry = cli.json("refresh", "shop/cart.py", "--backend", "anthropic", "--dry-run", repo=repo)
    (planned,) = dry["dry_run"]["modules"]
    parts = planned["calls"]
    assert parts > 1
    r = cli.json("refresh", "shop/cart.py", "--backend", "anthropic", repo=repo)
    assert r["notes"]["anthropic"]["written"] == 1
    reqs = fake.message_requests
    assert len(reqs) == parts and {q.module for q in reqs} == {"shop/cart.py"}
    assert all(f"of {parts} (lines" in q.user_text for q in reqs)
    assert len(ledger(repo)) == parts  # one ledger row per call
    note = anthropic_note(cli, repo, "shop/cart.py")
    assert note is not None
    kinds = [i["kind"] for i in note["items"]]
    assert kinds.count("summary") == 1 and kinds.count("qa") <= 6


# -- Message Batches -----------------------------------------------------------------------
BATCHING = {"batch_threshold": 5, "batch_poll_seconds": 0.05}


def test_a_backlog_goes_out_as_one_message_batch_at_half_price(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, batch_wait_seconds=10, **BATCHING)
    fake.push(error(400, "invalid_request_error", None))  # the first entry of the batch errors
    r = cli.json("refresh", "--backend", "anthropic", repo=repo)
    n = r["modules"]
    creates = [q for q in fake.requests if q.path.endswith("/v1/messages/batches")]
    assert len(creates) == 1 and len(creates[0].json["requests"]) == n
    assert fake.message_requests == []  # nothing was sent one by one
    entry = creates[0].json["requests"][1]["params"]
    assert entry["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert entry["tool_choice"] == {"type": "tool", "name": "record_notes"}
    assert r["notes"]["anthropic"]["written"] == n - 1
    assert len(r["notes"]["anthropic"]["failed"]) == 1
    assert r["model"]["batched"] == 0
    rows = ledger(repo)
    assert len(rows) == n - 1
    for row in rows:
        assert json.loads(row["detail"]) == {"batch": True}
        assert row["cost_usd"] == pytest.approx(cost(usage_sum([DEFAULT_USAGE])) / 2)
    assert query(repo, "SELECT status FROM batches") == [("done",)]
    assert query(repo, "SELECT status FROM jobs") == [("queued",)]
    assert query(repo, "SELECT count(*) FROM reservations")[0][0] == 0
    # the errored module is below the batch threshold now: it goes one by one
    again = cli.json("refresh", "--backend", "anthropic", repo=repo)
    assert again["notes"]["anthropic"]["written"] == 1 and len(fake.message_requests) == 1
    assert cli.json("status", repo=repo)["queued"] == 0


def test_a_pending_batch_survives_a_restart(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake, batch_wait_seconds=0, budget={"daily_usd": 50.0}, **BATCHING)
    fake.batch_polls_until_done = 2  # still running when the first refresh looks
    first = cli.json("refresh", "--backend", "anthropic", repo=repo)
    n = first["modules"]
    assert first["notes"]["anthropic"]["written"] == 0
    assert first["model"]["batched"] == n
    status = cli.json("status", repo=repo)
    assert status["batched"] == n and status["queued"] == 0
    (batch_id,) = [b for (b,) in query(repo, "SELECT id FROM batches WHERE status = 'pending'")]
    assert query(repo, "SELECT count(*) FROM reservations")[0][0] == 1  # held for the batch
    # a new process collects it: no second batch, no single calls
    second = cli.json("refresh", "--backend", "anthropic", repo=repo)
    assert second["notes"]["anthropic"]["written"] == n
    creates = [q for q in fake.requests if q.path.endswith("/v1/messages/batches")]
    assert len(creates) == 1 and fake.message_requests == []
    assert any(q.path.endswith(f"/{batch_id}/results") for q in fake.requests)
    assert query(repo, "SELECT count(*) FROM reservations")[0][0] == 0
    status = cli.json("status", repo=repo)
    assert status["batched"] == 0 and status["spent"]["calls"] == n


# -- rethink -------------------------------------------------------------------------------
def test_a_changed_module_is_rethought_from_its_old_notes_and_the_diff(
    make_repo, cli: CLI, fake: FakeAnthropic, key: None
) -> None:
    repo = make_repo("shop")
    configure(repo, fake)

    def notes(req: Any) -> dict[str, Any]:
        data = default_notes(req)
        data["questions"][0] = {
            "question": "How is the VAT of an order summed?",
            "answer": "vat_for_order sums the per-line VAT.",
            "cites": ["vat_for_order"],
        }
        return data

    fake.notes = notes
    cli.json("refresh", "shop/tax.py", "--backend", "anthropic", repo=repo)
    fake.notes = default_notes
    tax = repo / "shop" / "tax.py"
    text = tax.read_text()
    old = '    return sum(vat_for_lines(lines, country), Decimal("0.00"))'
    assert old in text
    tax.write_text(text.replace(old, '    return sum(vat_for_lines(lines, country), Decimal("0"))'))
    git(repo, "commit", "-qam", "simpler zero")
    r = cli.json("refresh", "shop/tax.py", "--backend", "anthropic", repo=repo)
    assert r["notes"]["anthropic"]["written"] == 1
    first, second = fake.message_requests
    rethink = second.user_text
    assert (
        "--- a/shop/tax.py" in rethink
        and '+    return sum(vat_for_lines(lines, country), Decimal("0"))' in rethink
    )
    assert "<previous_notes>" in rethink and "[fake-anthropic]" in rethink
    assert "- (qa) [stale] Q: How is the VAT of an order summed?" in rethink
    assert "- (summary) [fake-anthropic]" in rethink  # unchanged claims are not stale
    assert "def vat_rate" not in rethink  # unchanged code is not sent again
    assert len(second.body) < len(first.body)
    row = ledger(repo)[-1]
    assert row["reason"] == "rethink"
    detail = json.loads(row["detail"])
    assert detail["full_rewrite_tokens"] > 0 and detail["full_rewrite_usd"] > 0
    note = anthropic_note(cli, repo, "shop/tax.py")
    assert note is not None and note["origin"] == "written"
    assert not any(i["stale"] for i in note["items"])
