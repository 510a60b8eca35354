"""Ask: a model answers a question from its packed context, citing the context's items.

The model is chosen explicitly, like a note backend (``[notes] backend`` or ``--backend``):
``anthropic``, ``local`` or ``fake`` (deterministic, for tests). ``static`` means no model:
the answer is ``None``, a message says why, and the cited context is returned in full,
which is what an agent (or a person) answers from.

One call per question, through a *structured model* (``StructuredModel``): a system prompt,
a user message and a JSON schema in, the reply's JSON object and its ``usage`` out.

* anthropic: tool use (``tools=[{name, input_schema}]``, ``tool_choice`` forcing it);
* local: ``response_format={"type": "json_object", "schema": ...}`` (a llama.cpp grammar),
  where every citation is an ``enum`` of the context's item ids: a false citation is
  impossible;
* fake: a deterministic reply built from the request (tests, benchmarks of the plumbing).

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

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sleepy_repo.budget import Budget
from sleepy_repo.config import BudgetConfig, Config
from sleepy_repo.errors import ConfigError, ModelError, ModelOutputError
from sleepy_repo.jobs import record_usage
from sleepy_repo.models.base import Estimate
from sleepy_repo.notes import Usage
from sleepy_repo.prompt_files import load_prompt
from sleepy_repo.redact import redact_text
from sleepy_repo.retrieve import Context, ContextItem
from sleepy_repo.store import NoteStore
from sleepy_repo.tokens import count_tokens

SCHEMA_VERSION = 1
ANSWER_TOOL = "record_answer"
LEDGER_PATH = "(ask)"  # the ledger's path column for ask calls (no one module)
MAX_CITATIONS = 5
MAX_ANSWER_CHARS = 4000
ANSWER_MAX_TOKENS = 1024
MODELS = ("anthropic", "local", "fake")  # "static" (or None) = no model
NO_MODEL = (
    "No answering model is configured, so sleepy-repo gives no answer of its own: the context "
    "below holds the notes and code most relevant to the question, each cited by file and "
    "lines. Answer from it, and open the cited lines to verify. (Choose a model with "
    "--backend anthropic|local or [notes] backend.)"
)


# -- structured models ---------------------------------------------------------------------
@dataclass(frozen=True)
class StructuredRequest:
    """One structured call: the prompts, the reply's schema and what it may cite."""

    task: str  # "answer" (ask) or "locate" (the bench's reader)
    system: str
    user: str
    tool: str  # the tool (anthropic) / JSON object (local) name
    description: str
    schema: dict[str, Any]  # the reply's JSON schema
    question: str
    choices: tuple[str, ...]  # what the reply may cite (item ids, or file paths)
    max_tokens: int = ANSWER_MAX_TOKENS


@dataclass(frozen=True)
class StructuredReply:
    data: dict[str, Any]
    usage: tuple[Usage, ...]


class StructuredModel(Protocol):
    name: str
    model: str

    def ready(self) -> None:
        """Raise ``ConfigError`` unless a call could be made."""
        ...

    def estimate(self, request: StructuredRequest) -> Estimate:
        """Tokens and dollars a budget reserves before the call."""
        ...

    def call(self, request: StructuredRequest) -> StructuredReply:
        """The reply's JSON object (``ModelOutputError`` when there is none) and usage."""
        ...


def _object(text: str, finish: str | None) -> dict[str, Any]:
    if finish == "length":
        salvaged = _salvage(text)
        if salvaged is None:
            raise ModelOutputError("the reply was cut at max_tokens before its JSON was complete")
        return salvaged
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelOutputError(f"the reply is not JSON ({exc}): {text[:120]!r}") from None
    if not isinstance(data, dict):
        raise ModelOutputError("the reply is not a JSON object")
    return data


