"""The one core API. The CLI, the language server and the MCP server are thin shells over it.

Every function takes a ``Repo`` (from ``open_repo``) and returns plain data or dataclasses
whose ``to_json`` gives the documented ``--json`` shapes (each with ``schema_version``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleepy_repo import activity, embed, mirror
from sleepy_repo import trust as trust_record
from sleepy_repo.ask import answer as answer_question
from sleepy_repo.budget import Budget, held, spent_today
from sleepy_repo.config import (
    CONFIG_DIR,
    CONFIG_FILE,
    BudgetConfig,
    Config,
    LoadedConfig,
    default_config_toml,
    load,
    repo_config_path,
    user_config_path,
)
from sleepy_repo.embed import Embedder, update_embeddings
from sleepy_repo.errors import ConfigError, ModelError, RepoError, SleepyError, StoreMissingError
from sleepy_repo.history import PATHS_SECONDS, REFRESH_SECONDS, update_history
from sleepy_repo.index import update_index
from sleepy_repo.models import Backend, StaticBackend, get_backend
from sleepy_repo.models import ready as backend_ready
from sleepy_repo.models.structured import get_model as get_answer_model
from sleepy_repo.models.structured import model_for
from sleepy_repo.notes import CARRIED_ORIGINS, COMPLETE_ORIGINS, NoteItem, Usage, item_source
from sleepy_repo.overview import overview_rows, write_overview
from sleepy_repo.overview import recheck as recheck_overview
from sleepy_repo.precommit import check as check_mirror_files
from sleepy_repo.precommit import pre_commit as run_pre_commit
from sleepy_repo.redact import DenyList
from sleepy_repo.retrieve import Context, context
from sleepy_repo.retrieve import log_context_hit as log_hit_of_context
from sleepy_repo.safepath import check_inside, outside
from sleepy_repo.scan import find_root
from sleepy_repo.scheduler import LOCK_NAME
from sleepy_repo.sleep import Plan, SleepReport, plan_notes, write_notes
from sleepy_repo.store import UNKNOWN_REASON, NoteStore, item_from_row

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class Repo:
    root: Path
    is_git: bool
    config: Config
    store: NoteStore
    layers: LoadedConfig | None = None  # where the config came from (None: built in code)

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


# what `git status` must not show of a store in the repository's .sleepy directory
STORE_GITIGNORE = """\
# Written by sleepy-repo: the index and its working files stay on this machine.
# config.toml and notes/ (the notes mirror) are meant to be committed.
/.gitignore
/index.db*
/sleeper.lock
*.tmp
"""


def ignore_store(root: Path, store_dir: Path) -> bool:
    """Keep a store in ``<root>/.sleepy`` out of ``git status``, whatever opened it (an
    editor, ``refresh``, the hook): write ``.sleepy/.gitignore`` unless one exists. Never
    overwrites, never writes through a symlink or outside the repository; True if written."""
    target = root / CONFIG_DIR / ".gitignore"
    if store_dir.absolute() != target.parent.absolute() or outside(root, target) is not None:
        return False
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)  # O_EXCL: an existing file or symlink is left
    except OSError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(STORE_GITIGNORE)
    return True


def open_repo(path: Path | str | None = None, *, create: bool = True) -> Repo:
    """The repository at ``path`` (default: the cwd) and its store, checked and migrated.
    ``create=False`` (read commands, the MCP server) leaves a missing store missing: reads
    then say to run ``refresh``, and ``refresh`` creates it."""
    root, is_git = find_root(Path(path) if path is not None else Path.cwd())
    layers = load(root)
    repo = Repo(
        root=root,
        is_git=is_git,
        config=layers.config,
        store=NoteStore(layers.config.store_dir(root)),
        layers=layers,
    )
    if create or repo.store.exists():
        ensure_store(repo)
    return repo


def ensure_store(repo: Repo) -> None:
    """Create (or check and migrate) the store, kept out of ``git status``."""
    repo.store.ensure()
    if repo.is_git:
        ignore_store(repo.root, repo.store.directory)


# -- init ----------------------------------------------------------------------------------
def init(path: Path | str | None = None, *, rebuild: bool = False) -> dict[str, Any]:
    root, is_git = find_root(Path(path) if path is not None else Path.cwd())
    config_path = root / CONFIG_DIR / CONFIG_FILE
    created = []
    if not config_path.exists() and not config_path.is_symlink():
        check_inside(root, config_path, "the config file")
        config_path.parent.mkdir(parents=True, exist_ok=True)
        text = default_config_toml()
        config_path.write_text(text, encoding="utf-8")
        created.append(str(config_path))
        # the user ran init, so the file it wrote is theirs: trusted (edits need trust again)
        trust_record.trust(root, text.encode("utf-8"))
    if is_git:
        gitignore = root / ".gitignore"
        check_inside(root, gitignore, ".gitignore")
        line = f"{CONFIG_DIR}/index.db*"
        existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
        if line not in existing.splitlines():
            sep = "" if not existing or existing.endswith("\n") else "\n"
            gitignore.write_text(existing + sep + line + "\n", encoding="utf-8")
            created.append(f"{gitignore} (+{line})")
    config = load(root).config
    store = NoteStore(config.store_dir(root))
    moved = None
    if rebuild:
        moved = store.rebuild()
    else:
        store.ensure()
    if is_git and ignore_store(root, store.directory):
        created.append(str(root / CONFIG_DIR / ".gitignore"))
    return {
        "schema_version": SCHEMA_VERSION,
        "repo": str(root),
        "git": is_git,
        "store": str(store.path),
        "written": created,
        "moved_aside": str(moved) if moved else None,
    }


# -- trust ---------------------------------------------------------------------------------
def trust(path: Path | str | None = None, *, revoke: bool = False) -> dict[str, Any]:
    """Trust the repository's ``.sleepy/config.toml`` as it is now (every key honoured until
    the file changes), or with ``revoke`` forget that trust."""
    root, _ = find_root(Path(path) if path is not None else Path.cwd())
    config_path = repo_config_path(root)
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "repo": str(root),
        "config": str(config_path),
        "record": str(trust_record.trust_path()),
    }
    if revoke:
        result["revoked"] = trust_record.revoke(root)
        result["trusted"] = False
        return result
    try:
        data = config_path.read_bytes()
    except FileNotFoundError:
        raise RepoError(f"{root} has no {CONFIG_DIR}/{CONFIG_FILE} to trust") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read: {exc}") from None
    trust_record.trust(root, data)
    try:
        layers = load(root)  # validates the file and the store path it chooses
    except SleepyError:
        trust_record.revoke(root)
        raise
    result["trusted"] = layers.trusted
    result["sha256"] = trust_record.digest(data)
    result["user_config"] = str(user_config_path())
    return result


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
    ensure_store(repo)  # a repo opened by a read-only shell (MCP) gets its store here
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
    # one connection held open: each write's close leaves the WAL to the periodic
    # checkpoints (see NoteStore.session)
    with repo.store.session():
        report = update_index(
            repo.root,
            repo.is_git,
            repo.config,
            repo.store,
            progress=(lambda d, t: progress("index", d, t)) if progress else None,
        )
        changed = {c.path for c in report.changed}
        if repo.is_git:
            # history notes of new and changed modules
            update_history(
                repo.root,
                repo.store,
                report.scan.head,
                only,
                seconds=PATHS_SECONDS if only else REFRESH_SECONDS,
            )
        semantic = _update_semantic(repo, only)
        recheck_overview(repo.root, repo.store, report.changed)  # citations into changed modules
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
            budget = Budget(repo.store, limits) if b.generated else None
            sr = write_notes(
                repo.root,
                repo.store,
                b,
                effort=effort,
                paths=only,
                force=force if name == "static" else (),
                changed=report.changed,
                progress=_phase(progress, f"notes:{name}"),
                budget=budget,
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
                if effort == "deep" and not sr.queued and not sr.batched:
                    model["overview"] = _overview(repo, b, budget)
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
        "semantic_index": semantic,
        "seconds": round(report.seconds, 3),
    }


def embedder(repo: Repo) -> Embedder | None:
    """The model of the repository's semantic index (``[embed] model``; loaded once per
    process), or None: none configured, or it cannot load (``status`` and ``refresh`` say
    why; retrieval works without it)."""
    try:
        return embed.for_config(repo.config.embed.model)
    except ConfigError as exc:
        log.info("no semantic index: %s", exc)
        return None


def _update_semantic(repo: Repo, only: set[str] | None) -> dict[str, Any]:
    """Embed the units of new and changed modules (idle-time work, ``sleepy_repo.embed``)."""
    model = embedder(repo)
    if model is None:
        st = embed.status(repo.config.embed.model)
        return {"model": None, "reason": st.reason, "error": st.error}
    up = update_embeddings(
        repo.store,
        model,
        only,
        seconds=embed.PATHS_SECONDS if only else embed.REFRESH_SECONDS,
    )
    return {
        "model": model.name,
        "modules": up.modules,
        "units": up.units,
        "left": up.left,
        "seconds": round(up.seconds, 3),
    }


def _overview(repo: Repo, backend: Backend, budget: Budget | None) -> dict[str, Any]:
    """The deep effort's repo overview note, once every module's notes are written: its
    report, or the error that stopped it (the refresh itself succeeded)."""
    model = model_for(backend, repo.config)
    if model is None:
        return {"skipped": "the static backend writes no overview"}
    try:
        report = write_overview(repo.root, repo.store, model, repo.config, budget=budget)
        return report.to_json()
    except ModelError as exc:
        log.warning("the repo overview note failed: %s", exc)
        return {"error": str(exc)}


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
            " max(n.origin IN (?, ?)) AS written, "
            " max(n.origin IN (?, ?)) AS carried "
            "FROM modules m LEFT JOIN notes n ON n.path = m.path AND n.blob_sha = m.blob_sha "
            " AND n.backend = ? "
            "WHERE m.status = 'indexed' GROUP BY m.path",
            (*COMPLETE_ORIGINS, *CARRIED_ORIGINS, backend),
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
        unknown = conn.execute(
            "SELECT count(*), coalesce(sum(input_tokens + output_tokens), 0), "
            "coalesce(sum(cost_usd), 0) FROM ledger WHERE reason = ?",
            (UNKNOWN_REASON,),
        ).fetchone()
        held_tokens, held_usd = held(conn)
        reservations = conn.execute(
            "SELECT count(*) FROM reservations WHERE expires > ?", (time.time(),)
        ).fetchone()[0]
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
        queue = _queue_json(conn)
        failed_jobs = _failed_json(conn)
        history = {
            "modules": conn.execute("SELECT count(*) FROM history_files").fetchone()[0],
            "stretches": conn.execute("SELECT count(*) FROM history").fetchone()[0],
        }
        sleeper = repo.store.get_meta(conn, "sleeper", None)
        payoff = _payoff_json(conn, repo.config.sleep.payoff_after_days)
        tuning = _tuning_json(repo.store.latest_tuning(conn))
        semantic = _semantic_json(repo, conn)
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
        "failed_jobs": failed_jobs,
        "history": history,
        "tuning": tuning,
        "semantic_index": semantic,
        "batched": jobs.get("batched", 0),
        "local_backend_off": _local_off(),
        "spent": {
            "calls": ledger[0],
            "input_tokens": ledger[1],
            "output_tokens": ledger[2],
            "cache_read_tokens": ledger[3],
            "cache_write_tokens": ledger[4],
            "cost_usd": round(ledger[5], 6),
            # calls in flight when their process died: counted above at their estimate
            "unknown": {
                "calls": unknown[0],
                "tokens": unknown[1],
                "cost_usd": round(unknown[2], 6),
            },
        },
        "budget": {
            **dataclasses.asdict(repo.config.budget),
            "today_tokens": today_tokens,
            "today_usd": round(today_usd, 6),
            "reservations": reservations,
            "held_tokens": held_tokens,
            "held_usd": round(held_usd, 6),
        },
        "dropped_citations": {
            "count": dropped,
            "share": round(dropped / (dropped + cited), 4) if dropped + cited else 0.0,
        },
        "skipped": skipped,
        "warnings": (last or {}).get("warnings", []),
        "config": _config_json(repo),
        "sleeper": _sleeper_json(repo, sleeper),
        "queue": queue,
        "payoff": payoff,
    }


def _semantic_json(repo: Repo, conn: Any) -> dict[str, Any]:
    """The semantic index: its model (or why there is none) and what idle time built."""
    st = embed.status(repo.config.embed.model)
    built = {m: (n, size, secs) for m, n, size, secs in repo.store.embeddings_summary(conn)}
    n, size, secs = built.get(st.model or "", (0, 0, 0.0))
    return {
        "model": st.model,
        "reason": st.reason,
        "modules": n,
        "mb": round(size / 1e6, 3),
        "seconds": round(secs, 1),
    }


def _tuning_json(run: dict[str, Any] | None) -> dict[str, Any]:
    """The ranking's weights as ``status`` shows them: the defaults, or those the newest
    tuning run fitted on this repository's history, with the scores that decided."""
    from sleepy_repo.retrieve import DEFAULT_WEIGHTS

    if run is None:
        return {"weights": "default", "reason": "never tuned (`sleepy-repo tune`)", "run": None}
    used = run["weights"] if run["adopted"] else DEFAULT_WEIGHTS.to_json()
    return {
        "weights": "tuned" if run["adopted"] else "default",
        "reason": run["detail"].get("reason", ""),
        "values": used,
        "run": {k: v for k, v in run.items() if k != "id"},
    }


