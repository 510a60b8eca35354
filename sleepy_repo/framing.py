"""A guard in front of a JSON-RPC server's input (``Content-Length`` framing, as LSP uses).

pygls reads frames with a header pattern of its own: after a header it cannot parse
(``Content-Length: abc``, ``-5``) it loses the frame boundary, reads the next frames' headers
as body text, and never answers again. ``FrameGuard`` reads the raw stream, passes on only
well-formed frames (a decimal length up to ``MAX_BODY``, a body that is UTF-8 JSON of at
most ``MAX_DEPTH`` levels, an object with ``"jsonrpc": "2.0"``), drops everything else with
a log line, and finds the next frame after a bad header by its ``Content-Length:``. The
server reads the good frames from a pipe.

``LineGuard`` does the same for newline-delimited JSON-RPC (MCP's stdio transport), where
the SDK would read a line of any length into memory: a line longer than ``MAX_BODY`` is
skipped to its end without being held, and the server gets ``OVERSIZE_LINE`` in its place,
so the client is answered with an error; blank lines are dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from typing import BinaryIO, Self

log = logging.getLogger(__name__)

MAX_BODY = 64 * 2**20  # bytes of one message
MAX_HEADER = 4096  # bytes of one frame's header block
MAX_DEPTH = 200  # nesting of a message's JSON
_HEADER = b"Content-Length:"
_LENGTH = re.compile(rb"content-length:[ \t]*([0-9]{1,12})[ \t]*", re.IGNORECASE)
OVERSIZE = {"sleepy-repo": "a message larger than MAX_BODY was dropped"}
OVERSIZE_LINE = json.dumps(OVERSIZE).encode() + b"\n"  # what a server reads instead


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests deeper than ``limit`` (brackets outside strings)."""
    depth = 0
    in_string = escaped = False
    for b in body:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif b in (0x5D, 0x7D):
            depth -= 1
    return False


def check_body(body: bytes) -> str | None:
    """Why ``body`` is not a message the server can answer, or None if it is."""
    if too_deep(body):
        return f"nested deeper than {MAX_DEPTH} levels"
    try:
        message = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except ValueError as exc:
        return f"not JSON ({exc})"
    if not isinstance(message, dict):
        return "not a JSON object"
    if message.get("jsonrpc") != "2.0":
        return 'no "jsonrpc": "2.0"'
    return None


