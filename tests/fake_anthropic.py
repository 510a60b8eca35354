"""A fake Anthropic Messages API: a real HTTP server on 127.0.0.1, in a thread.

The real SDK talks to it through ``base_url`` (the SDK runs on httpx2, which respx and
friends cannot intercept). Every request is recorded; replies are scripted with ``push``
(``Reply`` objects, or callables that build one from the request), and otherwise default to
a well-formed ``record_notes`` tool call that cites the symbols listed in the prompt.

It insists on neither the auth header style nor the ``anthropic-version`` value (DESIGN §9).
Retry tests send small ``retry-after`` values: the SDK honours them with no cap.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SYMBOL_LINE = re.compile(r"^- `([^`]+)` \(", re.MULTILINE)
DEFAULT_USAGE = {
    "input_tokens": 1200,
    "output_tokens": 300,
    "cache_read_input_tokens": 800,
    "cache_creation_input_tokens": 0,
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def user_text(self) -> str:
        """The text of the (first) user message of a messages request."""
        content = self.json["messages"][0]["content"]
        return content if isinstance(content, str) else content[0]["text"]

    @property
    def module(self) -> str | None:
        m = re.search(r"^Module: (\S+) \(", self.user_text, re.MULTILINE)
        return m.group(1) if m else None


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, bytes/str as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (for timeouts)
    truncate: bool = False  # declare the full length, send half, close the connection


Script = Reply | Callable[[Recorded], Reply]


def error(status: int, kind: str, retry_after: float | None = 0.01) -> Reply:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    body = {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}}
    return Reply(status=status, body=body, headers=headers)


def symbols_in(req: Recorded) -> list[str]:
    return [s for s in SYMBOL_LINE.findall(req.user_text) if s != "<module>"]


def default_notes(req: Recorded) -> dict[str, Any]:
    """A record_notes input that cites real symbols (from the prompt's symbol list)."""
    syms = symbols_in(req) or ["<module>"]
    module = req.module or "this module"
    effort_questions = "questions" in json.dumps(req.json["tools"][0]["input_schema"])
    data: dict[str, Any] = {
        "summary": {
            "text": f"[fake-anthropic] {module} is where {syms[0]} lives.",
            "cites": ["<module>", syms[0]],
        },
        "facts": [
            {"text": f"[fake-anthropic] {module} defines {len(syms)} symbols.", "cites": syms[:2]}
        ],
    }
    if effort_questions:
        data["questions"] = [
            {
                "question": f"[fake-anthropic] What does {s} do in {module}?",
                "answer": f"{s} is explained by the fake model.",
                "cites": [s],
            }
            for s in (syms * 4)[:4]
        ]
    return data


def message(
    req: Recorded, tool_input: Any, usage: dict[str, int], stop_reason: str = "tool_use"
) -> dict[str, Any]:
    tool = (req.json.get("tool_choice") or {}).get("name", "record_notes")  # the forced tool
    return {
        "id": f"msg_fake_{id(req)}",
        "type": "message",
        "role": "assistant",
        "model": req.json.get("model", "fake"),
        "content": [{"type": "tool_use", "id": "toolu_fake", "name": tool, "input": tool_input}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": dict(usage),
    }


class FakeAnthropic:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: deque[Script] = deque()
        self.usage = dict(DEFAULT_USAGE)
        self.replied_usage: list[dict[str, int]] = []  # usage of every 200 message reply
        self.notes: Callable[[Recorded], Any] = default_notes
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_results: dict[str, list[dict[str, Any]]] = {}
        self.batch_polls_until_done = 1
        self.delay = 0.0  # seconds before each default reply
        self.in_flight = 0
        self.max_in_flight = 0  # most messages requests answered at once
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Recorded(self.command, self.path, dict(self.headers.items()), body)
                with fake._lock:
                    fake.requests.append(req)
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    reply = fake.route(req)
                    fake._send(self, reply)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            do_GET = _handle
            do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def push(self, *replies: Script) -> None:
        self.script.extend(replies)

    @property
    def message_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.rstrip("/").endswith("/v1/messages")]

    # -- routing ---------------------------------------------------------------------
    def route(self, req: Recorded) -> Reply:
        path = req.path.split("?")[0].rstrip("/")
        if path.endswith("/v1/messages"):
            return self._message(req)
        if path.endswith("/v1/messages/batches") and req.method == "POST":
            return self._create_batch(req)
        m = re.search(r"/v1/messages/batches/([^/]+)(/results)?$", path)
        if m and req.method == "GET":
            return self._batch(m.group(1), bool(m.group(2)))
        return error(404, "not_found_error", None)

    def _message(self, req: Recorded) -> Reply:
        with self._lock:
            scripted = self.script.popleft() if self.script else None
        if scripted is not None:
            reply = scripted(req) if callable(scripted) else scripted
        else:
            reply = Reply(body=message(req, self.notes(req), self.usage), delay=self.delay)
        delivered = reply.status == 200 and not reply.truncate and reply.delay < 1.0
        if delivered and isinstance(reply.body, dict) and "usage" in reply.body:
            with self._lock:
                self.replied_usage.append(dict(reply.body["usage"]))
        return reply

    # -- Message Batches -------------------------------------------------------------
    def _create_batch(self, req: Recorded) -> Reply:
        batch_id = f"msgbatch_fake_{next(self._ids)}"
        results = []
        for r in req.json["requests"]:
            inner = Recorded("POST", "/v1/messages", {}, json.dumps(r["params"]).encode())
            reply = self._message(inner)
            if reply.status == 200:
                result = {"type": "succeeded", "message": reply.body}
            else:
                result = {"type": "errored", "error": reply.body}
            results.append({"custom_id": r["custom_id"], "result": result})
        now = "2026-11-26T00:00:00Z"
        self.batches[batch_id] = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": len(results),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": now,
            "expires_at": now,
            "ended_at": None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
            "polls": 0,
        }
        self.batch_results[batch_id] = results
        return Reply(body=self._batch_json(batch_id))

    def _batch_json(self, batch_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[batch_id].items() if k != "polls"}

    def _batch(self, batch_id: str, results: bool) -> Reply:
        if batch_id not in self.batches:
            return error(404, "not_found_error", None)
        if results:
            lines = "\n".join(json.dumps(r) for r in self.batch_results[batch_id]) + "\n"
            return Reply(body=lines.encode(), headers={"content-type": "application/x-jsonl"})
        b = self.batches[batch_id]
        b["polls"] += 1
        if b["polls"] >= self.batch_polls_until_done and b["processing_status"] != "ended":
            ok = sum(1 for r in self.batch_results[batch_id] if r["result"]["type"] == "succeeded")
            b["processing_status"] = "ended"
            b["ended_at"] = "2026-11-26T00:00:01Z"
            b["request_counts"] = {
                "processing": 0,
                "succeeded": ok,
                "errored": len(self.batch_results[batch_id]) - ok,
                "canceled": 0,
                "expired": 0,
            }
            b["results_url"] = f"{self.url}/v1/messages/batches/{batch_id}/results"
        return Reply(body=self._batch_json(batch_id))

    # -- the wire --------------------------------------------------------------------
    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        body = reply.body
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            ctype = "application/json"
        else:
            data = body.encode() if isinstance(body, str) else (body or b"")
            ctype = "application/octet-stream"
        headers = {"content-type": ctype, "request-id": "req_fake", **reply.headers}
        try:
            handler.send_response(reply.status)
            for k, v in headers.items():
                handler.send_header(k, v)
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            if reply.truncate:
                handler.wfile.write(data[: len(data) // 2])
                handler.wfile.flush()
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)
                return
            handler.wfile.write(data)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True
