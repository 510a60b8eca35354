"""Sleep: write notes for modules that lack them, with one backend.

For each module: reuse notes already stored for its blob (switching branches back and
forth costs nothing), else ask the backend for a draft, ground its citations in the parse,
and store it. When a module's content changed, notes of its previous blob are carried over
item by item: items whose cited spans are unchanged stay fresh, the others are served as
stale until re-noted.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from sleepy_repo.index import Changed
from sleepy_repo.models.base import Backend, Caller, NoteRequest
from sleepy_repo.notes import Citation, ModuleNotes, NoteKey, carry_over, ground, span_sha
from sleepy_repo.parse.facts import ModuleFacts
from sleepy_repo.scan import blob_sha
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

MAX_CALLERS = 6
# callers are matched by name, so only within languages that can call each other
LANGUAGE_FAMILIES: tuple[tuple[str, ...], ...] = (("javascript", "typescript", "tsx"),)
STATIC_EFFORT = "-"  # static notes have no effort level

Progress = Callable[[int, int], None]


@dataclass
class SleepReport:
    backend: str
    written: int = 0
    reused: int = 0
    carried: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    dropped_citations: int = 0


def note_key(backend: Backend, path: str, blob: str, effort: str) -> NoteKey:
    return NoteKey(
        path=path,
        blob_sha=blob,
        prompt_version=backend.prompt_version,
        backend=backend.name,
        model=backend.model,
        effort=effort if backend.generated else STATIC_EFFORT,
    )


def _callers(conn: sqlite3.Connection, facts: ModuleFacts) -> dict[str, list[Caller]]:
    """Call sites of each public top-level symbol elsewhere, matched by name (heuristic),
    each cited by the symbol that encloses the call."""
    out: dict[str, list[Caller]] = {}
    family = next((f for f in LANGUAGE_FAMILIES if facts.lang in f), (facts.lang,))
    marks = ",".join("?" * len(family))
    for sym in facts.symbols:
        if not sym.exported or sym.parent is not None:
            continue
        rows = conn.execute(
            "SELECT path, line, caller, caller_start, caller_end FROM refs "
            f"WHERE name = ? AND lang IN ({marks}) AND path != ? AND caller IS NOT NULL "
            "LIMIT ?",
            (sym.name, *family, facts.path, MAX_CALLERS),
        ).fetchall()
        callers = [
            Caller(
                path=path,
                symbol=qualname,
                line=line,
                citation=Citation(path, start, end, qualname, ""),
            )
            for path, line, qualname, start, end in rows
        ]
        if callers:
            out[sym.qualname] = callers
    return out


def _read_lines(root: Path, path: str, expected_blob: str) -> list[str] | None:
    """The module's lines if the file still has the indexed content, else None."""
    try:
        data = (root / path).read_bytes()
    except OSError:
        return None
    if blob_sha(data) != expected_blob:
        return None
    return data.decode("utf-8", "replace").splitlines()


def _fill_caller_hashes(
    callers: dict[str, list[Caller]], lines_of: Callable[[str], list[str]]
) -> None:
    """Caller citations point into other modules: hash their spans from the work tree."""
    for lst in callers.values():
        for i, c in enumerate(lst):
            cit = c.citation
            sha = span_sha(lines_of(c.path), cit.start_line, cit.end_line)
            lst[i] = replace(c, citation=replace(cit, span_sha=sha))


