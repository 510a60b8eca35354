"""Sleep: write notes for modules that lack them, with one backend.

For each module: reuse notes already stored for its blob (switching branches back and
forth costs nothing), else ask the backend for a draft, ground its citations in the parse,
and store it. When a module's content changed, notes of its previous blob are carried over
item by item: items whose cited spans are unchanged stay fresh, the others are served as
stale until re-noted.

A model backend's to-do list goes through ``sleepy_repo.jobs``: queued in the store, run
under the budget with bounded concurrency, with the usage of every call in the ledger.
Deny-listed files (``[scan] deny``) are never handed to a model backend. ``plan_notes``
prices the same to-do list without calling anything (``refresh --dry-run``).
"""

from __future__ import annotations

import difflib
import json
import logging
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from sleepy_repo.budget import Budget
from sleepy_repo.config import DEFAULT_DENY, BudgetConfig
from sleepy_repo.index import (
    Changed,
    batch_due,
    go_module_path,
    imported_paths,
    in_workers,
    names_only,
)
from sleepy_repo.jobs import (
    BatchBackend,
    Job,
    JobsReport,
    collect_batches,
    pending_batches,
    run_jobs,
    submit_batch,
)
from sleepy_repo.models.base import Backend, Caller, Estimate, NoteRequest, Previous
from sleepy_repo.models.static import StaticBackend
from sleepy_repo.notes import (
    CARRIED,
    COMPLETE_ORIGINS,
    IMPORTED_CARRIED,
    Citation,
    Grounder,
    ModuleNotes,
    NoteKey,
    Usage,
    carry_over,
    from_mirror,
    ground,
    source_lines,
    span_sha,
)
from sleepy_repo.parse import parse_module
from sleepy_repo.parse.facts import ModuleFacts
from sleepy_repo.redact import DenyList, redact_text
from sleepy_repo.scan import blob_sha
from sleepy_repo.store import (
    NoteRows,
    NoteStore,
    citations_to_json,
    fts_texts,
    note_rows,
    path_words,
)
from sleepy_repo.tokens import count_tokens

log = logging.getLogger(__name__)

MAX_CALLERS = 6
NOTE_CHUNK = 16  # modules per task when static notes are written in worker processes
NOTE_BATCH = 100  # modules' notes per write transaction
# callers are matched by name, so only within languages that can call each other
LANGUAGE_FAMILIES: tuple[tuple[str, ...], ...] = (("javascript", "typescript", "tsx"),)
STATIC_EFFORT = "-"  # static notes have no effort level
OVERVIEW_MODULES = 150  # modules listed in the repo overview (most imported first)
OVERVIEW_README_LINES = 60
RETHINK_MAX_SHARE = 0.6  # rethink only when the diff is well below the module's size

Progress = Callable[[int, int], None]


@dataclass
class SleepReport:
    backend: str
    written: int = 0
    reused: int = 0
    carried: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    dropped_citations: int = 0
    # model backends only:
    queued: int = 0  # modules left in the job queue (budget, outage)
    batched: int = 0  # modules in Message Batches still pending
    stopped: str | None = None  # why model work stopped early
    not_sent: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    usage: list[Usage] = field(default_factory=list)  # every call made


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
            "SELECT path, line, caller, caller_start, caller_end, caller_sha FROM refs "
            f"WHERE name = ? AND lang IN ({marks}) AND path != ? AND caller IS NOT NULL "
            "LIMIT ?",
            (sym.name, *family, facts.path, MAX_CALLERS),
        ).fetchall()
        callers = [
            Caller(
                path=path,
                symbol=qualname,
                line=line,
                citation=Citation(path, start, end, qualname, sha or ""),
            )
            for path, line, qualname, start, end, sha in rows
        ]
        if callers:
            out[sym.qualname] = callers
    return out


def indexed_lines(root: Path, path: str, expected_blob: str) -> list[str] | None:
    """The module's lines if the file still has the indexed content, else None."""
    try:
        data = (root / path).read_bytes()
    except OSError:
        return None
    if blob_sha(data) != expected_blob:
        return None
    return source_lines(data.decode("utf-8", "replace"))


def work_tree_lines(root: Path) -> Callable[[str], list[str]]:
    """A cached reader of work-tree files as source lines (``[]`` for an unreadable one),
    for hashing spans cited in other modules."""

    @lru_cache(maxsize=512)
    def lines_of(path: str) -> list[str]:
        try:
            return source_lines((root / path).read_bytes().decode("utf-8", "replace"))
        except OSError:
            return []

    return lines_of


