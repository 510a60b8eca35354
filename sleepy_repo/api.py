"""The one core API. The CLI, the language server and the MCP server are thin shells over it.

Every function takes a ``Repo`` (from ``open_repo``) and returns plain data or dataclasses
whose ``to_json`` gives the documented ``--json`` shapes (each with ``schema_version``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleepy_repo import activity, mirror
from sleepy_repo.ask import answer as answer_question
from sleepy_repo.budget import Budget, spent_today
from sleepy_repo.config import (
    CONFIG_DIR,
    CONFIG_FILE,
    BudgetConfig,
    Config,
    default_config_toml,
    load_config,
)
from sleepy_repo.errors import RepoError, SleepyError
from sleepy_repo.index import update_index
from sleepy_repo.models import Backend, StaticBackend, get_backend
from sleepy_repo.models import ready as backend_ready
from sleepy_repo.notes import Usage
from sleepy_repo.precommit import check as check_mirror_files
from sleepy_repo.precommit import pre_commit as run_pre_commit
from sleepy_repo.retrieve import Context, context
from sleepy_repo.scan import find_root
from sleepy_repo.sleep import Plan, SleepReport, plan_notes, write_notes
from sleepy_repo.store import NoteStore, item_from_row

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class Repo:
    root: Path
    is_git: bool
    config: Config
    store: NoteStore

    def relpath(self, path: str | Path) -> str:
        """A user-given path (absolute, or relative to the cwd) as a repo-relative path."""
        p = Path(path)
        full = (p if p.is_absolute() else Path.cwd() / p).resolve()
        if not full.exists() and not p.is_absolute():
            full = (self.root / p).resolve()
        try:
            return full.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            raise RepoError(f"{path} is outside the repository {self.root}") from None


def open_repo(path: Path | str | None = None) -> Repo:
    root, is_git = find_root(Path(path) if path is not None else Path.cwd())
    config = load_config(root)
    store = NoteStore(config.store_dir(root))
    store.ensure()
    return Repo(root=root, is_git=is_git, config=config, store=store)


# -- init ----------------------------------------------------------------------------------
def init(path: Path | str | None = None, *, rebuild: bool = False) -> dict[str, Any]:
    root, is_git = find_root(Path(path) if path is not None else Path.cwd())
    config_path = root / CONFIG_DIR / CONFIG_FILE
    created = []
    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(default_config_toml(), encoding="utf-8")
        created.append(str(config_path))
    if is_git:
        gitignore = root / ".gitignore"
        line = f"{CONFIG_DIR}/index.db*"
        existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
        if line not in existing.splitlines():
            sep = "" if not existing or existing.endswith("\n") else "\n"
            gitignore.write_text(existing + sep + line + "\n", encoding="utf-8")
            created.append(f"{gitignore} (+{line})")
    config = load_config(root)
    store = NoteStore(config.store_dir(root))
    moved = None
    if rebuild:
        moved = store.rebuild()
    else:
        store.ensure()
    return {
        "schema_version": SCHEMA_VERSION,
        "repo": str(root),
        "git": is_git,
        "store": str(store.path),
        "written": created,
        "moved_aside": str(moved) if moved else None,
    }


# -- refresh -------------------------------------------------------------------------------
def refresh(
    repo: Repo,
    paths: Iterable[str] | None = None,
    *,
    backend: str | None = None,
    effort: str | None = None,
    progress: Progress | None = None,
    budget_tokens: int | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Index what changed, then write missing notes: static always, and ``backend`` if a
    model backend is chosen (explicitly, or in config; a key in the environment never
    chooses one). Model work runs under ``[budget]`` (``budget_tokens`` overrides the
    per-refresh token limit); what a budget or an outage stops stays queued.

    ``dry_run``: model work is only priced (``plan`` in the result): no model call is made
    and no key is needed. Indexing and static notes, which cost nothing, run as usual."""
    only = {repo.relpath(p) for p in paths} if paths else None
    chosen = backend or repo.config.notes.backend
    effort = effort or repo.config.notes.effort
    model_backend = None
    if chosen != "static":
        model_backend = get_backend(chosen, repo.config, effort)
        if not dry_run:
            backend_ready(model_backend)  # a missing key fails before any work
    limits = repo.config.budget
    if budget_tokens is not None:
        if budget_tokens < 0:
            raise SleepyError(f"--budget-tokens must be >= 0 (0 = unlimited), got {budget_tokens}")
        limits = dataclasses.replace(limits, per_refresh_tokens=budget_tokens)
    report = update_index(
        repo.root,
        repo.is_git,
        repo.config,
        repo.store,
        progress=(lambda d, t: progress("index", d, t)) if progress else None,
    )
    changed = {c.path for c in report.changed}
    imported = import_mirrors(repo)  # notes committed with the code: no model call for them
    force = report.affected
    backends: list[Backend] = [StaticBackend()]
    if model_backend is not None:
        backends.append(model_backend)
    notes: dict[str, Any] = {}
    model: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    for b in backends:
        name: str = b.name
        if dry_run and b.generated:
            plan = _plan_json(
                plan_notes(
                    repo.root,
                    repo.store,
                    b,
                    effort=effort,
                    paths=only,
                    deny=repo.config.scan.deny,
                ),
                limits,
            )
            continue
        sr = write_notes(
            repo.root,
            repo.store,
            b,
            effort=effort,
            paths=only,
            force=force if name == "static" else (),
            changed=report.changed,
            progress=_phase(progress, f"notes:{name}"),
            budget=Budget(repo.store, limits) if b.generated else None,
            deny=repo.config.scan.deny,
        )
        notes[name] = {
            "written": sr.written,
            "reused": sr.reused,
            "carried": sr.carried,
            "failed": [{"path": p, "error": e} for p, e in sr.failed],
            "dropped_citations": sr.dropped_citations,
        }
        if b.generated:
            model = _model_json(b, sr)
    return {
        "schema_version": SCHEMA_VERSION,
        "repo": str(repo.root),
        "modules": report.modules,
        "parsed": len(changed),
        "removed": report.removed,
        "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
        "submodules": report.scan.submodules,
        "warnings": report.warnings,
        "notes": notes,
        "model": model,
        "dry_run": plan,
        "imported": imported,
        "seconds": round(report.seconds, 3),
    }


