"""The MCP server, driven by the official ``mcp`` SDK client over stdio: the installed
``sleepy-repo mcp --repo <fixture repo>`` as a subprocess, every tool, bad arguments, and
stdout carrying protocol messages only."""

from __future__ import annotations

import json
import queue
import sqlite3
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from sleepy_repo.framing import MAX_BODY

from helpers import CLI, EXE

TOOLS = {"context", "module_notes", "ask", "refresh", "status"}
QUESTION = "How are coupon discounts applied before VAT?"


class Session:
    """An SDK client session plus what arrived that was not a protocol message."""

    def __init__(self, client: Client, junk: list[Exception]) -> None:
        self.client = client
        self.junk = junk

    async def call(self, tool: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
        result: CallToolResult = await self.client.call_tool(tool, args or {}, **kw)
        assert not result.is_error, result.content
        assert result.structured_content is not None
        # the text content is the same data (for clients that read text only)
        assert json.loads(result.content[0].text)["schema_version"] == 1  # type: ignore[union-attr]
        return result.structured_content

    async def error(self, tool: str, args: dict[str, Any]) -> str:
        result: CallToolResult = await self.client.call_tool(tool, args)
        assert result.is_error, result.structured_content
        return result.content[0].text  # type: ignore[union-attr]


@pytest.fixture
def shop(make_repo, cli: CLI) -> Path:
    repo = make_repo("shop")
    cli.run("init", repo=repo)
    return repo


@asynccontextmanager
async def connect(repo: Path) -> AsyncIterator[Session]:
    """An SDK client session with ``sleepy-repo mcp`` (a context manager, not an async
    fixture: anyio task groups must be entered and left in one task)."""
    junk: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):  # a stdout line that is not JSON-RPC
            junk.append(message)

    assert EXE
    params = StdioServerParameters(command=EXE, args=["mcp", "--repo", str(repo)], cwd="/")
    async with Client(params, message_handler=on_message, read_timeout_seconds=120) as client:
        yield Session(client, junk)
    assert junk == []


async def test_tools_are_described_with_schemas_and_hints(shop: Path) -> None:
    async with connect(shop) as session:
        tools = {t.name: t for t in (await session.client.list_tools()).tools}
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        assert tool.description and len(tool.description) > 60, name
        schema = tool.output_schema or {}
        assert "schema_version" in schema.get("required", []), name
        assert tool.annotations is not None
    for name in ("context", "module_notes", "ask", "status"):
        assert tools[name].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert tools["refresh"].annotations.read_only_hint is False  # type: ignore[union-attr]
    assert tools["refresh"].annotations.destructive_hint is False  # type: ignore[union-attr]
    # caps are stated where an agent reads them
    assert "8000" in (tools["context"].description or "")
    assert "60 items" in (tools["context"].description or "")
    items = tools["context"].output_schema["properties"]["items"]  # type: ignore[index]
    assert items["type"] == "array"
    assert tools["context"].input_schema["required"] == ["question"]


async def test_every_tool_on_a_fixture_repo(shop: Path) -> None:
    async with connect(shop) as session:
        # before any refresh, context says what to do instead of crashing
        assert "refresh" in await session.error("context", {"question": QUESTION})

        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        refreshed = await session.call("refresh", progress_callback=on_progress)
        assert refreshed["modules"] == 17 and refreshed["notes"]["static"]["written"] == 17
        assert {"index", "notes:static", "done"} <= {m for _, _, m in progress}, progress
        assert progress[-1] == (1, 1, "done")

        ctx = await session.call("context", {"question": QUESTION, "budget": 600})
        assert ctx["budget"] == 600 and 0 < ctx["tokens"] <= 600
        files = list(dict.fromkeys(i["path"] for i in ctx["items"]))
        assert "shop/pricing.py" in files[:3]

        notes = await session.call("module_notes", {"path": "shop/cart.py"})
        assert notes["path"] == "shop/cart.py" and notes["notes"][0]["backend"] == "static"
        absolute = await session.call("module_notes", {"path": str(shop / "shop" / "tax.py")})
        assert absolute["path"] == "shop/tax.py"

        answered = await session.call("ask", {"question": QUESTION, "budget": 500})
        assert answered["answer"] is None
        assert "no answering model" in answered["message"].lower()
        assert answered["context"]["question"] == QUESTION
        assert 0 < answered["context"]["tokens"] <= 500

        status = await session.call("status")
        assert status["modules"]["indexed"] == 17 and status["modules"]["fresh"] == 17

    # the same shapes as the CLI's --json
    assert _cli_json(shop, "context", QUESTION, "--budget", "600") == ctx
    assert _cli_json(shop, "notes", "shop/cart.py") == notes
    assert _cli_json(shop, "ask", QUESTION, "--budget", "500") == answered
    # query hits are logged for the planner, marked as coming from MCP
    with closing(sqlite3.connect(shop / ".sleepy" / "index.db")) as conn:
        sources = dict(conn.execute("SELECT source, count(*) FROM hits GROUP BY source"))
    assert sources == {"mcp": 2, "cli": 2}  # context + ask from each


