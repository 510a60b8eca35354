"""Notes written by a (fake) model: keyed by blob, reused across branches, carried over
item by item when a module changes, and never served stale silently."""

from __future__ import annotations

from pathlib import Path

from helpers import CLI, git, trusted_config


def fake_note(notes: dict) -> dict:
    (note,) = [n for n in notes["notes"] if n["backend"] == "fake"]
    return note


def by_symbol(note: dict) -> dict[str | None, dict]:
    return {i["symbol"]: i for i in note["items"] if i["kind"] == "qa"}


def test_fake_notes_are_written_once_and_reused(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    first = cli.json("refresh", "--backend", "fake", repo=repo)
    n = first["modules"]
    assert first["notes"]["fake"]["written"] == n
    again = cli.json("refresh", "--backend", "fake", repo=repo)
    assert again["notes"]["fake"] == {
        "written": 0,
        "reused": n,
        "carried": 0,
        "failed": [],
        "dropped_citations": 0,
    }
    note = fake_note(cli.json("notes", "shop/tax.py", repo=repo))
    assert note["model"] == "fake-1" and note["origin"] == "written"
    assert all(i["generated"] for i in note["items"])
    status = cli.json("status", repo=repo)
    assert status["spent"]["calls"] == n  # one ledger row per model call
    assert status["notes_by_backend"] == {"fake": n, "static": n}


def test_changed_module_carries_unchanged_items_and_flags_the_rest(make_repo, cli: CLI) -> None:
    repo = make_repo("shop")
    (repo / ".sleepy").mkdir()
    trusted_config(repo, '[notes]\nbackend = "fake"\n')
    cli.json("refresh", repo=repo)
    before = by_symbol(fake_note(cli.json("notes", "shop/tax.py", repo=repo)))
    assert {"vat_rate", "vat_for_order"} <= set(before)

    tax = repo / "shop" / "tax.py"
    text = tax.read_text()
    old = '    return sum(vat_for_lines(lines, country), Decimal("0.00"))'
    assert old in text
    text = text.replace(old, '    return sum(vat_for_lines(lines, country), Decimal("0"))')
    tax.write_text("# a comment line that moves every span down\n" + text)
    # refresh with the static backend only: the fake notes are carried, not rewritten
    r = cli.json("refresh", "--backend", "static", repo=repo)
    assert r["notes"]["static"]["carried"] == 1

    note = fake_note(cli.json("notes", "shop/tax.py", repo=repo))
    assert note["origin"] == "carried"
    after = by_symbol(note)
    assert after["vat_for_order"]["stale"] is True
    assert after["vat_rate"]["stale"] is False
    # unchanged items moved down with their symbol
    assert after["vat_rate"]["start_line"] == before["vat_rate"]["start_line"] + 1
    status = cli.json("status", repo=repo)
    assert status["modules"]["stale"] == 1

    ctx = cli.json("context", "how do I use vat_for_order", "--budget", "3000", repo=repo)
    served = [i for i in ctx["items"] if i["path"] == "shop/tax.py" and i["generated"]]
    assert served, "the carried notes are served (the map's line for the module)"
    # context serves the current code, never a stale note item about it
    code = [i for i in ctx["items"] if i["kind"] == "code" and i["symbol"] == "vat_for_order"]
    assert code and 'Decimal("0")' in code[0]["text"], ctx["items"]
    assert not any(i["stale"] and i["kind"] != "summary" for i in ctx["items"])

    # re-noting with the model replaces the carried note
    r = cli.json("refresh", repo=repo)
    assert r["notes"]["fake"]["written"] == 1
    assert fake_note(cli.json("notes", "shop/tax.py", repo=repo))["origin"] == "written"


def test_branch_switch_reuses_model_notes(make_repo, cli: CLI, tmp_path: Path) -> None:
    repo = make_repo("shop")
    cli.json("refresh", "--backend", "fake", repo=repo)
    git(repo, "checkout", "-q", "-b", "experiment")
    (repo / "shop" / "tax.py").write_text('"""Tax stub."""\n\ndef vat_rate():\n    return 0\n')
    git(repo, "commit", "-qam", "stub tax")
    r = cli.json("refresh", "--backend", "fake", repo=repo)
    assert r["notes"]["fake"]["written"] == 1
    git(repo, "checkout", "-q", "main")
    back = cli.json("refresh", "--backend", "fake", repo=repo)
    assert back["parsed"] == 1
    assert back["notes"]["fake"]["written"] == 0  # the main blob's notes are still there


EDGE_MODULE = (
    '''"""Edge cases for the per-symbol items."""
import os


class Config:
    """Holds the api_key = "sk-ant-abcdefghijklmnopqrstuvwxyz012345" for tests."""

    @property
    def value(self):
        """The value — with a dash… and an ellipsis."""
        return 1

    @value.setter
    def value(self, v):
        pass

    def getPassword2(self, x):
        return x


def very_long_signature('''
    + ", ".join(f"argument_{i}: int = {i}" for i in range(30))
    + '''):
    """Ünïcode döc. Second sentence."""
    return os.sep


def parseArgs(argv):
    return argv
'''
)


def test_static_rows_equal_grounded_draft_rows(make_repo) -> None:
    """The batch writer builds the per-symbol rows of static notes directly; they must be
    exactly the rows of the draft grounded the general way, for every module of both
    fixtures and for a module of edge cases (a repeated qualname, a secret in a docstring,
    non-ASCII text, a truncated signature, camelCase names)."""
    from sleepy_repo import api, sleep
    from sleepy_repo.models.static import StaticBackend
    from sleepy_repo.notes import ground
    from sleepy_repo.store import note_rows

    backend = StaticBackend()
    compared = 0
    for name in ("shop", "relay"):
        root = make_repo(name)
        (root / "edge_cases.py").write_text(EDGE_MODULE)
        repo = api.open_repo(root)
        api.refresh(repo)
        lines_of = sleep.work_tree_lines(root)
        with repo.store.read() as conn:
            modules = conn.execute(
                "SELECT path, blob_sha FROM modules WHERE status = 'indexed'"
            ).fetchall()
            for path, blob in modules:
                request = sleep._request(root, conn, path, blob, "-", lines_of, read=False)
                assert request is not None
                key = sleep.note_key(backend, path, blob, "-")
                draft = backend.write_notes(request)
                general = note_rows(ground(draft, request.facts, request.lines, key))
                assert sleep.static_rows(backend, request, key) == general, path
                compared += 1
            edge = [
                r[0]
                for r in conn.execute(
                    "SELECT text FROM note_items WHERE path = 'edge_cases.py' AND kind = 'symbol'"
                )
            ]
        assert any("[REDACTED" in t for t in edge) and not any("sk-ant-" in t for t in edge)
        assert sum(t.startswith("method Config.value:") for t in edge) == 2
    assert compared >= 20
