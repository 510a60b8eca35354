"""``ask``: with no answering model, the cited context and a message saying so."""

from __future__ import annotations

from helpers import CLI

QUESTION = "How are coupon discounts applied before VAT?"


def test_ask_returns_the_context_and_says_no_model_answered(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    result = cli.json("ask", QUESTION, "--budget", "500", repo=repo)
    # the original fields (MCP and LSP clients rely on them); model fields are added
    assert {"schema_version", "question", "answer", "message", "context"} <= set(result)
    assert result["schema_version"] == 1 and result["question"] == QUESTION
    assert result["answer"] is None
    assert "no answering model is configured" in result["message"].lower()
    ctx = result["context"]
    assert ctx == cli.json("context", QUESTION, "--budget", "500", repo=repo)
    assert 0 < ctx["tokens"] <= 500

    text = cli.run("ask", QUESTION, "--budget", "300", repo=repo)
    assert "No answering model" in text.stderr
    assert "shop/pricing.py:" in text.stdout

    empty = cli.run("ask", "  ", repo=repo, check=False)
    assert empty.returncode == 2 and "empty" in empty.stderr
