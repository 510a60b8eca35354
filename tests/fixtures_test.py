"""Tests for the bundled fixture repositories and their builder, ``fixtures/build.py``."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType

import pytest

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sleepy_fixture_build", FIXTURES_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


build = _load_builder()

# Hand-worked from fixtures/README.md: the commits a localization miner should keep
# (non-merge, message >= 25 chars, modifies 1-4 non-test source files, adds/deletes
# nothing) and the files each one modifies.
SHOP_GOOD = {
    "coupons-before-vat": ["shop/cart.py", "shop/pricing.py"],
    "reserve-stock": ["shop/api.py", "shop/inventory.py"],
    "payment-retry": ["shop/payments.py"],
    "vat-per-line": ["shop/pricing.py", "shop/tax.py"],
    "persist-carts": ["shop/api.py", "shop/cart.py", "shop/storage.py"],
    "cart-summary-breakdown": ["web/src/components/CartSummary.tsx", "web/src/format.ts"],
    "unsupported-countries": ["shop/api.py", "shop/models.py"],
}
RELAY_GOOD = {
    "retry-backoff": ["internal/broker/broker.go", "internal/retry/backoff.go", "main.go"],
    "checksum-trait": ["src/checksum.rs", "src/frame.rs", "src/lib.rs"],
    "verify-checksums": ["src/error.rs", "src/frame.rs"],
    "dead-letters": ["internal/broker/broker.go", "main.go"],
}
GOOD = {"shop": SHOP_GOOD, "relay": RELAY_GOOD}
SOURCE_SUFFIXES = {".py", ".ts", ".tsx", ".js", ".go", ".rs"}


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, LC_ALL="C")
    proc = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, check=True)
    return proc.stdout.decode("utf-8")


def commit_shas(repo: Path, rev: str = "main") -> list[str]:
    """Commits reachable from ``rev``, oldest first (dates strictly increase)."""
    return git(repo, "rev-list", "--reverse", "--date-order", rev).split()


def head_tree(repo: Path) -> dict[str, bytes]:
    entries = git(repo, "ls-tree", "-r", "-z", "--full-tree", "HEAD").strip("\0").split("\0")
    out = {}
    for entry in entries:
        meta, path = entry.split("\t", 1)
        mode, kind, sha = meta.split()
        assert (mode, kind) == ("100644", "blob"), entry
        out[path] = subprocess.run(
            ["git", "-C", str(repo), "cat-file", "blob", sha], capture_output=True, check=True
        ).stdout
    return out


def raw_message(repo: Path, sha: str) -> str:
    raw = git(repo, "cat-file", "commit", sha)
    return raw.split("\n\n", 1)[1]


def name_status(repo: Path, sha: str) -> list[tuple[str, str]]:
    out = git(repo, "diff-tree", "--no-commit-id", "-r", "-M", "--name-status", sha)
    return [(line.split("\t")[0][0], line.split("\t")[-1]) for line in out.splitlines()]


def is_test_path(path: str) -> bool:
    p = PurePosixPath(path)
    return p.parts[0] == "tests" or p.name.startswith("test_") or p.name.endswith("_test.go")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture built once, shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("fixtures")
    return {name: build.build_repo(name, root / name) for name in build.fixture_names()}


def test_fixture_names():
    assert build.fixture_names() == ["relay", "shop"]
    assert build.FIXTURES_DIR == FIXTURES_DIR


@pytest.mark.parametrize("name", ["shop", "relay"])
def test_log_matches_history(built, name):
    repo = built[name]
    history = build.load_history(name)
    shas = commit_shas(repo)
    assert len(shas) == len(history)
    assert git(repo, "rev-list", "--all", "--count").strip() == str(len(history))
    for sha, commit in zip(shas, history, strict=True):
        assert raw_message(repo, sha) == commit.message
        who = git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%aI|%cI", sha).strip()
        ident = f"{build.AUTHOR_NAME} <{build.AUTHOR_EMAIL}>"
        author, committer, adate, cdate = who.split("|")
        assert author == committer == ident
        assert adate == cdate == commit.date.isoformat()
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("name", ["shop", "relay"])
def test_head_tree_equals_tree_dir(built, name):
    expected = build.tree_files(name)
    assert expected, "tree/ must not be empty"
    assert head_tree(built[name]) == expected


@pytest.mark.parametrize("name", ["shop", "relay"])
def test_every_version_file_is_used(name):
    used = {(label, path) for c in build.load_history(name) for path, label in c.writes}
    unused = set(build.version_files(name)) - used
    assert not unused


def test_shop_merge_commit_has_two_parents(built):
    repo = built["shop"]
    history = build.load_history("shop")
    by_id = dict(zip((c.id for c in history), commit_shas(repo), strict=True))
    merges = git(repo, "rev-list", "--merges", "main").split()
    assert merges == [by_id["merge-gift-cards"]]
    parents = git(repo, "log", "-1", "--format=%P", by_id["merge-gift-cards"]).split()
    assert parents == [by_id["vat-per-line"], by_id["gift-cards"]]
    assert git(repo, "rev-parse", "feature/gift-cards").strip() == by_id["gift-cards"]


@pytest.mark.parametrize("name", ["shop", "relay"])
def test_localization_cases_match_readme(built, name):
    """Apply the miner's filter by hand and compare with the documented good commits."""
    repo = built[name]
    history = build.load_history(name)
    cases = {}
    for sha, commit in zip(commit_shas(repo), history, strict=True):
        parents = git(repo, "log", "-1", "--format=%P", sha).split()
        changes = name_status(repo, sha)
        sources = [
            path
            for _, path in changes
            if PurePosixPath(path).suffix in SOURCE_SUFFIXES and not is_test_path(path)
        ]
        if (
            len(parents) == 1
            and len(commit.subject) >= 25
            and all(status == "M" for status, _ in changes)
            and 1 <= len(sources) <= 4
        ):
            cases[commit.id] = sorted(sources)
    assert cases == GOOD[name]


