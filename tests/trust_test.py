"""A repository's own config is untrusted input: through the installed CLI, the MCP server
and the language server, a hostile clone's ``.sleepy/config.toml`` can neither send code
(or the user's key) anywhere nor write outside the clone, until the user runs
``sleepy-repo trust``; the trust lasts until the file changes."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic
from lsp_server_test import session, uri
from lsprotocol import types
from mcp import Client, StdioServerParameters

from sleepy_repo import trust
from sleepy_repo.config import DEFAULT_DENY, DEFAULT_EXCLUDE, load, load_config

from helpers import CLI, EXE, git, trusted_config, user_config

KEY = "sk-ant-test-0123456789-never-sent"


@pytest.fixture
def recorders(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeAnthropic, FakeAnthropic]]:
    """A: the listener a hostile config points at; B: the user's ``ANTHROPIC_BASE_URL``.
    Both record every request; the user's key is in the environment."""
    a, b = FakeAnthropic(), FakeAnthropic()
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", b.url)
    yield a, b
    a.close()
    b.close()


def _ledger(repo: Path) -> int:
    db = repo / ".sleepy" / "index.db"
    if not db.exists():
        return 0
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        return int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])


def _clone(src: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(src), str(dest)], check=True)
    return dest


def _hostile_origin(make_repo: Callable[..., Path], tmp_path: Path, url: str) -> Path:
    """A repo whose committed config chooses anthropic at ``url``, a store outside the
    clone, quick idle-time work and committed mirrors, and whose ``.sleepy/notes`` is a
    symlink out of the repository."""
    origin = make_repo("shop")
    (origin / ".sleepy").mkdir(exist_ok=True)
    (origin / ".sleepy" / "config.toml").write_text(
        '[notes]\nbackend = "anthropic"\ncommit = true\n'
        f'[anthropic]\nbase_url = "{url}"\nmax_retries = 1\ntimeout = 5.0\n'
        '[store]\npath = "../outside_store"\n'
        "[sleep]\nidle_seconds = 0.2\n"
    )
    (origin / ".sleepy" / "notes").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "hostile sleepy config")
    return origin


async def test_a_hostile_clone_sends_nothing_and_writes_nothing_outside(
    make_repo: Callable[..., Path],
    cli: CLI,
    tmp_path: Path,
    recorders: tuple[FakeAnthropic, FakeAnthropic],
) -> None:
    a, b = recorders
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    origin = _hostile_origin(make_repo, tmp_path, a.url)
    clone = _clone(origin, tmp_path / "clone")
    assert (clone / ".sleepy" / "notes").is_symlink()

    refreshed = cli.run("refresh", "--json", repo=clone)
    result = json.loads(refreshed.stdout)
    assert set(result["notes"]) == {"static"}
    # one warning names the ignored keys and says how to trust
    assert refreshed.stderr.count("ignored [notes] backend") == 1, refreshed.stderr
    assert "[anthropic] base_url" in refreshed.stderr and "[store] path" in refreshed.stderr
    assert "sleepy-repo trust" in refreshed.stderr

    hook = cli.run("hook", "pre-commit", "--all", repo=clone)  # never fails a commit ...
    assert "outside the repository" in hook.stderr, hook.stderr  # ... but says why

    status = cli.json("status", repo=clone)
    assert status["config"]["trusted"] is False
    assert "[notes] backend" in status["config"]["ignored"]
    assert status["backend"] == "static"
    assert "not trusted" in cli.run("status", repo=clone).stdout

    # the MCP server, with the whole environment (the key included)
    params = StdioServerParameters(
        command=EXE, args=["mcp", "--repo", str(clone)], cwd="/", env=dict(os.environ)
    )
    async with Client(params, read_timeout_seconds=120) as mcp:
        called = await mcp.call_tool("refresh", {})
        assert not called.is_error, called.content
        assert called.structured_content is not None
        assert set(called.structured_content["notes"]) == {"static"}

    # the language server, with hostile editor settings too (e.g. .vscode/settings.json)
    async with session(clone, options={"backend": "anthropic", "idleSeconds": 0.2}) as lsp:
        cart = uri(clone, "shop/cart.py")
        text = (clone / "shop" / "cart.py").read_text()
        lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(cart, "python", 1, text))
        )
        lsp.text_document_did_save(
            types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(cart))
        )
        await asyncio.sleep(4)  # well past the idle time the hostile settings ask for
        messages = [m.message for m in lsp.messages]
    assert any("backend 'anthropic' from editor settings is ignored" in m for m in messages)

    assert a.requests == [] and b.requests == []
    assert _ledger(clone) == 0
    assert not (tmp_path / "outside_store").exists()
    assert list(elsewhere.iterdir()) == []


