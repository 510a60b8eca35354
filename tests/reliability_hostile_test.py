"""Hostile repositories, through the real CLI: every case ends with exit 0 (skipping what it
cannot use, with a reason) or exit 2 (a clear message), never a traceback (exit 3), and within
a time limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sleepy_repo.store import NoteStore

from helpers import EXE, git, without_dac

SECRET = "TOP-SECRET-OUTSIDE-THE-REPO"


def run(
    *args: str, repo: Path, timeout: float = 60, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    assert EXE
    proc = subprocess.run(
        [*prefix, EXE, *args, "--repo", str(repo)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    detail = f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode in (0, 2), detail
    assert "Traceback" not in proc.stderr, detail
    if proc.returncode == 2:
        assert "error: " in proc.stderr, detail  # (after a cleared progress bar)
    return proc


def refresh(repo: Path, timeout: float = 60) -> dict[str, Any]:
    proc = run("refresh", "--json", repo=repo, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    run("status", repo=repo)  # the human output copes with whatever was recorded
    run("context", "where is the code", repo=repo)
    return result


def skipped(result: dict[str, Any]) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in result["skipped"]}


def test_symlinks_outside_and_in_loops_are_never_followed(make_repo, tmp_path: Path) -> None:
    repo = make_repo("shop")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text(f"KEY = '{SECRET}'\n")
    (repo / "leak.py").symlink_to(outside / "secret.py")
    (repo / "leakdir").symlink_to(outside, target_is_directory=True)
    (repo / "loop_a.py").symlink_to(repo / "loop_b.py")
    (repo / "loop_b.py").symlink_to(repo / "loop_a.py")
    (repo / "self.py").symlink_to("self.py")
    (repo / "dirloop").symlink_to(".", target_is_directory=True)
    git(repo, "add", "-A")
    result = refresh(repo)
    sk = skipped(result)
    assert "outside" in sk["leak.py"]
    assert "loops" in sk["loop_a.py"] and "loops" in sk["self.py"]
    store = NoteStore(repo / ".sleepy")
    with store.read() as conn:
        for table, col in (("chunks", "text"), ("note_items", "text"), ("modules", "facts_json")):
            hits = conn.execute(
                f"SELECT count(*) FROM {table} WHERE {col} LIKE ?", (f"%{SECRET}%",)
            ).fetchone()[0]
            assert hits == 0, table
        paths = [r[0] for r in conn.execute("SELECT path FROM modules WHERE status='indexed'")]
    assert not any(p.startswith(("leakdir/", "dirloop/")) for p in paths)


def test_a_50_mb_file_and_a_million_line_minified_file_are_skipped_by_size(make_repo) -> None:
    repo = make_repo("shop")
    with (repo / "huge.py").open("wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # sparse: instant to make, 50 MB to read
    (repo / "web" / "bundle.min.js").write_text("a=1;\n" * 1_000_000)
    (repo / "web" / "one-line.js").write_text("var a=1;" * 300_000)
    t0 = time.monotonic()
    result = refresh(repo)
    seconds = time.monotonic() - t0
    sk = skipped(result)
    assert "size limit" in sk["huge.py"]
    for p in ("web/bundle.min.js", "web/one-line.js"):  # excluded by pattern or by size
        assert p in sk or p not in result["notes"], p
    with NoteStore(repo / ".sleepy").read() as conn:
        indexed = {r[0] for r in conn.execute("SELECT path FROM modules WHERE status='indexed'")}
    assert not indexed & {"huge.py", "web/bundle.min.js", "web/one-line.js"}
    assert seconds < 15, seconds


def test_a_just_under_the_limit_single_line_file_parses_quickly(make_repo) -> None:
    repo = make_repo("shop")
    (repo / "web" / "dense.js").write_text("function f(){return 1};" * 40_000)  # ~960 KB
    t0 = time.monotonic()
    refresh(repo)
    assert time.monotonic() - t0 < 20


def test_ten_thousand_files_in_one_directory(make_repo) -> None:
    repo = make_repo("shop")
    big = repo / "gen"
    big.mkdir()
    for i in range(10_000):
        (big / f"m{i:05d}.py").write_text(f"def f{i}(x):\n    return x + {i}\n")
    t0 = time.monotonic()
    result = refresh(repo, timeout=300)
    seconds = time.monotonic() - t0
    assert result["modules"] >= 10_000
    again = time.monotonic()
    warm = refresh(repo, timeout=120)
    warm_seconds = time.monotonic() - again
    assert warm["parsed"] == 0
    print(f"\n10,000 files: cold refresh {seconds:.1f}s, warm {warm_seconds:.1f}s")
    assert seconds < 240 and warm_seconds < 30


def test_file_names_with_newlines_and_invalid_utf8(make_repo) -> None:
    repo = make_repo("shop")
    root = os.fsencode(repo)
    for name in (
        b"new\nline.py",
        b"bad\xff\xfename.py",
        b"carriage\rreturn.py",
        b"ok \xe2\x9c\x93.py",
    ):
        with open(os.path.join(root, name), "wb") as fh:
            fh.write(b"def f():\n    return 1\n")
    git(repo, "add", "-A")
    result = refresh(repo)
    sk = skipped(result)
    assert any("newline" in r for r in sk.values())
    assert "ok \u2713.py" not in sk
    run("notes", "ok \u2713.py", repo=repo)
    untracked = make_repo("shop")  # the same names, untracked
    for name in (b"new\nline.py", b"bad\xff\xfename.py"):
        with open(os.path.join(os.fsencode(untracked), name), "wb") as fh:
            fh.write(b"def f():\n    return 1\n")
    refresh(untracked)
    assert NoteStore(repo / ".sleepy").integrity_errors() == []


@pytest.mark.parametrize("tracked", [True, False], ids=["tracked", "untracked"])
def test_an_unreadable_directory_and_file(make_repo, tracked: bool) -> None:
    repo = make_repo("shop")
    locked = repo / "locked"
    locked.mkdir()
    (locked / "hidden.py").write_text("def hidden():\n    return 1\n")
    (repo / "shop" / "noread.py").write_text("def noread():\n    return 1\n")
    if tracked:
        git(repo, "add", "-A")
    prefix = without_dac()
    os.chmod(locked, 0)
    os.chmod(repo / "shop" / "noread.py", 0)
    try:
        proc = run("refresh", "--json", repo=repo, prefix=prefix)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        sk = skipped(result)
        assert "shop/noread.py" in sk
        if tracked:
            assert "locked/hidden.py" in sk
        run("status", repo=repo, prefix=prefix)
    finally:
        os.chmod(locked, 0o755)
        os.chmod(repo / "shop" / "noread.py", 0o644)


def test_plain_directory_with_an_unreadable_subdirectory(tmp_path: Path) -> None:
    repo = tmp_path / "plain"
    (repo / "locked").mkdir(parents=True)
    (repo / "a.py").write_text("def a():\n    return 1\n")
    (repo / "locked" / "b.py").write_text("def b():\n    return 1\n")
    prefix = without_dac()
    os.chmod(repo / "locked", 0)
    try:
        proc = run("refresh", "--json", repo=repo, prefix=prefix)
        result = json.loads(proc.stdout)
        assert "locked/" in skipped(result)
        assert result["modules"] == 1
    finally:
        os.chmod(repo / "locked", 0o755)


@pytest.mark.parametrize("damage", ["garbage", "flipped-bytes", "empty"])
def test_a_corrupt_git_index(make_repo, damage: str) -> None:
    repo = make_repo("shop")
    index = repo / ".git" / "index"
    data = bytearray(index.read_bytes())
    if damage == "garbage":
        data = bytearray(b"DIRC\x00\x00\x00\x02garbage" * 10)
    elif damage == "flipped-bytes":  # git may not verify the checksum: 0 is fine too
        data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    else:
        data = bytearray()
    index.write_bytes(bytes(data))
    proc = run("refresh", repo=repo)
    if damage == "garbage":
        assert proc.returncode == 2 and "git ls-files" in proc.stderr
    hook = run("hook", "pre-commit", "shop/cart.py", repo=repo)
    assert hook.returncode == 0


def test_a_missing_git_object(make_repo) -> None:
    repo = make_repo("shop")
    (repo / "shop" / "cart.py").write_text("def cart():\n    return 2\n")
    git(repo, "add", "shop/cart.py")
    sha = git(repo, "rev-parse", ":shop/cart.py").strip()
    (repo / ".git" / "objects" / sha[:2] / sha[2:]).unlink()
    refresh(repo)  # the work tree is still there
    hook = run("hook", "pre-commit", "shop/cart.py", repo=repo)
    assert hook.returncode == 0


def test_a_bare_repository(tmp_path: Path, make_repo) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(make_repo("shop")), str(bare)],
        check=True,
        capture_output=True,
    )
    proc = run("refresh", repo=bare)
    assert proc.returncode == 2 and "bare" in proc.stderr
    assert not (bare / ".sleepy").exists()


def test_a_shallow_clone(tmp_path: Path, make_repo) -> None:
    src = make_repo("shop")
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{src}", str(shallow)],
        check=True,
        capture_output=True,
    )
    result = refresh(shallow)
    assert result["modules"] >= 10
    (shallow / "shop" / "cart.py").write_text("def cart():\n    return 3\n")
    git(shallow, "add", "shop/cart.py")
    assert run("hook", "pre-commit", "shop/cart.py", repo=shallow).returncode == 0


def test_a_git_worktree(tmp_path: Path, make_repo) -> None:
    main = make_repo("shop")
    wt = tmp_path / "wt"
    git(main, "worktree", "add", "-q", "-b", "side", str(wt))
    result = refresh(wt)
    assert result["modules"] >= 10
    assert (wt / ".sleepy" / "index.db").exists()
    assert not (main / ".sleepy" / "index.db").exists()
    (wt / "shop" / "cart.py").write_text("def cart():\n    return 4\n")
    git(wt, "add", "shop/cart.py")
    assert run("hook", "pre-commit", "shop/cart.py", repo=wt).returncode == 0
