"""The language server, end to end: the installed ``sleepy-repo lsp`` as a subprocess,
driven over stdio by pytest-lsp's client on real fixture repos (built with git history and
refreshed through the CLI)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import register_lsp_features

from sleepy_repo.lsp_server import plain_converter

from helpers import CLI, EXE, user_config

COMMANDS = ["sleepy.ask", "sleepy.notes", "sleepy.refresh", "sleepy.status"]
QUESTION = "How are coupon discounts applied before VAT?"


def make_client() -> LanguageClient:
    """pytest-lsp's test client, with custom responses (``sleepy/context``) as plain JSON."""
    client = LanguageClient(converter_factory=plain_converter)
    register_lsp_features(client)
    return client


CONFIG = ClientServerConfig(
    server_command=[EXE or "sleepy-repo", "lsp"], client_factory=make_client
)


# -- fixtures and helpers ------------------------------------------------------------------
@pytest.fixture
def shop(make_repo: Callable[..., Path], cli: CLI) -> Path:
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    return repo


def init_params(*folders: Path, options: Any = None, vscode: bool = True) -> types.InitializeParams:
    return types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code")
        if vscode
        else types.ClientCapabilities(),
        workspace_folders=[types.WorkspaceFolder(uri=f.as_uri(), name=f.name) for f in folders],
        initialization_options=options,
    )


@pytest_lsp.fixture(config=CONFIG)
async def client(lsp_client: LanguageClient, shop: Path) -> AsyncIterator[None]:
    await lsp_client.initialize_session(init_params(shop))
    yield
    await lsp_client.shutdown_session()


@asynccontextmanager
async def session(*folders: Path, options: Any = None) -> AsyncIterator[LanguageClient]:
    """A client connected to a fresh server (for tests that need their own setup)."""
    lsp = await CONFIG.start()
    assert isinstance(lsp, LanguageClient)
    done = False
    try:
        result = await lsp.initialize_session(init_params(*folders, options=options))
        assert result.server_info is not None and result.server_info.name == "sleepy-repo"
        yield lsp
        await asyncio.wait_for(lsp.shutdown_session(), 60)
        done = True
    finally:
        if not done and lsp._server is not None and lsp._server.returncode is None:
            lsp._server.kill()  # a failed test must not wait for the server forever
        await lsp.stop()


def uri(repo: Path, path: str) -> str:
    return (repo / path).as_uri()


async def hover(lsp: LanguageClient, repo: Path, path: str, line: int) -> str | None:
    """Hover at 1-based ``line``: the markdown, or None."""
    result = await lsp.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri(repo, path)),
            position=types.Position(line=line - 1, character=4),
        )
    )
    if result is None:
        return None
    assert isinstance(result.contents, types.MarkupContent)
    assert result.contents.kind == types.MarkupKind.Markdown
    return result.contents.value


async def command(lsp: LanguageClient, name: str, *args: Any) -> Any:
    return await lsp.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=list(args))
    )


async def request(lsp: LanguageClient, method: str, params: Any) -> Any:
    return await lsp.protocol.send_request_async(method, params)


async def raw_request(lsp: LanguageClient, method: str, params: Any) -> Any:
    """A request sent exactly as given (the client would type-check known methods)."""
    msg_id = f"raw-{uuid.uuid4().hex}"
    future: Future[Any] = Future()
    lsp.protocol._request_futures[msg_id] = future
    lsp.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wait_for(asyncio.wrap_future(future), 30)


def raw_notify(lsp: LanguageClient, method: str, params: Any) -> None:
    lsp.protocol._send_data({"jsonrpc": "2.0", "method": method, "params": params})