def write_notes(
    root: Path,
    store: NoteStore,
    backend: Backend,
    *,
    effort: str,
    paths: Iterable[str] | None = None,
    force: Iterable[str] = (),
    changed: Iterable[Changed] = (),
    progress: Progress | None = None,
) -> SleepReport:
    """Write missing notes for ``paths`` (all indexed modules by default).

    ``force`` re-notes modules even when notes for their blob exist (their graph context
    changed). ``changed`` lists modules whose content changed, for carry-over.
    """
    report = SleepReport(backend=backend.name)
    force = set(force)
    with store.read() as conn:
        rows = conn.execute(
            "SELECT path, blob_sha FROM modules WHERE status = 'indexed' ORDER BY path"
        ).fetchall()
    wanted = set(paths) if paths is not None else None
    modules = [(p, b) for p, b in rows if wanted is None or p in wanted]

    _carry(root, store, [c for c in changed if c.old_blob], report)

    todo: list[tuple[str, str]] = []
    with store.read() as conn:
        for path, blob in modules:
            key = note_key(backend, path, blob, effort)
            if path not in force and store.has_notes(conn, key, written_only=True):
                report.reused += 1
            else:
                todo.append((path, blob))

    @lru_cache(maxsize=512)
    def lines_of(path: str) -> list[str]:
        try:
            return (root / path).read_text("utf-8", "replace").splitlines()
        except OSError:
            return []

    batch: list[ModuleNotes] = []
    with store.read() as conn:
        for i, (path, blob) in enumerate(todo):
            try:
                notes = _note_one(root, conn, backend, path, blob, effort, lines_of)
            except Exception as exc:  # a backend failure loses this module's notes, not the run
                log.warning("notes for %s failed: %s", path, exc)
                report.failed.append((path, str(exc)))
                notes = None
            if notes is not None:
                batch.append(notes)
                report.dropped_citations += notes.dropped_citations
            if len(batch) >= 100:
                report.written += _store_batch(store, batch, backend)
            if progress:
                progress(i + 1, len(todo))
    report.written += _store_batch(store, batch, backend)
    return report


def _store_batch(store: NoteStore, batch: list[ModuleNotes], backend: Backend) -> int:
    n = len(batch)
    if not batch:
        return 0
    with store.write() as conn:
        for notes in batch:
            store.put_notes(conn, notes, origin="written")
            if backend.generated:
                store.add_ledger(
                    conn,
                    backend=backend.name,
                    model=backend.model,
                    path=notes.key.path,
                    reason="notes",
                )
    batch.clear()
    return n


def _note_one(
    root: Path,
    conn: sqlite3.Connection,
    backend: Backend,
    path: str,
    blob: str,
    effort: str,
    lines_of: Callable[[str], list[str]],
) -> ModuleNotes | None:
    lines = _read_lines(root, path, blob)
    if lines is None:
        log.info("%s changed since it was indexed; its notes wait for the next refresh", path)
        return None
    data = NoteStore.facts_json(conn, path)
    if data is None:
        return None
    facts = ModuleFacts.from_dict(data)
    imports = [
        r[0] for r in conn.execute("SELECT dst FROM edges WHERE src = ? ORDER BY dst", (path,))
    ]
    imported_by = [
        r[0] for r in conn.execute("SELECT src FROM edges WHERE dst = ? ORDER BY src", (path,))
    ]
    callers = _callers(conn, facts)
    _fill_caller_hashes(callers, lines_of)
    request = NoteRequest(
        facts=facts,
        lines=lines,
        imports=imports,
        imported_by=imported_by,
        callers=callers,
        effort=effort,
    )
    draft = backend.write_notes(request)
    return ground(draft, facts, lines, note_key(backend, path, blob, effort))


def _carry(root: Path, store: NoteStore, changed: list[Changed], report: SleepReport) -> None:
    """Re-anchor generated notes of each changed module's previous blob in its new blob."""
    for ch in changed:
        with store.read() as conn:
            old_keys = [
                k
                for k in store.note_keys(conn, ch.path, ch.old_blob or "")
                if k.effort != STATIC_EFFORT
            ]
            if not old_keys:
                continue
            data = store.facts_json(conn, ch.path)
        lines = _read_lines(root, ch.path, ch.new_blob)
        if data is None or lines is None:
            continue
        facts = ModuleFacts.from_dict(data)
        with store.write() as conn:
            for old in old_keys:
                new_key = NoteKey(
                    ch.path, ch.new_blob, old.prompt_version, old.backend, old.model, old.effort
                )
                if store.has_notes(conn, new_key):
                    continue
                items = carry_over(store.load_items(conn, old), facts, lines)
                store.put_notes(conn, ModuleNotes(key=new_key, items=items), origin="carried")
                report.carried += 1
