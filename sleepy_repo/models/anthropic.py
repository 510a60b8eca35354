"""The Anthropic backend: notes written by Claude through the official SDK.

One call per module (or per part of a large module, split along its top-level symbols):

* ``tools`` + ``system`` are the same for every module of a run, so the prefix cache serves
  them: the system block (instructions + the repo overview) carries
  ``cache_control: {"type": "ephemeral"}``. The tool schema does not list the module's
  symbols (that would change the cached prefix per module); the symbol list is in the
  user message, and ``sleepy_repo.notes.ground`` drops citations of unknown names.
* Structured output: tool use with an ``input_schema``, ``tool_choice`` forcing the tool.
  The reply is validated here (types, required fields, sizes): anything else raises
  ``ModelOutputError``.
* Safety: deny-listed, binary and oversized files are refused; every text sent (module,
  overview) is redacted first (``sleepy_repo.redact``) and delimited as untrusted data.
* Money: the key comes from ``ANTHROPIC_API_KEY`` only, and the backend runs only when
  chosen. ``estimate`` prices a request before it is made (budgets reserve it); ``usage``
  of every call (input, output, cache read, cache write) is priced from ``[anthropic]
  prices`` and returned with the draft for the ledger.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anthropic

from sleepy_repo.config import Config
from sleepy_repo.errors import ConfigError, ModelError, ModelOutputError, ModelUnavailableError
from sleepy_repo.models.base import Estimate, NoteRequest
from sleepy_repo.notes import MODULE, DraftItem, NoteDraft, Usage
from sleepy_repo.prompt_files import Prompt, load_prompt
from sleepy_repo.redact import DenyList, fence, redact_text, unsendable
from sleepy_repo.tokens import count_tokens

KEY_ENV = "ANTHROPIC_API_KEY"
TOOL_NAME = "record_notes"
TOOL_VERSION = "1"  # bump when the schemas below change: it is part of the note key
MAX_TEXT = 1500  # characters in one claim
MAX_QUESTION = 300
MAX_CITES = 12
MAX_NAME = 300  # characters in one cited name
MAX_INPUT_CHARS = 60_000  # the whole tool input
MAX_SYMBOLS_LISTED = 400
MAX_CALLER_LINES = 20
LIMITS = {"questions": 8, "facts": 12, "cross_module": 6}

_CITES = {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 1,
    "maxItems": 6,
    "description": "qualified names from the symbol list, or <module>",
}
_CLAIM = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "cites": _CITES},
    "required": ["text", "cites"],
}
_QUESTION = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "answer": {"type": "string"},
        "cites": _CITES,
    },
    "required": ["question", "answer", "cites"],
}
_CROSS = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "modules": {"type": "array", "items": {"type": "string"}, "maxItems": 6},
        "cites": _CITES,
    },
    "required": ["text", "modules", "cites"],
}


def tool_schema(effort: str) -> dict[str, Any]:
    """The ``record_notes`` input schema of an effort level."""
    props: dict[str, Any] = {
        "summary": _CLAIM,
        "facts": {"type": "array", "items": _CLAIM, "maxItems": 3 if effort == "brief" else 8},
    }
    required = ["summary", "facts"]
    if effort in ("standard", "deep"):
        props["questions"] = {"type": "array", "items": _QUESTION, "minItems": 4, "maxItems": 6}
        required.insert(1, "questions")
    if effort == "deep":
        props["cross_module"] = {"type": "array", "items": _CROSS, "maxItems": 4}
        required.append("cross_module")
    return {"type": "object", "properties": props, "required": required}


@dataclass(frozen=True)
class Part:
    start_line: int  # 1-based, inclusive
    end_line: int
    index: int  # 1-based
    count: int
    truncated: int = 0  # lines left out because a single symbol exceeded part_tokens


def split_parts(lines: list[str], top_starts: list[int], part_tokens: int) -> list[Part]:
    """Split a module along top-level symbols into parts of at most ``part_tokens``
    (estimated). A single symbol larger than that is a part of its own, cut short."""
    n = len(lines)
    if count_tokens("\n".join(lines)) <= part_tokens or n == 0:
        return [Part(1, max(n, 1), 1, 1)]
    cuts = [1]
    for start in sorted(set(top_starts)):
        cut = start
        # decorators and comments above a symbol belong to it
        while cut - 1 > cuts[-1] and lines[cut - 2].lstrip().startswith(
            ("@", "#", "//", "/*", "*", "#[")
        ):
            cut -= 1
        if cuts[-1] < cut <= n:
            cuts.append(cut)
    bounds = [(a, b - 1) for a, b in zip(cuts, [*cuts[1:], n + 1], strict=True)]
    spans: list[tuple[int, int, int]] = []  # start, end, truncated
    cur_start, cur_end, cur_tokens = bounds[0][0], bounds[0][0] - 1, 0
    for a, b in bounds:
        t = count_tokens("\n".join(lines[a - 1 : b]))
        if cur_end >= cur_start and cur_tokens + t > part_tokens:
            spans.append((cur_start, cur_end, 0))
            cur_start, cur_tokens = a, 0
        cur_end, cur_tokens = b, cur_tokens + t
    spans.append((cur_start, cur_end, 0))
    out: list[tuple[int, int, int]] = []
    for a, b, _ in spans:
        end, tokens = a - 1, 0
        while end < b:
            t = count_tokens(lines[end])
            if tokens + t > part_tokens and end >= a:
                break
            tokens += t
            end += 1
        out.append((a, end, b - end))
    return [Part(a, b, i, len(out), cut) for i, (a, b, cut) in enumerate(out, 1)]


@dataclass(frozen=True)
class Call:
    """One ``messages.create`` request, ready to send."""

    params: dict[str, Any]
    part: Part


class AnthropicBackend:
    name = "anthropic"
    generated = True

    def __init__(
        self,
        config: Config,
        effort: str = "standard",
        *,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        a = config.anthropic
        self.settings = a
        self.effort = effort
        by_effort = {"brief": a.brief_model, "deep": a.deep_model or a.model}
        self.model = config.notes.model or by_effort.get(effort, a.model)
        if self.model not in a.prices:
            raise ConfigError(
                f"no price for model {self.model!r}: add [anthropic.prices.{self.model}] with "
                "input, output, cache_read and cache_write in USD per million tokens"
            )
        self.prices = a.prices[self.model]
        self.concurrency = a.concurrency
        self.max_tokens = a.max_tokens
        self.batch_threshold = a.batch_threshold
        self.batch_poll_seconds = a.batch_poll_seconds
        self.batch_wait_seconds = a.batch_wait_seconds
        self._prompts: dict[str, Prompt] = {
            "system": load_prompt("system"),
            "notes": load_prompt(f"notes-{effort}"),
            "module": load_prompt("module"),
            "retry": load_prompt("retry"),
            "rethink": load_prompt("rethink"),
        }
        self.prompt_version = "+".join(
            [*(p.tag for p in self._prompts.values()), f"tool@{TOOL_VERSION}"]
        )
        self.tool = {
            "name": TOOL_NAME,
            "description": "Record the notes about the module: every claim cites symbols.",
            "input_schema": tool_schema(effort),
        }
        self._deny = DenyList(config.scan.deny)
        self._max_bytes = config.scan.max_file_bytes
        self._client_factory = client_factory or anthropic.Anthropic
        self._client: Any = None
        self._lock = threading.Lock()
        self._system_cache: tuple[str, list[dict[str, Any]]] | None = None

    # -- setup -------------------------------------------------------------------------
    def ready(self) -> None:
        """Raise ``ConfigError`` unless a call could be made (the key is set)."""
        if not os.environ.get(KEY_ENV, "").strip():
            raise ConfigError(
                f"the anthropic backend needs an API key in ${KEY_ENV} (it is never read from "
                "a file); export it, or use --backend static"
            )

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self.ready()
                self._client = self._client_factory(
                    api_key=os.environ[KEY_ENV].strip(),
                    base_url=self.settings.base_url or None,  # None: $ANTHROPIC_BASE_URL
                    max_retries=self.settings.max_retries,
                    timeout=self.settings.timeout,
                )
            return self._client

    # -- requests ----------------------------------------------------------------------
    def _check_sendable(self, request: NoteRequest) -> None:
        path = request.facts.path
        if self._deny.denied(path):
            raise ModelError(f"{path} is deny-listed ([scan] deny): never sent to a model")
        why = unsendable("\n".join(request.lines).encode("utf-8", "replace"), self._max_bytes)
        if why:
            raise ModelError(f"{path} is not sent to a model: {why}")

    def _system(self, overview: str) -> list[dict[str, Any]]:
        """The cached system block: instructions + repo overview (same for every module)."""
        cached = self._system_cache
        if cached is not None and cached[0] == overview:
            return cached[1]
        text = self._prompts["system"].render(
            overview=fence(redact_text(overview or "(no overview)"), "repository_overview")
        )
        block = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
        self._system_cache = (overview, block)
        return block

    def calls(self, request: NoteRequest) -> list[Call]:
        """The requests ``write_notes`` will send, in order (one per part)."""
        self._check_sendable(request)
        facts = request.facts
        lines = redact_text("\n".join(request.lines)).split("\n")
        top = [s.start_line for s in facts.symbols if s.parent is None]
        parts = split_parts(lines, top, self.settings.part_tokens)
        system = self._system(request.overview)
        if request.previous is not None and request.attempt == 1:
            return [self._rethink_call(request, system, len(lines))]
        out = []
        for part in parts:
            body = "\n".join(lines[part.start_line - 1 : part.end_line])
            if part.truncated:
                body += f"\n... ({part.truncated} more lines of this symbol not shown)"
            label = ""
            if part.count > 1:
                label = (
                    f"\nThis is part {part.index} of {part.count} (lines {part.start_line}-"
                    f"{part.end_line}); write notes about the code shown in this part."
                )
            text = self._prompts["notes"].render(
                module=self._module_block(request, label),
                content=_file_block(facts.path, body),
            )
            if request.attempt > 1:
                text += "\n" + self._prompts["retry"].render()
            params = {
                "model": self.model,
                "max_tokens": self.max_tokens,
                "system": system,
                "tools": [self.tool],
                "tool_choice": {"type": "tool", "name": TOOL_NAME},
                "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
            }
            out.append(Call(params, part))
        return out

    def _rethink_call(
        self, request: NoteRequest, system: list[dict[str, Any]], n_lines: int
    ) -> Call:
        """Old notes + the diff + the new symbol list, instead of the whole module."""
        assert request.previous is not None
        previous = []
        for item in request.previous.items:
            cites = ", ".join(
                c.symbol or MODULE for c in item.citations if c.path == request.facts.path
            )
            head = f"Q: {item.question} A: " if item.question else ""
            stale = "[stale] " if item.stale else ""
            previous.append(f"- ({item.kind}) {stale}{head}{item.text} [{cites}]")
        fields = {
            "brief": "`summary`, `facts`",
            "standard": "`summary`, `questions` (4-6), `facts`",
            "deep": "`summary`, `questions` (4-6), `facts`, `cross_module`",
        }[self.effort]
        text = self._prompts["rethink"].render(
            module=self._module_block(request, ""),
            fields=fields,
            previous=fence(redact_text("\n".join(previous)), "previous_notes"),
            diff=_file_block(request.facts.path, redact_text(request.previous.diff)),
        )
        params = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": system,
            "tools": [self.tool],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
            "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        }
        return Call(params, Part(1, max(n_lines, 1), 1, 1))

    def _module_block(self, request: NoteRequest, part_label: str) -> str:
        facts = request.facts
        syms = [f"- `{MODULE}` (module header: doc comment and imports)"]
        for s in facts.symbols[:MAX_SYMBOLS_LISTED]:
            syms.append(f"- `{s.qualname}` ({s.kind}, lines {s.start_line}-{s.end_line})")
        if len(facts.symbols) > MAX_SYMBOLS_LISTED:
            syms.append(f"- ... and {len(facts.symbols) - MAX_SYMBOLS_LISTED} more")
        callers = []
        for qualname, found in request.callers.items():
            where = ", ".join(
                f"{c.path}:{c.line}" + (f" in {c.symbol}" if c.symbol else "") for c in found
            )
            callers.append(f"- `{qualname}` is called from {where}")
        caller_text = ""
        if callers:
            caller_text = "Call sites elsewhere (matched by name, heuristic):\n" + "\n".join(
                callers[:MAX_CALLER_LINES]
            )
        return redact_text(
            self._prompts["module"].render(
                path=facts.path,
                lang=facts.lang,
                line_count=facts.line_count,
                part=part_label,
                symbols="\n".join(syms),
                imports=", ".join(request.imports) or "none",
                imported_by=", ".join(request.imported_by) or "none",
                callers=caller_text,
            )
        )

    # -- money -------------------------------------------------------------------------
    def price(self, usage: dict[str, int], *, batch: bool = False) -> float:
        p = self.prices
        dollars = (
            usage.get("input_tokens", 0) * p["input"]
            + usage.get("output_tokens", 0) * p["output"]
            + usage.get("cache_read_input_tokens", 0) * p["cache_read"]
            + usage.get("cache_creation_input_tokens", 0) * p["cache_write"]
        ) / 1e6
        return dollars * (p["batch"] if batch else 1.0)

    def estimate_calls(self, calls: list[Call], *, batch: bool = False) -> Estimate:
        tokens = sum(count_tokens(json.dumps(c.params, ensure_ascii=False)) for c in calls)
        out = sum(int(c.params["max_tokens"]) for c in calls)
        p = self.prices
        usd = (tokens * max(p["input"], p["cache_write"]) + out * p["output"]) / 1e6
        return Estimate(tokens, out, usd * (p["batch"] if batch else 1.0), len(calls))

    def estimate(self, request: NoteRequest) -> Estimate:
        return self.estimate_calls(self.calls(request))

    def usage_of(self, raw: dict[str, Any], *, batch: bool = False) -> Usage:
        u = raw.get("usage") if isinstance(raw.get("usage"), dict) else {}
        assert isinstance(u, dict)
        counts = {
            k: v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0
            for k in (
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            )
            for v in [u.get(k)]
        }
        return Usage(
            model=str(raw.get("model") or self.model),
            input_tokens=counts["input_tokens"],
            output_tokens=counts["output_tokens"],
            cache_read_tokens=counts["cache_read_input_tokens"],
            cache_write_tokens=counts["cache_creation_input_tokens"],
            cost_usd=self.price(counts, batch=batch),
            batch=batch,
        )

    # -- calls -------------------------------------------------------------------------
    def write_notes(self, request: NoteRequest) -> NoteDraft:
        calls = self.calls(request)
        client = self.client()
        usage: list[Usage] = []
        drafts: list[list[DraftItem]] = []
        for call in calls:
            raw = self.message(client.messages.create, call.params, tuple(usage))
            usage.append(self.usage_of(raw))
            try:
                drafts.append(parse_reply(raw, self.effort))
            except ModelOutputError as exc:
                raise ModelOutputError(str(exc), usage=tuple(usage)) from None
        return NoteDraft(items=merge_parts(drafts), generated=True, usage=tuple(usage))

    def draft_from_replies(self, replies: list[dict[str, Any]], *, batch: bool) -> NoteDraft:
        """One module's draft from the replies to its calls (Message Batches results)."""
        usage = tuple(self.usage_of(raw, batch=batch) for raw in replies)
        try:
            drafts = [parse_reply(raw, self.effort) for raw in replies]
        except ModelOutputError as exc:
            raise ModelOutputError(str(exc), usage=usage) from None
        return NoteDraft(items=merge_parts(drafts), generated=True, usage=usage)

    # -- Message Batches (half price; for backlogs) -------------------------------------
    def submit_batch(self, requests: list[dict[str, Any]]) -> str:
        """Create a batch of ``{"custom_id", "params"}`` requests; its id."""
        batch = self._api(lambda: self.client().messages.batches.create(requests=requests), "model")
        return str(batch.id)

    def batch_status(self, batch_id: str) -> str:
        """``in_progress``, ``canceling`` or ``ended``."""
        batch = self._api(lambda: self.client().messages.batches.retrieve(batch_id), "batch")
        return str(batch.processing_status)

    def batch_results(self, batch_id: str) -> dict[str, tuple[str, dict[str, Any] | None]]:
        """custom_id -> (result type, the message when it succeeded), of an ended batch."""
        entries = self._api(lambda: list(self.client().messages.batches.results(batch_id)), "batch")
        out: dict[str, tuple[str, dict[str, Any] | None]] = {}
        for entry in entries:
            d = entry.to_dict()
            result = d.get("result") if isinstance(d.get("result"), dict) else {}
            assert isinstance(result, dict)
            message = result.get("message")
            out[str(d.get("custom_id"))] = (
                str(result.get("type")),
                message if isinstance(message, dict) else None,
            )
        return out

    def message(self, create: Any, params: dict[str, Any], billed: tuple[Usage, ...]) -> Any:
        message = self._api(lambda: create(**params), params["model"], billed)
        try:
            raw = message.to_dict()
        except Exception as exc:  # a body that is not a message at all
            raise ModelOutputError(f"unreadable API response: {exc}", usage=billed) from None
        if not isinstance(raw, dict):
            raise ModelOutputError("unreadable API response: not an object", usage=billed)
        return raw

    def _api(self, call: Callable[[], Any], what: str, billed: tuple[Usage, ...] = ()) -> Any:
        """Run one SDK call (the SDK retries transient failures), mapping its errors."""
        try:
            return call()
        except anthropic.APITimeoutError as exc:
            raise ModelUnavailableError(f"the API timed out: {exc}", usage=billed) from None
        except anthropic.APIConnectionError as exc:
            raise ModelUnavailableError(
                f"cannot reach the API ({_cause(exc)})", usage=billed
            ) from None
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            raise ConfigError(
                f"the Anthropic API refused the key in ${KEY_ENV} ({exc.status_code}): "
                f"{_api_message(exc)}"
            ) from None
        except anthropic.NotFoundError as exc:
            raise ConfigError(
                f"the Anthropic API answered 404 for {what!r}: check [anthropic] model and "
                f"base_url ({_api_message(exc)})"
            ) from None
        except anthropic.APIStatusError as exc:
            if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
                raise ModelUnavailableError(
                    f"the API answered {exc.status_code} after retries: {_api_message(exc)}",
                    usage=billed,
                ) from None
            raise ModelError(
                f"the API refused the request ({exc.status_code}): {_api_message(exc)}",
                usage=billed,
            ) from None
        except anthropic.APIResponseValidationError as exc:
            raise ModelOutputError(f"unreadable API response: {exc}", usage=billed) from None
        except anthropic.APIError as exc:
            raise ModelUnavailableError(f"API error: {exc}", usage=billed) from None
        except anthropic.AnthropicError as exc:  # e.g. a batch without results yet
            raise ModelUnavailableError(f"API error: {exc}", usage=billed) from None
        except json.JSONDecodeError as exc:  # a garbled body: nothing usable was received
            raise ModelUnavailableError(
                f"unreadable API response (not JSON: {exc})", usage=billed
            ) from None
        except ValueError as exc:  # e.g. the SDK refusing a huge non-streaming max_tokens
            raise ConfigError(f"the anthropic SDK refused the request: {exc}") from None


