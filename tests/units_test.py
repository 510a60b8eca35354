"""Units of a module (symbols and module-level stretches) and the window of a long unit
that matches a question."""

from __future__ import annotations

import itertools

from sleepy_repo.parse import parse_module
from sleepy_repo.units import UNIT_MAX_LINES, SymbolSpan, Unit, best_window, units_of

SOURCE = '''"""Doc."""

import os

LIMIT = 3


@decorator
def small(a):
    return a


class Big:
    """A class longer than UNIT_MAX_LINES: its methods are units of their own."""

    x = 1

    def first(self):
{body}

    def second(self):
        return 2


def tail():
    pass
'''


def _units(source: str) -> tuple[list[Unit], list[str]]:
    facts = parse_module("m.py", source.encode(), "python")
    spans = [SymbolSpan(s.qualname, s.start_line, s.end_line) for s in facts.symbols]
    lines = source.splitlines()
    return units_of("m.py", spans, lines), lines


def test_a_long_class_is_split_into_its_header_and_methods() -> None:
    body = "\n".join(f"        v{i} = {i}" for i in range(UNIT_MAX_LINES))
    units, lines = _units(SOURCE.format(body=body))
    shown = [(u.symbol, lines[u.start_line - 1].strip()) for u in units]
    assert shown == [
        (None, '"""Doc."""'),
        ("small", "@decorator"),  # the decorator belongs to the function
        ("Big", "class Big:"),
        ("Big.first", "def first(self):"),
        ("Big.second", "def second(self):"),
        ("tail", "def tail():"),
    ]
    # every non-blank line is in exactly one unit
    covered = [n for u in units for n in range(u.start_line, u.end_line + 1)]
    assert len(covered) == len(set(covered))
    assert {n for n, line in enumerate(lines, 1) if line.strip()} <= set(covered)
    # a unit never ends or starts on a blank line
    assert all(lines[u.start_line - 1].strip() and lines[u.end_line - 1].strip() for u in units)


def test_a_short_class_is_one_unit() -> None:
    units, lines = _units(SOURCE.format(body="        pass"))
    assert ("Big", "class Big:") in [(u.symbol, lines[u.start_line - 1].strip()) for u in units]
    assert not any(u.symbol == "Big.first" for u in units)


def test_the_window_holds_the_matching_lines() -> None:
    lines = [f"x{i} = {i}" for i in range(100)]
    lines[70] = "value = os.environ.get(envvar)"
    lines[72] = "resolve_envvar_value(ctx)"
    start, end = best_window(lines, ["envvar", "environment"], 10)
    assert end - start == 10 and start <= 70 and end > 72
    assert best_window(lines, ["nothing"], 10) == (0, 10)
    assert best_window(lines[:5], ["envvar"], 10) == (0, 5)


def test_served_lines_are_redacted_as_one_text() -> None:
    """A window that starts inside a private key must not serve its body: the module is
    redacted whole, with every line kept at its place."""
    from sleepy_repo.retrieve import redacted_lines

    body = ["MIIEowIBAAKCAQEA7bq2" + "Q" * 40, "Zm9vYmFyYmF6cXV4" * 4, "dGhlIGVuZA" * 5]
    lines = [
        "KEY = '''",
        "-----BEGIN RSA PRIVATE KEY-----",
        *body,
        "-----END RSA PRIVATE KEY-----",
        "'''",
        "def use_key():",
        "    return KEY",
    ]
    out = redacted_lines(lines)
    assert len(out) == len(lines)
    assert not any(b in line for b in body for line in out)
    assert out[-2:] == lines[-2:]
    assert redacted_lines(["x = 1", "y = 2"]) == ["x = 1", "y = 2"]


def test_a_long_unit_is_cut_into_pieces_that_cover_it_once() -> None:
    from sleepy_repo.units import pieces

    u = Unit("m.py", 11, 135, "f")  # 125 lines
    parts = pieces(u, 60)
    assert [p.lines for p in parts] == [42, 41, 42]
    assert parts[0].start_line == 11 and parts[-1].end_line == 135
    assert all(a.end_line + 1 == b.start_line for a, b in itertools.pairwise(parts))
    assert all(p.symbol == "f" and p.path == "m.py" for p in parts)
    assert pieces(u, 0) == [u] and pieces(u, 125) == [u]
