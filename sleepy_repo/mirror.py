"""The markdown mirror: a module's notes as a file in ``.sleepy/notes/<path>.md``, so notes
travel in git with the code they describe.

One file per module, for the blob that was committed. It is deterministic (no timestamps,
a fixed order) and diff-friendly (one line per field that changes together), readable as
markdown, and parses back exactly::

    <!-- sleepy-repo notes mirror, format 1: written by `sleepy-repo hook pre-commit` ... -->
    <!-- mirror {"path": "shop/cart.py", "blob_sha": "3b18e512..."} -->
    # Notes on `shop/cart.py`

    Blob `3b18e512dba7`, 2 note sets.

    ## fake · fake-1 · prompt fake-1 · effort standard
    <!-- note {"backend": "fake", "model": "fake-1", "prompt_version": "fake-1", ...} -->

    ### qa · `Cart.add` · lines 12-30 · Q: How do I use add?
    <!-- item {"kind": "qa", "question": "How do I use add?", "symbol": "Cart.add", ...} -->
    > Call add(self, sku, qty) (method in shop/cart.py).

Machine-read lines are the ``<!-- mirror|note|item {json} -->`` comments (one JSON object
each, ``>`` escaped as ``\\u003e`` so no value can close the comment) and the ``> ``
blockquote after an item comment, which is the item's text, line by line. Headings and
the line under the title are for people and ignored by the parser. A file with git
conflict markers (or anything else unparseable) is treated as absent and regenerated.

Import (``import_mirrors``): when the store lacks a note set that a module's mirror holds
for the module's *current* blob, the set is copied into the store as is, with no model
call. Citations into the module are checked against its current lines first. A committed
mirror says whatever the repository's authors (or attackers) wrote in it, so an imported
set is stored with origin ``imported`` (``imported-carried``) whatever its file claims
(``generated: false``, backend ``static``), and served marked as repository text.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sleepy_repo import procs
from sleepy_repo.config import CONFIG_DIR
from sleepy_repo.notes import (
    CARRIED,
    CARRIED_ORIGINS,
    Citation,
    ModuleNotes,
    NoteItem,
    NoteKey,
    imported_origin,
    mirrored_origin,
    source_lines,
    span_sha,
)
from sleepy_repo.safepath import check_inside, outside
from sleepy_repo.scan import blob_sha
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

FORMAT = 1
NOTES_DIR = "notes"  # under .sleepy/
SUFFIX = ".md"
SEEN_META = "mirror_seen"  # meta key: what import_mirrors already looked at
_BANNER = (
    f"<!-- sleepy-repo notes mirror, format {FORMAT}: written by `sleepy-repo hook pre-commit` "
    "from the notes store; edits are overwritten on the next commit of the module. -->"
)
_COMMENT = re.compile(r"^<!-- (mirror|note|item) (\{.*\}) -->$")
_CONFLICT = re.compile(r"^(<{7} |={7}$|>{7} |\|{7} )")


class MirrorError(ValueError):
    """A mirror file that cannot be parsed (conflict markers, hand edits, a newer format)."""


@dataclass
class NoteSet:
    notes: ModuleNotes
    origin: str  # notes.origin; in a parsed file, what the file claims (written | carried)


@dataclass
class Mirror:
    path: str
    blob_sha: str
    sets: list[NoteSet] = field(default_factory=list)


# -- locations -----------------------------------------------------------------------------
def notes_dir(root: Path) -> Path:
    return root / CONFIG_DIR / NOTES_DIR


def mirror_relpath(path: str) -> str:
    """The mirror of a module, relative to the repo root: ``.sleepy/notes/<path>.md``."""
    return f"{CONFIG_DIR}/{NOTES_DIR}/{path}{SUFFIX}"


def source_of(mirror_rel: str) -> str | None:
    """The module path a repo-relative mirror path belongs to (None if it is not one)."""
    prefix = f"{CONFIG_DIR}/{NOTES_DIR}/"
    if not mirror_rel.startswith(prefix) or not mirror_rel.endswith(SUFFIX):
        return None
    return mirror_rel[len(prefix) : -len(SUFFIX)] or None


# -- render --------------------------------------------------------------------------------
def _json(data: dict[str, Any]) -> str:
    # ">" only occurs inside JSON strings, where \u003e is an equivalent escape; without it
    # a value containing "-->" would end the HTML comment early.
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": ")).replace(">", "\\u003e")


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _set_order(s: NoteSet) -> tuple[bool, str, str, str, str]:
    k = s.notes.key
    return (k.backend == "static", k.backend, k.model, k.prompt_version, k.effort)


def render(mirror: Mirror) -> str:
    """The mirror file's text (deterministic: the same notes give the same bytes)."""
    sets = sorted(mirror.sets, key=_set_order)
    out = [
        _BANNER,
        f"<!-- mirror {_json({'path': mirror.path, 'blob_sha': mirror.blob_sha})} -->",
        f"# Notes on `{mirror.path}`",
        "",
        f"Blob `{mirror.blob_sha[:12]}`, {len(sets)} note set{'s' if len(sets) != 1 else ''}.",
    ]
    for s in sets:
        k = s.notes.key
        title = " · ".join(
            p
            for p in (
                k.backend,
                k.model,
                f"prompt {k.prompt_version}",
                f"effort {k.effort}" if k.effort != "-" else "",
                "carried over, partly stale" if mirrored_origin(s.origin) == CARRIED else "",
            )
            if p
        )
        meta = {
            "backend": k.backend,
            "model": k.model,
            "prompt_version": k.prompt_version,
            "effort": k.effort,
            "origin": mirrored_origin(s.origin),
            "dropped_citations": s.notes.dropped_citations,
        }
        out += ["", f"## {title}", f"<!-- note {_json(meta)} -->"]
        for item in s.notes.items:
            out += ["", *_render_item(item)]
    return "\n".join(out) + "\n"


