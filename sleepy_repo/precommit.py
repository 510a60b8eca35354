"""The pre-commit hook's work: notes for the *staged* content of each source file, and their
markdown mirror (``.sleepy/notes/<path>.md``) staged with the commit.

For each staged source file (its blob from ``git ls-files -s``, never the work tree):

1. reuse the static notes the store already has for that blob (no parsing), else import
   them from the file's mirror if it records that blob, else parse the staged bytes and
   write static notes at once;
2. when the configured backend is a model, queue a job for it unless its notes for the
   blob exist (the hook never calls a model, so an unreachable model or a spent budget
   cannot block a commit);
3. with ``[notes] commit = true``: write the mirror from every note set the store holds for
   the blob, and ``git add`` it.

Staged deletions remove the mirror (``git rm --cached``); renames move it, and notes of an
unchanged blob move with it. A mirror with merge-conflict markers is regenerated.
``check`` is the CI side: a file whose mirror records another blob than its content.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pathspec

from sleepy_repo import mirror
from sleepy_repo.config import Config
from sleepy_repo.errors import RepoError, SleepyError
from sleepy_repo.models import Backend, StaticBackend, get_backend, ready
from sleepy_repo.parse import language_for_path
from sleepy_repo.scan import ALWAYS_IGNORED, blob_sha
from sleepy_repo.sleep import note_blob, note_key
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's id of the empty tree
REGULAR_MODES = ("100644", "100755")


# -- git -----------------------------------------------------------------------------------
def _git(root: Path, *args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        ["git", "-C", str(root), *args], input=stdin, capture_output=True, check=False
    )
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip()
        raise RepoError(f"git {' '.join(args[:3])} failed in {root}: {msg}")
    return proc.stdout


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


@dataclass
class Index:
    """The git index: stage-0 entries ``path -> (mode, sha)`` and unmerged paths."""

    entries: dict[str, tuple[str, str]]
    unmerged: set[str]


def read_index(root: Path) -> Index:
    index = Index(entries={}, unmerged=set())
    for entry in _git(root, "ls-files", "-s", "-z").split(b"\0"):
        if not entry:
            continue
        meta, _, raw = entry.partition(b"\t")
        mode, sha, stage = _decode(meta).split()
        path = _decode(raw)
        if stage == "0":
            index.entries[path] = (mode, sha)
        else:
            index.unmerged.add(path)
    return index


def _base(root: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD^{tree}"],
        capture_output=True,
        check=False,
        text=True,
    )
    return proc.stdout.strip() or EMPTY_TREE


@dataclass
class Change:
    status: str  # A, M, D, R, T, ...
    path: str
    old_path: str | None = None
    old_sha: str | None = None
    new_sha: str | None = None


def staged_changes(root: Path, base: str) -> list[Change]:
    """What the commit changes (``git diff --cached --raw -M`` against ``base``)."""
    out = _git(root, "diff", "--cached", "--raw", "--no-abbrev", "-M", "-z", "--no-ext-diff", base)
    fields = out.split(b"\0")
    changes: list[Change] = []
    i = 0
    while i < len(fields) - 1:
        meta = _decode(fields[i])
        if not meta.startswith(":"):
            i += 1
            continue
        _, _, old_sha, new_sha, status = meta[1:].split(" ")
        if status[0] in "RC":
            changes.append(
                Change(status[0], _decode(fields[i + 2]), _decode(fields[i + 1]), old_sha, new_sha)
            )
            i += 3
        else:
            changes.append(Change(status[0], _decode(fields[i + 1]), None, old_sha, new_sha))
            i += 2
    return changes


def read_blobs(root: Path, shas: Iterable[str]) -> dict[str, bytes]:
    """Blob contents by sha, in one ``git cat-file --batch``."""
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    out = _git(root, "cat-file", "--batch", stdin=("\n".join(wanted) + "\n").encode())
    blobs: dict[str, bytes] = {}
    pos = 0
    for sha in wanted:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].split()
        pos = nl + 1
        if len(header) < 3 or header[1] != b"blob":
            continue
        size = int(header[2])
        blobs[sha] = out[pos : pos + size]
        pos += size + 1
    return blobs


# -- reports -------------------------------------------------------------------------------
@dataclass
class FileResult:
    path: str
    blob_sha: str | None
    notes: str  # reused | imported | written | skipped | failed
    queued: str | None = None  # the model backend a job was queued for
    mirror: str | None = None  # the mirror written (repo-relative)
    reason: str | None = None  # why skipped or failed


@dataclass
class HookReport:
    files: list[FileResult] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # mirrors, old -> new
    removed: list[str] = field(default_factory=list)  # mirrors deleted
    staged: list[str] = field(default_factory=list)  # mirrors added to the index
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "files": [asdict(f) for f in self.files],
            "moved": [{"from": a, "to": b} for a, b in self.moved],
            "removed": self.removed,
            "staged": self.staged,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class StaleMirror:
    path: str
    mirror: str
    reason: str


@dataclass
class CheckReport:
    checked: int = 0
    stale: list[StaleMirror] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "checked": self.checked,
            "stale": [asdict(s) for s in self.stale],
        }


# -- which files ---------------------------------------------------------------------------
class Sources:
    """Which paths are modules sleepy-repo notes (the scan's rules, by path alone)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._excluded = pathspec.GitIgnoreSpec.from_lines([*ALWAYS_IGNORED, *config.scan.exclude])
        self._denied = pathspec.GitIgnoreSpec.from_lines(config.scan.deny)

    def lang(self, path: str) -> str | None:
        lang = language_for_path(path)
        if lang is None or self._excluded.match_file(path):
            return None
        return lang

    def denied(self, path: str) -> bool:
        return self._denied.match_file(path)

    def unusable(self, data: bytes) -> str | None:
        limit = self.config.scan.max_file_bytes
        if len(data) > limit:
            return f"over the size limit ({len(data):,} bytes > {limit:,})"
        if b"\0" in data[:8192]:
            return "binary file (NUL bytes)"
        return None


# -- the hook ------------------------------------------------------------------------------
def pre_commit(
    root: Path,
    config: Config,
    store: NoteStore,
    files: Iterable[str],
    *,
    all_files: bool = False,
) -> HookReport:
    """Notes (and, with ``[notes] commit``, mirrors) for staged ``files`` (repo-relative)."""
    t0 = time.perf_counter()
    report = HookReport()
    sources = Sources(config)
    commit = config.notes.commit
    index = read_index(root)
    base = _base(root)
    changes = staged_changes(root, base)

    targets: dict[str, None] = dict.fromkeys(files)
    if all_files:
        targets.update(dict.fromkeys(sorted(index.entries)))
    for ch in changes:
        if ch.status == "R" and ch.old_path is not None and sources.lang(ch.path):
            targets[ch.path] = None
            _move_notes(root, store, ch, report, commit)
        elif ch.status == "R" and ch.old_path is not None and commit:
            _remove_mirror(root, ch.old_path, report)  # renamed to something not a module
        elif ch.status == "D" and commit:
            _remove_mirror(root, ch.path, report)
    if commit:
        for path in _conflicted_mirrors(root, base, index):
            targets[path] = None

    todo: list[tuple[str, str, str]] = []  # path, lang, sha
    for path in targets:
        lang = sources.lang(path)
        if lang is None:
            continue
        if path in index.unmerged:
            report.files.append(FileResult(path, None, "skipped", reason="unmerged"))
        elif path not in index.entries:
            if commit:
                _remove_mirror(root, path, report)
        elif index.entries[path][0] not in REGULAR_MODES:
            report.files.append(
                FileResult(
                    path, None, "skipped", reason="not a regular file (symlink or submodule)"
                )
            )
        else:
            todo.append((path, lang, index.entries[path][1]))

    static = StaticBackend()
    model = _model_backend(config, report)
    with store.read() as conn:
        need = [
            (p, lang, sha)
            for p, lang, sha in todo
            if not store.has_notes(
                conn, note_key(static, p, sha, config.notes.effort), written_only=True
            )
        ]
    blobs = read_blobs(root, [sha for _, _, sha in need])
    needed = {p for p, _, _ in need}
    known = _module_paths(store, index) if need else frozenset()
    to_add: list[str] = []
    for path, lang, sha in todo:
        result = FileResult(path, sha, "reused")
        try:
            if path in needed:
                _ensure_static(root, store, path, lang, sha, blobs.get(sha), known, sources, result)
            if result.notes != "skipped" and model is not None and not sources.denied(path):
                result.queued = _queue(store, model, path, sha, config.notes.effort)
            if commit and result.notes != "skipped":
                result.mirror = mirror.write(root, mirror.from_store(store, path, sha))
                to_add.append(result.mirror)
        except (SleepyError, sqlite3.Error, OSError) as exc:
            result.notes, result.reason = "failed", str(exc)
            report.warnings.append(f"{path}: notes not written: {exc}")
        report.files.append(result)

    _stage(root, to_add, report)
    report.seconds = time.perf_counter() - t0
    return report


def _module_paths(store: NoteStore, index: Index) -> frozenset[str]:
    """What imports resolve against: the indexed modules and the staged source files."""
    with store.read() as conn:
        indexed = {r[0] for r in conn.execute("SELECT path FROM modules WHERE status = 'indexed'")}
    return frozenset(indexed | {p for p in index.entries if language_for_path(p)})


def _model_backend(config: Config, report: HookReport) -> Backend | None:
    if config.notes.backend == "static":
        return None
    try:
        backend = get_backend(config.notes.backend, config)
    except SleepyError as exc:
        report.warnings.append(f"model notes not queued: {exc}")
        return None
    try:
        ready(backend)  # the hook never calls a model; this only tells the user early
    except SleepyError as exc:
        report.warnings.append(
            f"{backend.name}: model notes are queued, but the backend cannot run now: {exc}"
        )
    return backend


def _ensure_static(
    root: Path,
    store: NoteStore,
    path: str,
    lang: str,
    sha: str,
    data: bytes | None,
    known: frozenset[str],
    sources: Sources,
    result: FileResult,
) -> None:
    """Static notes for a blob that has none in the store: from its mirror, else parsed."""
    if data is None:
        raise RepoError(f"git has no blob {sha} for {path}")
    why = sources.unusable(data)
    if why is not None:
        result.notes, result.reason = "skipped", why
        return
    denied = sources.denied(path)
    found = None if denied else mirror.read(root, path)  # a mirror of it may hold its code
    if found is not None and found.blob_sha == sha and mirror.import_sets(store, found, data):
        static = StaticBackend()
        with store.read() as conn:
            key = note_key(static, path, sha, "-")
            if store.has_notes(conn, key, written_only=True):
                result.notes = "imported"
                return
    note_blob(root, store, path, lang, data, StaticBackend(), "-", paths=known, denied=denied)
    result.notes = "written"


def _queue(store: NoteStore, backend: Backend, path: str, sha: str, effort: str) -> str | None:
    """Queue model notes for a blob that lacks them; the backend's name if queued."""
    now = time.time()
    with store.write() as conn:
        if store.has_notes(conn, note_key(backend, path, sha, effort), written_only=True):
            return None
        conn.execute(
            "INSERT INTO jobs(path, blob_sha, backend, reason, priority, status, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, 0, 'queued', ?, ?) "
            "ON CONFLICT(path, blob_sha, backend) DO UPDATE SET status = 'queued', "
            "updated_at = excluded.updated_at WHERE jobs.status != 'running'",
            (path, sha, backend.name, "pre-commit: staged content has no model notes", now, now),
        )
    return backend.name


def _move_notes(root: Path, store: NoteStore, ch: Change, report: HookReport, commit: bool) -> None:
    """A renamed module: notes of an unchanged blob move to the new path, and so does the
    mirror (regenerated under the new path, since it records the path)."""
    assert ch.old_path is not None
    if ch.old_sha == ch.new_sha and ch.new_sha:
        sets = mirror.from_store(store, ch.old_path, ch.new_sha).sets
        from_file = not sets  # else the store's own sets, which keep their origin
        if from_file:
            old = mirror.read(root, ch.old_path)
            sets = old.sets if old is not None and old.blob_sha == ch.new_sha else []
        if sets:
            moved = mirror.Mirror(ch.path, ch.new_sha, [mirror.rekey(s, ch.path) for s in sets])
            try:
                data = read_blobs(root, [ch.new_sha]).get(ch.new_sha, b"")
                mirror.import_sets(store, moved, data, from_file=from_file)
            except (SleepyError, sqlite3.Error) as exc:
                report.warnings.append(f"{ch.path}: notes not moved from {ch.old_path}: {exc}")
    if commit:
        old_rel = _remove_mirror(root, ch.old_path, report, record=False)
        if old_rel is not None:
            report.moved.append((old_rel, mirror.mirror_relpath(ch.path)))


def _remove_mirror(root: Path, path: str, report: HookReport, *, record: bool = True) -> str | None:
    """Delete a module's mirror from the work tree and the index."""
    rel = mirror.mirror_relpath(path)
    removed = mirror.remove(root, path)
    tracked = _git(root, "ls-files", "-z", "--", rel)
    if tracked:
        _git(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", rel)
    if removed is None and not tracked:
        return None
    if record:
        report.removed.append(rel)
    return rel


def _conflicted_mirrors(root: Path, base: str, index: Index) -> list[str]:
    """Sources whose staged (or unmerged) mirror has conflict markers: they get a new one."""
    prefix = f"{mirror.notes_dir(root).relative_to(root).as_posix()}/"
    changed = {
        _decode(p)
        for p in _git(root, "diff", "--cached", "--name-only", "-z", base, "--", prefix).split(
            b"\0"
        )
        if p
    }
    changed |= {p for p in index.unmerged if p.startswith(prefix)}
    out = []
    for rel in sorted(changed):
        source = mirror.source_of(rel)
        if source is None:
            continue
        try:
            text = (root / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if rel in index.unmerged or mirror.has_conflict(text):
            out.append(source)
    return out


def _stage(root: Path, rels: list[str], report: HookReport) -> None:
    if not rels:
        return
    try:
        _git(root, "add", "--", *rels)
    except RepoError as exc:
        report.warnings.append(f"mirrors written but not staged: {exc}")
        return
    report.staged.extend(rels)


# -- the CI check --------------------------------------------------------------------------
def check(
    root: Path, config: Config, files: Iterable[str], *, all_files: bool = False
) -> CheckReport:
    """Files whose mirror is missing, unparseable, or records another blob than their
    current content (or whose mirror outlived them)."""
    sources = Sources(config)
    targets: dict[str, None] = dict.fromkeys(files)
    if all_files:
        targets.update(dict.fromkeys(read_index(root).entries))
    report = CheckReport()
    for path in targets:
        if sources.lang(path) is None:
            continue
        rel = mirror.mirror_relpath(path)
        try:
            data: bytes | None = (root / path).read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            report.stale.append(StaleMirror(path, rel, f"cannot read the file: {exc}"))
            continue
        if data is not None and sources.unusable(data):
            continue
        report.checked += 1
        recorded, problem = mirror.read_blob_sha(root, path)
        if data is None:
            if problem != "no mirror":
                report.stale.append(
                    StaleMirror(path, rel, "the file is gone but its mirror remains")
                )
        elif problem is not None:
            report.stale.append(StaleMirror(path, rel, problem))
        elif recorded != (current := blob_sha(data)):
            report.stale.append(
                StaleMirror(
                    path,
                    rel,
                    f"the mirror records blob {str(recorded)[:12]}, the file is {current[:12]}",
                )
            )
    return report
