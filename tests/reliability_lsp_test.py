"""The language server under hostile input, over raw stdio JSON-RPC (``reliability_rpc``):

* hypothesis fuzzing of request and notification parameters (hover, codeLens,
  executeCommand with ``sleepy.*`` commands and wrong argument types, ``sleepy/context``
  with odd questions and budgets, didOpen/didChange/didSave/didClose with odd URIs), all
  against one server process: every request gets a result or an error response that is not
  an internal error, and the server keeps answering;
* path safety: URIs and paths that escape the workspace (``..``, absolute, a symlink
  pointing outside, ``file:`` of another host, other schemes) are refused by the LSP, and
  the symlink cases by MCP and the CLI too.

``SLEEPY_SOAK=1`` runs 10 times the examples.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from reliability_rpc import Server, text_document

from helpers import CLI, EXE, load_builder

SCALE = 10 if os.environ.get("SLEEPY_SOAK") == "1" else 1
SECRET = "OUTSIDE-THE-WORKSPACE-7d1c"
# a failed request is one of these; -32603 (internal error) means a handler crashed
EXPECTED_ERRORS = {-32602, -32601, -32600, -32803}


def fuzz(n: int) -> settings:
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


def _db(repo: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(repo / ".sleepy" / "index.db", timeout=30)) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """An indexed shop repo with a symlink to a directory and a file outside it; and the
    outside directory."""
    assert EXE
    base = tmp_path_factory.mktemp("lsp-rel")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text(f'def leak():\n    return "{SECRET}"\n')
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "HOME": str(home),
            "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "T",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "T",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }.items():
            mp.setenv(k, v)
        repo = Path(load_builder().build_repo("shop", base / "shop"))
        (repo / "linkdir").symlink_to(outside, target_is_directory=True)
        (repo / "shop" / "linked.py").symlink_to(outside / "secret.py")
        CLI(EXE).run("refresh", repo=repo)
        yield repo, outside


@pytest.fixture(scope="module")
def server(
    workspace: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    repo, _ = workspace
    srv = Server(tmp_path_factory.mktemp("lsp-log") / "lsp.log")
    srv.initialize(repo)
    yield srv
    assert srv.close() == 0
    assert srv.junk == []
    assert _unexpected_exceptions(srv.log.read_text(errors="replace")) == []


def _unexpected_exceptions(log: str) -> list[str]:
    """Exceptions the server logged that are not refusals (pygls logs a traceback for every
    error response and every message that does not deserialize; those are expected here)."""
    out = []
    for line in log.splitlines():
        if line.startswith("ERROR sleepy_repo") or (
            re.match(r"^[\w.]+(Error|Exception)\w*: ", line)
            and not line.startswith("pygls.exceptions.JsonRpc")
        ):
            out.append(line)
    return out


def _ok(reply: dict[str, Any], what: Any) -> None:
    if "error" in reply:
        code = reply["error"].get("code")
        assert code in EXPECTED_ERRORS, (what, reply)
        assert reply["error"].get("message"), (what, reply)
    else:
        assert "result" in reply, (what, reply)


def _alive(srv: Server, repo: Path) -> None:
    reply = srv.request(
        "textDocument/hover",
        {
            "textDocument": {"uri": (repo / "shop" / "cart.py").as_uri()},
            "position": {"line": 43, "character": 4},
        },
    )
    assert "Cart.add" in reply["result"]["contents"]["value"], reply


# -- strategies ----------------------------------------------------------------------------
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def uris(repo: Path) -> st.SearchStrategy[Any]:
    inside = [(repo / p).as_uri() for p in ("shop/cart.py", "shop/tax.py", "README.md", "nope.py")]
    odd = [
        "",
        "file:",
        "file://",
        "file:///",
        "file:///etc/passwd",
        "file://otherhost" + str(repo / "shop" / "cart.py"),
        repo.as_uri() + "/../../etc/hosts",
        repo.as_uri() + "/shop/%2e%2e/%2e%2e/%2e%2e/etc/hosts",
        repo.as_uri() + "/shop/cart.py%00.txt",
        repo.as_uri() + "/linkdir/secret.py",
        repo.as_uri() + "/shop/linked.py",
        "file:shop/cart.py",
        "untitled:Untitled-1",
        "git:/x/shop/cart.py?%7B%7D",
        "vscode-notebook-cell:/x.ipynb#W0",
        "https://example.com/shop/cart.py",
        "data:text/plain,hello",
        "\udcff",
        "file:///" + "a/" * 2000,
    ]
    return st.one_of(st.sampled_from(inside + odd), json_values, st.text(max_size=40))


def positions() -> st.SearchStrategy[Any]:
    coord = st.one_of(st.integers(-5, 400), st.integers(-(2**40), 2**40), json_scalars)
    return st.one_of(st.fixed_dictionaries({"line": coord, "character": coord}), json_values)


def maybe_drop(d: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A dict of these fields, some of them missing; sometimes not a dict at all."""
    return st.one_of(
        st.fixed_dictionaries({}, optional=d),
        st.fixed_dictionaries(d),
        json_values,
    )


