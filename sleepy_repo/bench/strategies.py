"""Localization strategies: what each one serves for a question within a token budget.

A strategy meets the small ``Strategy`` protocol and is listed by name in ``REGISTRY`` (an
open dict: later work adds model notes and a reader the same way). The bench calls
``setup()`` once (a returned string is the reason to skip the strategy), ``run()`` once
per case with every budget (so a strategy ranks once and packs per budget), and
``close()`` at the end.

Every strategy counts tokens with ``sleepy_repo.tokens.count_tokens`` on exactly the text
it serves, and sees only the worktree checked out at the case's state and the store built
from it (the bench never shows it the commit's diff or any later commit). ``family``
names the sleep-time work a strategy relies on: ``none`` (no notes), ``static`` (static
notes) or a model backend; the bench reports sleep-time cost per family.

Strategies here:

* ``raw``: BM25 over raw code chunks, serving the chunks' code in rank order
  (``path:start-end`` + code per chunk) while they fit; no sleep-time work.
* ``paths``: BM25 over whole files (path + content), serving only the ranked path list.
* ``static``: the product's own context on static notes (``retrieve.rank`` +
  ``retrieve.pack``), serving note text, then cited code. Query hits are not logged.
* ``static-paths``: the ``static`` ranking, serving only the path list.
* ``aider-map``: aider's repo map (see ``sleepy_repo.bench.aider_map``).
* ``model``: the product's own context on *model* notes, written at each state by a model
  backend (``ModelNotes(backend)``; its family is the backend's name). They live in a
  store of their own (``StateEnv.family_repos``), so the ``static`` strategies never see
  them. Modules outside ``paths`` (when given) keep static notes only.

``Served.text`` is exactly what was served (what a reader model reads; see
``sleepy_repo.bench.reader``).
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from sleepy_repo import api, retrieve
from sleepy_repo.bench.aider_map import AiderMap
from sleepy_repo.errors import SleepyError
from sleepy_repo.store import fts_text, path_words
from sleepy_repo.tokens import count_tokens


class StrategyError(SleepyError):
    """A strategy failed on a case; the bench drops it and reports why."""


@dataclass(frozen=True)
class Served:
    """What a strategy served for one budget."""

    files: list[str]  # the files the context cites, in context order (repeats allowed)
    tokens: int  # count_tokens of the served text
    text: str = ""  # the served text ("" when a strategy does not expose it)


@dataclass
class StateEnv:
    """One state of the repository, checked out in the bench's worktree."""

    root: Path
    state: str
    repo: api.Repo
    family_repos: dict[str, api.Repo] = field(default_factory=dict)  # model-note stores
    _tracked: list[str] | None = field(default=None, repr=False)

    def tracked_files(self) -> list[str]:
        """``git ls-files`` of the worktree (repo-relative paths)."""
        if self._tracked is None:
            out = subprocess.run(
                ["git", "-C", str(self.root), "-c", "core.quotePath=false", "ls-files", "-z"],
                capture_output=True,
                check=True,
            ).stdout
            self._tracked = [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]
        return self._tracked


@runtime_checkable
class Strategy(Protocol):
    name: str
    family: str
    description: str

    def setup(self) -> str | None:
        """Prepare once; return None when ready, else the reason the strategy is skipped."""
        ...

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        """One ``Served`` per budget, in the order of ``budgets``."""
        ...

    def close(self) -> None: ...


class _Simple:
    """Defaults for strategies that need no setup or teardown."""

    def setup(self) -> str | None:
        return None

    def close(self) -> None:
        return None


def _from_context(ctx: retrieve.Context) -> Served:
    text = "\n".join(i.render() for i in ctx.items)
    return Served(files=[i.path for i in ctx.items], tokens=ctx.tokens, text=text)


def _from_paths(ctx: retrieve.Context) -> Served:
    """A path-list context: its text is the paths, one per line (what was counted)."""
    paths = [i.path for i in ctx.items]
    return Served(files=paths, tokens=ctx.tokens, text="\n".join(paths))


class RawChunks(_Simple):
    name = "raw"
    family = "none"
    description = "BM25 over raw code chunks, serving code; no sleep-time work"

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        with env.repo.store.read() as conn:
            chunks = retrieve.bm25_chunks(conn, retrieve.query_terms(query))
        rendered = [(c.path, f"{c.path}:{c.start_line}-{c.end_line}\n{c.text}") for c in chunks]
        costed = [(path, text, count_tokens(text)) for path, text in rendered]
        return [self._fill(costed, b) for b in budgets]

    @staticmethod
    def _fill(rendered: list[tuple[str, str, int]], budget: int) -> Served:
        """Chunks in rank order; one that does not fit is skipped, smaller ones may follow."""
        files: list[str] = []
        texts: list[str] = []
        used = 0
        for path, text, cost in rendered:
            if used + cost <= budget:
                files.append(path)
                texts.append(text)
                used += cost
        return Served(files=files, tokens=used, text="\n\n".join(texts))


def file_body(chunk_texts: Sequence[str]) -> str:
    """A module as whole-file BM25 indexes it: its code chunks (in line order, each as
    ``fts_text`` indexes it) joined. The chunks cover every line that has a token, so this
    has the tokens of ``fts_text(file)`` at the same positions."""
    return "\n".join(fts_text(t) for t in chunk_texts)


