"""The repo overview note (``deep`` effort): one model call after the modules' notes.

The model reads the repository overview (``sleep.repo_overview``: languages, the most
imported modules, the README's head) and, per module (most imported first, up to
``MAX_INPUT_TOKENS``), its summary from the current notes and its public top-level symbols.
It writes a summary of the repository, questions a newcomer asks with answers, and facts
about the architecture. Every claim cites a module (``path``) or a symbol
(``path::Symbol``); citations are grounded like a module note's (``notes.Grounder`` on each
cited module's parse): unknown ones are dropped and counted, and a claim left without one is
dropped. A reply with no grounded claim is rejected.

Items are filed under the module each cites first (that module's current blob, effort
``overview``), so retrieval, carry-over to new versions (stale when a cited span changed),
payoff and gc treat them as they treat every note; ``overview_notes`` lists them as one note.
A new overview replaces the previous one of the same backend and model. It is written only
when its input changed (the input's hash is kept in the store's meta) or one of its items
went stale, and costs one call under ``[budget]``, recorded in the ledger with reason
``overview``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sleepy_repo.budget import Budget
from sleepy_repo.config import Config
from sleepy_repo.errors import ModelOutputError
from sleepy_repo.index import Changed
from sleepy_repo.models.structured import StructuredModel, StructuredRequest, run_call
from sleepy_repo.notes import MODULE, Citation, Grounder, ModuleNotes, NoteItem, NoteKey, Usage
from sleepy_repo.parse.facts import ModuleFacts
from sleepy_repo.prompt_files import load_prompt
from sleepy_repo.redact import DenyList, fence, redact_text
from sleepy_repo.sleep import indexed_lines, repo_overview
from sleepy_repo.store import NoteStore, citations_from_json, citations_to_json
from sleepy_repo.tokens import count_tokens

log = logging.getLogger(__name__)

EFFORT = "overview"  # the note key's effort of overview items
TOOL = "record_overview"
LEDGER_PATH = "(overview)"
SEP = "::"  # "path::Symbol"
# the whole prompt (instructions, repo overview, module list, the schema's names): the local
# model's default context is 8,192 tokens, of which MAX_TOKENS are the reply's
MAX_INPUT_TOKENS = 5000
MAX_SYMBOLS = 8  # public symbols listed (and citable) per module
MAX_SUMMARY_CHARS = 300
MAX_TOKENS = 2048  # the reply: up to 15 claims
MAX_TEXT = 1200
META_PREFIX = "overview:"
SCHEMA_VERSION = 1


@dataclass
class OverviewInput:
    request: StructuredRequest
    fingerprint: str  # hash of what the model is sent
    blobs: dict[str, str]  # path -> blob of every module listed


@dataclass
class OverviewReport:
    written: int = 0  # items stored
    modules: int = 0  # modules they are filed under
    dropped_citations: int = 0
    skipped: str | None = None  # why no call was made (unchanged, budget, nothing to list)
    refused: str | None = None  # the budget refused the call (also in ``skipped``)
    usage: list[Usage] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "modules": self.modules,
            "dropped_citations": self.dropped_citations,
            "skipped": self.skipped,
            "input_tokens": sum(u.input_tokens for u in self.usage),
            "output_tokens": sum(u.output_tokens for u in self.usage),
        }


def _summaries(conn: sqlite3.Connection, backend: str) -> dict[str, str]:
    """Each module's summary from its current notes: this backend's, else static."""
    out: dict[str, tuple[int, str]] = {}
    rows = conn.execute(
        "SELECT n.path, n.backend, i.text FROM note_items i JOIN notes n ON n.id = i.note_id "
        "JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
        "WHERE i.kind = 'summary' AND n.effort != ? ORDER BY n.created_at DESC, i.ordinal",
        (EFFORT,),
    )
    for path, b, text in rows:
        rank = 0 if b == backend else 1 if b == "static" else 2
        if path not in out or rank < out[path][0]:
            out[path] = (rank, text)
    return {p: t for p, (_, t) in out.items()}


def overview_schema(choices: Iterable[str]) -> dict[str, Any]:
    """The reply's schema; the citable names are one enum (``$defs``), referenced by every
    ``cites`` list, so they are sent once."""
    cites = {"type": "array", "items": {"$ref": "#/$defs/cite"}, "minItems": 1, "maxItems": 6}
    # no maxLength: as a llama.cpp grammar, a {0,400} repetition made sampling so slow that
    # a 0.5B overview call did not finish in 20 minutes
    text = {"type": "string"}
    claim = {
        "type": "object",
        "properties": {"text": text, "cites": cites},
        "required": ["text", "cites"],
    }
    question = {
        "type": "object",
        "properties": {"question": text, "answer": text, "cites": cites},
        "required": ["question", "answer", "cites"],
    }
    return {
        "type": "object",
        "$defs": {"cite": {"type": "string", "enum": sorted(set(choices))}},
        "properties": {
            "summary": claim,
            "questions": {"type": "array", "items": question, "minItems": 1, "maxItems": 8},
            "facts": {"type": "array", "items": claim, "maxItems": 6},
        },
        "required": ["summary", "questions", "facts"],
    }


def build_input(
    root: Path, conn: sqlite3.Connection, backend: str, deny: DenyList
) -> OverviewInput | None:
    """What the overview call sends; None when no module can be listed."""
    summaries = _summaries(conn, backend)
    rows = conn.execute(
        "SELECT m.path, m.blob_sha, m.facts_json, "
        "(SELECT count(*) FROM edges e WHERE e.dst = m.path) AS n "
        "FROM modules m WHERE m.status = 'indexed' ORDER BY n DESC, m.path"
    ).fetchall()
    tool = TOOL
    system = load_prompt("overview-system").render(tool=tool)
    overview = fence(redact_text(repo_overview(root, conn, deny)), "untrusted_repository")
    template = load_prompt("overview")
    empty = template.render(overview=overview, modules="", tool=tool)
    used = count_tokens(system) + count_tokens(empty)
    lines: list[str] = []
    choices: list[str] = []
    blobs: dict[str, str] = {}
    for path, blob, facts_json, _ in rows:
        if deny.denied(path) or not facts_json or redact_text(path) != path:
            continue
        facts = ModuleFacts.from_dict(json.loads(facts_json))
        public = [
            s.qualname
            for s in facts.symbols
            if s.exported and s.parent is None and redact_text(s.qualname) == s.qualname
        ][:MAX_SYMBOLS]
        summary = summaries.get(path) or facts.doc.strip().split("\n")[0]
        summary = " ".join(summary.split())[:MAX_SUMMARY_CHARS]
        line = f"- {path}: {summary or '(no summary)'}"
        if public:
            line += "; " + ", ".join(public)
        names = [path, *(f"{path}{SEP}{q}" for q in public)]
        cost = count_tokens(line) + sum(count_tokens(n) + 2 for n in names)  # + the enum
        if used + cost > MAX_INPUT_TOKENS:
            break
        used += cost
        lines.append(line)
        choices += names
        blobs[path] = blob
    if not lines:
        return None
    user = template.render(
        overview=overview,
        modules=fence(redact_text("\n".join(lines)), "untrusted_repository"),
        tool=tool,
    )
    request = StructuredRequest(
        task="overview",
        system=system,
        user=user,
        tool=tool,
        description="Record the repository's overview note: every claim cites modules.",
        schema=overview_schema(choices),
        question="",
        choices=tuple(choices),
        max_tokens=MAX_TOKENS,
    )
    digest = hashlib.sha1((system + "\0" + user).encode("utf-8", "surrogatepass")).hexdigest()
    return OverviewInput(request=request, fingerprint=digest, blobs=blobs)


def prompt_version() -> str:
    tags = [load_prompt("overview-system").tag, load_prompt("overview").tag]
    return "+".join([*tags, f"schema@{SCHEMA_VERSION}"])


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModelOutputError(f"the overview reply has no text in {where}")
    return value.strip()[:MAX_TEXT]


def _claims(data: dict[str, Any], repo: str) -> list[tuple[str, str | None, str, list[str]]]:
    """(kind, question, text, cites) of the reply's claims, in order."""
    out: list[tuple[str, str | None, str, list[str]]] = []

    def cites(obj: dict[str, Any], where: str) -> list[str]:
        raw = obj.get("cites")
        if not isinstance(raw, list):
            raise ModelOutputError(f"the overview reply's {where} has no `cites` list")
        return [c for c in raw if isinstance(c, str)]

    summary = data.get("summary")
    if not isinstance(summary, dict):
        raise ModelOutputError("the overview reply has no `summary` object")
    question = f"What is {repo} and how is it organised?"
    out.append(("qa", question, _text(summary.get("text"), "summary"), cites(summary, "summary")))
    for key, kind in (("questions", "qa"), ("facts", "fact")):
        items = data.get(key, [])
        if not isinstance(items, list):
            raise ModelOutputError(f"the overview reply's `{key}` is not a list")
        for i, obj in enumerate(items):
            if not isinstance(obj, dict):
                continue
            where = f"{key}[{i}]"
            if kind == "qa":
                q = _text(obj.get("question"), where)
                out.append((kind, q, _text(obj.get("answer"), where), cites(obj, where)))
            else:
                out.append((kind, None, _text(obj.get("text"), where), cites(obj, where)))
    return out


