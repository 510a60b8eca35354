"""The frame guard alone: good frames pass unchanged, bad ones are dropped, and the stream
resynchronizes at the next header whatever the read sizes."""

from __future__ import annotations

import io
import json

import pytest

from sleepy_repo import framing
from sleepy_repo.framing import (
    MAX_DEPTH,
    OVERSIZE_LINE,
    FrameGuard,
    LineGuard,
    check_body,
    too_deep,
)


def frame(message: object) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Trickle(io.RawIOBase):
    """A stream that returns at most ``n`` bytes per read (frames split anywhere)."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n = data, n

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        chunk, self.data = self.data[: min(self.n, len(b))], self.data[min(self.n, len(b)) :]
        b[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("n", [1, 3, 7, 64, 65536])
def test_good_frames_pass_and_bad_ones_are_dropped(n: int) -> None:
    good = [{"jsonrpc": "2.0", "id": i, "method": "m", "params": {"x": "é"}} for i in range(3)]
    data = (
        frame(good[0])
        + b"Content-Length: abc\r\n\r\n"
        + json.dumps(good[1]).encode()  # the body of a bad header: skipped
        + frame(good[1])
        + b"Content-Length: 3\r\n\r\n[1]"  # not an object
        + b"Content-Type: x\r\nContent-Length: 2\r\n\r\n{}"  # no jsonrpc
        + frame(good[2])
    )
    out = io.BytesIO()
    out.close = lambda: None  # type: ignore[method-assign]
    guard = FrameGuard(io.BufferedReader(Trickle(data, n)), out)  # type: ignore[arg-type]
    guard._run()
    assert out.getvalue() == frame(good[0]) + frame(good[1]) + frame(good[2])
    assert guard.dropped == 3


@pytest.mark.parametrize("n", [1, 5, 64, 65536])
def test_lines_pass_unchanged_long_ones_are_replaced_and_blank_ones_dropped(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "MAX_BODY", 40)
    data = b'{"id": 1}\n\n  \r\n{"x": "' + b"a" * 100 + b'"}\n{"id": "\xc3\xa9"}\r\n{"id": 3}'
    out = io.BytesIO()
    out.close = lambda: None  # type: ignore[method-assign]
    guard = LineGuard(io.BufferedReader(Trickle(data, n)), out)  # type: ignore[arg-type]
    guard._run()
    assert out.getvalue() == b'{"id": 1}\n' + OVERSIZE_LINE + b'{"id": "\xc3\xa9"}\r\n{"id": 3}\n'
    assert guard.dropped == 1


def test_body_checks() -> None:
    assert too_deep(b"[" * (MAX_DEPTH + 1)) and not too_deep(b'["[[[[["]' * 50)
    assert check_body(b'{"jsonrpc": "2.0", "method": "x"}') is None
    assert check_body(b"\xff") == "not UTF-8"
    assert check_body(b'{"method": "x"}') == 'no "jsonrpc": "2.0"'