class BM25Paths(_Simple):
    """Whole-file BM25 (path words weighted 2, content 1) over the indexed modules. The
    product ranks files by their best chunks instead, so this baseline keeps its own
    in-memory FTS5 index, brought in step with each state's store by blob sha."""

    name = "paths"
    family = "none"
    description = "BM25 over whole files, serving the ranked path list"

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self._store: Path | None = None
        self._rows: dict[str, tuple[int, str]] = {}  # path -> (rowid, blob sha)

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        conn = self._sync(env.repo)
        terms = retrieve.query_terms(query)
        paths = (
            [
                r[0]
                for r in conn.execute(
                    "SELECT key FROM files WHERE files MATCH ? "
                    "ORDER BY bm25(files, 2.0, 1.0) LIMIT 200",
                    (retrieve.fts_query(terms),),
                )
            ]
            if terms
            else []
        )
        ranking = retrieve.Ranking(files=[(p, 0.0) for p in paths], chunks=[], item_rank={})
        return [_from_paths(retrieve.pack_paths(ranking, query, b)) for b in budgets]

    def _sync(self, repo: api.Repo) -> sqlite3.Connection:
        """The whole-file index of ``repo``'s indexed modules now (re-indexing only the
        modules whose blob changed since the last call on the same store)."""
        if self._conn is None or self._store != repo.store.path:
            self.close()
            self._conn = sqlite3.connect(":memory:")
            self._conn.execute(
                "CREATE VIRTUAL TABLE files "
                "USING fts5(path, body, key UNINDEXED, tokenize='porter unicode61')"
            )
            self._store = repo.store.path
        conn = self._conn
        with repo.store.read() as src:
            now = dict(src.execute("SELECT path, blob_sha FROM modules WHERE status = 'indexed'"))
            stale = [p for p, (_, blob) in self._rows.items() if now.get(p) != blob]
            for path in stale:
                conn.execute("DELETE FROM files WHERE rowid = ?", (self._rows.pop(path)[0],))
            for path in sorted(p for p in now if p not in self._rows):
                texts = [
                    r[0]
                    for r in src.execute(
                        "SELECT text FROM chunks WHERE path = ? ORDER BY start_line", (path,)
                    )
                ]
                rowid = conn.execute(
                    "INSERT INTO files(path, body, key) VALUES (?, ?, ?)",
                    (path_words(path), file_body(texts), path),
                ).lastrowid
                assert rowid is not None
                self._rows[path] = (rowid, now[path])
        conn.commit()
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._store, self._rows = None, None, {}


class StaticNotes(_Simple):
    name = "static"
    family = "static"
    description = "sleepy-repo context on static notes (rank + pack), serving notes"

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        with env.repo.store.read() as conn:
            ranking = retrieve.rank(conn, query)
            return [_from_context(retrieve.pack(ranking, conn, query, b)) for b in budgets]


class StaticPaths(_Simple):
    name = "static-paths"
    family = "static"
    description = "the static ranking, serving the ranked path list"

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        with env.repo.store.read() as conn:
            ranking = retrieve.rank(conn, query)
        return [_from_paths(retrieve.pack_paths(ranking, query, b)) for b in budgets]


class ModelNotes(_Simple):
    """``retrieve.rank`` + ``retrieve.pack`` on the store of model notes written by
    ``backend`` at each state (the bench refreshes it; see ``localize``)."""

    name = "model"

    def __init__(
        self, backend: str | None = None, paths: Sequence[str] = (), share: float | None = None
    ) -> None:
        self.backend = backend
        self.paths = tuple(paths)  # path prefixes given model notes ("" = every module)
        self.share = share  # only the planner's top share of them (None = all)
        self.family = backend or "model"
        where = f" under {', '.join(self.paths)}" if self.paths else ""
        if share is not None:
            where += f", the planner's top {share:.0%} per state"
        self.description = f"sleepy-repo context on {backend or 'model'} notes{where} (rank + pack)"

    def setup(self) -> str | None:
        if not self.backend or self.backend == "static":
            return (
                "no model backend for notes: pass --model-backend local|anthropic|fake "
                "(or set [notes] backend)"
            )
        return None

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        repo = env.family_repos.get(self.family)
        if repo is None:
            raise StrategyError(f"no store of {self.family} notes at state {env.state[:10]}")
        with repo.store.read() as conn:
            ranking = retrieve.rank(conn, query)
            return [_from_context(retrieve.pack(ranking, conn, query, b)) for b in budgets]


#: name -> strategy.
REGISTRY: dict[str, Strategy] = {
    "raw": RawChunks(),
    "paths": BM25Paths(),
    "aider-map": AiderMap(),
    "static": StaticNotes(),
    "static-paths": StaticPaths(),
    "model": ModelNotes(),
}
DEFAULT_STRATEGIES: tuple[str, ...] = ("raw", "paths", "static", "static-paths", "aider-map")


def select(
    names: Sequence[str],
    overrides: Mapping[str, Strategy] | None = None,
) -> dict[str, Strategy]:
    """The named strategies of ``REGISTRY`` in the given order (``overrides`` first)."""
    reg = {**REGISTRY, **(overrides or {})}
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise SleepyError(f"unknown strategies {unknown}; known: {', '.join(reg)}")
    return {n: reg[n] for n in names}