def requests(repo: Path) -> st.SearchStrategy[tuple[str, Any]]:
    doc = st.one_of(st.fixed_dictionaries({"uri": uris(repo)}), json_values)
    budgets = st.one_of(
        st.none(),
        st.integers(-10, 10),
        st.integers(1, 5000),
        st.integers(2**31, 2**70),
        st.just(-(2**63)),
        json_scalars,
    )
    questions = st.one_of(
        st.text(max_size=60),
        st.sampled_from(["cart coupon VAT", "   ", "x" * 2001, "\x00", "Cart.add"]),
        json_values,
    )
    ctx_args = maybe_drop({"question": questions, "budget": budgets, "uri": uris(repo)})
    command_args = st.one_of(
        st.lists(json_values, max_size=4),
        st.lists(ctx_args, min_size=1, max_size=1),
        st.tuples(questions, budgets).map(list),
        st.lists(maybe_drop({"uri": uris(repo), "symbol": json_values}), min_size=1, max_size=1),
        st.lists(uris(repo), max_size=2),
        json_values,
    )
    # sleepy.refresh too (a warm refresh of the small repo is quick)
    refresh_args = st.one_of(
        st.lists(st.fixed_dictionaries({"paths": json_values}), min_size=1, max_size=1),
        st.lists(st.fixed_dictionaries({"uri": uris(repo)}), min_size=1, max_size=1),
        json_scalars,
    )
    execute = st.one_of(
        maybe_drop(
            {
                "command": st.sampled_from(
                    ["sleepy.ask", "sleepy.status", "sleepy.notes", "sleepy.nope", "", "x"]
                ),
                "arguments": command_args,
            }
        ),
        st.fixed_dictionaries({"command": st.just("sleepy.refresh"), "arguments": refresh_args}),
    )
    return st.one_of(
        st.tuples(
            st.just("textDocument/hover"),
            maybe_drop({"textDocument": doc, "position": positions()}),
        ),
        st.tuples(st.just("textDocument/codeLens"), maybe_drop({"textDocument": doc})),
        st.tuples(st.just("workspace/executeCommand"), execute),
        st.tuples(st.just("sleepy/context"), ctx_args),
        st.tuples(st.sampled_from(["sleepy/nope", "textDocument/definition"]), json_values),
    )


def notifications(repo: Path) -> st.SearchStrategy[tuple[str, Any]]:
    doc = st.one_of(
        st.fixed_dictionaries(
            {
                "uri": uris(repo),
                "languageId": st.one_of(st.just("python"), json_scalars),
                "version": st.one_of(st.integers(-3, 10**12), json_scalars),
                "text": st.one_of(st.text(max_size=50), json_scalars),
            }
        ),
        st.fixed_dictionaries({"uri": uris(repo)}),
        json_values,
    )
    change = st.one_of(
        st.lists(st.fixed_dictionaries({"text": st.text(max_size=20)}), max_size=2),
        json_values,
    )
    return st.one_of(
        st.tuples(st.just("textDocument/didOpen"), maybe_drop({"textDocument": doc})),
        st.tuples(
            st.just("textDocument/didChange"),
            maybe_drop({"textDocument": doc, "contentChanges": change}),
        ),
        st.tuples(
            st.sampled_from(["textDocument/didSave", "textDocument/didClose"]),
            maybe_drop({"textDocument": doc}),
        ),
        st.tuples(
            st.just("workspace/didChangeConfiguration"),
            maybe_drop({"settings": json_values}),
        ),
        st.tuples(st.just("$/cancelRequest"), maybe_drop({"id": json_scalars})),
    )


