"""``sleepy-repo watch``: the watcher and the idle-time sleeper in one process.

A thin shell like the CLI and the language server: file-system batches (``watch``) become
an activity mark and an immediate static refresh (``api.refresh``, cheap), and a
``scheduler.SleepThread`` writes model notes whenever the repository is idle. When an
exported signature of a changed module changes, the modules importing it are queued again
at a lower priority ("dependency changed").

``start_sleeper`` is the part the language server reuses (it records its own activity).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sleepy_repo import api
from sleepy_repo.errors import SleepyError
from sleepy_repo.models import get_backend
from sleepy_repo.models import ready as backend_ready
from sleepy_repo.scan import uncommitted
from sleepy_repo.scheduler import Scheduler, SleeperBusyError, SleeperLock, SleepThread
from sleepy_repo.watch import Batch, Watcher

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass
class Sleeper:
    lock: SleeperLock
    scheduler: Scheduler
    thread: SleepThread

    def stop(self) -> None:
        self.thread.stop()
        self.lock.release()


def start_sleeper(
    repo: api.Repo,
    *,
    backend: str | None = None,
    effort: str | None = None,
    clock: Clock | None = None,
    tick: float = 0.5,
) -> Sleeper:
    """Take the repository's sleeper lock (``SleeperBusyError`` if another process holds
    it) and start writing model notes while idle. With the static backend there is no
    model work: the thread only idles."""
    chosen = backend or repo.config.notes.backend
    effort = effort or repo.config.notes.effort
    model = None
    if chosen != "static":
        model = get_backend(chosen, repo.config, effort)
        backend_ready(model)
    lock = SleeperLock(repo.config.store_dir(repo.root))
    lock.acquire()
    try:
        scheduler = Scheduler(repo.root, repo.is_git, repo.store, repo.config, model, effort=effort)
        if clock is not None:
            scheduler.clock = clock
        thread = SleepThread(
            scheduler, tick=tick, housekeeping=lambda: api.enforce_store_limit(repo)
        )
        thread.start()
    except BaseException:
        lock.release()
        raise
    return Sleeper(lock, scheduler, thread)


def exported_signatures(
    repo: api.Repo, paths: Iterable[str]
) -> dict[str, frozenset[tuple[str, str]]]:
    paths = list(paths)
    out: dict[str, set[tuple[str, str]]] = {p: set() for p in paths}
    with repo.store.read() as conn:
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for path, qualname, sig in conn.execute(
                f"SELECT path, qualname, coalesce(signature, '') FROM symbols "
                f"WHERE exported = 1 AND path IN ({marks})",
                chunk,
            ):
                out[path].add((qualname, sig))
        indexed = (
            {
                r[0]
                for r in conn.execute(
                    f"SELECT path FROM modules WHERE status = 'indexed' AND path IN "
                    f"({','.join('?' * len(paths))})",
                    paths,
                )
            }
            if paths
            else set()
        )
    return {p: frozenset(v) for p, v in out.items() if p in indexed}


def importers(repo: api.Repo, paths: Iterable[str]) -> set[str]:
    paths = list(paths)
    if not paths:
        return set()
    with repo.store.read() as conn:
        return {
            r[0]
            for r in conn.execute(
                f"SELECT DISTINCT src FROM edges WHERE dst IN ({','.join('?' * len(paths))})",
                paths,
            )
        }


@dataclass
class WatchStats:
    batches: int = 0
    events: int = 0
    refreshes: int = 0
    dependency_changed: set[str] = field(default_factory=set)
    mode: str = ""
    warning: str | None = None


def handle_batch(
    repo: api.Repo, batch: Batch, recorder: Any, sleeper: Sleeper | None, stats: WatchStats
) -> dict[str, Any]:
    """One burst of changes: mark activity, refresh static notes at once, and queue the
    importers of modules whose exported signatures changed."""
    stats.batches += 1
    stats.events += batch.events
    recorder.touch("fs", next(iter(sorted(batch.paths)), None))
    before = exported_signatures(repo, batch.paths)
    result = api.refresh(repo, backend="static")
    stats.refreshes += 1
    after = exported_signatures(repo, batch.paths)
    # a removed or re-signed export can break importers; a new one cannot
    changed_api = {
        p for p in before if p in after and dict(before[p]).items() - dict(after[p]).items()
    }
    if changed_api and repo.is_git:
        # only edits in the work tree: after a branch switch or a pull the importers' notes
        # (keyed by content) were written on that branch, and re-noting them would make
        # every later visit cost model calls again
        changed_api = set() if batch.head_changed else changed_api & set(uncommitted(repo.root))
    deps = importers(repo, changed_api) - batch.paths
    if deps:
        stats.dependency_changed |= deps
        if sleeper is not None:
            sleeper.scheduler.mark_dependency_changed(deps)
        log.info(
            "exported signatures changed in %s: %d importers queued again",
            sorted(changed_api),
            len(deps),
        )
    log.info(
        "%d events, %d paths%s: %d parsed, %d removed",
        batch.events,
        len(batch.paths),
        " (HEAD moved)" if batch.head_changed else "",
        result["parsed"],
        len(result["removed"]),
    )
    return result


def watch(
    repo: api.Repo,
    *,
    backend: str | None = None,
    effort: str | None = None,
    force_polling: bool = False,
    stop: threading.Event | None = None,
    on_ready: Callable[[WatchStats], None] | None = None,
    observer_factory: Callable[[], Any] | None = None,
) -> WatchStats:
    """Run until ``stop`` is set (or Ctrl-C): watch, refresh static notes, sleep."""
    stop = stop or threading.Event()
    stats = WatchStats()
    sleeper = start_sleeper(repo, backend=backend, effort=effort)
    recorder = api.activity_recorder(repo, "watch")
    kwargs: dict[str, Any] = {}
    if observer_factory is not None:
        kwargs["observer_factory"] = observer_factory
    watcher = Watcher(
        repo.root,
        is_git=repo.is_git,
        store_dir=repo.config.store_dir(repo.root),
        debounce=repo.config.sleep.debounce_seconds,
        poll_seconds=repo.config.sleep.poll_seconds,
        force_polling=force_polling,
        **kwargs,
    )
    try:
        api.refresh(repo, backend="static")  # catch up with what changed while away
        watcher.start()
        stats.mode, stats.warning = watcher.mode, watcher.warning
        log.info("watching %s (%s)", repo.root, watcher.mode)
        if on_ready is not None:
            on_ready(stats)
        while not stop.is_set():
            batch = watcher.next_batch(timeout=0.2)
            if batch is None:
                continue
            try:
                handle_batch(repo, batch, recorder, sleeper, stats)
            except SleepyError as exc:
                log.warning("refresh after a change failed: %s", exc)
    finally:
        watcher.stop()
        sleeper.stop()
        recorder.forget()
    return stats


class EditorSleeper:
    """The sleeper inside the language server, one per workspace folder (the server's
    ``background_factory``). It writes model notes while the repository is idle, with the
    editor's ``backend`` and ``idle_seconds`` settings over the repo's config; on save it
    refreshes the index and static notes (unless a ``watch`` daemon holds the sleeper lock
    and does that itself). When another process already sleeps for this repository, it
    only says so: the server keeps recording activity for that process to read."""

    def __init__(self, repo: api.Repo, backend: str | None, idle_seconds: float | None) -> None:
        self.repo = repo
        if idle_seconds:
            repo = dataclasses.replace(
                repo,
                config=dataclasses.replace(
                    repo.config,
                    sleep=dataclasses.replace(repo.config.sleep, idle_seconds=idle_seconds),
                ),
            )
        self.sleep_repo = repo
        self.backend = backend
        self.sleeper: Sleeper | None = None
        self.other: str | None = None  # why another process does the sleeping
        self._refreshing = threading.Lock()

    def start(self) -> None:
        # an editor that starts a server means the developer is here
        api.activity_recorder(self.repo, "lsp").touch("open")
        try:
            self.sleeper = start_sleeper(self.sleep_repo, backend=self.backend)
        except SleeperBusyError as exc:
            self.other = str(exc)
            log.info("%s", exc)

    def saved(self, path: str) -> None:
        """A document was saved: refresh now (static notes are cheap), unless a watcher
        runs; model work follows when idle."""
        if self.sleeper is None or not self._refreshing.acquire(blocking=False):
            return
        try:
            api.refresh(self.repo, backend="static")
        except SleepyError as exc:
            log.warning("refresh after saving %s failed: %s", path, exc)
        finally:
            self._refreshing.release()

    def stop(self) -> None:
        if self.sleeper is not None:
            self.sleeper.stop()
            self.sleeper = None
