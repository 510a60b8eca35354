"""The pre-commit hook, run by real ``pre-commit`` in real ``git commit``s on fixture repos.

``pre-commit try-repo`` runs the published ``.pre-commit-hooks.yaml`` from a clean git copy
of this project (pre-commit builds its ``language: python`` environment, ~25 s). The commit
tests install the same hook definition as a local hook that runs this venv's
``sleepy-repo`` (``language: unsupported``), so they take seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from sleepy_repo import mirror
from sleepy_repo.scan import blob_sha

from helpers import CLI, EXE, ROOT, git, trusted_config

PRE_COMMIT = str(Path(sys.executable).parent / "pre-commit")
HOOK = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())[0]
SOURCES = ["shop/cart.py", "shop/tax.py"]


def _git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


@pytest.fixture(scope="session")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project as a clean git repo: its tracked and untracked-but-not-ignored files
    (``git clone`` would miss uncommitted work), committed once."""
    dest = tmp_path_factory.mktemp("project") / "sleepy-repo"
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    for raw in listing.split(b"\0"):
        rel = raw.decode()
        if rel and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    env = _git_env()
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "snapshot"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env, capture_output=True)
    return dest


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")


def _config(repo: Path, **notes: Any) -> None:
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in notes.items())
    trusted_config(repo, "[notes]\n" + body)


