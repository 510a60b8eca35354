"""Shared test fixtures: real git repos built from ``fixtures/repos/``, and the installed CLI."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sleepy_repo.config import LOCAL_MODEL_FILE, default_model_dir
from sleepy_repo.models.llama_process import CRASH_LOG_ENV

from helpers import CLI, EXE, load_builder

MODEL = default_model_dir() / LOCAL_MODEL_FILE  # resolved at import, with the real HOME
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAVE_EMBED = importlib.util.find_spec("wordllama") is not None


def _missing(what: str) -> None:
    reason = f"{what} (install with the README's test command, then python scripts/fetch_model.py)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the local model tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_installed() -> None:
    """llama-cpp-python is importable (else skipped, or failed under CI)."""
    if not HAVE_LLAMA:
        _missing("llama-cpp-python is not installed")


@pytest.fixture(scope="session")
def embed_installed() -> None:
    """The [embed] extra is installed (else skipped, or failed under CI)."""
    if not HAVE_EMBED:
        reason = "the [embed] extra is not installed (install with the README's test command)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the semantic index tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def model(llama_installed: None) -> Path:
    """The fetched test model (Qwen2.5-Coder-0.5B Q4)."""
    if not MODEL.is_file():
        _missing(f"the test model is not at {MODEL}")
    return MODEL


@pytest.fixture(autouse=True, scope="session")
def _crash_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every crash or stall of a local model process, in any process the tests start, is
    appended here (``SLEEPY_REPO_CRASH_LOG``): see ``_no_unexpected_crash``."""
    path = tmp_path_factory.mktemp("crashes") / "crashes.log"
    path.touch()
    old = os.environ.get(CRASH_LOG_ENV)
    os.environ[CRASH_LOG_ENV] = str(path)
    yield path
    if old is None:
        os.environ.pop(CRASH_LOG_ENV, None)
    else:
        os.environ[CRASH_LOG_ENV] = old


@pytest.fixture(autouse=True)
def _no_unexpected_crash(request: pytest.FixtureRequest, _crash_log: Path) -> Iterator[None]:
    """A test fails if a local model process died of a signal or stalled during it, unless
    it is marked ``model_crash`` (it kills one on purpose)."""
    before = _crash_log.stat().st_size
    yield
    with _crash_log.open(encoding="utf-8") as fh:
        fh.seek(before)
        new = fh.read().strip()
    if new and request.node.get_closest_marker("model_crash") is None:
        pytest.fail(f"a local model process crashed during this test:\n{new}")


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads the developer's git config or writes to their home."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    # the user's own config and the trust record follow HOME, never the developer's
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.com")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """Build a fixture repo (real git history) in a fresh temp dir."""
    counter = iter(range(1000))

    def make(name: str = "shop", upto: int | None = None) -> Path:
        dest = tmp_path / f"{name}-{next(counter)}"
        return Path(load_builder().build_repo(name, dest, upto=upto))

    return make


@pytest.fixture(scope="session")
def cli() -> CLI:
    assert EXE, "the sleepy-repo executable is not installed in this environment"
    return CLI(EXE)