# -- replies -------------------------------------------------------------------------------
def _file_block(path: str, body: str) -> str:
    safe_path = path.replace('"', "%22").replace("<", "%3C").replace(">", "%3E")
    return (
        f'<untrusted_file path="{safe_path}">\n{fence(body, "untrusted_file")}\n</untrusted_file>'
    )


def _cause(exc: BaseException) -> str:
    inner = exc.__cause__ or exc.__context__
    return f"{type(inner).__name__}: {inner}" if inner else str(exc)


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
    return str(exc)[:300]


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ModelOutputError(f"{where} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ModelOutputError(f"{where} is empty")
    if len(text) > limit:
        raise ModelOutputError(f"{where} is {len(text):,} characters (limit {limit:,})")
    return text


def _cites(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ModelOutputError(f"{where}.cites must be a non-empty list of names")
    if len(value) > MAX_CITES:
        raise ModelOutputError(f"{where}.cites has {len(value)} names (limit {MAX_CITES})")
    return tuple(_text(v, f"{where}.cites[]", MAX_NAME).strip("`") for v in value)


def _objects(data: dict[str, Any], key: str, required: bool) -> list[dict[str, Any]]:
    if key not in data:
        if required:
            raise ModelOutputError(f"the tool input lacks `{key}`")
        return []
    value = data[key]
    if not isinstance(value, list):
        raise ModelOutputError(f"`{key}` must be a list, got {type(value).__name__}")
    if len(value) > LIMITS[key]:
        raise ModelOutputError(f"`{key}` has {len(value)} entries (limit {LIMITS[key]})")
    for i, v in enumerate(value):
        if not isinstance(v, dict):
            raise ModelOutputError(f"`{key}[{i}]` must be an object")
    return value


def _about(cites: tuple[str, ...]) -> str | None:
    return next((c for c in cites if c != MODULE), None)


def parse_reply(raw: dict[str, Any], effort: str) -> list[DraftItem]:
    """The draft items of one ``messages.create`` reply; ``ModelOutputError`` if the reply
    is not a complete, well-formed ``record_notes`` call."""
    content = raw.get("content")
    if not isinstance(content, list):
        raise ModelOutputError("the reply has no content")
    uses = [
        b
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == TOOL_NAME
    ]
    if raw.get("stop_reason") == "max_tokens":
        raise ModelOutputError("the reply was cut at max_tokens; raise [anthropic] max_tokens")
    if not uses:
        raise ModelOutputError(f"the reply did not call {TOOL_NAME}")
    data = uses[0].get("input")
    if not isinstance(data, dict):
        raise ModelOutputError(f"the {TOOL_NAME} input is not an object")
    if len(json.dumps(data, ensure_ascii=False)) > MAX_INPUT_CHARS:
        raise ModelOutputError(f"the {TOOL_NAME} input exceeds {MAX_INPUT_CHARS:,} characters")
    summary = data.get("summary")
    if not isinstance(summary, dict):
        raise ModelOutputError("`summary` must be an object with text and cites")
    s_cites = _cites(summary.get("cites"), "summary")
    items = [
        DraftItem(
            kind="summary", text=_text(summary.get("text"), "summary.text", MAX_TEXT), cites=s_cites
        )
    ]
    for i, q in enumerate(_objects(data, "questions", effort != "brief")):
        where = f"questions[{i}]"
        cites = _cites(q.get("cites"), where)
        items.append(
            DraftItem(
                kind="qa",
                question=_text(q.get("question"), f"{where}.question", MAX_QUESTION),
                text=_text(q.get("answer"), f"{where}.answer", MAX_TEXT),
                cites=cites,
                symbol=_about(cites),
            )
        )
    for i, f in enumerate(_objects(data, "facts", True)):
        where = f"facts[{i}]"
        cites = _cites(f.get("cites"), where)
        items.append(
            DraftItem(
                kind="fact",
                text=_text(f.get("text"), f"{where}.text", MAX_TEXT),
                cites=cites,
                symbol=_about(cites),
            )
        )
    for i, c in enumerate(_objects(data, "cross_module", False)):
        where = f"cross_module[{i}]"
        cites = _cites(c.get("cites"), where)
        modules = c.get("modules", [])
        if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
            raise ModelOutputError(f"{where}.modules must be a list of paths")
        text = _text(c.get("text"), f"{where}.text", MAX_TEXT)
        if modules:
            text = f"With {', '.join(m[:MAX_NAME] for m in modules[:6])}: {text}"
        items.append(DraftItem(kind="fact", text=text, cites=cites, symbol=_about(cites)))
    return items


def merge_parts(parts: list[list[DraftItem]]) -> list[DraftItem]:
    """One module's items from the items of its parts: the first part's summary is the
    summary (the others' become facts); questions interleave, at most 6; facts follow."""
    if len(parts) == 1:
        return parts[0]
    summaries = [i for p in parts for i in p if i.kind == "summary"]
    questions = [[i for i in p if i.kind == "qa"] for p in parts]
    facts = [i for p in parts for i in p if i.kind == "fact"]
    out = summaries[:1]
    interleaved = [q for round_ in _zip_longest(questions) for q in round_]
    out.extend(interleaved[:6])
    out.extend(DraftItem(kind="fact", text=s.text, cites=s.cites) for s in summaries[1:])
    out.extend(facts)
    return out


def _zip_longest(lists: list[list[DraftItem]]) -> list[list[DraftItem]]:
    longest = max((len(x) for x in lists), default=0)
    return [[x[i] for x in lists if i < len(x)] for i in range(longest)]