def db(repo: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(repo / ".sleepy" / "index.db")) as conn:
        return conn.execute(sql, args).fetchall()


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy (store writes happen off the
    server's event loop)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def cli_json(cli: CLI, repo: Path, *args: str) -> Any:
    return cli.json(*args, repo=repo)


# -- initialize ----------------------------------------------------------------------------
async def test_initialize_advertises_features(make_repo: Callable[..., Path]) -> None:
    repo = make_repo("shop")
    lsp = await CONFIG.start()
    assert isinstance(lsp, LanguageClient)
    try:
        result = await lsp.initialize_session(init_params(repo))
        assert result.server_info is not None and result.server_info.name == "sleepy-repo"
        caps = result.capabilities
        assert caps.hover_provider
        assert caps.code_lens_provider is not None
        assert caps.execute_command_provider is not None
        assert sorted(caps.execute_command_provider.commands) == COMMANDS
        sync = caps.text_document_sync
        assert isinstance(sync, types.TextDocumentSyncOptions)
        assert sync.open_close and sync.save
        await lsp.shutdown_session()
    finally:
        await lsp.stop()


# -- hover ---------------------------------------------------------------------------------
async def test_hover_on_a_symbol_shows_its_notes_with_citations(
    client: LanguageClient, shop: Path
) -> None:
    # shop/cart.py:44 is `def add(...)` of class Cart (lines 44-54)
    text = await hover(client, shop, "shop/cart.py", 44)
    assert text is not None
    assert "**Cart.add** (method)" in text
    assert "def add(self, product: Product, quantity: int = 1) -> CartLine" in text
    link = f"[shop/cart.py:44-54]({uri(shop, 'shop/cart.py')}#L44)"
    assert link in text
    assert "stale" not in text and "generated" not in text  # static notes, fresh
    # inside the body of a method: still that method
    assert "**Cart.add**" in (await hover(client, shop, "shop/cart.py", 50) or "")
    # the class line: the class's notes (definition and callers)
    cls = await hover(client, shop, "shop/cart.py", 32) or ""
    assert "**Cart** (class)" in cls and "Q: Where is Cart defined?" in cls
    assert "shop/api.py" in cls  # a caller, cited

    # each hover that served notes is a query hit
    def hover_hits() -> list[tuple[Any, ...]]:
        return db(shop, "SELECT query, paths_json FROM hits WHERE source = 'hover' ORDER BY id")

    hits = await eventually(lambda: len(hover_hits()) == 3 and hover_hits())
    assert ("shop/cart.py:Cart.add", '["shop/cart.py"]') in hits
    assert len(hits) == 3


async def test_hover_on_the_module_header_shows_summary_and_top_qa(
    client: LanguageClient, shop: Path
) -> None:
    first = await hover(client, shop, "shop/cart.py", 1)
    assert first is not None
    assert "**shop/cart.py** (module)" in first
    assert "Shopping carts: line items, quantity limits and coupon handling" in first
    assert "Q: What does shop/cart.py export?" in first
    assert f"[shop/cart.py:1-12]({uri(shop, 'shop/cart.py')}#L1)" in first
    # an import line (`from .models import Product`) shows the same
    assert await hover(client, shop, "shop/cart.py", 10) == first
    # module-level code that is neither header nor symbol: nothing
    assert await hover(client, shop, "shop/cart.py", 14) is None


async def test_hover_marks_stale_and_generated_notes(
    make_repo: Callable[..., Path], cli: CLI
) -> None:
    repo = make_repo("shop")
    cli.run("refresh", "--backend", "fake", repo=repo)
    cart = repo / "shop" / "cart.py"
    text = cart.read_text()
    cart.write_text(
        text.replace("return len(self.lines)", "return len(self.lines)  # n", 1).replace(
            "self.coupon = coupon", "self.coupon = coupon  # one coupon", 1
        )
    )
    cli.run("refresh", repo=repo)  # static only: the fake notes are carried over
    async with session(repo) as lsp:
        cls = await hover(lsp, repo, "shop/cart.py", 32)
        assert cls is not None
        assert "*(generated by fake fake-1; may be wrong)*" in cls or "*(generated by fake" in cls
        assert "⚠ stale: the cited code changed since this note was written" in cls
        # a change on disk that is not indexed yet is said plainly
        cart.write_text(cart.read_text() + "\n# edited\n")
        again = await hover(lsp, repo, "shop/cart.py", 32) or ""
        assert "⚠ the file changed since it was indexed" in again


async def test_unknown_documents_get_no_hover_and_no_lenses(
    client: LanguageClient, shop: Path
) -> None:
    for path in ("README.md", "shop/never_created.py", "shop/"):
        assert await hover(client, shop, path, 1) is None
        lenses = await client.text_document_code_lens_async(
            types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri(shop, path)))
        )
        assert lenses is not None and len(lenses) == 0
    assert client.messages == []  # an index exists: nothing to complain about


