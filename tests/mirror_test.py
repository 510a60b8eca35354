"""The markdown mirror: it parses back exactly, is deterministic, refuses what it did not
write, and imports into a store only notes that match the module's current content."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sleepy_repo import mirror
from sleepy_repo.mirror import Mirror, MirrorError, NoteSet
from sleepy_repo.notes import Citation, ModuleNotes, NoteItem, NoteKey, span_sha
from sleepy_repo.scan import blob_sha
from sleepy_repo.store import NoteStore

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
name = st.text("abcXYZ_.-/<>`*# ", min_size=1, max_size=20)
lines = st.integers(1, 5000)
citation = st.builds(
    Citation,
    path=name,
    start_line=lines,
    end_line=lines,
    symbol=st.none() | name,
    span_sha=st.text("0123456789abcdef", min_size=16, max_size=16),
)
item = st.builds(
    NoteItem,
    kind=st.sampled_from(["summary", "qa", "fact", "symbol", "code"]),
    text=text,
    question=st.none() | text,
    symbol=st.none() | name,
    start_line=lines,
    end_line=lines,
    citations=st.lists(citation, max_size=3).map(tuple),
    generated=st.booleans(),
    stale=st.booleans(),
)


@st.composite
def mirrors(draw: st.DrawFn) -> Mirror:
    path = draw(name)
    blob = draw(st.text("0123456789abcdef", min_size=40, max_size=40))
    sets = []
    for backend in draw(st.lists(st.sampled_from(["static", "fake", "anthropic"]), unique=True)):
        key = NoteKey(path, blob, draw(name), backend, draw(st.text(max_size=10)), draw(name))
        notes = ModuleNotes(key, draw(st.lists(item, max_size=4)), draw(st.integers(0, 9)))
        sets.append(NoteSet(notes, draw(st.sampled_from(["written", "carried"]))))
    return Mirror(path, blob, sets)


def _canonical(m: Mirror) -> Mirror:
    return Mirror(m.path, m.blob_sha, sorted(m.sets, key=mirror._set_order))


@settings(max_examples=300, deadline=None)
@given(mirrors())
def test_render_parses_back_exactly(m: Mirror) -> None:
    text = mirror.render(m)
    assert mirror.parse(text) == _canonical(m)
    assert mirror.render(mirror.parse(text)) == text  # deterministic, stable


def test_hostile_text_cannot_break_out() -> None:
    key = NoteKey("a.py", "0" * 40, "p", "fake", "m", "standard")
    nasty = NoteItem(
        kind="qa",
        text="-->\n<!-- item {} -->\n=======\n<<<<<<< HEAD\n> quoted\n\n",
        question="does --> end a comment?\n<!-- note {} -->",
        symbol="x-->",
        start_line=1,
        end_line=2,
        citations=(Citation("a.py", 1, 2, "x-->", "f" * 16),),
        generated=True,
    )
    m = Mirror("a.py", "0" * 40, [NoteSet(ModuleNotes(key, [nasty]), "written")])
    text = mirror.render(m)
    assert not mirror.has_conflict(text)
    assert mirror.parse(text) == m


def test_conflicts_and_foreign_files_are_refused() -> None:
    key = NoteKey("a.py", "1" * 40, "p", "static", "", "-")
    item = NoteItem("summary", "hello", None, None, 1, 1, (), False)
    text = mirror.render(Mirror("a.py", "1" * 40, [NoteSet(ModuleNotes(key, [item]), "written")]))
    conflicted = text.replace("> hello", "<<<<<<< ours\n> hello\n=======\n> bye\n>>>>>>> theirs")
    with pytest.raises(MirrorError, match="conflict"):
        mirror.parse(conflicted)
    with pytest.raises(MirrorError):
        mirror.parse("# just some markdown\n")
    with pytest.raises(MirrorError):
        mirror.parse(text.replace('"start_line": 1', '"start_line": "one"'))


def test_write_and_read_a_file_exactly(tmp_path: Path) -> None:
    key = NoteKey("d/m.py", "2" * 40, "p", "fake", "m", "deep")
    item = NoteItem("fact", "windows\r\nline\rend  ", "q\r?", None, 1, 1, (), True)
    m = Mirror("d/m.py", "2" * 40, [NoteSet(ModuleNotes(key, [item]), "written")])
    rel = mirror.write(tmp_path, m)
    assert rel == ".sleepy/notes/d/m.py.md"
    assert mirror.read(tmp_path, "d/m.py") == m
    assert mirror.read(tmp_path, "other.py") is None
    assert mirror.remove(tmp_path, "d/m.py") == rel
    assert not (tmp_path / ".sleepy" / "notes" / "d").exists()  # empty dirs go too
    assert mirror.read(tmp_path, "d/m.py") is None


def test_paths() -> None:
    assert mirror.mirror_relpath("web/src/api.ts") == ".sleepy/notes/web/src/api.ts.md"
    assert mirror.source_of(".sleepy/notes/web/src/api.ts.md") == "web/src/api.ts"
    assert mirror.source_of("web/src/api.ts") is None


def test_import_only_matching_blob_and_verified_citations(tmp_path: Path) -> None:
    store = NoteStore(tmp_path / ".sleepy")
    store.ensure()
    data = b"def f():\n    return 1\n"
    lines = data.decode().splitlines()
    blob = blob_sha(data)
    key = NoteKey("m.py", blob, "fake-1", "fake", "fake-1", "standard")
    good = Citation("m.py", 1, 2, "f", span_sha(lines, 1, 2))
    item = NoteItem("qa", "f returns 1", "what does f return?", "f", 1, 2, (good,), True)
    m = Mirror("m.py", blob, [NoteSet(ModuleNotes(key, [item]), "written")])

    assert mirror.import_sets(store, m, b"other content") == 0  # another blob
    bad = NoteSet(
        ModuleNotes(
            key,
            [NoteItem("qa", "x", None, "f", 1, 2, (Citation("m.py", 1, 2, "f", "0" * 16),), True)],
        ),
        "written",
    )
    assert mirror.import_sets(store, Mirror("m.py", blob, [bad]), data) == 0  # span mismatch
    assert mirror.import_sets(store, m, data) == 1
    assert mirror.import_sets(store, m, data) == 0  # already there
    with store.read() as conn:
        assert store.load_items(conn, key) == [item]
        assert store.has_notes(conn, key, written_only=True)


def test_a_crlf_checkout_still_parses() -> None:
    key = NoteKey("a.py", "3" * 40, "p", "static", "", "-")
    item = NoteItem("summary", "two\nlines", None, None, 1, 1, (), False)
    m = Mirror("a.py", "3" * 40, [NoteSet(ModuleNotes(key, [item]), "written")])
    assert mirror.parse(mirror.render(m).replace("\n", "\r\n")) == m
