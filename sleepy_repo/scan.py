"""Scan: which files of a repository are modules, and what changed since the last scan.

Git-aware: tracked files plus untracked files that are not ignored (``git ls-files``),
with ``.gitignore`` honoured by git itself. A plain directory also works: it is walked
and its ``.gitignore`` files are applied with pathspec (a warning says it is not git).

The scan only lists and stats; reading, hashing and classifying content is ``read_module``.
Content identity is the git blob sha1, the same value as ``git hash-object``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pathspec

from sleepy_repo.config import ScanConfig
from sleepy_repo.errors import RepoError
from sleepy_repo.parse.languages import language_for_path

log = logging.getLogger(__name__)

ALWAYS_IGNORED = (".sleepy/", ".git/")
#: where tests live (gitignore-style): retrieval ranks them behind the code they test, and
#: ``bench mine`` leaves them out of a case's gold files
TEST_GLOBS: tuple[str, ...] = (
    "test/",
    "tests/",
    "testing/",
    "__tests__/",
    "testdata/",
    "test_*.py",
    "*_test.py",
    "conftest.py",
    "*.test.*",
    "*.spec.*",
    "*_test.go",
    "*_test.rs",
)
_TESTS = pathspec.GitIgnoreSpec.from_lines(TEST_GLOBS)
#: where examples, benchmarks and documentation code live: code that uses the library
EXAMPLE_GLOBS: tuple[str, ...] = (
    "examples/",
    "example/",
    "samples/",
    "benches/",
    "benchmarks/",
    "bench/",
    "docs/",
)  # not ``doc/``: a library package in Go (spf13/cobra's doc) and Rust (ripgrep's flags/doc)
_EXAMPLES = pathspec.GitIgnoreSpec.from_lines(EXAMPLE_GLOBS)


@lru_cache(maxsize=1 << 16)
def is_test(path: str) -> bool:
    """Whether the repo-relative ``path`` is a test (``TEST_GLOBS``)."""
    return _TESTS.match_file(path)


@lru_cache(maxsize=1 << 16)
def is_example(path: str) -> bool:
    """Whether the repo-relative ``path`` is an example, a benchmark or documentation code
    (``EXAMPLE_GLOBS``) and not a test."""
    return _EXAMPLES.match_file(path) and not is_test(path)


@dataclass(frozen=True)
class Candidate:
    """A file that looks like a module: a parsed language, not excluded."""

    path: str  # repo-relative, POSIX separators
    lang: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class ScanResult:
    root: Path
    is_git: bool
    head: str | None  # commit sha, None outside git or in an empty repo
    branch: str | None  # None when detached or outside git
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    submodules: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def blob_sha(data: bytes) -> str:
    """The git blob id of ``data`` (what ``git hash-object`` prints)."""
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def _git(root: Path, *args: str) -> bytes:
    proc = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip()
        raise RepoError(f"git {' '.join(args)} failed in {root}: {msg}")
    return proc.stdout


def uncommitted(root: Path) -> list[str]:
    """Paths that differ from HEAD: modified, staged, deleted, renamed (the new name) and
    untracked-not-ignored, from ``git status``; empty when git fails."""
    proc = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain=v1", "-z", "--untracked-files=all"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        return []
    entries = proc.stdout.decode("utf-8", "surrogateescape").split("\0")
    out: list[str] = []
    i = 0
    while i < len(entries):
        e = entries[i]
        if len(e) > 3:
            out.append(e[3:])
            if e[0] in "RC":  # a rename's or copy's source follows
                i += 1
        i += 1
    return out


def find_root(path: Path) -> tuple[Path, bool]:
    """The enclosing git work tree of ``path`` (or ``path`` itself outside git)."""
    path = path.resolve()
    if not path.exists():
        raise RepoError(f"{path} does not exist")
    if not path.is_dir():
        raise RepoError(f"{path} is not a directory")
    proc = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--is-bare-repository", "--is-inside-git-dir"],
        capture_output=True,
        check=False,
        text=True,
    )
    if proc.returncode == 0:
        bare, inside_git_dir = [*proc.stdout.split(), "false", "false"][:2]
        if bare == "true" or inside_git_dir == "true":
            raise RepoError(
                f"{path} is a bare git repository or a .git directory (no work tree); "
                "point --repo at a checkout instead"
            )
        top = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--show-toplevel"],
            capture_output=True,
            check=False,
            text=True,
        )
        if top.returncode == 0 and top.stdout.strip():
            return Path(top.stdout.strip()), True
    return path, False


def _ignore_spec(patterns: Iterable[str]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines([*ALWAYS_IGNORED, *patterns])


def _git_listing(root: Path, result: ScanResult) -> list[str]:
    staged = _git(root, "ls-files", "-z", "--cached", "--stage")
    paths: list[str] = []
    for entry in staged.split(b"\0"):
        if not entry:
            continue
        meta, _, raw_path = entry.partition(b"\t")
        path = raw_path.decode("utf-8", "surrogateescape")
        mode = meta.split(b" ", 1)[0]
        if mode == b"160000":
            result.submodules.append(path)
            continue
        paths.append(path)
    others = _git(root, "ls-files", "-z", "--others", "--exclude-standard")
    paths.extend(p.decode("utf-8", "surrogateescape") for p in others.split(b"\0") if p)
    return sorted(set(paths))


def _git_head(root: Path, result: ScanResult) -> None:
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
        capture_output=True,
        check=False,
    )
    result.head = head.stdout.decode().strip() or None
    branch = subprocess.run(
        ["git", "-C", str(root), "symbolic-ref", "-q", "--short", "HEAD"],
        capture_output=True,
        check=False,
    )
    result.branch = branch.stdout.decode().strip() or None
    if result.head and not result.branch:
        result.warnings.append(f"detached HEAD at {result.head[:12]}")


def _walk_listing(root: Path, result: ScanResult) -> list[str]:
    """Every file below ``root`` not ignored by its .gitignore files (symlinks not followed)."""
    paths: list[str] = []
    specs: dict[str, pathspec.GitIgnoreSpec] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        gi = Path(dirpath, ".gitignore")
        if gi.is_file():
            try:
                specs[rel_dir] = pathspec.GitIgnoreSpec.from_lines(
                    gi.read_text(encoding="utf-8", errors="replace").splitlines()
                )
            except OSError as exc:
                result.warnings.append(f"{rel_dir}.gitignore unreadable: {exc}")

        def ignored(rel: str, is_dir: bool) -> bool:
            target = rel + "/" if is_dir else rel
            return any(
                target.startswith(base) and spec.match_file(target[len(base) :])
                for base, spec in specs.items()
            )

        kept = []
        for d in dirnames:
            rel = rel_dir + d
            if d in (".git", ".sleepy") or ignored(rel, True):
                continue
            if not os.access(os.path.join(dirpath, d), os.R_OK | os.X_OK):
                result.skipped.append(Skipped(rel + "/", "unreadable directory"))
                continue
            kept.append(d)
        dirnames[:] = sorted(kept)
        for f in filenames:
            rel = rel_dir + f
            if not ignored(rel, False):
                paths.append(rel)
    return sorted(paths)


def scan(root: Path, is_git: bool, config: ScanConfig) -> ScanResult:
    """List the modules of a repository (no file content is read here)."""
    result = ScanResult(root=root, is_git=is_git, head=None, branch=None)
    if is_git:
        _git_head(root, result)
        listing = _git_listing(root, result)
    else:
        result.warnings.append(
            f"{root} is not a git repository: scanning the directory with its .gitignore "
            "files; content ids are still git blob ids"
        )
        listing = _walk_listing(root, result)
    excluded = _ignore_spec(config.exclude)
    for path in listing:
        lang = language_for_path(path)
        if lang is None or excluded.match_file(path):
            continue
        if "\n" in path or "\r" in path:
            result.skipped.append(Skipped(path, "file name contains a newline"))
            continue
        if not _is_utf8(path):  # undecodable bytes (surrogate-escaped): SQLite cannot store it
            shown = os.fsencode(path).decode("utf-8", "replace")
            result.skipped.append(Skipped(shown, "file name is not valid UTF-8"))
            continue
        try:
            st = os.lstat(root / path)
        except FileNotFoundError:
            if is_git:
                log.debug("%s is tracked but deleted from the work tree", path)
            continue
        except OSError as exc:
            result.skipped.append(Skipped(path, f"cannot stat: {exc.strerror or exc}"))
            continue
        if stat.S_ISLNK(st.st_mode):
            result.skipped.append(Skipped(path, _symlink_reason(root, path)))
            continue
        if not stat.S_ISREG(st.st_mode):
            result.skipped.append(Skipped(path, "not a regular file"))
            continue
        if st.st_size > config.max_file_bytes:
            result.skipped.append(
                Skipped(
                    path,
                    f"over the size limit ({st.st_size:,} bytes > {config.max_file_bytes:,}; "
                    "raise [scan] max_file_bytes to include it)",
                )
            )
            continue
        result.candidates.append(Candidate(path, lang, st.st_size, st.st_mtime_ns))
    return result


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _symlink_reason(root: Path, path: str) -> str:
    full = root / path
    try:
        target = full.resolve(strict=True)
    except (OSError, RuntimeError):
        return "symlink that is broken or loops (not followed)"
    try:
        target.relative_to(root.resolve())
    except ValueError:
        return "symlink pointing outside the repository (not followed)"
    return "symlink (its target is indexed under its own path)"


@dataclass(frozen=True)
class ModuleContent:
    data: bytes
    blob_sha: str
    text: str
    warning: str | None  # e.g. not UTF-8


class UnreadableModule(Exception):
    """Raised by ``read_module`` with a one-line reason; the caller records it as skipped."""


def read_module(root: Path, cand: Candidate, max_bytes: int) -> ModuleContent:
    full = root / cand.path
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise UnreadableModule("deleted while scanning") from None
    except PermissionError:
        raise UnreadableModule("unreadable: permission denied") from None
    except OSError as exc:
        raise UnreadableModule(f"unreadable: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UnreadableModule(f"unreadable: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise UnreadableModule(f"over the size limit (> {max_bytes:,} bytes)")
    if b"\0" in data[:8192]:
        raise UnreadableModule("binary file (NUL bytes)")
    warning = None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", "replace")
        warning = f"not valid UTF-8 (byte {exc.start}); undecodable bytes replaced"
    return ModuleContent(data, blob_sha(data), text, warning)
