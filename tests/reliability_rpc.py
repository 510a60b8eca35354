"""A raw JSON-RPC client for ``sleepy-repo lsp`` over stdio, for the reliability suite:
requests may be pipelined (sent before earlier ones are answered), parameters are sent
exactly as given (no client-side type checks), and every frame the server writes is parsed
(anything that is not a framed JSON-RPC message lands in ``junk``)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from helpers import EXE


class Server:
    """``sleepy-repo [-v] lsp`` as a subprocess, its stderr in ``log``."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        assert EXE
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [EXE, *args, "lsp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdin and self.proc.stdout
        self.out: BinaryIO = self.proc.stdin
        self.inp: BinaryIO = self.proc.stdout
        self.replies: dict[Any, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.junk: list[bytes] = []
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._ids = iter(range(1, 10**9))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- the wire --------------------------------------------------------------------
    def _read(self) -> None:
        while True:
            headers: dict[str, str] = {}
            while True:
                line = self.inp.readline()
                if not line:
                    with self._cond:
                        self._cond.notify_all()
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
            if "method" in message and "id" in message:  # a request from the server
                self._send({"id": message["id"], "result": None})
            elif "method" in message:
                self.notifications.append(message)
            else:
                with self._cond:
                    self.replies[message.get("id")] = message
                    self._cond.notify_all()

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        with self._send_lock:
            self.out.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.out.flush()

    # -- requests --------------------------------------------------------------------
    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def send(self, method: str, params: Any) -> int:
        """Send a request; its id (``wait`` for the reply)."""
        msg_id = next(self._ids)
        self._send({"id": msg_id, "method": method, "params": params})
        return msg_id

    def wait(self, msg_id: int, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no reply to request {msg_id} in {timeout}s")
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"the server exited ({self.proc.returncode}) before replying to "
                        f"{msg_id}:\n{self.log.read_text(errors='replace')[-3000:]}"
                    )
                self._cond.wait(min(left, 0.5))
            return self.replies.pop(msg_id)

    def request(self, method: str, params: Any, timeout: float = 120) -> dict[str, Any]:
        return self.wait(self.send(method, params), timeout)

    def initialize(self, *folders: Path, options: Any = None) -> dict[str, Any]:
        reply = self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": None,
                "capabilities": {},
                "workspaceFolders": [{"uri": f.as_uri(), "name": f.name} for f in folders],
                "initializationOptions": options,
            },
        )
        assert "result" in reply, reply
        self.notify("initialized", {})
        return reply["result"]

    def close(self) -> int:
        """``shutdown`` + ``exit``; the exit code."""
        try:
            if self.proc.poll() is None:
                assert self.request("shutdown", None, timeout=60).get("error") is None
                self.notify("exit", None)
                return self.proc.wait(timeout=60)
            return self.proc.returncode
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(timeout=10)
            self._err.close()


def text_document(path: Path, text: str | None = None, version: int = 1) -> dict[str, Any]:
    doc: dict[str, Any] = {"uri": path.as_uri()}
    if text is not None:
        doc.update(languageId="python", version=version, text=text)
    return doc
