"""A store never shows up in ``git status``, whatever created it (issue 19 point 7), while
the config and the notes mirror, meant to be committed, still do."""

from __future__ import annotations

from pathlib import Path

from sleepy_repo import api

from helpers import CLI, git


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "app.py").write_text('def greet(name):\n    """Say hello."""\n    return name\n')
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "app")
    return repo


def test_refresh_and_context_leave_git_status_clean(tmp_path: Path, cli: CLI) -> None:
    repo = _repo(tmp_path)
    cli.run("refresh", repo=repo)
    cli.run("context", "greet", repo=repo)
    assert (repo / ".sleepy" / "index.db").exists()
    assert git(repo, "status", "--porcelain", "-uall") == ""
    # what is meant to be committed is not ignored
    (repo / ".sleepy" / "config.toml").write_text("[notes]\n")
    (repo / ".sleepy" / "notes").mkdir()
    (repo / ".sleepy" / "notes" / "app.py.md").write_text("# app.py\n")
    shown = git(repo, "status", "--porcelain", "-uall").splitlines()
    assert sorted(shown) == [
        "?? .sleepy/config.toml",
        "?? .sleepy/notes/app.py.md",
    ]


def test_a_repositorys_own_gitignore_is_kept_and_a_symlink_is_not_followed(
    tmp_path: Path, cli: CLI
) -> None:
    repo = _repo(tmp_path)
    (repo / ".sleepy").mkdir()
    (repo / ".sleepy" / ".gitignore").write_text("/index.db\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "own ignore")
    cli.run("refresh", repo=repo)
    assert (repo / ".sleepy" / ".gitignore").read_text() == "/index.db\n"  # not overwritten
    # a symlink in its place (what a repository could ship) is neither followed nor replaced
    link = tmp_path / "linked" / ".sleepy" / ".gitignore"
    link.parent.mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    link.symlink_to(outside)
    assert api.ignore_store(link.parent.parent, link.parent) is False
    assert not outside.exists() and link.is_symlink()
