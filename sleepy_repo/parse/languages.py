"""The language registry: file extension -> grammar + tags query.

Adding a language = a ``queries/<lang>-tags.scm`` file, one entry in ``LANGUAGES``,
a fixture and a test line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from tree_sitter import Language, Query


def _python() -> Any:
    import tree_sitter_python

    return tree_sitter_python.language()


def _javascript() -> Any:
    import tree_sitter_javascript

    return tree_sitter_javascript.language()


def _typescript() -> Any:
    import tree_sitter_typescript

    return tree_sitter_typescript.language_typescript()


def _tsx() -> Any:
    import tree_sitter_typescript

    return tree_sitter_typescript.language_tsx()


def _go() -> Any:
    import tree_sitter_go

    return tree_sitter_go.language()


def _rust() -> Any:
    import tree_sitter_rust

    return tree_sitter_rust.language()


@dataclass(frozen=True)
class LangSpec:
    name: str
    extensions: tuple[str, ...]
    grammar: Callable[[], Any]
    query_file: str  # under sleepy_repo/parse/queries/


LANGUAGES: dict[str, LangSpec] = {
    spec.name: spec
    for spec in (
        LangSpec("python", (".py", ".pyi"), _python, "python-tags.scm"),
        LangSpec("javascript", (".js", ".mjs", ".cjs", ".jsx"), _javascript, "javascript-tags.scm"),
        LangSpec("typescript", (".ts", ".mts", ".cts"), _typescript, "typescript-tags.scm"),
        LangSpec("tsx", (".tsx",), _tsx, "tsx-tags.scm"),
        LangSpec("go", (".go",), _go, "go-tags.scm"),
        LangSpec("rust", (".rs",), _rust, "rust-tags.scm"),
    )
}

_BY_EXT: dict[str, str] = {ext: spec.name for spec in LANGUAGES.values() for ext in spec.extensions}


def language_for_path(path: str) -> str | None:
    """The language name for a repo-relative path, or None if sleepy-repo does not parse it."""
    return _BY_EXT.get(PurePosixPath(path).suffix.lower())


@cache
def ts_language(name: str) -> Language:
    return Language(LANGUAGES[name].grammar())


@cache
def tags_query(name: str) -> Query:
    """The compiled tags query of a language (loaded once per process)."""
    text = resources.files("sleepy_repo.parse").joinpath("queries", LANGUAGES[name].query_file)
    return Query(ts_language(name), text.read_text(encoding="utf-8"))
