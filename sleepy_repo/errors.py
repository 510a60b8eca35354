"""Errors sleepy-repo raises on purpose.

    SleepyError                 base: an expected failure with an actionable message
    ├── ConfigError             .sleepy/config.toml has an unknown key, a wrong type or bad TOML
    ├── RepoError               the path is not a usable repository or directory
    ├── StoreError              the note store cannot be opened or written
    │   ├── StoreMissingError   no index.db yet (read commands never create one)
    │   ├── StoreCorruptError   index.db is corrupt, foreign or from a newer version
    │   ├── StoreFullError      the disk is full (the unfinished write was rolled back)
    │   └── StoreReadOnlyError  a write to a store this process may only read
    ├── BudgetError             a model call would exceed the configured budget
    └── ModelError              a model backend failed for one module
        ├── ModelUnavailableError   the API stayed unreachable, overloaded or rate-limited
        │   │                       after the SDK's retries (the job stays queued)
        │   ├── ModelCancelledError generation was stopped on request between chunks (the
        │   │                       developer came back); the job stays queued
        │   └── ModelCrashedError   the local model's process died or stalled; the job stays
        │                           queued (three crashes on one module fail it)
        └── ModelOutputError        the model replied, but not with usable notes (the job
                                    fails; the call was billed and is in the ledger)

A ``ModelError`` carries the ``usage`` of the calls it made before failing, so billed calls
are recorded even when their notes are not.

``cli.main`` maps SleepyError to exit code 2, Ctrl-C to 130 and anything else (a bug) to 3.
"""

from __future__ import annotations

from typing import Any


class SleepyError(Exception):
    """An expected failure. Its message says what to do about it."""


class ConfigError(SleepyError):
    pass


class RepoError(SleepyError):
    pass


class StoreError(SleepyError):
    pass


class StoreMissingError(StoreError):
    pass


class StoreCorruptError(StoreError):
    pass


class StoreFullError(StoreError):
    pass


class StoreReadOnlyError(StoreError):
    pass


class BudgetError(SleepyError):
    pass


class ModelError(SleepyError):
    def __init__(self, message: str, *, usage: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.usage = usage  # sleepy_repo.notes.Usage of the calls made before the failure


class ModelUnavailableError(ModelError):
    pass


class ModelCancelledError(ModelUnavailableError):
    """A backend's ``cancel_check`` asked it to stop (``sleepy_repo.models.local``)."""


class ModelOutputError(ModelError):
    pass


class ModelCrashedError(ModelUnavailableError):
    pass