def _phase(progress: Progress | None, phase: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda done, total: report(phase, done, total)


def _usage_json(usage: Iterable[Usage]) -> dict[str, Any]:
    rows = list(usage)
    return {
        "calls": len(rows),
        "input_tokens": sum(u.input_tokens for u in rows),
        "output_tokens": sum(u.output_tokens for u in rows),
        "cache_read_tokens": sum(u.cache_read_tokens for u in rows),
        "cache_write_tokens": sum(u.cache_write_tokens for u in rows),
        "cost_usd": round(sum(u.cost_usd for u in rows), 6),
    }


def _model_json(backend: Backend, sr: SleepReport) -> dict[str, Any]:
    """The model part of ``refresh``: what was spent, what is left queued and why."""
    return {
        "backend": backend.name,
        "model": backend.model,
        "spent": _usage_json(sr.usage),
        "queued": sr.queued,
        "batched": sr.batched,
        "stopped": sr.stopped,
        "not_sent": [{"path": p, "reason": r} for p, r in sr.not_sent],
    }


def _plan_json(plan: Plan, limits: BudgetConfig) -> dict[str, Any]:
    """``refresh --dry-run``: per module, the estimate a budget would reserve."""
    todo = [
        {
            "path": path,
            "calls": est.calls,
            "input_tokens": est.input_tokens,
            "max_output_tokens": est.output_tokens,
            "tokens": est.tokens,
            "cost_usd": round(est.cost_usd, 6),
        }
        for path, est in plan.todo
    ]
    return {
        "backend": plan.backend,
        "model": plan.model,
        "effort": plan.effort,
        "modules": todo,
        "reused": plan.reused,
        "not_sent": [{"path": p, "reason": r} for p, r in plan.not_sent],
        "total": {
            "modules": len(todo),
            "calls": sum(t["calls"] for t in todo),
            "input_tokens": sum(t["input_tokens"] for t in todo),
            "max_output_tokens": sum(t["max_output_tokens"] for t in todo),
            "tokens": sum(t["tokens"] for t in todo),
            "cost_usd": round(sum(est.cost_usd for _, est in plan.todo), 6),
        },
        "budget": dataclasses.asdict(limits),
    }


# -- status --------------------------------------------------------------------------------
def status(repo: Repo) -> dict[str, Any]:
    backend = repo.config.notes.backend
    with repo.store.read() as conn:
        last = repo.store.get_meta(conn, "last_scan", None)
        indexed = conn.execute("SELECT count(*) FROM modules WHERE status = 'indexed'").fetchone()[
            0
        ]
        skipped = [
            {"path": r[0], "reason": r[1]}
            for r in conn.execute(
                "SELECT path, reason FROM modules WHERE status = 'skipped' ORDER BY path"
            )
        ]
        per_module = conn.execute(
            "SELECT m.path, "
            " max(n.origin = 'written') AS written, "
            " max(n.origin = 'carried') AS carried "
            "FROM modules m LEFT JOIN notes n ON n.path = m.path AND n.blob_sha = m.blob_sha "
            " AND n.backend = ? "
            "WHERE m.status = 'indexed' GROUP BY m.path",
            (backend,),
        ).fetchall()
        fresh = sum(1 for r in per_module if r["written"])
        stale = sum(1 for r in per_module if not r["written"] and r["carried"])
        missing = indexed - fresh - stale
        jobs = {
            r[0]: r[1] for r in conn.execute("SELECT status, count(*) FROM jobs GROUP BY status")
        }
        ledger = conn.execute(
            "SELECT count(*), coalesce(sum(input_tokens),0), coalesce(sum(output_tokens),0), "
            "coalesce(sum(cache_read_tokens),0), coalesce(sum(cache_write_tokens),0), "
            "coalesce(sum(cost_usd),0) FROM ledger"
        ).fetchone()
        today_tokens, today_usd = spent_today(conn)
        dropped = conn.execute(
            "SELECT coalesce(sum(n.dropped_citations),0) FROM notes n JOIN modules m "
            "ON m.path = n.path AND m.blob_sha = n.blob_sha"
        ).fetchone()[0]
        cited = conn.execute(
            "SELECT count(*) FROM note_items i JOIN notes n ON n.id = i.note_id "
            "JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
            "WHERE i.generated = 1"
        ).fetchone()[0]
        by_backend = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT n.backend, count(*) FROM notes n JOIN modules m "
                "ON m.path = n.path AND m.blob_sha = n.blob_sha GROUP BY n.backend"
            )
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "repo": str(repo.root),
        "store": str(repo.store.path),
        "git": {
            "is_git": repo.is_git,
            "head": (last or {}).get("head"),
            "branch": (last or {}).get("branch"),
            "submodules": (last or {}).get("submodules", []),
        },
        "indexed": last is not None,
        "backend": backend,
        "modules": {
            "indexed": indexed,
            "skipped": len(skipped),
            "fresh": fresh,
            "stale": stale,
            "missing": missing,
        },
        "notes_by_backend": by_backend,
        "queued": jobs.get("queued", 0),
        "failed": jobs.get("failed", 0),
        "batched": jobs.get("batched", 0),
        "spent": {
            "calls": ledger[0],
            "input_tokens": ledger[1],
            "output_tokens": ledger[2],
            "cache_read_tokens": ledger[3],
            "cache_write_tokens": ledger[4],
            "cost_usd": round(ledger[5], 6),
        },
        "budget": {
            **dataclasses.asdict(repo.config.budget),
            "today_tokens": today_tokens,
            "today_usd": round(today_usd, 6),
        },
        "dropped_citations": {
            "count": dropped,
            "share": round(dropped / (dropped + cited), 4) if dropped + cited else 0.0,
        },
        "skipped": skipped,
        "warnings": (last or {}).get("warnings", []),
    }