class _Citer:
    """Grounds ``path`` / ``path::Symbol`` names in the modules' indexed versions."""

    def __init__(self, root: Path, conn: sqlite3.Connection, blobs: dict[str, str]) -> None:
        self.root, self.conn, self.blobs = root, conn, blobs
        self._grounders: dict[str, Grounder | None] = {}

    def grounder(self, path: str) -> Grounder | None:
        if path not in self._grounders:
            g = None
            blob = self.blobs.get(path)
            data = NoteStore.facts_json(self.conn, path) if blob else None
            lines = indexed_lines(self.root, path, blob) if blob and data else None
            if data is not None and lines is not None:
                g = Grounder(ModuleFacts.from_dict(data), lines)
            self._grounders[path] = g
        return self._grounders[path]

    def cite(self, name: str) -> Citation | None:
        path, _, symbol = name.partition(SEP)
        g = self.grounder(path)
        return None if g is None else g.cite(symbol or MODULE)


def ground_overview(
    root: Path, conn: sqlite3.Connection, data: dict[str, Any], blobs: dict[str, str]
) -> tuple[dict[str, list[NoteItem]], int]:
    """The reply's grounded items by the module each cites first, and the dropped count."""
    citer = _Citer(root, conn, blobs)
    by_path: dict[str, list[NoteItem]] = {}
    dropped = 0
    seen: set[tuple[str | None, str]] = set()
    for kind, question, text, names in _claims(data, root.name):
        if (question, text) in seen:  # small models repeat themselves
            continue
        seen.add((question, text))
        cits: list[Citation] = []
        for name in names:
            c = citer.cite(name)
            if c is None:
                dropped += 1
            elif c not in cits:
                cits.append(c)
        if not cits:
            continue
        primary = cits[0]
        by_path.setdefault(primary.path, []).append(
            NoteItem(
                kind=kind,
                text=redact_text(text),
                question=redact_text(question) if question else None,
                symbol=primary.symbol,
                start_line=primary.start_line,
                end_line=primary.end_line,
                citations=tuple(cits),
                generated=True,
            )
        )
    return by_path, dropped