def tune(
    repo: Repo,
    *,
    cases: int | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fit the ranking's fusion weights on the repository's own history, score them on
    newer commits, store the run and adopt the weights if they scored better
    (``sleepy_repo.tune``)."""
    from sleepy_repo import tune as tuning

    if not repo.is_git:
        raise RepoError(f"{repo.root} is not a git repository: tuning learns from its history")
    if cases is not None and cases < tuning.MIN_CASES:
        raise SleepyError(f"--cases must be at least {tuning.MIN_CASES}, got {cases}")
    result = tuning.tune(
        repo.root,
        repo.store,
        n_cases=cases or tuning.CASES,
        progress=(lambda d, t, _what: progress("tune", d, t)) if progress else None,
        cancel=cancel,
    )
    with repo.store.read() as conn:
        stored = repo.store.latest_tuning(conn) or {}
    return {**stored, "chosen": result.chosen, "reason": result.reason}


QUEUE_SHOWN = 50


def _failed_json(conn: Any) -> list[dict[str, Any]]:
    """Model work that failed for good, most recent first, with why."""
    rows = conn.execute(
        "SELECT path, backend, error, crashes FROM jobs WHERE status = 'failed' "
        "ORDER BY updated_at DESC, path LIMIT ?",
        (QUEUE_SHOWN,),
    ).fetchall()
    return [
        {"path": r["path"], "backend": r["backend"], "error": r["error"], "crashes": r["crashes"]}
        for r in rows
    ]


def _local_off() -> str:
    """Why the local backend is off in this process ("" if it is not, or never loaded)."""
    local = sys.modules.get("sleepy_repo.models.local")
    return str(local.disabled_reason()) if local is not None else ""


def _config_json(repo: Repo) -> dict[str, Any]:
    layers = repo.layers
    return {
        "user_file": str(layers.user_file) if layers and layers.user_file else None,
        "repo_file": str(layers.repo_file) if layers and layers.repo_file else None,
        "trusted": bool(layers and layers.trusted),
        "ignored": list(layers.ignored) if layers else [],
    }


def _queue_json(conn: Any) -> list[dict[str, Any]]:
    """Queued model work, in the order the sleeper takes it, with the planner's reasons."""
    rows = conn.execute(
        "SELECT path, backend, reason, priority, status, error, reasons_json, crashes FROM jobs "
        "WHERE status IN ('queued', 'batched') ORDER BY priority DESC, path LIMIT ?",
        (QUEUE_SHOWN,),
    ).fetchall()
    out = []
    for r in rows:
        try:
            reasons = json.loads(r["reasons_json"]) if r["reasons_json"] else {}
        except ValueError:
            reasons = {}
        out.append(
            {
                "path": r["path"],
                "backend": r["backend"],
                "reason": r["reason"],
                "status": r["status"],
                "score": round(r["priority"], 4),
                "reasons": reasons,
                "last_error": r["error"],
                "crashes": r["crashes"],
            }
        )
    return out


def _sleeper_json(repo: Repo, state: dict[str, Any] | None) -> dict[str, Any]:
    lock = repo.config.store_dir(repo.root) / LOCK_NAME
    holder = ""
    with contextlib.suppress(OSError):
        holder = lock.read_text(encoding="utf-8").strip()
    running = holder.isdigit() and activity.pid_alive(int(holder))
    out: dict[str, Any] = {"running": running, "pid": int(holder) if running else None}
    out["state"] = (state or {}).get("state") if running else None
    out["idle_seconds"] = repo.config.sleep.idle_seconds
    idle = activity.idle_for(repo.store)
    out["idle_for"] = None if idle == float("inf") else round(idle, 1)
    return out


def _payoff_json(conn: Any, after_days: float) -> dict[str, Any]:
    """Hits and plausibly saved tokens per module's notes; notes that never paid off."""
    top = [
        {"path": r[0], "hits": r[1], "tokens_saved": r[2]}
        for r in conn.execute(
            "SELECT p.path, sum(p.hits), sum(p.tokens_saved) FROM payoff p JOIN notes n "
            "ON n.id = p.note_id JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
            "GROUP BY p.path ORDER BY sum(p.tokens_saved) DESC LIMIT 20"
        )
    ]
    never = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT n.path FROM notes n JOIN modules m ON m.path = n.path "
            "AND m.blob_sha = n.blob_sha LEFT JOIN payoff p ON p.note_id = n.id "
            "WHERE n.backend != 'static' AND n.created_at < ? AND p.note_id IS NULL "
            "ORDER BY n.path",
            (time.time() - after_days * 86400,),
        )
    ]
    totals = conn.execute(
        "SELECT coalesce(sum(hits), 0), coalesce(sum(tokens_saved), 0) FROM payoff"
    ).fetchone()
    return {
        "hits": totals[0],
        "tokens_saved": totals[1],
        "top": top,
        "never_paid_off": never,
        "never_paid_off_after_days": after_days,
    }


