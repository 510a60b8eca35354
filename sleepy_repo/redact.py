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
``fence(text, *tags)`` neutralises anything in it that could close one of them. In
markdown, ``md_code`` and ``md_fence`` quote it in code spans and fences that its own
backticks cannot close.
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
    ("gitlab-token", re.compile(r"\bgl(?:pat|dt|ptt|rt|cbt|oas)-[0-9A-Za-z_-]{20,}")),
    ("huggingface-token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("npm-token", re.compile(r"\bnpm_[A-Za-z0-9]{36}")),
    ("pypi-token", re.compile(r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}")),
    ("sendgrid-key", re.compile(r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}")),
    ("digitalocean-token", re.compile(r"\bdo[por]_v1_[a-f0-9]{64}")),
    ("shopify-token", re.compile(r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}")),
    ("telegram-bot-token", re.compile(r"\b[0-9]{8,10}:AA[0-9A-Za-z_-]{33}")),
    # an HTTP credential after its scheme: `Authorization: Bearer <v>`, `"Basic <v>"`
    (
        "http-credential",
        re.compile(r"\b(?:[Bb]earer|BEARER|[Bb]asic|BASIC)[ \t]+(?P<v>[A-Za-z0-9._~+/-]{8,}=*)"),
    ),
    # a user and a password given as a pair to something named auth: `auth=("u", "v")`,
    # `HTTPBasicAuth("u", "v")`, `BasicAuth(login="u", password="v")` is the assignment rule
    (
        "auth-pair",
        re.compile(
            r"(?i:auth)(?![A-Za-z0-9_])\s*(?:=\s*)?[(\[]\s*[bBuU]?(['\"])[^'\"\n]*\1\s*,\s*"
            r"[bBuU]?(['\"])(?P<v>[^'\"\n]{1,200})\2"
        ),
    ),
    # a password in prose: "the admin password is `hunter2`", "pw: s3cret!"
    (
        "password-in-text",
        re.compile(
            r"(?i:\b(?:password|passwd|passphrase|pwd|pw)\b)[ \t]+(?:is|was)[ \t]+"
            r"(?P<q>[`'\"]?)(?P<v>[^\s`'\"]{3,100})"
        ),
    ),
)


# NAME = value, NAME: value, "NAME": "value", NAME => value, os.environ["NAME"] = value,
# setdefault("NAME", value), getenv("NAME", value), where NAME looks secret.
_KEYWORDS = r"key|secret|token|passw(?:or)?d|pwd|credential|auth|pass|pw"
# a run of name characters holding a keyword: the lookahead finds the keyword, the run is
# taken whole and never given back (possessive), so a long run costs linear time, not the
# quadratic search over where its keyword sits
_SECRET_NAME = r"(?=[A-Za-z0-9_.-]*?(?:" + _KEYWORDS + r"))[A-Za-z0-9_.-]++"
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<name>" + _SECRET_NAME + r")(?P<q1>['\"])?\]?"
    r"(?:\s*:(?!:)\s*&?(?:'[a-z_]+\s+)?[A-Za-z_][\w\[\]<>., |&]*?"  # `API_KEY: str = `, Rust
    r"|[ \t]+\*?[A-Za-z_][\w.\[\]*]*(?=\s*=[^=]))?"  # a Go type: `var apiKey string = `
    r"\s*(?::=|=>|=|:(?!:)|(?(q1)(?P<comma>,)|(?!)))\s*"  # a quoted name: or a comma
    r"(?:(?P<prefix>[bBrRuUfF]{1,2})(?=['\"]))?"  # b"...", r'...', f"..."
    r"(?:(?P<tq>'''|\"\"\")\n?(?P<tquoted>[^\n]{1,200}?)\n?(?P=tq)"
    r"|(?P<quote>['\"])(?P<quoted>[^'\"\n]{1,200})(?P=quote)"
    r"|(?P<bare>[^\s'\",;)}\]]{8,}))",
    re.IGNORECASE,
)
# where a secret name can be: its keyword (what every match holds), and the characters a
# name is made of (as ``_ASSIGNMENT`` reads them, ignoring case)
_NAME_KEYWORD = re.compile(_KEYWORDS, re.IGNORECASE)
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
    "gitlab-token": ("glpat-", "gldt-", "glptt-", "glrt-", "glcbt-", "gloas-"),
    "huggingface-token": ("hf_",),
    "npm-token": ("npm_",),
    "pypi-token": ("pypi-",),
    "sendgrid-key": ("SG.",),
    "digitalocean-token": ("_v1_",),
    "shopify-token": ("shpat_", "shpca_", "shppa_", "shpss_"),
    "telegram-bot-token": (":AA",),
    "http-credential": ("earer", "EARER", "asic", "ASIC"),
    "auth-pair": ("auth", "Auth", "AUTH"),
    "password-in-text": ("ass", "ASS", "pw", "PW", "Pw", "wd", "WD"),
}
_PLACEHOLDER = re.compile(r"^(?:\$\{?[A-Za-z_]|<[^>]+>$|\{|%\(|\[REDACTED:|\*+$|x+$|\.\.\.)")
# a value that is code, not data: a call, an attribute path, an environment lookup
_CODE_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\(|\[|$)")


def _plain(v: str) -> bool:
    """A word, an identifier or a call (``required``, ``self.value``, ``info[2]``,
    ``click.prompt(``), not a secret."""
    m = _CODE_VALUE.match(v.rstrip(".,;:"))
    return m is not None and (m.group(0)[-1:] in "([" or not any(ch.isdigit() for ch in v))


def _wordy(v: str) -> bool:
    """Whether ``v`` reads as words (``access_token``, ``HTTPBasicAuthHandler``): at most one
    of its camel-case or snake-case pieces is shorter than 3 characters. Random letters of
    mixed case break into many short pieces (``kjvAFeKid`` -> kjv, A, Fe, Kid), so a quoted
    key of letters only is not taken for an identifier (1 in 270 random 32-character
    alphanumeric keys has no digit; of those letters-only keys, about 1 in 270 still reads
    as words, and 1 in 28 of 20 characters)."""
    return sum(1 for w in _WORD.findall(v) if len(w) <= 2) <= 1


def _alnum_classes(v: str) -> int:
    """How many of lower case, upper case and digits ``v`` holds."""
    return sum(1 for test in (str.islower, str.isupper, str.isdigit) if any(map(test, v)))


# what a match of a kind must look like to be redacted (kinds not named here: any match);
# a kind with a group ``v`` redacts that group only
_VALUE_CHECKS: dict[str, Callable[[re.Match[str]], bool]] = {
    "huggingface-token": lambda m: _char_classes(m.group(0)) >= 2,
    "http-credential": lambda m: (
        _alnum_classes(m["v"]) >= 2 and not (_plain(m["v"]) and _wordy(m["v"]))
    ),
    "auth-pair": lambda m: not _PLACEHOLDER.match(m["v"]),
    "password-in-text": lambda m: (
        not _PLACEHOLDER.match(m["v"]) and (bool(m["q"]) or not _plain(m["v"]))
    ),
}


# the words of a name (``db_pass`` -> db, pass; ``userPassword`` -> user, password)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
# names whose value is a password whatever it looks like: short, a plain word, a passphrase
_PASSWORD_WORDS = frozenset({"password", "passwd", "pwd", "pw", "pass", "passphrase", "passcode"})
# ... unless a later word says the value is about the password (``password_hint``)
_ABOUT_WORDS = frozenset(
    {
        "prompt", "label", "help", "hint", "message", "msg", "error", "text", "title",
        "field", "name", "placeholder", "description", "desc", "policy", "pattern", "regex",
        "format", "env", "var", "file", "path", "length", "len", "min", "max", "type",
        "url", "reset", "required", "rule", "rules", "key", "column", "col", "param",
        "attr", "option", "flag", "arg", "header", "id", "input", "style", "class", "mode",
        "strategy", "hasher", "hash", "validator", "command", "cmd", "through", "thru",
        "changed", "expired", "expiry", "confirm", "confirmation", "manager", "store",
    }
)  # fmt: skip
# a name holding one of these (anywhere, any case) is secret-looking; ``pass`` and ``pw``
# only as words of the name (``bypass`` and ``upward`` are not)
_SECRET_SUBSTRINGS = ("key", "secret", "token", "password", "passwd", "pwd", "credential", "auth")


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


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(name)]


def password_name(name: str) -> bool:
    """A name whose value is a password: a password word (``db_pass``, ``PW``,
    ``userPassword``) not followed by a word that makes the value about the password
    (``password_hint``, ``PASSWORD_ENV``)."""
    words = _words(name)
    last = max(
        (i for i, w in enumerate(words) if w in _PASSWORD_WORDS or w.startswith("password")),
        default=-1,
    )
    return last >= 0 and not any(w in _ABOUT_WORDS for w in words[last + 1 :])


def secret_name(name: str) -> bool:
    """Whether a value assigned to ``name`` may be a secret."""
    low = name.lower()
    return any(k in low for k in _SECRET_SUBSTRINGS) or password_name(name)


def looks_secret(name: str, value: str, *, quoted: bool = True) -> bool:
    """Whether ``value``, assigned to the secret-looking ``name``, looks like a real secret
    (an unquoted one: a word or an identifier is code or prose, not a password)."""
    value = value.strip()
    if not value or _PLACEHOLDER.match(value) or not secret_name(name):
        return False
    if password_name(name) and (quoted or not _plain(value)):
        # any value but an empty or placeholder one, code, or the name's own words
        if value.lower() in {*_words(name), name.lower()}:
            return False
        if " " in value:  # a passphrase, not a sentence about the password
            return len(value) <= 100 and ". " not in value.rstrip(".!?")
        return len(value) >= 3 and (
            not _CODE_VALUE.match(value)
            or any(ch.isdigit() for ch in value)
            or ("_" not in value and "." not in value and "(" not in value)
        )
    if " " in value:
        return False
    if _plain(value) and (not quoted or _wordy(value)):
        return False
    if "secret" in name.lower() and len(value) >= 8 and _char_classes(value) >= 2:
        return True
    if len(value) < 16:
        return False
    return entropy(value) >= 3.5 and _alnum_classes(value) >= 2


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
    r"sk-|AIza|_live_|_test_|eyJ|://|key|secret|token|pass|pw|credential|auth|bearer|basic|"
    r"glpat-|gldt-|glptt-|glrt-|glcbt-|gloas-|hf_|npm_|pypi-|SG\.|_v1_|shp|:AA",
    re.IGNORECASE,
)


# punctuation no trigger holds (notes put dashes and ellipses in text): as spaces, they
# leave text ASCII more often, and ASCII text takes the fast test below
_NOT_IN_TRIGGERS = str.maketrans(dict.fromkeys("\u2013\u2014\u2018\u2019\u201c\u201d\u2026", " "))


_GITLAB_PREFIXES = ("pat", "dt", "ptt", "rt", "cbt", "oas")
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
        or "pass" in low
        or "pw" in low
        or "bearer" in low
        or "basic" in low
        or "hf_" in low
        or "npm_" in low
        or "pypi-" in low
        or "sg." in low
        or "_v1_" in low
        or "shp" in low
        or ":aa" in low
        or ("gl" in low and any(f"gl{p}-" in low for p in _GITLAB_PREFIXES))
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
            check = _VALUE_CHECKS.get(kind)
            if check is not None and not check(m):
                return m.group(0)
            counts[kind] += 1  # keep the line count, so line numbers stay valid
            mark = MARK.format(kind=kind) + "\n" * m.group(0).count("\n")
            if "v" not in m.re.groupindex:
                return mark
            start, end = m.start("v") - m.start(), m.end("v") - m.start()
            return m.group(0)[:start] + mark + m.group(0)[end:]

        text = pattern.sub(sub, text)

    def assignment(m: re.Match[str]) -> str:
        group = next(g for g in ("tquoted", "quoted", "bare") if m.group(g) is not None)
        value = m.group(group)
        if "f" in (m.group("prefix") or "").lower() and "{" in value:  # an f-string: code
            return m.group(0)
        if m.group("comma") is not None and (group == "bare" or (_plain(value) and _wordy(value))):
            return m.group(0)  # ("password", "username"), ("--password", prompt=True)
        if not looks_secret(m.group("name"), value, quoted=group != "bare"):
            return m.group(0)
        counts["secret-assignment"] += 1
        start, end = m.span(group)
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
    run_end = -1  # the end of the last name run tried: its other keywords start it too
    for hit in hits:
        if hit.start() < run_end:
            continue
        start = end = hit.start()
        if ascii_text:
            while start > 0 and text[start - 1] in _NAME_CHARS:
                start -= 1
            while end < len(text) and text[end] in _NAME_CHARS:
                end += 1
        else:
            while start > 0 and _NAME_CHAR.match(text, start - 1):
                start -= 1
            while end < len(text) and _NAME_CHAR.match(text, end):
                end += 1
        run_end = end
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


def _ticks(text: str, least: int) -> str:
    """A backtick run longer than any in ``text`` (and at least ``least``)."""
    return "`" * max(least, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)


def md_code(text: str) -> str:
    """``text`` (one line) as a markdown code span that nothing in it can close."""
    ticks = _ticks(text, 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def md_fence(text: str, indent: str = "") -> list[str]:
    """``text`` as the lines of a fenced code block (each prefixed by ``indent``, e.g. to
    sit in a list item) whose fence is longer than any backtick run in it, so an injected
    fence cannot end the block early."""
    ticks = _ticks(text, 3)
    body = [f"{indent}{line}" for line in re.split(r"\r\n|\r|\n", text)]
    return [f"{indent}{ticks}text", *body, f"{indent}{ticks}"]


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
