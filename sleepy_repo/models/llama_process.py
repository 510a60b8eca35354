"""llama.cpp in a child process: a native crash, a stall or an out-of-memory kill costs one
module's notes, never the process that asked (a language server, the daemon, ``refresh``).

The child (``python -m sleepy_repo.models.llama_process``) checks that llama.cpp was not
built with code paths known to crash (``unsafe_build``), loads the model once, then answers
requests, one JSON object per line on its stdin and stdout: a streamed chat completion (its
chunks forwarded as they come) or a token count. Everything native code prints goes to its
stderr, whose last lines the parent keeps for error messages.

The parent (``LlamaProcess``) looks like the part of ``llama_cpp.Llama`` the local backend
uses: ``create_chat_completion(..., stream=True)``, ``count_tokens``, ``n_tokens`` and
``close``. While it waits it polls its ``cancel_check``; when that fires it tells the child,
whose llama.cpp abort callback reads the flag between graph nodes, so a cancel stops a
decode (prompt evaluation included) within one step. The abort callback also sends a
heartbeat, so a long prompt evaluation is not taken for a stall: ``stall_seconds`` without
any message (no token, no heartbeat) and the child is killed.

A child that dies or stalls raises ``ModelCrashedError`` naming the signal; the next call
starts a new child.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from sleepy_repo.errors import ConfigError, ModelCrashedError

log = logging.getLogger(__name__)

#: llama.cpp system-info flags whose code paths crash on some hosts (``ggml_backend_amx_mul_mat``
#: segfaults with the Qwen2.5-Coder test model on AMX Xeons); a build that has one is refused.
UNSAFE_FLAGS = ("AMX_INT8",)
PORTABLE_BUILD = (
    "CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --no-cache-dir --force-reinstall "
    "'llama-cpp-python==0.3.36'"
)
#: a test seam: the child calls ``faulthandler._sigsegv()`` after this many chunks
CRASH_AFTER_ENV = "SLEEPY_REPO_TEST_CRASH_AFTER_CHUNKS"
#: when set, every crash or stall of a child is appended to this file (one line each), so a
#: test suite can fail on a crash it did not cause on purpose
CRASH_LOG_ENV = "SLEEPY_REPO_CRASH_LOG"
#: when set, the child appends one JSON line per completion to this file: llama.cpp's own
#: timings (prompt tokens evaluated and seconds, tokens generated and seconds) and the wall
#: seconds of the call, so a benchmark can split a module's time by phase
TIMINGS_LOG_ENV = "SLEEPY_REPO_TIMINGS_LOG"
BEAT_SECONDS = 1.0
POLL_SECONDS = 0.05
STDERR_LINES = 40


def unsafe_build(system_info: str) -> list[str]:
    """The flags of ``UNSAFE_FLAGS`` that llama.cpp's system line reports as on."""
    on = {
        part.split("=")[0].strip()
        for part in system_info.split("|")
        if part.strip().endswith("= 1") or part.strip().endswith("=1")
    }
    # the line may start with the backend's name ("CPU : SSE3 = 1 | ...")
    on |= {name.split(":")[-1].strip() for name in on}
    return [f for f in UNSAFE_FLAGS if f in on]


