from __future__ import annotations

from sleepy_repo.notes import (
    MODULE,
    DraftItem,
    NoteDraft,
    NoteKey,
    carry_over,
    ground,
    span_sha,
)
from sleepy_repo.parse.facts import ModuleFacts, Symbol

SOURCE = '''"""Cart."""
import os


class Cart:
    def add(self, x):
        return x


def total(c):
    return 1
'''.splitlines()


def facts_for(lines: list[str]) -> ModuleFacts:
    # spans worked out by hand for SOURCE (and its edited variants below)
    start_cart = lines.index("class Cart:") + 1
    start_total = lines.index("def total(c):") + 1
    return ModuleFacts(
        path="m.py",
        lang="python",
        line_count=len(lines),
        doc="Cart.",
        header_end=2,
        symbols=[
            Symbol("Cart", "Cart", "class", start_cart, start_cart + 2, "class Cart:"),
            Symbol(
                "add",
                "Cart.add",
                "method",
                start_cart + 1,
                start_cart + 2,
                "def add(self, x):",
                parent="Cart",
            ),
            Symbol("total", "total", "function", start_total, start_total + 1, "def total(c):"),
        ],
    )


KEY = NoteKey("m.py", "b1", "v1", "fake", "m", "standard")


def test_ground_maps_symbols_to_spans_and_drops_unknown() -> None:
    draft = NoteDraft(
        generated=True,
        items=[
            DraftItem("summary", "A cart.", cites=(MODULE,)),
            DraftItem(
                "qa", "Adds.", question="How to add?", cites=("Cart.add", "nope"), symbol="Cart.add"
            ),
            DraftItem("fact", "Invented.", cites=("Ghost",)),
        ],
    )
    notes = ground(draft, facts_for(SOURCE), SOURCE, KEY)
    assert notes.dropped_citations == 2
    assert [i.kind for i in notes.items] == ["summary", "qa"]
    summary, qa = notes.items
    assert (summary.start_line, summary.end_line, summary.symbol) == (1, 2, None)
    assert (qa.start_line, qa.end_line, qa.symbol) == (6, 7, "Cart.add")
    assert qa.citations[0].span_sha == span_sha(SOURCE, 6, 7)
    assert all(i.generated for i in notes.items)


def test_carry_over_keeps_unchanged_spans_fresh_and_moves_them() -> None:
    draft = NoteDraft(
        generated=True,
        items=[
            DraftItem("qa", "Adds.", question="q", cites=("Cart.add",), symbol="Cart.add"),
            DraftItem("qa", "Totals.", question="q", cites=("total",), symbol="total"),
        ],
    )
    old = ground(draft, facts_for(SOURCE), SOURCE, KEY).items
    # two lines inserted above Cart (it moves) and total's body changes
    edited = [*SOURCE[:3], "X = 1", "", *SOURCE[3:]]
    edited[edited.index("    return 1")] = "    return 2"
    new = carry_over(old, facts_for(edited), edited)
    add, total = new
    assert not add.stale
    assert (add.start_line, add.end_line) == (8, 9)
    assert total.stale


def test_carry_over_marks_vanished_symbol_stale() -> None:
    draft = NoteDraft(
        generated=True,
        items=[DraftItem("qa", "Totals.", question="q", cites=("total",), symbol="total")],
    )
    old = ground(draft, facts_for(SOURCE), SOURCE, KEY).items
    edited = [line.replace("def total", "def grand_total") for line in SOURCE]
    facts = facts_for([line.replace("def grand_total", "def total") for line in edited])
    facts.symbols = [s for s in facts.symbols if s.name != "total"]
    (item,) = carry_over(old, facts, edited)
    assert item.stale


def test_hashes_from_the_index_equal_hashes_of_the_text() -> None:
    """The indexer stores each span's hash; grounding with them (and no text) cites the
    same spans with the same hashes as grounding from the text."""
    from sleepy_repo.notes import span_hashes

    facts = facts_for(SOURCE)
    draft = NoteDraft(
        items=[
            DraftItem("summary", "a cart", (MODULE,)),
            DraftItem("qa", "adds", ("Cart.add", "total"), "Q?", "Cart.add"),
        ],
        generated=False,
    )
    from_text = ground(draft, facts, SOURCE, KEY)
    facts.span_shas = span_hashes(facts, SOURCE)
    assert ground(draft, facts, [], KEY) == from_text
    assert facts.span_shas["5:7"] == span_sha(SOURCE, 5, 7)  # Cart


def test_static_notes_need_no_reread_and_cite_callers_by_indexed_hash(
    make_repo, monkeypatch
) -> None:
    """Static notes are written from the index alone (no module is read again), and every
    citation's hash, callers' included, is the hash of the cited lines in the work tree."""
    from sleepy_repo import api
    from sleepy_repo import sleep as sleep_mod
    from sleepy_repo.store import citations_from_json

    repo = api.open_repo(make_repo("shop"))
    api.refresh(repo, backend="static")  # the index (and notes once)

    def no_read(*args: object) -> None:
        raise AssertionError("static notes read a module again")

    monkeypatch.setattr(sleep_mod, "indexed_lines", no_read)
    monkeypatch.setattr(sleep_mod, "work_tree_lines", lambda root: no_read)
    with repo.store.write() as conn:
        conn.execute("DELETE FROM notes")
    again = api.refresh(repo, backend="static")
    assert again["notes"]["static"]["written"] == again["modules"] > 0

    checked = 0
    with repo.store.read() as conn:
        for (cits,) in conn.execute("SELECT citations_json FROM note_items"):
            for c in citations_from_json(cits):
                text = (repo.root / c.path).read_text()
                lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
                assert c.span_sha == span_sha(lines, c.start_line, c.end_line), c
                checked += 1
        callers = conn.execute(
            "SELECT count(*) FROM note_items WHERE text LIKE 'Callers of%'"
        ).fetchone()[0]
    assert checked > 50 and callers > 0


def test_static_notes_of_a_blob_use_that_blobs_facts_only(make_repo) -> None:
    """Without a re-read, what ties static notes to their blob is the stored facts: a module
    re-indexed at another blob meanwhile gets no notes under the old blob's key."""
    from sleepy_repo import api
    from sleepy_repo import sleep as sleep_mod

    repo = api.open_repo(make_repo("shop"))
    api.refresh(repo, backend="static")
    with repo.store.read() as conn:
        blob = conn.execute("SELECT blob_sha FROM modules WHERE path = 'shop/cart.py'").fetchone()[
            0
        ]

        def request(b: str) -> object:
            return sleep_mod._request(
                repo.root, conn, "shop/cart.py", b, "-", lambda p: [], read=False
            )

        assert request(blob) is not None
        assert request("0" * 40) is None  # the store holds cart.py at another blob
