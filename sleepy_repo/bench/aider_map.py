"""The ``aider-map`` strategy: aider's repo map at the same token budget, as the peer.

aider (``aider-chat`` on PyPI) is not a dependency of sleepy-repo: it pins many packages of
its own. It lives in its own virtualenv under the cache directory,
``$XDG_CACHE_HOME/sleepy-repo/aider-venv`` (default ``~/.cache/sleepy-repo/aider-venv``),
installed once, lazily, the first time the strategy is used (``pip install aider-chat``,
a few minutes; the log line says so). Pass ``--aider-python`` (or set
``SLEEPY_REPO_AIDER_PYTHON``) to use another interpreter that has aider installed; then
nothing is installed, and a missing interpreter skips the strategy.

The map is built by ``aider_map_script.py`` (next to this file), run by path with that
venv's python as one long-lived subprocess speaking JSON lines; see its docstring for how
the query becomes aider's mentioned files and identifiers, how the map is fitted to the
budget and how its ranking is read. The script runs with ``PYTHONHASHSEED=0``: aider
orders tags of equal rank by iterating over sets, so its maps would otherwise differ
slightly from run to run. The served text is recounted here with
``sleepy_repo.tokens.count_tokens``. When aider cannot be installed or started, the
strategy is skipped and the report states why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sleepy_repo import tokens
from sleepy_repo.errors import SleepyError
from sleepy_repo.tokens import count_tokens

if TYPE_CHECKING:  # strategies imports this module to register it
    from sleepy_repo.bench.strategies import Served, StateEnv

log = logging.getLogger(__name__)

AIDER_PACKAGE = "aider-chat"
SCRIPT = Path(__file__).with_name("aider_map_script.py")
ENV_PYTHON = "SLEEPY_REPO_AIDER_PYTHON"
INSTALL_TIMEOUT_S = 1800
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 900


class AiderMapError(SleepyError):
    """The aider map script failed (the bench drops the strategy and says why)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sleepy-repo"


def default_venv() -> Path:
    return cache_dir() / "aider-venv"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _imports_aider(python: Path) -> bool:
    try:
        proc = subprocess.run(
            [str(python), "-c", "import aider.repomap"], capture_output=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def ensure_aider(
    venv: Path | None = None,
    *,
    timeout: float = INSTALL_TIMEOUT_S,
) -> tuple[Path | None, str | None]:
    """(python, None) with aider importable, installing it once; (None, reason) if not."""
    venv = venv or default_venv()
    python = venv_python(venv)
    if python.exists() and _imports_aider(python):
        return python, None
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another bench may be installing right now
        if python.exists() and _imports_aider(python):
            return python, None
        return _install(venv, timeout)


def _install(venv: Path, timeout: float) -> tuple[Path | None, str | None]:
    partial = venv.with_name(venv.name + ".partial")
    install_log = venv.with_name(venv.name + "-install.log")
    log.warning(
        "installing %s into %s for the aider-map strategy (once; this can take a "
        "few minutes; log: %s)",
        AIDER_PACKAGE,
        venv,
        install_log,
    )
    shutil.rmtree(partial, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(partial)],
        [
            str(venv_python(partial)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            AIDER_PACKAGE,
        ],
    ]
    with install_log.open("w", encoding="utf-8") as out:
        for cmd in steps:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            try:
                proc = subprocess.run(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                shutil.rmtree(partial, ignore_errors=True)
                return None, (
                    f"installing {AIDER_PACKAGE} took longer than {timeout:.0f} s "
                    f"(log: {install_log})"
                )
            except OSError as exc:
                return None, f"cannot run {cmd[0]}: {exc}"
            if proc.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                return None, (
                    f"`{' '.join(cmd[-3:])}` failed with exit code "
                    f"{proc.returncode}: {_tail(install_log)} (log: {install_log})"
                )
    if not _imports_aider(venv_python(partial)):
        shutil.rmtree(partial, ignore_errors=True)
        return None, f"{AIDER_PACKAGE} installed but `import aider.repomap` fails"
    shutil.rmtree(venv, ignore_errors=True)
    partial.rename(venv)
    log.warning("installed %s into %s", AIDER_PACKAGE, venv)
    return venv_python(venv), None


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class AiderMap:
    name = "aider-map"
    family = "none"
    description = "aider's repo map (PageRank over tree-sitter tags) at the same budget"

    def __init__(
        self,
        python: Path | str | None = None,
        *,
        venv: Path | None = None,
        install_timeout: float = INSTALL_TIMEOUT_S,
    ) -> None:
        self.python = Path(python) if python else None
        self.venv = venv
        self.install_timeout = install_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    def setup(self) -> str | None:
        python = self.python or (
            Path(os.environ[ENV_PYTHON]) if os.environ.get(ENV_PYTHON) else None
        )
        if python is not None:
            if not python.exists():
                return f"aider python {python} does not exist"
        else:
            python, reason = ensure_aider(self.venv, timeout=self.install_timeout)
            if python is None:
                return reason
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [str(python), str(SCRIPT), str(Path(tokens.__file__).resolve())],
                stdin=subprocess.PIPE,
                env={**os.environ, "PYTHONHASHSEED": "0"},  # aider iterates over sets
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                encoding="utf-8",
            )
        except OSError as exc:
            self.close()
            return f"cannot start {python}: {exc}"
        try:
            self._reply(START_TIMEOUT_S)
        except AiderMapError as exc:
            self.close()
            return f"aider map script did not start with {python}: {exc}"
        return None

    def _reply(self, timeout: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            if ready or proc.poll() is not None:
                raise AiderMapError(f"the script exited ({proc.poll()}): {self._err_tail()}")
            raise AiderMapError(f"no reply within {timeout:.0f} s")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise AiderMapError(str(reply.get("error")))
        return reply

    def _err_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()
        return " | ".join(lines[-3:])

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise AiderMapError("aider-map was not set up")
        request = {
            "root": str(env.root),
            "files": env.tracked_files(),
            "query": query,
            "budgets": list(budgets),
        }
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise AiderMapError(
                f"the aider map script is gone: {exc}; {self._err_tail()}"
            ) from None
        from sleepy_repo.bench.strategies import Served

        results = self._reply(REQUEST_TIMEOUT_S)["results"]
        return [Served(files=list(r["files"]), tokens=count_tokens(r["map"])) for r in results]

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin:
                    proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