def write_overview(
    root: Path,
    store: NoteStore,
    model: StructuredModel,
    config: Config,
    *,
    force: bool = False,
    budget: Budget | None = None,
) -> OverviewReport:
    """Write the overview note with ``model`` unless it exists and its input is unchanged
    (``force``: write anyway). The call reserves against ``budget`` (a refresh's, so its
    per-refresh limit counts what the refresh already spent; default: ``[budget]``). A
    budget refusal is reported in ``skipped``; a model error is raised after its billed
    usage is in the ledger."""
    report = OverviewReport()
    deny = DenyList(config.scan.deny)
    meta_key = f"{META_PREFIX}{model.name}:{model.model}"
    with store.read() as conn:
        built = build_input(root, conn, model.name, deny)
        previous = store.get_meta(conn, meta_key)
        notes, stale = conn.execute(
            "SELECT count(DISTINCT n.id), coalesce(sum(i.stale), 0) FROM notes n "
            "JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
            "JOIN note_items i ON i.note_id = n.id "
            "WHERE n.effort = ? AND n.backend = ? AND n.model = ?",
            (EFFORT, model.name, model.model),
        ).fetchone()
    if built is None:
        report.skipped = "no module to list"
        return report
    if not force and notes and not stale and previous == built.fingerprint:
        report.skipped = "unchanged since the last overview"
        return report
    reply = run_call(
        model, built.request, store, config.budget, "overview", LEDGER_PATH, budget=budget
    )
    if isinstance(reply, str):
        report.skipped = report.refused = reply
        return report
    report.usage = list(reply.usage)
    with store.read() as conn:
        by_path, report.dropped_citations = ground_overview(root, conn, reply.data, built.blobs)
    if not by_path:
        raise ModelOutputError(
            f"the overview reply cited nothing that exists ({report.dropped_citations} "
            "citations dropped)",
            usage=tuple(reply.usage),
        )
    version = prompt_version()
    with store.write() as conn:
        # a module re-indexed during the call: its items would sit on an old blob, unseen
        current = dict(conn.execute("SELECT path, blob_sha FROM modules").fetchall())
        moved = [p for p in by_path if current.get(p) != built.blobs[p]]
        for path in moved:
            del by_path[path]
        old = "SELECT id FROM notes WHERE effort = ? AND backend = ? AND model = ?"
        which = (EFFORT, model.name, model.model)
        conn.execute(f"DELETE FROM payoff WHERE note_id IN ({old})", which)  # ids are reused
        conn.execute(f"DELETE FROM notes WHERE id IN ({old})", which)
        for i, (path, items) in enumerate(by_path.items()):
            key = NoteKey(path, built.blobs[path], version, model.name, model.model, EFFORT)
            dropped = report.dropped_citations if i == 0 else 0
            store.put_notes(
                conn, ModuleNotes(key=key, items=items, dropped_citations=dropped), origin="written"
            )
        # with items left out, the next refresh (or sleeper step) writes it again
        store.set_meta(conn, meta_key, None if moved else built.fingerprint)
    report.written = sum(len(items) for items in by_path.values())
    report.modules = len(by_path)
    log.info("overview: %d items under %d modules", report.written, report.modules)
    return report


