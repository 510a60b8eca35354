"""The note store: SQLite (WAL, FTS5) under ``.sleepy/index.db``.

All access goes through ``NoteStore.read()`` / ``NoteStore.write()``: one connection and one
short transaction each, placeholders only. Several processes (CLI, language server,
watcher, hook) may write at once: WAL + a busy timeout + ``BEGIN IMMEDIATE`` serialise them,
and a kill -9 mid-write leaves the last committed state. The schema is created in a temp
file and atomically renamed into place, so a half-created store never exists.

Tables: ``meta``, ``modules`` (the scanned state of every path), ``symbols``, ``edges``
(import graph), ``chunks`` (raw code), ``notes`` + ``note_items`` (keyed by
``(path, blob_sha, prompt_version, backend, model, effort)``), ``jobs`` (model work still
to do), ``ledger`` (every model call), ``reservations`` (budget held by calls in flight),
``batches`` (pending Message Batches) and ``hits``. FTS5 tables index note items and code
chunks; triggers keep them consistent with their rows inside the same transaction.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import string
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from json.encoder import encode_basestring_ascii as _json_str
from pathlib import Path
from typing import Any

from sleepy_repo import procs
from sleepy_repo.errors import (
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreMissingError,
    StoreReadOnlyError,
)
from sleepy_repo.notes import COMPLETE_ORIGINS, Citation, ModuleNotes, NoteItem, NoteKey
from sleepy_repo.parse.facts import ModuleFacts, Reference, enclosing_symbols
from sleepy_repo.units import SymbolSpan

log = logging.getLogger(__name__)

DB_NAME = "index.db"
SCHEMA_VERSION = 13
# source bytes per token, for the tokens a served note plausibly saved (see log_hit)
BYTES_PER_TOKEN = 3.5
APPLICATION_ID = 0x534C5059  # "SLPY": tells our database from a foreign one
BUSY_TIMEOUT_MS = 30_000
# a kill during ``_create`` leaves its temporary database: ``.index-<pid>-<random>.tmp``
# (``.index-<random>.tmp`` before schema 13), perhaps with a ``-journal``/``-wal``/``-shm``
TEMP_PREFIX = ".index-"
_TEMP_RE = re.compile(
    r"(?P<base>\.index-(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+\.tmp)(?:-journal|-wal|-shm)?"
)
STALE_TEMP_SECONDS = 600.0  # creating a store takes well under a second
UNKNOWN_REASON = "unknown"  # the ledger reason of a call whose process died in flight
# bytes per database page of a new store (SQLite's default is 4096): the bulk of a store is
# code chunks and full-text segments, written a batch at a time, and 16 KiB pages cut the
# CPU of writing a cold index by about a sixth with no slower queries (32 KiB: a little
# less CPU, queries about 10% slower); existing stores keep theirs
PAGE_SIZE = 16_384

_SCHEMA_V1 = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE modules(
  path TEXT PRIMARY KEY,
  lang TEXT,
  blob_sha TEXT,
  size INTEGER,
  mtime_ns INTEGER,
  status TEXT NOT NULL,            -- indexed | skipped
  reason TEXT,                     -- why skipped
  warning TEXT,                    -- indexed, but with a caveat (e.g. not UTF-8)
  line_count INTEGER,
  facts_json TEXT,
  file_rowid INTEGER,              -- rowid in files_fts
  updated_at REAL NOT NULL
);
CREATE TABLE symbols(
  path TEXT NOT NULL, qualname TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
  start_line INTEGER NOT NULL, end_line INTEGER NOT NULL, signature TEXT, exported INTEGER
);
CREATE INDEX symbols_path ON symbols(path);
CREATE INDEX symbols_name ON symbols(name COLLATE NOCASE);
CREATE INDEX symbols_name_exact ON symbols(name);
CREATE TABLE edges(src TEXT NOT NULL, dst TEXT NOT NULL, PRIMARY KEY(src, dst));
CREATE INDEX edges_dst ON edges(dst);
CREATE TABLE refs(                -- called names: each one's first call site in the module
  path TEXT NOT NULL, lang TEXT NOT NULL, name TEXT NOT NULL, line INTEGER NOT NULL,
  caller TEXT, caller_start INTEGER, caller_end INTEGER
);
CREATE INDEX refs_name ON refs(name, lang);
CREATE INDEX refs_path ON refs(path);
CREATE TABLE chunks(
  id INTEGER PRIMARY KEY, path TEXT NOT NULL, start_line INTEGER NOT NULL,
  end_line INTEGER NOT NULL, symbol TEXT, text TEXT NOT NULL,
  servable INTEGER NOT NULL        -- an exact header/symbol span (gaps are searched only)
);
CREATE INDEX chunks_path ON chunks(path);
CREATE TABLE notes(
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL, blob_sha TEXT NOT NULL, prompt_version TEXT NOT NULL,
  backend TEXT NOT NULL, model TEXT NOT NULL, effort TEXT NOT NULL,
  origin TEXT NOT NULL,            -- written | carried (re-anchored from an older blob)
  dropped_citations INTEGER NOT NULL DEFAULT 0,
  created_at REAL NOT NULL,
  UNIQUE(path, blob_sha, prompt_version, backend, model, effort)
);
CREATE INDEX notes_path ON notes(path, blob_sha);
CREATE TABLE note_items(
  id INTEGER PRIMARY KEY,
  note_id INTEGER NOT NULL REFERENCES notes(id) ON DELETE CASCADE,
  ordinal INTEGER NOT NULL, kind TEXT NOT NULL, question TEXT, text TEXT NOT NULL,
  symbol TEXT, start_line INTEGER NOT NULL, end_line INTEGER NOT NULL,
  citations_json TEXT NOT NULL, generated INTEGER NOT NULL, stale INTEGER NOT NULL,
  path TEXT NOT NULL
);
CREATE INDEX note_items_note ON note_items(note_id);
CREATE TABLE jobs(
  id INTEGER PRIMARY KEY, path TEXT NOT NULL, blob_sha TEXT NOT NULL, backend TEXT NOT NULL,
  reason TEXT NOT NULL, priority REAL NOT NULL DEFAULT 0, status TEXT NOT NULL,
  error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
  UNIQUE(path, blob_sha, backend)
);
CREATE TABLE ledger(
  id INTEGER PRIMARY KEY, ts REAL NOT NULL, backend TEXT NOT NULL, model TEXT NOT NULL,
  path TEXT, reason TEXT NOT NULL, input_tokens INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0, cache_read_tokens INTEGER NOT NULL DEFAULT 0,
  cache_write_tokens INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0
);
CREATE TABLE hits(
  id INTEGER PRIMARY KEY, ts REAL NOT NULL, source TEXT NOT NULL, query TEXT,
  paths_json TEXT NOT NULL
);

CREATE VIRTUAL TABLE items_fts USING fts5(question, text, terms, tokenize='porter unicode61');
-- chunks_fts keeps no copy of the code: its content is this view (the text as indexed)
CREATE VIEW chunks_src AS SELECT id, fts_text(text) AS text FROM chunks;
CREATE VIRTUAL TABLE chunks_fts USING fts5(
  text, content='chunks_src', content_rowid='id', tokenize='porter unicode61'
);
CREATE VIRTUAL TABLE files_fts USING fts5(path, body, tokenize='porter unicode61');

CREATE TRIGGER note_items_ad AFTER DELETE ON note_items BEGIN
  DELETE FROM items_fts WHERE rowid = old.id;
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
  INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, fts_text(old.text));
END;
"""

