"""Shared test fixtures: real git repos built from ``fixtures/repos/``, and the installed CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import CLI, EXE, load_builder


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
