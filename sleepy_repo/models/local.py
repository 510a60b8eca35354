"""The local backend: notes written by a GGUF model on this machine, through llama-cpp-python.

Chosen only explicitly (``[notes] backend = "local"`` or ``--backend local``); it needs the
``[local]`` extra (``pip install 'sleepy-repo[local]'``) and a model file, ``[local]
model_path`` (default: the Qwen2.5-Coder-0.5B-Instruct Q4 that ``scripts/fetch_model.py``
puts in ``$SLEEPY_REPO_MODEL_DIR`` or ``~/.cache/sleepy-repo/models``). Nothing leaves the
machine; a call costs time, not money.

* Requests are the Anthropic backend's (``AnthropicBackend.calls``): the same prompt files,
  symbol list, redaction, deny list, size limits, splitting of large modules and rethink
  requests (old notes + diff), plus ``prompts/local.md`` (reply with JSON only). The system
  block and the user message become a two-message chat.
* Structured output: ``Llama.create_chat_completion(..., response_format={"type":
  "json_object", "schema": notes_schema(effort, names)})``. llama.cpp turns the schema into
  a grammar, so the reply is JSON of that shape, and every ``cites`` entry is an ``enum`` of
  the module's real symbol names (and ``<module>``): the model cannot cite a symbol that
  does not exist. The reply is still validated (``anthropic.parse_reply``) and grounded like
  any other backend's; a garbled or cut-off reply raises ``ModelOutputError``.
* The model runs in a child process (``sleepy_repo.models.llama_process``), loaded once and
  kept between modules (``concurrency = 1``), so llama.cpp reuses the evaluated prompt prefix
  (the system block) from one module to the next. A native crash, a stall (no token and no
  heartbeat for ``[local] stall_seconds``) or an out-of-memory kill raises
  ``ModelCrashedError`` (the job stays queued; ``jobs`` fails a module after three crashes);
  the next call starts a new child. Three crashes in a row disable the backend in this
  process (``disabled_reason``) until it restarts. A build with code paths known to crash
  (AMX, see ``llama_process.UNSAFE_FLAGS``) is refused with the command that rebuilds it.
* Usage: prompt and completion tokens counted with the model's own tokenizer go to the
  ledger with a cost of 0.
* Cancelling: generation streams (``stream=True``). Before a call, while waiting and between
  chunks the backend calls ``cancel_check`` (an attribute, ``Callable[[], bool] | None``; for
  example ``threading.Event().is_set``); when it returns True, generation stops and
  ``ModelCancelledError`` (a ``ModelUnavailableError``: the job stays queued) is raised. The
  child's llama.cpp abort callback sees the cancel too, so a long prompt evaluation stops
  within one decoding step. Set it on the backend, or pass ``cancel_check=`` to the
  constructor. ``llama_factory`` (tests' stand-ins) runs a fake model in this process instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from sleepy_repo.config import (
    LOCAL_MODEL_FILE,
    AnthropicConfig,
    Config,
    LocalConfig,
    NotesConfig,
    default_model_dir,
)
from sleepy_repo.errors import (
    ConfigError,
    ModelCancelledError,
    ModelCrashedError,
    ModelError,
    ModelOutputError,
    ModelUnavailableError,
)
from sleepy_repo.models.anthropic import TOOL_NAME, AnthropicBackend, merge_parts, parse_reply
from sleepy_repo.models.base import Estimate, NoteRequest
from sleepy_repo.models.llama_process import PORTABLE_BUILD, LlamaProcess, unsafe_build
from sleepy_repo.notes import MODULE, DraftItem, NoteDraft, Usage
from sleepy_repo.parse.facts import ModuleFacts
from sleepy_repo.prompt_files import load_prompt
from sleepy_repo.tokens import count_tokens

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"  # bump when notes_schema changes: it is part of the note key
MAX_TEXT_CHARS = 600  # one claim; longer texts are cut (not rejected)
MAX_QUESTION_CHARS = 200
MAX_CITES = 3
MAX_ENUM = 400  # symbols offered for citation (the Anthropic prompt lists as many)
MAX_CRASHES_IN_A_ROW = 3  # then the backend is off until the process restarts
INSTALL_HINT = (
    "CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --no-cache-dir 'sleepy-repo[local]' (builds "
    "llama.cpp from source in a few minutes; the flag makes a build that runs on any x86-64 CPU)"
)
FETCH_HINT = "python scripts/fetch_model.py"

# what each effort asks for: (min, max) entries; None = not asked
_SHAPE: dict[str, dict[str, tuple[int, int] | None]] = {
    "brief": {"questions": None, "facts": (0, 3), "cross_module": None},
    "standard": {"questions": (3, 5), "facts": (1, 5), "cross_module": None},
    "deep": {"questions": (4, 6), "facts": (1, 6), "cross_module": (0, 3)},
}


def citable_names(facts: ModuleFacts) -> list[str]:
    """What a claim about ``facts`` may cite: ``<module>`` and the qualified names of its
    symbols (the first ``MAX_ENUM``, as listed in the prompt), without duplicates."""
    names = [MODULE]
    seen = {MODULE}
    for s in facts.symbols[:MAX_ENUM]:
        if s.qualname not in seen:
            seen.add(s.qualname)
            names.append(s.qualname)
    return names


def notes_schema(effort: str, names: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of a reply for one module at ``effort``: the ``record_notes`` fields,
    every citation an ``enum`` of ``names``, every text non-empty.

    Texts have no ``maxLength``: llama.cpp expands a bounded repetition into a grammar that
    made sampling about 3x slower here; ``max_tokens`` bounds the reply and
    ``parse_json_reply`` cuts texts that are too long."""
    if effort not in _SHAPE:
        raise ConfigError(f"unknown effort {effort!r}; known: {', '.join(_SHAPE)}")
    cites = {
        "type": "array",
        "items": {"type": "string", "enum": list(names)},
        "minItems": 1,
        "maxItems": MAX_CITES,
    }

    text = {"type": "string", "minLength": 1}

    def obj(props: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": props,
            "required": list(props),
            "additionalProperties": False,
        }

    def array(item: dict[str, Any], bounds: tuple[int, int]) -> dict[str, Any]:
        return {"type": "array", "items": item, "minItems": bounds[0], "maxItems": bounds[1]}

    claim = obj({"text": text, "cites": cites})
    shape = _SHAPE[effort]
    props: dict[str, Any] = {"summary": claim}
    if shape["questions"]:
        question = obj(
            {
                "question": text,
                "answer": text,
                "cites": cites,
            }
        )
        props["questions"] = array(question, shape["questions"])
    props["facts"] = array(claim, shape["facts"] or (0, 0))
    if shape["cross_module"]:
        cross = obj(
            {
                "text": text,
                "modules": {"type": "array", "items": text, "maxItems": 3},
                "cites": cites,
            }
        )
        props["cross_module"] = array(cross, shape["cross_module"])
    return obj(props)


