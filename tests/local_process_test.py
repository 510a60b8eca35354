"""The local model in a child process (``sleepy_repo.models.llama_process``) with the real
llama-cpp-python build and the real test model: the build refuses code paths that crash, and
a crash from inside (``faulthandler._sigsegv()``), a kill from outside (SIGKILL) or a stall
(SIGSTOP) costs one module's call, never the process that asked: the backend, ``refresh``,
``sleepy-repo watch`` and the language server go on, the job stays queued, three crashes on
one module fail it, and ``status`` shows why.

Skipped without llama-cpp-python or the model, failing instead under ``CI`` (see
``local_backend_test``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from local_backend_test import configure, local_config, tax_request
from lsp_server_test import command, hover, session, uri
from lsprotocol import types

from sleepy_repo.errors import ConfigError, ModelCancelledError, ModelCrashedError
from sleepy_repo.models.llama_process import (
    CRASH_AFTER_ENV,
    TIMINGS_LOG_ENV,
    LlamaProcess,
    describe_exit,
    unsafe_build,
)
from sleepy_repo.models.local import LocalBackend, disabled_reason

from helpers import CLI, EXE

AMX_HOST_NATIVE = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
PORTABLE = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 |"


# -- the build ---------------------------------------------------------------------------
def test_a_build_with_amx_on_is_recognised() -> None:
    assert unsafe_build(AMX_HOST_NATIVE) == ["AMX_INT8"]
    assert unsafe_build(PORTABLE) == []
    assert unsafe_build("AMX_INT8 = 0 | AVX2 = 1") == []


def test_exit_codes_are_described_by_signal_name() -> None:
    assert describe_exit(-11) == "signal 11, SIGSEGV"
    assert describe_exit(-9).startswith("signal 9, SIGKILL (killed: out of memory")
    assert describe_exit(1) == "exit code 1"


def test_the_installed_build_is_portable(model: Path) -> None:
    """The build CI and README make runs on any x86-64 host: no AMX (whose code path
    segfaults with this model on AMX Xeons) and no AVX-512 (absent on many hosts), whatever
    CPU this machine has."""
    import llama_cpp

    system = llama_cpp.llama_print_system_info().decode()
    assert unsafe_build(system) == [], system
    assert "AVX512 = 1" not in system, system


def test_a_build_with_amx_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: AMX_HOST_NATIVE.encode())
    with pytest.raises(ConfigError, match=r"AMX_INT8 on.*CMAKE_ARGS='-DGGML_NATIVE=OFF'"):
        LocalBackend(local_config(Path("/nonexistent.gguf"))).ready()


# -- the backend -------------------------------------------------------------------------
def _child(backend: LocalBackend) -> LlamaProcess:
    llm = backend.llama()
    assert isinstance(llm, LlamaProcess)
    return llm


@pytest.mark.model_crash
def test_a_segfault_inside_the_model_is_an_error_and_the_next_call_works(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_AFTER_ENV, "3")
    backend = LocalBackend(local_config(model), "brief")
    first = _child(backend)
    with pytest.raises(ModelCrashedError, match=r"died \(signal 11, SIGSEGV\)"):
        backend.write_notes(tax_request())
    assert not first.alive
    monkeypatch.delenv(CRASH_AFTER_ENV)
    draft = backend.write_notes(tax_request())  # a new child, the model loaded again
    assert draft.items and _child(backend) is not first
    backend.close()


@pytest.mark.model_crash
def test_a_kill_from_outside_mid_generation_is_an_error(model: Path) -> None:
    backend = LocalBackend(local_config(model), "brief")
    child = _child(backend)
    killer = threading.Timer(3.0, os.kill, (child.pid, signal.SIGKILL))
    killer.start()
    try:
        with pytest.raises(ModelCrashedError, match=r"signal 9, SIGKILL"):
            backend.write_notes(tax_request())
    finally:
        killer.cancel()
    backend.close()


@pytest.mark.model_crash
def test_a_stalled_model_is_killed_after_stall_seconds(model: Path) -> None:
    backend = LocalBackend(local_config(model, stall_seconds=2.0), "brief")
    child = _child(backend)
    os.kill(child.pid, signal.SIGSTOP)  # no token, no heartbeat
    start = time.monotonic()
    with pytest.raises(ModelCrashedError, match=r"stalled .*nothing for 2 s"):
        backend.write_notes(tax_request())
    assert time.monotonic() - start < 30
    assert not child.alive
    backend.close()


@pytest.mark.model_crash
def test_three_crashes_in_a_row_turn_the_backend_off_in_this_process(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_AFTER_ENV, "1")
    path = model.parent / "copy-for-this-test.gguf"  # its own key in the disabled table
    path.unlink(missing_ok=True)  # left by a run that was killed
    try:
        path.symlink_to(model)
        backend = LocalBackend(local_config(path), "brief")
        for _ in range(3):
            with pytest.raises(ModelCrashedError):
                backend.write_notes(tax_request())
        assert "failed 3 times in a row" in disabled_reason(path)
        with pytest.raises(ConfigError, match="off until sleepy-repo restarts"):
            backend.write_notes(tax_request())
    finally:
        path.unlink(missing_ok=True)


def test_a_cancel_between_chunks_keeps_the_child_in_step(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sleeper's everyday path (the developer comes back mid-reply): the module is
    cancelled, not failed, and the same child then writes the next notes."""
    stop = threading.Event()
    backend = LocalBackend(local_config(model), "brief", cancel_check=stop.is_set)
    child = _child(backend)
    plain = child._stream

    def stream(rid: int) -> Any:
        chunks = plain(rid)
        try:
            for n, chunk in enumerate(chunks):
                if n == 2:
                    stop.set()  # after the third chunk has been read
                yield chunk
        finally:
            chunks.close()

    monkeypatch.setattr(child, "_stream", stream)
    with pytest.raises(ModelCancelledError, match="cancelled after"):
        backend.write_notes(tax_request())
    stop.clear()
    monkeypatch.setattr(child, "_stream", plain)
    draft = backend.write_notes(tax_request())
    assert draft.items and _child(backend) is child and child.alive
    backend.close()


