"""Structured model calls: a system prompt, a user message and a JSON schema in, the reply's
JSON object and its ``usage`` out. ``ask`` answers, the bench's reader and the deep repo
overview (``sleepy_repo.overview``) all call models this way.

* anthropic: tool use (``tools=[{name, input_schema}]``, ``tool_choice`` forcing it);
* local: ``response_format={"type": "json_object", "schema": ...}`` (a llama.cpp grammar),
  so a citation field that is an ``enum`` cannot name anything else;
* fake: a deterministic reply built from the request (tests, benchmarks of the plumbing).

``run_call`` reserves a call's estimate against ``[budget]`` first (``budget.Budget``) and
settles it to the real usage in the ledger, so ``status`` spending includes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sleepy_repo.budget import Budget, Call
from sleepy_repo.config import BudgetConfig, Config
from sleepy_repo.errors import ConfigError, ModelError, ModelOutputError
from sleepy_repo.jobs import record_usage
from sleepy_repo.models import get_backend
from sleepy_repo.models.base import Estimate
from sleepy_repo.notes import Usage
from sleepy_repo.prompt_files import load_prompt
from sleepy_repo.store import NoteStore
from sleepy_repo.tokens import count_tokens

DEFAULT_MAX_TOKENS = 1024


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
    max_tokens: int = DEFAULT_MAX_TOKENS


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
        return _complete_part(text)
    return data if isinstance(data, dict) else None


def _complete_part(text: str) -> dict[str, Any] | None:
    """The longest prefix of a cut reply that ends with a complete object or array, with
    the brackets still open closed (a small model rambling in one claim of a list keeps the
    claims before it), or None."""
    stack: list[str] = []
    ends: list[tuple[int, str]] = []  # (index after a closing bracket, closers still owed)
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return None
            ends.append((i + 1, "".join(reversed(stack))))
    for end, closers in reversed(ends):
        try:
            data = json.loads(text[:end] + closers)
        except json.JSONDecodeError:
            continue
        return data if isinstance(data, dict) else None
    return None


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
        elif request.task == "overview":
            first = list(request.choices[:4])
            data = {
                "summary": {
                    "text": f"[fake] The repository is built around {first}.",
                    "cites": first[:3],
                },
                "questions": [
                    {
                        "question": f"[fake] Where is {c} handled?",
                        "answer": f"[fake] In {c}.",
                        "cites": [c],
                    }
                    for c in first
                ],
                "facts": [{"text": f"[fake] {first[0]} is central.", "cites": first[:1]}]
                if first
                else [],
            }
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

    def __init__(self, backend: Any) -> None:
        self.backend = backend  # an AnthropicBackend
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

        estimate: Estimate = self.backend.estimate_calls(
            [Call(self.params(request), Part(1, 1, 1, 1))]
        )
        return estimate

    def call(self, request: StructuredRequest) -> StructuredReply:
        raw = self.backend.message(  # the backend's SDK call and error mapping
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

    def __init__(self, backend: Any) -> None:
        self.backend = backend  # a LocalBackend
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
        text, finish, usage = self.backend.complete(  # the backend's one streamed call
            llm, self.chat(request), request.schema, (), request.max_tokens
        )
        try:
            data = _object(text, finish)
        except ModelOutputError as exc:
            raise ModelOutputError(str(exc), usage=(usage,)) from None
        return StructuredReply(data=data, usage=(usage,))


def get_model(name: str | None, config: Config | None = None) -> StructuredModel | None:
    """The structured model ``name`` (None for ``static``/None: no model), on a note
    backend of that name built for the ``standard`` effort. No call is made."""
    if name in (None, "", "static"):
        return None
    config = config or Config()
    return model_for(get_backend(name, config, "standard"), config)


def model_for(backend: Any, config: Config) -> StructuredModel | None:
    """The structured model of a note backend, sharing its client or loaded model (None for
    the static backend)."""
    if not getattr(backend, "generated", False):
        return None
    if backend.name == "anthropic":
        return AnthropicModel(backend)
    if backend.name == "local":
        return LocalModel(backend)
    if backend.name == "fake":
        return FakeModel()
    raise ConfigError(f"backend {backend.name!r} makes no structured calls")


def run_call(
    model: StructuredModel,
    request: StructuredRequest,
    store: NoteStore,
    limits: BudgetConfig,
    reason: str,
    path: str,
    *,
    budget: Budget | None = None,
) -> StructuredReply | str:
    """One call under the budget, recorded in the ledger; a string says why no call was
    made (the budget refused it). Billed calls that failed are recorded, then re-raised."""
    budget = budget or Budget(store, limits)
    res = budget.reserve(model.estimate(request), call=Call(model.name, model.model, path, reason))
    if res is None:
        return budget.refused or "the budget refused the call"
    try:
        reply = model.call(request)
    except ModelError as exc:
        if exc.usage:
            with store.write() as conn:
                record_usage(store, conn, model, path, exc.usage, reason)
                budget.settle(conn, res, exc.usage)
        else:
            budget.release(res)
        raise
    except BaseException:
        budget.release(res)
        raise
    with store.write() as conn:
        record_usage(store, conn, model, path, reply.usage, reason)
        budget.settle(conn, res, reply.usage)
    return reply