# -- notes ---------------------------------------------------------------------------------
def module_notes(repo: Repo, path: str) -> dict[str, Any]:
    if str(path).strip() in (".", "./"):  # the repository itself, wherever the cwd is
        return overview_notes(repo)
    rel = repo.relpath(path)
    if rel == ".":
        return overview_notes(repo)
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
                    "items": [_item_json(rel, i, n["origin"]) for i in items],
                }
            )
        history = repo.store.module_history(conn, rel)
        model = embed.status(repo.config.embed.model).model
        vectors = repo.store.embedded_units(conn, rel, row["blob_sha"], model) if model else 0
    return {
        "schema_version": SCHEMA_VERSION,
        "path": rel,
        "lang": row["lang"],
        "blob_sha": row["blob_sha"],
        "status": row["status"],
        "reason": row["reason"],
        "warning": row["warning"],
        "notes": notes,
        "history": history,
        "semantic_index": {"model": model, "units": vectors},
    }


def overview_notes(repo: Repo) -> dict[str, Any]:
    """The repo overview note (``deep`` effort) in ``module_notes``' shape, for the path
    ``.``: its items are filed under the modules they cite first, and each names its path."""
    notes: dict[tuple[str, str], dict[str, Any]] = {}
    with repo.store.read() as conn:
        for n in overview_rows(conn):
            note = notes.setdefault(
                (n["backend"], n["model"]),
                {
                    "backend": n["backend"],
                    "model": n["model"],
                    "effort": n["effort"],
                    "prompt_version": n["prompt_version"],
                    "origin": n["origin"],
                    "dropped_citations": 0,
                    "items": [],
                },
            )
            note["dropped_citations"] += n["dropped_citations"]
            if n["origin"] in CARRIED_ORIGINS:
                note["origin"] = n["origin"]
            note["items"] += [
                _item_json(n["path"], item_from_row(r), n["origin"])
                for r in conn.execute(
                    "SELECT * FROM note_items WHERE note_id = ? ORDER BY ordinal", (n["id"],)
                )
            ]
    return {
        "schema_version": SCHEMA_VERSION,
        "path": ".",
        "lang": None,
        "blob_sha": None,
        "status": "overview",
        "reason": None
        if notes
        else "no overview note yet: `refresh --effort deep` with a model backend writes one",
        "warning": None,
        "notes": list(notes.values()),
        "history": [],
    }


