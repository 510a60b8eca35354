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

* ``raw``: the frozen baseline of ``sleepy_repo.bench.baselines``: BM25 over 40-line
  windows of code with its own index, tokenizer and query words, serving the windows'
  code in rank order (``path:start-end`` + code per window) while they fit.
* ``paths``: BM25 over whole files (path + content), serving only the ranked path list.
* ``whole-files``: the ``paths`` ranking, serving whole files (see ``baselines``).
* ``static``: the product's own context on static notes (``retrieve.rank`` +
  ``retrieve.pack``), serving note text, then cited code. Query hits are not logged.
* ``static-paths``: the ``static`` ranking, serving only the path list.
* ``aider-map``: aider's repo map (see ``sleepy_repo.bench.aider_map``).
* ``model``: the product's own context on *model* notes, written at each state by a model
  backend (``ModelNotes(backend)``; its family is the backend's name). They live in a
  store of their own (``StateEnv.family_repos``), so the ``static`` strategies never see
  them. Modules outside ``paths`` (when given) keep static notes only.

``Served.text`` is exactly what was served (what a reader model reads; see
``sleepy_repo.bench.reader``), and ``Served.items`` the same as spans (path, lines, kind,
text, citations), which the line and symbol metrics of ``sleepy_repo.bench.gold`` score.
"""

from __future__ import annotations

import copy
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from sleepy_repo import api, retrieve
from sleepy_repo.bench import baselines
from sleepy_repo.bench.aider_map import AiderMap
from sleepy_repo.bench.gold import ServedItem
from sleepy_repo.errors import SleepyError
from sleepy_repo.notes import source_lines
from sleepy_repo.redact import DenyList, redact_text
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
    items: list[ServedItem] = field(default_factory=list)  # what ``text`` is, as spans


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


def served_item(item: retrieve.ContextItem) -> ServedItem:
    """A context item as the bench scores it. A ``code`` item's text is the code of its
    lines (``ContextItem.render`` puts the ``path:start-end`` header above it)."""
    return ServedItem(
        path=item.path,
        start_line=item.start_line,
        end_line=item.end_line,
        kind=item.kind,
        text=item.text,
        symbol=item.symbol,
        citations=tuple((c.path, c.start_line, c.end_line) for c in item.citations),
    )


def from_context(ctx: retrieve.Context) -> Served:
    text = "\n".join(i.render() for i in ctx.items)
    return Served(
        files=[i.path for i in ctx.items],
        tokens=ctx.tokens,
        text=text,
        items=[served_item(i) for i in ctx.items],
    )


def from_paths(ctx: retrieve.Context) -> Served:
    """A path-list context: its text is the paths, one per line (what was counted)."""
    paths = [i.path for i in ctx.items]
    items = [ServedItem(path=p, start_line=1, end_line=1, kind="path", text=p) for p in paths]
    return Served(files=paths, tokens=ctx.tokens, text="\n".join(paths), items=items)


class RawChunks(_Simple):
    """The frozen ``raw`` baseline (``sleepy_repo.bench.baselines``): its windows in rank
    order, each served as ``path:start-end`` + its code (redacted) while it fits; one that
    does not fit is skipped and smaller ones may follow."""

    name = "raw"
    family = "none"
    description = "BM25 over 40-line code windows (frozen baseline), serving code"

    def __init__(self) -> None:
        self._index: baselines.RawIndex | None = None
        self._root: Path | None = None

    def index(self, env: StateEnv) -> baselines.RawIndex:
        """The baseline's index of ``env``'s state (kept across states by blob sha)."""
        scan = env.repo.config.scan
        if self._index is None or self._root != env.root:
            self.close()
            self._index = baselines.RawIndex(scan.max_file_bytes)
            self._root = env.root
        self._index.sync(env.root, baselines.tracked_files(env.root, scan.exclude, scan.deny))
        return self._index

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        hits = self.index(env).search(query)
        items = [
            ServedItem(w.path, w.start_line, w.end_line, "code", redact_text(w.text)) for w in hits
        ]
        costed = [(i, count_tokens(_render_code(i))) for i in items]
        return [self._fill(costed, b) for b in budgets]

    @staticmethod
    def _fill(costed: list[tuple[ServedItem, int]], budget: int) -> Served:
        chosen: list[ServedItem] = []
        used = 0
        for item, cost in costed:
            if used + cost <= budget:
                chosen.append(item)
                used += cost
        return _served_code(chosen, used)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        self._index, self._root = None, None


def _render_code(item: ServedItem) -> str:
    return f"{item.path}:{item.start_line}-{item.end_line}\n{item.text}"


def _served_code(items: list[ServedItem], tokens: int) -> Served:
    return Served(
        files=[i.path for i in items],
        tokens=tokens,
        text="\n\n".join(_render_code(i) for i in items),
        items=items,
    )


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
        ranking = retrieve.Ranking(files=[(p, 0.0) for p in self.ranked(env, query)])
        return [from_paths(retrieve.pack_paths(ranking, query, b)) for b in budgets]

    def ranked(self, env: StateEnv, query: str) -> list[str]:
        """The indexed modules by whole-file BM25, best first (at most 200)."""
        conn = self._sync(env.repo)
        terms = retrieve.query_terms(query)
        return (
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


class WholeFiles(BM25Paths):
    """Whole files in the ``paths`` ranking, each served as its path on a line and then
    its content (redacted; deny-listed files are passed over), while they fit. The first
    file that does not fit whole is served truncated to its first lines that fit (if any
    does), and serving stops there."""

    name = "whole-files"
    family = "none"
    description = "the paths ranking, serving whole files (the last one truncated)"

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        deny = DenyList(env.repo.config.scan.deny)
        files: list[tuple[str, list[str]]] = []
        for path in self.ranked(env, query):
            if deny.denied(path):
                continue
            try:
                text = (env.root / path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            files.append((path, source_lines(redact_text(text))))
        return [self._fill(files, b) for b in budgets]

    @staticmethod
    def _fill(files: list[tuple[str, list[str]]], budget: int) -> Served:
        chosen: list[ServedItem] = []
        used = 0
        for path, lines in files:
            if not lines:
                continue
            item = ServedItem(path, 1, len(lines), "code", "\n".join(lines))
            cost = count_tokens(_render_code(item))
            if used + cost <= budget:
                chosen.append(item)
                used += cost
                continue
            lo, hi = 0, len(lines)  # the most lines that fit: binary search
            while lo < hi:
                mid = (lo + hi + 1) // 2
                part = ServedItem(path, 1, mid, "code", "\n".join(lines[:mid]))
                if used + count_tokens(_render_code(part)) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            if lo:
                part = ServedItem(path, 1, lo, "code", "\n".join(lines[:lo]))
                chosen.append(part)
                used += count_tokens(_render_code(part))
            break
        return _served_code(chosen, used)


class StaticNotes(_Simple):
    """The product's context (``retrieve.rank`` + ``retrieve.pack``) on static notes and
    history notes; with ``off``, an ablation row: the same ranking with those signals off."""

    family = "static"

    def __init__(self, off: frozenset[str] = frozenset()) -> None:
        self.off = off
        self.name = "static" + "".join(f"-no-{s}" for s in sorted(off))
        what = f", without the {', '.join(sorted(off))} signal" if off else ""
        self.description = (
            f"sleepy-repo context on static and history notes{what}: a map, then the code "
            "of the top units"
        )

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        deny = DenyList(env.repo.config.scan.deny)
        with env.repo.store.read() as conn:
            ranking = retrieve.rank(conn, query, off=self.off, embedder=api.embedder(env.repo))
            return [
                from_context(retrieve.pack(ranking, conn, query, b, deny=deny)) for b in budgets
            ]


class StaticTuned(StaticNotes):
    """The product's context with the weights ``sleepy-repo tune`` fits, fitted once on
    the history *before* the oldest case's state (its mined cases are all ancestors of it,
    so older than every case scored) and used unchanged on every case after it."""

    def __init__(self, n_cases: int | None = None) -> None:
        super().__init__()
        self.name = "static-tuned"
        self.n_cases = n_cases
        self.weights: retrieve.Weights | None = None
        self.description = (
            "sleepy-repo context with the weights `sleepy-repo tune` fitted on the commits "
            "before the oldest case"
        )
        self.fit_record: dict[str, object] | None = None

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        if self.weights is None:
            from sleepy_repo import tune

            try:
                result = tune.fit(env.root, rev=env.state, n_cases=self.n_cases or tune.CASES)
            except SleepyError as exc:
                raise StrategyError(f"tuning failed: {exc}") from exc
            self.weights = result.weights if result.adopted else retrieve.DEFAULT_WEIGHTS
            self.fit_record = result.record()
            self.description += (
                f": {result.reason} (fit {self.fit_record['fit_range'] or 'none'}, "
                f"{result.seconds:.0f} s of idle time)"
            )
        deny = DenyList(env.repo.config.scan.deny)
        with env.repo.store.read() as conn:
            ranking = retrieve.rank(
                conn, query, weights=self.weights, embedder=api.embedder(env.repo)
            )
            return [
                from_context(retrieve.pack(ranking, conn, query, b, deny=deny)) for b in budgets
            ]


class StaticPaths(_Simple):
    name = "static-paths"
    family = "static"
    description = "the static ranking, serving the ranked path list"

    def run(self, env: StateEnv, query: str, budgets: Sequence[int]) -> list[Served]:
        with env.repo.store.read() as conn:
            ranking = retrieve.rank(conn, query, embedder=api.embedder(env.repo))
        return [from_paths(retrieve.pack_paths(ranking, query, b)) for b in budgets]


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
            ranking = retrieve.rank(conn, query, embedder=api.embedder(repo))
            return [from_context(retrieve.pack(ranking, conn, query, b)) for b in budgets]


#: name -> strategy.
REGISTRY: dict[str, Strategy] = {
    "raw": RawChunks(),
    "paths": BM25Paths(),
    "whole-files": WholeFiles(),
    "aider-map": AiderMap(),
    "static": StaticNotes(),
    "static-no-history": StaticNotes(frozenset({"history"})),
    "static-no-notes": StaticNotes(frozenset({"notes"})),
    "static-no-graph": StaticNotes(frozenset({"graph"})),
    "static-no-pieces": StaticNotes(frozenset({"pieces"})),
    "static-no-embed": StaticNotes(frozenset({"embed"})),
    "static-no-usage-prior": StaticNotes(frozenset({"usage-prior"})),
    "static-tuned": StaticTuned(),
    "static-paths": StaticPaths(),
    "model": ModelNotes(),
}
DEFAULT_STRATEGIES: tuple[str, ...] = (
    "raw",
    "paths",
    "whole-files",
    "static",
    "static-paths",
    "aider-map",
)


def select(
    names: Sequence[str],
    overrides: Mapping[str, Strategy] | None = None,
) -> dict[str, Strategy]:
    """The named strategies of ``REGISTRY`` in the given order (``overrides`` first); a
    registry entry that learns during a run (``static-tuned``) comes as a fresh copy."""
    reg = {**REGISTRY, **(overrides or {})}
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise SleepyError(f"unknown strategies {unknown}; known: {', '.join(reg)}")
    return {n: copy.copy(reg[n]) if isinstance(reg[n], StaticTuned) else reg[n] for n in names}
