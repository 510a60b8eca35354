"""History notes: for each module, the subjects of the commits that last changed its lines
(``git blame``), so a question phrased like a past commit message finds the code that
commit changed. Computed at refresh time (idle time), never at question time.

A module's history is kept for its blob (``history_files``): unchanged files are not
blamed again. Lines not committed yet have no history; when HEAD moves, a module that had
such lines is blamed again, so the commit that took them in is found.

Only commits reachable from HEAD are read (blame of the working tree), so the history
never holds a commit that comes after the checked-out state.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sleepy_repo.redact import redact_text
from sleepy_repo.store import NoteStore

log = logging.getLogger(__name__)

UNCOMMITTED = "0" * 40
BLAME_TIMEOUT = 60.0
REFRESH_SECONDS = 30.0  # of blaming per refresh; a cold index of a large repo takes several
PATHS_SECONDS = 5.0  # of blaming when a refresh names its paths (a save in an editor)


@dataclass(frozen=True)
class Stretch:
    """Lines start..end (1-based, inclusive) of the working tree last changed by ``commit``."""

    start_line: int
    end_line: int
    commit: str
    summary: str


def blame(
    root: Path, path: str, timeout: float = BLAME_TIMEOUT
) -> tuple[list[Stretch], bool] | None:
    """The stretches of ``path`` by the commit that last changed them, and whether some
    lines are not committed yet; None when git cannot blame it (untracked, or an error)."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "blame", "--porcelain", "--", path],
            capture_output=True,
            timeout=min(timeout, BLAME_TIMEOUT),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.info("git blame %s failed: %s", path, exc)
        return None
    if proc.returncode != 0:
        return None
    return parse_porcelain(proc.stdout.decode("utf-8", "replace").splitlines())


def parse_porcelain(lines: Sequence[str]) -> tuple[list[Stretch], bool]:
    """``git blame --porcelain`` output as stretches (consecutive lines of one commit
    merged), without uncommitted lines; and whether there were any."""
    summaries: dict[str, str] = {}
    groups: list[tuple[str, int, int]] = []  # (commit, first final line, line count)
    current = ""
    for line in lines:
        if line.startswith("\t"):
            continue
        parts = line.split(" ")
        if len(parts) == 4 and len(parts[0]) == 40 and parts[2].isdigit() and parts[3].isdigit():
            current = parts[0]
            groups.append((current, int(parts[2]), int(parts[3])))
        elif line.startswith("summary ") and current:
            summaries.setdefault(current, line[len("summary ") :])
    out: list[Stretch] = []
    dirty = False
    for commit, start, count in sorted(groups, key=lambda g: g[1]):
        if commit == UNCOMMITTED:
            dirty = True
            continue
        end = start + count - 1
        if out and out[-1].commit == commit and out[-1].end_line + 1 == start:
            out[-1] = Stretch(out[-1].start_line, end, commit, out[-1].summary)
        else:
            # a commit subject is repository text: it is served, so it is redacted
            out.append(Stretch(start, end, commit, redact_text(summaries.get(commit, ""))))
    return out, dirty


def update_history(
    root: Path,
    store: NoteStore,
    head: str | None,
    paths: Iterable[str] | None = None,
    *,
    seconds: float = REFRESH_SECONDS,
) -> int:
    """Blame the indexed modules whose history is missing for their blob (or had
    uncommitted lines before ``head``, the commit checked out, moved there), for at most
    ``seconds`` (the rest waits for the next refresh); ``paths`` limits it. Returns how
    many were blamed."""
    if not head:
        return 0  # no commit yet
    now = head
    only = set(paths) if paths is not None else None
    with store.read() as conn:
        todo = store.history_todo(conn, now)
    todo = [(p, b) for p, b in todo if only is None or p in only]
    done = 0
    deadline = time.monotonic() + seconds
    for path, blob in todo:
        if time.monotonic() > deadline:
            log.info("history: %d modules left for the next refresh", len(todo) - done)
            break
        result = blame(root, path, timeout=max(1.0, deadline - time.monotonic()))
        # a file git cannot blame yet (untracked) is tried again when HEAD moves
        stretches, dirty = result if result is not None else ([], True)
        with store.write() as conn:
            store.put_history(conn, path, blob, now, dirty, stretches)
        done += 1
    return done