def _item_json(path: str, item: Any, origin: str) -> dict[str, Any]:
    """One note item as ``notes --json`` serves it (``origin``: its note set's)."""
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
        "source": item_source(origin, item.generated),
    }


# -- context -------------------------------------------------------------------------------
MAX_BUDGET = 32000  # tokens: the largest context budget any shell accepts


def check_budget(budget: object) -> int | None:
    """A context budget as every shell (CLI, LSP, MCP) takes it: None (the config's
    default), or an integer from 1 to ``MAX_BUDGET`` (a boolean is not an integer here)."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise SleepyError(f"the budget must be an integer number of tokens, got {budget!r}")
    if not 1 <= budget <= MAX_BUDGET:
        raise SleepyError(f"the budget must be from 1 to {MAX_BUDGET} tokens, got {budget}")
    return budget


def get_context(
    repo: Repo, question: str, budget: int | None = None, *, source: str | None = "cli"
) -> Context:
    """Cited context for ``question``; logged as a query hit of ``source`` (None: not
    logged; the caller logs it later with ``log_context_hit``, e.g. after replying)."""
    if not question.strip():
        raise SleepyError("the question is empty")
    budget = check_budget(budget)
    budget = budget if budget is not None else repo.config.retrieve.budget
    no_index = f"{repo.root} has no index yet: run `sleepy-repo refresh --repo {repo.root}`"
    if not repo.store.exists():
        raise StoreMissingError(no_index)
    with repo.store.read() as conn:
        if repo.store.get_meta(conn, "last_scan") is None:
            raise StoreMissingError(no_index)
    deny = DenyList(repo.config.scan.deny)
    return context(
        repo.store, question, budget, log_source=source, deny=deny, embedder=embedder(repo)
    )


def log_context_hit(repo: Repo, ctx: Context, source: str) -> None:
    log_hit_of_context(repo.store, ctx, source)


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
        conn.execute("DELETE FROM payoff WHERE note_id NOT IN (SELECT id FROM notes)")
    with repo.store.read() as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
    over_limit = _shrink(repo)
    return {
        "schema_version": SCHEMA_VERSION,
        "notes_removed": len(doomed) + over_limit,
        "notes_removed_over_limit": over_limit,
        "limit_bytes": int(repo.config.sleep.store_limit_mb * 1024 * 1024),
        "items_removed": items,
        "jobs_removed": jobs,
        "bytes_before": before,
        "bytes_after": _store_bytes(repo.store),
    }


def enforce_store_limit(repo: Repo) -> dict[str, Any] | None:
    """From idle time: ``gc`` when the store is over ``[sleep] store_limit_mb``."""
    limit = int(repo.config.sleep.store_limit_mb * 1024 * 1024)
    if not limit or _store_bytes(repo.store) <= limit:
        return None
    return gc(repo)


def _shrink(repo: Repo) -> int:
    """Drop model-written notes until the store is under ``[sleep] store_limit_mb``, those
    that paid off least, oldest first; the number dropped. Static notes of current blobs
    stay (cheap to rebuild, and always served)."""
    limit = int(repo.config.sleep.store_limit_mb * 1024 * 1024)
    dropped = 0
    while limit and _store_bytes(repo.store) > limit:
        with repo.store.write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT n.id FROM notes n LEFT JOIN payoff p ON p.note_id = n.id "
                    "WHERE n.backend != 'static' "
                    "ORDER BY coalesce(p.hits, 0), n.created_at LIMIT "
                    "max(1, (SELECT count(*) FROM notes WHERE backend != 'static') / 10)"
                )
            ]
            for note_id in ids:
                conn.execute("DELETE FROM note_items WHERE note_id = ?", (note_id,))
                conn.execute("DELETE FROM notes WHERE id = ?", (note_id,))
                conn.execute("DELETE FROM payoff WHERE note_id = ?", (note_id,))
        if not ids:
            log.warning(
                "the store (%d bytes) stays over [sleep] store_limit_mb: only static notes "
                "of current files are left",
                _store_bytes(repo.store),
            )
            break
        dropped += len(ids)
        with repo.store.read() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
    return dropped


def _store_bytes(store: NoteStore) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(store.path) + suffix)
        if p.exists():
            total += os.path.getsize(p)
    return total


# -- ask -----------------------------------------------------------------------------------
def ask(
    repo: Repo,
    question: str,
    budget: int | None = None,
    *,
    source: str = "cli",
    backend: str | None = None,
) -> dict[str, Any]:
    """Answer from the packed context (``context``: what ``get_context`` returns) with the
    model ``backend`` (default ``[notes] backend``; ``static`` = no model: ``answer`` is
    None and ``message`` says why). The call runs under ``[budget]`` and is recorded in the
    ledger (reason ``"ask"``); citations outside the context are dropped and counted."""
    model = get_answer_model(backend or repo.config.notes.backend, repo.config)
    unready = None
    if model is not None:
        try:
            model.ready()  # a missing key or model file
        except ConfigError as exc:
            if backend:  # chosen for this call: fail before any work
                raise
            unready = str(exc)  # from config: still serve the context, and say why
    ctx = get_context(repo, question, budget, source=source)
    if unready is not None:
        result = answer_question(ctx).to_json()
        result["message"] = f"The configured answering model cannot run: {unready}."
        return result
    return answer_question(ctx, model, store=repo.store, limits=repo.config.budget).to_json()


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
    if repo.config.notes.commit:
        check_inside(repo.root, mirror.notes_dir(repo.root), "the notes mirror directory")
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
    return mirror.import_mirrors(
        repo.root, repo.store, denied=DenyList(repo.config.scan.deny).denied
    )


# -- editor (LSP) --------------------------------------------------------------------------
#: symbol kinds that get a code lens of their own (besides the module's)
LENS_KINDS = frozenset({"class", "struct", "interface", "enum", "trait"})
MAX_HOVER_ITEMS = 8
MAX_MODULE_QA = 5


@dataclass(frozen=True)
class EditorItem:
    """One note item as an editor shows it, with the note set it comes from."""

    item: NoteItem
    backend: str
    model: str
    source: str  # notes.SOURCES: where the item's text comes from


@dataclass(frozen=True)
class HoverNotes:
    """What a hover at one line serves: the notes of the innermost symbol there that has
    any, or the module's summary and top Q&A on its header (first line, imports)."""

    path: str
    target: str  # "symbol" | "module"
    symbol: str | None  # qualname (target "symbol")
    kind: str  # the symbol's kind, or "module"
    start_line: int  # the symbol's span, or the module header (1-based, inclusive)
    end_line: int
    signature: str | None
    items: list[EditorItem]
    file_changed: bool  # the file on disk is not the content the notes describe

    @property
    def query(self) -> str:
        """How the hit log records this hover."""
        return f"{self.path}:{self.symbol}" if self.symbol else self.path


