"""Paths we write to stay inside the repository: no ``..``, absolute path or symlink (of
the file or of any directory above it) leads out."""

from __future__ import annotations

import os
from pathlib import Path

from sleepy_repo.errors import RepoError


def outside(root: Path, path: Path) -> Path | None:
    """Where ``path`` really is (symlinks resolved, also of a path not created yet) when
    that is outside ``root``; None when it is inside."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path if path.is_absolute() else root / path))
    if real == real_root or real_root in real.parents:
        return None
    return real


def check_inside(root: Path, path: Path, what: str) -> None:
    """Raise ``RepoError`` unless writing ``path`` (``what`` names it) stays in ``root``."""
    escape = outside(root, path)
    if escape is not None:
        raise RepoError(
            f"{what} {path} leads to {escape}, outside the repository {root} (through a "
            "symlink or `..`); nothing was written. Remove the symlink to continue"
        )