@pytest.fixture
def hooked(make_repo, cli: CLI, pre_commit_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shop fixture with ``[notes] commit = true`` and the hook installed."""
    monkeypatch.setenv("PRE_COMMIT_HOME", str(pre_commit_home))
    repo = make_repo("shop")
    cli.run("init", repo=repo)
    _config(repo, commit=True)
    local = {**HOOK, "language": "unsupported", "entry": f"{EXE} hook pre-commit"}
    config = {"repos": [{"repo": "local", "hooks": [local]}]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    run(repo, PRE_COMMIT, "install")
    commit(repo, "-m", "sleepy-repo config and hook")
    return repo


def run(repo: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def commit(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``git commit`` with everything staged (the pre-commit hook runs)."""
    git(repo, "add", "-A")
    return run(repo, "git", "commit", "-q", *args)


def edit(repo: Path, path: str, line: str) -> None:
    with (repo / path).open("a") as fh:
        fh.write(f"\n\n{line}\n")


def committed(repo: Path, ref: str = "HEAD") -> set[str]:
    return set(git(repo, "show", "--name-only", "--no-renames", "--format=", ref).split())


def mirror_at(repo: Path, ref: str, path: str) -> mirror.Mirror:
    return mirror.parse(git(repo, "show", f"{ref}:{mirror.mirror_relpath(path)}"))


def hook(cli: CLI, repo: Path, *args: str, check: bool = True) -> Any:
    proc = cli.run("hook", "pre-commit", *args, "--json", cwd=repo, check=check)
    return proc if not check else json.loads(proc.stdout)


# -- the published definition ---------------------------------------------------------------
def test_published_hook_definition() -> None:
    assert HOOK["id"] == "sleepy-repo"
    assert HOOK["entry"] == "sleepy-repo hook pre-commit"
    assert HOOK["language"] == "python"
    assert HOOK["pass_filenames"] is True and HOOK["require_serial"] is True
    assert HOOK["always_run"] is True  # sees commits that only delete or rename
    files, exclude = re.compile(HOOK["files"]), re.compile(HOOK["exclude"])
    for path in ("shop/cart.py", "web/src/api.ts", "a/B.TSX", "main.go", "src/lib.rs"):
        assert files.search(path) and not exclude.search(path), path
    for path in (".sleepy/notes/shop/cart.py.md", ".sleepy/notes/x.py"):
        assert exclude.search(path), path
    assert not files.search("README.md")


def test_try_repo_runs_the_published_hook(
    project_copy: Path, make_repo, cli: CLI, pre_commit_home: Path, monkeypatch
) -> None:
    """The real published hook (pre-commit builds its python env from the project copy)."""
    monkeypatch.setenv("PRE_COMMIT_HOME", str(pre_commit_home))
    repo = make_repo("shop")
    cli.run("init", repo=repo)
    _config(repo, commit=True)
    commit(repo, "-m", "config")
    for path in SOURCES:
        edit(repo, path, "# edited")
        git(repo, "add", path)
    t0 = time.perf_counter()
    proc = run(repo, PRE_COMMIT, "try-repo", str(project_copy), "sleepy-repo", "--verbose")
    print(f"pre-commit try-repo (env build + hook): {time.perf_counter() - t0:.1f}s")
    assert "sleepy-repo notes" in proc.stdout and "Passed" in proc.stdout
    staged = set(git(repo, "diff", "--cached", "--name-only").split())
    assert {mirror.mirror_relpath(p) for p in SOURCES} <= staged
    for path in SOURCES:
        m = mirror.read(repo, path)
        assert m is not None and m.blob_sha == git(repo, "rev-parse", f":{path}").strip()
    run(repo, "git", "commit", "-qm", "edit")
    assert {*SOURCES, *(mirror.mirror_relpath(p) for p in SOURCES)} == committed(repo)


# -- commits through the installed hook -----------------------------------------------------
def test_commit_writes_and_stages_mirrors(hooked: Path, cli: CLI) -> None:
    repo = hooked
    for path in SOURCES:
        edit(repo, path, f"# edited {path}")
    commit(repo, "-m", "edit two modules")
    mirrors = {mirror.mirror_relpath(p) for p in SOURCES}
    assert committed(repo) == {*SOURCES, *mirrors}
    assert git(repo, "status", "--porcelain") == ""  # nothing left unstaged
    for path in SOURCES:
        m = mirror_at(repo, "HEAD", path)
        assert m.path == path and m.blob_sha == git(repo, "rev-parse", f"HEAD:{path}").strip()
        (static,) = m.sets
        assert static.notes.key.backend == "static" and static.origin == "written"
    # the mirror holds what the store serves for that blob
    cli.run("refresh", repo=repo)
    notes = cli.json("notes", "shop/tax.py", repo=repo)
    (stored,) = notes["notes"]
    (static,) = mirror_at(repo, "HEAD", "shop/tax.py").sets
    assert [(i["kind"], i["text"], i["start_line"]) for i in stored["items"]] == [
        (i.kind, i.text, i.start_line) for i in static.notes.items
    ]

    # `git commit -a` (git hands the hook a temporary index) works the same way
    edit(repo, "shop/cart.py", "# once more")
    run(repo, "git", "commit", "-qam", "commit -a")
    assert committed(repo) == {"shop/cart.py", mirror.mirror_relpath("shop/cart.py")}
    assert git(repo, "status", "--porcelain") == ""


def test_a_commit_without_source_changes_leaves_mirrors_alone(hooked: Path) -> None:
    repo = hooked
    edit(repo, "shop/cart.py", "# edited")
    commit(repo, "-m", "edit")
    before = git(repo, "rev-parse", "HEAD:.sleepy/notes").strip()
    (repo / "README.md").write_text("A new readme.\n")
    commit(repo, "-m", "docs only")
    assert committed(repo) == {"README.md"}
    run(repo, "git", "commit", "-q", "--allow-empty", "-m", "empty")
    assert git(repo, "rev-parse", "HEAD:.sleepy/notes").strip() == before
    assert git(repo, "status", "--porcelain") == ""


def test_rename_moves_and_delete_removes_the_mirror(hooked: Path) -> None:
    repo = hooked
    for path in SOURCES:
        edit(repo, path, "# edited")
    commit(repo, "-m", "edit")
    blob = git(repo, "rev-parse", "HEAD:shop/tax.py").strip()

    git(repo, "mv", "shop/tax.py", "shop/taxes.py")
    commit(repo, "-m", "rename")
    old, new = mirror.mirror_relpath("shop/tax.py"), mirror.mirror_relpath("shop/taxes.py")
    assert committed(repo) == {"shop/tax.py", "shop/taxes.py", old, new}
    assert not (repo / old).exists()
    moved = mirror_at(repo, "HEAD", "shop/taxes.py")
    assert moved.path == "shop/taxes.py" and moved.blob_sha == blob
    for item in moved.sets[0].notes.items:
        assert all(c.path != "shop/tax.py" for c in item.citations)

    git(repo, "rm", "-q", "shop/cart.py")
    commit(repo, "-m", "delete only")  # a commit with no staged file the hook matches
    gone = mirror.mirror_relpath("shop/cart.py")
    assert committed(repo) == {"shop/cart.py", gone}
    assert git(repo, "ls-tree", "HEAD", "--", gone) == ""
    assert not (repo / gone).exists()
    assert git(repo, "status", "--porcelain") == ""


def test_merge_conflict_in_a_mirror_is_regenerated(hooked: Path) -> None:
    repo = hooked
    git(repo, "checkout", "-q", "-b", "other")
    text = (repo / "shop/cart.py").read_text()
    (repo / "shop/cart.py").write_text("# a comment at the top\n" + text)
    commit(repo, "-m", "top")
    git(repo, "checkout", "-q", "main")
    edit(repo, "shop/cart.py", "def bottom():\n    return 1")
    commit(repo, "-m", "bottom")
    merge = run(repo, "git", "merge", "-q", "other", "--no-edit", check=False)
    assert merge.returncode != 0  # the source merges cleanly, its mirror does not
    rel = mirror.mirror_relpath("shop/cart.py")
    assert mirror.has_conflict((repo / rel).read_text())
    assert git(repo, "diff", "--name-only", "--diff-filter=U").split() == [rel]
    git(repo, "add", rel)  # markers and all
    run(repo, "git", "commit", "-q", "--no-edit")
    merged = mirror_at(repo, "HEAD", "shop/cart.py")  # parses: no markers
    assert merged.blob_sha == git(repo, "rev-parse", "HEAD:shop/cart.py").strip()
    assert git(repo, "status", "--porcelain") == ""


def test_check_fails_on_a_stale_mirror(hooked: Path, cli: CLI) -> None:
    repo = hooked
    edit(repo, "shop/cart.py", "# edited")
    commit(repo, "-m", "edit")
    ok = hook(cli, repo, "--check", "shop/cart.py")
    assert ok["stale"] == [] and ok["checked"] == 1

    edit(repo, "shop/cart.py", "# not committed yet")
    proc = cli.run("hook", "pre-commit", "--check", "shop/cart.py", cwd=repo, check=False)
    assert proc.returncode == 1
    assert "shop/cart.py" in proc.stderr and "records blob" in proc.stderr

    proc = cli.run("hook", "pre-commit", "--check", "shop/tax.py", cwd=repo, check=False)
    assert proc.returncode == 1 and "no mirror" in proc.stderr
    assert hook(cli, repo, "--check", "README.md")["checked"] == 0  # not a module

    proc = hook(cli, repo, "--check", "--all", check=False)
    assert proc.returncode == 1
    stale = {s["path"]: s["reason"] for s in json.loads(proc.stdout)["stale"]}
    assert len(stale) == 17 and "records blob" in stale["shop/cart.py"]

    # after the hook has run for every file, CI is green
    git(repo, "checkout", "--", "shop/cart.py")
    hook(cli, repo, "--all")
    assert hook(cli, repo, "--check", "--all")["stale"] == []


def test_hook_notes_the_staged_blob_not_the_work_tree(hooked: Path, cli: CLI) -> None:
    repo = hooked
    edit(repo, "shop/cart.py", "def staged_only():\n    return 1")
    git(repo, "add", "shop/cart.py")
    edit(repo, "shop/cart.py", "def worktree_only():\n    return 2")
    staged = git(repo, "rev-parse", ":shop/cart.py").strip()
    assert staged != blob_sha((repo / "shop/cart.py").read_bytes())

    first = hook(cli, repo, "shop/cart.py")
    (result,) = first["files"]
    assert result["blob_sha"] == staged and result["notes"] == "written"
    text = (repo / mirror.mirror_relpath("shop/cart.py")).read_text()
    assert "staged_only" in text and "worktree_only" not in text
    assert mirror.mirror_relpath("shop/cart.py") in git(repo, "diff", "--cached", "--name-only")

    again = hook(cli, repo, "shop/cart.py")  # fast path: the notes exist
    assert again["files"][0]["notes"] == "reused"


def test_model_work_is_queued_and_never_blocks_a_commit(hooked: Path, cli: CLI) -> None:
    repo = hooked
    _config(repo, commit=True, backend="fake")
    edit(repo, "shop/cart.py", "# edited")
    commit(repo, "-m", "with a model backend")
    status = cli.json("status", repo=repo)
    assert status["queued"] == 1 and status["spent"]["calls"] == 0  # queued, not called

    _config(repo, commit=True, backend="anthropic")  # configured but not available
    edit(repo, "shop/tax.py", "# edited")
    commit(repo, "-m", "model unavailable")
    assert mirror.mirror_relpath("shop/tax.py") in committed(repo)
    result = hook(cli, repo, "shop/tax.py")
    assert any("anthropic" in w for w in result["warnings"])

    (repo / ".sleepy" / "index.db").write_bytes(b"not a database")  # a broken store
    edit(repo, "shop/tax.py", "# again")
    commit(repo, "-m", "broken store")
    assert "shop/tax.py" in committed(repo)


# -- notes that travel in git ---------------------------------------------------------------
def _ledger(repo: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(repo / ".sleepy" / "index.db")) as conn:
        return list(conn.execute("SELECT backend, path FROM ledger ORDER BY id"))


def test_a_clone_imports_committed_notes_without_model_calls(
    hooked: Path, cli: CLI, tmp_path: Path
) -> None:
    a = hooked
    _config(a, commit=True, backend="fake")
    assert cli.json("refresh", repo=a)["notes"]["fake"]["written"] == 17
    assert len(_ledger(a)) == 17
    hook(cli, a, "--all")  # mirrors of every module, with the notes written at idle time
    commit(a, "-m", "notes")
    m = mirror_at(a, "HEAD", "shop/pricing.py")
    assert {s.notes.key.backend for s in m.sets} == {"fake", "static"}
    edit(a, "shop/tax.py", "# changed after the notes were written")
    commit(a, "-m", "change tax")  # the hook writes static notes and queues the model
    assert {s.notes.key.backend for s in mirror_at(a, "HEAD", "shop/tax.py").sets} == {"static"}
    assert len(_ledger(a)) == 17

    b = tmp_path / "clone-b"
    subprocess.run(["git", "clone", "-q", str(a), str(b)], check=True)
    assert not (b / ".sleepy" / "index.db").exists()
    cli.run("trust", repo=b)  # the clone's committed config chooses a model backend
    refreshed = cli.json("refresh", repo=b)
    assert refreshed["imported"] == 17 + 16  # static for all, fake for the unchanged
    assert refreshed["notes"]["fake"] == {
        "written": 1,
        "reused": 16,
        "carried": 0,
        "failed": [],
        "dropped_citations": 0,
    }
    assert _ledger(b) == [("fake", "shop/tax.py")]  # one model call: the changed file
    assert cli.json("status", repo=b)["spent"]["calls"] == 1
    # the clone serves the same model notes as the teammate who wrote them, marked as
    # imported from the repository (a committed mirror says whatever its authors wrote)
    for path in ("shop/pricing.py", "web/src/api.ts"):
        ours = [n for n in cli.json("notes", path, repo=b)["notes"] if n["backend"] == "fake"]
        theirs = [n for n in cli.json("notes", path, repo=a)["notes"] if n["backend"] == "fake"]
        assert ours[0]["origin"] == "imported" and theirs[0]["origin"] == "written"
        assert {i["source"] for i in ours[0]["items"]} == {"mirror"}
        assert {i["source"] for i in theirs[0]["items"]} == {"model"}
        for n in ours + theirs:
            n.pop("origin")
            for i in n["items"]:
                i.pop("source")
        assert ours == theirs
    again = cli.json("refresh", repo=b)
    assert again["imported"] == 0 and len(_ledger(b)) == 1


def test_a_renamed_module_keeps_its_model_notes(hooked: Path, cli: CLI) -> None:
    repo = hooked
    _config(repo, commit=True, backend="fake")
    cli.run("refresh", repo=repo)
    hook(cli, repo, "--all")
    commit(repo, "-m", "notes")
    git(repo, "mv", "shop/tax.py", "shop/taxes.py")
    commit(repo, "-m", "rename")
    moved = mirror_at(repo, "HEAD", "shop/taxes.py")
    assert {s.notes.key.backend for s in moved.sets} == {"fake", "static"}
    status = cli.json("status", repo=repo)
    assert status["queued"] == 0 and status["spent"]["calls"] == 17  # no model call, no job
    refreshed = cli.json("refresh", repo=repo)
    assert refreshed["notes"]["fake"]["written"] == 0
    (fake,) = [
        n for n in cli.json("notes", "shop/taxes.py", repo=repo)["notes"] if n["backend"] == "fake"
    ]
    assert all(c["path"] == "shop/taxes.py" for i in fake["items"] for c in i["citations"])