@dataclass(frozen=True)
class Lens:
    """A code lens: the note state of a module (``symbol`` None, line 1) or a class."""

    path: str
    line: int  # 1-based
    symbol: str | None
    state: str  # fresh | stale | changed | missing
    backend: str | None  # the note set counted (None when there is none)
    qa: int
    facts: int
    stale_items: int

    @property
    def title(self) -> str:
        parts = [f"notes: {self.state}"]
        if self.state == "missing":
            return "notes: missing (run sleepy-repo refresh)"
        parts.append(f"{self.qa} Q&A")
        if self.facts:
            parts.append(f"{self.facts} facts")
        if self.stale_items:
            parts.append(f"{self.stale_items} stale")
        if self.backend and self.backend != "static":
            parts.append(self.backend)
        return " · ".join(parts)


def _module_row(conn: Any, path: str) -> Any:
    return conn.execute(
        "SELECT blob_sha, size, mtime_ns FROM modules WHERE path = ? AND status = 'indexed'",
        (path,),
    ).fetchone()


def _file_changed(repo: Repo, path: str, row: Any) -> bool:
    """Whether the work-tree file differs (by size or mtime) from what was indexed."""
    try:
        st = os.stat(repo.root / path)
    except OSError:
        return True
    return bool(st.st_size != row["size"] or st.st_mtime_ns != row["mtime_ns"])


