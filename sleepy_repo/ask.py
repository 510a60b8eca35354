"""Ask: a model answers a question from its packed context, citing the context's items.

The model is chosen explicitly, like a note backend (``[notes] backend`` or ``--backend``):
``anthropic``, ``local`` or ``fake`` (deterministic, for tests). ``static`` means no model:
the answer is ``None``, a message says why, and the cited context is returned in full,
which is what an agent (or a person) answers from.

One call per question, through a *structured model* (``sleepy_repo.models.structured``:
anthropic tool use, a local JSON-schema grammar in which every citation is an ``enum`` of
the context's item ids, so a false citation is impossible, or the deterministic fake).

The prompts are ``prompts/ask-system.md`` and ``prompts/ask.md``; the context items are
delimited as untrusted data (``<untrusted_context>``), each with an ``id`` that is its
location, ``path:start-end``. Citations of ids not in the context are dropped and counted
(``dropped_citations``). The call reserves its estimate against ``[budget]`` first
(``budget.Budget``) and is settled to its real usage in the ledger (reason ``"ask"``), so
``status`` spending includes it. ``markdown`` is the answer with ``path:line`` citations,
for editor clients to show as is.

The bench's reader (``sleepy_repo.bench.reader``) uses the same structured models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sleepy_repo.config import BudgetConfig
from sleepy_repo.errors import ConfigError, ModelError, ModelOutputError
from sleepy_repo.models.structured import (
    StructuredModel,
    StructuredRequest,
    run_call,
)
from sleepy_repo.notes import Usage
from sleepy_repo.prompt_files import load_prompt
from sleepy_repo.redact import fence, md_code, md_fence, redact_text
from sleepy_repo.retrieve import Context, ContextItem
from sleepy_repo.store import NoteStore

SCHEMA_VERSION = 1
ANSWER_TOOL = "record_answer"
LEDGER_PATH = "(ask)"  # the ledger's path column for ask calls (no one module)
MAX_CITATIONS = 5
MAX_ANSWER_CHARS = 4000
ANSWER_MAX_TOKENS = 1024
NO_MODEL = (
    "No answering model is configured, so sleepy-repo gives no answer of its own: the context "
    "below holds the notes and code most relevant to the question, each cited by file and "
    "lines. Answer from it, and open the cited lines to verify. (Choose a model with "
    "--backend anthropic|local or [notes] backend.)"
)


# -- the answer ----------------------------------------------------------------------------
def item_id(item: ContextItem) -> str:
    return f"{item.path}:{item.start_line}-{item.end_line}"


def _attr(value: str) -> str:
    return value.replace("&", "%26").replace('"', "%22").replace("<", "%3C").replace(">", "%3E")


def render_items(items: Sequence[ContextItem]) -> str:
    """The context's items as delimited blocks, each with its id (redacted)."""
    blocks = []
    for item in items:
        flags = ' stale="true"' if item.stale else ""
        sym = f' symbol="{_attr(item.symbol)}"' if item.symbol else ""
        head = (
            f'<item id="{_attr(item_id(item))}" kind="{item.kind}"{sym} '
            f'source="{_attr(item.source)}" generated="{str(item.generated).lower()}"{flags}>'
        )
        body = fence(redact_text(item.text), "item", "untrusted_context")
        blocks.append(f"{head}\n{body}\n</item>")
    return "\n".join(blocks)


def answer_schema(ids: Sequence[str]) -> dict[str, Any]:
    """The reply's schema: ``answer`` text and ``citations``, an enum of the context's ids."""
    cite: dict[str, Any] = {"type": "string"}
    if ids:
        cite["enum"] = list(ids)
    return {
        "type": "object",
        # citations first: a local model cut short while rambling in `answer` still
        # leaves a usable reply (see _salvage)
        "properties": {
            "citations": {
                "type": "array",
                "items": cite,
                "minItems": 1 if ids else 0,
                "maxItems": MAX_CITATIONS,
            },
            "answer": {"type": "string", "minLength": 1},
        },
        "required": ["citations", "answer"],
        "additionalProperties": False,
    }


def answer_request(ctx: Context) -> StructuredRequest:
    ids = list(dict.fromkeys(item_id(i) for i in ctx.items))
    system = load_prompt("ask-system").render(tool=ANSWER_TOOL)
    user = load_prompt("ask").render(
        question=fence(redact_text(ctx.question), "item", "untrusted_context"),
        count=len(ctx.items),
        context=render_items(ctx.items),
        tool=ANSWER_TOOL,
    )
    return StructuredRequest(
        task="answer",
        system=system,
        user=user,
        tool=ANSWER_TOOL,
        description="Record the answer to the question and the ids of the items it cites.",
        schema=answer_schema(ids),
        question=ctx.question,
        choices=tuple(ids),
    )