def overview_rows(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """The notes holding current overview items (on their modules' current blobs), in the
    order they were written (the first holds the repository summary)."""
    return conn.execute(
        "SELECT n.* FROM notes n JOIN modules m ON m.path = n.path AND m.blob_sha = n.blob_sha "
        "WHERE n.effort = ? ORDER BY n.id",
        (EFFORT,),
    ).fetchall()


def recheck(root: Path, store: NoteStore, changed: Iterable[Changed]) -> int:
    """Overview items cite several modules, but carry-over re-anchors only the citations
    into the module an item is filed under. For each module that changed, re-anchor the
    citations into it of the overview items filed elsewhere: they move with their symbol,
    and the item is marked stale when a cited span changed or is gone. The number of items
    updated."""
    moved = {c.path: c.new_blob for c in changed if c.old_blob}
    if not moved:
        return 0
    with store.read() as conn:
        rows = conn.execute(
            "SELECT i.id, i.citations_json, i.stale, n.path FROM note_items i "
            "JOIN notes n ON n.id = i.note_id WHERE n.effort = ?",
            (EFFORT,),
        ).fetchall()
        citer = _Citer(root, conn, moved)
        updates: list[tuple[str, int, int]] = []
        for item_id, cits_json, stale, home in rows:
            cits = citations_from_json(cits_json)
            if not any(c.path in moved and c.path != home for c in cits):
                continue
            out: list[Citation] = []
            now_stale = bool(stale)
            for c in cits:
                if c.path not in moved or c.path == home:
                    out.append(c)
                    continue
                now = citer.cite(f"{c.path}{SEP}{c.symbol}" if c.symbol else c.path)
                if now is None or now.span_sha != c.span_sha:
                    now_stale = True
                    out.append(c if now is None else replace(now, span_sha=c.span_sha))
                else:
                    out.append(now)
            new_json = citations_to_json(tuple(out))
            if new_json != cits_json or now_stale != bool(stale):
                updates.append((new_json, int(now_stale), item_id))
    if updates:
        with store.write() as conn:
            conn.executemany(
                "UPDATE note_items SET citations_json = ?, stale = ? WHERE id = ?", updates
            )
    return len(updates)
