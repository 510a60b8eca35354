"""Index: bring the store's facts in step with the work tree (scan -> parse -> store).

Only files whose size or mtime changed are read; only files whose blob sha changed are
parsed. Symbols, references, import edges, raw code chunks and the full-text indexes are
written in short batched transactions. The report says what changed, which the note
writer uses to re-note exactly the modules whose content or graph context moved.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from sleepy_repo.config import Config
from sleepy_repo.notes import source_lines, span_hashes
from sleepy_repo.parse import ModuleFacts, Symbol, parse_module, resolve_import
from sleepy_repo.redact import DenyList
from sleepy_repo.scan import (
    Candidate,
    ScanResult,
    Skipped,
    UnreadableModule,
    read_module,
    scan,
)
from sleepy_repo.store import Chunk, ModuleRows, NoteStore, module_rows

log = logging.getLogger(__name__)

BATCH = 200
MIN_BATCH = 20
PARALLEL_MIN = 200  # modules to (re)parse before worker processes pay off
WORKER_NICE = 10  # how much lower worker processes run than the process storing their results
CHUNK_LINES = 60
# bump when the parse of unchanged content changes (queries, symbols): a store indexed by
# another version parses every module again at its next refresh (2: TypeScript overload
# signatures and ambient declarations are symbols)
PARSE_VERSION = 3  # 3: a deny-listed module stores no code chunks
WRITE_CACHE_KIB = -65536  # page cache of a batch write (negative: KiB), for index inserts

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class Changed:
    path: str
    old_blob: str | None
    new_blob: str


@dataclass
class IndexReport:
    scan: ScanResult
    modules: int = 0
    changed: list[Changed] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    affected: set[str] = field(default_factory=set)  # graph context changed
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def code_chunks(facts: ModuleFacts, lines: list[str]) -> list[Chunk]:
    """Split a module into raw code chunks for BM25: the module header, each top-level
    symbol's span (in ``CHUNK_LINES`` windows when long), and the module-level code in
    between. Header and symbol chunks are *servable*: they are exact cited spans. The
    gaps are searched but never served.
    """
    n = len(lines)
    out: list[Chunk] = []

    def emit(start: int, end: int, symbol: str | None, servable: bool) -> None:
        s = start
        while s <= end:
            e = min(end, s + CHUNK_LINES - 1)
            text = "\n".join(lines[s - 1 : e])
            if text.strip():
                out.append((s, e, symbol if s == start else None, text, servable))
            s = e + 1

    header_end = min(facts.header_end, n)
    if header_end > 0:
        emit(1, header_end, None, True)
    cursor = header_end + 1
    # top level = not inside another symbol's span (Go methods and Rust impl methods have a
    # parent type but stand outside its span, so they are top-level chunks too)
    tops: list[Symbol] = []
    reach = 0
    for sym in sorted(facts.symbols, key=lambda s: (s.start_line, -s.end_line)):
        if sym.start_line > reach:
            tops.append(sym)
            reach = sym.end_line
    for sym in tops:
        if sym.start_line < cursor or sym.start_line > n:
            continue
        if cursor < sym.start_line:
            emit(cursor, sym.start_line - 1, None, False)
        end = min(sym.end_line, n)
        emit(sym.start_line, end, sym.qualname, True)
        cursor = end + 1
    if cursor <= n:
        emit(cursor, n, None, False)
    return out


def imported_paths(facts: ModuleFacts, paths: frozenset[str], go_module: str | None) -> set[str]:
    """The repo files a module imports (its import edges), resolved against ``paths``."""
    return {
        d
        for imp in facts.imports
        for d in resolve_import(facts.path, facts.lang, imp, paths, go_module)
        if d != facts.path
    }


def go_module_path(root: Path) -> str | None:
    """The module path declared in the repo's root ``go.mod``, if any."""
    try:
        for line in (root / "go.mod").read_text(encoding="utf-8").splitlines():
            if line.startswith("module "):
                return line.split()[1]
    except (OSError, UnicodeDecodeError, IndexError):
        pass
    return None


@dataclass
class Prepared:
    """One module read, hashed, parsed and turned into rows (possibly in a worker)."""

    cand: Candidate
    skipped: str | None = None  # why it could not be read
    same: bool = False  # content unchanged, only the mtime moved
    # what edges and the report need; its symbols, references and span hashes are only
    # in ``rows``
    facts: ModuleFacts | None = None
    blob_sha: str = ""
    warning: str | None = None  # from reading (not UTF-8 ...)
    rows: ModuleRows | None = None  # everything stored about the module

    @property
    def chunks(self) -> list[Chunk]:
        return self.rows.chunks if self.rows is not None else []


