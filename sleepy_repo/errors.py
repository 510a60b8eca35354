"""Errors sleepy-repo raises on purpose.

    SleepyError                 base: an expected failure with an actionable message
    ├── ConfigError             .sleepy/config.toml has an unknown key, a wrong type or bad TOML
    ├── RepoError               the path is not a usable repository or directory
    ├── StoreError              the note store cannot be opened or written
    │   └── StoreCorruptError   index.db is corrupt, foreign or from a newer version
    ├── BudgetError             a model call would exceed the configured budget
    └── ModelError              a model backend failed or replied with unusable output

``cli.main`` maps SleepyError to exit code 2, Ctrl-C to 130 and anything else (a bug) to 3.
"""

from __future__ import annotations


class SleepyError(Exception):
    """An expected failure. Its message says what to do about it."""


class ConfigError(SleepyError):
    pass


class RepoError(SleepyError):
    pass


class StoreError(SleepyError):
    pass


class StoreCorruptError(StoreError):
    pass


class BudgetError(SleepyError):
    pass


class ModelError(SleepyError):
    pass
