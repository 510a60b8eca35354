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