class _Guard:
    """Copies what ``source`` holds to ``sink`` in a thread, one message per ``_step``;
    ``sink`` is closed when ``source`` ends."""

    unit = "message"

    def __init__(self, source: BinaryIO, sink: BinaryIO, fd: int | None = None) -> None:
        self.source = source
        self.sink = sink
        # with ``fd``, reads go to the file descriptor: a thread blocked in a buffered
        # stdin's read holds its lock, and interpreter shutdown then aborts the process
        self.fd = fd
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="sleepy-frame-guard", daemon=True)

    @classmethod
    def piped(cls, source: BinaryIO) -> tuple[Self, BinaryIO]:
        """A started guard, and the stream of good messages to give the server."""
        r, w = os.pipe()
        guard = cls(source, os.fdopen(w, "wb"), fd=source.fileno())
        guard.thread.start()
        return guard, os.fdopen(r, "rb")

    def _read(self) -> bytes:
        """The next chunk of the input, b"" at its end."""
        if self.fd is not None:
            return os.read(self.fd, 65536)
        chunk = self.source.read1(65536) if hasattr(self.source, "read1") else b""
        return chunk or self.source.read(1)

    def _drop(self, why: str) -> None:
        self.dropped += 1
        log.warning("dropped a malformed JSON-RPC %s: %s", self.unit, why)

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except (OSError, ValueError) as exc:  # the server went away
            log.debug("frame guard stops: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                self.sink.close()

    def _step(self) -> bool:
        """Pass on or drop one message; False at the end of the input."""
        raise NotImplementedError


class FrameGuard(_Guard):
    """Passes on the well-formed ``Content-Length`` frames of ``source`` (see the module
    docstring)."""

    unit = "frame"

    def __init__(self, source: BinaryIO, sink: BinaryIO, fd: int | None = None) -> None:
        super().__init__(source, sink, fd)
        self._buf = b""

    def _fill(self) -> bool:
        chunk = self._read()
        self._buf += chunk
        return bool(chunk)

    def _step(self) -> bool:
        """Pass on or drop one frame; False at the end of the input."""
        # the header block: up to the blank line
        while b"\r\n\r\n" not in self._buf[:MAX_HEADER]:
            if len(self._buf) > MAX_HEADER:
                self._drop("header longer than 4096 bytes")
                return self._resync(1)
            if not self._fill():
                if self._buf.strip():
                    self._drop("input ended inside a frame header")
                return False
        end = self._buf.index(b"\r\n\r\n")
        header, rest = self._buf[:end], self._buf[end + 4 :]
        lengths = [_LENGTH.fullmatch(line.strip()) for line in header.split(b"\r\n")]
        good = [m for m in lengths if m is not None]
        if len(good) != 1 or int(good[0].group(1)) > MAX_BODY:
            inner = header.find(_HEADER, 1)
            if inner > 0 and len(good) == 0:
                # junk left by a frame whose length was short, glued to the next header
                log.warning("skipped %d stray bytes before a JSON-RPC frame", inner)
                self._buf = self._buf[inner:]
                return True
            shown = header[:80].decode("ascii", "backslashreplace")
            self._drop(f"bad header {shown!r}")
            self._buf = rest
            return self._resync(0)
        n = int(good[0].group(1))
        self._buf = rest
        while len(self._buf) < n:
            if not self._fill():
                self._drop("input ended inside a frame body")
                return False
        body, self._buf = self._buf[:n], self._buf[n:]
        why = check_body(body)
        if why is not None:
            self._drop(why)
            return True
        self.sink.write(b"Content-Length: %d\r\n\r\n" % n + body)
        self.sink.flush()
        return True

    def _resync(self, start: int) -> bool:
        """Skip to the next ``Content-Length:`` at or after ``start`` of the buffer."""
        while True:
            at = self._buf.find(_HEADER, start)
            if at >= 0:
                self._buf = self._buf[at:]
                return True
            keep = len(_HEADER) - 1  # a header may be split across reads
            self._buf = self._buf[-keep:] if len(self._buf) > keep else self._buf
            start = 0
            if not self._fill():
                return False


class LineGuard(_Guard):
    """Passes on the lines of ``source`` (newline-delimited JSON-RPC), each at most
    ``MAX_BODY`` bytes (see the module docstring)."""

    unit = "line"

    def __init__(self, source: BinaryIO, sink: BinaryIO, fd: int | None = None) -> None:
        super().__init__(source, sink, fd)
        self._buf = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no newline

    def _step(self) -> bool:
        while (end := self._buf.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buf)
            if len(self._buf) > MAX_BODY:
                return self._skip_long_line()
            chunk = self._read()
            if not chunk:  # the last line may lack its newline
                self._pass(bytes(self._buf) + b"\n")
                return False
            self._buf += chunk
        line = bytes(self._buf[: end + 1])
        del self._buf[: end + 1]
        self._scanned = 0
        if len(line) > MAX_BODY:
            self._drop(f"a line longer than {MAX_BODY} bytes")
            line = OVERSIZE_LINE
        self._pass(line)
        return True

    def _pass(self, line: bytes) -> None:
        if line.strip():
            self.sink.write(line)
            self.sink.flush()

    def _skip_long_line(self) -> bool:
        self._drop(f"a line longer than {MAX_BODY} bytes")
        self._pass(OVERSIZE_LINE)
        self._buf.clear()
        self._scanned = 0
        while chunk := self._read():
            end = chunk.find(b"\n")
            if end >= 0:
                self._buf += chunk[end + 1 :]
                return True
        return False
