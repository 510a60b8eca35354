"""A deterministic stand-in for a model, for tests: note text derived from the facts.

It behaves like a model backend (``generated = True``, its own note key, a ledger entry per
call) but writes the same text for the same input, so tests can assert on it. A test can
pass ``handler`` to script replies, including ones that cite symbols that do not exist.
``SLEEPY_REPO_FAKE_DELAY`` (seconds) makes each call take that long, so crash and pause
tests can catch a process in the middle of a call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from sleepy_repo.models.base import Estimate, NoteRequest
from sleepy_repo.models.static import first_sentence
from sleepy_repo.notes import MODULE, DraftItem, NoteDraft
from sleepy_repo.tokens import count_tokens


class FakeBackend:
    name = "fake"
    model = "fake-1"
    prompt_version = "fake-1"
    generated = True
    concurrency = 1  # a scripted handler need not be thread-safe
    max_tokens = 256

    def __init__(self, handler: Callable[[NoteRequest], NoteDraft] | None = None) -> None:
        self.handler = handler
        self.calls = 0

    def estimate(self, request: NoteRequest) -> Estimate:
        """Like a model's: the module's text in, ``max_tokens`` out; it costs nothing."""
        return Estimate(
            input_tokens=count_tokens("\n".join(request.lines)),
            output_tokens=self.max_tokens,
            calls=1,
        )

    def write_notes(self, request: NoteRequest) -> NoteDraft:
        self.calls += 1
        delay = float(os.environ.get("SLEEPY_REPO_FAKE_DELAY", "0") or 0)
        if delay > 0:
            time.sleep(delay)
        if self.handler is not None:
            return self.handler(request)
        facts = request.facts
        public = [s for s in facts.symbols if s.exported and s.parent is None]
        summary = f"[fake] {facts.path} is about " + (
            first_sentence(facts.doc) if facts.doc else ", ".join(s.name for s in public[:4])
        )
        items = [DraftItem(kind="summary", text=summary, cites=(MODULE,))]
        for sym in public[:5]:
            items.append(
                DraftItem(
                    kind="qa",
                    question=f"[fake] How do I use {sym.name}?",
                    text=f"Call {sym.signature.strip()} ({sym.kind} in {facts.path}).",
                    cites=(sym.qualname,),
                    symbol=sym.qualname,
                )
            )
        if public:
            items.append(
                DraftItem(
                    kind="fact",
                    text=f"[fake] {facts.path} has {len(public)} public symbols.",
                    cites=tuple(s.qualname for s in public[:3]),
                )
            )
        return NoteDraft(items=items, generated=True)