# -- notes ---------------------------------------------------------------------------------
def module_notes(repo: Repo, path: str) -> dict[str, Any]:
    rel = repo.relpath(path)
    with repo.store.read() as conn:
        row = conn.execute(
            "SELECT path, lang, blob_sha, status, reason, warning FROM modules WHERE path = ?",
            (rel,),
        ).fetchone()
        if row is None:
            raise SleepyError(
                f"{rel} is not indexed: it is not a source file sleepy-repo parses, or "
                "`sleepy-repo refresh` has not run since it was created"
            )
        notes = []
        for n in conn.execute(
            "SELECT * FROM notes WHERE path = ? AND blob_sha = ? "
            "ORDER BY backend = 'static', created_at DESC",
            (rel, row["blob_sha"]),
        ).fetchall():
            items = [
                item_from_row(r)
                for r in conn.execute(
                    "SELECT * FROM note_items WHERE note_id = ? ORDER BY ordinal", (n["id"],)
                )
            ]
            notes.append(
                {
                    "backend": n["backend"],
                    "model": n["model"],
                    "effort": n["effort"],
                    "prompt_version": n["prompt_version"],
                    "origin": n["origin"],
                    "dropped_citations": n["dropped_citations"],
                    "items": [_item_json(rel, i) for i in items],
                }
            )
    return {
        "schema_version": SCHEMA_VERSION,
        "path": rel,
        "lang": row["lang"],
        "blob_sha": row["blob_sha"],
        "status": row["status"],
        "reason": row["reason"],
        "warning": row["warning"],
        "notes": notes,
    }