# -- code lens -----------------------------------------------------------------------------
async def test_code_lenses_on_the_module_and_each_class(client: LanguageClient, shop: Path) -> None:
    lenses = await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri(shop, "shop/cart.py")))
    )
    assert lenses is not None
    by_line = {lens.range.start.line: lens.command for lens in lenses}
    assert sorted(by_line) == [0, 16, 21, 31]  # module, CartError, CartLine, Cart
    assert all(c is not None and c.command == "sleepy.notes" for c in by_line.values())
    assert by_line[0].title == "notes: fresh · 7 Q&A"  # type: ignore[union-attr]
    assert by_line[31].title == "notes: fresh · 2 Q&A"  # type: ignore[union-attr]

    # the lens's command opens the notes (all, or the class's)
    module = await command(client, "sleepy.notes", *by_line[0].arguments)  # type: ignore[union-attr]
    assert module["path"] == "shop/cart.py"
    assert module["notes"][0]["items"] == cli_json_notes(shop)["notes"][0]["items"]
    cart = await command(client, "sleepy.notes", *by_line[31].arguments)  # type: ignore[union-attr]
    symbols = {i["symbol"] for n in cart["notes"] for i in n["items"]}
    assert "Cart" in symbols and "Cart.add" in symbols and "CartLine" not in symbols


def cli_json_notes(repo: Path) -> Any:
    assert EXE
    return CLI(EXE).json("notes", "shop/cart.py", repo=repo)


# -- commands and sleepy/context -----------------------------------------------------------
async def test_every_command(client: LanguageClient, shop: Path, cli: CLI) -> None:
    status = await command(client, "sleepy.status")
    assert status["schema_version"] == 1
    assert status["modules"]["indexed"] == 17 and status["modules"]["fresh"] == 17

    answered = await command(client, "sleepy.ask", QUESTION, 500)
    assert answered["answer"] is None and "no answering model" in answered["message"].lower()
    items = answered["context"]["items"]
    assert items and all(i["citations"] for i in items if i["kind"] != "code")
    assert "shop/pricing.py" in [i["path"] for i in items][:3]
    assert answered == cli_json(cli, shop, "ask", QUESTION, "--budget", "500")
    # one object works as well as positional arguments
    same = await command(client, "sleepy.ask", {"question": QUESTION, "budget": 500})
    assert same == answered

    refreshed = await command(client, "sleepy.refresh", {"uri": shop.as_uri()})
    assert refreshed["modules"] == 17 and refreshed["parsed"] == 0

    hits = db(shop, "SELECT source, count(*) FROM hits GROUP BY source")
    assert dict(hits) == {"lsp": 2, "cli": 1}


async def test_sleepy_context_is_the_cli_json(client: LanguageClient, shop: Path, cli: CLI) -> None:
    ctx = await request(client, "sleepy/context", {"question": QUESTION, "budget": 600})
    assert ctx == cli_json(cli, shop, "context", QUESTION, "--budget", "600")
    assert ctx["budget"] == 600 and 0 < ctx["tokens"] <= 600
    assert db(shop, "SELECT count(*) FROM hits WHERE source = 'lsp'") == [(1,)]
    # the budget defaults to the repo's config (1500)
    assert (await request(client, "sleepy/context", {"question": QUESTION}))["budget"] == 1500


