"""Fuzzing with hypothesis: the parsers, config loading and the full-text query path take
arbitrary input without raising (or raise only the documented error).

Example counts are modest for CI (``SLEEPY_SOAK=1`` multiplies them by 10).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sleepy_repo import api
from sleepy_repo.config import Config, parse_config
from sleepy_repo.errors import ConfigError
from sleepy_repo.index import _prepare, code_chunks
from sleepy_repo.notes import source_lines
from sleepy_repo.parse import parse_module
from sleepy_repo.retrieve import context, query_terms
from sleepy_repo.scan import Candidate

from helpers import ROOT, load_builder

SCALE = 10 if os.environ.get("SLEEPY_SOAK") == "1" else 1


def fuzz(n: int) -> settings:
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


SAMPLES = {
    "python": "fixtures/repos/relay/tree/scripts/replay_dead_letters.py",
    "javascript": "fixtures/repos/shop/tree/web/dev-server.js",
    "typescript": "fixtures/repos/shop/tree/web/src/api.ts",
    "tsx": "fixtures/repos/shop/tree/web/src/components/CartSummary.tsx",
    "go": "fixtures/repos/relay/tree/main.go",
    "rust": "fixtures/repos/relay/tree/src/checksum.rs",
}
EXT = {
    "python": "py",
    "javascript": "js",
    "typescript": "ts",
    "tsx": "tsx",
    "go": "go",
    "rust": "rs",
}
REAL = {lang: (ROOT / rel).read_bytes() for lang, rel in SAMPLES.items()}


def check_facts(lang: str, source: bytes) -> None:
    path = f"fuzz/m.{EXT[lang]}"
    facts = parse_module(path, source, lang)
    lines = source_lines(source.decode("utf-8", "replace"))
    n = max(facts.line_count, len(lines))
    assert 0 <= facts.header_end <= n
    for sym in facts.symbols:
        assert 1 <= sym.start_line <= sym.end_line <= n, sym
        assert sym.name, sym
        assert sym.name in lines[sym.start_line - 1], (sym, lines[sym.start_line - 1])
    for ref in facts.references:
        assert 1 <= ref.line <= n, ref
    json.dumps(facts.to_dict())  # storable
    for start, end, symbol, text, _ in code_chunks(facts, lines):
        assert text == "\n".join(lines[start - 1 : end])
        if symbol is not None:
            sym = next(s for s in facts.symbols if s.qualname == symbol)
            assert sym.name in text.split("\n")[0]


def test_chunks_stay_aligned_after_a_form_feed(tmp_path: Path) -> None:
    """Found by fuzzing: indexing split lines with ``str.splitlines``, which also breaks at
    form feeds (and \\x1c-\\x1e, \\x85, \\u2028), so every chunk after one was shifted."""
    src = b"import os\n\x0c\n# section\x1e two\ndef f():\n    return 1\r\n"
    (tmp_path / "m.py").write_bytes(src)
    prep = _prepare((tmp_path, Candidate("m.py", "python", len(src), 0), 10**6, None, False))
    lines = source_lines(src.decode())
    assert [(c[0], c[2]) for c in prep.chunks if c[2]] == [(4, "f")]
    for start, end, _, text, _ in prep.chunks:
        assert text == "\n".join(lines[start - 1 : end])


LANGS = st.sampled_from(sorted(SAMPLES))


@fuzz(150)
@given(lang=LANGS, data=st.binary(max_size=2000))
def test_parsers_on_random_bytes(lang: str, data: bytes) -> None:
    check_facts(lang, data)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    lang = draw(LANGS)
    data = bytearray(REAL[lang])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "flip", "truncate"]))
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 200)))
        if op == "delete":
            del data[i:j]
        elif op == "insert":
            junk = draw(
                st.one_of(
                    st.binary(max_size=40),
                    st.sampled_from(
                        [
                            b"{",
                            b"}",
                            b"(",
                            b")",
                            b"\n",
                            b'"""',
                            b"'",
                            b"def ",
                            b"class ",
                            b"fn ",
                            b"func ",
                            b"\xff\xfe",
                            b"\x00",
                            b"\t\t",
                            b"@",
                            b"/*",
                            b"`${",
                        ]
                    ),
                )
            )
            data[i:i] = junk
        elif op == "duplicate":
            data[i:i] = data[i:j]
        elif op == "flip" and i < len(data):
            data[i] ^= draw(st.integers(1, 255))
        else:
            del data[i:]
    return lang, bytes(data)