# -- fuzzing -------------------------------------------------------------------------------
COUNTS: dict[str, int] = {"requests": 0, "errors": 0, "notifications": 0}


def test_fuzzed_requests_get_a_result_or_an_error(
    server: Server, workspace: tuple[Path, Path]
) -> None:
    repo, _ = workspace
    t0 = time.monotonic()

    @fuzz(1000)
    @given(case=requests(repo))
    def one(case: tuple[str, Any]) -> None:
        method, params = case
        reply = server.request(method, params, timeout=60)
        _ok(reply, case)
        COUNTS["requests"] += 1
        COUNTS["errors"] += "error" in reply

    one()
    _alive(server, repo)
    print(
        f"\nLSP fuzz: {COUNTS['requests']} requests ({COUNTS['errors']} error responses) "
        f"in {time.monotonic() - t0:.1f}s, server up"
    )


def test_fuzzed_notifications_never_take_the_server_down(
    server: Server, workspace: tuple[Path, Path]
) -> None:
    repo, _ = workspace
    t0 = time.monotonic()

    @fuzz(300)
    @given(cases=st.lists(notifications(repo), min_size=1, max_size=5))
    def some(cases: list[tuple[str, Any]]) -> None:
        for method, params in cases:
            server.notify(method, params)
            COUNTS["notifications"] += 1
        # a request after them is still answered (in order: the notifications were read)
        _ok(server.request("workspace/executeCommand", {"command": "sleepy.status"}), cases)

    some()
    _alive(server, repo)
    # nothing outside the workspace was ever recorded as activity or an open file
    time.sleep(0.5)
    recorded = {r[0] for r in _db(repo, "SELECT path FROM activity")}
    recorded |= {r[0] for r in _db(repo, "SELECT path FROM open_files")}
    assert all(
        p is None or (not p.startswith(("/", "..")) and "linkdir" not in p and "etc" not in p)
        for p in recorded
    ), recorded
    print(
        f"\nLSP fuzz: {COUNTS['notifications']} notifications in "
        f"{time.monotonic() - t0:.1f}s, server up"
    )


# -- path safety ---------------------------------------------------------------------------
def test_escaping_uris_are_refused(server: Server, workspace: tuple[Path, Path]) -> None:
    repo, outside = workspace
    cart = repo / "shop" / "cart.py"
    escaping = [
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        outside.as_uri() + "/secret.py",
        "file://otherhost" + str(cart),
        "file://otherhost/etc/passwd",
        repo.as_uri() + "/../outside/secret.py",
        repo.as_uri() + "/shop/%2e%2e/%2e%2e/outside/secret.py",
        repo.as_uri() + "/linkdir/secret.py",  # a symlinked directory pointing outside
        repo.as_uri() + "/shop/linked.py",  # a symlinked file pointing outside
        repo.as_uri() + "/shop/cart.py%00",
        "untitled:Untitled-1",
        "vscode-notebook-cell:" + str(cart),
        "git:" + str(cart),
        "https://example.com" + str(cart),
        "ssh://otherhost" + str(cart),
        "data:text/plain,x",
    ]
    for u in escaping:
        for method, params in (
            (
                "textDocument/hover",
                {"textDocument": {"uri": u}, "position": {"line": 0, "character": 0}},
            ),
            ("textDocument/codeLens", {"textDocument": {"uri": u}}),
            ("sleepy/context", {"question": "leak", "uri": u}),
            ("workspace/executeCommand", {"command": "sleepy.notes", "arguments": [u]}),
            ("workspace/executeCommand", {"command": "sleepy.status", "arguments": [{"uri": u}]}),
            (
                "workspace/executeCommand",
                {"command": "sleepy.ask", "arguments": [{"question": "leak", "uri": u}]},
            ),
            (
                "workspace/executeCommand",
                {"command": "sleepy.refresh", "arguments": [{"uri": u}]},
            ),
        ):
            reply = server.request(method, params)
            assert "error" in reply, (u, method, reply)
            assert reply["error"]["code"] in (-32602, -32803), (u, method, reply)
            assert SECRET not in json.dumps(reply)
        server.notify("textDocument/didOpen", {"textDocument": text_document(Path("/x"), "")})
        server.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": u, "languageId": "python", "version": 1, "text": "x"}},
        )
        server.notify("textDocument/didSave", {"textDocument": {"uri": u}})
    _alive(server, repo)
    time.sleep(0.5)  # activity is written off the event loop
    paths = {r[0] for r in _db(repo, "SELECT path FROM open_files")}
    paths |= {r[0] for r in _db(repo, "SELECT path FROM activity")}
    assert not {p for p in paths if p and ("secret" in p or p.startswith(("/", "..")))}, paths


