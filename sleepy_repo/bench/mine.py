"""``sleepy-repo bench mine``: localization cases from a repository's git history.

A case is ``{"state", "commit", "query", "gold_files"}``: the question is the commit
message, the state is the commit's parent and the gold files are the source files the
commit modified. A strategy that localizes well, given the state and the query, serves the
gold files first.

History is read with one ``git log --no-renames --name-status`` over ``--rev`` (default
``HEAD``: every commit reachable from it, newest first; ``--first-parent`` to follow only
first parents). A commit becomes a case when it
passes every filter below; each one can be changed with the flag in brackets:

* **not a merge**, and not the root commit (it has no parent state);
* **source files only count**: a source file is one sleepy-repo parses
  (``sleepy_repo.parse.languages.language_for_path``: Python, JS, TS/TSX, Go, Rust) that is
  not a test. Tests match gitignore-style globs (``--test-glob``, added to the defaults
  unless ``--no-default-test-globs``): ``test/``, ``tests/``, ``testing/``,
  ``__tests__/``, ``testdata/``, ``test_*.py``, ``*_test.py``, ``conftest.py``,
  ``*.test.*``, ``*.spec.*``, ``*_test.go``, ``*_test.rs``;
* **1 to 4 modified source files** (``--min-files``/``--max-files``) and **no source file
  added or deleted**. Renames count as an add plus a delete. Other files (docs, tests,
  config, changelogs) may change freely;
* **a descriptive message**: at least 25 characters after cleaning
  (``--min-message-chars``);
* **not a chore**, by keyword rules on the subject line (``--allow KIND`` turns one off):
  ``version-bump`` (bump/release/prepare ... version or x.y), ``typo`` (typo, fix spelling),
  ``style`` (style:, lint, pep8, flake8, whitespace, isort, pre-commit ...), ``format``
  (reformat, apply/run black/prettier/gofmt/rustfmt ...), ``ci`` (CI, GitHub Actions,
  Travis, AppVeyor, workflows ...), ``docs`` (docs, documentation, docstrings, README,
  changelog, or a subject starting with "Document");
* **at most 2 cases per identical gold set** (``--max-per-gold``), keeping the newest;
* **the most recent N** (``-n``) cases that pass, written oldest first.

``--rejected FILE`` writes every walked commit that was not kept, with all the reasons it
failed (``merge``, ``root``, ``adds-source``, ``deletes-source``, ``no-modified-source``,
``too-few-files``, ``too-many-files``, ``short-message``, a keyword rule's name, or
``duplicate-gold``); a summary of the counts goes to stderr.

Cleaning the message (the query): URLs are removed, and so are issue and PR references:
``(#12)``, ``#12``, ``owner/repo#12``, ``GH-12`` and closing phrases such as ``fixes #3``
or ``Closes: GH-3``. A trailing block of git trailers (``Signed-off-by:``,
``Co-authored-by:`` ...) is dropped. Then white space is tidied: runs of spaces collapse, no
space is left before punctuation, lines without a letter or digit are dropped, lines are
stripped and blank lines collapse to one.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pathspec

from sleepy_repo.errors import RepoError, SleepyError
from sleepy_repo.parse.languages import language_for_path
from sleepy_repo.scan import TEST_GLOBS

DEFAULT_TEST_GLOBS: tuple[str, ...] = TEST_GLOBS

_VERSION = r"v?\d+\.\d+(?:\.\d+)*\S*"
#: Keyword rules on the subject line; a match rejects the commit with the rule's name.
SUBJECT_RULES: dict[str, re.Pattern[str]] = {
    "version-bump": re.compile(
        rf"\bbump(?:s|ed|ing)?\b.*\b(?:version|{_VERSION})"
        rf"|^(?:release|releasing|released|prepare|preparing|start|starting|begin)\b.*"
        rf"\b(?:version|{_VERSION})"
        rf"|^(?:version\s*)?{_VERSION}$"
        r"|^(?:chore|build)(?:\(.*?\))?!?:\s*(?:release|bump)",
        re.IGNORECASE,
    ),
    "typo": re.compile(
        r"\btypos?\b|\bspelling (?:fix(?:es)?|mistakes?|errors?)\b"
        r"|\bfix(?:es|ed)? (?:the )?spelling\b",
        re.IGNORECASE,
    ),
    "style": re.compile(
        r"^style(?:\(.*?\))?!?:|\b(?:code style|coding style|style fix(?:es)?|fix(?:ed)? style"
        r"|pep ?8|flake8|pylint|eslint|clippy|lint(?:s|ing|er)?|whitespace|isort|pyupgrade"
        r"|pre-commit)\b",
        re.IGNORECASE,
    ),
    "format": re.compile(
        r"\b(?:re-?format(?:s|ted|ting)?|(?:apply|applied|run|ran|with|using)\s+"
        r"(?:black|prettier|gofmt|rustfmt|yapf|autopep8|ruff format|clang-format)"
        r"|format(?:ted|ting)? (?:the )?(?:code|source|files))\b"
        r"|^(?:black|prettier|gofmt|rustfmt|cargo fmt)\b",
        re.IGNORECASE,
    ),
    "ci": re.compile(
        r"^ci(?:\(.*?\))?!?:|\b(?:ci|travis|appveyor|circleci|azure pipelines|github actions?"
        r"|gh actions?|workflows?|tox\.ini|codecov)\b",
        re.IGNORECASE,
    ),
    "docs": re.compile(
        r"^docs?(?:\(.*?\))?!?:|\b(?:docs?|documentation|docstrings?|readme|changelog"
        r"|changes\.rst)\b|^document(?:s|ed|ing)?\b",
        re.IGNORECASE,
    ),
}

REASONS: dict[str, str] = {
    "merge": "merge commit",
    "root": "root commit (no parent state)",
    "adds-source": "adds a source file (renames count as add + delete)",
    "deletes-source": "deletes a source file (renames count as add + delete)",
    "no-modified-source": "modifies no source file",
    "too-many-files": "modifies more source files than --max-files",
    "too-few-files": "modifies fewer source files than --min-files",
    "short-message": "message shorter than --min-message-chars after cleaning",
    **{k: f"subject matches the {k!r} keyword rule" for k in SUBJECT_RULES},
    "duplicate-gold": "more than --max-per-gold cases with this gold set",
}


@dataclass(frozen=True)
class MineOptions:
    n: int = 100
    rev: str = "HEAD"
    first_parent: bool = False
    min_files: int = 1
    max_files: int = 4
    min_message_chars: int = 25
    max_per_gold: int = 2
    test_globs: tuple[str, ...] = DEFAULT_TEST_GLOBS
    allow: frozenset[str] = frozenset()  # subject rules turned off


@dataclass(frozen=True)
class Case:
    """A localization case: a mined commit (``commit`` set; gold lines from its diff) or a
    written question (no ``commit``; gold lines are the spans of ``gold_symbols``)."""

    state: str
    commit: str | None
    query: str
    gold_files: list[str]
    gold_symbols: list[str] = field(default_factory=list)  # qualnames in the gold files
    id: str | None = None  # a written question's name (a mined case is named by its commit)

    @property
    def label(self) -> str:
        """A short name for logs and reasons: the commit's 12 hex digits, else the id."""
        if self.commit:
            return self.commit[:12]
        return self.id or self.query.splitlines()[0][:40]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("gold_symbols", "id"):
            if not d[key]:
                del d[key]
        return d


