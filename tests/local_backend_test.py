"""The local backend with real llama-cpp-python and the real GGUF model (Qwen2.5-Coder-0.5B
Q4, fetched by ``scripts/fetch_model.py``): grounded notes end to end, the symbol-enum
schema, cancelling between chunks, and clear errors.

Without llama-cpp-python or the model these tests are skipped with the reason, and fail
when ``CI`` is set (CI installs both). The model is located when this module is imported,
before ``conftest`` points HOME at a temporary directory: ``$SLEEPY_REPO_MODEL_DIR``, else
the real home's ``~/.cache/sleepy-repo/models``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sleepy_repo.config import LOCAL_MODEL_FILE, Config, LocalConfig
from sleepy_repo.errors import ConfigError, ModelCancelledError, ModelOutputError
from sleepy_repo.models import get_backend, ready
from sleepy_repo.models.base import NoteRequest
from sleepy_repo.models.local import (
    LocalBackend,
    check_model_file,
    citable_names,
    notes_schema,
    parse_json_reply,
)
from sleepy_repo.notes import MODULE
from sleepy_repo.parse import parse_module
from sleepy_repo.tokens import count_tokens

from helpers import CLI, ROOT, trusted_config

TAX = ROOT / "fixtures" / "repos" / "shop" / "tree" / "shop" / "tax.py"
N_CTX = 4096
MAX_TOKENS = 320


def local_config(model: Path, **settings: Any) -> Config:
    values = {"model_path": str(model), "n_ctx": N_CTX, "max_tokens": MAX_TOKENS, **settings}
    return Config(local=LocalConfig(**values))


@pytest.fixture(scope="session")
def backend(model: Path) -> LocalBackend:
    """One loaded model for the in-process tests (loading takes about a second)."""
    b = LocalBackend(local_config(model), "brief")
    b.llama()
    return b


def tax_request() -> NoteRequest:
    data = TAX.read_bytes()
    facts = parse_module("shop/tax.py", data, "python")
    return NoteRequest(facts=facts, lines=data.decode().splitlines(), effort="brief")


def configure(repo: Path, model: Path, effort: str = "brief", extra: str = "") -> None:
    """The local backend with the test model, in the repo's config, trusted."""
    (repo / ".sleepy").mkdir(exist_ok=True)
    trusted_config(
        repo,
        f'[notes]\nbackend = "local"\neffort = "{effort}"\n'
        f"[local]\nmodel_path = {json.dumps(str(model))}\nn_ctx = {N_CTX}\n"
        f"max_tokens = {MAX_TOKENS}\n" + extra,
    )