@fuzz(200)
@given(case=mutated())
def test_parsers_on_mutated_real_files(case: tuple[str, bytes]) -> None:
    check_facts(*case)


# -- config ------------------------------------------------------------------------------
SECTIONS = ["scan", "notes", "budget", "retrieve", "store", "prices", "models", "bogus"]
KEYS = [
    "max_file_bytes",
    "exclude",
    "deny",
    "backend",
    "effort",
    "model",
    "per_refresh_tokens",
    "per_day_usd",
    "budget",
    "dir",
    "input",
    "output",
    "unknown_key",
    "enabled",
]
scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["static", "fake", "anthropic", "local", "brief", "standard", "deep"]),
)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def toml_docs(draw: st.DrawFn) -> str:
    out = []
    for section in draw(st.lists(st.sampled_from(SECTIONS), max_size=4, unique=True)):
        out.append(f"[{section}]")
        keys = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=4))
        out.extend(f"{k} = {toml_value(v)}" for k, v in keys.items())
    if draw(st.booleans()):
        out.extend(
            f"{k} = {toml_value(v)}"
            for k, v in draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=2)).items()
        )
    return "\n".join(out) + "\n"


def check_config(text: str) -> None:
    try:
        config = parse_config(text, Path("fuzz/config.toml"))
    except ConfigError as exc:
        assert str(exc)
        return
    assert isinstance(config, Config)


@fuzz(200)
@given(text=toml_docs())
def test_config_on_random_toml_values(text: str) -> None:
    check_config(text)


@fuzz(100)
@given(text=st.text(max_size=300))
def test_config_on_random_text(text: str) -> None:
    check_config(text)


# -- the FTS query path ------------------------------------------------------------------
@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[api.Repo]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "HOME": str(home),
            "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "T",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "T",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }.items():
            mp.setenv(k, v)
        root = Path(load_builder().build_repo("shop", tmp_path_factory.mktemp("fts") / "shop"))
        repo = api.open_repo(root)
        api.refresh(repo, backend="fake")
        yield repo


FTS_SYNTAX = st.sampled_from(
    [
        '"',
        "'",
        "*",
        "^",
        ":",
        "(",
        ")",
        "-",
        "+",
        "AND",
        "OR",
        "NOT",
        "NEAR",
        "NEAR(",
        "{",
        "}",
        "[",
        "]",
        "\\",
        "\x00",
        "%",
        "_",
        "?",
        "/",
        "cart",
        "Cart.add",
        "getTotal",
        "tax",
        "shop/cart.py",
        "é",
        "\u200b",
        "\ud7ff",
        "..",
        ",",
        ";",
        "--",
        "/*",
        "col:",
        "text:",
    ]
)
questions = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(FTS_SYNTAX, st.text(max_size=8)), max_size=20).map(" ".join),
    st.lists(FTS_SYNTAX, max_size=20).map("".join),
)


@fuzz(200)
@given(question=questions, budget=st.integers(-5, 5000))
def test_fts_query_path_never_raises_a_sqlite_error(
    indexed: api.Repo, question: str, budget: int
) -> None:
    query_terms(question)
    try:
        ctx = context(indexed.store, question, budget)
    except sqlite3.Error as exc:  # pragma: no cover - the failure this test looks for
        raise AssertionError(f"sqlite error for {question!r}: {exc}") from exc
    assert ctx.tokens <= max(budget, 0) or not ctx.items