async def test_refresh_reports_progress(client: LanguageClient, shop: Path) -> None:
    (shop / "shop" / "tax.py").write_text(
        (shop / "shop" / "tax.py").read_text() + "\n\ndef added() -> int:\n    return 1\n"
    )
    progress = client.protocol.wait_for_notification_async(types.PROGRESS)  # before triggering
    result = await command(client, "sleepy.refresh")
    await asyncio.wait_for(progress, 30)
    assert result["parsed"] == 1 and result["notes"]["static"]["written"] >= 1
    assert len(client.progress_reports) == 1
    reports = next(iter(client.progress_reports.values()))
    assert isinstance(reports[0], types.WorkDoneProgressBegin)
    assert reports[0].title == "sleepy-repo refresh"
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    assert "17 modules, 1 parsed" in (reports[-1].message or "")
    middle = [r.message for r in reports[1:-1] if isinstance(r, types.WorkDoneProgressReport)]
    assert any(m and m.startswith("index ") for m in middle), middle
    assert any(m and m.startswith("notes:static ") for m in middle), middle
    # the new function is served at once
    text = await hover(
        client, shop, "shop/tax.py", len((shop / "shop/tax.py").read_text().splitlines())
    )
    assert text is not None and "**added** (function)" in text


# -- refusals and errors -------------------------------------------------------------------
async def test_uris_outside_the_workspace_are_refused(
    client: LanguageClient, shop: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET = 1\n")
    (shop / "link.py").symlink_to(outside)
    bad = [
        "file:///etc/passwd",
        shop.as_uri() + "/../../etc/hosts",
        shop.as_uri() + "/shop/%2e%2e/%2e%2e/%2e%2e/etc/hosts",
        uri(shop, "link.py"),
        "untitled:Untitled-1",
        "https://example.com/shop/cart.py",
    ]
    for u in bad:
        with pytest.raises(JsonRpcException) as exc:
            await client.text_document_hover_async(
                types.HoverParams(types.TextDocumentIdentifier(u), types.Position(0, 0))
            )
        assert exc.value.code == -32602, u
        assert "outside the workspace" in exc.value.message or "only file:" in exc.value.message
        with pytest.raises(JsonRpcException):
            await client.text_document_code_lens_async(
                types.CodeLensParams(types.TextDocumentIdentifier(u))
            )
    with pytest.raises(JsonRpcException, match="outside the workspace"):
        await command(client, "sleepy.notes", "file:///etc/passwd")
    with pytest.raises(JsonRpcException, match="outside the workspace"):
        await request(client, "sleepy/context", {"question": "x", "uri": "file:///etc"})
    # still serving
    assert await hover(client, shop, "shop/cart.py", 44)


async def test_malformed_params_get_error_responses(client: LanguageClient, shop: Path) -> None:
    malformed: list[tuple[str, Any]] = [
        ("textDocument/hover", {"textDocument": {}}),
        ("textDocument/hover", {"textDocument": {"uri": uri(shop, "shop/cart.py")}}),
        ("textDocument/codeLens", {"textDocument": 5}),
        ("textDocument/hover", None),
        ("sleepy/context", None),
        ("sleepy/context", ["no", "object"]),
        ("sleepy/context", {"question": 42}),
        ("sleepy/context", {"question": QUESTION, "budget": "many"}),
        ("sleepy/context", {"question": "   "}),
        ("sleepy/context", {"question": QUESTION, "budget": 0}),
        ("sleepy/context", {"question": "x" * 2001}),
        ("workspace/executeCommand", {"command": "sleepy.nope"}),
        ("workspace/executeCommand", {"command": "sleepy.ask", "arguments": [123]}),
        ("workspace/executeCommand", {"command": "sleepy.ask", "arguments": []}),
        ("workspace/executeCommand", {"command": "sleepy.ask", "arguments": ["q", 1, "u", 4]}),
        ("workspace/executeCommand", {"command": "sleepy.refresh", "arguments": [{"paths": 3}]}),
        ("workspace/executeCommand", {"command": "sleepy.notes", "arguments": []}),
        ("sleepy/nope", {}),
    ]
    for method, params in malformed:
        with pytest.raises(JsonRpcException) as exc:
            await raw_request(client, method, params)
        assert exc.value.code in (-32602, -32601, -32803), (method, params, exc.value)
    # notifications with bad params are dropped, not fatal
    raw_notify(client, "textDocument/didOpen", {"textDocument": {"uri": 3}})
    raw_notify(client, "workspace/didChangeConfiguration", {"settings": {"budget": "x"}})
    # the server is still up and answers
    assert (await command(client, "sleepy.status"))["modules"]["indexed"] == 17
    assert await hover(client, shop, "shop/cart.py", 44)


async def test_no_index_yet_and_settings(make_repo: Callable[..., Path]) -> None:
    repo = make_repo("shop")
    options = {"backend": "bogus", "idleSeconds": 30, "budget": 700}
    async with session(repo, options=options) as lsp:
        shown = lsp.protocol.wait_for_notification_async(types.WINDOW_SHOW_MESSAGE)
        assert await hover(lsp, repo, "shop/cart.py", 44) is None
        await asyncio.wait_for(shown, 30)
        messages = [m.message for m in lsp.messages]
        assert any("ignored setting: backend must be one of" in m for m in messages), messages
        assert any("has no index yet" in m for m in messages), messages
        # the message is shown once, not on every hover
        assert await hover(lsp, repo, "shop/cart.py", 1) is None
        assert sum("no index yet" in m.message for m in lsp.messages) == 1
        with pytest.raises(JsonRpcException, match="no index yet"):
            await request(lsp, "sleepy/context", {"question": QUESTION})

        await command(lsp, "sleepy.refresh")
        # the budget from initializationOptions is the default ...
        assert (await request(lsp, "sleepy/context", {"question": QUESTION}))["budget"] == 700
        # ... and didChangeConfiguration changes it
        lsp.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"sleepyRepo": {"budget": 300}})
        )
        assert (await request(lsp, "sleepy/context", {"question": QUESTION}))["budget"] == 300
        assert (await request(lsp, "sleepy/context", {"question": QUESTION, "budget": 50}))[
            "budget"
        ] == 50