def _render_item(item: NoteItem) -> list[str]:
    head = [item.kind]
    if item.symbol:
        head.append(f"`{item.symbol}`")
    head.append(f"lines {item.start_line}-{item.end_line}")
    if item.stale:
        head.append("STALE")
    if item.question is not None:
        head.append("Q: " + _one_line(item.question))
    meta = {
        "kind": item.kind,
        "question": item.question,
        "symbol": item.symbol,
        "start_line": item.start_line,
        "end_line": item.end_line,
        "generated": item.generated,
        "stale": item.stale,
        "citations": [
            [c.path, c.start_line, c.end_line, c.symbol, c.span_sha] for c in item.citations
        ],
    }
    body = [f"> {line}" if line else ">" for line in item.text.split("\n")]
    return [f"### {' · '.join(head)}", f"<!-- item {_json(meta)} -->", *body]


# -- parse ---------------------------------------------------------------------------------
def has_conflict(text: str) -> bool:
    return any(_CONFLICT.match(line) for line in text.split("\n"))


def parse(text: str) -> Mirror:
    """A mirror file back into notes; raises MirrorError on anything it did not write."""
    if has_conflict(text):
        raise MirrorError("it has git conflict markers")
    if text.count("\r\n") == text.count("\n"):  # checked out with CRLF (core.autocrlf)
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    mirror: Mirror | None = None
    current: NoteSet | None = None
    item: dict[str, Any] | None = None
    body: list[str] = []

    def flush() -> None:
        nonlocal item
        if item is None:
            return
        assert current is not None
        current.notes.items.append(_item(item, "\n".join(body)))
        item = None
        body.clear()

    for n, line in enumerate(lines, 1):
        if item is not None and (line == ">" or line.startswith("> ")):
            body.append(line[2:])
            continue
        flush()
        m = _COMMENT.match(line)
        if m is None:
            continue
        try:
            data = json.loads(m.group(2))
        except json.JSONDecodeError as exc:
            raise MirrorError(f"line {n}: bad JSON: {exc}") from None
        kind = m.group(1)
        if kind == "mirror":
            if mirror is not None:
                raise MirrorError(f"line {n}: a second mirror header")
            mirror = Mirror(path=str(data["path"]), blob_sha=str(data["blob_sha"]))
        elif mirror is None:
            raise MirrorError(f"line {n}: {kind} before the mirror header")
        elif kind == "note":
            current = NoteSet(
                notes=ModuleNotes(
                    key=NoteKey(
                        mirror.path,
                        mirror.blob_sha,
                        str(data["prompt_version"]),
                        str(data["backend"]),
                        str(data["model"]),
                        str(data["effort"]),
                    ),
                    dropped_citations=int(data.get("dropped_citations", 0)),
                ),
                origin=str(data.get("origin", "written")),
            )
            mirror.sets.append(current)
        else:
            if current is None:
                raise MirrorError(f"line {n}: an item outside a note set")
            item = data
    flush()
    if mirror is None:
        raise MirrorError("no mirror header")
    return mirror


