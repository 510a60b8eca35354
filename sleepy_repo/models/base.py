"""The model backend protocol: a module's facts in, a note draft out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sleepy_repo.notes import Citation, NoteDraft
from sleepy_repo.parse.facts import ModuleFacts


@dataclass(frozen=True)
class Caller:
    """A place that calls a symbol by name (a heuristic match, not a resolved call)."""

    path: str
    symbol: str | None  # qualname of the enclosing symbol, None at module level
    line: int
    citation: Citation


@dataclass
class NoteRequest:
    facts: ModuleFacts
    lines: list[str]  # the module's text, split into lines
    imports: list[str] = field(default_factory=list)  # repo paths this module imports
    imported_by: list[str] = field(default_factory=list)  # repo paths importing it
    callers: dict[str, list[Caller]] = field(default_factory=dict)  # by qualname
    effort: str = "standard"


class Backend(Protocol):
    name: str
    model: str
    prompt_version: str
    generated: bool  # True when a model writes the text

    def write_notes(self, request: NoteRequest) -> NoteDraft: ...