async def test_bad_arguments_are_tool_errors_and_the_server_stays_up(shop: Path, cli: CLI) -> None:
    cli.run("refresh", repo=shop)
    async with connect(shop) as session:
        assert "empty" in await session.error("context", {"question": "   "})
        assert "budget" in await session.error("context", {"question": QUESTION, "budget": 0})
        assert "budget" in await session.error("ask", {"question": QUESTION, "budget": -5})
        assert "question" in await session.error("context", {"budget": 100})
        assert "2000" in await session.error("ask", {"question": "x" * 2001})
        outside = await session.error("module_notes", {"path": "../../etc/passwd"})
        assert "outside the repository" in outside
        outside = await session.error("module_notes", {"path": "/etc/passwd"})
        assert "outside the repository" in outside
        assert "not indexed" in await session.error("module_notes", {"path": "README.md"})
        outside = await session.error("refresh", {"paths": ["/etc/hosts"]})
        assert "outside the repository" in outside

        # budgets are checked as every shell checks them: a boolean is no number, nor is a
        # budget over the shells' maximum
        assert "budget" in await session.error("context", {"question": QUESTION, "budget": True})
        assert "32000" in await session.error("context", {"question": QUESTION, "budget": 10**9})
        # a large budget is capped for agents, and so is the number of items
        big = await session.call(
            "context", {"question": "cart line price tax order coupon", "budget": 30000}
        )
        assert big["budget"] == 8000
        assert 0 < len(big["items"]) <= 60
        assert big["tokens"] <= 8000

        # still serving after all of that
        assert (await session.call("status"))["modules"]["indexed"] == 17


def _cli_json(repo: Path, *args: str) -> Any:
    assert EXE
    proc = subprocess.run(
        [EXE, *args, "--json", "--repo", str(repo)], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)