def _salvage(text: str) -> dict[str, Any] | None:
    """A reply cut inside its last string (a small model rambling in ``answer``, which the
    schema puts last): that string closed with an ellipsis, or None."""
    body = text.rstrip()
    if body.endswith("\\") and not body.endswith("\\\\"):
        body = body[:-1]
    try:
        data = json.loads(body + '…"}')
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


class FakeModel:
    """Deterministic replies for tests: ``answer`` cites the first two choices; ``locate``
    names the first two (the first two distinct files of the context). Usage is the
    estimator's count of the prompts and the reply; it costs nothing. ``handler`` scripts
    other replies (for example citations that are not in the context)."""

    name = "fake"
    model = "fake-1"

    def __init__(
        self, handler: Callable[[StructuredRequest], dict[str, Any]] | None = None
    ) -> None:
        self.handler = handler
        self.requests: list[StructuredRequest] = []

    def ready(self) -> None:
        return None

    def estimate(self, request: StructuredRequest) -> Estimate:
        return Estimate(count_tokens(request.system + request.user), request.max_tokens, 0.0, 1)

    def call(self, request: StructuredRequest) -> StructuredReply:
        self.requests.append(request)
        if self.handler is not None:
            data = self.handler(request)
        elif request.task == "locate":
            data = {"files": list(request.choices[:2])}
        else:
            cited = list(request.choices[:2])
            data = {
                "answer": f"[fake] The context answers {request.question!r} in "
                + (" and ".join(cited) if cited else "no item")
                + ".",
                "citations": cited,
            }
        usage = Usage(
            model=self.model,
            input_tokens=count_tokens(request.system + request.user),
            output_tokens=count_tokens(json.dumps(data)),
        )
        return StructuredReply(data=data, usage=(usage,))


class AnthropicModel:
    """Structured calls through the Anthropic backend's client: tool use with an
    ``input_schema``, ``tool_choice`` forcing it; the backend's retries, timeouts, error
    mapping and prices."""

    name = "anthropic"

    def __init__(self, config: Config) -> None:
        from sleepy_repo.models.anthropic import AnthropicBackend

        self.backend = AnthropicBackend(config, "standard")
        self.model = self.backend.model

    def ready(self) -> None:
        self.backend.ready()

    def params(self, request: StructuredRequest) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_tokens": min(request.max_tokens, self.backend.max_tokens),
            "system": [{"type": "text", "text": request.system}],
            "tools": [
                {
                    "name": request.tool,
                    "description": request.description,
                    "input_schema": request.schema,
                }
            ],
            "tool_choice": {"type": "tool", "name": request.tool},
            "messages": [{"role": "user", "content": [{"type": "text", "text": request.user}]}],
        }

    def estimate(self, request: StructuredRequest) -> Estimate:
        from sleepy_repo.models.anthropic import Call, Part

        return self.backend.estimate_calls([Call(self.params(request), Part(1, 1, 1, 1))])

    def call(self, request: StructuredRequest) -> StructuredReply:
        raw = self.backend._message(  # the backend's SDK call and error mapping
            self.backend.client().messages.create, self.params(request), ()
        )
        usage = (self.backend.usage_of(raw),)
        if raw.get("stop_reason") == "max_tokens":
            raise ModelOutputError("the reply was cut at max_tokens", usage=usage)
        content = raw.get("content") if isinstance(raw.get("content"), list) else []
        for block in content:
            if (
                isinstance(block, dict)
                and block.get("type") == "tool_use"
                and block.get("name") == request.tool
                and isinstance(block.get("input"), dict)
            ):
                return StructuredReply(data=block["input"], usage=usage)
        raise ModelOutputError(f"the reply did not call {request.tool}", usage=usage)


