"""The language server without an LSP client library: raw JSON-RPC framing over stdio
(every byte on stdout must be a framed protocol message), TCP mode, ``--log-file``, and
the per-folder background-task hook (in process)."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from sleepy_repo.lsp_server import Folder, SleepyServer, build_server

from helpers import CLI, EXE


class Framed:
    """JSON-RPC with ``Content-Length`` framing over a pair of byte streams. A reader
    thread parses *everything* the server writes; anything that is not a well-framed
    JSON-RPC message is kept in ``junk``."""

    def __init__(self, out: BinaryIO, inp: BinaryIO) -> None:
        self.out = out
        self.inp = inp
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.junk: list[bytes] = []
        self.next_id = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            headers: dict[str, str] = {}
            while True:
                line = self.inp.readline()
                if not line:
                    return
                if line == b"\r\n":
                    break
                if not line.endswith(b"\r\n") or b":" not in line:
                    self.junk.append(line)
                    continue
                key, _, value = line.decode("ascii", "replace").partition(":")
                headers[key.strip().lower()] = value.strip()
            if "content-length" not in headers:
                self.junk.append(b"frame without Content-Length")
                continue
            body = self.inp.read(int(headers["content-length"]))
            try:
                message = json.loads(body)
            except ValueError:
                self.junk.append(body)
                continue
            if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                self.junk.append(body)
                continue
            self.messages.put(message)

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        self.out.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.out.flush()

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: Any, timeout: float = 120) -> dict[str, Any]:
        self.next_id += 1
        msg_id = self.next_id
        self.send({"id": msg_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.1, deadline - time.monotonic()))
            self.seen.append(message)
            if "method" in message and "id" in message:  # a request from the server
                self.send({"id": message["id"], "result": None})
            elif message.get("id") == msg_id:
                return message


def initialize(rpc: Framed, root: Path | None, progress: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {
        "processId": os.getpid(),
        "rootUri": root.as_uri() if root else None,
        "capabilities": {"window": {"workDoneProgress": progress}},
    }
    reply = rpc.request("initialize", params)
    rpc.notify("initialized", {})
    return reply["result"]


def hover(rpc: Framed, file: Path, line: int) -> dict[str, Any]:
    return rpc.request(
        "textDocument/hover",
        {"textDocument": {"uri": file.as_uri()}, "position": {"line": line - 1, "character": 0}},
    )


@pytest.fixture
def shop(make_repo: Callable[..., Path], cli: CLI) -> Path:
    repo = make_repo("shop")
    cli.run("refresh", repo=repo)
    return repo


def test_stdout_carries_only_framed_protocol_messages(shop: Path, tmp_path: Path) -> None:
    """-v logging, a refresh (git and parse workers), progress, failures and showMessage:
    every byte the server writes to stdout belongs to a framed JSON-RPC message."""
    assert EXE
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [EXE, "-vv", "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
    assert proc.stdin and proc.stdout
    rpc = Framed(proc.stdin, proc.stdout)
    try:
        caps = initialize(rpc, shop, progress=True)["capabilities"]
        assert caps["hoverProvider"] and caps["codeLensProvider"] is not None
        cart = shop / "shop" / "cart.py"
        rpc.notify(
            "textDocument/didOpen",
            {
                "textDocument": {
                    "uri": cart.as_uri(),
                    "languageId": "python",
                    "version": 1,
                    "text": "print('hello')\n",
                }
            },
        )
        assert "Cart.add" in hover(rpc, cart, 44)["result"]["contents"]["value"]
        assert hover(rpc, shop / "README.md", 1)["result"] is None
        assert hover(rpc, Path("/etc/passwd"), 1)["error"]["code"] == -32602
        assert rpc.request("textDocument/hover", {"nonsense": True})["error"]["code"] == -32602
        ctx = rpc.request("sleepy/context", {"question": "coupon VAT", "budget": 300})
        assert ctx["result"]["budget"] == 300
        assert rpc.request("sleepy/context", {"question": ""})["error"]
        for budget in (True, 0, 10**12, "300"):  # checked as the CLI and MCP check them
            bad = rpc.request("sleepy/context", {"question": "coupon VAT", "budget": budget})
            assert bad["error"]["code"] == -32602 and "budget" in bad["error"]["message"], bad
        cart.write_text(cart.read_text() + "\n\ndef extra() -> None:\n    pass\n")
        refreshed = rpc.request(
            "workspace/executeCommand", {"command": "sleepy.refresh", "arguments": []}
        )
        assert refreshed["result"]["parsed"] == 1
        methods = {m.get("method") for m in rpc.seen}
        assert "$/progress" in methods and "window/workDoneProgress/create" in methods
        assert rpc.request("shutdown", None)["result"] is None
        rpc.notify("exit", None)
        assert proc.wait(timeout=60) == 0
        rpc.reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rpc.junk == []
    assert b"DEBUG" in stderr.read_bytes()  # the log went to stderr, not stdout


def test_log_file_and_tcp(shop: Path, tmp_path: Path) -> None:
    """``--tcp HOST:PORT`` with ``--repo`` as the workspace when the client names none;
    ``--log-file`` takes the log off stderr."""
    assert EXE
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_file = tmp_path / "lsp.log"
    proc = subprocess.Popen(
        [
            EXE,
            "-v",
            "lsp",
            "--tcp",
            f"127.0.0.1:{port}",
            "--repo",
            str(shop),
            "--log-file",
            str(log_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the server did not listen"
                time.sleep(0.1)
        with conn, conn.makefile("rwb") as stream:
            rpc = Framed(stream, stream)  # type: ignore[arg-type]
            initialize(rpc, None)
            value = hover(rpc, shop / "shop" / "cart.py", 1)["result"]["contents"]["value"]
            assert "Shopping carts" in value
            assert rpc.request("shutdown", None)["result"] is None
            rpc.notify("exit", None)
            out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out == b"" and b"sleepy_repo" not in err
    assert "sleepy_repo" in log_file.read_text()


def test_bad_tcp_address_is_an_error(cli: CLI) -> None:
    proc = cli.run("lsp", "--tcp", "nowhere", check=False)
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr
    assert proc.stdout == ""


def test_background_tasks_start_on_initialized_and_stop_on_shutdown(shop: Path) -> None:
    """The hook the sleep scheduler will use: one task per workspace folder."""
    events: list[tuple[str, Path]] = []

    class Task:
        def __init__(self, server: SleepyServer, folder: Folder) -> None:
            assert folder.repo is not None and server.settings.idle_seconds == 7.0
            self.folder = folder

        def start(self) -> None:
            events.append(("start", self.folder.path))

        def stop(self) -> None:
            events.append(("stop", self.folder.path))

    server = build_server(background_factory=Task)
    to_server, from_client = os.pipe()
    to_client, from_server = os.pipe()
    with (
        os.fdopen(to_server, "rb") as server_in,
        os.fdopen(from_server, "wb") as server_out,
        os.fdopen(from_client, "wb") as client_out,
        os.fdopen(to_client, "rb") as client_in,
    ):
        thread = threading.Thread(target=server.start_io, args=(server_in, server_out))
        thread.start()
        rpc = Framed(client_out, client_in)
        rpc.request(
            "initialize",
            {
                "processId": None,
                "rootUri": None,
                "capabilities": {},
                "workspaceFolders": [{"uri": shop.as_uri(), "name": "shop"}],
                "initializationOptions": {"idle_seconds": 7},
            },
        )
        assert events == []
        rpc.notify("initialized", {})
        rpc.request("workspace/executeCommand", {"command": "sleepy.status"})
        assert events == [("start", shop.resolve())]
        rpc.request("shutdown", None)
        assert events == [("start", shop.resolve()), ("stop", shop.resolve())]
        rpc.notify("exit", None)
        thread.join(timeout=30)
        assert not thread.is_alive()


def test_malformed_frames_are_dropped_and_the_next_request_is_answered(
    shop: Path, tmp_path: Path
) -> None:
    """Bad headers (``abc``, ``-5``, a length over the bound), bodies that are not UTF-8,
    not JSON, nested 100,000 deep or without ``jsonrpc``: each is dropped with a log line,
    and the request after each one is answered (they used to wedge the server)."""
    assert EXE
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [EXE, "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
        )
    assert proc.stdin and proc.stdout
    rpc = Framed(proc.stdin, proc.stdout)
    body = b'{"jsonrpc": "2.0", "id": 999, "method": "shutdown"}'
    bad = [
        b"Content-Length: abc\r\n\r\n" + body,
        b"Content-Length: -5\r\n\r\n" + body,
        b"Content-Length: 99999999999\r\n\r\n" + body,
        b"Content-Length: 4\r\n\r\n\xff\xfe\xfd\xfc",
        b"Content-Length: 9\r\n\r\nnot json!",
        b"Content-Length: 200000\r\n\r\n" + b"[" * 100000 + b"]" * 100000,
        b'Content-Length: 31\r\n\r\n{"id": 5, "method": "shutdown"}',  # no jsonrpc
        b'Content-Length: 30\r\n\r\n{"id": 5, "method": "shutdown"}',  # one byte left over
    ]
    try:
        initialize(rpc, shop)
        for i, frame in enumerate(bad):
            proc.stdin.write(frame)
            proc.stdin.flush()
            ctx = rpc.request("sleepy/context", {"question": "coupon VAT", "budget": 300}, 60)
            assert ctx["result"]["budget"] == 300, (i, ctx)
        assert all(m.get("id") != 999 for m in rpc.seen)  # no dropped body was run
        assert rpc.request("shutdown", None)["result"] is None
        rpc.notify("exit", None)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = stderr.read_bytes().decode()
    assert log.count("dropped a malformed JSON-RPC frame") == len(bad), log