def _note_sets(conn: Any, path: str, blob_sha: str) -> list[Any]:
    """The note sets of one blob, model notes first (newest first), static last."""
    sets: list[Any] = conn.execute(
        "SELECT id, backend, model, origin FROM notes WHERE path = ? AND blob_sha = ? "
        "ORDER BY backend = 'static', created_at DESC",
        (path, blob_sha),
    ).fetchall()
    return sets


def _editor_items(conn: Any, sets: list[Any], where: str, args: tuple[Any, ...]) -> list[Any]:
    if not sets:
        return []
    ids = [s["id"] for s in sets]
    marks = ",".join("?" * len(ids))
    by_id = {s["id"]: s for s in sets}
    rows = conn.execute(
        f"SELECT * FROM note_items WHERE note_id IN ({marks}) AND {where} "
        "ORDER BY note_id, ordinal",
        (*ids, *args),
    ).fetchall()
    order = {note_id: i for i, note_id in enumerate(ids)}
    rows.sort(key=lambda r: (order[r["note_id"]], r["ordinal"]))
    return [(r, by_id[r["note_id"]]) for r in rows]


def hover_notes(repo: Repo, path: str, line: int) -> HoverNotes | None:
    """The notes to show when hovering ``line`` (1-based) of ``path`` (repo-relative), or
    None (not indexed, no notes there). Reads only the store: nothing is parsed."""
    with repo.store.read() as conn:
        row = _module_row(conn, path)
        if row is None:
            return None
        sets = _note_sets(conn, path, row["blob_sha"])
        if not sets:
            return None
        symbols = conn.execute(
            "SELECT qualname, kind, start_line, end_line, signature FROM symbols "
            "WHERE path = ? AND start_line <= ? AND end_line >= ? "
            "ORDER BY start_line DESC, end_line ASC",
            (path, line, line),
        ).fetchall()
        if symbols:
            names = [s["qualname"] for s in symbols]
            marks = ",".join("?" * len(names))
            found = _editor_items(conn, sets, f"symbol IN ({marks})", tuple(names))
            for sym in symbols:  # innermost first: the first one that has notes
                mine = [(r, s) for r, s in found if r["symbol"] == sym["qualname"]]
                if mine:
                    return HoverNotes(
                        path=path,
                        target="symbol",
                        symbol=sym["qualname"],
                        kind=sym["kind"],
                        start_line=sym["start_line"],
                        end_line=sym["end_line"],
                        signature=sym["signature"],
                        items=[_editor_item(r, s) for r, s in mine[:MAX_HOVER_ITEMS]],
                        file_changed=_file_changed(repo, path, row),
                    )
            return None
        module = _editor_items(conn, sets, "symbol IS NULL", ())
        header_end = max(
            (r["end_line"] for r, _ in module if r["start_line"] == 1 and r["kind"] == "summary"),
            default=1,
        )
        if line > header_end and line not in _import_lines(conn, path):
            return None
        summaries = [(r, s) for r, s in module if r["kind"] == "summary"][:1]
        qa = [(r, s) for r, s in module if r["kind"] == "qa"][:MAX_MODULE_QA]
        if not summaries and not qa:
            return None
        return HoverNotes(
            path=path,
            target="module",
            symbol=None,
            kind="module",
            start_line=1,
            end_line=header_end,
            signature=None,
            items=[_editor_item(r, s) for r, s in summaries + qa],
            file_changed=_file_changed(repo, path, row),
        )