def test_shop_has_the_commits_a_miner_must_filter(built):
    repo = built["shop"]
    history = {c.id: c for c in build.load_history("shop")}
    by_id = dict(zip(history, commit_shas(repo), strict=True))
    assert name_status(repo, by_id["cart-limit-tests"]) == [("M", "tests/test_cart.py")]
    assert name_status(repo, by_id["readme-checkout"]) == [("M", "README.md")]
    assert history["bump-0.2.0"].subject == "Bump version to 0.2.0"
    assert history["fix-typo"].subject == "Fix typo"
    assert history["wip"].subject == "wip"
    assert ("A", "shop/giftcards.py") in name_status(repo, by_id["gift-cards"])
    assert ("D", "shop/legacy_export.py") in name_status(repo, by_id["drop-csv-export"])
    assert 12 <= len(history) <= 16


def test_relay_rename_is_detected(built):
    repo = built["relay"]
    by_id = dict(zip((c.id for c in build.load_history("relay")), commit_shas(repo), strict=True))
    assert ("R", "src/checksum.rs") in name_status(repo, by_id["rename-checksum"])


@pytest.mark.parametrize("name", ["shop", "relay"])
def test_builds_are_deterministic(built, tmp_path, name):
    again = build.build_repo(name, tmp_path / "again")
    refs = ["for-each-ref", "--format=%(refname) %(objectname)"]
    assert git(again, *refs) == git(built[name], *refs)
    assert git(again, "rev-parse", "HEAD") == git(built[name], "rev-parse", "HEAD")


