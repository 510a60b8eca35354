"""sleepy-repo: sleep-time compute for coding agents and editors."""

from __future__ import annotations

__version__ = "0.1.0"

from sleepy_repo.api import (
    Repo,
    gc,
    get_context,
    init,
    module_notes,
    open_repo,
    refresh,
    status,
)
from sleepy_repo.errors import SleepyError

__all__ = [
    "Repo",
    "SleepyError",
    "__version__",
    "gc",
    "get_context",
    "init",
    "module_notes",
    "open_repo",
    "refresh",
    "status",
]
