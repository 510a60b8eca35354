"""The sleep scheduler inside the language server: the real ``sleepy-repo lsp`` over stdio
(pytest-lsp), a fixture repo configured with the ``fake`` backend, and the ledger as the
witness of every model call."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from lsp_server_test import command, session, uri
from lsprotocol import types

from helpers import CLI, EXE, git, trusted_config


def _q(root: Path, sql: str) -> int:
    with closing(sqlite3.connect(root / ".sleepy" / "index.db", timeout=30)) as conn:
        return conn.execute(sql).fetchone()[0]


def _calls(root: Path) -> int:
    return _q(root, "SELECT count(*) FROM ledger WHERE backend = 'fake'")


def _modules(root: Path) -> int:
    return _q(root, "SELECT count(*) FROM modules WHERE status = 'indexed'")


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def shop(make_repo: Callable[..., Path], cli: CLI) -> Path:
    root = make_repo("shop")
    cli.run("refresh", "--backend", "static", repo=root)
    trusted_config(root, '[notes]\nbackend = "fake"\n')
    return root


def _open(lsp: object, root: Path, path: str) -> None:
    lsp.text_document_did_open(  # type: ignore[attr-defined]
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri(root, path),
                language_id="python",
                version=1,
                text=(root / path).read_text(),
            )
        )
    )


def _type(lsp: object, root: Path, path: str, version: int) -> None:
    lsp.text_document_did_change(  # type: ignore[attr-defined]
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(
                uri=uri(root, path), version=version
            ),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=f"# v{version}\n")],
        )
    )


async def test_the_server_writes_model_notes_only_while_idle(shop: Path) -> None:
    async with session(shop, options={"idleSeconds": 1.0}) as lsp:
        _open(lsp, shop, "shop/cart.py")
        # the developer types for 4 s: no model call
        for v in range(2, 22):
            _type(lsp, shop, "shop/cart.py", v)
            await asyncio.sleep(0.2)
        assert _calls(shop) == 0
        # then stops: the server's sleeper notes every module, the open file among the first
        await _until(lambda: _calls(shop) >= _modules(shop), 120, "model notes while idle")
        with closing(sqlite3.connect(shop / ".sleepy" / "index.db", timeout=30)) as conn:
            order = [
                r[0]
                for r in conn.execute("SELECT path FROM ledger WHERE backend = 'fake' ORDER BY id")
            ]
        status = await command(lsp, "sleepy.status")
        assert status["sleeper"]["running"] is True
        assert status["sleeper"]["pid"] == lsp._server.pid  # type: ignore[union-attr]
    assert "shop/cart.py" in order[:3], order  # open in the editor: among the first


async def test_save_refreshes_without_a_watcher(shop: Path) -> None:
    async with session(shop, options={"idleSeconds": 30}) as lsp:
        _open(lsp, shop, "shop/tax.py")
        tax = shop / "shop" / "tax.py"
        tax.write_text(tax.read_text() + "\n\ndef surtax(x):\n    return x\n")
        lsp.text_document_did_save(
            types.DidSaveTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=uri(shop, "shop/tax.py"))
            )
        )
        await _until(
            lambda: _q(shop, "SELECT count(*) FROM symbols WHERE name = 'surtax'") == 1,
            30,
            "the saved file's symbols",
        )
        assert _calls(shop) == 0  # not idle yet: no model work


async def test_a_watch_daemon_keeps_the_sleeping(shop: Path) -> None:
    log = shop.parent / "watch.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [EXE, "watch", "--repo", str(shop)],
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env={**os.environ},
        )
    try:
        deadline = time.monotonic() + 60
        while "watching" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        async with session(shop, options={"idleSeconds": 0.5}) as lsp:
            status = await command(lsp, "sleepy.status")
            assert status["sleeper"]["pid"] == proc.pid  # the daemon sleeps, not the server
            _open(lsp, shop, "shop/cart.py")
            await _until(lambda: _calls(shop) >= _modules(shop), 120, "the daemon's notes")
            # the server still answers
            hover = await lsp.text_document_hover_async(
                types.HoverParams(
                    text_document=types.TextDocumentIdentifier(uri=uri(shop, "shop/cart.py")),
                    position=types.Position(line=0, character=0),
                )
            )
            assert hover is not None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert git(shop, "status", "--porcelain", "--", "shop") == ""
