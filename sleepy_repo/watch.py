"""The watcher: file-system events in, debounced batches of changed paths out.

watchdog reports every write; ``Watcher`` drops what cannot matter (``.sleepy/``, ``.git/``
internals other than ``HEAD`` and branch refs, gitignored paths) and hands bursts to
``batches()`` as one ``Batch``: a branch switch or a ``git pull`` touching 1,000 files is
one batch, not 1,000 jobs. Events are coalesced with watchdog's ``EventDebouncer`` and
then until the tree has been quiet for ``debounce`` seconds.

When the OS refuses more watches (Linux ``fs.inotify.max_user_watches``, or too many open
files), the watcher says so and falls back to polling: every ``poll_seconds`` it compares
``git status`` (and ``HEAD``) with the last look, so no change is missed; a plain directory
without git is polled by file modification times.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.utils.event_debouncer import EventDebouncer

from sleepy_repo.scan import uncommitted

log = logging.getLogger(__name__)

WATCH_LIMIT_ERRNOS = {errno.ENOSPC, errno.EMFILE, errno.ENFILE}
GIT_KEPT = ("HEAD", "refs/heads/", "packed-refs")  # .git entries that mean a branch change


@dataclass
class Batch:
    paths: set[str] = field(default_factory=set)  # repo-relative, POSIX
    head_changed: bool = False
    events: int = 0

    def merge(self, other: Batch) -> None:
        self.paths |= other.paths
        self.head_changed = self.head_changed or other.head_changed
        self.events += other.events


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: Callable[[FileSystemEvent], None]) -> None:
        self.sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reading a file is not a change
        self.sink(event)


def _decode(p: Any) -> str:
    return os.fsdecode(p) if isinstance(p, bytes) else str(p)


class Watcher:
    def __init__(
        self,
        root: Path,
        *,
        is_git: bool = True,
        store_dir: Path | None = None,
        debounce: float = 0.3,
        poll_seconds: float = 2.0,
        force_polling: bool = False,
        observer_factory: Callable[[], Any] = Observer,
    ) -> None:
        self.root = root.resolve()
        self.is_git = is_git
        self.store_dir = (store_dir or root / ".sleepy").resolve()
        self.debounce = debounce
        self.poll_seconds = poll_seconds
        self.force_polling = force_polling
        self.observer_factory = observer_factory
        self.mode = "stopped"  # events | polling
        self.warning: str | None = None
        self._queue: queue.Queue[Batch] = queue.Queue()
        self._observer: Any = None
        self._debouncer: EventDebouncer | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    # -- filtering ---------------------------------------------------------------------
    def classify(self, abspath: str) -> tuple[str | None, bool]:
        """(repo-relative path or None if irrelevant, whether it is a HEAD/branch change)."""
        try:
            rel = Path(abspath).resolve().relative_to(self.root) if abspath else None
        except (ValueError, OSError):
            return None, False
        if rel is None or not rel.parts:
            return None, False
        try:
            Path(abspath).resolve().relative_to(self.store_dir)
            return None, False
        except ValueError:
            pass
        if rel.parts[0] == ".sleepy":
            return None, False
        if rel.parts[0] == ".git":
            inner = "/".join(rel.parts[1:])
            if inner.endswith(".lock"):
                inner = inner[: -len(".lock")]
            head = any(inner == k or inner.startswith(k) for k in GIT_KEPT if k.endswith("/")) or (
                inner in ("HEAD", "packed-refs")
            )
            return None, head
        return rel.as_posix(), False

    def _events_to_batch(self, events: list[FileSystemEvent]) -> Batch:
        batch = Batch()
        for ev in events:
            relevant = False
            for p in (ev.src_path, getattr(ev, "dest_path", "")):
                if not p:
                    continue
                rel, head = self.classify(_decode(p))
                batch.head_changed = batch.head_changed or head
                relevant = relevant or head
                if rel is not None and not (ev.is_directory and ev.event_type == "modified"):
                    batch.paths.add(rel)
                    relevant = True
            batch.events += relevant
        batch.paths = self._not_ignored(batch.paths)
        return batch

    def _not_ignored(self, paths: set[str]) -> set[str]:
        if not paths or not self.is_git:
            return paths
        proc = subprocess.run(
            ["git", "-C", str(self.root), "check-ignore", "--no-index", "--stdin", "-z"],
            input="\0".join(sorted(paths)).encode("utf-8", "surrogateescape") + b"\0",
            capture_output=True,
            check=False,
        )
        if proc.returncode not in (0, 1):  # 1 = nothing ignored
            return paths
        ignored = {p.decode("utf-8", "surrogateescape") for p in proc.stdout.split(b"\0") if p}
        return paths - ignored

    def _on_events(self, events: list[FileSystemEvent]) -> None:
        batch = self._events_to_batch(events)
        if batch.paths or batch.head_changed:
            self._queue.put(batch)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        if not self.force_polling:
            try:
                self._start_observer()
                self.mode = "events"
                return
            except OSError as exc:
                if exc.errno not in WATCH_LIMIT_ERRNOS:
                    raise
                self.warning = (
                    f"the OS refused more file watches ({exc.strerror or exc}); raise "
                    "fs.inotify.max_user_watches (e.g. `sysctl fs.inotify.max_user_watches="
                    f"524288`). Meanwhile polling `git status` every {self.poll_seconds:g} s."
                )
                log.warning("%s", self.warning)
                self._stop_observer()
        self._start_polling()
        self.mode = "polling"

    def _start_observer(self) -> None:
        self._debouncer = EventDebouncer(self.debounce, self._on_events)
        self._debouncer.start()
        debouncer = self._debouncer
        self._observer = self.observer_factory()
        self._observer.schedule(_Handler(debouncer.handle_event), str(self.root), recursive=True)
        self._observer.start()

    def _stop_observer(self) -> None:
        if self._observer is not None:
            try:
                self._observer.stop()
                if self._observer.is_alive():
                    self._observer.join(5)
            except (OSError, RuntimeError) as exc:
                log.debug("stopping the observer: %s", exc)
            self._observer = None
        if self._debouncer is not None:
            self._debouncer.stop()
            self._debouncer.join(5)
            self._debouncer = None

    def stop(self) -> None:
        self._stop.set()
        self._stop_observer()
        if self._poller is not None:
            self._poller.join(5)
            self._poller = None
        self.mode = "stopped"

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- polling fallback --------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What polling compares: HEAD, and each changed/untracked path with its mtime."""
        if self.is_git:
            head = subprocess.run(
                ["git", "-C", str(self.root), "rev-parse", "HEAD", "--symbolic-full-name", "HEAD"],
                capture_output=True,
                check=False,
                text=True,
            ).stdout
            files: dict[str, Any] = {}
            for path in uncommitted(self.root):
                rel, _ = self.classify(str(self.root / path))
                if rel is not None:
                    try:
                        files[rel] = os.stat(self.root / rel).st_mtime_ns
                    except OSError:
                        files[rel] = None  # deleted
            return {"head": head, "files": files}
        files = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in (".git", ".sleepy")]
            for f in filenames:
                full = os.path.join(dirpath, f)
                try:
                    files[Path(full).relative_to(self.root).as_posix()] = os.stat(full).st_mtime_ns
                except OSError:
                    continue
        return {"head": "", "files": files}

    @staticmethod
    def diff(old: dict[str, Any], new: dict[str, Any]) -> Batch:
        batch = Batch(head_changed=old["head"] != new["head"])
        of, nf = old["files"], new["files"]
        batch.paths = {p for p in of.keys() | nf.keys() if of.get(p, -1) != nf.get(p, -1)}
        batch.events = len(batch.paths) + int(batch.head_changed)
        return batch

    def _start_polling(self) -> None:
        first = self.snapshot()  # before returning: a change right after start is seen

        def loop() -> None:
            last = first
            while not self._stop.wait(self.poll_seconds):
                try:
                    now = self.snapshot()
                except OSError as exc:
                    log.warning("polling the work tree failed: %s", exc)
                    continue
                batch = self.diff(last, now)
                last = now
                if batch.paths or batch.head_changed:
                    self._queue.put(batch)

        self._poller = threading.Thread(target=loop, name="sleepy-poll", daemon=True)
        self._poller.start()

    # -- consuming ---------------------------------------------------------------------
    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """The next burst of changes (None on timeout), coalesced until quiet."""
        try:
            batch = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        quiet_until = time.monotonic() + self.debounce
        while True:
            left = quiet_until - time.monotonic()
            if left <= 0:
                break
            try:
                batch.merge(self._queue.get(timeout=left))
                quiet_until = time.monotonic() + self.debounce
            except queue.Empty:
                break
        return batch