def _item(data: dict[str, Any], text: str) -> NoteItem:
    try:
        return NoteItem(
            kind=str(data["kind"]),
            text=text,
            question=data["question"],
            symbol=data["symbol"],
            start_line=int(data["start_line"]),
            end_line=int(data["end_line"]),
            citations=tuple(
                Citation(p, int(s), int(e), sym, sha) for p, s, e, sym, sha in data["citations"]
            ),
            generated=bool(data["generated"]),
            stale=bool(data["stale"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MirrorError(f"an item is malformed: {exc!r}") from None


def read(root: Path, path: str) -> Mirror | None:
    """The mirror of module ``path``, or None when there is none or it cannot be parsed."""
    file = root / mirror_relpath(path)
    try:
        text = file.read_bytes().decode("utf-8")  # not read_text: "\r" in a note must stay
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", file, exc)
        return None
    try:
        mirror = parse(text)
    except (MirrorError, KeyError, TypeError) as exc:
        log.warning("ignoring %s: %s", file, exc)
        return None
    if mirror.path != path:
        log.warning("ignoring %s: it records the notes of %s", file, mirror.path)
        return None
    return mirror


def read_blob_sha(root: Path, path: str) -> tuple[str | None, str | None]:
    """(blob sha the mirror of ``path`` records, problem) — for ``--check``."""
    file = root / mirror_relpath(path)
    if not file.exists():
        return None, "no mirror"
    mirror = read(root, path)
    if mirror is None:
        return None, "the mirror cannot be parsed (a merge conflict or a hand edit)"
    return mirror.blob_sha, None


# -- from and to the store -----------------------------------------------------------------
def from_store(store: NoteStore, path: str, blob: str) -> Mirror:
    """Every note set the store holds for ``(path, blob)``."""
    mirror = Mirror(path=path, blob_sha=blob)
    with store.read() as conn:
        for row in conn.execute(
            "SELECT prompt_version, backend, model, effort, origin, dropped_citations FROM notes "
            "WHERE path = ? AND blob_sha = ?",
            (path, blob),
        ).fetchall():
            key = NoteKey(path, blob, row[0], row[1], row[2], row[3])
            notes = ModuleNotes(
                key=key, items=store.load_items(conn, key), dropped_citations=row[5]
            )
            mirror.sets.append(NoteSet(notes=notes, origin=row[4]))
    return mirror


TEMP_PREFIX = ".mirror-"
# a writer's temporary file: ``.mirror-<pid>-<random>.tmp`` (older ones lack the pid)
_TEMP_RE = re.compile(r"\.mirror-(?:(?P<pid>[0-9]+)-)?[A-Za-z0-9_]+\.tmp")
STALE_TEMP_SECONDS = 600.0  # writing one mirror file takes milliseconds


def remove_stale_temp_files(directory: Path) -> list[str]:
    """Delete the temporary mirror files in ``directory`` that a killed writer left (its
    pid is dead, or, without a pid, the file is older than any write takes), so a kill
    during the hook leaves no untracked files in ``.sleepy/notes``. Names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TEMP_RE.fullmatch(entry.name)
        if not m:
            continue
        try:
            pid = m.group("pid")
            age = now - entry.stat(follow_symlinks=False).st_mtime
            stale = age > STALE_TEMP_SECONDS or (pid is not None and not procs.alive(int(pid)))
            if stale:
                os.unlink(entry.path)  # a symlink is removed itself, never its target
                removed.append(entry.name)
        except OSError as exc:
            log.debug("cannot remove the stale %s: %s", entry.path, exc)
    return removed


def write(root: Path, mirror: Mirror) -> str:
    """Write the mirror file atomically; returns its repo-relative path. A killed
    writer's temporary files beside it are removed first."""
    rel = mirror_relpath(mirror.path)
    file = root / rel
    check_inside(root, file.parent, "the mirror directory")
    file.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(file.parent)
    data = render(mirror).encode("utf-8")
    try:
        if file.read_bytes() == data:
            return rel
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=file.parent
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, file)
        tmp = ""
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
    return rel


def remove(root: Path, path: str) -> str | None:
    """Delete the mirror of ``path`` (and directories it leaves empty); its relpath or None."""
    rel = mirror_relpath(path)
    file = root / rel
    check_inside(root, file.parent, "the mirror directory")
    try:
        file.unlink()
    except FileNotFoundError:
        return None
    top = notes_dir(root)
    parent = file.parent
    while parent != top and top in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return rel


def rekey(s: NoteSet, new_path: str) -> NoteSet:
    """The same notes under another path (a renamed module with unchanged content)."""
    old = s.notes.key.path
    items = [
        replace(
            item,
            citations=tuple(
                replace(c, path=new_path) if c.path == old else c for c in item.citations
            ),
        )
        for item in s.notes.items
    ]
    key = replace(s.notes.key, path=new_path)
    return NoteSet(ModuleNotes(key, items, s.notes.dropped_citations), s.origin)


def _verified(s: NoteSet, lines: list[str]) -> bool:
    """Whether every citation into the module matches the module's current lines."""
    path = s.notes.key.path
    for item in s.notes.items:
        for c in item.citations:
            if c.path != path:
                continue
            if not 1 <= c.start_line <= c.end_line <= max(len(lines), 1):
                return False
            if not item.stale and span_sha(lines, c.start_line, c.end_line) != c.span_sha:
                return False
    return True


def import_sets(store: NoteStore, mirror: Mirror, data: bytes, *, from_file: bool = True) -> int:
    """Copy the mirror's note sets the store lacks (``data`` is the module's content).
    Sets read from a file are stored as imported; ``from_file=False`` is for sets read
    from this store (a renamed module), which keep their origin."""
    if blob_sha(data) != mirror.blob_sha:
        return 0
    lines = source_lines(data.decode("utf-8", "replace"))
    imported = 0
    with store.write() as conn:
        for s in mirror.sets:
            key = s.notes.key
            if store.has_notes(conn, key, written_only=True):
                continue
            origin = imported_origin(s.origin) if from_file else s.origin
            if origin in CARRIED_ORIGINS and store.has_notes(conn, key):
                continue
            if not _verified(s, lines):
                log.warning(
                    "not importing %s notes of %s from its mirror: their citations do not match "
                    "the file",
                    key.backend,
                    key.path,
                )
                continue
            store.put_notes(conn, s.notes, origin=origin)
            imported += 1
    return imported


def import_mirrors(
    root: Path,
    store: NoteStore,
    paths: Iterable[str] | None = None,
    denied: Callable[[str], bool] = lambda _: False,
) -> int:
    """Import note sets from mirrors that match indexed modules' current blobs, except of
    ``denied`` modules (a mirror written before the deny list may hold their docstrings).

    A mirror already looked at is skipped while its size, mtime and its module's blob are
    unchanged, so a refresh with nothing new costs one stat per mirror.
    """
    top = notes_dir(root)
    if not top.is_dir():
        return 0
    escape = outside(root, top)
    if escape is not None:
        log.warning("not importing notes: %s leads out of the repository, to %s", top, escape)
        return 0
    with store.read() as conn:
        modules = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT path, blob_sha FROM modules "
                "WHERE status = 'indexed' AND blob_sha IS NOT NULL"
            )
        }
        seen: dict[str, str] = store.get_meta(conn, SEEN_META, {}) or {}
    wanted = set(paths) if paths is not None else None
    imported = 0
    changed = False
    for path, blob in modules.items():
        if (wanted is not None and path not in wanted) or denied(path):
            continue
        try:
            st = (root / mirror_relpath(path)).stat()
        except OSError:
            continue
        signature = f"{st.st_mtime_ns}:{st.st_size}:{blob}"
        if seen.get(path) == signature:
            continue
        seen[path] = signature
        changed = True
        mirror = read(root, path)
        if mirror is None or mirror.blob_sha != blob:
            continue
        try:
            data = (root / path).read_bytes()
        except OSError:
            continue
        imported += import_sets(store, mirror, data)
    if changed:
        with store.write() as conn:
            store.set_meta(conn, SEEN_META, {p: s for p, s in seen.items() if p in modules})
    return imported