def names_only(facts: ModuleFacts) -> ModuleFacts:
    """The facts of a deny-listed module: its symbols' names and kinds, no signature (a
    default value may be a secret), no docstring or comment."""
    return replace(
        facts,
        doc="",
        symbols=[replace(s, signature=f"{s.kind} {s.name}", doc="") for s in facts.symbols],
    )


Job = tuple[Path, Candidate, int, str | None, bool]  # root, module, size limit, blob, denied


def _prepare(job: Job) -> Prepared:
    root, cand, max_bytes, stored_blob, denied = job
    try:
        content = read_module(root, cand, max_bytes)
    except UnreadableModule as exc:
        return Prepared(cand, skipped=str(exc))
    if content.blob_sha == stored_blob:
        return Prepared(cand, same=True)
    facts = parse_module(cand.path, content.data, cand.lang)
    if denied:  # what is stored is what can be served: paths and symbol names only
        facts = names_only(facts)
    lines = source_lines(content.text)
    facts.span_shas = span_hashes(facts, lines)
    rows = module_rows(
        lang=cand.lang,
        blob_sha=content.blob_sha,
        size=cand.size,
        mtime_ns=cand.mtime_ns,
        warning=_warning(content.warning, facts),
        facts=facts,
        # a deny-listed module's code is neither searchable nor embedded (its units come
        # from its chunks), not only never served
        chunks=[] if denied else code_chunks(facts, lines),
    )
    return Prepared(
        cand,
        # symbols, references and span hashes are the bulk of the facts: they travel back
        # as rows only
        facts=replace(facts, symbols=[], references=[], span_shas={}),
        blob_sha=content.blob_sha,
        warning=content.warning,
        rows=rows,
    )


T = TypeVar("T")
R = TypeVar("R")