class LocalModel:
    """Structured calls to the local GGUF model: a two-message chat with
    ``response_format={"type": "json_object", "schema": ...}``, through the local backend
    (its loaded model, lock, cancelling and token counts)."""

    name = "local"

    def __init__(self, config: Config) -> None:
        from sleepy_repo.models.local import LocalBackend

        self.backend = LocalBackend(config, "brief")
        self.model = self.backend.model
        self._reply = load_prompt("reply-json")

    def ready(self) -> None:
        self.backend.ready()

    def chat(self, request: StructuredRequest) -> list[dict[str, str]]:
        user = request.user + "\n\n" + self._reply.render(tool=request.tool)
        return [{"role": "system", "content": request.system}, {"role": "user", "content": user}]

    def estimate(self, request: StructuredRequest) -> Estimate:
        tokens = sum(count_tokens(m["content"]) + 8 for m in self.chat(request))
        return Estimate(tokens, request.max_tokens, 0.0, 1)

    def call(self, request: StructuredRequest) -> StructuredReply:
        llm = self.backend.llama()
        text, finish, usage = self.backend._complete(  # the backend's one streamed call
            llm, self.chat(request), request.schema, ()
        )
        try:
            data = _object(text, finish)
        except ModelOutputError as exc:
            raise ModelOutputError(str(exc), usage=(usage,)) from None
        return StructuredReply(data=data, usage=(usage,))


def get_model(name: str | None, config: Config | None = None) -> StructuredModel | None:
    """The structured model ``name`` (None for ``static``/None: no model). No call is made."""
    if name in (None, "", "static"):
        return None
    config = config or Config()
    if name == "fake":
        return FakeModel()
    if name == "anthropic":
        return AnthropicModel(config)
    if name == "local":
        return LocalModel(config)
    raise ConfigError(
        f"no answering model {name!r}; available: static (no model), {', '.join(MODELS)}"
    )


def run_call(
    model: StructuredModel,
    request: StructuredRequest,
    store: NoteStore,
    limits: BudgetConfig,
    reason: str,
) -> StructuredReply | str:
    """One call under the budget, recorded in the ledger; a string says why no call was
    made (the budget refused it). Billed calls that failed are recorded, then re-raised."""
    budget = Budget(store, limits)
    res = budget.reserve(model.estimate(request))
    if res is None:
        return budget.refused or "the budget refused the call"
    try:
        reply = model.call(request)
    except ModelError as exc:
        if exc.usage:
            with store.write() as conn:
                record_usage(store, conn, model, LEDGER_PATH, exc.usage, reason)
                budget.settle(conn, res, exc.usage)
        else:
            budget.release(res)
        raise
    except BaseException:
        budget.release(res)
        raise
    with store.write() as conn:
        record_usage(store, conn, model, LEDGER_PATH, reply.usage, reason)
        budget.settle(conn, res, reply.usage)
    return reply


# -- the answer ----------------------------------------------------------------------------
def item_id(item: ContextItem) -> str:
    return f"{item.path}:{item.start_line}-{item.end_line}"


def _fence(text: str) -> str:
    return re.sub(r"</(item|untrusted_context)", r"<\\/\1", text, flags=re.IGNORECASE)


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
            f'generated="{str(item.generated).lower()}"{flags}>'
        )
        blocks.append(f"{head}\n{_fence(redact_text(item.text))}\n</item>")
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
        question=_fence(redact_text(ctx.question)),
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
        context's locations): what editor clients show as is."""
        if self.answer is None:
            lines = [self.message, ""]
            lines += [
                f"- `{i.path}:{i.start_line}` [{i.kind}]{' (stale)' if i.stale else ''} "
                + i.text.splitlines()[0][:160]
                for i in self.context.items
                if i.text.strip()
            ]
            return "\n".join(lines).rstrip() + "\n"
        lines = [self.answer.strip(), ""]
        if self.citations:
            lines.append("Sources:")
            for i in self.citations:
                what = f" `{i.symbol}`" if i.symbol else ""
                stale = " (stale)" if i.stale else ""
                lines.append(f"- `{i.path}:{i.start_line}`{what} [{i.kind}]{stale}")
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
        reply = run_call(model, answer_request(ctx), store, limits or BudgetConfig(), "ask")
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