def resolve_model_path(settings: LocalConfig) -> Path:
    """``[local] model_path``, or the default fetched model."""
    if settings.model_path.strip():
        return Path(settings.model_path.strip()).expanduser()
    return default_model_dir() / LOCAL_MODEL_FILE


def check_model_file(path: Path) -> None:
    """Raise ``ConfigError`` (saying what to do) unless ``path`` is a readable GGUF file."""
    where = "[local] model_path" if path.name != LOCAL_MODEL_FILE else "the default model"
    if not path.exists():
        hint = (
            f"run `{FETCH_HINT}` to fetch it"
            if path.name == LOCAL_MODEL_FILE
            else f"fix [local] model_path, or clear it and run `{FETCH_HINT}`"
        )
        raise ConfigError(f"{where} {path} does not exist: {hint}")
    if not path.is_file():
        raise ConfigError(f"{where} {path} is not a file: point [local] model_path at a .gguf")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ConfigError(f"{where} {path} cannot be read: {exc.strerror or exc}") from None
    if magic != b"GGUF":
        raise ConfigError(
            f"{where} {path} is not a GGUF model file (it does not start with 'GGUF'); "
            f"point [local] model_path at a .gguf, or run `{FETCH_HINT}`"
        )


_DISABLED: dict[str, str] = {}  # model path -> why the backend is off in this process