# version -> statements that bring a store from version-1 to version
MIGRATIONS: dict[int, str] = {
    # model spending: budget reservations of calls in flight (any process), pending
    # Message Batches (they outlive the process that sent them), and a ledger detail column
    2: """CREATE TABLE reservations(
  id INTEGER PRIMARY KEY, ts REAL NOT NULL, expires REAL NOT NULL, owner TEXT NOT NULL,
  tokens INTEGER NOT NULL, cost_usd REAL NOT NULL
);
CREATE TABLE batches(
  id TEXT PRIMARY KEY, backend TEXT NOT NULL, model TEXT NOT NULL, effort TEXT NOT NULL,
  status TEXT NOT NULL, requests_json TEXT NOT NULL, reservation_id INTEGER,
  created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX ledger_ts ON ledger(ts);
ALTER TABLE ledger ADD COLUMN detail TEXT
""",
    # the sleep engine: editor/watcher activity and open files (per process, so a daemon
    # sees what a language server saw), and per-note payoff (hits and tokens saved)
    3: """CREATE TABLE activity(
  source TEXT PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, path TEXT
);
CREATE TABLE open_files(
  source TEXT NOT NULL, path TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY(source, path)
);
CREATE TABLE payoff(
  note_id INTEGER PRIMARY KEY, path TEXT NOT NULL, hits INTEGER NOT NULL DEFAULT 0,
  tokens_saved INTEGER NOT NULL DEFAULT 0, last_ts REAL NOT NULL
);
CREATE INDEX payoff_path ON payoff(path);
ALTER TABLE jobs ADD COLUMN reasons_json TEXT
""",
    # retrieve maps ranked files_fts rowids to modules (without it, a scan of every module)
    4: """CREATE INDEX modules_file_rowid ON modules(file_rowid)
""",
    # refs keep each called name's first call site per module (preferring one inside a
    # symbol) and the hash of the calling symbol's span (citations need no re-read);
    # FTS5 buffers up to 32 MB of a write before it writes a segment (1 MB by default),
    # so a bulk index writes fewer, larger segments and merges less
    5: """ALTER TABLE refs ADD COLUMN caller_sha TEXT;
DELETE FROM refs WHERE rowid NOT IN (
  SELECT coalesce(min(CASE WHEN caller IS NOT NULL THEN rowid END), min(rowid))
  FROM refs GROUP BY path, name
);
INSERT INTO items_fts(items_fts, rank) VALUES ('hashsize', 33554432);
INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('hashsize', 33554432);
INSERT INTO files_fts(files_fts, rank) VALUES ('hashsize', 33554432)
""",
    # no whole-file index: retrieval scores a file by its best code chunks (``chunks_fts``),
    # which ranked better than whole-file BM25 and saves tokenizing every file twice
    6: """DROP INDEX modules_file_rowid;
ALTER TABLE modules DROP COLUMN file_rowid;
DROP TABLE files_fts
""",
    # two indexes every write maintained for nothing: exact-name lookups use the
    # case-insensitive name index (``name = ? COLLATE NOCASE AND name = ?``), and the
    # notes key's UNIQUE index already starts with (path, blob_sha)
    7: """DROP INDEX symbols_name_exact;
DROP INDEX notes_path
""",
    # how often a module's job crashed the local model's process (three fail the job)
    8: """ALTER TABLE jobs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0
""",
    # history notes (sleepy_repo.history): per module's blob, the lines each commit last
    # changed with its subject, searchable
    9: """CREATE TABLE history_files(
  path TEXT PRIMARY KEY, blob_sha TEXT NOT NULL, head TEXT NOT NULL, dirty INTEGER NOT NULL
);
CREATE TABLE history(
  id INTEGER PRIMARY KEY, path TEXT NOT NULL, start_line INTEGER NOT NULL,
  end_line INTEGER NOT NULL, commit_sha TEXT NOT NULL, summary TEXT NOT NULL
);
CREATE INDEX history_path ON history(path);
CREATE VIRTUAL TABLE history_fts USING fts5(
  summary, content='history', content_rowid='id', tokenize='porter unicode61'
);
CREATE TRIGGER history_ai AFTER INSERT ON history BEGIN INSERT INTO history_fts(rowid,
  summary) VALUES (new.id, new.summary); END;
CREATE TRIGGER history_ad AFTER DELETE ON history BEGIN INSERT INTO history_fts(history_fts,
  rowid, summary) VALUES ('delete', old.id, old.summary); END
""",
    # fusion weights fitted on the repository's own history (sleepy_repo.tune): the commit
    # ranges they were fitted and scored on, both scores, and whether they were adopted
    10: """CREATE TABLE tuning(
  id INTEGER PRIMARY KEY, created_at REAL NOT NULL, head TEXT NOT NULL,
  fit_range TEXT NOT NULL, score_range TEXT NOT NULL, fit_cases INTEGER NOT NULL,
  score_cases INTEGER NOT NULL, weights TEXT NOT NULL, default_score REAL NOT NULL,
  tuned_score REAL NOT NULL, adopted INTEGER NOT NULL, seconds REAL NOT NULL,
  detail TEXT NOT NULL
)
""",
    # the semantic index (sleepy_repo.embed): per module and model, the spans of its units'
    # pieces and their vectors (float16, one row per span), for the blob they were made of
    11: """CREATE TABLE embeddings(
  path TEXT NOT NULL, model TEXT NOT NULL, blob_sha TEXT NOT NULL, spans TEXT NOT NULL,
  vectors BLOB NOT NULL, seconds REAL NOT NULL, PRIMARY KEY(path, model)
)
""",
    # change counters, so a long-lived process can tell in one read whether what it cached
    # of the store still holds: 'modules' moves when a module is added, removed or replaced
    # (its code, symbols and chunks are rewritten with it), 'embeddings' when a vector row
    # changes, and 'store' is drawn at random once (>= 0; abs() overflows on -2**63), so a
    # rebuilt store never matches a cache
    12: "CREATE TABLE generations(name TEXT PRIMARY KEY, n INTEGER NOT NULL);\n"
    "INSERT INTO generations VALUES ('store', random() & 9223372036854775807), "
    "('modules', 0), ('embeddings', 0);\n"
    + "".join(
        f"CREATE TRIGGER {table}_gen_{tag} AFTER {event} ON {table} "
        f"BEGIN UPDATE generations SET n = n + 1 WHERE name = '{table}'; END;\n"
        for table, tag, event in (
            ("modules", "ai", "INSERT"),
            ("modules", "ad", "DELETE"),
            ("modules", "au", "UPDATE OF path, blob_sha, status"),
            ("embeddings", "ai", "INSERT"),
            ("embeddings", "ad", "DELETE"),
            ("embeddings", "au", "UPDATE"),
        )
    ),
    # crash hygiene: who holds each reservation (its process, so a dead one's are released
    # at once) and what the call was (a call cut off by a kill becomes an 'unknown' ledger row)
    13: "".join(
        f"ALTER TABLE reservations ADD COLUMN {column};\n"
        for column in (
            "pid INTEGER",
            "process TEXT",
            "backend TEXT",
            "model TEXT",
            "path TEXT",
            "reason TEXT",
            "input_tokens INTEGER",
            "output_tokens INTEGER",
        )
    ),
}


