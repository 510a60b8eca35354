"""Every CLI command, through the installed executable, on real fixture git repos."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import CLI, git


def test_init_writes_config_and_gitignore(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    result = cli.json("init", repo=repo)
    assert result["schema_version"] == 1
    assert (repo / ".sleepy" / "config.toml").is_file()
    assert ".sleepy/index.db*" in (repo / ".gitignore").read_text().splitlines()
    assert (repo / ".sleepy" / "index.db").is_file()
    # idempotent: nothing written twice
    again = cli.json("init", repo=repo)
    assert again["written"] == []
    assert (repo / ".gitignore").read_text().count(".sleepy/index.db*") == 1
    # the index is ignored by git, the config is not
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    assert ".sleepy/config.toml" in status
    assert "index.db" not in status


def test_refresh_status_notes_context_gc(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    refreshed = cli.json("refresh", repo=repo)
    assert refreshed["schema_version"] == 1
    tracked_sources = [
        p for p in git(repo, "ls-files").split() if p.endswith((".py", ".ts", ".tsx", ".js"))
    ]
    assert refreshed["modules"] == len(tracked_sources)
    assert refreshed["parsed"] == len(tracked_sources)
    assert refreshed["notes"]["static"]["written"] == len(tracked_sources)

    status = cli.json("status", repo=repo)
    assert status["schema_version"] == 1
    assert status["modules"]["indexed"] == len(tracked_sources)
    assert status["modules"]["fresh"] == len(tracked_sources)
    assert status["modules"]["stale"] == 0
    assert status["spent"]["calls"] == 0  # static notes: the ledger stays empty
    assert status["git"]["branch"] == "main"

    notes = cli.json("notes", "shop/cart.py", repo=repo)
    assert notes["path"] == "shop/cart.py"
    (static,) = notes["notes"]
    assert static["backend"] == "static"
    kinds = [i["kind"] for i in static["items"]]
    assert kinds[0] == "summary"
    assert "qa" in kinds and "symbol" in kinds
    qa = [i for i in static["items"] if i["kind"] == "qa"]
    assert 1 <= len(qa) <= 8
    assert any(i["question"] == "Where is Cart defined?" for i in qa)
    for item in static["items"]:
        assert item["citations"], item
        assert item["generated"] is False

    ctx = cli.json(
        "context", "How are coupon discounts applied before VAT?", "--budget", "600", repo=repo
    )
    assert ctx["schema_version"] == 1
    assert ctx["budget"] == 600
    assert 0 < ctx["tokens"] <= 600
    assert set(ctx["items"][0]) == {
        "path",
        "start_line",
        "end_line",
        "symbol",
        "kind",
        "text",
        "generated",
        "stale",
        "score",
        "citations",
        "source",
    }
    assert ctx["items"][0]["source"] in {"repository", "model", "mirror"}
    files = list(dict.fromkeys(i["path"] for i in ctx["items"]))
    assert "shop/pricing.py" in files[:3]

    plain = cli.run("context", "where is the Cart class", repo=repo)
    assert "shop/cart.py" in plain.stdout

    gc = cli.json("gc", repo=repo)
    assert gc["notes_removed"] == 0  # everything is reachable


def test_second_refresh_reuses_everything(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    cli.json("refresh", repo=repo)
    again = cli.json("refresh", repo=repo)
    assert again["parsed"] == 0
    assert again["notes"]["static"]["written"] == 0


def test_branch_switch_back_and_forth_reuses_notes(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    cli.json("refresh", repo=repo)
    first = git(repo, "rev-list", "--max-parents=0", "HEAD").strip()
    git(repo, "checkout", "-q", first)
    old = cli.json("refresh", repo=repo)
    assert old["parsed"] > 0
    assert cli.json("status", repo=repo)["git"]["branch"] is None  # detached HEAD
    git(repo, "checkout", "-q", "main")
    back = cli.json("refresh", repo=repo)
    # contents are back to blobs the store has notes for: parsed again, not re-noted
    assert back["notes"]["static"]["written"] <= back["parsed"]
    notes = cli.json("notes", "shop/pricing.py", repo=repo)
    assert notes["blob_sha"] == git(repo, "rev-parse", "HEAD:shop/pricing.py").strip()


def test_blob_sha_is_git_hash_object(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    cli.json("refresh", repo=repo)
    notes = cli.json("notes", "shop/tax.py", repo=repo)
    assert notes["blob_sha"] == git(repo, "hash-object", "shop/tax.py").strip()


def test_edit_delete_rename(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    cli.json("refresh", repo=repo)
    with (repo / "shop" / "tax.py").open("a") as fh:
        fh.write("\n\ndef vat_for_country(code):\n    return 0.2\n")
    git(repo, "mv", "shop/money.py", "shop/currency.py")
    (repo / "shop" / "storage.py").unlink()
    r = cli.json("refresh", repo=repo)
    assert r["parsed"] == 2  # tax.py edited, currency.py new path
    assert sorted(r["removed"]) == ["shop/money.py", "shop/storage.py"]
    notes = cli.json("notes", "shop/tax.py", repo=repo)
    assert any(i["symbol"] == "vat_for_country" for i in notes["notes"][0]["items"])
    missing = cli.run("notes", "shop/storage.py", "--json", repo=repo, check=False)
    assert missing.returncode == 2
    assert "not indexed" in missing.stderr
    ctx = cli.json("context", "vat_for_country", repo=repo)
    assert ctx["items"][0]["path"] == "shop/tax.py"


def test_untracked_and_ignored_files(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    (repo / "shop" / "draft.py").write_text("def draft_helper():\n    pass\n")
    (repo / ".gitignore").write_text("ignored_dir/\n")
    (repo / "ignored_dir").mkdir()
    (repo / "ignored_dir" / "secret.py").write_text("def hidden():\n    pass\n")
    (repo / "node_modules" / "lib").mkdir(parents=True)
    (repo / "node_modules" / "lib" / "index.js").write_text("function vendored() {}\n")
    (repo / "web" / "app.min.js").write_text("function m(){}\n")
    cli.json("refresh", repo=repo)
    status = cli.json("status", repo=repo)
    assert status["modules"]["indexed"] > 0
    cli.json("notes", "shop/draft.py", repo=repo)  # untracked, not ignored: indexed
    for path in ("ignored_dir/secret.py", "node_modules/lib/index.js", "web/app.min.js"):
        assert cli.run("notes", path, repo=repo, check=False).returncode == 2, path


def test_submodule_is_skipped_and_reported(make_repo, cli: CLI, tmp_path: Path) -> None:
    repo = make_repo("shop")
    inner = make_repo("relay")
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            str(inner),
            "vendored_relay",
        ],
        check=True,
        capture_output=True,
    )
    r = cli.json("refresh", repo=repo)
    assert r["submodules"] == ["vendored_relay"]
    status = cli.json("status", repo=repo)
    assert status["git"]["submodules"] == ["vendored_relay"]
    ctx = cli.json("context", "relay backoff retry", repo=repo)
    assert not any(i["path"].startswith("vendored_relay/") for i in ctx["items"])


def test_run_from_a_subdirectory_finds_the_repo(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    r = cli.run("refresh", "--json", cwd=repo / "shop")
    assert '"modules"' in r.stdout
    assert (repo / ".sleepy" / "index.db").exists()


def test_empty_repo(tmp_path: Path, cli: CLI) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    git(repo, "init", "-q")
    r = cli.json("refresh", repo=repo)
    assert r["modules"] == 0
    status = cli.json("status", repo=repo)
    assert status["git"]["head"] is None
    ctx = cli.json("context", "anything at all", repo=repo)
    assert ctx["items"] == []


def test_context_before_refresh_says_what_to_do(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    r = cli.run("context", "cart", repo=repo, check=False)
    assert r.returncode == 2
    assert "sleepy-repo refresh" in r.stderr


def test_bad_arguments_are_clear(make_repo, cli: CLI, tmp_path: Path) -> None:
    repo = make_repo("shop")
    cli.json("refresh", repo=repo)
    r = cli.run("context", "cart", "--budget", "0", repo=repo, check=False)
    assert r.returncode == 2 and "budget" in r.stderr
    r = cli.run("notes", str(tmp_path), repo=repo, check=False)
    assert r.returncode == 2 and "outside the repository" in r.stderr
    r = cli.run("status", repo=tmp_path / "nope", check=False)
    assert r.returncode == 2 and "does not exist" in r.stderr
    bad = repo / ".sleepy" / "config.toml"
    bad.write_text("[scan]\nmax_file_bytes = 'big'\n")
    r = cli.run("status", repo=repo, check=False)
    assert r.returncode == 2 and "max_file_bytes" in r.stderr and "config.toml" in r.stderr


def test_corrupt_and_foreign_store(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    cli.json("refresh", repo=repo)
    db = repo / ".sleepy" / "index.db"
    for junk in (b"this is not a database at all" * 100, None):
        for side in ("-wal", "-shm"):
            Path(str(db) + side).unlink(missing_ok=True)
        if junk is None:  # a foreign but valid SQLite database
            db.unlink()
            subprocess.run(
                [
                    "python3",
                    "-c",
                    f"import sqlite3; c=sqlite3.connect({str(db)!r});"
                    "c.execute('create table t(x)'); c.commit()",
                ],
                check=True,
            )
        else:
            db.write_bytes(junk)
        r = cli.run("status", repo=repo, check=False)
        assert r.returncode == 2, r.stderr
        assert "init --rebuild" in r.stderr
        rebuilt = cli.json("init", "--rebuild", repo=repo)
        assert rebuilt["moved_aside"] and Path(rebuilt["moved_aside"]).exists()
        assert cli.json("refresh", repo=repo)["modules"] > 0


def test_plain_directory_works_with_a_warning(tmp_path: Path, cli: CLI) -> None:
    import shutil

    from helpers import ROOT

    d = tmp_path / "plain"
    shutil.copytree(ROOT / "fixtures" / "repos" / "shop" / "tree", d)
    (d / ".gitignore").write_text("shop/giftcards.py\n")
    r = cli.json("refresh", repo=d)
    assert any("not a git repository" in w for w in r["warnings"])
    assert cli.run("notes", "shop/cart.py", repo=d).returncode == 0
    assert cli.run("notes", "shop/giftcards.py", repo=d, check=False).returncode == 2


def test_gc_drops_unreachable_notes(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    cli.json("refresh", repo=repo)
    (repo / "shop" / "tax.py").write_text('"""Rewritten."""\n\ndef rate():\n    return 1\n')
    cli.json("refresh", repo=repo)
    git(repo, "checkout", "--", "shop/tax.py")  # the edited blob is now unreachable
    cli.json("refresh", repo=repo)
    gc = cli.json("gc", repo=repo)
    assert gc["notes_removed"] == 1
    assert cli.json("gc", repo=repo)["notes_removed"] == 0


def test_what_calls_lists_calling_modules_once_each(tmp_path: Path, cli: CLI) -> None:
    """ "What calls X" names each calling module once, cited by its first calling symbol
    (a module-level call counts only when the module has no other), never X's own module."""
    repo = tmp_path / "calls"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "core.py").write_text(
        '"""Core."""\n\n\ndef compute(x):\n    return x * 2\n\n\ndef again():\n'
        "    return compute(1)\n"
    )
    (repo / "pkg" / "many.py").write_text(
        "from pkg.core import compute\n\nSTART = compute(0)\n\n\ndef first():\n"
        "    return compute(1) + compute(2)\n\n\ndef second():\n    return compute(3)\n"
    )
    (repo / "pkg" / "top.py").write_text("from pkg.core import compute\n\nVALUE = compute(5)\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    cli.json("refresh", repo=repo)
    (static,) = cli.json("notes", "pkg/core.py", repo=repo)["notes"]
    (calls,) = [i for i in static["items"] if i["question"] == "What calls compute?"]
    # many.py once (in `first`, its first call inside a symbol); top.py only calls it at
    # module level, which cites no caller; core.py's own call is not listed
    assert calls["text"].endswith(": pkg/many.py:7 in first"), calls["text"]
    cited = [(c["path"], c["symbol"]) for c in calls["citations"]]
    assert cited == [("pkg/core.py", "compute"), ("pkg/many.py", "first")]


def test_context_budgets_are_checked_as_in_every_shell(make_repo, cli) -> None:  # type: ignore[no-untyped-def]
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    for budget in ("0", "-5", "32001"):
        proc = cli.run("context", "coupon VAT", "--budget", budget, repo=repo, check=False)
        assert proc.returncode == 2 and "from 1 to 32000 tokens" in proc.stderr, proc.stderr
    assert cli.json("context", "coupon VAT", "--budget", "32000", repo=repo)["budget"] == 32000


def test_control_characters_in_names_are_shown_escaped(make_repo, cli: CLI) -> None:
    """A file name or docstring carrying terminal escape sequences cannot recolour or
    retitle the user's terminal through human output: they are printed escaped."""
    repo = make_repo("shop")
    evil = "\x1b]0;pwned\x07\x1b[31mred"
    (repo / "shop" / f"{evil}.py").write_text(
        f'def paint_terminal_red():\n    """Paint it {evil} now."""\n    return 1\n'
    )
    (repo / "shop" / "line\nbreak.py").write_text("def f():\n    return 1\n")
    git(repo, "add", "-A")
    outputs = [
        cli.run("refresh", repo=repo),
        cli.run("status", repo=repo),
        cli.run("context", "paint terminal red", repo=repo),
        cli.run("notes", f"shop/{evil}.py", repo=repo),
    ]
    for proc in outputs:
        text = proc.stdout + proc.stderr
        assert "\x1b" not in text and "\x07" not in text, text
    shown = outputs[2].stdout + outputs[3].stdout
    assert "\\x1b]0;pwned\\x07\\x1b[31mred" in shown, shown
    assert "skipped shop/line\\nbreak.py" in outputs[0].stderr, outputs[0].stderr