class RawServer:
    """``sleepy-repo mcp`` as a plain subprocess: JSON lines in, every stdout line kept."""

    def __init__(self, repo: Path, stderr: Path | None = None) -> None:
        assert EXE
        with open(stderr or "/dev/null", "wb") as err:
            self.proc = subprocess.Popen(
                [EXE, "-v", "mcp", "--repo", str(repo)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.seen: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps(message).encode())

    def send_line(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def next_message(self) -> dict[str, Any]:
        line = self.lines.get(timeout=120)
        self.seen.append(line)
        message: dict[str, Any] = json.loads(line)
        return message

    def request(self, id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        while True:
            line = self.lines.get(timeout=120)
            self.seen.append(line)
            message = json.loads(line)  # every line is JSON ...
            assert message.get("jsonrpc") == "2.0", line  # ... and JSON-RPC
            if message.get("id") == id:
                return message

    def close(self) -> list[bytes]:
        """Close stdin (the server exits) and return whatever else it wrote to stdout."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return rest


def test_stdout_carries_only_protocol_messages(make_repo) -> None:
    """Raw stdio, no SDK: every line the server writes to stdout is a JSON-RPC message,
    also while refresh works (with -v logging) and when tools fail."""
    server = RawServer(make_repo("shop"))
    try:
        init = server.request(
            1,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        )
        assert init["result"]["serverInfo"]["name"] == "sleepy-repo"
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

        def call(id: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
            reply = server.request(id, "tools/call", {"name": name, "arguments": args})
            return reply["result"]

        assert call(2, "refresh", {})["structuredContent"]["modules"] == 17
        assert call(3, "context", {"question": QUESTION, "budget": 300})["structuredContent"]
        assert call(4, "context", {"question": ""})["isError"] is True
        assert call(5, "module_notes", {"path": "/etc/passwd"})["isError"] is True
        assert call(6, "status", {})["structuredContent"]["modules"]["fresh"] == 17
    finally:
        rest = server.close()
    for line in rest:
        assert json.loads(line).get("jsonrpc") == "2.0", line
    assert server.proc.returncode == 0


def test_malformed_lines_get_a_json_rpc_error_and_the_next_request_is_answered(
    make_repo, tmp_path: Path
) -> None:
    """Lines that are not JSON (cut short, nested 100,000 deep) get -32700 with id null;
    JSON that is not JSON-RPC (no ``"jsonrpc": "2.0"``) gets -32600 with its id; each is
    logged, none is run, and the request after each is answered. The SDK used to drop them
    without a word, so a client waited forever for its answer."""
    stderr = tmp_path / "stderr.log"
    repo = make_repo("shop")
    server = RawServer(repo, stderr)
    bad = [
        (b'{"jsonrpc": "2.0", "id": 90, "method": "tools/li', -32700, None),
        (b"[" * 100_000 + b"]" * 100_000, -32700, None),
        (b'{"id": 91, "method": "tools/call", "params": {"name": "refresh"}}', -32600, 91),
    ]
    try:
        server.request(
            1,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        )
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        for i, (line, code, rid) in enumerate(bad):
            server.send_line(line)
            error = server.next_message()
            assert error["id"] == rid and error["error"]["code"] == code, (i, error)
            assert b"tools/li" not in json.dumps(error).encode()  # no echo of the line
            reply = server.request(10 + i, "tools/list", {})
            assert {t["name"] for t in reply["result"]["tools"]} >= {"context", "status"}
    finally:
        server.close()
    assert not (repo / ".sleepy" / "index.db").exists()  # the refresh line was not run
    log = stderr.read_text()
    assert log.count("malformed MCP message dropped") == len(bad), log
    assert server.proc.returncode == 0


def test_a_line_past_the_size_bound_gets_an_error_and_is_never_held_whole(
    make_repo, tmp_path: Path
) -> None:
    """A request line longer than ``MAX_BODY`` (a valid ``tools/list`` padded to 256 MiB)
    is refused with -32600 and a log line, the server never holds it whole (its peak RSS
    grows by less than half the line's size), and the next request is answered. The SDK
    read any line into memory and answered it."""
    stderr = tmp_path / "stderr.log"
    repo = make_repo("shop")
    server = RawServer(repo, stderr)
    size = 256 * 2**20
    head = b'{"jsonrpc": "2.0", "id": 70, "method": "tools/list", "params": {"pad": "'
    try:
        server.request(
            1,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        )
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        before = _rss_kb(server.proc.pid, "VmRSS")
        assert server.proc.stdin is not None
        server.proc.stdin.write(head)
        chunk = b"a" * 2**20
        for _ in range(size // len(chunk)):
            server.proc.stdin.write(chunk)
        server.send_line(b'"}}')
        error = server.next_message()
        assert error["id"] is None and error["error"]["code"] == -32600, error
        assert str(MAX_BODY) in error["error"]["message"]
        reply = server.request(71, "tools/list", {})
        assert {t["name"] for t in reply["result"]["tools"]} >= {"context", "status"}
        grown = (_rss_kb(server.proc.pid, "VmHWM") - before) * 1024
        assert grown < 2 * MAX_BODY < size, grown  # the guard holds at most MAX_BODY
    finally:
        server.close()
    assert "a line longer than" in stderr.read_text()
    assert server.proc.returncode == 0


def _rss_kb(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith(field)).split()[1])


async def test_module_notes_of_the_repo_is_the_overview_note(shop: Path, cli: CLI) -> None:
    cli.json("refresh", "--backend", "fake", "--effort", "deep", repo=shop)
    async with connect(shop) as session:
        overview = await session.call("module_notes", {"path": "."})
    assert overview["status"] == "overview" and overview["path"] == "."
    (note,) = overview["notes"]
    assert note["effort"] == "overview" and note["items"]
    assert all(i["path"] != "." and i["citations"] for i in note["items"])
    assert _cli_json(shop, "notes", ".") == overview  # the CLI's shape
