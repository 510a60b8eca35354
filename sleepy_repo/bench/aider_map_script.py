"""Serve aider repo maps to ``sleepy-repo bench localize`` (run with aider's own python).

This file is run by path inside the virtualenv where ``aider-chat`` is installed; it does
not import sleepy_repo (which is not installed there) except its token counter, loaded from
the file given as the first argument, so the map is fitted with the same counter as every
other strategy.

Protocol: one JSON request per line on stdin, one JSON reply per line on stdout::

    -> {"root": "/abs/worktree", "files": ["rel/path.py", ...], "query": "...",
        "budgets": [250, 500, ...]}
    <- {"ok": true, "results": [{"budget": 250, "map": "...", "tokens": 241,
                                 "files": ["rel/best.py", ...]}, ...]}
    <- {"ok": false, "error": "..."}

Mentioned files and identifiers come from the query exactly as aider's ``Coder`` derives
them from a chat message (``get_file_mentions``, ``get_ident_mentions`` and
``get_ident_filename_matches`` in ``aider/coders/base_coder.py``). There are no chat files,
so the map is the whole-repo map; ``map_mul_no_files`` is 1 so it is fitted to the budget
itself, not to 8x the budget. aider accepts a map up to 15% over its target; to stay within
the budget the target is lowered and the map rebuilt until the recount fits.

The map lists files alphabetically, so ``files`` (the ranking) is the order of
``RepoMap.get_ranked_tags`` restricted to the files the map shows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

# Everything aider prints goes to stderr; replies use a private copy of the real stdout.
_REPLY = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr


def _load_counter(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("sleepy_tokens", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.count_tokens


count_tokens = _load_counter(sys.argv[1])

from aider.repomap import RepoMap, Tag  # type: ignore[import-not-found]  # noqa: E402


class _Model:
    """The one attribute RepoMap needs from aider's model: a token counter."""

    def token_count(self, text: str) -> int:
        return int(count_tokens(text))


class _IO:
    """The few InputOutput methods RepoMap calls; messages go to stderr."""

    def tool_output(self, *args: Any, **_: Any) -> None:
        print(*args, file=sys.stderr)

    tool_warning = tool_output
    tool_error = tool_output

    def read_text(self, fname: str, silent: bool = False) -> str | None:
        try:
            return Path(fname).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None


def file_mentions(text: str, rel_fnames: list[str]) -> set[str]:
    """aider's ``Coder.get_file_mentions`` with no files in the chat."""
    words = {w.rstrip(",.!;:?").strip("\"'`*_") for w in text.split()}
    mentioned = {f for f in rel_fnames if f in words}
    by_base: dict[str, list[str]] = defaultdict(list)
    for rel in rel_fnames:
        base = os.path.basename(rel)
        if any(c in base for c in "/\\._-"):
            by_base[base].append(rel)
    for base, rels in by_base.items():
        if len(rels) == 1 and base in words:
            mentioned.add(rels[0])
    return mentioned


def ident_mentions(text: str) -> set[str]:
    """aider's ``Coder.get_ident_mentions``."""
    return set(re.split(r"\W+", text))


def ident_filename_matches(idents: set[str], rel_fnames: list[str]) -> set[str]:
    """aider's ``Coder.get_ident_filename_matches``."""
    stems: dict[str, set[str]] = defaultdict(set)
    for rel in rel_fnames:
        stem = Path(rel).stem.lower()
        if len(stem) >= 5:
            stems[stem].add(rel)
    out: set[str] = set()
    for ident in idents:
        if len(ident) >= 5:
            out |= stems.get(ident.lower(), set())
    return out


_maps: dict[str, RepoMap] = {}


def fit(rm: RepoMap, other: list[str], budget: int, mentioned: set[str], idents: set[str]) -> str:
    """aider's map for ``budget``: the largest of the maps built at falling targets (aider
    itself may overshoot its target by 15%) that fits the budget."""
    target, best, best_tokens = budget, "", -1
    for _ in range(8):
        text = rm.get_ranked_tags_map_uncached([], other, target, mentioned, idents) or ""
        tokens = count_tokens(text)
        if best_tokens < tokens <= budget:
            best, best_tokens = text, tokens
        if tokens <= budget:
            break
        target = int(target * min(budget / tokens, 0.95))
        if target < 1:
            break
    return best


def serve(req: dict[str, Any]) -> dict[str, Any]:
    root = req["root"]
    # Work in the root with relative file names: aider keeps tags in sets, and with
    # PYTHONHASHSEED=0 their order then does not depend on where the worktree lives.
    os.chdir(root)
    rm = _maps.get(root)
    if rm is None:
        rm = RepoMap(
            map_tokens=1024,
            root=".",
            main_model=_Model(),
            io=_IO(),
            map_mul_no_files=1,
            refresh="always",
        )
        _maps[root] = rm
    rel_fnames = sorted(req["files"])
    other = list(rel_fnames)
    query = req["query"]
    idents = ident_mentions(query)
    mentioned = file_mentions(query, rel_fnames) | ident_filename_matches(idents, rel_fnames)

    ranked = rm.get_ranked_tags([], other, mentioned, idents)
    order: dict[str, int] = {}
    for tag in ranked:
        order.setdefault(tag[0], len(order))
    known = set(rel_fnames)
    results = []
    rm.get_ranked_tags = lambda *a, **k: ranked  # rank once per query, fit per budget
    try:
        for budget in req["budgets"]:
            text = fit(rm, other, budget, mentioned, idents)
            shown = {line.rstrip(":") for line in text.splitlines()} & known
            files = sorted(shown, key=lambda f: (order.get(f, len(order)), f))
            results.append(
                {"budget": budget, "map": text, "tokens": count_tokens(text), "files": files}
            )
    finally:
        del rm.get_ranked_tags
    return {"ok": True, "results": results}


def main() -> int:
    assert Tag  # aider's record type; imported to fail early on an incompatible aider
    _REPLY.write(json.dumps({"ok": True, "ready": True}) + "\n")
    _REPLY.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = serve(json.loads(line))
        except Exception as exc:  # reported to the parent, which skips the strategy
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _REPLY.write(json.dumps(reply) + "\n")
        _REPLY.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
