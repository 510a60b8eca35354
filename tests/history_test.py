"""History notes: the subjects of the commits that last changed each module's lines, from a
real git history, kept per blob, never from a commit after the checked-out state, and fused
into the unit ranking of ``context``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from sleepy_repo.history import UNCOMMITTED, parse_porcelain

from helpers import CLI, git

LATER = "Round VAT per line item instead of per order to match invoices"


def _history(repo: Path, path: str | None = None) -> list[tuple[str, int, int, str]]:
    with closing(sqlite3.connect(repo / ".sleepy" / "index.db")) as conn:
        q = "SELECT path, start_line, end_line, summary FROM history"
        args: tuple[str, ...] = ()
        if path:
            q, args = q + " WHERE path = ?", (path,)
        return [tuple(r) for r in conn.execute(q + " ORDER BY path, start_line", args)]


def test_porcelain_is_merged_into_stretches_without_uncommitted_lines() -> None:
    a, b = "a" * 40, "b" * 40
    out = [
        f"{a} 1 1 2",
        "author X",
        "summary First change",
        "filename m.py",
        "\tline one",
        f"{a} 2 2",
        "\tline two",
        f"{a} 5 3 1",  # consecutive and same commit: merged
        "\tline three",
        f"{UNCOMMITTED} 4 4 1",
        "summary Not Committed Yet",
        "\tedited",
        f"{b} 3 5 1",
        "summary Second change",
        "\tline five",
    ]
    stretches, dirty = parse_porcelain(out)
    assert dirty
    assert [(s.start_line, s.end_line, s.summary) for s in stretches] == [
        (1, 3, "First change"),
        (5, 5, "Second change"),
    ]


def test_history_holds_only_commits_up_to_the_state(
    make_repo: Callable[..., Path], cli: CLI
) -> None:
    repo = make_repo("shop")
    later = git(repo, "log", "--format=%H", "-1", f"--grep={LATER}").strip()
    git(repo, "checkout", "-q", f"{later}^")
    cli.run("refresh", repo=repo)
    rows = _history(repo)
    assert rows and all(LATER not in r[3] for r in rows)  # the next commit is not known
    assert any("Apply coupon discounts before VAT" in r[3] for r in rows)
    # the state moves on: the changed modules are blamed again and know it
    git(repo, "checkout", "-q", later)
    cli.run("refresh", repo=repo)
    touched = git(repo, "show", "--name-only", "--format=", later).split()
    for path in (p for p in touched if p.endswith(".py") and not p.startswith("tests/")):
        assert any(LATER in r[3] for r in _history(repo, path)), path
    status = cli.json("status", repo=repo)
    assert status["history"]["modules"] == status["modules"]["indexed"]


def test_a_commit_of_edited_lines_is_found_after_head_moves(
    make_repo: Callable[..., Path], cli: CLI
) -> None:
    repo = make_repo("shop")
    tax = repo / "shop" / "tax.py"
    tax.write_text(tax.read_text() + "\n\ndef surtax(x):\n    return x\n")
    cli.run("refresh", repo=repo)
    assert not any("surtax" in r[3] for r in _history(repo, "shop/tax.py"))
    git(repo, "commit", "-qam", "Add a surtax helper for luxury goods")
    cli.run("refresh", repo=repo)  # same blob, but HEAD moved and the file had edits
    assert any("surtax" in r[3] for r in _history(repo, "shop/tax.py"))


def test_a_question_like_a_past_commit_finds_the_code_it_changed(
    make_repo: Callable[..., Path], cli: CLI
) -> None:
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    subject = "Reject orders shipping to unsupported countries"
    question = "reject orders to countries we do not ship to"
    ctx = cli.json("context", question, "--budget", "800", repo=repo)
    first = next(i for i in ctx["items"] if i["kind"] == "code")
    # the first code served holds lines that commit last changed
    changed = [(s, e) for p, s, e, summary in _history(repo, first["path"]) if subject in summary]
    assert any(s <= first["end_line"] and first["start_line"] <= e for s, e in changed), first
    notes = cli.json("notes", first["path"], repo=repo)
    assert any(subject in h["summary"] for h in notes["history"]), notes


def test_a_file_first_seen_untracked_gets_its_history_once_committed(
    make_repo: Callable[..., Path], cli: CLI
) -> None:
    repo = make_repo("shop")
    new = repo / "shop" / "loyalty.py"
    new.write_text("def points(total):\n    return int(total)\n")
    cli.run("refresh", repo=repo)
    assert _history(repo, "shop/loyalty.py") == []  # untracked: git cannot blame it yet
    git(repo, "add", "shop/loyalty.py")
    git(repo, "commit", "-qm", "Add loyalty points earned per order")
    cli.run("refresh", repo=repo)
    assert any("loyalty points" in r[3] for r in _history(repo, "shop/loyalty.py"))
