"""Who owns a row or a file another process left behind, and whether that process still runs.

A process that is killed (``kill -9``, an out-of-memory kill, a power cut) cannot clean up,
so what it leaves (budget reservations, temporary files) names its owner: the PID plus the
process's identity, ``<boot id>/<start time>`` on Linux (from ``/proc``), so a PID reused
by a later process, or one from before a reboot, is not mistaken for the owner. Elsewhere
the identity is empty and liveness falls back to ``os.kill(pid, 0)``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

PROC = Path("/proc")


@functools.cache
def boot_id() -> str:
    """This boot's id (Linux), or ""."""
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from ``/proc``, or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the name in (...) may hold spaces
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def identity(pid: int | None = None) -> str:
    """``<boot id>/<start time>`` of ``pid`` (default: this process), or "" without /proc."""
    st = _stat(os.getpid() if pid is None else pid)
    return f"{boot_id()}/{st[1]}" if st and boot_id() else ""


def alive(pid: int, ident: str = "") -> bool:
    """Whether the process that recorded ``pid`` (and ``ident``, from ``identity``) runs."""
    if pid <= 0:
        return True  # not a process we can judge: keep what it owns
    if ident and boot_id():
        boot, _, start = ident.partition("/")
        if boot != boot_id():
            return False  # recorded before a reboot
        st = _stat(pid)
        return st is not None and st[0] != "Z" and st[1] == start
    if boot_id():  # /proc exists: a zombie is dead, though os.kill still reaches it
        st = _stat(pid)
        return st is not None and st[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
