"""What may be sent to a model, and secret-looking strings removed before it is.

Two checks, both applied by every model backend before a request is built:

* ``denied(path, globs)``: files that are never sent, whatever they contain. The deny list is
  ``[scan] deny`` (gitignore-style globs: ``.env*``, ``*.pem``, ``*.key``, ``id_*``,
  credentials files ...). Gitignored, binary and oversized files never reach a backend at
  all: the scanner skips them (``unsendable`` re-checks the last two on the bytes).
* ``redact(text)``: secret-looking strings are replaced by ``[REDACTED:<kind>]``: PEM private
  keys, AWS access keys, GitHub / Slack / Anthropic / OpenAI / Google / Stripe tokens, JWTs,
  and high-entropy values assigned to names like ``*key``, ``*secret``, ``*token``,
  ``*password``. Redaction is deliberately eager: a false positive costs the model one value,
  a false negative leaks a credential.

Untrusted text (file content, notes, questions) goes into prompts between delimiter tags;
``fence(text, *tags)`` neutralises anything in it that could close one of them.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pathspec

MARK = "[REDACTED:{kind}]"

# (kind, pattern); applied in order, so specific token formats win over generic rules.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private-key",
        re.compile(
            r"-----BEGIN[ A-Z0-9]*PRIVATE KEY( BLOCK)?-----"
            r"(?:.*?-----END[ A-Z0-9]*PRIVATE KEY( BLOCK)?-----|(?:\r?\n[ \t]*[A-Za-z0-9+/=]+)*)",
            re.DOTALL,
        ),
    ),
    ("aws-access-key", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}")),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})")),
    ("slack-token", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),
    (
        "slack-webhook",
        re.compile(r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9_/]+"),
    ),
    ("anthropic-key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}")),
    ("openai-key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("stripe-key", re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}")),
    (
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
    (
        "url-credentials",
        re.compile(r"(?<=://)[^/\s:@'\"]+:[^/\s@'\"]{6,}(?=@)"),
    ),
)

# NAME = value, NAME: value, "NAME": "value", NAME => value, where NAME looks secret.
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:key|secret|token|passw(?:or)?d|pwd|credential|auth)[A-Za-z0-9_.-]*"
)
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<name>" + _SECRET_NAME + r")(?P<q1>['\"]?)"
    r"(?:\s*:\s*[A-Za-z_][\w\[\]., |]*?)?"  # a type annotation: `API_KEY: str = ...`
    r"\s*(?::=|=>|[:=])\s*"
    r"(?:(?P<quote>['\"])(?P<quoted>[^'\"\n]{6,})(?P=quote)|(?P<bare>[^\s'\",;)}\]]{8,}))",
    re.IGNORECASE,
)
# where a secret name can be: its keyword (what every match holds), and the characters a
# name is made of (as ``_ASSIGNMENT`` reads them, ignoring case)
_NAME_KEYWORD = re.compile(r"key|secret|token|passw(?:or)?d|pwd|credential|auth", re.IGNORECASE)
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.-]", re.IGNORECASE)
_NAME_KEYWORD_LOWER = re.compile(_NAME_KEYWORD.pattern)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
# a substring every match of each pattern holds: a pattern whose needles are all absent
# cannot match, and most files hold none (each full scan of a large file takes milliseconds)
_NEEDLES: dict[str, tuple[str, ...]] = {
    "private-key": ("PRIVATE KEY",),
    "aws-access-key": ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA"),
    "github-token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "slack-token": ("xox",),
    "slack-webhook": ("https://hooks.slack.com/",),
    "anthropic-key": ("sk-ant-",),
    "openai-key": ("sk-",),
    "google-api-key": ("AIza",),
    "stripe-key": ("_live_", "_test_"),
    "jwt": ("eyJ",),
    "url-credentials": ("://",),
}
_PASSWORDISH = re.compile(r"passw(?:or)?d|pwd|secret", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"^(?:\$\{?[A-Za-z_]|<[^>]+>$|\{\{|%\(|\[REDACTED:)")
# a value that is code, not data: a call, an attribute path, an environment lookup
_CODE_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\(|\[|$)")


def entropy(value: str) -> float:
    """Shannon entropy of ``value`` in bits per character."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _char_classes(value: str) -> int:
    return sum(
        1 for test in (str.islower, str.isupper, str.isdigit) if any(test(ch) for ch in value)
    ) + (1 if any(not ch.isalnum() for ch in value) else 0)


def looks_secret(name: str, value: str) -> bool:
    """Whether ``value``, assigned to the secret-looking ``name``, looks like a real secret."""
    if _PLACEHOLDER.match(value) or " " in value.strip():
        return False
    if _PASSWORDISH.search(name) and len(value) >= 8 and _char_classes(value) >= 2:
        return not _CODE_VALUE.match(value) or any(ch.isdigit() for ch in value)
    if len(value) < 16:
        return False
    if _CODE_VALUE.match(value) and not any(ch.isdigit() for ch in value):
        return False
    return entropy(value) >= 3.5 and _char_classes(value) >= 2


@dataclass
class Redaction:
    text: str
    counts: Counter[str] = field(default_factory=Counter)  # kind -> values redacted

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# Every pattern above needs one of these substrings; text without any is returned as is
# (most text has none, and the assignment rule is slow to scan for).
_TRIGGER = re.compile(
    r"PRIVATE KEY|AKIA|ASIA|AGPA|AIDA|AROA|ANPA|gh[pousr]_|github_pat_|xox|hooks\.slack|"
    r"sk-|AIza|_live_|_test_|eyJ|://|key|secret|token|passw|pwd|credential|auth",
    re.IGNORECASE,
)