def in_workers(fn: Callable[[T], R], items: list[T], *, modules: int) -> Iterator[R]:
    """``map(fn, items)`` in order; in worker processes when the items cover at least
    ``PARALLEL_MIN`` modules and there is more than one core (the caller meanwhile stores
    the results). ``fn`` and the items must pickle; ``fn`` opens its own store connections
    (never one inherited from the parent). The workers run at a lower priority
    (``_lower_priority``)."""
    if modules < PARALLEL_MIN or (os.cpu_count() or 1) < 2:
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context(start_method())
    with ProcessPoolExecutor(
        max_workers=os.cpu_count(), mp_context=ctx, initializer=_lower_priority
    ) as pool:
        yield from pool.map(fn, items, chunksize=max(1, min(16, len(items) // 64)))


def _lower_priority() -> None:
    """Run this worker ``WORKER_NICE`` steps nicer than its parent. One worker per core
    plus the parent that stores their results oversubscribe the cores; at equal priority
    the parent falls behind and is left storing a backlog, on one core, after the last
    worker has finished. Nicer workers also leave the editor responsive during a refresh.
    Where priorities cannot be changed, nothing happens."""
    with contextlib.suppress(AttributeError, OSError):  # no os.nice (Windows), not allowed
        os.nice(WORKER_NICE)


def start_method() -> str:
    """How worker processes start: ``fork`` (fast: nothing to import again) only on Linux
    and only while this process has a single thread. A fork copies every lock another
    thread holds at that instant (the watcher's and the language server's threads log,
    import and write), and a worker that then needs one waits forever; elsewhere, a
    ``forkserver`` (Linux: forked from a clean single-threaded server) or ``spawn``."""
    if sys.platform != "linux":
        return "spawn"
    return "fork" if threading.active_count() == 1 else "forkserver"


def batch_due(size: int, remaining: int, most: int, least: int) -> bool:
    """Whether a write batch of ``size`` items is due: at ``most``, and sooner toward the
    end of a run (down to ``least`` when few items remain), so the last write, which no
    worker overlaps, stays short."""
    return size >= min(most, max(least, remaining))


def _prepared(jobs: list[Job]) -> Iterator[Prepared]:
    """Prepare modules in order; in worker processes when there are many (parsing is the
    CPU-bound part, and the main process meanwhile writes to the store)."""
    return in_workers(_prepare, jobs, modules=len(jobs))


def update_index(
    root: Path,
    is_git: bool,
    config: Config,
    store: NoteStore,
    progress: Progress | None = None,
) -> IndexReport:
    t0 = time.perf_counter()
    result = scan(root, is_git, config.scan)
    report = IndexReport(scan=result, skipped=list(result.skipped), warnings=list(result.warnings))
    with store.read() as conn:
        stored = store.modules(conn)
        # a new parser, or a new deny list (what a denied module's facts keep), parses again
        # (a store from before the deny list was recorded kept denied modules' facts)
        new_deny = bool(stored) and store.get_meta(conn, "deny_globs", None) != list(
            config.scan.deny
        )
        reparse = new_deny or (
            bool(stored) and store.get_meta(conn, "parse_version", 1) != PARSE_VERSION
        )
    deny = DenyList(config.scan.deny)
    if reparse:
        # notes and vectors of a module that is deny-listed now were written from its full
        # facts or its code: dropped, so its static notes are written again from names
        with store.write() as conn:
            store.delete_notes(conn, [p for p in stored if deny.denied(p)])

    present = {c.path for c in result.candidates} | {s.path for s in result.skipped}
    report.removed = sorted(p for p in stored if p not in present)
    todo: list[Candidate] = []
    for cand in result.candidates:
        row = stored.get(cand.path)
        if (
            not reparse
            and row is not None
            and row.status == "indexed"
            and row.size == cand.size
            and row.mtime_ns == cand.mtime_ns
        ):
            continue
        todo.append(cand)

    old_refs: dict[str, set[str]] = {}
    old_edges: dict[str, set[str]] = {}
    pending: list[tuple[Candidate, object]] = []
    parsed: dict[str, ModuleFacts] = {}  # imports and lines only (see Prepared)
    total = len(todo)
    # Import edges are resolved as each module arrives, against the paths the scan found,
    # and written with the module (not in a serial pass after the last one): exact when
    # every candidate ends up indexed, which ``_update_edges`` checks (it redoes them if not)
    known = frozenset(c.path for c in result.candidates)
    go_module = go_module_path(root)
    early: dict[str, list[str]] = {}

    def flush() -> None:
        if not pending:
            return
        with store.write() as conn:
            conn.execute(f"PRAGMA cache_size = {WRITE_CACHE_KIB}")
            # rows are replaced in order; a run of new modules goes in as one batch
            present = _present(conn, [cand.path for cand, _ in pending])
            run: list[ModuleRows] = []
            for cand, item in pending:
                row = stored.get(cand.path)
                if (
                    isinstance(item, Prepared)
                    and cand.path not in present
                    and (row is None or row.status != "indexed")
                ):
                    assert item.rows is not None
                    run.append(item.rows)
                    continue
                store.insert_modules(conn, run)
                run.clear()
                if isinstance(item, str):  # skipped reason
                    store.put_skipped(conn, cand.path, item)
                    continue
                if item is None:  # same content, new mtime
                    store.touch_module(conn, cand.path, cand.mtime_ns)
                    continue
                assert isinstance(item, Prepared) and item.rows is not None
                if row is not None and row.status == "indexed":
                    old_refs[cand.path] = {
                        r[0]
                        for r in conn.execute(
                            "SELECT DISTINCT name FROM refs WHERE path = ?", (cand.path,)
                        )
                    }
                    old_edges[cand.path] = {
                        r[0]
                        for r in conn.execute("SELECT dst FROM edges WHERE src = ?", (cand.path,))
                    }
                store.delete_module(conn, cand.path)
                run.append(item.rows)
            store.insert_modules(conn, run)
            for cand, item in pending:
                if isinstance(item, Prepared):
                    store.set_edges(conn, cand.path, early[cand.path])
        pending.clear()

    newly_skipped = [
        s
        for s in result.skipped
        if (row := stored.get(s.path)) is None or row.status != "skipped" or row.reason != s.reason
    ]
    if newly_skipped:
        with store.write() as conn:
            for s in newly_skipped:
                store.put_skipped(conn, s.path, s.reason)

    jobs: list[Job] = [
        (
            root,
            c,
            config.scan.max_file_bytes,
            row.blob_sha
            if not reparse and (row := stored.get(c.path)) and row.status == "indexed"
            else None,
            deny.denied(c.path),
        )
        for c in todo
    ]
    for done, prep in enumerate(_prepared(jobs), 1):
        cand = prep.cand
        row = stored.get(cand.path)
        if prep.skipped is not None:
            report.skipped.append(Skipped(cand.path, prep.skipped))
            pending.append((cand, prep.skipped))
        elif prep.same:
            pending.append((cand, None))
        else:
            facts = prep.facts
            assert facts is not None
            if prep.warning:
                report.warnings.append(f"{cand.path}: {prep.warning}")
            if facts.syntax_errors:
                report.warnings.append(
                    f"{cand.path}: {facts.syntax_errors} syntax error(s); kept what parsed"
                )
            pending.append((cand, prep))
            parsed[cand.path] = facts
            early[cand.path] = sorted(imported_paths(facts, known, go_module))
            report.changed.append(Changed(cand.path, row.blob_sha if row else None, prep.blob_sha))
        if batch_due(len(pending), total - done, BATCH, MIN_BATCH):
            flush()
        if progress:
            progress(done, total)
    flush()

    if report.removed:
        with store.write() as conn:
            for path in report.removed:
                old_edges[path] = {
                    r[0] for r in conn.execute("SELECT dst FROM edges WHERE src = ?", (path,))
                }
                old_refs[path] = {
                    r[0]
                    for r in conn.execute("SELECT DISTINCT name FROM refs WHERE path = ?", (path,))
                }
                store.delete_module(conn, path)
                conn.execute("DELETE FROM edges WHERE dst = ?", (path,))

    paths_changed = any(c.old_blob is None for c in report.changed) or bool(report.removed)
    if report.changed or report.removed:
        _update_edges(
            store,
            report,
            old_edges,
            old_refs,
            parsed,
            recompute_all=paths_changed,
            cold=not stored,
            early=early,
            known=known,
            go_module=go_module,
        )
    with store.write() as conn:
        store.set_meta(conn, "parse_version", PARSE_VERSION)
        store.set_meta(conn, "deny_globs", list(config.scan.deny))
        store.set_meta(
            conn,
            "last_scan",
            {
                "is_git": result.is_git,
                "head": result.head,
                "branch": result.branch,
                "submodules": result.submodules,
                "warnings": report.warnings,
                "at": time.time(),
            },
        )
    with store.read() as conn:
        report.modules = conn.execute(
            "SELECT count(*) FROM modules WHERE status = 'indexed'"
        ).fetchone()[0]
    report.seconds = time.perf_counter() - t0
    return report


def _present(conn: sqlite3.Connection, paths: list[str]) -> set[str]:
    """Which of ``paths`` have a row in ``modules`` now (another process may have written
    since this one read the store)."""
    out: set[str] = set()
    for i in range(0, len(paths), 500):
        part = paths[i : i + 500]
        marks = ",".join("?" * len(part))
        out.update(
            r[0] for r in conn.execute(f"SELECT path FROM modules WHERE path IN ({marks})", part)
        )
    return out


def _warning(read_warning: str | None, facts: ModuleFacts) -> str | None:
    parts = [w for w in (read_warning,) if w]
    if facts.syntax_errors:
        parts.append(f"{facts.syntax_errors} syntax error(s); kept what parsed")
    return "; ".join(parts) or None


def _update_edges(
    store: NoteStore,
    report: IndexReport,
    old_edges: dict[str, set[str]],
    old_refs: dict[str, set[str]],
    parsed: dict[str, ModuleFacts],
    *,
    recompute_all: bool,
    cold: bool,
    early: dict[str, list[str]],
    known: frozenset[str],
    go_module: str | None,
) -> None:
    """Resolve imports to edges, and collect modules whose graph context changed.

    ``early``: edges already written, resolved against ``known`` (the scan's paths); they
    stand when ``known`` is exactly the set of indexed modules, else they are redone."""
    changed = {c.path for c in report.changed}
    with store.read() as conn:
        paths = frozenset(
            r[0] for r in conn.execute("SELECT path FROM modules WHERE status = 'indexed'")
        )
        targets = paths if recompute_all else frozenset(changed & paths)
        facts_by_path = {p: parsed[p] for p in targets if p in parsed}
        for p in targets - parsed.keys():
            if (f := store.facts_json(conn, p)) is not None:
                facts_by_path[p] = ModuleFacts.from_dict(f)
    affected: set[str] = set()
    if paths != known:
        early = {}  # a candidate was not indexed (unreadable): resolve against the index
    with store.write() as conn:
        for path, facts in facts_by_path.items():
            written = early.get(path)
            dsts = set(written) if written is not None else imported_paths(facts, paths, go_module)
            before = old_edges.get(path)
            if before is None and path not in changed:
                before = {
                    r[0] for r in conn.execute("SELECT dst FROM edges WHERE src = ?", (path,))
                }
            if written is None:
                store.set_edges(conn, path, sorted(dsts))
            if before is not None:
                affected |= before ^ dsts
                if before != dsts:
                    affected.add(path)
            else:
                affected |= dsts
        if cold:  # everything is new: nothing else to re-note
            report.affected = set()
            return
        # callers are matched by name: a module whose calls changed affects the definers
        names: set[str] = set()
        for path in changed | set(report.removed):
            new = {
                r[0] for r in conn.execute("SELECT DISTINCT name FROM refs WHERE path = ?", (path,))
            }
            names |= new ^ old_refs.get(path, set())
        for name in names:
            affected.update(
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT path FROM symbols "
                    "WHERE name = ?1 COLLATE NOCASE AND name = ?1 AND exported = 1",
                    (name,),
                )
            )
    report.affected = (affected & paths) - changed
