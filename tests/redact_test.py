"""Secret-looking strings never reach a model; ordinary code passes through untouched."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sleepy_repo.config import DEFAULT_DENY
from sleepy_repo.redact import (
    _TRIGGER,
    DenyList,
    _triggered,
    entropy,
    md_code,
    md_fence,
    redact,
    unsendable,
)

SECRETS = [
    (
        "private-key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1y\nab==\n-----END RSA PRIVATE KEY-----",
    ),
    ("private-key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n"),
    ("aws-access-key", "AKIAQWERTYUIOPASDFGH"),
    ("aws-access-key", "ASIAZXCVBNMQWERTYUIO"),
    ("github-token", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("github-token", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
    ("slack-token", "xoxb-1234567890-abcdefghijkl"),
    ("anthropic-key", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345"),
    ("openai-key", "sk-proj-abcdefghijklmnopqrstuvwxyz0123"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9"),
]


@pytest.mark.parametrize(("kind", "secret"), SECRETS)
def test_known_token_formats_are_redacted(kind: str, secret: str) -> None:
    text = f'def connect():\n    value = "{secret}"\n    return value\n'
    r = redact(text)
    assert secret not in r.text
    assert f"[REDACTED:{kind}]" in r.text
    assert "def connect():" in r.text and "return value" in r.text
    assert r.counts[kind] == 1


@pytest.mark.parametrize(
    "line",
    [
        'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
        "DB_PASSWORD=Sup3rS3cret!",
        'password = "hunter2hunter2"',
        '"api_key": "a8f5f167f44f4964e6c998dee827110c",',
        'API_TOKEN: str = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA"',
        "client_secret => 'q8Xv2LmN4pR7sT9wY1zB3cD5'",
    ],
)
def test_high_entropy_values_of_secret_names_are_redacted(line: str) -> None:
    r = redact(line)
    assert "[REDACTED:secret]" in r.text, r.text
    assert r.counts["secret-assignment"] == 1


@pytest.mark.parametrize(
    "line",
    [
        'sort_key = "created_at"',
        'key = "user_id"',
        "secret_key = settings.SECRET_KEY",
        'token = os.environ["GITHUB_TOKEN"]',
        'api_key: str = ""',
        'TOKEN_TYPE = "bearer_token_type"',
        'password_hint = "ask the admin for it"',
        'api_key = "${ANTHROPIC_API_KEY}"',
        "def rotate_key(key: bytes, token_ttl: int = 3600) -> bytes:",
        "monkey_patch = install_handlers(registry)",
        "Token::RecursiveSuffix => (self.tokens.len() - 1, true),",  # a Rust path (ripgrep)
        "let token: Option<String> = None;",
        "func login(password string) error {",
    ],
)
def test_ordinary_code_is_left_alone(line: str) -> None:
    assert redact(line).text == line


def test_url_credentials_keep_the_host() -> None:
    r = redact('DSN = "postgres://admin:hunter22pass@db.example.com/shop"')
    assert "hunter22pass" not in r.text
    assert "db.example.com/shop" in r.text


def test_redaction_is_idempotent() -> None:
    once = redact('password = "hunter2hunter2"\nk = "AKIAQWERTYUIOPASDFGH"').text
    assert redact(once).text == once


def test_entropy() -> None:
    assert entropy("") == 0
    assert entropy("aaaa") == 0
    assert entropy("abcd") == 2


@pytest.mark.parametrize(
    ("path", "denied"),
    [
        (".env", True),
        (".env.production", True),
        ("config/.env.local", True),
        ("certs/server.pem", True),
        ("deploy/site.key", True),
        ("home/id_rsa", True),
        ("home/id_ed25519.pub", True),
        ("shop/credentials.py", True),
        ("shop/aws_credentials.json", True),
        ("shop/cart.py", False),
        ("shop/keys.py", False),
        ("src/environment.ts", False),
    ],
)
def test_default_deny_list(path: str, denied: bool) -> None:
    assert DenyList(DEFAULT_DENY).denied(path) is denied


def test_empty_deny_list_denies_nothing() -> None:
    assert not DenyList(()).denied(".env")


def test_unsendable() -> None:
    assert unsendable(b"print(1)\n", 100) is None
    assert "size limit" in (unsendable(b"x" * 101, 100) or "")
    assert "binary" in (unsendable(b"\x7fELF\0\0", 100) or "")


TRIGGER_TEXT = st.text(
    alphabet=st.sampled_from(
        [*"akeysKEYSthAUTHpwdPWD_-:/.x \n", "K", "ſ", "İ", "é", "\u2014", "\u2026", "\u2019"]
    ),
    max_size=60,
)


@settings(max_examples=500, deadline=None, database=None)
@given(text=TRIGGER_TEXT)
def test_the_fast_trigger_check_agrees_with_the_trigger_pattern(text: str) -> None:
    """Redaction skips text without any trigger; the ASCII shortcut must skip exactly what
    the (case-insensitive) pattern skips, or a secret could slip through."""
    assert _triggered(text) == (_TRIGGER.search(text) is not None)


@pytest.mark.parametrize("word", _TRIGGER.pattern.replace("\\", "").split("|"))
def test_every_trigger_alternative_triggers_in_any_case(word: str) -> None:
    for w in [word.replace("[pousr]", c) for c in "pousr"] if "[" in word else [word]:
        for text in (w, w.upper(), w.lower(), f"x = {w.title()}!"):
            assert _triggered(text), text


def test_fence_neutralises_closing_tags_in_any_case_or_spacing() -> None:
    from sleepy_repo.redact import fence

    text = "a </item> b < / ITEM > c </untrusted_context\n> d <item> e </other>"
    out = fence(text, "item", "untrusted_context")
    assert not re.search(r"<\s*/\s*(item|untrusted_context)", out, re.IGNORECASE)
    assert "<item>" in out and "</other>" in out  # openings and other tags untouched
    assert out.replace("\\/", "/") == text  # only the slash is escaped


# -- the fast scan equals the plain one ----------------------------------------------------
_PIECES = [
    "api_key", "API_KEY", "Token", "password", "pwd", "auth", "db_pass", "secret_value",
    "KEY", "\u212aey", "x", "-", ".", "_", " ", "=", ":", "=>", ":=", '"', "'", "\n", "\t",
    "s3cr3t-v4lue-123456", "hunter2xx", "${VAR}", "None", "(", ")", ",", "é", "ſecret",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_the_keyword_scan_finds_what_a_full_sub_finds(parts: list[str]) -> None:
    from sleepy_repo.redact import _ASSIGNMENT, _sub_assignments

    text = "".join(parts)

    def mark(m: re.Match[str]) -> str:
        return "<" + m.group(0)[::-1] + ">"

    assert _sub_assignments(text, mark) == _ASSIGNMENT.sub(mark, text)


# -- markdown quoting ----------------------------------------------------------------------
_MD_TEXT = st.text(alphabet="`~ *_[]()<>#!ab\\", max_size=40)


@settings(max_examples=200, deadline=None)
@given(_MD_TEXT)
def test_a_code_span_holds_any_line_exactly(text: str) -> None:
    """Whatever backticks and markup a line holds, it is one code span of exactly itself."""
    from markdown_it import MarkdownIt

    if not text.strip():
        return  # (CommonMark keeps an all-space span as is, and an empty one is no span)
    (para,) = [t for t in MarkdownIt("commonmark").parse(md_code(text)) if t.type == "inline"]
    assert [(c.type, c.content) for c in para.children or []] == [("code_inline", text)]


@settings(max_examples=200, deadline=None)
@given(st.lists(_MD_TEXT, min_size=1, max_size=4), st.sampled_from(["", "  "]))
def test_a_fence_cannot_be_closed_by_its_text(lines: list[str], indent: str) -> None:
    from markdown_it import MarkdownIt

    text = "\n".join(lines)
    md = "\n".join(md_fence(text, indent))
    if indent:
        md = "- item\n" + md  # (indented: inside a list item)
    fences = [t for t in MarkdownIt("commonmark").parse(md) if t.type == "fence"]
    assert [f.content for f in fences] == [text + "\n"]
