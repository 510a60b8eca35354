"""Test helpers: the fixture-repo builder, git, and the installed CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXE = shutil.which("sleepy-repo", path=str(Path(sys.executable).parent)) or shutil.which(
    "sleepy-repo"
)


def load_builder() -> ModuleType:
    if "fixture_build" in sys.modules:
        return sys.modules["fixture_build"]
    spec = importlib.util.spec_from_file_location("fixture_build", ROOT / "fixtures" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fixture_build"] = module
    spec.loader.exec_module(module)
    return module


def make_unreadable(path: Path, monkeypatch: Any) -> None:
    """Make reading ``path`` fail with EACCES: by its mode, or (root reads anything) by
    failing ``os.open`` of it the way EACCES does."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    real_open = os.open

    def fake_open(name, flags, *a, **k):  # type: ignore[no-untyped-def]
        if str(name) == str(path):
            raise PermissionError(13, "Permission denied", str(name))
        return real_open(name, flags, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)


def without_dac() -> tuple[str, ...]:
    """A command prefix that runs as root without the capabilities that let root ignore
    file permissions (so a chmod is real); () when not root."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        import pytest

        pytest.skip("running as root without setpriv: permissions cannot be made real")
    caps = "-dac_override,-dac_read_search"
    return (setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}")


def user_config(text: str) -> Path:
    """Write the user's own config (``$XDG_CONFIG_HOME/sleepy-repo/config.toml``, in the
    test's temporary home), where every key is honoured; returns its path."""
    from sleepy_repo.config import user_config_path

    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def trusted_config(repo: Path, text: str) -> Path:
    """Write ``repo``'s ``.sleepy/config.toml`` and trust it (as ``sleepy-repo trust``
    would), so every key in it is honoured; returns its path."""
    from sleepy_repo import trust

    path = repo / ".sleepy" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    trust.trust(repo, path.read_bytes())
    return path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


class CLI:
    """Runs the installed ``sleepy-repo`` executable."""

    def __init__(self, exe: str) -> None:
        self.exe = exe

    def run(
        self,
        *args: str,
        repo: Path | None = None,
        check: bool = True,
        cwd: Path | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.exe, *args]
        if repo is not None:
            cmd += ["--repo", str(repo)]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            env={**os.environ, "COLUMNS": "200"},
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                f"stderr:\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str, repo: Path | None = None) -> Any:
        return json.loads(self.run(*args, "--json", repo=repo).stdout)


RESERVATION_COLUMNS_13 = (
    "pid",
    "process",
    "backend",
    "model",
    "path",
    "reason",
    "input_tokens",
    "output_tokens",
)


def undo_schema_13(conn: Any) -> None:
    """Drop what schema 13 added (who holds a reservation), to fake an older store."""
    for column in RESERVATION_COLUMNS_13:
        conn.execute(f"ALTER TABLE reservations DROP COLUMN {column}")


def undo_schema_12(conn: Any) -> None:
    """Drop what schema 12 added (the change counters) and every schema after it, to fake
    an older store."""
    undo_schema_13(conn)
    conn.execute("DROP TABLE generations")
    for table in ("modules", "embeddings"):
        for event in ("ai", "ad", "au"):
            conn.execute(f"DROP TRIGGER IF EXISTS {table}_gen_{event}")