def disabled_reason(model_path: Path | None = None) -> str:
    """Why the local backend is off in this process (for ``model_path``, or any), or ""."""
    if model_path is None:
        return next(iter(_DISABLED.values()), "")
    return _DISABLED.get(str(model_path), "")


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError(
            f"the local backend needs llama-cpp-python ({exc}): {INSTALL_HINT}"
        ) from None
    except OSError as exc:  # the package is there but its shared library is not loadable
        raise ConfigError(f"llama-cpp-python is installed but cannot load: {exc}") from None
    system = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    bad = unsafe_build(system)
    if bad:
        raise ConfigError(
            f"this llama-cpp-python was built with {', '.join(bad)} on, whose code crashes on "
            f"this CPU with the local model; rebuild it portable: {PORTABLE_BUILD}"
        )
    return llama_cpp


class LocalBackend:
    name = "local"
    generated = True
    concurrency = 1  # one llama context; calls run one at a time

    def __init__(
        self,
        config: Config,
        effort: str = "standard",
        *,
        cancel_check: Callable[[], bool] | None = None,
        llama_factory: Callable[..., Any] | None = None,
    ) -> None:
        s = config.local
        self.settings = s
        self.effort = effort
        self.model_path = resolve_model_path(s)
        self.model = s.model or self.model_path.name.removesuffix(".gguf")
        self.max_tokens = s.max_tokens
        self.cancel_check = cancel_check
        # requests are built exactly as for Anthropic (its SDK client is never created);
        # only its splitting size is ours, and its model/prices don't matter here
        builder_config = dataclasses.replace(
            config,
            notes=NotesConfig(effort=effort),
            anthropic=AnthropicConfig(part_tokens=s.part_tokens, max_tokens=s.max_tokens),
        )
        self._builder = AnthropicBackend(builder_config, effort)
        self._reply_prompt = load_prompt("local")
        self.prompt_version = "+".join(
            [self._builder.prompt_version, self._reply_prompt.tag, f"schema@{SCHEMA_VERSION}"]
        )
        self._llama_factory = llama_factory
        self._llm: Any = None
        self._lock = threading.Lock()
        self._crashes_in_a_row = 0

    # -- setup -------------------------------------------------------------------------
    def ready(self) -> None:
        """Raise ``ConfigError`` unless a call could be made: llama-cpp-python imports and
        the model file is a readable GGUF (the model is not loaded yet)."""
        if self._llama_factory is None:
            _import_llama()
        check_model_file(self.model_path)

    def llama(self) -> Any:
        """The loaded model (loaded on first use, then kept; a child process that died is
        started again)."""
        with self._lock:
            reason = disabled_reason(self.model_path)
            if reason:
                raise ConfigError(reason)
            if self._llm is not None and not getattr(self._llm, "alive", True):
                self._llm = None
            if self._llm is None:
                self.ready()
                try:
                    self._llm = self._load()
                except ModelCrashedError as exc:
                    self._crashed(exc)
                    raise
            return self._llm

    def _load(self) -> Any:
        threads = self.settings.n_threads or os.cpu_count() or 1
        load = {
            "model_path": str(self.model_path),
            "n_ctx": self.settings.n_ctx,
            "n_threads": threads,
            "n_threads_batch": threads,
            "n_batch": self.settings.n_batch,
            "seed": self.settings.seed,
            "verbose": True,
        }
        if self._llama_factory is None:
            return LlamaProcess(
                load, stall_seconds=self.settings.stall_seconds, cancel_check=self._cancelled
            )
        # a stand-in in this process (tests): load it with Python's stderr captured
        log = io.StringIO()
        try:
            with contextlib.redirect_stderr(log):
                llm = self._llama_factory(**load)
        except (ValueError, RuntimeError, OSError) as exc:
            tail = " | ".join(log.getvalue().strip().splitlines()[-3:])
            raise ConfigError(
                f"llama.cpp cannot load {self.model_path}: {exc}; check [local] "
                "model_path (a GGUF model) and n_ctx" + (f" (log: {tail})" if tail else "")
            ) from None
        llm.verbose = False
        return llm

    def close(self) -> None:
        """Free the model (it is loaded again on the next call)."""
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "close"):
            llm.close()

    def _cancelled(self) -> bool:
        check = self.cancel_check
        return bool(check is not None and check())

    def _crashed(self, exc: ModelCrashedError) -> None:
        """Count a crash of the model's process; the third in a row disables the backend."""
        self._crashes_in_a_row += 1
        log.warning("%s", exc)
        if self._crashes_in_a_row >= MAX_CRASHES_IN_A_ROW:
            _DISABLED[str(self.model_path)] = (
                f"the local backend is off until sleepy-repo restarts: its model process "
                f"failed {self._crashes_in_a_row} times in a row (last: {exc})"
            )

    # -- requests ----------------------------------------------------------------------
    def _prepared(self, request: NoteRequest) -> NoteRequest:
        if self.settings.overview:
            return request
        return dataclasses.replace(request, overview="")

    def messages(self, request: NoteRequest) -> list[list[dict[str, str]]]:
        """The chats ``write_notes`` sends, one per part (or one rethink); raises
        ``ModelError`` for a file that must not be sent to a model."""
        out = []
        for call in self._builder.calls(self._prepared(request)):
            system = "".join(b["text"] for b in call.params["system"])
            user = "".join(
                b["text"] for m in call.params["messages"] for b in m["content"] if "text" in b
            )
            user += "\n\n" + self._reply_prompt.render()
            out.append([{"role": "system", "content": system}, {"role": "user", "content": user}])
        return out

    def schema(self, request: NoteRequest) -> dict[str, Any]:
        return notes_schema(self.effort, citable_names(request.facts))

    def estimate(self, request: NoteRequest) -> Estimate:
        chats = self.messages(request)
        tokens = sum(count_tokens(m["content"]) + 8 for chat in chats for m in chat)
        return Estimate(tokens, self.max_tokens * len(chats), 0.0, len(chats))

    # -- calls -------------------------------------------------------------------------
    def write_notes(self, request: NoteRequest) -> NoteDraft:
        chats = self.messages(request)
        schema = self.schema(request)
        if self._cancelled():
            raise ModelCancelledError("cancelled before the model was called")
        llm = self.llama()
        usage: list[Usage] = []
        drafts: list[list[DraftItem]] = []
        for chat in chats:
            text, finish, u = self.complete(llm, chat, schema, tuple(usage))
            usage.append(u)
            try:
                drafts.append(parse_json_reply(text, finish, self.effort))
            except ModelOutputError as exc:
                raise ModelOutputError(str(exc), usage=tuple(usage)) from None
        return NoteDraft(items=merge_parts(drafts), generated=True, usage=tuple(usage))

    def complete(
        self,
        llm: Any,
        chat: list[dict[str, str]],
        schema: dict[str, Any],
        billed: tuple[Usage, ...],
        max_tokens: int | None = None,
    ) -> tuple[str, str | None, Usage]:
        """One streamed chat completion: its text, finish reason and usage (at most
        ``max_tokens`` generated, default ``[local] max_tokens``)."""
        with self._lock:
            pieces: list[str] = []
            finish: str | None = None
            try:
                stream = llm.create_chat_completion(
                    messages=chat,
                    response_format={"type": "json_object", "schema": schema},
                    max_tokens=max_tokens or self.max_tokens,
                    temperature=self.settings.temperature,
                    seed=self.settings.seed,
                    stream=True,
                )
                cancelled = False
                chunks = _chunks(stream)
                for chunk in chunks:
                    if self._cancelled():
                        cancelled = True
                        break
                    choice = (chunk.get("choices") or [{}])[0]
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        pieces.append(content)
                    finish = choice.get("finish_reason") or finish
                chunks.close()  # the stream is over (or stopped) before anything else is asked
                if cancelled or self._cancelled():
                    usage = self._usage(llm, chat, pieces)
                    raise ModelCancelledError(
                        f"cancelled after {usage.output_tokens} generated tokens",
                        usage=(*billed, usage),
                    )
            except ModelCrashedError as exc:
                self._crashed(exc)
                raise ModelCrashedError(str(exc), usage=billed) from None
            except ModelError:
                raise
            except ValueError as exc:  # e.g. "Requested tokens (n) exceed context window"
                raise ModelError(
                    f"the local model refused the request: {exc}; raise [local] n_ctx or "
                    "lower [local] part_tokens",
                    usage=billed,
                ) from None
            except RuntimeError as exc:  # llama_decode failed, or the abort callback fired
                if self._cancelled():
                    usage = self._usage(llm, chat, pieces)
                    raise ModelCancelledError(
                        f"cancelled during a decode, after {usage.output_tokens} generated tokens",
                        usage=(*billed, usage),
                    ) from None
                raise ModelUnavailableError(f"llama.cpp failed: {exc}", usage=billed) from None
            self._crashes_in_a_row = 0
            return "".join(pieces), finish, self._usage(llm, chat, pieces)

    def _usage(self, llm: Any, chat: list[dict[str, str]], pieces: list[str]) -> Usage:
        """Tokens of one call by the model's tokenizer: the reply's text, and the prompt as
        the chat template formatted it (what the context holds after the call, minus the
        reply; prefix-cached tokens included)."""
        completion = _token_count(llm, "".join(pieces)) if pieces else 0
        held = getattr(llm, "n_tokens", None)
        if isinstance(held, int) and held > completion:
            prompt = held - completion
        else:  # no context to ask (a stand-in): the messages' own tokens
            prompt = sum(_token_count(llm, m["content"]) for m in chat)
        return Usage(model=self.model, input_tokens=prompt, output_tokens=completion)


