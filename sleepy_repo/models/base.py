"""The model backend protocol: a module's facts in, a note draft out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sleepy_repo.notes import Citation, NoteDraft, NoteItem
from sleepy_repo.parse.facts import ModuleFacts


@dataclass(frozen=True)
class Caller:
    """A place that calls a symbol by name (a heuristic match, not a resolved call)."""

    path: str
    symbol: str | None  # qualname of the enclosing symbol, None at module level
    line: int
    citation: Citation


@dataclass(frozen=True)
class Previous:
    """A rethink: the notes of the module's previous version, and what changed since."""

    items: list[NoteItem]  # carried over to the new version (stale ones marked)
    diff: str  # unified diff, previous version -> this one


@dataclass
class NoteRequest:
    facts: ModuleFacts
    lines: list[str]  # the module's text, split into lines
    imports: list[str] = field(default_factory=list)  # repo paths this module imports
    imported_by: list[str] = field(default_factory=list)  # repo paths importing it
    callers: dict[str, list[Caller]] = field(default_factory=dict)  # by qualname
    effort: str = "standard"
    overview: str = ""  # the repo-level prefix (stable across modules, cacheable)
    attempt: int = 1  # 2 when the first draft's claims all failed grounding
    previous: Previous | None = None  # set for a rethink (update old notes from a diff)


@dataclass(frozen=True)
class Estimate:
    """What writing one module's notes may cost, before the call: what a budget reserves."""

    input_tokens: int = 0  # sleepy_repo.tokens estimate of everything sent
    output_tokens: int = 0  # max_tokens of every call: the most the model may write
    cost_usd: float = 0.0  # an upper bound at the configured prices
    calls: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Backend(Protocol):
    name: str
    model: str
    prompt_version: str
    generated: bool  # True when a model writes the text
    concurrency: int  # calls this backend may have in flight at once

    def write_notes(self, request: NoteRequest) -> NoteDraft:
        """A draft for one module; a model backend raises ``ModelError`` (with the usage of
        any billed calls) when it cannot write one."""
        ...

    def estimate(self, request: NoteRequest) -> Estimate:
        """The cost of ``write_notes(request)`` before it runs (zero without a model)."""
        ...
