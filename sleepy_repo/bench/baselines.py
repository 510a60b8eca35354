"""The frozen ``raw`` baseline: BM25 over 40-line windows of code, independent of the product.

The product's chunker, stopwords, query words and ranking will change (that is the point of
the benchmark); this baseline must not move with them, so it shares none of their code:

* **files**: the tracked files of the state (``git ls-files -s``) that sleepy-repo parses
  (``language_for_path``: the same languages the product scans), minus the config's
  ``[scan] exclude`` and ``deny`` patterns, symlinks, submodules, files over
  ``[scan] max_file_bytes`` and binary files (a NUL byte in the first 8 KiB);
* **windows**: lines 1-40, 41-80, ... of each file (split at ``\\n`` only, a trailing
  ``\\r`` dropped); a window with no word is not indexed;
* **words**: runs of ASCII letters and digits, camelCase split (``parseHTTPHeader`` ->
  ``parse http header``; ``snake_case`` splits at the underscore), lower-cased; the
  window's words are stored space-separated in an FTS5 table of its own, which stems
  them (SQLite's ``tokenize='porter unicode61'``);
* **query**: the question's words, minus ``STOPWORDS`` (English function words), those
  shorter than 2 characters and numbers, at most 32, OR-ed;
* **rank**: FTS5's ``bm25()`` (k1 = 1.2, b = 0.75), best first, ties by path and line.

The index is kept across states and brought in step with each one by blob sha: only files
whose blob changed are re-read.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from sleepy_repo.parse.languages import language_for_path

log = logging.getLogger(__name__)

WINDOW_LINES = 40
MAX_QUERY_WORDS = 32
SEARCH_LIMIT = 300
_STOPWORDS_TEXT = """
    a about after all also an and any are as at be been before being but by can could
    did do does doing for from had has have having he her here his how i if in into is
    it its just me more most my no nor not of off on once only or other our out over own
    same she should so some such than that the their them then there these they this
    those through to too under until up very was we were what when where which while who
    whom why will with would you your
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

_RUN = re.compile(r"[A-Za-z0-9]+")
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def words(text: str) -> list[str]:
    """The baseline's words of ``text`` (see the module docstring), in order."""
    return [p.lower() for run in _RUN.findall(text) for p in _PART.findall(run)]


def query_words(question: str) -> list[str]:
    out: dict[str, None] = {}
    for w in words(question):
        if len(w) >= 2 and not w.isdigit() and w not in STOPWORDS:
            out.setdefault(w, None)
    return list(out)[:MAX_QUERY_WORDS]


def file_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


@dataclass(frozen=True)
class Window:
    path: str
    start_line: int
    end_line: int
    text: str  # the lines start_line..end_line, joined with "\n"


def windows(path: str, text: str) -> list[Window]:
    lines = file_lines(text)
    out = []
    for start in range(1, len(lines) + 1, WINDOW_LINES):
        end = min(start + WINDOW_LINES - 1, len(lines))
        body = "\n".join(lines[start - 1 : end])
        if _RUN.search(body):
            out.append(Window(path, start, end, body))
    return out


@dataclass(frozen=True)
class Tracked:
    path: str
    blob: str


def tracked_files(
    root: Path, exclude: Iterable[str] = (), deny: Iterable[str] = ()
) -> list[Tracked]:
    """The files the baseline indexes at the worktree's state (see the module docstring)."""
    out = subprocess.run(
        ["git", "-C", str(root), "-c", "core.quotePath=false", "ls-files", "-s", "-z"],
        capture_output=True,
        check=True,
    ).stdout
    skip = pathspec.GitIgnoreSpec.from_lines([*exclude, *deny])
    files = []
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, _, raw = rec.partition(b"\t")
        mode, blob, _stage = meta.decode().split()
        path = raw.decode("utf-8", "surrogateescape")
        if mode not in ("100644", "100755") or language_for_path(path) is None:
            continue
        if skip.match_file(path):
            continue
        files.append(Tracked(path, blob))
    return files


class RawIndex:
    """The baseline's in-memory FTS5 index of windows, kept in step with a worktree."""

    def __init__(self, max_file_bytes: int = 1_000_000) -> None:
        self.max_file_bytes = max_file_bytes
        self._conn = sqlite3.connect(":memory:")
        self._conn.execute(
            "CREATE VIRTUAL TABLE windows USING fts5(body, path UNINDEXED, "
            "start_line UNINDEXED, end_line UNINDEXED, text UNINDEXED, tokenize='porter unicode61')"
        )
        self.files: dict[str, tuple[str, list[int]]] = {}  # path -> (blob, rowids)
        self.reads = 0  # files read so far (the cache's effect, for tests)

    def sync(self, root: Path, files: Iterable[Tracked]) -> None:
        now = {f.path: f.blob for f in files}
        conn = self._conn
        for path in [p for p, (blob, _) in self.files.items() if now.get(p) != blob]:
            _, rowids = self.files.pop(path)
            conn.executemany("DELETE FROM windows WHERE rowid = ?", [(r,) for r in rowids])
        for path in sorted(p for p in now if p not in self.files):
            self.files[path] = (now[path], self._add(root, path))
        conn.commit()

    def _add(self, root: Path, path: str) -> list[int]:
        try:
            data = (root / path).read_bytes()
        except OSError as exc:
            log.debug("raw baseline: cannot read %s: %s", path, exc)
            return []
        self.reads += 1
        if len(data) > self.max_file_bytes or b"\0" in data[:8192]:
            return []
        rowids = []
        for w in windows(path, data.decode("utf-8", "replace")):
            cur = self._conn.execute(
                "INSERT INTO windows(body, path, start_line, end_line, text) "
                "VALUES (?, ?, ?, ?, ?)",
                (" ".join(words(w.text)), w.path, w.start_line, w.end_line, w.text),
            )
            assert cur.lastrowid is not None
            rowids.append(cur.lastrowid)
        return rowids

    def search(self, question: str, limit: int = SEARCH_LIMIT) -> list[Window]:
        terms = query_words(question)
        if not terms:
            return []
        rows = self._conn.execute(
            "SELECT path, start_line, end_line, text FROM windows WHERE windows MATCH ? "
            "ORDER BY bm25(windows), path, start_line LIMIT ?",
            (" OR ".join(f'"{t}"' for t in terms), limit),
        )
        return [Window(p, int(s), int(e), t) for p, s, e, t in rows]

    def close(self) -> None:
        self._conn.close()
