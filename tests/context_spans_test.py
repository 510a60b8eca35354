"""Every item `context` returns cites a real span: a note item a parsed symbol's or the module
header's; a code item exactly the lines it carries, inside the symbol it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleepy_repo.parse import parse_module
from sleepy_repo.parse.languages import language_for_path

from helpers import CLI

QUESTIONS = {
    "shop": [
        "How are coupon discounts applied before VAT?",
        "where is the Cart class defined",
        "what calls price_cart",
        "reserve inventory stock so concurrent checkouts cannot oversell",
        "how are payments retried when the card is declined",
        "format money amounts in the web client",
        "what does shop/storage.py export",
        "gift card balance",
    ],
    "relay": [
        "retry with exponential backoff",
        "how is the message checksum verified",
        "what does the relay depend on",
        "where are dead letters stored",
    ],
}


def check_span(repo: Path, path: str, start: int, end: int, symbol: str | None) -> None:
    lang = language_for_path(path)
    assert lang, path
    source = (repo / path).read_bytes()
    facts = parse_module(path, source, lang)
    lines = source.decode("utf-8", "replace").splitlines()
    assert 1 <= start <= end <= max(1, len(lines)), (path, start, end)
    if symbol is not None:
        sym = facts.symbol(symbol)
        assert sym is not None, f"{path}: {symbol} is not a parsed symbol"
        assert sym.start_line <= start and end <= sym.end_line, (path, symbol, start, end)
        assert sym.name in lines[start - 1], f"{path}:{start} does not name {symbol}"
        return
    header = (1, max(1, facts.header_end))
    in_header = header[0] <= start and end <= header[1]
    in_symbol = any(s.start_line <= start and end <= s.end_line for s in facts.symbols)
    assert in_header or in_symbol, f"{path}:{start}-{end} is neither header nor symbol span"


def check_code(repo: Path, item: dict[str, object]) -> None:
    """A code item carries exactly lines start..end of its file, and the symbol it names
    (with its decorators and doc comments) holds those lines."""
    path, start, end = str(item["path"]), int(item["start_line"]), int(item["end_line"])  # type: ignore[call-overload]
    source = (repo / path).read_text()
    lines = source.splitlines()
    assert item["text"] == "\n".join(lines[start - 1 : end]), (path, start, end)
    symbol = item["symbol"]
    if symbol is not None:
        lang = language_for_path(path)
        assert lang
        sym = parse_module(path, source.encode(), lang).symbol(str(symbol))
        assert sym is not None, f"{path}: {symbol} is not a parsed symbol"
        assert start <= sym.end_line and end >= sym.start_line, (path, symbol, start, end)
        above = lines[start - 1 : sym.start_line - 1]  # what the item holds above the symbol
        assert all(x.lstrip().startswith(("@", "/", "*", "#")) for x in above), above
    assert item["citations"] == [
        {"path": path, "start_line": start, "end_line": end, "symbol": symbol}
    ]


@pytest.mark.parametrize("fixture", sorted(QUESTIONS))
def test_every_context_item_cites_a_parsed_span(make_repo, cli: CLI, fixture: str) -> None:
    repo = make_repo(fixture)
    cli.json("refresh", repo=repo)
    checked = 0
    for question in QUESTIONS[fixture]:
        for budget in ("300", "4000"):
            ctx = cli.json("context", question, "--budget", budget, repo=repo)
            assert ctx["tokens"] <= int(budget)
            assert ctx["items"], question
            for item in ctx["items"]:
                assert item["kind"] in {"summary", "qa", "fact", "symbol", "code"}
                if item["kind"] == "code":
                    check_code(repo, item)
                    checked += 1
                    continue
                check_span(repo, item["path"], item["start_line"], item["end_line"], item["symbol"])
                assert item["citations"]
                for c in item["citations"]:
                    check_span(repo, c["path"], c["start_line"], c["end_line"], c["symbol"])
                checked += 1
    assert checked > 20