def _fill_caller_hashes(
    callers: dict[str, list[Caller]], lines_of: Callable[[str], list[str]]
) -> None:
    """Caller citations point into other modules: hash the spans the index did not (rows
    of an older store) from the work tree."""
    for lst in callers.values():
        for i, c in enumerate(lst):
            cit = c.citation
            if cit.span_sha:
                continue
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
    budget: Budget | None = None,
    deny: Iterable[str] | None = None,
) -> SleepReport:
    """Write missing notes for ``paths`` (all indexed modules by default).

    ``force`` re-notes modules even when notes for their blob exist (their graph context
    changed). ``changed`` lists modules whose content changed, for carry-over. A model
    backend runs under ``budget`` (default: unlimited) and never sees ``deny``-listed files
    (default: ``[scan] deny``'s defaults).
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

    lines_of = work_tree_lines(root)
    if backend.generated:
        _write_model_notes(
            root, store, backend, todo, effort, lines_of, report, budget, deny, progress
        )
        return report

    batch: list[NoteRows] = []
    for i, (path, noted) in enumerate(_static_notes(root, store, backend, todo, effort)):
        if isinstance(noted, str):  # a backend failure loses this module's notes, not the run
            log.warning("notes for %s failed: %s", path, noted)
            report.failed.append((path, noted))
        elif noted is not None:
            batch.append(noted)
            report.dropped_citations += noted.dropped_citations
        if batch_due(len(batch), len(todo) - i - 1, NOTE_BATCH, NOTE_CHUNK):
            report.written += _store_rows(store, batch)
        if progress:
            progress(i + 1, len(todo))
    report.written += _store_rows(store, batch)
    return report


def _static_notes(
    root: Path, store: NoteStore, backend: Backend, todo: list[tuple[str, str]], effort: str
) -> Iterator[tuple[str, NoteRows | str | None]]:
    """Each module's notes as rows ready to store, in order (None: it changed since it was
    indexed; a string: why the backend failed); in worker processes when there are many."""
    jobs = [
        (root, store, backend, effort, todo[i : i + NOTE_CHUNK])
        for i in range(0, len(todo), NOTE_CHUNK)
    ]
    for done in in_workers(_note_chunk, jobs, modules=len(todo)):
        yield from done


def _note_chunk(
    job: tuple[Path, NoteStore, Backend, str, list[tuple[str, str]]],
) -> list[tuple[str, NoteRows | str | None]]:
    root, store, backend, effort, todo = job
    lines_of = work_tree_lines(root)  # callers' spans the index did not hash (older stores)
    out: list[tuple[str, NoteRows | str | None]] = []
    with store.read() as conn:
        for path, blob in todo:
            try:
                if isinstance(backend, StaticBackend):
                    request = _request(root, conn, path, blob, effort, lines_of, read=False)
                    key = note_key(backend, path, blob, effort)
                    rows = None if request is None else static_rows(backend, request, key)
                else:
                    notes = _note_one(root, conn, backend, path, blob, effort, lines_of)
                    rows = None if notes is None else note_rows(notes)
            except Exception as exc:
                out.append((path, str(exc)))
                continue
            out.append((path, rows))
    return out


def static_rows(backend: StaticBackend, request: NoteRequest, key: NoteKey) -> NoteRows:
    """``note_rows(ground(backend.write_notes(request), ...))``, the same rows (tested),
    with the per-symbol items (most of a module's items) built straight from the parse:
    no draft and no grounding round for a citation the parse itself made."""
    facts = request.facts
    draft = backend.write_notes(request, symbol_items=False)
    rows = note_rows(ground(draft, facts, request.lines, key))
    grounder = Grounder(facts, request.lines)
    # a symbol's own qualname is always in the parse (of overloads sharing it, each cites
    # its own span, as grounding does with the item's line)
    cites = [
        c for sym in facts.symbols if (c := grounder.cite(sym.qualname, sym.start_line)) is not None
    ]
    assert len(cites) == len(facts.symbols)
    texts = [redact_text(backend.symbol_text(sym)) for sym in facts.symbols]
    indexed = fts_texts(texts + [(c.symbol or "").replace(".", " ") for c in cites])
    n = len(texts)
    path_terms = path_words(facts.path) + " "
    for i, (text, cit) in enumerate(zip(texts, cites, strict=True)):
        rows.items.append(
            (
                "symbol",
                None,
                text,
                cit.symbol,
                cit.start_line,
                cit.end_line,
                citations_to_json((cit,)),
                0,
                0,
            )
        )
        rows.fts.append(("", indexed[i], path_terms + indexed[n + i]))
    return rows


def _store_rows(store: NoteStore, batch: list[NoteRows]) -> int:
    n = len(batch)
    if batch:
        with store.write() as conn:
            store.insert_notes(conn, batch, origin="written")
        batch.clear()
    return n


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
    request = _request(root, conn, path, blob, effort, lines_of, read=backend.generated)
    if request is None:
        return None
    draft = backend.write_notes(request)
    return ground(draft, request.facts, request.lines, note_key(backend, path, blob, effort))


def _request(
    root: Path,
    conn: sqlite3.Connection,
    path: str,
    blob: str,
    effort: str,
    lines_of: Callable[[str], list[str]],
    overview: str = "",
    attempt: int = 1,
    *,
    read: bool = True,
) -> NoteRequest | None:
    """What a backend needs to note one module; None if it changed since it was indexed.

    ``read=False`` (static notes): the module's text is not read when the index stored its
    span hashes; the notes are of the indexed version (``lines`` is then empty)."""
    data = NoteStore.facts_json(conn, path, blob)  # (re-indexed since: no facts of `blob`)
    if data is None:
        return None
    facts = ModuleFacts.from_dict(data)
    if read or not facts.span_shas:
        lines = indexed_lines(root, path, blob)
        if lines is None:
            log.info("%s changed since it was indexed; its notes wait for the next refresh", path)
            return None
    else:
        lines = []
    imports = [
        r[0] for r in conn.execute("SELECT dst FROM edges WHERE src = ? ORDER BY dst", (path,))
    ]
    return _in_context(conn, facts, lines, imports, effort, lines_of, overview, attempt)


def _in_context(
    conn: sqlite3.Connection,
    facts: ModuleFacts,
    lines: list[str],
    imports: list[str],
    effort: str,
    lines_of: Callable[[str], list[str]],
    overview: str = "",
    attempt: int = 1,
) -> NoteRequest:
    """A module's facts with its graph context from the store: importers and callers."""
    imported_by = [
        r[0]
        for r in conn.execute("SELECT src FROM edges WHERE dst = ? ORDER BY src", (facts.path,))
    ]
    callers = _callers(conn, facts)
    _fill_caller_hashes(callers, lines_of)
    return NoteRequest(
        facts=facts,
        lines=lines,
        imports=imports,
        imported_by=imported_by,
        callers=callers,
        effort=effort,
        overview=overview,
        attempt=attempt,
    )


def repo_overview(root: Path, conn: sqlite3.Connection, deny: DenyList) -> str:
    """The repo-level prefix every model call shares (so it is cached): languages, the most
    imported modules with their first doc line, and the head of the README. Deterministic,
    so it stays byte-identical across the calls of a run."""
    langs = conn.execute(
        "SELECT lang, count(*) FROM modules WHERE status = 'indexed' GROUP BY lang "
        "ORDER BY count(*) DESC, lang"
    ).fetchall()
    top = conn.execute(
        "SELECT m.path, m.facts_json, (SELECT count(*) FROM edges e WHERE e.dst = m.path) AS n "
        "FROM modules m WHERE m.status = 'indexed' ORDER BY n DESC, m.path LIMIT ?",
        (OVERVIEW_MODULES,),
    ).fetchall()
    total = sum(n for _, n in langs)
    out = [
        f"Repository: {root.name} ({total} modules: "
        + ", ".join(f"{n} {lang}" for lang, n in langs)
        + ")",
        "Most imported modules (path, imported by N modules: first line of its doc):",
    ]
    for path, facts_json, n in top:
        doc = ""
        if facts_json and not deny.denied(path):
            doc = ModuleFacts.from_dict(json.loads(facts_json)).doc.strip().split("\n")[0]
        out.append(f"- {path} ({n})" + (f": {doc[:160]}" if doc else ""))
    for name in ("README.md", "README.rst", "README.txt", "README"):
        readme = root / name
        if readme.is_file() and not deny.denied(name):
            try:
                head = readme.read_text("utf-8", "replace").splitlines()[:OVERVIEW_README_LINES]
            except OSError:
                break
            out += ["", f"{name} (first {len(head)} lines):", *head]
            break
    return "\n".join(out)


def _previous(
    root: Path, conn: sqlite3.Connection, store: NoteStore, key: NoteKey, lines: list[str]
) -> Previous | None:
    """For a rethink: the notes carried over to this blob from the module's previous
    version, and the diff since. None (a full rewrite) when there is nothing to rethink,
    the previous content is not in git, or the diff is not much smaller than the module."""
    carried = store.load_items(conn, key)
    if not carried:
        return None
    row = conn.execute(
        "SELECT blob_sha FROM notes WHERE path = ? AND backend = ? AND model = ? AND effort = ? "
        "AND prompt_version = ? AND origin IN (?, ?) AND blob_sha != ? "
        "ORDER BY created_at DESC LIMIT 1",
        (
            key.path,
            key.backend,
            key.model,
            key.effort,
            key.prompt_version,
            *COMPLETE_ORIGINS,
            key.blob_sha,
        ),
    ).fetchone()
    if row is None:
        return None
    proc = subprocess.run(
        ["git", "-C", str(root), "cat-file", "blob", row[0]], capture_output=True, check=False
    )
    if proc.returncode != 0:
        return None
    old = source_lines(proc.stdout.decode("utf-8", "replace"))
    diff = "\n".join(
        difflib.unified_diff(old, lines, f"a/{key.path}", f"b/{key.path}", lineterm="", n=3)
    )
    if not diff or count_tokens(diff) > RETHINK_MAX_SHARE * count_tokens("\n".join(lines)):
        return None
    return Previous(items=carried, diff=diff)


def _model_todo(todo: list[tuple[str, str]], deny: DenyList, report: SleepReport) -> list[Job]:
    jobs = []
    for path, blob in todo:
        if deny.denied(path):
            report.not_sent.append((path, "deny-listed ([scan] deny): never sent to a model"))
        else:
            jobs.append(Job(path, blob))
    return jobs


def _write_model_notes(
    root: Path,
    store: NoteStore,
    backend: Backend,
    todo: list[tuple[str, str]],
    effort: str,
    lines_of: Callable[[str], list[str]],
    report: SleepReport,
    budget: Budget | None,
    deny_globs: Iterable[str] | None,
    progress: Progress | None,
) -> None:
    deny = DenyList(DEFAULT_DENY if deny_globs is None else deny_globs)
    jobs = _model_todo(todo, deny, report)
    if not jobs:
        return
    with store.read() as conn:
        overview = repo_overview(root, conn, deny)

    def make_request(job: Job) -> NoteRequest | None:
        with store.read() as conn:
            request = _request(
                root, conn, job.path, job.blob, effort, lines_of, overview, job.attempt
            )
            if request is not None and job.attempt == 1:
                key = note_key(backend, job.path, job.blob, effort)
                request.previous = _previous(root, conn, store, key, request.lines)
            return request

    def key_of(path: str, blob: str) -> NoteKey:
        return note_key(backend, path, blob, effort)

    budget = budget or Budget(store, BudgetConfig())
    batched = JobsReport()
    if isinstance(backend, BatchBackend):
        jobs = _batches(store, backend, jobs, effort, make_request, key_of, budget, batched)
    result = run_jobs(
        store,
        backend,
        jobs,
        make_request=make_request,
        key_of=key_of,
        budget=budget,
        progress=progress,
    )
    for r in (batched, result):
        report.written += r.written
        report.failed.extend(r.failed)
        report.dropped_citations += r.dropped_citations
        report.usage.extend(r.usage)
    report.queued = result.queued
    report.stopped = result.stopped
    with store.read() as conn:
        report.batched = conn.execute(
            "SELECT count(*) FROM jobs WHERE backend = ? AND status = 'batched'",
            (backend.name,),
        ).fetchone()[0]


def _batches(
    store: NoteStore,
    backend: BatchBackend,
    jobs: list[Job],
    effort: str,
    make_request: Callable[[Job], NoteRequest | None],
    key_of: Callable[[str, str], NoteKey],
    budget: Budget,
    report: JobsReport,
) -> list[Job]:
    """Collect ended Message Batches; send a backlog as a new batch (waiting up to
    ``batch_wait_seconds`` for it). The jobs left to run one by one."""

    def collect() -> list[str]:
        return collect_batches(
            store,
            backend,
            effort=effort,
            make_request=make_request,
            key_of=key_of,
            budget=budget,
            report=report,
        )

    collect()
    in_flight = set().union(*pending_batches(store, backend.name).values())
    with store.read() as conn:  # minus what was in flight, and what collecting just stored
        jobs = [
            j
            for j in jobs
            if (j.path, j.blob) not in in_flight
            and not store.has_notes(conn, key_of(j.path, j.blob), written_only=True)
        ]
    if not backend.batch_threshold or len(jobs) < backend.batch_threshold:
        return jobs
    batch_id = submit_batch(
        store,
        backend,
        jobs,
        effort=effort,
        make_request=make_request,
        budget=budget,
        report=report,
    )
    if batch_id is None:
        return jobs
    deadline = time.monotonic() + backend.batch_wait_seconds
    while batch_id in collect() and time.monotonic() < deadline:
        time.sleep(max(0.01, backend.batch_poll_seconds))
    return []


@dataclass
class Plan:
    """What ``write_notes`` would do with a model backend, priced, without calling it."""

    backend: str
    model: str
    effort: str
    todo: list[tuple[str, Estimate]] = field(default_factory=list)
    reused: int = 0
    not_sent: list[tuple[str, str]] = field(default_factory=list)


def plan_notes(
    root: Path,
    store: NoteStore,
    backend: Backend,
    *,
    effort: str,
    paths: Iterable[str] | None = None,
    deny: Iterable[str] | None = None,
) -> Plan:
    """Price the modules ``write_notes`` would send to ``backend`` (no call is made)."""
    plan = Plan(backend=backend.name, model=backend.model, effort=effort)
    wanted = set(paths) if paths is not None else None
    denylist = DenyList(DEFAULT_DENY if deny is None else deny)
    with store.read() as conn:
        rows = conn.execute(
            "SELECT path, blob_sha FROM modules WHERE status = 'indexed' ORDER BY path"
        ).fetchall()
        todo = []
        for path, blob in rows:
            if wanted is not None and path not in wanted:
                continue
            if store.has_notes(conn, note_key(backend, path, blob, effort), written_only=True):
                plan.reused += 1
            else:
                todo.append((path, blob))
        report = SleepReport(backend=backend.name)
        jobs = _model_todo(todo, denylist, report) if backend.generated else []
        plan.not_sent = report.not_sent
        overview = repo_overview(root, conn, denylist) if jobs else ""

        lines_of = work_tree_lines(root)
        for job in jobs:
            request = _request(root, conn, job.path, job.blob, effort, lines_of, overview)
            if request is not None:
                plan.todo.append((job.path, backend.estimate(request)))
    return plan


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
        lines = indexed_lines(root, ch.path, ch.new_blob)
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
                # notes carried from a mirror's stay marked as the repository's text
                origin = IMPORTED_CARRIED if from_mirror(store.note_origin(conn, old)) else CARRIED
                store.put_notes(conn, ModuleNotes(key=new_key, items=items), origin=origin)
                report.carried += 1


def note_blob(
    root: Path,
    store: NoteStore,
    path: str,
    lang: str,
    data: bytes,
    backend: Backend,
    effort: str,
    *,
    paths: frozenset[str] | None = None,
    denied: bool = False,
) -> ModuleNotes:
    """Write notes for the blob of ``data`` at ``path``, which need not be in the index (the
    pre-commit hook notes the *staged* content, which may differ from the work tree).

    The graph context (imports, importers, callers) comes from the store; imports are
    resolved against ``paths`` (default: the indexed modules). A ``denied`` module's notes
    are written from its symbols' names only, as the index stores it.
    """
    blob = blob_sha(data)
    facts = parse_module(path, data, lang)
    if denied:
        facts = names_only(facts)
    lines = source_lines(data.decode("utf-8", "replace"))
    with store.read() as conn:
        known = paths
        if known is None:
            known = frozenset(
                r[0] for r in conn.execute("SELECT path FROM modules WHERE status = 'indexed'")
            )
        imports = sorted(imported_paths(facts, known | {path}, go_module_path(root)))
        request = _in_context(conn, facts, lines, imports, effort, work_tree_lines(root))
    notes = ground(
        backend.write_notes(request), facts, lines, note_key(backend, path, blob, effort)
    )
    _store_batch(store, [notes], backend)
    return notes