def describe_exit(code: int | None) -> str:
    """``signal 11, SIGSEGV`` for a negative return code, ``exit code N`` otherwise."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        extra = " (killed: out of memory, or from outside)" if -code == signal.SIGKILL else ""
        return f"signal {-code}, {name}{extra}"
    return f"exit code {code}"


def _logged(exc: ModelCrashedError) -> ModelCrashedError:
    """``exc``, appended to the ``CRASH_LOG_ENV`` file if that is set."""
    target = os.environ.get(CRASH_LOG_ENV, "")
    if target:
        with contextlib.suppress(OSError), open(target, "a", encoding="utf-8") as fh:
            fh.write(f"{time.time():.3f} pid {os.getpid()}: {exc}\n")
    return exc


class LlamaProcess:
    """A loaded model in a child process (see the module docstring)."""

    def __init__(
        self,
        load: dict[str, Any],
        *,
        stall_seconds: float,
        cancel_check: Callable[[], bool] | None = None,
    ) -> None:
        self.stall_seconds = stall_seconds
        self.cancel_check = cancel_check
        self.n_tokens = 0
        self.system_info = ""
        self._id = 0  # of the last request
        self._open_stream = False
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        env = dict(os.environ)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sleepy_repo.models.llama_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C in a terminal goes to the parent, which decides
        )
        self.pid = self._proc.pid
        assert self._proc.stdout is not None and self._proc.stderr is not None
        threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True).start()
        self._drainer = threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True)
        self._drainer.start()
        self._send({"op": "load", "kwargs": load})
        reply = self._wait("loading the model")
        if "error" in reply:
            self.close()
            self._drainer.join(timeout=1)
            tail = self._tail()
            raise ConfigError(reply["message"] + (f" (log: {tail})" if tail else ""))
        self.system_info = str(reply.get("system", ""))

    # -- the child's streams -------------------------------------------------------------
    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                self._messages.put(json.loads(line))
            except json.JSONDecodeError:
                self._stderr.append(line.decode("utf-8", "replace").rstrip())
        self._messages.put(None)  # end of file: the child is gone

    def _drain(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _send(self, message: dict[str, Any]) -> None:
        stdin = self._proc.stdin
        if stdin is None:
            raise self._died("sending a request")
        try:
            stdin.write(json.dumps(message).encode("utf-8") + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise self._died("sending a request") from None

    def _cancelled(self) -> bool:
        check = self.cancel_check
        try:
            return bool(check is not None and check())
        except Exception:  # a failing check does not stop the model
            log.exception("cancel_check failed")
            return False

    def _wait(
        self, doing: str, *, cancel_sent: list[bool] | None = None, rid: int | None = None
    ) -> dict[str, Any]:
        """The child's next message other than a heartbeat. Polls ``cancel_check`` (once
        it fires the child is told, once); raises ``ModelCrashedError`` if the child dies
        or sends nothing for ``stall_seconds``."""
        last = time.monotonic()
        while True:
            try:
                message = self._messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if cancel_sent is not None and not cancel_sent[0] and self._cancelled():
                    cancel_sent[0] = True
                    with contextlib.suppress(ModelCrashedError):
                        self._send({"op": "cancel"})
                if time.monotonic() - last > self.stall_seconds:
                    self._kill()
                    raise _logged(
                        ModelCrashedError(
                            f"local model process stalled while {doing}: nothing for "
                            f"{self.stall_seconds:g} s ([local] stall_seconds), so it was killed"
                        )
                    ) from None
                continue
            if message is None:
                raise self._died(doing)
            last = time.monotonic()
            if "beat" in message or (rid is not None and message.get("id") != rid):
                continue  # a heartbeat, or a late reply to a request given up on
            return message

    def _died(self, doing: str) -> ModelCrashedError:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            code = self._proc.returncode
        self._drainer.join(timeout=1)  # the child's last lines
        tail = self._tail()
        return _logged(
            ModelCrashedError(
                f"local model process died ({describe_exit(code)}) while {doing}"
                + (f"; its last output: {tail}" if tail else "")
            )
        )

    def _tail(self) -> str:
        """The child's last words: a fatal error line if there is one, else its last lines."""
        lines = [line.strip() for line in list(self._stderr) if line.strip()]
        fatal = [line for line in lines if line.startswith("Fatal Python error")]
        return fatal[-1] if fatal else " | ".join(lines[-3:])

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    # -- what the local backend calls ----------------------------------------------------
    def _request(self, message: dict[str, Any]) -> int:
        """Send a request tagged with a new id (replies carry it; older ones are dropped)."""
        if self._open_stream:
            raise RuntimeError("a completion is still streaming: close it first")
        self._id += 1
        self._send({**message, "id": self._id})
        return self._id

    def create_chat_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Stream a chat completion's chunks. ``ValueError`` and ``RuntimeError`` raised in
        the child are raised here with the same message (``RuntimeError`` also for a decode
        or a stream stopped by a cancel)."""
        kwargs["stream"] = True
        rid = self._request({"op": "complete", "kwargs": kwargs})
        self._open_stream = True
        return self._stream(rid)

    def _stream(self, rid: int) -> Iterator[dict[str, Any]]:
        cancel_sent = [False]
        finished = False
        try:
            while True:
                message = self._wait("writing notes", cancel_sent=cancel_sent, rid=rid)
                if "chunk" in message:
                    yield message["chunk"]
                    continue
                finished = True
                self.n_tokens = int(message.get("n_tokens", self.n_tokens))
                if "error" in message:
                    kind = ValueError if message["error"] == "ValueError" else RuntimeError
                    raise kind(message.get("message", message["error"]))
                return
        finally:
            if not finished and self.alive:  # the caller stopped early: stop the child too
                with contextlib.suppress(ModelCrashedError):
                    self._send({"op": "cancel"})
                    while True:
                        message = self._wait("stopping", rid=rid)
                        if "chunk" not in message:
                            self.n_tokens = int(message.get("n_tokens", self.n_tokens))
                            break
            self._open_stream = False

    def count_tokens(self, text: str) -> int:
        rid = self._request({"op": "tokenize", "text": text})
        reply = self._wait("counting tokens", rid=rid)
        if "tokens" not in reply:
            self._kill()
            raise _logged(ModelCrashedError(f"local model process answered out of turn: {reply}"))
        return int(reply["tokens"])

    def close(self) -> None:
        """Ask the child to exit; kill it if it does not within a few seconds."""
        if self.alive:
            with contextlib.suppress(ModelCrashedError):
                self._send({"op": "exit"})
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# -- the child ---------------------------------------------------------------------------
def _log_timings(target: str, perf: Any, started: float, request: dict[str, Any]) -> None:
    """Append one completion's llama.cpp timings to ``target`` (``TIMINGS_LOG_ENV``)."""
    row = {
        "prompt_tokens": int(perf.n_p_eval),
        "prompt_seconds": round(perf.t_p_eval_ms / 1000, 3),
        "generated_tokens": int(perf.n_eval),
        "generate_seconds": round(perf.t_eval_ms / 1000, 3),
        "wall_seconds": round(time.monotonic() - started, 3),
        "schema": "response_format" in request["kwargs"],
    }
    with contextlib.suppress(OSError), open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def _serve() -> None:  # pragma: no cover - runs in the child process (tested through it)
    import faulthandler

    faulthandler.enable()  # a native crash prints its Python stack to stderr
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # whatever native code prints cannot garble the protocol
    write_lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        data = json.dumps(message).encode("utf-8") + b"\n"
        with write_lock:
            out.write(data)

    cancel = threading.Event()
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin.buffer:
            message = json.loads(line)
            if message.get("op") == "cancel":
                cancel.set()
            else:
                cancel.clear()  # here, not when it is taken: a cancel right after it counts
                requests.put(message)
        os._exit(0)  # the parent is gone: so is the model

    threading.Thread(target=read, daemon=True).start()
    crash_after = int(os.environ.get(CRASH_AFTER_ENV, "0") or 0)
    timings_log = os.environ.get(TIMINGS_LOG_ENV, "")

    first = requests.get()
    if first is None or first.get("op") != "load":
        return
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:
        send({"error": "load", "message": f"llama-cpp-python cannot be imported: {exc}"})
        return
    system = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    bad = unsafe_build(system)
    if bad:
        send(
            {
                "error": "load",
                "message": (
                    f"this llama-cpp-python was built with {', '.join(bad)} on, whose code "
                    f"crashes on this CPU with the local model; rebuild it portable: "
                    f"{PORTABLE_BUILD}"
                ),
            }
        )
        return
    loading = time.monotonic()
    try:
        llm = llama_cpp.Llama(**first["kwargs"])
    except (ValueError, RuntimeError, OSError) as exc:
        send({"error": "load", "message": f"llama.cpp cannot load the model: {exc}"})
        return
    if timings_log:
        with contextlib.suppress(OSError), open(timings_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"load_seconds": round(time.monotonic() - loading, 3)}) + "\n")
    llm.verbose = False
    beat = [time.monotonic()]

    def abort(_data: Any) -> bool:
        now = time.monotonic()
        if now - beat[0] >= BEAT_SECONDS:
            beat[0] = now
            send({"beat": 1})
        return cancel.is_set()

    ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
    callback = llama_cpp.ggml_abort_callback(abort)
    if ctx is not None:
        llama_cpp.llama_set_abort_callback(ctx, callback, None)
    send({"ready": True, "system": system})

    while True:
        request = requests.get()
        if request is None or request.get("op") == "exit":
            return
        rid = request.get("id")
        if request["op"] == "tokenize":
            try:
                tokens = llm.tokenize(request["text"].encode("utf-8", "replace"), False, True)
                send({"id": rid, "tokens": len(tokens)})
            except Exception as exc:  # an answer, not a dead child
                send({"id": rid, "error": type(exc).__name__, "message": str(exc)})
            continue
        chunks = 0
        stream: Any = None
        started = time.monotonic()
        if timings_log and ctx is not None:
            llama_cpp.llama_perf_context_reset(ctx)
        try:
            stream = llm.create_chat_completion(**request["kwargs"])
            for chunk in stream:
                if cancel.is_set():
                    raise RuntimeError("cancelled between chunks")
                send({"id": rid, "chunk": chunk})
                chunks += 1
                if crash_after and chunks >= crash_after:
                    faulthandler._sigsegv()  # type: ignore[attr-defined]
            if timings_log and ctx is not None:
                _log_timings(timings_log, llama_cpp.llama_perf_context(ctx), started, request)
            send({"id": rid, "done": True, "n_tokens": llm.n_tokens})
        except Exception as exc:  # ValueError, RuntimeError (an aborted decode), or a bug
            kind = type(exc).__name__ if isinstance(exc, ValueError | RuntimeError) else "other"
            send({"id": rid, "error": kind, "message": str(exc), "n_tokens": llm.n_tokens})
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        _ = callback  # keep the ctypes callback alive


if __name__ == "__main__":  # pragma: no cover
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    _serve()
    sys.stderr.flush()
    os._exit(0)  # not a normal shutdown: the stdin reader thread may hold its lock