# punctuation no trigger holds (notes put dashes and ellipses in text): as spaces, they
# leave text ASCII more often, and ASCII text takes the fast test below
_NOT_IN_TRIGGERS = str.maketrans(dict.fromkeys("\u2013\u2014\u2018\u2019\u201c\u201d\u2026", " "))


_AWS_PREFIXES = ("akia", "asia", "agpa", "aida", "aroa", "anpa")


def _triggered(text: str) -> bool:
    """Whether ``text`` holds any of ``_TRIGGER``'s substrings (so a pattern might match)."""
    if not text.isascii():
        text = text.translate(_NOT_IN_TRIGGERS)
    if not text.isascii():  # case folding beyond ASCII (K, ſ ...): the regex decides
        return _TRIGGER.search(text) is not None
    # _TRIGGER's alternatives in lower case: for ASCII text ignoring case is lowering it,
    # and one chain of substring tests is several times faster than the regex (and than
    # a loop over the words); "key" covers "private key"
    low = text.lower()
    return (
        "key" in low
        or "auth" in low
        or "token" in low
        or "secret" in low
        or "passw" in low
        or "pwd" in low
        or "credential" in low
        or "://" in low
        or "sk-" in low
        or "xox" in low
        or "eyj" in low
        or "aiza" in low
        or "_live_" in low
        or "_test_" in low
        or "hooks.slack" in low
        or "github_pat_" in low
        or ("gh" in low and any(f"gh{c}_" in low for c in "pousr"))
        or ("a" in low and any(w in low for w in _AWS_PREFIXES))
    )


def redact(text: str) -> Redaction:
    """``text`` with every secret-looking string replaced by ``[REDACTED:<kind>]``."""
    counts: Counter[str] = Counter()
    if not _triggered(text):
        return Redaction(text, counts)
    for kind, pattern in _PATTERNS:
        if not any(n in text for n in _NEEDLES[kind]):
            continue

        def sub(m: re.Match[str], kind: str = kind) -> str:
            counts[kind] += 1  # keep the line count, so line numbers stay valid
            return MARK.format(kind=kind) + "\n" * m.group(0).count("\n")

        text = pattern.sub(sub, text)

    def assignment(m: re.Match[str]) -> str:
        value = m.group("quoted") if m.group("quoted") is not None else m.group("bare")
        if not looks_secret(m.group("name"), value):
            return m.group(0)
        counts["secret-assignment"] += 1
        start, end = m.span("quoted") if m.group("quoted") is not None else m.span("bare")
        base = m.start()
        return m.group(0)[: start - base] + MARK.format(kind="secret") + m.group(0)[end - base :]

    text = _sub_assignments(text, assignment)
    return Redaction(text, counts)


def _sub_assignments(text: str, repl: Callable[[re.Match[str]], str]) -> str:
    """``_ASSIGNMENT.sub(repl, text)``, trying the pattern only where a match can start: at
    the first character of a name holding a secret keyword (a match starts at a name, since
    no name character may precede it). A full ``sub`` tries every position of the text."""
    out: list[str] = []
    last = 0
    tried: set[int] = set()
    ascii_text = text.isascii()
    # ASCII text: lower-cased once, the keywords are found case-sensitively (much faster
    # than ignoring case in the regex); other text keeps the regex's own case folding
    hits = (
        _NAME_KEYWORD_LOWER.finditer(text.lower()) if ascii_text else _NAME_KEYWORD.finditer(text)
    )
    for hit in hits:
        start = hit.start()
        if ascii_text:
            while start > 0 and text[start - 1] in _NAME_CHARS:
                start -= 1
        else:
            while start > 0 and _NAME_CHAR.match(text, start - 1):
                start -= 1
        if start < last or start in tried:
            continue
        tried.add(start)
        m = _ASSIGNMENT.match(text, start)
        if m is None:
            continue
        out.append(text[last : m.start()])
        out.append(repl(m))
        last = m.end()
        if m.end() == m.start():  # never: a match holds a name and a value
            last += 1
    out.append(text[last:])
    return "".join(out)


def redact_text(text: str) -> str:
    if not _triggered(text):  # most text: no need for a Redaction and its counts
        return text
    return redact(text).text


def fence(text: str, *tags: str) -> str:
    """``text`` with anything that could close one of its delimiters ``tags`` neutralised
    (in any case or spacing: ``</TAG >`` and ``< / tag>`` read as closing tags too)."""
    names = "|".join(re.escape(t) for t in tags)
    return re.sub(rf"<(\s*)/(?=\s*(?:{names}))", r"<\1\\/", text, flags=re.IGNORECASE)


class DenyList:
    """The ``[scan] deny`` globs (gitignore-style), matched against repo-relative paths."""

    def __init__(self, globs: Iterable[str]) -> None:
        self.globs = tuple(globs)
        self._spec = pathspec.GitIgnoreSpec.from_lines(self.globs)

    def denied(self, path: str) -> bool:
        return bool(self.globs) and self._spec.match_file(path)


def unsendable(data: bytes, max_bytes: int) -> str | None:
    """Why these bytes must not be sent (binary, oversized), or None."""
    if len(data) > max_bytes:
        return f"over the size limit ({len(data):,} bytes > {max_bytes:,})"
    if b"\0" in data[:8192]:
        return "binary file (NUL bytes)"
    return None
