"""Ask: answer a question from its packed context.

No answering model exists yet, so the answer is ``None`` and a plain message says so; the
cited context is returned in full, which is what an agent (or a person) answers from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sleepy_repo.retrieve import Context

SCHEMA_VERSION = 1
NO_MODEL = (
    "No answering model is configured, so sleepy-repo gives no answer of its own: the context "
    "below holds the notes and code most relevant to the question, each cited by file and "
    "lines. Answer from it, and open the cited lines to verify."
)


@dataclass
class Answer:
    question: str
    answer: str | None
    message: str
    context: Context

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "question": self.question,
            "answer": self.answer,
            "message": self.message,
            "context": self.context.to_json(),
        }


def answer(ctx: Context) -> Answer:
    """The answer to ``ctx.question`` (no model yet: the context, and a message saying so)."""
    return Answer(question=ctx.question, answer=None, message=NO_MODEL, context=ctx)