def test_a_trusted_config_is_honoured_until_it_changes(
    make_repo: Callable[..., Path], cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeAnthropic()
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    try:
        origin = make_repo("shop")
        (origin / ".sleepy").mkdir(exist_ok=True)
        config = origin / ".sleepy" / "config.toml"
        config.write_text(
            '[notes]\nbackend = "anthropic"\n'
            f'[anthropic]\nbase_url = "{fake.url}"\nmax_retries = 1\ntimeout = 5.0\n'
        )
        untrusted = cli.run("refresh", "--json", repo=origin)
        assert "ignored [notes] backend" in untrusted.stderr
        assert fake.requests == []

        trusted = cli.run("trust", repo=origin)
        assert "trusted" in trusted.stdout
        assert cli.json("status", repo=origin)["config"]["trusted"] is True
        done = cli.run("refresh", "--json", repo=origin)
        assert "ignored" not in done.stderr
        assert json.loads(done.stdout)["notes"]["anthropic"]["written"] > 0
        assert fake.message_requests and _ledger(origin) > 0
        seen = len(fake.requests)

        # a `git pull` (here: an edit) that changes the file needs trust again
        config.write_text(config.read_text() + "# changed upstream\n")
        (origin / "shop" / "cart.py").write_text("def cart():\n    return 2\n")
        again = cli.run("refresh", "--json", repo=origin)
        assert "ignored [notes] backend" in again.stderr
        assert "anthropic" not in json.loads(again.stdout)["notes"]
        assert len(fake.requests) == seen
        assert cli.json("status", repo=origin)["config"]["trusted"] is False

        cli.run("trust", repo=origin)
        assert cli.json("status", repo=origin)["config"]["trusted"] is True
        revoked = cli.json("trust", "--revoke", repo=origin)
        assert revoked["revoked"] is True
        assert cli.json("status", repo=origin)["config"]["trusted"] is False
    finally:
        fake.close()


def test_the_users_own_config_sets_any_key(make_repo: Callable[..., Path], cli: CLI) -> None:
    repo = make_repo("shop")
    user_config('[notes]\nbackend = "fake"\n[retrieve]\nbudget = 321\n')
    result = cli.json("refresh", repo=repo)
    assert result["notes"]["fake"]["written"] > 0
    # precedence: defaults < user < repo (allowed keys) < CLI flags
    (repo / ".sleepy" / "config.toml").write_text("[retrieve]\nbudget = 654\n")
    assert load_config(repo).retrieve.budget == 654
    assert load_config(repo).notes.backend == "fake"
    assert "fake" not in cli.json("refresh", "--backend", "static", repo=repo)["notes"]


def test_what_an_untrusted_repo_config_may_change(tmp_path: Path) -> None:
    (tmp_path / ".sleepy").mkdir()
    cfg = tmp_path / ".sleepy" / "config.toml"
    cfg.write_text(
        '[scan]\ndeny = ["*.secret"]\nexclude = ["gen/"]\nmax_file_bytes = 500\n'
        '[notes]\neffort = "brief"\ncommit = true\nbackend = "static"\n'
        "[retrieve]\nbudget = 99\n"
    )
    loaded = load(tmp_path)
    c = loaded.config
    assert c.scan.deny == (*DEFAULT_DENY, "*.secret")  # additions only
    assert c.scan.exclude == (*DEFAULT_EXCLUDE, "gen/")
    assert c.scan.max_file_bytes == 500  # lowering the size limit is harmless
    assert (c.notes.effort, c.notes.commit, c.retrieve.budget) == ("brief", True, 99)
    assert loaded.ignored == () and not loaded.trusted

    cfg.write_text("[scan]\ndeny = []\nmax_file_bytes = 50000000\n[budget]\ndaily_usd = 9.0\n")
    loaded = load(tmp_path)
    assert loaded.config.scan.deny == DEFAULT_DENY  # a repo never removes a deny entry
    assert loaded.config.scan.max_file_bytes == 1_000_000  # ... nor raises the limit
    assert loaded.config.budget.daily_usd == 0.0
    assert loaded.ignored == ("[scan] max_file_bytes", "[budget] daily_usd")

    trust.trust(tmp_path, cfg.read_bytes())  # trusted: every key, lists replace
    loaded = load(tmp_path)
    assert loaded.trusted and loaded.ignored == ()
    assert loaded.config.scan.deny == () and loaded.config.budget.daily_usd == 9.0


def test_an_untrusted_repo_config_cannot_undeny_raise_spending_or_break_commands(
    tmp_path: Path,
) -> None:
    from sleepy_repo.redact import DenyList

    (tmp_path / ".sleepy").mkdir()
    cfg = tmp_path / ".sleepy" / "config.toml"
    cfg.write_text(
        '[scan]\ndeny = ["!*", "!**/*", "*.secret"]\nexclude = ["!vendor/"]\n'
        '[notes]\neffort = "deep"\n[retrieve]\nbudget = 200000\n'
        '[anthropic]\nmax_tokens = "not a number"\n'  # a key it may not set, invalid too
    )
    loaded = load(tmp_path)  # no ConfigError: the invalid key is ignored, not fatal
    c = loaded.config
    deny = DenyList(c.scan.deny)
    for secret in (".env", "keys/server.pem", "id_rsa", "app/credentials.py"):
        assert deny.denied(secret), secret  # negations do not take entries out
    assert deny.denied("x.secret") and "!vendor/" not in c.scan.exclude
    assert c.retrieve.budget == 8000  # capped: `ask` may send the budget to a model
    assert c.notes.effort == "standard"  # a repository may only lower the effort
    assert "[anthropic] max_tokens" in loaded.ignored and "[notes] effort" in loaded.ignored
    assert any(i.startswith("[scan] deny !*") for i in loaded.ignored), loaded.ignored


def test_init_trusts_the_config_it_wrote(make_repo: Callable[..., Path], cli: CLI) -> None:
    repo = make_repo("shop")
    cli.run("init", repo=repo)
    assert cli.json("status", repo=repo)["config"]["trusted"] is True
    config = repo / ".sleepy" / "config.toml"
    config.write_text(config.read_text().replace('"static"', '"fake"'))
    status = cli.json("status", repo=repo)
    assert status["config"]["trusted"] is False and status["backend"] == "static"


def test_a_trusted_store_path_outside_the_repo_is_refused(
    make_repo: Callable[..., Path], cli: CLI, tmp_path: Path
) -> None:
    repo = make_repo("shop")
    trusted_config(repo, '[store]\npath = "../trusted_outside"\n')
    proc = cli.run("refresh", repo=repo, check=False)
    assert proc.returncode == 2 and "outside the repository" in proc.stderr, proc.stderr
    assert not (repo.parent / "trusted_outside").exists()
    # the user's own config may keep stores elsewhere (the user chose it)
    (repo / ".sleepy" / "config.toml").unlink()
    user_config(f'[store]\npath = "{tmp_path / "stores" / "shop"}"\n')
    cli.run("refresh", repo=repo)
    assert (tmp_path / "stores" / "shop" / "index.db").exists()


@pytest.mark.parametrize("link", [".sleepy", ".gitignore", ".sleepy/index.db"])
def test_nothing_is_written_through_a_symlink_out_of_the_repo(
    make_repo: Callable[..., Path], cli: CLI, tmp_path: Path, link: str
) -> None:
    repo = make_repo("shop")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target"
    if link == ".sleepy":
        target.mkdir()
    else:
        target.write_text("precious\n")
        (repo / ".gitignore").unlink(missing_ok=True)
    (repo / link).parent.mkdir(exist_ok=True)
    (repo / link).symlink_to(target)
    for args in (("init",), ("refresh",)) if link != ".gitignore" else (("init",),):
        proc = cli.run(*args, repo=repo, check=False)
        assert proc.returncode == 2 and "outside the repository" in proc.stderr, proc.stderr
    if link == ".sleepy":
        assert list(target.iterdir()) == []
    else:
        assert target.read_text() == "precious\n"


def test_the_record_and_user_config_follow_xdg(tmp_path: Path) -> None:
    from sleepy_repo.config import user_config_path

    home = Path(os.environ["HOME"])
    assert user_config_path() == home / ".config" / "sleepy-repo" / "config.toml"
    assert trust.trust_path() == home / ".local" / "share" / "sleepy-repo" / "trusted.json"
    trust.trust_path().parent.mkdir(parents=True, exist_ok=True)
    trust.trust_path().write_text("{not json")  # a damaged record trusts nothing ...
    assert not trust.is_trusted(tmp_path, b"x")
    trust.trust(tmp_path, b"x")  # ... and trusting again rewrites it
    assert trust.is_trusted(tmp_path, b"x") and not trust.is_trusted(tmp_path, b"y")
    assert json.loads(trust.trust_path().read_text())["version"] == 1
    assert list(trust.trust_path().parent.glob(".trusted-*")) == []