_TUNING_COLUMNS = (
    "created_at",
    "head",
    "fit_range",
    "score_range",
    "fit_cases",
    "score_cases",
    "weights",
    "default_score",
    "tuned_score",
    "adopted",
    "seconds",
    "detail",
)


@dataclass(frozen=True)
class ModuleRow:
    path: str
    lang: str | None
    blob_sha: str | None
    size: int | None
    mtime_ns: int | None
    status: str
    reason: str | None
    warning: str | None
    line_count: int | None


# SQLite's primary result codes (``exc.sqlite_errorcode & 0xFF``) that are faults of the
# file or the disk, not of sleepy-repo: each becomes an error that says what to do
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_FULL = {sqlite3.SQLITE_FULL}
_READONLY = {sqlite3.SQLITE_READONLY}
_CANTOPEN = {sqlite3.SQLITE_CANTOPEN}
_IOERR = {sqlite3.SQLITE_IOERR}
_NOT_DAMAGE = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_INTERRUPT}
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


def _disk_full(directory: Path) -> bool:
    try:
        return os.statvfs(directory).f_bavail == 0
    except OSError:
        return False


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return _open(path, immutable=False)  # its first statement opens the WAL index
    except sqlite3.OperationalError as exc:
        # a store in a directory this process cannot write: SQLite cannot create the WAL
        # index (-shm) beside it. When no -wal is left there, the last writer checkpointed
        # everything into the file, so reading it as immutable is exact
        wal = path.with_name(path.name + "-wal")
        code = _code(exc)
        unwritable = code in _CANTOPEN | _READONLY and not os.access(path.parent, os.W_OK)
        if not unwritable:  # live writers may be checkpointing: never immutable then
            raise
        if wal.exists() and wal.stat().st_size:
            raise StoreReadOnlyError(
                f"{path.parent} is read-only and holds an unfinished write-ahead log; "
                "make it writable once so SQLite can fold the log into the store"
            ) from None
        return _open(path, immutable=True)


def _open(path: Path, *, immutable: bool) -> sqlite3.Connection:
    if immutable:
        uri = f"{path.absolute().as_uri()}?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.create_function("fts_text", 1, fts_text, deterministic=True)
    except BaseException:
        conn.close()
        raise
    return conn


class NoteStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / DB_NAME

    # -- lifecycle -------------------------------------------------------------------
    def exists(self) -> bool:
        """A store is there: a 0-byte ``index.db`` (SQLite leaves one when a process opens
        a missing path; no store of ours is ever empty) counts as absent."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def ensure(self) -> None:
        """Create the store if missing, check and migrate it otherwise; then clear what a
        killed process left (its temporary files, its budget reservations)."""
        self.remove_stale_temp_files()
        if not self.exists():
            self._create()
        else:
            self._check_and_migrate()
        self.release_dead_reservations()

    def remove_stale_temp_files(self) -> list[str]:
        """Delete the temporary databases (and their journals) of ``_create`` runs that
        cannot finish: their creator is dead, or they are older than any create takes. The
        store itself (``index.db`` and its ``-wal``/``-shm``) is never touched. Names
        removed."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        groups: dict[str, list[str]] = {}
        for name in names:
            m = _TEMP_RE.fullmatch(name)
            if m:
                groups.setdefault(m.group("base"), []).append(name)
        removed: list[str] = []
        now = time.time()
        for base, files in groups.items():
            if not self._temp_is_stale(base, files, now):
                continue
            for name in sorted(files, reverse=True):  # its journals before the database
                try:
                    (self.directory / name).unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.warning("cannot remove the stale %s: %s", self.directory / name, exc)
                    continue
                removed.append(name)
        if removed:
            log.info("removed %d stale temporary files in %s", len(removed), self.directory)
        return removed

    def _temp_is_stale(self, base: str, files: list[str], now: float) -> bool:
        m = _TEMP_RE.fullmatch(base)
        pid = m.group("pid") if m else None
        if pid and not procs.alive(int(pid)):
            return True
        ages = []
        for name in files:
            try:
                ages.append(now - (self.directory / name).stat().st_mtime)
            except OSError:
                continue
        return bool(ages) and min(ages) > STALE_TEMP_SECONDS

    def _create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # the creator's pid in the name tells a kill's leftover from a create in progress
        fd, tmp = tempfile.mkstemp(
            prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=self.directory
        )
        os.close(fd)
        try:
            with closing(sqlite3.connect(tmp)) as conn:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before the first table
                conn.create_function("fts_text", 1, fts_text, deterministic=True)
                conn.executescript(_SCHEMA_V1)
                for version in sorted(MIGRATIONS):
                    conn.executescript(MIGRATIONS[version])
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.commit()
            # link, not replace: a process that lost the race must never swap the file
            # under one that already opened (and wrote to) the winner's store
            try:
                os.link(tmp, self.path)
            except FileExistsError:  # another process won the race; keep theirs
                if self.exists():
                    return
                os.replace(tmp, self.path)  # ...unless it is an empty leftover
                tmp = ""
            except OSError:  # no hard links on this file system
                if self.path.exists():
                    return
                os.replace(tmp, self.path)
                tmp = ""
        finally:
            if tmp:
                Path(tmp).unlink(missing_ok=True)

    def _rebuild_hint(self) -> str:
        return "run `sleepy-repo init --rebuild` to move it aside and build a new one"

    def _check_and_migrate(self) -> None:
        try:
            with closing(_connect(self.path)) as conn:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if app_id != APPLICATION_ID:
                    raise StoreCorruptError(
                        f"{self.path} is not a sleepy-repo store; {self._rebuild_hint()}"
                    )
                if version > SCHEMA_VERSION:
                    raise StoreCorruptError(
                        f"{self.path} has schema version {version}, newer than this "
                        f"sleepy-repo ({SCHEMA_VERSION}); upgrade sleepy-repo or "
                        f"{self._rebuild_hint()}"
                    )
                if version < SCHEMA_VERSION:
                    conn.execute("BEGIN IMMEDIATE")
                    # another process may have migrated while this one waited for the lock
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    for v in range(version + 1, SCHEMA_VERSION + 1):
                        log.info("migrating %s to schema version %d", self.path, v)
                        for stmt in MIGRATIONS[v].split(";\n"):
                            if stmt.strip():
                                conn.execute(stmt)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            error = self.fault(exc)
            if error is exc:
                raise
            raise error from None

    def rebuild(self) -> Path | None:
        """Move a broken store aside (``index.db.broken-<ts>``) and create a new one."""
        moved: Path | None = None
        if self.path.exists():
            moved = self.path.with_name(f"{DB_NAME}.broken-{int(time.time())}")
            os.replace(self.path, moved)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(DB_NAME + suffix)
                if side.exists():
                    os.replace(side, moved.with_name(moved.name + suffix))
        self._create()
        return moved

    def integrity_errors(self) -> list[str]:
        """``PRAGMA integrity_check`` plus FTS consistency; [] when healthy."""
        errors: list[str] = []
        with self.read() as conn:
            for (row,) in conn.execute("PRAGMA integrity_check"):
                if row != "ok":
                    errors.append(row)
            for fts in ("items_fts", "chunks_fts"):
                try:
                    conn.execute(f"INSERT INTO {fts}({fts}) VALUES ('integrity-check')")
                except sqlite3.DatabaseError as exc:
                    errors.append(f"{fts}: {exc}")
            orphans = {
                "items_fts": "SELECT count(*) FROM items_fts WHERE rowid NOT IN "
                "(SELECT id FROM note_items)",
                "note_items": "SELECT count(*) FROM note_items WHERE id NOT IN "
                "(SELECT rowid FROM items_fts)",
            }
            for table, query in orphans.items():
                n = conn.execute(query).fetchone()[0]
                if n:
                    errors.append(f"{table}: {n} rows without a counterpart")
        return errors

    # -- connections -----------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for the body; SQLite's reports of a bad file or a full disk leave
        it as the ``StoreError`` that says what to do (``fault``). Never creates a store."""
        if not self.exists():
            raise StoreMissingError(
                f"no store at {self.path} yet: run `sleepy-repo refresh` to build one"
            )
        try:
            conn = _connect(self.path)
        except sqlite3.DatabaseError as exc:
            raise self.fault(exc) from None
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            error = self.fault(exc)
            if error is exc:
                raise
            raise error from None
        finally:
            conn.close()

    def fault(self, exc: sqlite3.DatabaseError) -> Exception:
        """The error to raise for ``exc``: a corrupt file (confirmed by ``PRAGMA
        quick_check``, run only now, after SQLite reported it), a full disk or a read-only
        store get their own message; anything else (a bug, a lock) is ``exc`` itself."""
        code = _code(exc)
        # a full disk also shows as an I/O error (the WAL index cannot be created) or as a
        # write to the read-only connection ``_connect`` falls back to there
        if code in _FULL or (code in _IOERR | _READONLY and _disk_full(self.directory)):
            return StoreFullError(
                f"disk full at {self.directory}: free some space and run the command again "
                "(the store is intact: the unfinished write was rolled back)"
            )
        if code in _READONLY:
            unwritable = self.directory if not os.access(self.directory, os.W_OK) else self.path
            return StoreReadOnlyError(
                f"{self.path} is read-only: this command writes to the store; make "
                f"{unwritable} writable (status, notes and context still work)"
            )
        if code in _CANTOPEN | _IOERR:
            return StoreError(f"cannot use {self.path} ({exc}); check the disk and its permissions")
        if code in _NOT_DAMAGE or isinstance(exc, _BUGS):
            return exc  # a lock held too long, or a bug: the traceback is the report
        # damage shows up as CORRUPT/NOTADB, but also as e.g. "vtable constructor failed"
        damage = self._damage()
        if damage is None and code not in _CORRUPT:
            return exc
        return StoreCorruptError(
            f"{self.path} is damaged ({damage or exc}); {self._rebuild_hint()}"
        )

    def _damage(self) -> str | None:
        """The first problem ``PRAGMA quick_check`` finds (None: none found)."""
        try:
            with closing(_connect(self.path)) as conn:
                rows = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as again:
            return str(again)
        lines = [x for r in rows if r != "ok" for x in r.splitlines() if not x.startswith("***")]
        return f"quick_check: {lines[0]}" if lines else None

    @contextmanager
    def session(self) -> Iterator[None]:
        """Keep the store open across many short operations (a refresh). When the last
        connection to a WAL database closes, SQLite copies the whole log into the database,
        syncs and deletes it; with one connection held open, a write's close leaves the log
        to the periodic checkpoints, and the session's own close does it once at the end."""
        with self.read():
            yield

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (``BEGIN IMMEDIATE``); rolled back on error."""
        with self.read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLITE_FULL has already rolled it back
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------
    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    @staticmethod
    def get_meta(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- modules ---------------------------------------------------------------------
    @staticmethod
    def modules(conn: sqlite3.Connection) -> dict[str, ModuleRow]:
        rows = conn.execute(
            "SELECT path, lang, blob_sha, size, mtime_ns, status, reason, warning, line_count "
            "FROM modules"
        )
        return {r["path"]: ModuleRow(*r) for r in rows}

    # -- history notes (sleepy_repo.history) ---------------------------------------------
    @staticmethod
    def history_todo(conn: sqlite3.Connection, head: str) -> list[tuple[str, str]]:
        """(path, blob) of indexed modules whose history is missing for their blob, or had
        uncommitted lines when HEAD was another commit."""
        return [
            (r[0], r[1])
            for r in conn.execute(
                "SELECT m.path, m.blob_sha FROM modules m LEFT JOIN history_files h "
                "ON h.path = m.path WHERE m.status = 'indexed' AND (h.path IS NULL "
                "OR h.blob_sha != m.blob_sha OR (h.dirty = 1 AND h.head != ?)) ORDER BY m.path",
                (head,),
            )
        ]

    @staticmethod
    def put_history(
        conn: sqlite3.Connection,
        path: str,
        blob: str,
        head: str,
        dirty: bool,
        stretches: Iterable[Any],
    ) -> None:
        """Replace a module's history with ``stretches`` (``history.Stretch``)."""
        conn.execute("DELETE FROM history WHERE path = ?", (path,))
        conn.executemany(
            "INSERT INTO history(path, start_line, end_line, commit_sha, summary) "
            "VALUES (?, ?, ?, ?, ?)",
            [(path, s.start_line, s.end_line, s.commit, s.summary) for s in stretches],
        )
        conn.execute(
            "INSERT OR REPLACE INTO history_files(path, blob_sha, head, dirty) VALUES (?, ?, ?, ?)",
            (path, blob, head, int(dirty)),
        )

    # -- the semantic index (owner of ``embeddings``; see sleepy_repo.embed) --------------
    @staticmethod
    def modules_without_embeddings(conn: sqlite3.Connection, model: str) -> list[tuple[str, str]]:
        """(path, blob) of the indexed modules with no vectors of ``model`` for that blob."""
        return [
            (r[0], r[1])
            for r in conn.execute(
                "SELECT m.path, m.blob_sha FROM modules m LEFT JOIN embeddings e "
                "ON e.path = m.path AND e.model = ? AND e.blob_sha = m.blob_sha "
                "WHERE m.status = 'indexed' AND e.path IS NULL ORDER BY m.path",
                (model,),
            )
        ]

    @staticmethod
    def put_embeddings(
        conn: sqlite3.Connection,
        path: str,
        blob_sha: str,
        model: str,
        spans: str,
        vectors: bytes,
        seconds: float,
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO embeddings(path, model, blob_sha, spans, vectors, seconds) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (path, model, blob_sha, spans, vectors, seconds),
        )

    @staticmethod
    def drop_stale_embeddings(conn: sqlite3.Connection) -> int:
        """Drop the vectors of modules that are no longer indexed."""
        return conn.execute(
            "DELETE FROM embeddings WHERE path NOT IN "
            "(SELECT path FROM modules WHERE status = 'indexed')"
        ).rowcount

    @staticmethod
    def current_embeddings(conn: sqlite3.Connection, model: str) -> list[tuple[str, str, bytes]]:
        """(path, spans, vectors) of ``model`` for each module's current blob, by path."""
        return conn.execute(
            "SELECT e.path, e.spans, e.vectors FROM embeddings e JOIN modules m "
            "ON m.path = e.path AND m.blob_sha = e.blob_sha AND m.status = 'indexed' "
            "WHERE e.model = ? ORDER BY e.path",
            (model,),
        ).fetchall()

    @staticmethod
    def generation(conn: sqlite3.Connection, *tables: str) -> tuple[int, ...]:
        """A cache key for what a process derived from ``tables`` (``modules``: every
        module's code, symbols and chunks; ``embeddings``: the vectors): it changes whenever
        they may have, and differs between stores (one read of a small table)."""
        counts = dict(conn.execute("SELECT name, n FROM generations").fetchall())
        return (counts["store"], *(counts[t] for t in tables))

    @staticmethod
    def embeddings_summary(conn: sqlite3.Connection) -> list[tuple[str, int, int, float]]:
        """(model, modules, bytes of vectors, seconds spent) per model, current blobs only."""
        return conn.execute(
            "SELECT e.model, count(*), total(length(e.vectors)), total(e.seconds) "
            "FROM embeddings e JOIN modules m ON m.path = e.path AND m.blob_sha = e.blob_sha "
            "GROUP BY e.model ORDER BY e.model"
        ).fetchall()

    @staticmethod
    def embedded_units(conn: sqlite3.Connection, path: str, blob_sha: str, model: str) -> int:
        """How many of the module's unit pieces have vectors of ``model`` for this blob."""
        row = conn.execute(
            "SELECT spans FROM embeddings WHERE path = ? AND model = ? AND blob_sha = ?",
            (path, model, blob_sha),
        ).fetchone()
        return len(json.loads(row[0])) if row else 0

    @staticmethod
    def database_file(conn: sqlite3.Connection) -> str:
        """The file of the connection's main database."""
        for _, name, file in conn.execute("PRAGMA database_list"):
            if name == "main":
                return str(file)
        return ""

    # -- module code, as the index stores it -----------------------------------------------
    @staticmethod
    def module_lines(conn: sqlite3.Connection, path: str) -> list[str]:
        """A module's code, from its stored chunks (lines no chunk holds were blank)."""
        lines: list[str] = []
        for start, text in conn.execute(
            "SELECT start_line, text FROM chunks WHERE path = ? ORDER BY start_line", (path,)
        ):
            part = text.split("\n")
            if len(lines) < start - 1 + len(part):
                lines.extend([""] * (start - 1 + len(part) - len(lines)))
            lines[start - 1 : start - 1 + len(part)] = part
        return lines

    @staticmethod
    def symbol_spans(conn: sqlite3.Connection, path: str) -> list[SymbolSpan]:
        return [
            SymbolSpan(q, s, e)
            for q, s, e in conn.execute(
                "SELECT qualname, start_line, end_line FROM symbols WHERE path = ?", (path,)
            )
        ]

    @staticmethod
    def history_matches(
        conn: sqlite3.Connection, query: str, limit: int = 300
    ) -> list[tuple[str, int, int, str]]:
        """(path, start, end, summary) of the history stretches whose commit subject best
        matches the FTS ``query``, best first (only current blobs' history is kept)."""
        if not query:
            return []
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT rowid FROM history_fts WHERE history_fts MATCH ? "
                "ORDER BY bm25(history_fts) LIMIT ?",
                (query, limit),
            )
        ]
        if not ids:
            return []
        rows = {
            r[0]: (r[1], r[2], r[3], r[4])
            for r in conn.execute(
                "SELECT id, path, start_line, end_line, summary FROM history "
                f"WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            )
        }
        return [rows[i] for i in ids if i in rows]

    @staticmethod
    def adopted_weights(conn: sqlite3.Connection, defaults: str) -> dict[str, Any] | None:
        """The fusion weights of the newest tuning run, if it adopted them and started from
        the defaults with digest ``defaults`` (``retrieve.Weights.digest``)."""
        row = conn.execute(
            "SELECT weights, adopted, detail FROM tuning ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None or not row[1] or json.loads(row[2]).get("defaults") != defaults:
            return None
        weights: dict[str, Any] = json.loads(row[0])
        return weights

    @staticmethod
    def latest_tuning(conn: sqlite3.Connection) -> dict[str, Any] | None:
        """The newest tuning run, as stored (see ``save_tuning``)."""
        row = conn.execute("SELECT * FROM tuning ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        out = dict(zip(row.keys(), tuple(row), strict=True))
        out["weights"] = json.loads(out["weights"])
        out["detail"] = json.loads(out["detail"])
        out["adopted"] = bool(out["adopted"])
        return out

    TUNING_KEPT = 5

    def save_tuning(self, conn: sqlite3.Connection, run: dict[str, Any]) -> None:
        """Record a tuning run (keys: the ``tuning`` table's columns; ``weights`` and
        ``detail`` as JSON objects); the newest ``TUNING_KEPT`` runs are kept."""
        cols = _TUNING_COLUMNS
        values = [
            json.dumps(run[c], sort_keys=True) if c in ("weights", "detail") else run[c]
            for c in cols
        ]
        conn.execute(
            f"INSERT INTO tuning({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            values,
        )
        conn.execute(
            "DELETE FROM tuning WHERE id NOT IN (SELECT id FROM tuning ORDER BY id DESC LIMIT ?)",
            (self.TUNING_KEPT,),
        )

    @staticmethod
    def module_history(
        conn: sqlite3.Connection, path: str, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The commits that last changed a module's lines, most lines first."""
        return [
            {"commit": r[0], "summary": r[1], "lines": r[2]}
            for r in conn.execute(
                "SELECT commit_sha, summary, sum(end_line - start_line + 1) AS n FROM history "
                "WHERE path = ? GROUP BY commit_sha ORDER BY n DESC, commit_sha LIMIT ?",
                (path, limit),
            )
        ]

    @staticmethod
    def delete_module(conn: sqlite3.Connection, path: str) -> None:
        conn.execute("DELETE FROM history WHERE path = ?", (path,))
        conn.execute("DELETE FROM history_files WHERE path = ?", (path,))
        conn.execute("DELETE FROM symbols WHERE path = ?", (path,))
        conn.execute("DELETE FROM edges WHERE src = ?", (path,))
        conn.execute("DELETE FROM refs WHERE path = ?", (path,))
        conn.execute("DELETE FROM chunks WHERE path = ?", (path,))
        conn.execute("DELETE FROM modules WHERE path = ?", (path,))

    @staticmethod
    def delete_notes(conn: sqlite3.Connection, paths: Iterable[str]) -> None:
        """Every note and every vector of ``paths``, of every backend and model (and their
        payoff rows: ids are reused): what was written from a module's code."""
        for path in paths:
            conn.execute("DELETE FROM embeddings WHERE path = ?", (path,))
            conn.execute(
                "DELETE FROM payoff WHERE note_id IN (SELECT id FROM notes WHERE path = ?)",
                (path,),
            )
            conn.execute("DELETE FROM notes WHERE path = ?", (path,))

    @staticmethod
    def put_skipped(conn: sqlite3.Connection, path: str, reason: str) -> None:
        NoteStore.delete_module(conn, path)
        conn.execute(
            "INSERT INTO modules(path, status, reason, updated_at) VALUES (?, 'skipped', ?, ?)",
            (path, reason, time.time()),
        )

    @staticmethod
    def touch_module(conn: sqlite3.Connection, path: str, mtime_ns: int) -> None:
        conn.execute("UPDATE modules SET mtime_ns = ? WHERE path = ?", (mtime_ns, path))

    @staticmethod
    def insert_modules(conn: sqlite3.Connection, batch: list[ModuleRows]) -> None:
        """Insert modules that have no rows in the store (``delete_module`` them first):
        one ``executemany`` per table for the whole batch.

        Ids are assigned here, in order, as SQLite would (max + 1; the write transaction
        holds the lock), so a batch stores exactly what one insert per row would. No
        statement touches a full-text table between its inserts, so FTS5 keeps them in
        memory until the commit instead of writing a small segment per module."""
        if not batch:
            return
        chunk_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM chunks").fetchone()[0]
        now = time.time()
        modules = []
        chunks = []
        chunks_fts = []
        for m in batch:
            modules.append(
                (
                    m.path,
                    m.lang,
                    m.blob_sha,
                    m.size,
                    m.mtime_ns,
                    m.warning,
                    m.line_count,
                    m.facts_json,
                    now,
                )
            )
            for (start, end, symbol, text, servable), indexed in zip(
                m.chunks, m.chunks_fts, strict=True
            ):
                chunks.append((chunk_id, m.path, start, end, symbol, text, int(servable)))
                chunks_fts.append((chunk_id, text if indexed is None else indexed))
                chunk_id += 1
        conn.executemany(
            "INSERT INTO modules(path, lang, blob_sha, size, mtime_ns, status, warning, "
            "line_count, facts_json, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 'indexed', ?, ?, ?, ?)",
            modules,
        )
        conn.executemany(
            "INSERT INTO symbols(path, qualname, name, kind, start_line, end_line, signature, "
            "exported) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [row for m in batch for row in m.symbols],
        )
        conn.executemany(
            "INSERT INTO refs(path, lang, name, line, caller, caller_start, caller_end, "
            "caller_sha) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [row for m in batch for row in m.refs],
        )
        conn.executemany(
            "INSERT INTO chunks(id, path, start_line, end_line, symbol, text, servable) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            chunks,
        )
        conn.executemany("INSERT INTO chunks_fts(rowid, text) VALUES (?, ?)", chunks_fts)

    @staticmethod
    def set_edges(conn: sqlite3.Connection, src: str, dsts: list[str]) -> None:
        conn.execute("DELETE FROM edges WHERE src = ?", (src,))
        conn.executemany(
            "INSERT OR IGNORE INTO edges(src, dst) VALUES (?, ?)", [(src, d) for d in dsts]
        )

    @staticmethod
    def facts_json(
        conn: sqlite3.Connection, path: str, blob_sha: str | None = None
    ) -> dict[str, Any] | None:
        """The stored facts of ``path`` (None if not indexed, or not at ``blob_sha``)."""
        row = conn.execute(
            "SELECT facts_json FROM modules WHERE path = ? AND status = 'indexed' "
            "AND (? IS NULL OR blob_sha = ?)",
            (path, blob_sha, blob_sha),
        ).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    # -- notes -----------------------------------------------------------------------
    @staticmethod
    def note_keys(conn: sqlite3.Connection, path: str, blob_sha: str) -> list[NoteKey]:
        rows = conn.execute(
            "SELECT path, blob_sha, prompt_version, backend, model, effort FROM notes "
            "WHERE path = ? AND blob_sha = ?",
            (path, blob_sha),
        )
        return [NoteKey(*r) for r in rows]

    @staticmethod
    def has_notes(conn: sqlite3.Connection, key: NoteKey, *, written_only: bool = False) -> bool:
        """Whether notes of ``key`` exist (``written_only``: not merely carried over; notes
        imported whole from a mirror count, so a clone does not pay for them again)."""
        origin = NoteStore.note_origin(conn, key)
        return origin is not None and (not written_only or origin in COMPLETE_ORIGINS)

    @staticmethod
    def note_origin(conn: sqlite3.Connection, key: NoteKey) -> str | None:
        """How the notes of ``key`` came into the store (``notes.origin``), or None."""
        row = conn.execute(
            "SELECT origin FROM notes WHERE path = ? AND blob_sha = ? AND prompt_version = ? "
            "AND backend = ? AND model = ? AND effort = ?",
            (key.path, key.blob_sha, key.prompt_version, key.backend, key.model, key.effort),
        ).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def put_notes(conn: sqlite3.Connection, notes: ModuleNotes, *, origin: str) -> None:
        """Insert or replace the notes of one key (items + FTS rows, in the caller's tx)."""
        NoteStore.insert_notes(conn, [note_rows(notes)], origin=origin)

    @staticmethod
    def insert_notes(conn: sqlite3.Connection, batch: list[NoteRows], *, origin: str) -> None:
        """Insert or replace the notes of each key in ``batch``, in order.

        Ids are assigned here (the write transaction holds the lock), as SQLite would, so
        the items of a whole batch go in with one ``executemany`` per table. Notes that
        already exist under a key, and static notes of another static text version for the
        same blob, are deleted first (rare: the delete cascades to the items
        and their FTS rows, which makes FTS5 write out what it holds in memory)."""
        items: list[tuple[Any, ...]] = []
        fts: list[tuple[Any, ...]] = []
        note_id = item_id = 0
        for rows in batch:
            key = rows.key
            # the notes under this key, and static notes of an older static text version
            # (superseded: both would be served side by side, saying the same things)
            old = conn.execute(
                "SELECT id FROM notes WHERE path = ?1 AND blob_sha = ?2 AND ((prompt_version = ?3 "
                "AND backend = ?4 AND model = ?5 AND effort = ?6) OR (?4 = 'static' AND "
                "backend = 'static' AND prompt_version != ?3))",
                key,
            ).fetchall()
            if old or not note_id:
                _insert_items(conn, items, fts)
                conn.executemany("DELETE FROM notes WHERE id = ?", old)
                note_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM notes").fetchone()[0]
                item_id = conn.execute(
                    "SELECT coalesce(max(id), 0) + 1 FROM note_items"
                ).fetchone()[0]
            conn.execute(
                "INSERT INTO notes(id, path, blob_sha, prompt_version, backend, model, effort, "
                "origin, dropped_citations, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (note_id, *key, origin, rows.dropped_citations, time.time()),
            )
            for i, (item, indexed) in enumerate(zip(rows.items, rows.fts, strict=True)):
                items.append((item_id + i, note_id, i, *item, key[0]))
                fts.append((item_id + i, *indexed))
            note_id += 1
            item_id += len(rows.items)
        _insert_items(conn, items, fts)

    @staticmethod
    def load_items(conn: sqlite3.Connection, key: NoteKey) -> list[NoteItem]:
        rows = conn.execute(
            "SELECT i.* FROM note_items i JOIN notes n ON n.id = i.note_id "
            "WHERE n.path = ? AND n.blob_sha = ? AND n.prompt_version = ? AND n.backend = ? "
            "AND n.model = ? AND n.effort = ? ORDER BY i.ordinal",
            (key.path, key.blob_sha, key.prompt_version, key.backend, key.model, key.effort),
        )
        return [item_from_row(r) for r in rows]

    @staticmethod
    def add_ledger(
        conn: sqlite3.Connection,
        *,
        backend: str,
        model: str,
        path: str | None,
        reason: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cost_usd: float = 0.0,
        detail: dict[str, Any] | None = None,
        ts: float | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO ledger(ts, backend, model, path, reason, input_tokens, output_tokens, "
            "cache_read_tokens, cache_write_tokens, cost_usd, detail) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                time.time() if ts is None else ts,
                backend,
                model,
                path,
                reason,
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                cost_usd,
                json.dumps(detail) if detail else None,
            ),
        )

    def record_hit(
        self,
        source: str,
        query: str,
        paths: list[str],
        served_tokens: dict[str, int] | None = None,
    ) -> None:
        """``log_hit`` in its own write, best effort: a question answered from a read-only
        store or on a full disk is still answered, only not counted."""
        try:
            with self.write() as conn:
                self.log_hit(conn, source, query, paths, served_tokens)
        except (StoreError, sqlite3.OperationalError) as exc:  # e.g. read-only, full, busy
            log.info("query hit not recorded: %s", exc)

    # -- reservations of dead processes ---------------------------------------------
    def release_dead_reservations(self) -> int:
        """``record_dead_reservations`` in its own write transaction, taken only when a
        read finds any (most starts find none and write nothing)."""
        with self.read() as conn:
            if not _dead_reservations(conn):
                return 0
        try:
            with self.write() as conn:  # re-read under the lock: two starts record once
                n = self.record_dead_reservations(conn)
        except (StoreReadOnlyError, StoreFullError) as exc:
            # a read command on a read-only store or a full disk still answers; the next
            # start that can write records them
            log.info("reservations of dead processes left for a later start: %s", exc)
            return 0
        if n:
            log.warning(
                "%d model calls were in flight when their process died: recorded as "
                "'%s' in the ledger at their reserved estimate",
                n,
                UNKNOWN_REASON,
            )
        return n

    @classmethod
    def record_dead_reservations(
        cls, conn: sqlite3.Connection, rows: list[sqlite3.Row] | None = None
    ) -> int:
        """Inside a write transaction: turn the reservations of processes that died (or
        ``rows``) into ledger rows of reason ``unknown`` at their reserved estimate, and
        delete them. Such a call may have been billed in full; counting its estimate means
        spending is never under-counted. Reservations of pending batches stay: the batch
        outlives its sender and is settled when it is collected."""
        rows = _dead_reservations(conn) if rows is None else rows
        for r in rows:
            output = int(r["output_tokens"] or 0)
            cls.add_ledger(
                conn,
                backend=r["backend"] or UNKNOWN_REASON,
                model=r["model"] or UNKNOWN_REASON,
                path=r["path"],
                reason=UNKNOWN_REASON,
                input_tokens=int(r["tokens"]) - output,
                output_tokens=output,
                cost_usd=float(r["cost_usd"]),
                detail={"estimate": True, "call": r["reason"], "owner": r["owner"]},
                ts=float(r["ts"]),
            )
            conn.execute("DELETE FROM reservations WHERE id = ?", (r["id"],))
        return len(rows)

    @staticmethod
    def log_hit(
        conn: sqlite3.Connection,
        source: str,
        query: str,
        paths: list[str],
        served_tokens: dict[str, int] | None = None,
    ) -> None:
        """Log one question (``context``, ``ask``, a hover) and the modules that answered it;
        the planner reads these as past query hits.

        Payoff: every note of those modules' current blobs gets a hit, and the tokens it
        plausibly saved: the module's whole text (what a reader would otherwise open,
        estimated at ``BYTES_PER_TOKEN``) minus what was served from it (``served_tokens``;
        unknown = 0)."""
        now = time.time()
        conn.execute(
            "INSERT INTO hits(ts, source, query, paths_json) VALUES (?, ?, ?, ?)",
            (now, source, query, json.dumps(paths)),
        )
        served_tokens = served_tokens or {}
        for path in paths:
            rows = conn.execute(
                "SELECT n.id, m.size FROM notes n JOIN modules m "
                "ON m.path = n.path AND m.blob_sha = n.blob_sha WHERE n.path = ?",
                (path,),
            ).fetchall()
            for note_id, size in rows:
                saved = max(0, int((size or 0) / BYTES_PER_TOKEN) - served_tokens.get(path, 0))
                conn.execute(
                    "INSERT INTO payoff(note_id, path, hits, tokens_saved, last_ts) "
                    "VALUES (?, ?, 1, ?, ?) ON CONFLICT(note_id) DO UPDATE SET "
                    "hits = hits + 1, tokens_saved = tokens_saved + excluded.tokens_saved, "
                    "last_ts = excluded.last_ts",
                    (note_id, path, saved, now),
                )


def _dead_reservations(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Reservations whose process no longer runs (rows from before schema 13 name no
    process: they expire as before), except those of pending batches."""
    rows = conn.execute(
        "SELECT * FROM reservations WHERE pid IS NOT NULL AND id NOT IN "
        "(SELECT reservation_id FROM batches WHERE status = 'pending' "
        "AND reservation_id IS NOT NULL)"
    ).fetchall()
    verdicts: dict[tuple[int, str], bool] = {}
    dead = []
    for r in rows:
        owner = (int(r["pid"]), r["process"] or "")
        if owner not in verdicts:
            verdicts[owner] = procs.alive(*owner)
        if not verdicts[owner]:
            dead.append(r)
    return dead


def _insert_items(
    conn: sqlite3.Connection, items: list[tuple[Any, ...]], fts: list[tuple[Any, ...]]
) -> None:
    conn.executemany(
        "INSERT INTO note_items(id, note_id, ordinal, kind, question, text, symbol, "
        "start_line, end_line, citations_json, generated, stale, path) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        items,
    )
    conn.executemany("INSERT INTO items_fts(rowid, question, text, terms) VALUES (?, ?, ?, ?)", fts)
    items.clear()
    fts.clear()


Chunk = tuple[int, int, str | None, str, bool]  # start, end, symbol, text, servable


@dataclass
class ModuleRows:
    """Everything stored about one indexed module, as rows ready to insert. Built by
    ``module_rows``, which needs no store: index workers build them in parallel."""

    path: str
    lang: str
    blob_sha: str
    size: int
    mtime_ns: int
    warning: str | None
    line_count: int
    facts_json: str
    symbols: list[tuple[Any, ...]]
    refs: list[tuple[Any, ...]]
    chunks: list[Chunk]
    chunks_fts: list[str | None]  # each chunk as chunks_fts indexes it; None: unchanged


def module_rows(
    *,
    lang: str,
    blob_sha: str,
    size: int,
    mtime_ns: int,
    warning: str | None,
    facts: ModuleFacts,
    chunks: list[Chunk],
) -> ModuleRows:
    path = facts.path
    return ModuleRows(
        path=path,
        lang=lang,
        blob_sha=blob_sha,
        size=size,
        mtime_ns=mtime_ns,
        warning=warning,
        line_count=facts.line_count,
        # call sites are stored once, in ``refs`` (they are most of a module's facts)
        facts_json=json.dumps(replace(facts, references=[]).to_dict()),
        symbols=[
            (
                path,
                s.qualname,
                s.name,
                s.kind,
                s.start_line,
                s.end_line,
                s.signature,
                int(s.exported),
            )
            for s in facts.symbols
        ],
        refs=_caller_rows(path, lang, facts),
        chunks=chunks,
        chunks_fts=_chunks_fts(chunks),
    )


def _caller_rows(path: str, lang: str, facts: ModuleFacts) -> list[tuple[Any, ...]]:
    """One ``refs`` row per called name: its first call inside a symbol (else its first
    call at module level), so "what calls X" lists distinct calling modules, each cited by
    the symbol that calls it, and a name called a hundred times costs one row."""
    refs = facts.references
    first: dict[str, Reference] = {}
    for r in refs:
        first.setdefault(r.name, r)
    chosen = dict(
        zip(first, enclosing_symbols(facts.symbols, [r.line for r in first.values()]), strict=True)
    )
    # a name first called at module level: its first call inside a symbol, if any
    loose = {name for name, s in chosen.items() if s is None}
    if loose:
        later = [r for r in refs if r.name in loose and r is not first[r.name]]
        for r, s in zip(
            later, enclosing_symbols(facts.symbols, [r.line for r in later]), strict=True
        ):
            if s is not None and chosen[r.name] is None:
                chosen[r.name] = s
                first[r.name] = r
    shas = facts.span_shas
    return [
        (
            path,
            lang,
            name,
            first[name].line,
            *(
                (s.qualname, s.start_line, s.end_line, shas.get(f"{s.start_line}:{s.end_line}"))
                if s
                else (None, None, None, None)
            ),
        )
        for name, s in chosen.items()
    ]


def _chunks_fts(chunks: list[Chunk]) -> list[str | None]:
    """Each chunk as FTS indexes it (``fts_text``); None where that changes nothing."""
    out: list[str | None] = []
    for chunk in chunks:
        indexed = fts_text(chunk[3])
        out.append(None if indexed == chunk[3] else indexed)
    return out


@dataclass
class NoteRows:
    """The notes of one key as rows ready to insert (``note_rows``; no store needed)."""

    key: tuple[str, str, str, str, str, str]  # path, blob, prompt version, backend, model, effort
    dropped_citations: int
    items: list[tuple[Any, ...]]  # kind, question, text, symbol, start, end, citations, gen, stale
    fts: list[tuple[str, str, str]]  # question, text, terms as items_fts indexes them


def note_rows(notes: ModuleNotes) -> NoteRows:
    """Each item is searchable by its question, its text (camelCase split) and its terms:
    the module path's words and the item's symbol."""
    k = notes.key
    path_terms = path_words(k.path) + " "
    items = notes.items
    n = len(items)
    indexed = fts_texts(
        [item.question or "" for item in items]
        + [item.text for item in items]
        + [(item.symbol or "").replace(".", " ") for item in items]
    )
    return NoteRows(
        key=(k.path, k.blob_sha, k.prompt_version, k.backend, k.model, k.effort),
        dropped_citations=notes.dropped_citations,
        items=[
            (
                item.kind,
                item.question,
                item.text,
                item.symbol,
                item.start_line,
                item.end_line,
                citations_to_json(item.citations),
                int(item.generated),
                int(item.stale),
            )
            for item in items
        ],
        fts=[(indexed[i], indexed[n + i], path_terms + indexed[2 * n + i]) for i in range(n)],
    )


# camelCase splits where an ASCII lower-case letter or digit meets an ASCII upper-case one
# (``[a-z0-9](?=[A-Z])``, the reference in the tests). Found on the UTF-8 bytes mapped to
# two classes: a ``bytes.find`` of ``b"aA"`` runs in C, where the regex scan took 3x as
# long on code. ASCII letters are single bytes in UTF-8 and no other byte maps to a class.
_CAMEL_CLASSES = bytes(
    ord("a")
    if chr(b) in string.ascii_lowercase + string.digits
    else ord("A")
    if chr(b) in string.ascii_uppercase
    else ord(" ")
    for b in range(256)
)


def fts_text(text: str) -> str:
    """Text as FTS5 indexes it: camelCase split into words (snake_case splits natively)."""
    if text.islower():  # no upper-case letter: nothing to split
        return text
    data = text.encode("utf-8", "surrogatepass")
    classes = data.translate(_CAMEL_CLASSES)
    at = classes.find(b"aA")
    if at < 0:
        return text
    parts: list[bytes] = []
    last = 0
    while at >= 0:
        parts.append(data[last : at + 1])
        last = at + 1
        at = classes.find(b"aA", last)
    parts.append(data[last:])
    return b" ".join(parts).decode("utf-8", "surrogatepass")


def fts_texts(texts: list[str]) -> list[str]:
    """``fts_text`` of each of ``texts``, in one pass over them all (NUL splits no word)."""
    joined = "\0".join(texts)
    out = fts_text(joined).split("\0")
    return out if len(out) == len(texts) else [fts_text(t) for t in texts]


def path_words(path: str) -> str:
    """A path as searchable words: ``a/cart_items.py`` -> ``a cart_items py a/cart_items.py``."""
    return path.replace("/", " ").replace(".", " ") + " " + path


def citations_to_json(cits: tuple[Citation, ...]) -> str:
    """``json.dumps`` of ``[[path, start, end, symbol, sha], ...]``, written out directly
    (the same text; one per stored item, and ``json.dumps`` costs more than the rest)."""
    return (
        "["
        + ", ".join(
            f"[{_json_str(c.path)}, {int(c.start_line)}, {int(c.end_line)}, "
            f"{'null' if c.symbol is None else _json_str(c.symbol)}, {_json_str(c.span_sha)}]"
            for c in cits
        )
        + "]"
    )


def citations_from_json(text: str) -> tuple[Citation, ...]:
    return tuple(Citation(p, s, e, sym, sha) for p, s, e, sym, sha in json.loads(text))


def item_from_row(r: sqlite3.Row) -> NoteItem:
    return NoteItem(
        kind=r["kind"],
        text=r["text"],
        question=r["question"],
        symbol=r["symbol"],
        start_line=r["start_line"],
        end_line=r["end_line"],
        citations=citations_from_json(r["citations_json"]),
        generated=bool(r["generated"]),
        stale=bool(r["stale"]),
    )