def test_refresh_paths_are_confined(server: Server, workspace: tuple[Path, Path]) -> None:
    repo, outside = workspace
    for paths in (
        ["../outside/secret.py"],
        [str(outside / "secret.py")],
        ["linkdir/secret.py"],
        ["shop/linked.py"],
        ["shop/../../outside/secret.py"],
    ):
        reply = server.request(
            "workspace/executeCommand",
            {"command": "sleepy.refresh", "arguments": [{"paths": paths}]},
        )
        if "result" in reply:  # refused as "skipped" is fine: nothing outside was read
            assert SECRET not in json.dumps(reply), (paths, reply)
        else:
            assert reply["error"]["code"] in (-32602, -32803), (paths, reply)
    with closing(sqlite3.connect(repo / ".sleepy" / "index.db")) as conn:
        for table, col in (("chunks", "text"), ("note_items", "text"), ("modules", "facts_json")):
            hits = conn.execute(
                f"SELECT count(*) FROM {table} WHERE {col} LIKE ?", (f"%{SECRET}%",)
            ).fetchone()[0]
            assert hits == 0, table
        indexed = [
            r[0]
            for r in conn.execute("SELECT path FROM modules WHERE status = 'indexed'")
            if r[0].startswith(("/", "..", "linkdir")) or r[0] == "shop/linked.py"
        ]
    assert indexed == []
    _alive(server, repo)


def test_cli_and_mcp_refuse_symlinks_out(workspace: tuple[Path, Path], cli: CLI) -> None:
    repo, outside = workspace
    for args in (
        ("notes", str(repo / "shop" / "linked.py")),
        ("notes", str(repo / "linkdir" / "secret.py")),
        ("notes", str(repo / ".." / "outside" / "secret.py")),
        ("refresh", str(repo / "linkdir" / "secret.py")),
        ("refresh", str(repo / "shop" / "linked.py")),
    ):
        proc = cli.run(*args, repo=repo, check=False)
        assert proc.returncode in (0, 2), (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert SECRET not in proc.stdout + proc.stderr, args
        if args[0] == "notes":
            assert proc.returncode == 2 and "outside the repository" in proc.stderr, args

    import anyio

    async def mcp_calls() -> list[tuple[Any, bool, str]]:
        assert EXE
        params = StdioServerParameters(command=EXE, args=["mcp", "--repo", str(repo)], cwd="/")
        out = []
        async with Client(params, read_timeout_seconds=120) as client:
            for tool, args in (
                ("module_notes", {"path": "shop/linked.py"}),
                ("module_notes", {"path": "linkdir/secret.py"}),
                ("module_notes", {"path": str(outside / "secret.py")}),
                ("module_notes", {"path": "shop/../../outside/secret.py"}),
                ("refresh", {"paths": ["linkdir/secret.py"]}),
                ("refresh", {"paths": ["shop/linked.py"]}),
            ):
                result = await client.call_tool(tool, args)
                text = result.content[0].text  # type: ignore[union-attr]
                out.append(((tool, args), bool(result.is_error), text))
        return out

    for what, is_error, text in anyio.run(mcp_calls):
        assert SECRET not in text, what
        if what[0] == "module_notes":
            assert is_error and "outside the repository" in text, (what, text)