def test_a_cancel_stops_prompt_evaluation_in_the_child(model: Path) -> None:
    """The cancel crosses the process boundary while the child evaluates a long prompt (no
    chunk has arrived yet), and the child is still usable afterwards."""
    stop = threading.Event()
    backend = LocalBackend(local_config(model, n_ctx=8192), "brief", cancel_check=stop.is_set)
    child = _child(backend)
    long_prompt = "def f():\n    return 1\n" * 900  # ~9,000 tokens of prompt: seconds to evaluate
    threading.Timer(1.0, stop.set).start()
    start = time.monotonic()
    pieces = []
    with pytest.raises(RuntimeError):  # the child's aborted decode
        for chunk in child.create_chat_completion(
            messages=[{"role": "user", "content": long_prompt[:30_000]}], max_tokens=4
        ):
            pieces.append(chunk)
    assert time.monotonic() - start < 6 and not pieces
    stop.clear()
    assert child.count_tokens("hello world") > 0
    backend.close()


def test_the_timings_log_splits_each_call_by_phase(
    model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With ``TIMINGS_LOG_ENV`` set the child logs the model load once and llama.cpp's own
    timings for every completion (what ``scripts/bench_local_model.py`` sums)."""
    log = tmp_path / "timings.jsonl"
    monkeypatch.setenv(TIMINGS_LOG_ENV, str(log))
    backend = LocalBackend(local_config(model), "brief")
    draft = backend.write_notes(tax_request())
    backend.close()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert draft.items and len(rows) == 2
    assert rows[0]["load_seconds"] > 0
    call = rows[1]
    assert call["schema"] is True
    assert call["prompt_tokens"] > 100 and call["generated_tokens"] > 5
    assert 0 < call["prompt_seconds"] + call["generate_seconds"] <= call["wall_seconds"]


# -- through refresh, watch and the language server ---------------------------------------
def _jobs(repo: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(repo / ".sleepy" / "index.db", timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM jobs WHERE backend = 'local'")]


@pytest.mark.model_crash
def test_refresh_keeps_a_crashing_module_queued_then_fails_it_on_the_third_crash(
    make_repo: Callable[..., Path], cli: CLI, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo("shop")
    configure(repo, model)
    monkeypatch.setenv(CRASH_AFTER_ENV, "2")
    for attempt in (1, 2, 3):
        out = cli.run("refresh", "shop/tax.py", "--json", repo=repo, timeout=600, check=False)
        assert out.returncode in (0, 2), out.stderr
        (job,) = [j for j in _jobs(repo) if j["path"] == "shop/tax.py"]
        assert "signal 11, SIGSEGV" in job["error"], job
        assert job["crashes"] == attempt
        assert job["status"] == ("failed" if attempt == 3 else "queued")
    status = json.loads(cli.run("status", "--json", repo=repo).stdout)
    assert "signal 11" in json.dumps(status), status


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _crashed_job(repo: Path) -> bool:
    return any("local model process died" in (j["error"] or "") for j in _jobs(repo))


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid), "-f", "sleepy_repo.models.llama_process"],
        capture_output=True,
        text=True,
    )
    return [int(p) for p in out.stdout.split()]


def _idle_config(repo: Path, model: Path) -> None:
    configure(repo, model, extra="[sleep]\nidle_seconds = 0.5\n")


@pytest.mark.model_crash
def test_watch_survives_a_segfault_in_the_model_and_keeps_refreshing(
    make_repo: Callable[..., Path], cli: CLI, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo("shop")
    cli.run("refresh", "--backend", "static", repo=repo)
    _idle_config(repo, model)
    monkeypatch.setenv(CRASH_AFTER_ENV, "2")
    log = repo.parent / "watch.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [EXE, "watch", "--repo", str(repo)], stdout=subprocess.DEVNULL, stderr=fh
        )
    try:
        _wait(lambda: _crashed_job(repo), 300, f"a crash in the daemon's model: {log.read_text()}")
        assert proc.poll() is None, log.read_text()  # the daemon is alive
        assert all(j["status"] == "queued" for j in _jobs(repo) if j["crashes"] < 3)
        # and still refreshes static notes on a save
        tax = repo / "shop" / "tax.py"
        tax.write_text(tax.read_text() + "\n\ndef surtax(x):\n    return x\n")
        with closing(sqlite3.connect(repo / ".sleepy" / "index.db", timeout=30)) as conn:

            def indexed() -> bool:
                q = "SELECT count(*) FROM symbols WHERE name = 'surtax'"
                return bool(conn.execute(q).fetchone()[0])

            _wait(indexed, 60, "the saved file's symbols")
        status = json.loads(cli.run("status", "--json", repo=repo).stdout)
        assert "signal 11, SIGSEGV" in json.dumps(status)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


@pytest.mark.model_crash
async def test_the_language_server_answers_after_its_model_is_killed(
    make_repo: Callable[..., Path], cli: CLI, model: Path
) -> None:
    repo = make_repo("shop")
    cli.run("refresh", "--backend", "static", repo=repo)
    _idle_config(repo, model)
    async with session(repo, options={"idleSeconds": 0.5}) as lsp:
        server = lsp._server
        assert server is not None
        deadline = time.monotonic() + 300
        while not _children(server.pid):
            assert time.monotonic() < deadline, "the server's sleeper never started the model"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # mid-call
        for pid in _children(server.pid):
            os.kill(pid, signal.SIGKILL)
        while not _crashed_job(repo):
            assert time.monotonic() < deadline, _jobs(repo)
            await asyncio.sleep(0.2)
        assert server.returncode is None  # alive
        text = await hover(lsp, repo, "shop/tax.py", 1)
        assert text  # the next request is answered
        status = await command(lsp, "sleepy.status")
        assert "signal 9, SIGKILL" in json.dumps(status), status
        assert any(j["status"] == "queued" and j["crashes"] >= 1 for j in _jobs(repo))
        lsp.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri(repo, "shop/cart.py"),
                    language_id="python",
                    version=1,
                    text=(repo / "shop" / "cart.py").read_text(),
                )
            )
        )
        assert await hover(lsp, repo, "shop/cart.py", 1)
