"""Faults of the store's file and disk get the right message in every shell (issue 18):
a store damaged past its header, a full disk, a read-only store, a 0-byte ``index.db``, and
read commands run before any store exists. Through the installed CLI, an MCP client
session and the language server over stdio; never a traceback, never exit 3."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult
from reliability_rpc import Server

from sleepy_repo.store import NoteStore

from helpers import EXE, git, without_dac

REBUILD = "sleepy-repo init --rebuild"


def run(*args: str, repo: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    assert EXE
    proc = subprocess.run(
        [*prefix, EXE, *args, "--repo", str(repo)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    detail = f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode in (0, 2), detail
    assert "Traceback" not in proc.stderr, detail
    return proc


def error_of(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    return proc.stderr


async def mcp_call(repo: Path, tool: str, args: dict[str, object]) -> CallToolResult:
    assert EXE
    params = StdioServerParameters(command=EXE, args=["mcp", "--repo", str(repo)], cwd="/")
    async with Client(params, read_timeout_seconds=120) as client:
        result: CallToolResult = await client.call_tool(tool, args)
        return result


def mcp_text(repo: Path, tool: str, args: dict[str, object]) -> tuple[bool, str]:
    result = anyio.run(mcp_call, repo, tool, args)
    return bool(result.is_error), result.content[0].text  # type: ignore[union-attr]


def damage_tables(store: Path, *tables: str) -> None:
    """Overwrite the root pages of ``tables`` with garbage: the header and the schema are
    intact, so the store opens, and the first query of those tables finds the damage."""
    with closing(sqlite3.connect(store)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        roots = [
            conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (t,)).fetchone()[0]
            for t in tables
        ]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(store, "r+b") as f:
        for root in roots:
            f.seek((root - 1) * page_size)
            f.write(bytes([0x0D, 0xFF, 0xFF, 0xFF]) + os.urandom(page_size - 4))


def test_read_commands_never_create_a_store(make_repo) -> None:
    repo = make_repo("shop")
    db = repo / ".sleepy" / "index.db"
    for args in (("status",), ("context", "how is tax computed"), ("notes", "shop/tax.py")):
        assert "sleepy-repo refresh" in error_of(run(*args, repo=repo))
        assert not db.exists(), args
    is_error, text = mcp_text(repo, "context", {"question": "how is tax computed"})
    assert is_error and "sleepy-repo refresh" in text
    assert not db.exists()
    # a write command creates it, and then the reads work
    is_error, text = mcp_text(repo, "refresh", {})
    assert not is_error, text
    assert db.exists()
    assert run("context", "how is tax computed", repo=repo).returncode == 0


def test_a_0_byte_store_is_treated_as_absent(make_repo) -> None:
    repo = make_repo("shop")
    db = repo / ".sleepy" / "index.db"
    db.parent.mkdir(exist_ok=True)
    db.write_bytes(b"")  # what a kill during the first open leaves
    assert "sleepy-repo refresh" in error_of(run("status", repo=repo))
    assert run("refresh", repo=repo).returncode == 0
    assert db.stat().st_size > 0
    assert run("context", "how is tax computed", repo=repo).returncode == 0


def test_a_store_damaged_past_its_header_says_rebuild_in_every_shell(
    make_repo, tmp_path: Path
) -> None:
    repo = make_repo("shop")
    assert run("refresh", repo=repo).returncode == 0
    db = repo / ".sleepy" / "index.db"
    damage_tables(db, "modules", "chunks", "note_items")
    for args in (("status",), ("context", "how is tax computed")):
        assert REBUILD in error_of(run(*args, repo=repo)), args
    is_error, text = mcp_text(repo, "status", {})
    assert is_error and REBUILD in text and "Traceback" not in text, text
    srv = Server(tmp_path / "lsp.log")
    try:
        srv.initialize(repo)
        uri = (repo / "shop" / "tax.py").as_uri()
        reply = srv.request("sleepy/context", {"question": "how is tax computed", "uri": uri})
        error = reply.get("error")
        assert error is not None, reply
        assert REBUILD in error["message"], error
        assert "Traceback" not in str(error.get("data")), error
    finally:
        srv.close()
    # the advice works
    assert run("init", "--rebuild", repo=repo).returncode == 0
    assert run("refresh", repo=repo).returncode == 0
    assert run("context", "how is tax computed", repo=repo).returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 16 MB tmpfs (root with CAP_SYS_ADMIN, as on CI); skipped elsewhere, never in CI."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount a small tmpfs: {proc.stderr!r}")
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_says_disk_full_and_leaves_the_store_intact(make_repo, small_disk) -> None:
    repo = small_disk / "shop"
    shutil.copytree(make_repo("shop"), repo, symlinks=True)
    assert run("refresh", repo=repo).returncode == 0
    for i in range(30):  # 1,800 new functions: more than the disk has left
        (repo / "shop" / f"gen{i}.py").write_text(
            "".join(
                f'def f{i}_{j}(x):\n    """Doc {j}."""\n    return x + {j}\n\n' for j in range(60)
            )
        )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "generated")
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:
        err = error_of(run("refresh", repo=repo))
        assert f"disk full at {repo / '.sleepy'}" in err, err
    finally:
        filler.unlink()
    assert NoteStore(repo / ".sleepy").integrity_errors() == []
    assert run("refresh", repo=repo).returncode == 0  # room again: it carries on


def test_a_read_only_store_answers_reads_and_refuses_writes(make_repo) -> None:
    repo = make_repo("shop")
    assert run("refresh", repo=repo).returncode == 0
    prefix = without_dac()
    store = repo / ".sleepy"
    db = store / "index.db"
    assert not Path(f"{db}-wal").exists()  # the last close folded the log in
    store.chmod(0o555)
    db.chmod(0o444)
    try:
        assert run("status", repo=repo, prefix=prefix).returncode == 0
        assert run("notes", "shop/tax.py", repo=repo, prefix=prefix).returncode == 0
        ctx = run("context", "how is tax computed", "--json", repo=repo, prefix=prefix)
        assert ctx.returncode == 0 and "shop/tax.py" in ctx.stdout
        (repo / "shop" / "tax.py").write_text("def vat(x):\n    return x * 0.2\n")
        err = error_of(run("refresh", repo=repo, prefix=prefix))
        assert "is read-only" in err and "make" in err, err
    finally:
        store.chmod(0o755)
        db.chmod(0o644)
    assert run("refresh", repo=repo).returncode == 0


def test_a_damaged_full_text_index_names_the_damage_and_says_rebuild(make_repo) -> None:
    repo = make_repo("shop")
    assert run("refresh", repo=repo).returncode == 0
    damage_tables(repo / ".sleepy" / "index.db", "items_fts_data", "chunks_fts_data")
    err = error_of(run("context", "how is tax computed", repo=repo))
    assert REBUILD in err and "is damaged (" in err, err
    assert "***" not in err, err  # quick_check's header line is not the finding
