"""Gold lines, gold symbols and the line/symbol metrics of ``sleepy_repo.bench.gold``, on
tiny scripted commits whose expected scores are worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleepy_repo.bench.gold import (
    Gold,
    ServedItem,
    case_gold,
    coverage,
    diff_lines,
    pointer_coverage,
    served_symbols,
    symbol_hit,
)
from sleepy_repo.bench.localize import leaked
from sleepy_repo.bench.mine import Case

from helpers import git

STATE = """\
def f():
    a = 1
    b = 2
    return a + b


def g():
    api_key = "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lm"
    return 0
"""
# lines: 1 def f | 2 a | 3 b | 4 return a + b | 5, 6 blank | 7 def g | 8 api_key | 9 return 0


def _repo(tmp_path: Path, after: str) -> tuple[Path, str, str]:
    """A repo with m.py = STATE (the state) and one commit changing it to ``after``."""
    root = tmp_path / "r"
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "m.py").write_text(STATE)
    git(root, "add", "m.py")
    git(root, "commit", "-q", "-m", "state")
    state = git(root, "rev-parse", "HEAD").strip()
    (root / "m.py").write_text(after)
    git(root, "commit", "-q", "-am", "Make f and g compute something else entirely")
    commit = git(root, "rev-parse", "HEAD").strip()
    git(root, "checkout", "-q", state)  # the bench reads the state's files
    return root, state, commit


def _gold(tmp_path: Path, after: str) -> tuple[Path, Gold]:
    root, state, commit = _repo(tmp_path, after)
    case = Case(state=state, commit=commit, query="q", gold_files=["m.py"])
    return root, case_gold(root, case)


# the commit changes lines 2, 3, 4 (f's body) and 8 (g's secret): 4 gold lines
CHANGED = STATE.replace("a = 1\n    b = 2\n    return a + b", "x = 3\n    y = 4\n    return x")
CHANGED = CHANGED.replace('api_key = "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lm"', "api_key = None")


def code(start: int, text: str, end: int | None = None, symbol: str | None = None) -> ServedItem:
    n = len(text.split("\n"))
    return ServedItem("m.py", start, end or start + n - 1, "code", text, symbol)


def test_gold_lines_are_the_minus_side(tmp_path: Path) -> None:
    _, gold = _gold(tmp_path, CHANGED)
    assert sorted(n for _, n in gold.lines) == [2, 3, 4, 8]
    assert gold.per_file() == {"m.py": 4}
    # innermost symbols containing gold lines, in line order
    assert gold.symbols == [("m.py", "f"), ("m.py", "g")]


def test_coverage_counts_carried_text_at_its_position(tmp_path: Path) -> None:
    _, gold = _gold(tmp_path, CHANGED)
    lines = STATE.split("\n")
    # lines 1-3 carried: gold 2 and 3 of 4 -> 0.5
    assert coverage(gold, [code(1, "\n".join(lines[0:3]))]) == 0.5
    # the same item twice covers nothing more
    assert coverage(gold, [code(1, "\n".join(lines[0:3]))] * 2) == 0.5
    # a code item whose text is shifted by one line carries none of them at their position
    assert coverage(gold, [code(2, "\n".join(lines[0:3]))]) == 0.0
    # a span only claimed (a note item citing lines 1-9, its text not the code): nothing
    claim = ServedItem(
        "m.py", 1, 9, "summary", "f adds a and b; g returns 0", None, (("m.py", 1, 9),)
    )
    assert coverage(gold, [claim]) == 0.0
    # ... a code item that claims lines 1-9 but carries only two lines: those two
    assert coverage(gold, [code(1, "\n".join(lines[0:2]), end=9)]) == 0.25
    # ... and text past end_line does not count
    assert coverage(gold, [code(3, "\n".join(lines[2:9]), end=3)]) == 0.25
    # another file at the same lines: nothing
    other = ServedItem("n.py", 1, 9, "code", "\n".join(lines[0:9]))
    assert coverage(gold, [other]) == 0.0
    # the whole file: all 4
    assert coverage(gold, [code(1, "\n".join(lines[0:9]))]) == 1.0
    # a case without gold lines scores None (left out of the mean)
    assert coverage(Gold(), [code(1, "x")]) is None


def test_a_redaction_mask_counts_as_the_secret_line(tmp_path: Path) -> None:
    _, gold = _gold(tmp_path, CHANGED)
    masked = code(8, '    api_key = "[REDACTED:secret]"')
    assert coverage(gold, [masked]) == 0.25
    wrong = code(8, '    api_key = "something else"')
    assert coverage(gold, [wrong]) == 0.0


def test_pointer_coverage(tmp_path: Path) -> None:
    _, gold = _gold(tmp_path, CHANGED)
    # a note item spanning 1-9 points at every gold line
    note = ServedItem("m.py", 1, 9, "summary", "about f and g")
    assert pointer_coverage(gold, [note]) == 1.0
    # a fact whose own span is line 1 but cites 7-9: gold 8 of 4
    fact = ServedItem("m.py", 1, 1, "fact", "g returns 0", None, (("m.py", 7, 9),))
    assert pointer_coverage(gold, [fact]) == 0.25
    # a citation wider than 80 lines points at nothing; so does a wide note span
    wide = ServedItem("m.py", 1, 1, "fact", "x", None, (("m.py", 1, 81),))
    assert pointer_coverage(gold, [wide]) == 0.0
    assert pointer_coverage(gold, [ServedItem("m.py", 1, 81, "summary", "x")]) == 0.0
    # a code item's span counts whatever its width (it carries its text)
    assert pointer_coverage(gold, [code(2, "\n".join(STATE.split("\n")[1:3]))]) == 0.5
    # a bare path of a path list points at no line
    assert pointer_coverage(gold, [ServedItem("m.py", 1, 1, "path", "m.py")]) == 0.0


def test_pure_insertion_is_the_line_it_follows(tmp_path: Path) -> None:
    after = STATE.replace("    return a + b\n", "    return a + b\n    # done\n")
    root, state, commit = _repo(tmp_path, after)
    assert diff_lines(root, state, commit, "m.py") == [4]
    # at the top of the file (@@ -0,0 +1 @@): line 1
    root2, state2, commit2 = _repo(tmp_path / "top", "# header\n" + STATE)
    assert diff_lines(root2, state2, commit2, "m.py") == [1]
    gold = case_gold(root, Case(state, commit, "q", ["m.py"]))
    assert list(gold.lines) == [("m.py", 4)]
    assert gold.symbols == [("m.py", "f")]
    assert coverage(gold, [code(4, "    return a + b")]) == 1.0


def test_symbol_hit(tmp_path: Path) -> None:
    root, gold = _gold(tmp_path, CHANGED)  # gold symbols f and g
    lines = STATE.split("\n")
    g_code = code(7, "\n".join(lines[6:9]))
    f_code = code(1, "\n".join(lines[0:4]))
    note = ServedItem("m.py", 1, 9, "summary", "module")  # no symbol
    served = served_symbols(root, [note, g_code, f_code, g_code])
    assert served == [("m.py", "g"), ("m.py", "f")]
    assert symbol_hit(gold, served, 1) == 1.0  # g, of min(1, 2)
    assert symbol_hit(gold, served, 3) == 1.0
    # a code item's own symbol field wins over the line it starts at
    named = served_symbols(root, [code(8, lines[7], symbol="h")])
    assert named == [("m.py", "h")]
    assert symbol_hit(gold, named, 1) == 0.0
    # a window starting inside g (line 8) is g's
    assert served_symbols(root, [code(8, lines[7])]) == [("m.py", "g")]
    assert symbol_hit(gold, [("m.py", "f")], 3) == 0.5
    assert symbol_hit(Gold(), served, 1) is None


def test_question_case_gold_is_its_symbols_spans(tmp_path: Path) -> None:
    root, state, _ = _repo(tmp_path, CHANGED)
    q = Case(state, None, "where is g?", ["m.py"], gold_symbols=["g", "m.py::f", "nope"])
    gold = case_gold(root, q)
    assert sorted(n for _, n in gold.lines) == [1, 2, 3, 4, 7, 8, 9]
    assert gold.symbols == [("m.py", "g"), ("m.py", "f")]
    assert gold.missing_symbols == ["nope"]


def test_leak_check() -> None:
    case = Case("s", "c" * 40, "Retry transient payment errors\n\nbody", ["a.py"])
    assert leaked(case, "notes: Retry transient payment errors (history)")
    assert not leaked(case, "Retry transient")
    assert not leaked(
        Case("s", None, "Retry transient payment errors", ["a.py"]),
        "Retry transient payment errors",
    )


@pytest.mark.parametrize("budget", [1, 50])
def test_scores_need_no_items(budget: int) -> None:
    gold = Gold(lines={("m.py", 1): frozenset({"x"})}, symbols=[("m.py", "f")])
    assert coverage(gold, []) == 0.0 and pointer_coverage(gold, []) == 0.0
    assert symbol_hit(gold, [], budget) == 0.0