def _item_json(path: str, item: Any) -> dict[str, Any]:
    return {
        "path": path,
        "start_line": item.start_line,
        "end_line": item.end_line,
        "symbol": item.symbol,
        "kind": item.kind,
        "question": item.question,
        "text": item.text,
        "generated": item.generated,
        "stale": item.stale,
        "citations": [
            {"path": c.path, "start_line": c.start_line, "end_line": c.end_line, "symbol": c.symbol}
            for c in item.citations
        ],
    }


# -- context -------------------------------------------------------------------------------
def get_context(
    repo: Repo, question: str, budget: int | None = None, *, source: str = "cli"
) -> Context:
    if not question.strip():
        raise SleepyError("the question is empty")
    budget = budget if budget is not None else repo.config.retrieve.budget
    if budget <= 0:
        raise SleepyError(f"the budget must be a positive number of tokens, got {budget}")
    with repo.store.read() as conn:
        if repo.store.get_meta(conn, "last_scan") is None:
            raise SleepyError(
                f"{repo.root} has no index yet: run `sleepy-repo refresh --repo {repo.root}`"
            )
    return context(repo.store, question, budget, log_source=source)


# -- gc ------------------------------------------------------------------------------------
def _reachable_blobs(repo: Repo) -> set[str]:
    blobs: set[str] = set()
    with repo.store.read() as conn:
        blobs.update(
            r[0] for r in conn.execute("SELECT blob_sha FROM modules WHERE blob_sha IS NOT NULL")
        )
    if repo.is_git:
        refs = subprocess.run(
            [
                "git",
                "-C",
                str(repo.root),
                "for-each-ref",
                "--format=%(objectname)",
                "refs/heads",
                "refs/remotes",
                "refs/tags",
            ],
            capture_output=True,
            check=False,
            text=True,
        ).stdout.split()
        for ref in set(refs):
            out = subprocess.run(
                ["git", "-C", str(repo.root), "ls-tree", "-r", "-z", ref],
                capture_output=True,
                check=False,
            ).stdout
            for entry in out.split(b"\0"):
                meta = entry.split(b"\t", 1)[0].split()
                if len(meta) == 3 and meta[1] == b"blob":
                    blobs.add(meta[2].decode())
    return blobs