def _import_lines(conn: Any, path: str) -> set[int]:
    """Lines of the module's imports (off the hot path: only for lines outside the header
    and outside every symbol)."""
    row = conn.execute(
        "SELECT json_extract(facts_json, '$.imports') FROM modules WHERE path = ?", (path,)
    ).fetchone()
    if row is None or row[0] is None:
        return set()
    return {int(i["line"]) for i in json.loads(row[0])}


def _editor_item(row: Any, note_set: Any) -> EditorItem:
    item = item_from_row(row)
    return EditorItem(
        item=item,
        backend=note_set["backend"],
        model=note_set["model"],
        source=item_source(note_set["origin"], item.generated),
    )


def record_hover_hit(repo: Repo, query: str, paths: list[str]) -> None:
    """Log a hover that served notes as a query hit (the planner reads hits)."""
    repo.store.record_hit("hover", query, paths)


def code_lenses(repo: Repo, path: str, backend: str | None = None) -> list[Lens]:
    """One lens for the module (line 1) and one per class-like symbol: the state of the
    notes of ``backend`` (default: the configured one; else the best note set there is)
    and their counts. Empty when ``path`` is not indexed."""
    backend = backend or repo.config.notes.backend
    with repo.store.read() as conn:
        row = _module_row(conn, path)
        if row is None:
            return []
        sets = _note_sets(conn, path, row["blob_sha"])
        chosen = next((s for s in sets if s["backend"] == backend), sets[0] if sets else None)
        classes = conn.execute(
            "SELECT qualname, start_line FROM symbols WHERE path = ? AND kind IN "
            f"({','.join('?' * len(LENS_KINDS))}) ORDER BY start_line",
            (path, *sorted(LENS_KINDS)),
        ).fetchall()
        items = (
            conn.execute(
                "SELECT kind, symbol, stale FROM note_items WHERE note_id = ?", (chosen["id"],)
            ).fetchall()
            if chosen is not None
            else []
        )
    changed = _file_changed(repo, path, row)

    def lens(line: int, symbol: str | None, rows: list[Any]) -> Lens:
        stale_items = sum(1 for r in rows if r["stale"])
        if chosen is None:
            state = "missing"
        elif changed:
            state = "changed"
        elif chosen["origin"] not in COMPLETE_ORIGINS or stale_items:
            state = "stale"
        else:
            state = "fresh"
        return Lens(
            path=path,
            line=line,
            symbol=symbol,
            state=state,
            backend=chosen["backend"] if chosen is not None else None,
            qa=sum(1 for r in rows if r["kind"] == "qa"),
            facts=sum(1 for r in rows if r["kind"] == "fact"),
            stale_items=stale_items,
        )

    out = [lens(1, None, items)]
    for c in classes:
        q = c["qualname"]
        mine = [
            r
            for r in items
            if r["symbol"] and (r["symbol"] == q or r["symbol"].startswith(q + "."))
        ]
        out.append(lens(c["start_line"], q, mine))
    return out
