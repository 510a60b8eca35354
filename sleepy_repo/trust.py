"""Which repositories' own config the user trusted (``sleepy-repo trust``), like direnv's
``allow``: a record keyed by the repo root's real path and the sha256 of the config file's
bytes, so any change to the file (a ``git pull``) needs trust again.

The record is ``$XDG_DATA_HOME/sleepy-repo/trusted.json`` (default
``~/.local/share/sleepy-repo/trusted.json``), replaced atomically on every change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleepy_repo.errors import ConfigError

log = logging.getLogger(__name__)

TRUST_FILE = "trusted.json"
TRUST_VERSION = 1


def data_dir() -> Path:
    """``$XDG_DATA_HOME/sleepy-repo`` (default ``~/.local/share/sleepy-repo``)."""
    env = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(env) if env and Path(env).is_absolute() else Path.home() / ".local" / "share"
    return base / "sleepy-repo"


def trust_path() -> Path:
    return data_dir() / TRUST_FILE


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TrustEntry:
    """One trusted repository config."""

    root: str  # the repo root's real path
    sha256: str  # of the config file's bytes when it was trusted
    trusted_at: float


def _key(root: Path) -> str:
    return os.path.realpath(root)


def _load() -> dict[str, TrustEntry]:
    path = trust_path()
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # an unreadable record trusts nothing; `sleepy-repo trust` rewrites it
        log.warning("%s: cannot read the trust record (%s); no repository is trusted", path, exc)
        return {}
    repos = raw.get("repos") if isinstance(raw, dict) else None
    out: dict[str, TrustEntry] = {}
    if isinstance(repos, dict):
        for root, entry in repos.items():
            if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                at = entry.get("trusted_at")
                out[root] = TrustEntry(root, entry["sha256"], float(at) if at else 0.0)
    return out


def _save(entries: dict[str, TrustEntry]) -> None:
    path = trust_path()
    data = {
        "version": TRUST_VERSION,
        "repos": {
            k: {"sha256": e.sha256, "trusted_at": e.trusted_at} for k, e in sorted(entries.items())
        },
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".trusted-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = ""
        finally:
            if tmp:
                Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the trust record: {exc}") from None


def is_trusted(root: Path, config_bytes: bytes) -> bool:
    """Whether the user trusted exactly these config bytes for this repository."""
    entry = _load().get(_key(root))
    return entry is not None and entry.sha256 == digest(config_bytes)


def entry_for(root: Path) -> TrustEntry | None:
    return _load().get(_key(root))


def trust(root: Path, config_bytes: bytes) -> TrustEntry:
    """Trust these config bytes for ``root`` (replacing an earlier trust of the repo)."""
    entries = _load()
    entry = TrustEntry(_key(root), digest(config_bytes), time.time())
    entries[entry.root] = entry
    _save(entries)
    return entry


def revoke(root: Path) -> bool:
    """Forget the trust of ``root``; whether there was one."""
    entries = _load()
    if entries.pop(_key(root), None) is None:
        return False
    _save(entries)
    return True