# -- the schema ----------------------------------------------------------------------------
def _cite_enums(schema: dict[str, Any]) -> list[list[str]]:
    found: list[list[str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            cites = node.get("properties", {}).get("cites")
            if cites is not None:
                found.append(cites["items"]["enum"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return found


def test_every_citation_field_is_an_enum_of_the_modules_symbols() -> None:
    request = tax_request()
    names = citable_names(request.facts)
    assert names == [
        MODULE,
        "VAT_RATES",
        "UnknownVatRate",
        "vat_rate",
        "vat_for_amount",
        "vat_for_lines",
        "vat_for_order",
    ] or set(names) == {MODULE, *(s.qualname for s in request.facts.symbols)}
    for effort, fields in [
        ("brief", ["summary", "facts"]),
        ("standard", ["summary", "questions", "facts"]),
        ("deep", ["summary", "questions", "facts", "cross_module"]),
    ]:
        schema = notes_schema(effort, names)
        assert schema["type"] == "object" and schema["required"] == fields
        assert schema["additionalProperties"] is False
        enums = _cite_enums(schema)
        assert len(enums) == len(fields)  # one cites list per claim kind
        assert all(e == names for e in enums)
    schema = LocalBackend(Config(), "standard").schema(request)
    (summary_cites, *_) = _cite_enums(schema)
    assert "vat_for_lines" in summary_cites and "Cart.add" not in summary_cites


def test_a_500_line_module_is_one_call_that_fits_the_default_context() -> None:
    """Each part is a whole reply, the slowest phase on a CPU: by default a module of about
    500 lines (like click's parser.py) is sent in one call, and that call, its reply
    included, fits the default context window."""
    body = [
        f"def step_{i}(value: int, *, scale: float = 1.5) -> float:\n"
        f'    """Scale one value of step {i}; negative values are clipped to zero first."""\n'
        f"    if value < 0:\n        value = 0\n    total = value * scale + {i}\n"
        f"    return round(total, 2)\n\n"
        for i in range(70)
    ]
    data = ('"""A generated module of about 500 lines."""\n\n' + "".join(body)).encode()
    facts = parse_module("pkg/steps.py", data, "python")
    request = NoteRequest(facts=facts, lines=data.decode().splitlines(), effort="standard")
    assert 480 <= facts.line_count <= 520
    config = Config()
    chats = LocalBackend(config, "standard").messages(request)
    assert len(chats) == 1
    prompt = sum(count_tokens(m["content"]) + 8 for m in chats[0])
    assert prompt + config.local.max_tokens < config.local.n_ctx


def test_the_backend_is_chosen_by_name_and_built_without_the_model(tmp_path: Path) -> None:
    config = Config(local=LocalConfig(model_path=str(tmp_path / "none.gguf")))
    b = get_backend("local", config, "standard")  # building loads nothing
    assert isinstance(b, LocalBackend) and b.name == "local" and b.generated
    assert b.model == "none" and b.concurrency == 1
    assert "local@1" in b.prompt_version and "schema@1" in b.prompt_version
    assert "notes-standard@1" in b.prompt_version
    # the same requests as the Anthropic backend, plus the JSON reply instruction
    (chat,) = b.messages(tax_request())
    assert [m["role"] for m in chat] == ["system", "user"]
    assert "Cite symbols by name" in chat[0]["content"]
    user = chat[1]["content"]
    assert '<untrusted_file path="shop/tax.py">' in user and "- `vat_rate` (function" in user
    assert user.rstrip().endswith("specific to this module.")
    est = b.estimate(tax_request())
    assert est.calls == 1 and est.output_tokens == b.max_tokens and est.cost_usd == 0
    assert Config().notes.backend == "static"  # never chosen automatically


def test_the_default_model_path_follows_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLEEPY_REPO_MODEL_DIR", str(tmp_path))
    assert LocalBackend(Config()).model_path == tmp_path / LOCAL_MODEL_FILE
    spec = importlib.util.spec_from_file_location("fetch_model", ROOT / "scripts/fetch_model.py")
    assert spec and spec.loader
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    assert fetch.MODEL_FILE == LOCAL_MODEL_FILE and fetch.model_dir() == tmp_path


# -- replies that are not usable -----------------------------------------------------------
def test_garbled_or_cut_replies_are_rejected() -> None:
    with pytest.raises(ModelOutputError, match="not JSON"):
        parse_json_reply('{"summary": {"text": "x", "cites": ["<module>"]', "stop", "brief")
    with pytest.raises(ModelOutputError, match="max_tokens"):
        parse_json_reply('{"summary": ', "length", "brief")
    with pytest.raises(ModelOutputError, match="summary"):
        parse_json_reply('{"facts": []}', "stop", "brief")
    with pytest.raises(ModelOutputError, match="empty"):
        parse_json_reply('{"summary": {"text": " ", "cites": ["x"]}, "facts": []}', "stop", "brief")
    items = parse_json_reply(
        '{"summary": {"text": "VAT.", "cites": ["vat_rate", "nope"]}, "facts": []}', "stop", "brief"
    )
    assert items[0].cites == ("vat_rate", "nope")  # grounding drops "nope" later
    fact = {"text": "Rounds each line.", "cites": ["vat_for_lines"]}
    reply = {"summary": {"text": "VAT.", "cites": ["<module>"]}, "facts": [fact, fact]}
    items = parse_json_reply(json.dumps(reply), "stop", "brief")
    assert [i.kind for i in items] == ["summary", "fact"]  # a repeated claim is kept once


class _ScriptedLlama:
    """A stand-in for ``llama_cpp.Llama`` that streams a scripted reply (no model)."""

    def __init__(self, reply: str, **_: Any) -> None:
        self.reply = reply
        self.calls: list[dict[str, Any]] = []

    def create_chat_completion(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        self.yielded = 0
        self.closed = False
        try:
            for i, ch in enumerate(self.reply):
                finish = "stop" if i == len(self.reply) - 1 else None
                self.yielded += 1
                yield {"choices": [{"delta": {"content": ch}, "finish_reason": finish}]}
        except GeneratorExit:
            self.closed = True
            raise

    def tokenize(self, data: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        return list(range(len(data.split())))


def test_a_garbled_reply_fails_the_module_with_its_usage(tmp_path: Path) -> None:
    fake = _ScriptedLlama("not json at all")
    b = LocalBackend(Config(), "brief", llama_factory=lambda **kw: fake)
    b.model_path = tmp_path / "m.gguf"
    b.model_path.write_bytes(b"GGUF")
    with pytest.raises(ModelOutputError, match="not JSON") as exc:
        b.write_notes(tax_request())
    (usage,) = exc.value.usage
    assert usage.model == b.model and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.cost_usd == 0
    (call,) = fake.calls
    assert call["stream"] is True and call["response_format"]["type"] == "json_object"
    assert call["response_format"]["schema"] == b.schema(tax_request())


def test_a_cancel_between_chunks_stops_the_stream(tmp_path: Path) -> None:
    fake = _ScriptedLlama('{"summary": {"text": "' + "x" * 500 + '"')
    asked = 0

    def check() -> bool:
        nonlocal asked
        asked += 1
        return asked > 10  # once before the call, then between chunks

    b = LocalBackend(Config(), "brief", llama_factory=lambda **kw: fake, cancel_check=check)
    b.model_path = tmp_path / "m.gguf"
    b.model_path.write_bytes(b"GGUF")
    with pytest.raises(ModelCancelledError, match="cancelled after") as exc:
        b.write_notes(tax_request())
    assert fake.yielded == 10 and fake.closed  # stopped at once; the generator was closed
    (usage,) = exc.value.usage
    assert usage.output_tokens > 0


# -- errors that say what to do ------------------------------------------------------------
def test_a_bad_model_path_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist: fix \\[local\\] model_path"):
        check_model_file(tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match=r"scripts/fetch_model\.py"):
        check_model_file(tmp_path / LOCAL_MODEL_FILE)
    with pytest.raises(ConfigError, match="is not a file"):
        check_model_file(tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"<html>not a model</html>")
    with pytest.raises(ConfigError, match="not a GGUF model file"):
        check_model_file(junk)
    if os.geteuid() != 0:  # root reads anything
        unreadable = tmp_path / "locked.gguf"
        unreadable.write_bytes(b"GGUF")
        unreadable.chmod(0)
        with pytest.raises(ConfigError, match="cannot be read"):
            check_model_file(unreadable)


def test_refresh_with_a_bad_model_path_exits_2_before_any_work(
    make_repo, cli: CLI, llama_installed: None, tmp_path: Path
) -> None:
    repo = make_repo("shop")
    configure(repo, tmp_path / "nowhere" / "model.gguf")
    proc = cli.run("refresh", repo=repo, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "model.gguf does not exist" in proc.stderr and "[local] model_path" in proc.stderr
    assert not (repo / ".sleepy" / "index.db").exists() or _ledger(repo) == []


def test_a_broken_gguf_is_a_config_error_with_llamas_reason(
    llama_installed: None, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    b = LocalBackend(Config(local=LocalConfig(model_path=str(broken))), "brief")
    with pytest.raises(ConfigError, match=r"cannot load .*broken\.gguf.*log: .*failed"):
        b.llama()


def test_a_missing_llama_cpp_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_llama(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama)
    hint = r"GGML_NATIVE=OFF' pip install --no-cache-dir 'sleepy-repo\[local\]'"
    with pytest.raises(ConfigError, match=hint):
        ready(LocalBackend(Config()))


# -- the real model ------------------------------------------------------------------------
def _ledger(repo: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(repo / ".sleepy" / "index.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY id")]


def test_the_real_model_writes_grounded_notes_that_context_serves(
    make_repo, cli: CLI, model: Path
) -> None:
    repo = make_repo("shop")
    configure(repo, model)
    # a generous timeout: on 2 cores shared with other jobs one module can take minutes
    result = json.loads(cli.run("refresh", "shop/tax.py", "--json", repo=repo, timeout=900).stdout)
    local = result["notes"]["local"]
    assert local["written"] == 1, result
    assert local["failed"] == []
    assert result["model"]["backend"] == "local"
    assert result["model"]["model"] == "qwen2.5-coder-0.5b-instruct-q4"
    spent = result["model"]["spent"]
    assert spent["calls"] == 1 and spent["cost_usd"] == 0
    assert spent["input_tokens"] > 300 and 0 < spent["output_tokens"] <= MAX_TOKENS

    (row,) = [r for r in _ledger(repo) if r["backend"] == "local"]
    assert row["reason"] == "notes" and row["path"] == "shop/tax.py" and row["cost_usd"] == 0
    assert row["input_tokens"] == spent["input_tokens"]

    notes = cli.json("notes", "shop/tax.py", repo=repo)["notes"]
    (note,) = [n for n in notes if n["backend"] == "local"]
    assert note["items"] and note["items"][0]["kind"] == "summary"
    symbols = {"VAT_RATES", "UnknownVatRate", "vat_rate", "vat_for_amount"}
    symbols |= {"vat_for_lines", "vat_for_order", None}
    for item in note["items"]:
        assert item["generated"] is True and item["text"].strip()
        assert item["citations"], item
        for c in item["citations"]:
            assert c["path"] == "shop/tax.py" and c["symbol"] in symbols
    # the enum makes an unknown citation impossible: grounding dropped nothing
    status = cli.json("status", repo=repo)
    assert status["dropped_citations"]["count"] == 0

    # and `context` serves them, marked generated, with their citations
    context = cli.json("context", "What does shop/tax.py do with VAT rates?", repo=repo)
    generated = [i for i in context["items"] if i["generated"]]
    assert generated, context["items"]
    assert all(i["path"] == "shop/tax.py" and i["citations"] for i in generated)


def test_cancelling_stops_generation_between_chunks(backend: LocalBackend) -> None:
    request = tax_request()
    event = threading.Event()
    chunks = 0

    def check() -> bool:
        nonlocal chunks
        chunks += 1
        return event.is_set()

    backend.cancel_check = check
    backend.max_tokens = 2048  # far more than it will get to write
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["draft"] = backend.write_notes(request)
        except Exception as exc:
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    worker = threading.Thread(target=run)
    try:
        worker.start()
        time.sleep(2.0)  # prompt evaluated, generation under way
        event.set()
        asked = time.monotonic()
        worker.join(timeout=30)
        assert not worker.is_alive()
    finally:
        backend.cancel_check = None
        backend.max_tokens = MAX_TOKENS
    error = outcome.get("error")
    assert isinstance(error, ModelCancelledError), outcome
    assert outcome["at"] - asked < 1.0  # within a second of the request
    assert chunks > 1
    # the model stays usable after a cancel
    draft = backend.write_notes(request)
    assert draft.items and draft.usage[0].output_tokens > 0


def test_a_cancel_before_the_call_never_starts_the_model(model: Path) -> None:
    b = LocalBackend(local_config(model), "brief", cancel_check=lambda: True)
    with pytest.raises(ModelCancelledError, match="before"):
        b.write_notes(tax_request())
    assert b._llm is None


def test_the_real_model_writes_a_grounded_repo_overview(
    make_repo, backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deep effort's overview through the real model: the grammar's enum of module and
    symbol names makes every citation real; context then maps the module it is filed under."""
    from sleepy_repo import api, overview
    from sleepy_repo.models.structured import model_for

    monkeypatch.setattr(overview, "MAX_INPUT_TOKENS", 2200)  # the whole prompt: 4 modules
    monkeypatch.setattr(overview, "MAX_TOKENS", 600)  # a cut reply keeps its complete claims
    repo = make_repo("shop")
    r = api.open_repo(repo)
    api.refresh(r)
    report = overview.write_overview(r.root, r.store, model_for(backend, r.config), r.config)
    assert report.written >= 1 and report.dropped_citations == 0, report
    assert report.usage[0].input_tokens > 300 and report.usage[0].output_tokens > 0
    (note,) = api.module_notes(r, ".")["notes"]
    assert note["backend"] == "local" and note["effort"] == "overview"
    with r.store.read() as conn:
        spans = {
            (p, q): (s, e)
            for p, q, s, e in conn.execute(
                "SELECT path, qualname, start_line, end_line FROM symbols"
            )
        }
        (rows,) = conn.execute("SELECT count(*) FROM ledger WHERE reason = 'overview'").fetchone()
    assert rows == 1
    for item in note["items"]:
        assert item["generated"] and item["text"].strip() and item["citations"]
        for c in item["citations"]:
            if c["symbol"] is not None:
                assert spans[(c["path"], c["symbol"])] == (c["start_line"], c["end_line"])
            else:
                assert c["start_line"] == 1
    first = note["items"][0]
    ctx = api.get_context(r, first["question"], 1500, source=None)
    # the item ranks the module it is filed under into the map
    assert first["path"] in [i.path for i in ctx.items if i.kind == "summary"], first
