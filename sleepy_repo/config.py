"""Configuration: ``<repo>/.sleepy/config.toml``, with defaults for every value.

Unknown keys and wrong types are errors that name the file, the key and what is expected,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sleepy_repo.errors import ConfigError

CONFIG_DIR = ".sleepy"
CONFIG_FILE = "config.toml"

DEFAULT_EXCLUDE: tuple[str, ...] = (
    "vendor/",
    "third_party/",
    "node_modules/",
    "dist/",
    "build/",
    "*.min.js",
    "*.min.css",
    "*.bundle.js",
    "*_pb2.py",
    "*.pb.go",
    "*.generated.*",
)
DEFAULT_DENY: tuple[str, ...] = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "*credentials*",
    "*.p12",
    "*.pfx",
)
BACKENDS = ("static", "fake", "anthropic", "local")
EFFORTS = ("brief", "standard", "deep")


@dataclass(frozen=True)
class ScanConfig:
    max_file_bytes: int = 1_000_000
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # gitignore-style patterns
    deny: tuple[str, ...] = DEFAULT_DENY  # never sent to a model (see redact)


@dataclass(frozen=True)
class NotesConfig:
    backend: str = "static"
    effort: str = "standard"
    model: str = ""
    commit: bool = False  # stage the markdown mirror from the pre-commit hook


@dataclass(frozen=True)
class RetrieveConfig:
    budget: int = 1500


@dataclass(frozen=True)
class StoreConfig:
    path: str = CONFIG_DIR  # relative to the repo root, or absolute


@dataclass(frozen=True)
class Config:
    scan: ScanConfig = field(default_factory=ScanConfig)
    notes: NotesConfig = field(default_factory=NotesConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

    def store_dir(self, root: Path) -> Path:
        p = Path(self.store.path)
        return p if p.is_absolute() else root / p


_SECTIONS: dict[str, type] = {
    "scan": ScanConfig,
    "notes": NotesConfig,
    "retrieve": RetrieveConfig,
    "store": StoreConfig,
}


def _coerce(source: Path, section: str, key: str, value: Any, default: Any) -> Any:
    where = f"{source}: [{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{where} must be a positive integer, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _section(source: Path, name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{name}] must be a table")
    defaults = cls()
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key [{name}] {key!r}; known keys: {', '.join(sorted(known))}"
            )
        values[key] = _coerce(source, name, key, value, getattr(defaults, key))
    return cls(**values)


def parse_config(text: str, source: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    sections: dict[str, Any] = {}
    for name, raw in data.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{name}]; known sections: {', '.join(_SECTIONS)}"
            )
        sections[name] = _section(source, name, _SECTIONS[name], raw)
    config = Config(**sections)
    if config.notes.backend not in BACKENDS:
        raise ConfigError(
            f"{source}: [notes] backend must be one of {', '.join(BACKENDS)}, "
            f"got {config.notes.backend!r}"
        )
    if config.notes.effort not in EFFORTS:
        raise ConfigError(
            f"{source}: [notes] effort must be one of {', '.join(EFFORTS)}, "
            f"got {config.notes.effort!r}"
        )
    return config


def load_config(root: Path) -> Config:
    """The repo's config, or the defaults when it has none."""
    path = root / CONFIG_DIR / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, path)


DEFAULT_CONFIG_TOML = """\
# sleepy-repo configuration. Every key is optional; these are the defaults.

[notes]
# static (no model) | anthropic | local. A key in the environment never switches a model on.
backend = "static"
# brief | standard | deep (model backends only)
effort = "standard"

[scan]
# Files larger than this (bytes) are skipped.
max_file_bytes = 1000000
# gitignore-style patterns, on top of .gitignore.
exclude = [{exclude}]

[retrieve]
# Default token budget of `context` and `ask`.
budget = 1500
"""


def default_config_toml() -> str:
    return DEFAULT_CONFIG_TOML.format(exclude=", ".join(f'"{p}"' for p in DEFAULT_EXCLUDE))