@dataclass
class Answer:
    question: str
    answer: str | None
    message: str
    context: Context
    backend: str = "static"
    model: str | None = None
    citations: list[ContextItem] = field(default_factory=list)
    dropped_citations: int = 0
    usage: tuple[Usage, ...] = ()

    def markdown(self) -> str:
        """The answer with ``path:line`` citations (or, without one, the message and the
        context's locations, each with its first line fenced: repository text is shown as
        data, never rendered as markup): what editor clients show as is."""
        if self.answer is None:
            lines = [self.message, ""]
            for i in self.context.items:
                first = next((x for x in i.text.splitlines() if x.strip()), None)
                if first is None:
                    continue
                stale = " (stale)" if i.stale else ""
                where = md_code(f"{i.path}:{i.start_line}")
                lines.append(f"- {where} [{i.kind}] ({i.source}){stale}")
                lines += md_fence(first[:160], indent="  ")
            return "\n".join(lines).rstrip() + "\n"
        lines = [self.answer.strip(), ""]
        if self.citations:
            lines.append("Sources:")
            for i in self.citations:
                what = f" {md_code(i.symbol)}" if i.symbol else ""
                stale = " (stale)" if i.stale else ""
                lines.append(f"- {md_code(f'{i.path}:{i.start_line}')}{what} [{i.kind}]{stale}")
        return "\n".join(lines).rstrip() + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "question": self.question,
            "answer": self.answer,
            "message": self.message,
            "context": self.context.to_json(),
            "backend": self.backend,
            "model": self.model,
            "citations": [
                {
                    "id": item_id(i),
                    "path": i.path,
                    "start_line": i.start_line,
                    "end_line": i.end_line,
                    "symbol": i.symbol,
                    "kind": i.kind,
                    "stale": i.stale,
                }
                for i in self.citations
            ],
            "dropped_citations": self.dropped_citations,
            "usage": {
                "input_tokens": sum(u.input_tokens for u in self.usage),
                "output_tokens": sum(u.output_tokens for u in self.usage),
                "cache_read_tokens": sum(u.cache_read_tokens for u in self.usage),
                "cache_write_tokens": sum(u.cache_write_tokens for u in self.usage),
                "cost_usd": round(sum(u.cost_usd for u in self.usage), 6),
            },
            "markdown": self.markdown(),
        }


def parse_answer(data: dict[str, Any], ctx: Context) -> tuple[str, list[ContextItem], int]:
    """The answer text, the cited items (context ids only, first item per id, in the
    reply's order) and how many citations were dropped (not in the context, or repeated)."""
    text = data.get("answer")
    if not isinstance(text, str) or not text.strip():
        raise ModelOutputError("the reply has no answer text")
    raw = data.get("citations", [])
    if not isinstance(raw, list):
        raise ModelOutputError("`citations` must be a list of item ids")
    by_id: dict[str, ContextItem] = {}
    for item in ctx.items:
        by_id.setdefault(item_id(item), item)
    cited: dict[str, ContextItem] = {}
    dropped = 0
    for c in raw:
        key = c.strip().strip("`") if isinstance(c, str) else None
        if key is None or key not in by_id or key in cited:
            dropped += 1
            continue
        cited[key] = by_id[key]
    return text.strip()[:MAX_ANSWER_CHARS], list(cited.values()), dropped


def answer(
    ctx: Context,
    model: StructuredModel | None = None,
    *,
    store: NoteStore | None = None,
    limits: BudgetConfig | None = None,
) -> Answer:
    """The answer to ``ctx.question`` by ``model`` (None: no model; the context and a
    message saying so). With a model, ``store`` takes the ledger row and ``limits`` the
    budget check. A model that fails leaves ``answer`` None and says why."""
    if model is None:
        return Answer(question=ctx.question, answer=None, message=NO_MODEL, context=ctx)

    def unanswered(message: str, usage: tuple[Usage, ...] = ()) -> Answer:
        return Answer(
            question=ctx.question,
            answer=None,
            message=message,
            context=ctx,
            backend=model.name,
            model=model.model,
            usage=usage,
        )

    if not ctx.items:
        return unanswered(
            "The context is empty (nothing in the index matched), so the model was not asked."
        )
    if store is None:
        raise ConfigError("an answering model needs the store (for its ledger row)")
    try:
        reply = run_call(
            model, answer_request(ctx), store, limits or BudgetConfig(), "ask", LEDGER_PATH
        )
    except ModelError as exc:
        return unanswered(
            f"The {model.name} model could not answer ({exc}); the context below is what it "
            "was given.",
            exc.usage,
        )
    if isinstance(reply, str):
        return unanswered(
            f"The {model.name} model was not asked: {reply}. The context below is what it "
            "would have been given."
        )
    try:
        text, cited, dropped = parse_answer(reply.data, ctx)
    except ModelOutputError as exc:
        return unanswered(
            f"The {model.name} model replied without a usable answer ({exc}).", reply.usage
        )
    note = f"; {dropped} citation(s) outside the context were dropped" if dropped else ""
    return Answer(
        question=ctx.question,
        answer=text,
        message=f"Answered by {model.name} ({model.model}) from {len(ctx.items)} context "
        f"items{note}.",
        context=ctx,
        backend=model.name,
        model=model.model,
        citations=cited,
        dropped_citations=dropped,
        usage=reply.usage,
    )