def _chunks(stream: Any) -> Generator[dict[str, Any], None, None]:
    """The stream's chunks; the generator is closed when the caller stops early."""
    try:
        yield from stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _token_count(llm: Any, text: str) -> int:
    count = getattr(llm, "count_tokens", None)
    if count is not None:
        return int(count(text))
    tokenize = getattr(llm, "tokenize", None)
    if tokenize is None:
        return count_tokens(text)
    return len(tokenize(text.encode("utf-8", "replace"), add_bos=False, special=True))


def parse_json_reply(text: str, finish: str | None, effort: str) -> list[DraftItem]:
    """The draft items of one JSON reply, without repeats; ``ModelOutputError`` if it was
    cut short, is not JSON, or does not have the ``record_notes`` shape."""
    if finish == "length":
        raise ModelOutputError(
            "the reply was cut at max_tokens before its JSON was complete: raise [local] max_tokens"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelOutputError(f"the reply is not JSON ({exc}): {text[:120]!r}") from None
    raw = {"content": [{"type": "tool_use", "name": TOOL_NAME, "input": _clip(data)}]}
    items = parse_reply(raw, effort)
    seen: set[tuple[str, str | None, str]] = set()
    unique = []
    for item in items:  # a small model repeats itself to fill an array: keep the first
        key = (item.kind, (item.question or "").casefold(), item.text.casefold())
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _clip(value: Any, key: str = "") -> Any:
    """``value`` with over-long texts cut to ``MAX_TEXT_CHARS`` (questions to
    ``MAX_QUESTION_CHARS``): a small model that rambles loses the tail, not the module."""
    if isinstance(value, dict):
        return {k: _clip(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v, key) for v in value]
    if isinstance(value, str) and key in ("text", "answer", "question"):
        limit = MAX_QUESTION_CHARS if key == "question" else MAX_TEXT_CHARS
        if len(value) > limit:
            return value[: limit - 1].rstrip() + "…"
    return value