@dataclass(frozen=True)
class Rejected:
    commit: str
    subject: str
    reasons: list[str]


@dataclass
class MineResult:
    cases: list[Case]  # oldest first
    rejected: list[Rejected] = field(default_factory=list)  # newest first, as walked
    walked: int = 0

    def reason_counts(self) -> dict[str, int]:
        return dict(Counter(r for rej in self.rejected for r in rej.reasons))


# -- cleaning ------------------------------------------------------------------------------
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_REF = r"(?:[\w.-]+/[\w.-]+)?#\d+|\bGH-\d+\b"
_CLOSING = re.compile(
    rf"\b(?:fix(?:es|ed)?|close[sd]?|resolve[sd]?|refs?|see|related to|part of)\b:?\s*"
    rf"(?:{_REF})(?:\s*(?:,|and)\s*(?:{_REF}))*",
    re.IGNORECASE,
)
_PAREN_REF = re.compile(rf"\(\s*(?:{_REF})(?:\s*,\s*(?:{_REF}))*\s*\)", re.IGNORECASE)
_BARE_REF = re.compile(rf"(?<![\w&]){_REF}", re.IGNORECASE)
_TRAILER = re.compile(r"^[A-Za-z][A-Za-z0-9-]*: \S")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")


def clean_message(message: str) -> str:
    """The commit message as a query: no URLs, no issue/PR references, no trailers."""
    paragraphs = message.strip().split("\n\n")
    if len(paragraphs) > 1 and all(
        _TRAILER.match(line) for line in paragraphs[-1].strip().splitlines()
    ):
        paragraphs = paragraphs[:-1]
    text = "\n\n".join(paragraphs)
    text = _URL.sub("", text)
    text = _CLOSING.sub("", text)
    text = _PAREN_REF.sub("", text)
    text = _BARE_REF.sub("", text)
    text = _EMPTY_BRACKETS.sub("", text)
    lines = [
        re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"[ \t]+", " ", line)).strip()
        for line in text.splitlines()
    ]
    lines = [line if re.search(r"\w", line) else "" for line in lines]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def subject_rules(subject: str, allow: Iterable[str] = ()) -> list[str]:
    """Names of the keyword rules the subject line matches."""
    skip = set(allow)
    return [name for name, rx in SUBJECT_RULES.items() if name not in skip and rx.search(subject)]


