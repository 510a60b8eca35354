"""The parse layer: tree-sitter facts (symbols, imports, calls, docs) about one module."""

from sleepy_repo.parse.facts import Import, ModuleFacts, Reference, Symbol
from sleepy_repo.parse.imports import resolve_import
from sleepy_repo.parse.languages import LANGUAGES, language_for_path
from sleepy_repo.parse.parser import parse_module

__all__ = [
    "LANGUAGES",
    "Import",
    "ModuleFacts",
    "Reference",
    "Symbol",
    "language_for_path",
    "parse_module",
    "resolve_import",
]