async def test_a_failed_refresh_is_shown(make_repo: Callable[..., Path]) -> None:
    repo = make_repo("shop")
    user_config('[notes]\nbackend = "anthropic"\n')  # editor settings cannot turn it on
    async with session(repo, options={"sleepy": {"backend": "anthropic"}}) as lsp:
        with pytest.raises(JsonRpcException, match="ANTHROPIC_API_KEY"):
            await command(lsp, "sleepy.refresh")

        def refresh_failed() -> list[types.ShowMessageParams]:
            return [m for m in lsp.messages if "refresh failed" in m.message]

        shown = await eventually(refresh_failed)
        assert shown and shown[0].type == types.MessageType.Error
        assert "ANTHROPIC_API_KEY" in shown[0].message
        # no raw "Error in server" for anything else (e.g. sleep-time work that cannot start)
        assert not [m for m in lsp.messages if m.message.startswith("Error in server")]
        # a progress bar that was begun is ended
        for reports in lsp.progress_reports.values():
            assert isinstance(reports[-1], types.WorkDoneProgressEnd)


# -- activity ------------------------------------------------------------------------------
async def test_document_activity_is_recorded_but_never_its_content(
    make_repo: Callable[..., Path], cli: CLI
) -> None:
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    cart = uri(repo, "shop/cart.py")
    unsaved = "UNSAVED_BUFFER_TEXT_8f3a"
    async with session(repo) as lsp:
        lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                types.TextDocumentItem(cart, "python", 1, (repo / "shop/cart.py").read_text())
            )
        )
        assert await eventually(lambda: db(repo, "SELECT path FROM open_files")) == [
            ("shop/cart.py",)
        ]
        lsp.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(version=2, uri=cart),
                [types.TextDocumentContentChangeWholeDocument(text=f"x = '{unsaved}'\n")],
            )
        )
        rows = await eventually(
            lambda: db(repo, "SELECT source, kind, path FROM activity WHERE kind = 'change'")
        )
        assert len(rows) == 1 and rows[0][0].startswith("lsp:") and rows[0][2] == "shop/cart.py"
        # hovers are not activity, and serve the file on disk, not the buffer
        before = db(repo, "SELECT ts, kind FROM activity")
        text = await hover(lsp, repo, "shop/cart.py", 44)
        assert text and unsaved not in text
        assert db(repo, "SELECT ts, kind FROM activity") == before
        ctx = await request(lsp, "sleepy/context", {"question": "cart quantity coupon"})
        assert "shop/cart.py" in json.dumps(ctx["items"])
        assert unsaved not in json.dumps(ctx["items"])

        lsp.text_document_did_save(
            types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(cart))
        )
        assert await eventually(lambda: db(repo, "SELECT kind FROM activity") == [("save",)])
        lsp.text_document_did_close(
            types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(cart))
        )
        assert await eventually(lambda: db(repo, "SELECT path FROM open_files") == [])
        lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(types.TextDocumentItem(cart, "python", 3, "y = 1\n"))
        )
        assert await eventually(lambda: db(repo, "SELECT path FROM open_files"))
        # outside the workspace: nothing recorded, no crash
        lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                types.TextDocumentItem("file:///etc/hosts", "text", 1, "")
            )
        )
        assert (await command(lsp, "sleepy.status"))["modules"]["indexed"] == 17
    # shutdown: this server's files are no longer open
    assert db(repo, "SELECT path FROM open_files") == []
    assert db(repo, "SELECT path FROM activity") == [("shop/cart.py",)]
    for store_file in (repo / ".sleepy").glob("index.db*"):
        assert unsaved.encode() not in store_file.read_bytes(), store_file