# -- git -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogEntry:
    sha: str
    parents: list[str]
    message: str
    changes: list[tuple[str, str]]  # (status letter, path), renames split into D + A


def _git_log(repo: Path, opts: MineOptions) -> Iterator[LogEntry]:
    """Commits reachable from ``opts.rev``, newest first, read as a stream."""
    cmd = [
        "git",
        "-C",
        str(repo),
        "-c",
        "core.quotePath=false",
        "log",
        "--no-renames",
        "--name-status",
        "-z",
        "--format=%x1e%H%x1f%P%x1f%B%x1f",
    ]
    if opts.first_parent:
        cmd.append("--first-parent")
    cmd += [opts.rev, "--"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    buf = b""
    try:
        while True:
            chunk = proc.stdout.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            *records, buf = buf.split(b"\x1e")
            for rec in records:
                if rec:
                    yield _parse_record(rec)
        if buf:
            yield _parse_record(buf)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        _, stderr = proc.communicate()
    if proc.returncode not in (0, -9) and stderr:
        raise RepoError(f"git log failed in {repo}: {stderr.decode(errors='replace').strip()}")


def _parse_record(rec: bytes) -> LogEntry:
    sha, parents, message, rest = rec.split(b"\x1f", 3)
    fields = [f for f in rest.lstrip(b"\0\n").split(b"\0") if f != b""]
    changes = []
    for i in range(0, len(fields) - 1, 2):
        status = fields[i].decode()[:1]
        changes.append((status, fields[i + 1].decode("utf-8", errors="surrogateescape")))
    return LogEntry(
        sha=sha.decode().strip(),
        parents=parents.decode().split(),
        message=message.decode("utf-8", errors="replace"),
        changes=changes,
    )


# -- filters -------------------------------------------------------------------------------
def make_test_matcher(globs: Iterable[str]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(list(globs))


def is_source(path: str, tests: pathspec.GitIgnoreSpec) -> bool:
    return language_for_path(path) is not None and not tests.match_file(path)


def judge(
    entry: LogEntry, opts: MineOptions, tests: pathspec.GitIgnoreSpec
) -> tuple[Case | None, list[str]]:
    """The case a commit yields (None if rejected) and every reason it is rejected for."""
    reasons: list[str] = []
    if len(entry.parents) > 1:
        return None, ["merge"]
    if not entry.parents:
        reasons.append("root")
    source = [(s, p) for s, p in entry.changes if is_source(p, tests)]
    if any(s == "A" for s, _ in source):
        reasons.append("adds-source")
    if any(s == "D" for s, _ in source):
        reasons.append("deletes-source")
    modified = sorted({p for s, p in source if s in ("M", "T")})
    if not modified:
        reasons.append("no-modified-source")
    elif len(modified) < opts.min_files:
        reasons.append("too-few-files")
    elif len(modified) > opts.max_files:
        reasons.append("too-many-files")
    query = clean_message(entry.message)
    if len(query) < opts.min_message_chars:
        reasons.append("short-message")
    subject = entry.message.strip().splitlines()[0] if entry.message.strip() else ""
    reasons += subject_rules(subject, opts.allow)
    if reasons:
        return None, reasons
    return Case(state=entry.parents[0], commit=entry.sha, query=query, gold_files=modified), []


def mine(repo: Path, opts: MineOptions) -> MineResult:
    """The most recent ``opts.n`` cases of ``repo``'s history (see the module docstring)."""
    if opts.n <= 0:
        raise SleepyError(f"-n must be a positive number of cases, got {opts.n}")
    check = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{opts.rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise RepoError(f"{repo} is not a git repository with a commit {opts.rev!r}")
    unknown = set(opts.allow) - set(SUBJECT_RULES)
    if unknown:
        raise SleepyError(
            f"unknown keyword rules {sorted(unknown)}; known: {', '.join(SUBJECT_RULES)}"
        )
    tests = make_test_matcher(opts.test_globs)
    result = MineResult(cases=[])
    per_gold: Counter[tuple[str, ...]] = Counter()
    for entry in _git_log(repo, opts):
        result.walked += 1
        case, reasons = judge(entry, opts, tests)
        if case is not None:
            key = tuple(case.gold_files)
            if per_gold[key] >= opts.max_per_gold:
                case, reasons = None, ["duplicate-gold"]
            else:
                per_gold[key] += 1
        if case is None:
            subject = entry.message.strip().splitlines()[0] if entry.message.strip() else ""
            result.rejected.append(Rejected(entry.sha, subject, reasons))
            continue
        result.cases.append(case)
        if len(result.cases) >= opts.n:
            break
    result.cases.reverse()
    return result


def write_cases(cases: Iterable[Case], out: TextIO) -> None:
    for case in cases:
        out.write(json.dumps(case.to_json(), ensure_ascii=False) + "\n")


def write_rejected(rejected: Iterable[Rejected], out: TextIO) -> None:
    for rej in rejected:
        line = {"commit": rej.commit, "subject": rej.subject, "reasons": rej.reasons}
        out.write(json.dumps(line, ensure_ascii=False) + "\n")


def read_cases(path: Path) -> list[Case]:
    cases = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                commit = d.get("commit")
                case = Case(
                    state=str(d["state"]),
                    commit=str(commit) if commit else None,
                    query=str(d["query"]),
                    gold_files=[str(p) for p in d["gold_files"]],
                    gold_symbols=[str(s) for s in d.get("gold_symbols", [])],
                    id=str(d["id"]) if d.get("id") else None,
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SleepyError(
                    f"{path}:{n}: not a case line ({{state, commit, query, gold_files}} or "
                    f"{{state, query, gold_files, gold_symbols}}): {exc}"
                ) from None
            if case.commit is None and not case.gold_symbols:
                raise SleepyError(f"{path}:{n}: a case without a commit needs gold_symbols")
            cases.append(case)
    return cases
