"""The localization bench's reader: a model reads a served context and names the files to
change, choosing only among the files the context shows.

One structured call per (case, strategy, budget), through the same structured models as
``ask`` (``sleepy_repo.models.structured.get_model``: ``local``, ``anthropic`` or
``fake``). The prompts
are ``prompts/locate-system.md`` and ``prompts/locate.md``; the served text is delimited
as untrusted data, and the reply's ``files`` are an ``enum`` of the context's files (the
local model cannot name another; other backends' extra names are dropped and counted).

Scored with **F1** against the gold files, as in the paper's SWE-Features study:
precision = |chosen ∩ gold| / |chosen|, recall = |chosen ∩ gold| / |gold|, F1 their
harmonic mean (0 when nothing right was chosen). The reader's input + output tokens are the
strategy's test-time tokens. Identical contexts for the same question (a path list that
ran out before a larger budget) are read once and their usage counted for each.

The reader's calls are not recorded in the bench store's ledger (that ledger measures
sleep-time work) and no budget applies: the bench is run on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sleepy_repo.bench.strategies import Served
from sleepy_repo.errors import ModelError, ModelOutputError
from sleepy_repo.models.structured import StructuredModel, StructuredRequest
from sleepy_repo.prompt_files import load_prompt
from sleepy_repo.redact import fence, redact_text

LOCATE_TOOL = "record_files"
MAX_FILES = 4
MAX_TOKENS = 200


def f1_score(chosen: Sequence[str], gold: Sequence[str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of the chosen files against the gold files."""
    c, g = set(chosen), set(gold)
    if not c or not g:
        return 0.0, 0.0, 0.0
    hit = len(c & g)
    if not hit:
        return 0.0, 0.0, 0.0
    p, r = hit / len(c), hit / len(g)
    return p, r, 2 * p * r / (p + r)


@dataclass(frozen=True)
class Located:
    files: list[str]  # chosen, in the reply's order, context files only
    input_tokens: int
    output_tokens: int
    dropped: int = 0  # names outside the context (or repeated)
    error: str | None = None  # the model failed on this context: nothing chosen

    def to_json(self, gold: Sequence[str]) -> dict[str, Any]:
        p, r, f = f1_score(self.files, gold)
        out: dict[str, Any] = {
            "files": self.files,
            "precision": round(p, 6),
            "recall": round(r, 6),
            "f1": round(f, 6),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "dropped": self.dropped,
        }
        if self.error:
            out["error"] = self.error
        return out


def locate_schema(files: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "files": {
                "type": "array",
                "items": {"type": "string", "enum": list(files)},
                "minItems": 1,
                "maxItems": MAX_FILES,
            }
        },
        "required": ["files"],
        "additionalProperties": False,
    }


def locate_request(query: str, served: Served) -> StructuredRequest:
    files = list(dict.fromkeys(served.files))
    text = served.text or "\n".join(files)
    return StructuredRequest(
        task="locate",
        system=load_prompt("locate-system").render(tool=LOCATE_TOOL),
        user=load_prompt("locate").render(
            question=fence(redact_text(query), "untrusted_context"),
            context=fence(redact_text(text), "untrusted_context"),
            files=", ".join(files),
            tool=LOCATE_TOOL,
        ),
        tool=LOCATE_TOOL,
        description="Record the files to edit, most likely first.",
        schema=locate_schema(files),
        question=query,
        choices=tuple(files),
        max_tokens=MAX_TOKENS,
    )


def parse_files(data: dict[str, Any], choices: Sequence[str]) -> tuple[list[str], int]:
    raw = data.get("files")
    if not isinstance(raw, list):
        raise ModelOutputError("`files` must be a list of paths")
    allowed = set(choices)
    chosen: dict[str, None] = {}
    dropped = 0
    for f in raw:
        name = f.strip().strip("`") if isinstance(f, str) else None
        if name is None or name not in allowed or name in chosen or len(chosen) >= MAX_FILES:
            dropped += 1
            continue
        chosen[name] = None
    return list(chosen), dropped


class Reader:
    """Names files from served contexts with one structured model; caches identical reads."""

    def __init__(self, model: StructuredModel) -> None:
        self.model = model
        self.calls = 0
        self.failures = 0
        self._cache: dict[tuple[str, str, tuple[str, ...]], Located] = {}

    @property
    def name(self) -> str:
        return f"{self.model.name}:{self.model.model}"

    def locate(self, query: str, served: Served) -> Located:
        files = tuple(dict.fromkeys(served.files))
        if not files:
            return Located(files=[], input_tokens=0, output_tokens=0)
        key = (query, served.text, files)
        if key in self._cache:
            return self._cache[key]
        request = locate_request(query, served)
        self.calls += 1
        try:
            reply = self.model.call(request)
            chosen, dropped = parse_files(reply.data, files)
            usage = reply.usage
            error = None
        except ModelError as exc:  # counted as choosing nothing, with the tokens spent
            self.failures += 1
            chosen, dropped, usage, error = [], 0, exc.usage, str(exc)[:300]
        located = Located(
            files=chosen,
            input_tokens=sum(
                u.input_tokens + u.cache_read_tokens + u.cache_write_tokens for u in usage
            ),
            output_tokens=sum(u.output_tokens for u in usage),
            dropped=dropped,
            error=error,
        )
        self._cache[key] = located
        return located