def gc(repo: Repo) -> dict[str, Any]:
    before = _store_bytes(repo.store)
    keep = _reachable_blobs(repo)
    with repo.store.write() as conn:
        conn.execute("CREATE TEMP TABLE keep(blob TEXT PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO keep VALUES (?)", [(b,) for b in keep])
        doomed = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM notes WHERE blob_sha NOT IN (SELECT blob FROM keep)"
            )
        ]
        items = 0
        for note_id in doomed:
            items += conn.execute("DELETE FROM note_items WHERE note_id = ?", (note_id,)).rowcount
            conn.execute("DELETE FROM notes WHERE id = ?", (note_id,))
        jobs = conn.execute(
            "DELETE FROM jobs WHERE blob_sha NOT IN (SELECT blob FROM keep)"
        ).rowcount
    with repo.store.read() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
    return {
        "schema_version": SCHEMA_VERSION,
        "notes_removed": len(doomed),
        "items_removed": items,
        "jobs_removed": jobs,
        "bytes_before": before,
        "bytes_after": _store_bytes(repo.store),
    }


def _store_bytes(store: NoteStore) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(store.path) + suffix)
        if p.exists():
            total += os.path.getsize(p)
    return total


# -- ask -----------------------------------------------------------------------------------
def ask(
    repo: Repo, question: str, budget: int | None = None, *, source: str = "cli"
) -> dict[str, Any]:
    """Answer from the packed context. No answering model exists yet: ``answer`` is None,
    ``message`` says so, and ``context`` is what ``get_context`` returns."""
    return answer_question(get_context(repo, question, budget, source=source)).to_json()


# -- activity ------------------------------------------------------------------------------
def activity_recorder(
    repo: Repo, role: str, clock: Callable[[], float] | None = None
) -> activity.Recorder:
    """This process's writer of editor/watcher activity and open files (``role`` is e.g.
    ``"lsp"`` or ``"watch"``); the idle timer and the planner of any process read them."""
    rec = activity.Recorder(repo.store, activity.source_name(role))
    if clock is not None:
        rec.clock = clock
    return rec


# -- pre-commit hook and the markdown mirror -----------------------------------------------
def _hook_paths(repo: Repo, files: Iterable[str], warnings: list[str]) -> list[str]:
    paths = []
    for f in files:
        try:
            paths.append(repo.relpath(f))
        except RepoError as exc:
            warnings.append(str(exc))
    return paths


def pre_commit(repo: Repo, files: Iterable[str], *, all_files: bool = False) -> dict[str, Any]:
    """The pre-commit hook: notes for the staged blobs of ``files`` and, with
    ``[notes] commit = true``, their markdown mirror in ``.sleepy/notes/``, staged."""
    if not repo.is_git:
        raise RepoError(f"{repo.root} is not a git repository: the pre-commit hook needs one")
    warnings: list[str] = []
    paths = _hook_paths(repo, files, warnings)
    report = run_pre_commit(repo.root, repo.config, repo.store, paths, all_files=all_files)
    report.warnings[:0] = warnings
    return report.to_json()


def check_mirrors(repo: Repo, files: Iterable[str], *, all_files: bool = False) -> dict[str, Any]:
    """``--check``: files whose mirror records another blob than their content."""
    warnings: list[str] = []
    paths = _hook_paths(repo, files, warnings)
    result = check_mirror_files(repo.root, repo.config, paths, all_files=all_files).to_json()
    result["warnings"] = warnings
    return result


def import_mirrors(repo: Repo) -> int:
    """Import committed notes (``.sleepy/notes/``) for modules whose current blob they match."""
    return mirror.import_mirrors(repo.root, repo.store)
