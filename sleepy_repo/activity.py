"""Developer activity and open files, recorded in the store so every process sees them.

Activity is what the idle timer watches: editor ``didOpen``/``didChange``/``didSave``/
``didClose`` and watcher events outside ``.sleepy/`` and ``.git/``. Hovers and queries are
not activity. Each process writes under its own ``source`` (``"lsp:<pid>"``,
``"watch:<pid>"``), one row it keeps overwriting, so the table never grows; open files are
rows per (source, path). A source whose process has died is ignored by the readers, so a
crashed editor does not keep the repository "busy" or files "open" forever.

Writes are throttled (at most one per ``min_interval`` seconds per source unless the kind
or path changes), because ``didChange`` fires on every keystroke.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]

#: activity kinds (anything else is refused, so a typo cannot make the repo look idle)
KINDS = frozenset({"open", "change", "save", "close", "fs"})


def source_name(role: str, pid: int | None = None) -> str:
    return f"{role}:{pid if pid is not None else os.getpid()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _alive(source: str) -> bool:
    """Whether the process behind ``source`` still runs (sources without a pid count)."""
    _, _, pid = source.rpartition(":")
    return pid_alive(int(pid)) if pid.isdigit() else True


@dataclass
class Recorder:
    """One process's activity writer."""

    store: NoteStore
    source: str
    clock: Clock = time.time
    min_interval: float = 0.25  # well under any idle_seconds
    _last: tuple[float, str, str | None] | None = field(default=None, init=False)

    def touch(self, kind: str, path: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown activity kind {kind!r} (one of {sorted(KINDS)})")
        now = self.clock()
        if self._last is not None:
            ts, last_kind, last_path = self._last
            if (kind, path) == (last_kind, last_path) and now - ts < self.min_interval:
                return
        with self.store.write() as conn:
            conn.execute(
                "INSERT INTO activity(source, ts, kind, path) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(source) DO UPDATE SET ts = excluded.ts, kind = excluded.kind, "
                "path = excluded.path",
                (self.source, now, kind, path),
            )
        self._last = (now, kind, path)

    def opened(self, path: str) -> None:
        with self.store.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO open_files(source, path, ts) VALUES (?, ?, ?)",
                (self.source, path, self.clock()),
            )
        self.touch("open", path)

    def closed(self, path: str) -> None:
        with self.store.write() as conn:
            conn.execute(
                "DELETE FROM open_files WHERE source = ? AND path = ?", (self.source, path)
            )
        self.touch("close", path)

    def forget(self) -> None:
        """On shutdown: this process's open files are no longer open."""
        with self.store.write() as conn:
            conn.execute("DELETE FROM open_files WHERE source = ?", (self.source,))


def last_activity(store: NoteStore, conn: sqlite3.Connection | None = None) -> float | None:
    """The newest activity of any live process (None when there was none)."""

    def read(c: sqlite3.Connection) -> float | None:
        rows = c.execute("SELECT source, ts FROM activity ORDER BY ts DESC").fetchall()
        for source, ts in rows:
            if _alive(source):
                return float(ts)
        return None

    if conn is not None:
        return read(conn)
    with store.read() as c:
        return read(c)


def open_files(store: NoteStore, conn: sqlite3.Connection | None = None) -> set[str]:
    """Paths open in any live editor process."""

    def read(c: sqlite3.Connection) -> set[str]:
        rows = c.execute("SELECT source, path FROM open_files").fetchall()
        live: dict[str, bool] = {}
        out = set()
        for source, path in rows:
            if source not in live:
                live[source] = _alive(source)
            if live[source]:
                out.add(path)
        return out

    if conn is not None:
        return read(conn)
    with store.read() as c:
        return read(c)


def idle_for(store: NoteStore, clock: Clock = time.time) -> float:
    """Seconds since the last activity (infinity when nothing was ever recorded)."""
    last = last_activity(store)
    return float("inf") if last is None else max(0.0, clock() - last)
