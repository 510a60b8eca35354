"""One span per overload: Python ``@overload`` stubs, TypeScript overload signatures and
their implementation each cite their own lines in notes and context; a store indexed and
noted by an older version is parsed again and its superseded static notes are replaced, not
served beside the new ones."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from helpers import CLI, git

PY = '''import typing as t


class Context:
    @t.overload
    def invoke(self, callback: int) -> int: ...

    @t.overload
    def invoke(self, callback: str) -> str: ...

    def invoke(self, callback):
        """Invoke a callback with the context's arguments."""
        return callback
'''

TS = """export function parse(input: string): number;
export function parse(input: number): string;
export function parse(input: string | number): number | string {
  return typeof input === "string" ? Number(input) : String(input);
}

export class Box {
  get(key: string): string;
  get(key: number): number;
  get(key: string | number): string | number {
    return key;
  }
}
"""


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "ovl"
    root.mkdir()
    (root / "ctx.py").write_text(PY)
    (root / "parse.ts").write_text(TS)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.email=t@example.com", "-c", "user.name=T", "commit", "-qm", "init")
    return root


def _symbol_items(cli: CLI, root: Path, path: str) -> list[tuple[str, int, int]]:
    notes = cli.json("notes", path, repo=root)
    return [
        (i["symbol"], i["start_line"], i["end_line"])
        for n in notes["notes"]
        for i in n["items"]
        if i["kind"] == "symbol"
    ]


def test_each_overload_cites_its_own_lines(tmp_path: Path, cli: CLI) -> None:
    root = _repo(tmp_path)
    cli.run("refresh", repo=root)
    py = [s for s in _symbol_items(cli, root, "ctx.py") if s[0] == "Context.invoke"]
    assert py == [("Context.invoke", 6, 6), ("Context.invoke", 9, 9), ("Context.invoke", 11, 13)]
    ts = _symbol_items(cli, root, "parse.ts")
    assert [s for s in ts if s[0] == "parse"] == [("parse", 1, 1), ("parse", 2, 2), ("parse", 3, 5)]
    assert [s for s in ts if s[0] == "Box.get"] == [
        ("Box.get", 8, 8),
        ("Box.get", 9, 9),
        ("Box.get", 10, 12),
    ]
    # the implementation is served from its own lines
    ctx = cli.json("context", "invoke a callback with the context's arguments", repo=root)
    code = [i for i in ctx["items"] if i["kind"] == "code" and i["path"] == "ctx.py"]
    assert any(i["start_line"] <= 12 <= i["end_line"] for i in code), code


def test_an_older_store_is_parsed_again_and_old_static_notes_are_replaced(
    tmp_path: Path, cli: CLI
) -> None:
    root = _repo(tmp_path)
    cli.run("refresh", repo=root)
    db = root / ".sleepy" / "index.db"
    with closing(sqlite3.connect(db)) as conn:  # as an older version left it
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'parse_version'")
        conn.execute("DELETE FROM symbols WHERE path = 'parse.ts' AND end_line - start_line = 0")
        conn.execute("UPDATE notes SET prompt_version = 'static-4' WHERE backend = 'static'")
        conn.commit()
    result = cli.json("refresh", repo=root)
    assert result["parsed"] == 2, result  # unchanged files, parsed again
    with closing(sqlite3.connect(db)) as conn:
        versions = {r[0] for r in conn.execute("SELECT prompt_version FROM notes")}
        signatures = conn.execute(
            "SELECT count(*) FROM symbols WHERE path = 'parse.ts' AND end_line = start_line"
        ).fetchone()[0]
    assert versions == {"static-5"} and signatures == 4
    items = _symbol_items(cli, root, "parse.ts")
    assert len(items) == len(set(items)) == 7  # no note said twice
    assert cli.json("refresh", repo=root)["parsed"] == 0  # and only once
