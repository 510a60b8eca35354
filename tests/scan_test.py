"""Bad input: each case gives a clear message and does not stop the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleepy_repo import api
from sleepy_repo.config import ScanConfig
from sleepy_repo.scan import Candidate, UnreadableModule, blob_sha, read_module, scan

from helpers import CLI, git, make_unreadable


def skipped(result: dict) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in result["skipped"]}


def test_bad_files_are_reported_and_the_rest_indexed(make_repo, cli: CLI, tmp_path: Path) -> None:
    repo = make_repo("shop")
    (repo / "shop" / "blob.py").write_bytes(b"\x00\x01\x02binary\x00" * 10)
    (repo / "shop" / "huge.py").write_text("x = 1\n" * 200_000)  # 1.2 MB > 1 MB default
    (repo / "shop" / "latin.py").write_bytes(
        b'"""Caf\xe9 prices."""\n\ndef latin_price():\n    return 1\n'
    )
    (repo / "shop" / "broken.py").write_text(
        "def good_before():\n    return 1\n\ndef broken(:\n    pass\n\n"
        "def good_after():\n    return 2\n"
    )
    (repo / "shop" / "loop_a.py").symlink_to("loop_b.py")
    (repo / "shop" / "loop_b.py").symlink_to("loop_a.py")
    outside = tmp_path / "outside.py"
    outside.write_text("def stolen():\n    pass\n")
    (repo / "shop" / "escape.py").symlink_to(outside)
    (repo / "shop" / "alias.py").symlink_to("cart.py")

    r = cli.json("refresh", repo=repo)
    why = skipped(r)
    assert why["shop/blob.py"] == "binary file (NUL bytes)"
    assert "over the size limit" in why["shop/huge.py"]
    assert "max_file_bytes" in why["shop/huge.py"]
    assert "loops" in why["shop/loop_a.py"] and "loops" in why["shop/loop_b.py"]
    assert "outside the repository" in why["shop/escape.py"]
    assert "symlink" in why["shop/alias.py"]
    assert any("shop/latin.py: not valid UTF-8" in w for w in r["warnings"])
    assert any("shop/broken.py" in w and "syntax error" in w for w in r["warnings"])

    latin = cli.json("notes", "shop/latin.py", repo=repo)
    assert "not valid UTF-8" in latin["warning"]
    broken = cli.json("notes", "shop/broken.py", repo=repo)
    symbols = {i["symbol"] for i in broken["notes"][0]["items"]}
    assert {"good_before", "good_after"} <= symbols
    # nothing outside the repo was read
    ctx = cli.json("context", "stolen", repo=repo)
    assert all(i["path"] != "shop/escape.py" for i in ctx["items"])
    assert "def stolen" not in str(ctx["items"])
    status = cli.json("status", repo=repo)
    assert {s["path"] for s in status["skipped"]} >= {"shop/blob.py", "shop/huge.py"}
    # the rest of the repo is indexed
    assert cli.json("notes", "shop/cart.py", repo=repo)["notes"]


def test_size_limit_is_configurable(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    (repo / ".sleepy").mkdir()
    (repo / ".sleepy" / "config.toml").write_text("[scan]\nmax_file_bytes = 500\n")
    r = cli.json("refresh", repo=repo)
    assert "over the size limit" in skipped(r)["shop/cart.py"]


def test_file_deleted_between_listing_and_reading(make_repo) -> None:
    repo = make_repo("shop")
    result = scan(repo, True, ScanConfig())
    cand = next(c for c in result.candidates if c.path == "shop/tax.py")
    (repo / "shop" / "tax.py").unlink()
    with pytest.raises(UnreadableModule, match="deleted while scanning"):
        read_module(repo, cand, 1_000_000)


def test_unreadable_file_is_skipped(make_repo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo("shop")
    make_unreadable(repo / "shop" / "tax.py", monkeypatch)
    r = api.refresh(api.open_repo(repo))
    assert skipped(r)["shop/tax.py"] == "unreadable: permission denied"
    assert r["modules"] > 5


def test_blob_sha_matches_git(make_repo) -> None:
    repo = make_repo("shop")
    data = (repo / "shop" / "cart.py").read_bytes()
    assert blob_sha(data) == git(repo, "hash-object", "shop/cart.py").strip()
    assert blob_sha(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_scan_lists_tracked_and_untracked_not_ignored(make_repo) -> None:
    repo = make_repo("shop")
    (repo / "new_module.py").write_text("X = 1\n")
    (repo / ".sleepy").mkdir()
    (repo / ".sleepy" / "stray.py").write_text("X = 1\n")
    result = scan(repo, True, ScanConfig())
    paths = {c.path for c in result.candidates}
    assert "new_module.py" in paths
    assert "shop/cart.py" in paths
    assert not any(p.startswith(".sleepy/") for p in paths)
    assert all(isinstance(c, Candidate) and c.lang for c in result.candidates)


def test_bare_repository_is_refused_clearly(tmp_path: Path, cli: CLI) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    r = cli.run("status", repo=bare, check=False)
    assert r.returncode == 2
    assert "bare" in r.stderr