async def test_context_serves_the_code_a_refresh_in_another_process_wrote(
    make_repo: Callable[..., Path], cli: CLI
) -> None:
    """The server keeps modules' code in memory between questions; a `sleepy-repo refresh`
    run in a terminal beside the editor rewrites a module, and the same server serves the
    new code at once."""
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    cart = repo / "shop" / "cart.py"
    old = "Attach a coupon; it is validated again when the cart is priced."
    new = old + " Since REFRESHED_5c1e."
    assert cart.read_text().count(old) == 1

    def code(ctx: Any) -> str:
        return "\n".join(i["text"] for i in ctx["items"] if i["kind"] == "code")

    question = {"question": "cart quantity coupon", "budget": 600}
    async with session(repo) as lsp:
        assert old in code(await request(lsp, "sleepy/context", question))
        assert old in code(await request(lsp, "sleepy/context", question))  # from memory
        cart.write_text(cart.read_text().replace(old, new))
        cli.run("refresh", repo=repo)
        served = code(await request(lsp, "sleepy/context", question))
        assert new in served and f'{old}"""' not in served  # the old docstring is gone
        assert served == code(
            cli_json(cli, repo, "context", "cart quantity coupon", "--budget", "600")
        )


# -- workspace folders ---------------------------------------------------------------------
async def test_each_workspace_folder_has_its_own_repo(
    make_repo: Callable[..., Path], cli: CLI
) -> None:
    shop, relay = make_repo("shop"), make_repo("relay")
    for r in (shop, relay):
        cli.run("refresh", repo=r)
    async with session(shop, relay) as lsp:
        assert "**Cart.add**" in (await hover(lsp, shop, "shop/cart.py", 44) or "")
        lenses = await lsp.text_document_code_lens_async(
            types.CodeLensParams(types.TextDocumentIdentifier(uri(relay, "main.go")))
        )
        assert lenses and lenses[0].range.start.line == 0
        relay_status = await command(lsp, "sleepy.status", {"uri": uri(relay, "main.go")})
        assert relay_status["repo"] == str(relay)
        assert (await command(lsp, "sleepy.status"))["repo"] == str(shop)  # the first folder

        lsp.workspace_did_change_workspace_folders(
            types.DidChangeWorkspaceFoldersParams(
                types.WorkspaceFoldersChangeEvent(
                    added=[], removed=[types.WorkspaceFolder(relay.as_uri(), relay.name)]
                )
            )
        )
        with pytest.raises(JsonRpcException, match="outside the workspace"):
            await hover(lsp, relay, "main.go", 1)
        assert await hover(lsp, shop, "shop/cart.py", 44)