def test_upto_stops_early_and_keeps_main_checked_out(built, tmp_path):
    history = build.load_history("shop")
    upto = [c.id for c in history].index("gift-cards") + 1  # feature branch not merged yet
    repo = build.build_repo("shop", tmp_path / "partial", upto=upto)
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git(repo, "rev-list", "--all", "--count").strip() == str(upto)
    full = commit_shas(built["shop"])
    assert commit_shas(repo, "main") == full[: upto - 1]
    assert git(repo, "rev-parse", "feature/gift-cards").strip() == full[upto - 1]
    files = set(git(repo, "ls-files").split())
    assert "shop/legacy_export.py" in files
    assert "shop/giftcards.py" not in files

    first = build.build_repo("relay", tmp_path / "first", upto=1)
    assert len(commit_shas(first)) == 1


@pytest.mark.parametrize("upto", [0, -1, 99, True])
def test_upto_out_of_range(tmp_path, upto):
    with pytest.raises(build.FixtureError, match="upto"):
        build.build_repo("relay", tmp_path / "x", upto=upto)


def test_unknown_fixture(tmp_path):
    with pytest.raises(build.FixtureError, match=r"unknown fixture 'nope'.*relay, shop"):
        build.build_repo("nope", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_non_empty_destination(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(build.FixtureError, match="not empty"):
        build.build_repo("relay", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(build.FixtureError, match="not a directory"):
        build.build_repo("relay", tmp_path / "keep.txt")


def test_empty_existing_destination_is_fine(tmp_path):
    assert build.build_repo("relay", tmp_path, upto=1) == tmp_path
    assert (tmp_path / ".git").is_dir()


def test_cli(tmp_path):
    script = str(FIXTURES_DIR / "build.py")
    dest = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, script, "relay", str(dest), "--upto", "2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest)
    assert len(commit_shas(dest)) == 2

    proc = subprocess.run(
        [sys.executable, script, "nope", str(tmp_path / "y")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "unknown fixture 'nope'" in proc.stderr

    proc = subprocess.run([sys.executable, script, "--list"], capture_output=True, text=True)
    assert proc.stdout.split() == ["relay", "shop"]


HISTORY_ERRORS = [
    ('[[commit]]\nid = "a"\nmessage = "m"\nwrite = { tree = ["missing.txt"] }\n', "missing source"),
    ('[[commit]]\nid = "a"\nmessage = "m"\nwrite = { tree = ["../f.txt"] }\n', "invalid path"),
    ('[[commit]]\nid = "a"\nmessage = "m"\nwrite = { tree = ["f.txt"] }\nmerge = "b"\n', "first"),
    (
        '[[commit]]\nid = "a"\nmessage = "m"\nwrite = { tree = ["f.txt"] }\n'
        '[[commit]]\nid = "b"\nmessage = "m"\nmerge = "topic"\n',
        "unknown branch",
    ),
    (
        '[[commit]]\nid = "a"\nmessage = "m"\ndate = 2024-01-02T00:00:00Z\n'
        'write = { tree = ["f.txt"] }\n'
        '[[commit]]\nid = "b"\nmessage = "m"\ndate = 2024-01-01T00:00:00Z\ndelete = ["f.txt"]\n',
        "later than",
    ),
    (
        '[[commit]]\nid = "a"\nmessage = "m"\nwrite = { tree = ["f.txt"] }\ntypo = 1\n',
        "unknown keys",
    ),
    ('[[commit]]\nid = "a"\nmessage = "m"\n', "changes nothing"),
]


@pytest.mark.parametrize(("toml", "error"), HISTORY_ERRORS)
def test_malformed_history_is_rejected(tmp_path, monkeypatch, toml, error):
    fixture = tmp_path / "repos" / "broken"
    (fixture / "tree").mkdir(parents=True)
    (fixture / "tree" / "f.txt").write_text("hello\n")
    (fixture / "history.toml").write_text(toml)
    monkeypatch.setattr(build, "REPOS_DIR", tmp_path / "repos")
    with pytest.raises(build.FixtureError, match=error):
        build.load_history("broken")
