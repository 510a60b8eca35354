"""Configuration, in layers: the defaults < the user's ``~/.config/sleepy-repo/config.toml``
< the repository's ``<repo>/.sleepy/config.toml`` < CLI flags. A repository is untrusted
input: its config may set only the harmless ``REPO_KEYS`` unless the user trusted the file
(``sleepy-repo trust``, see ``sleepy_repo.trust``); other keys are ignored with a warning.

Unknown keys and wrong types are errors that name the file, the key and what is expected,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sleepy_repo.errors import ConfigError
from sleepy_repo.safepath import outside
from sleepy_repo.trust import digest, is_trusted

log = logging.getLogger(__name__)

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


PRICE_KEYS = ("input", "output", "cache_read", "cache_write", "batch")
# USD per million tokens; ``batch`` multiplies every rate for Message Batches requests.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "claude-opus-4-5": {
        "input": 5.0,
        "output": 25.0,
        "cache_read": 0.5,
        "cache_write": 6.25,
        "batch": 0.5,
    },
    "claude-sonnet-4-5": {
        "input": 3.0,
        "output": 15.0,
        "cache_read": 0.3,
        "cache_write": 3.75,
        "batch": 0.5,
    },
    "claude-haiku-4-5": {
        "input": 1.0,
        "output": 5.0,
        "cache_read": 0.1,
        "cache_write": 1.25,
        "batch": 0.5,
    },
}


def _default_prices() -> dict[str, dict[str, float]]:
    return {m: dict(p) for m, p in DEFAULT_PRICES.items()}


@dataclass(frozen=True)
class AnthropicConfig:
    """The Anthropic backend. It runs only when chosen (``[notes] backend = "anthropic"`` or
    ``--backend anthropic``); the key comes from ``ANTHROPIC_API_KEY``."""

    model: str = "claude-sonnet-4-5"  # standard effort ([notes] model overrides every effort)
    brief_model: str = "claude-haiku-4-5"
    deep_model: str = ""  # "" = model
    base_url: str = ""  # "" = $ANTHROPIC_BASE_URL, else the SDK's default
    max_tokens: int = 2048  # per call (per part of a split module)
    concurrency: int = 4  # calls in flight at once
    max_retries: int = 3  # SDK retries of 408/409/429/5xx and connection errors
    timeout: float = 120.0  # seconds per attempt
    part_tokens: int = 12_000  # modules estimated above this are split along top-level symbols
    # Message Batches (half price, results within 24 h) for backlogs of at least this many
    # modules; 0 = never. A refresh waits up to batch_wait_seconds for the results (polling
    # every batch_poll_seconds); a batch still running is collected by a later refresh.
    batch_threshold: int = field(default=100, metadata={"min": 0})
    batch_poll_seconds: float = 30.0
    batch_wait_seconds: float = field(default=0.0, metadata={"min": 0})
    # model -> USD per million tokens (input, output, cache_read, cache_write) and the
    # batch multiplier; entries here are merged over the built-in table
    prices: dict[str, dict[str, float]] = field(default_factory=_default_prices)


LOCAL_MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4.gguf"  # what scripts/fetch_model.py fetches
LOCAL_MODEL_DIR_ENV = "SLEEPY_REPO_MODEL_DIR"


def default_model_dir() -> Path:
    """Where ``scripts/fetch_model.py`` puts models: ``$SLEEPY_REPO_MODEL_DIR``, else
    ``~/.cache/sleepy-repo/models``."""
    env = os.environ.get(LOCAL_MODEL_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sleepy-repo" / "models"


@dataclass(frozen=True)
class LocalConfig:
    """The local GGUF backend (llama-cpp-python, the ``[local]`` extra). It runs only when
    chosen (``[notes] backend = "local"`` or ``--backend local``); nothing leaves the machine
    and a call costs nothing but time."""

    # a GGUF file; "" = the model scripts/fetch_model.py fetches (see default_model_dir);
    # "~" is expanded, a relative path is relative to the current directory
    model_path: str = ""
    model: str = ""  # the name recorded in note keys; "" = the file name without .gguf
    n_ctx: int = 12288  # context window (prompt + reply), tokens
    n_threads: int = field(default=0, metadata={"min": 0})  # 0 = every core
    n_batch: int = 256  # prompt tokens evaluated per step
    max_tokens: int = 1024  # reply tokens per call (per part of a split module)
    temperature: float = field(default=0.2, metadata={"min": 0})  # 0 = greedy
    seed: int = field(default=42, metadata={"min": 0})  # sampling seed, for repeatable notes
    # modules estimated above this are split along top-level symbols; a ~500-line module is
    # one call (each part is a whole second reply, the slowest phase on a CPU)
    part_tokens: int = 6000
    overview: bool = True  # send the repo overview (README head, top modules) with each call
    # the model runs in a child process; one that sends nothing (no token, no heartbeat
    # from prompt evaluation) for this long is killed and the module stays queued
    stall_seconds: float = 300.0


@dataclass(frozen=True)
class BudgetConfig:
    """Model spending limits; 0 = unlimited. Tokens count input, output and cache tokens."""

    daily_tokens: int = field(default=0, metadata={"min": 0})  # since local midnight
    daily_usd: float = field(default=0.0, metadata={"min": 0})
    per_refresh_tokens: int = field(default=0, metadata={"min": 0})
    per_refresh_usd: float = field(default=0.0, metadata={"min": 0})


@dataclass(frozen=True)
class SleepConfig:
    """The sleep engine (``sleepy-repo watch`` and the language server): when model work
    runs, and in which order. Planner weights multiply signals that are each in [0, 1]."""

    idle_seconds: float = 30.0  # no editor/watcher activity for this long = idle
    debounce_seconds: float = field(default=0.05, metadata={"min": 0})  # watcher quiet window
    poll_seconds: float = 2.0  # `git status` polling when the OS refuses file watches
    churn_commits: int = 200  # git history window for recency and churn
    weight_recency: float = field(default=1.0, metadata={"min": 0})
    weight_churn: float = field(default=1.0, metadata={"min": 0})
    weight_centrality: float = field(default=1.0, metadata={"min": 0})
    weight_open: float = field(default=2.0, metadata={"min": 0})
    weight_hits: float = field(default=1.5, metadata={"min": 0})
    # notes served this many times or fewer after payoff_after_days count as not paying off
    payoff_after_days: float = field(default=7.0, metadata={"min": 0})
    store_limit_mb: float = field(default=0.0, metadata={"min": 0})  # 0 = no limit; gc enforces
    # while idle, fit the ranking's weights on the repository's history (sleepy_repo.tune),
    # again once HEAD is this many commits past the last fit
    tune: bool = True
    retune_commits: int = field(default=50, metadata={"min": 1})


@dataclass(frozen=True)
class EmbedConfig:
    """The semantic index (``sleepy_repo.embed``): ``auto`` (the small model of the
    ``[embed]`` extra when it is installed, else none), ``wordllama``, ``off``, or the
    directory of a static embedding model (Model2Vec layout)."""

    model: str = "auto"


@dataclass(frozen=True)
class Config:
    scan: ScanConfig = field(default_factory=ScanConfig)
    notes: NotesConfig = field(default_factory=NotesConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    anthropic: AnthropicConfig = field(default_factory=AnthropicConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    sleep: SleepConfig = field(default_factory=SleepConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)

    def store_dir(self, root: Path) -> Path:
        p = Path(self.store.path)
        return p if p.is_absolute() else root / p


_SECTIONS: dict[str, type] = {
    "scan": ScanConfig,
    "notes": NotesConfig,
    "retrieve": RetrieveConfig,
    "store": StoreConfig,
    "anthropic": AnthropicConfig,
    "local": LocalConfig,
    "budget": BudgetConfig,
    "sleep": SleepConfig,
    "embed": EmbedConfig,
}


def _coerce(
    source: Path, section: str, key: str, value: Any, default: Any, minimum: int = 1
) -> Any:
    where = f"{source}: [{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            what = "a positive integer" if minimum > 0 else "an integer >= 0 (0 = unlimited)"
            raise ConfigError(f"{where} must be {what}, got {value!r}")
        return value
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or value < 0 or (minimum > 0 and value == 0):
            what = "a positive number" if minimum > 0 else "a number >= 0 (0 = unlimited)"
            raise ConfigError(f"{where} must be {what}, got {value!r}")
        return float(value)
    if isinstance(default, dict):
        return _prices(where, value, default)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _prices(where: str, value: Any, default: dict[str, dict[str, float]]) -> Any:
    """``[anthropic.prices.<model>]`` tables, merged over the built-in prices."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of models")
    merged = {m: dict(p) for m, p in default.items()}
    for model, rates in value.items():
        if not isinstance(rates, dict):
            raise ConfigError(f"{where}.{model} must be a table of rates")
        bad = sorted(set(rates) - set(PRICE_KEYS))
        if bad:
            raise ConfigError(
                f"{where}.{model}: unknown rate {bad[0]!r}; known: {', '.join(PRICE_KEYS)}"
            )
        for k, v in rates.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ConfigError(f"{where}.{model}.{k} must be a number >= 0, got {v!r}")
        entry = merged.get(model, {})
        entry.update({k: float(v) for k, v in rates.items()})
        if "input" not in entry or "output" not in entry:
            raise ConfigError(f"{where}.{model} needs at least `input` and `output` (USD/MTok)")
        entry.setdefault("cache_read", entry["input"] * 0.1)
        entry.setdefault("cache_write", entry["input"] * 1.25)
        entry.setdefault("batch", 0.5)
        merged[model] = entry
    return merged


def _layer_data(text: str, source: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


# What a repository's own (untrusted) config may set: (section, key) -> how it combines
# with the value below it. "set" replaces; "add" appends list entries (never removes one);
# "lower" only lowers a number; "static" only turns the model backend off.
REPO_MAX_BUDGET = 8000  # the most a repository may set as the default budget (tokens)
REPO_KEYS: dict[tuple[str, str], str] = {
    ("retrieve", "budget"): "cap",  # at most REPO_MAX_BUDGET: `ask` may send it to a model
    ("notes", "effort"): "lower",  # brief < standard < deep: a deeper effort costs more
    ("notes", "commit"): "set",
    ("notes", "backend"): "static",
    ("scan", "exclude"): "add",
    ("scan", "deny"): "add",
    ("scan", "max_file_bytes"): "lower",
}


def _apply(
    merged: dict[str, dict[str, Any]],
    data: dict[str, Any],
    source: Path,
    *,
    limited: bool = False,
    ignored: list[str] | None = None,
) -> None:
    """Validate one layer and apply it over ``merged``. ``limited`` (an untrusted repository
    config) applies only ``REPO_KEYS``; every other key that would change a value is
    appended to ``ignored`` as ``"[section] key"``."""
    for name, raw in data.items():
        if name not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{name}]; known sections: {', '.join(_SECTIONS)}"
            )
        cls = _SECTIONS[name]
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        known = {f.name: f for f in fields(cls)}
        defaults = cls()
        current = merged.setdefault(name, {})
        for key, value in raw.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key [{name}] {key!r}; "
                    f"known keys: {', '.join(sorted(known))}"
                )
            base = current.get(key, getattr(defaults, key))
            minimum = known[key].metadata.get("min", 1)
            rule = REPO_KEYS.get((name, key)) if limited else "set"
            try:
                new = _coerce(source, name, key, value, base, minimum)
                _check_choice(source, name, key, new)
            except ConfigError:
                if rule is not None:
                    raise
                if ignored is not None:  # a key it may not set: ignored, valid or not
                    ignored.append(f"[{name}] {key}")
                continue
            if rule == "add":
                # gitignore-style lists: a "!pattern" would take entries out, so a
                # repository's negations are ignored (it can only add)
                negations = [p for p in new if p.startswith("!")]
                if negations and ignored is not None:
                    ignored.append(f"[{name}] {key} {', '.join(negations)}")
                new = base + tuple(p for p in new if p not in base and not p.startswith("!"))
            elif rule == "cap":
                new = min(new, REPO_MAX_BUDGET)
            elif rule == "lower" and key == "effort":
                if EFFORTS.index(new) > EFFORTS.index(base):
                    if ignored is not None:
                        ignored.append(f"[{name}] {key}")
                    continue
            elif (
                (rule == "lower" and new > base)
                or (rule == "static" and new != "static")
                or rule is None
            ):
                if new != base and ignored is not None:
                    ignored.append(f"[{name}] {key}")
                continue
            current[key] = new


def _check_choice(source: Path, section: str, key: str, value: Any) -> None:
    choices = {("notes", "backend"): BACKENDS, ("notes", "effort"): EFFORTS}.get((section, key))
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{source}: [{section}] {key} must be one of {', '.join(choices)}, got {value!r}"
        )


def _build(merged: dict[str, dict[str, Any]]) -> Config:
    return Config(**{name: _SECTIONS[name](**values) for name, values in merged.items()})


def parse_config(text: str, source: Path) -> Config:
    """One config file with every key honoured, over the defaults."""
    merged: dict[str, dict[str, Any]] = {}
    _apply(merged, _layer_data(text, source), source)
    return _build(merged)


def user_config_path() -> Path:
    """The user's own config: ``$XDG_CONFIG_HOME/sleepy-repo/config.toml`` (default
    ``~/.config/sleepy-repo/config.toml``); every key is honoured there."""
    env = os.environ.get("XDG_CONFIG_HOME", "").strip()
    base = Path(env) if env and Path(env).is_absolute() else Path.home() / ".config"
    return base / "sleepy-repo" / CONFIG_FILE


def repo_config_path(root: Path) -> Path:
    return root / CONFIG_DIR / CONFIG_FILE


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


@dataclass(frozen=True)
class LoadedConfig:
    """The merged config of a repository, and where its layers came from."""

    config: Config
    user_file: Path | None  # the user's config, when there is one
    repo_file: Path | None  # the repository's config, when there is one
    trusted: bool  # the repository's config is trusted (every key honoured)
    ignored: tuple[str, ...]  # "[section] key" of the repository's config, not honoured


def load(root: Path) -> LoadedConfig:
    """defaults < the user's config < the repository's config (``REPO_KEYS`` only, unless
    the user trusted the file with ``sleepy-repo trust``). CLI flags go over this."""
    merged: dict[str, dict[str, Any]] = {}
    user_path = user_config_path()
    user_data = _read(user_path)
    if user_data is not None:
        _apply(merged, _layer_data(_text(user_data, user_path), user_path), user_path)
    store_from_user = "path" in merged.get("store", {})
    repo_path = repo_config_path(root)
    repo_data = _read(repo_path)
    trusted = False
    ignored: list[str] = []
    if repo_data is not None:
        trusted = is_trusted(root, repo_data)
        layer = _layer_data(_text(repo_data, repo_path), repo_path)
        before = merged.get("store", {}).get("path")
        _apply(merged, layer, repo_path, limited=not trusted, ignored=ignored)
        if merged.get("store", {}).get("path") != before:
            store_from_user = False
        if ignored:
            _warn_ignored(root, repo_path, repo_data, ignored)
    config = _build(merged)
    if not store_from_user:
        _check_store(root, config, repo_path)
    return LoadedConfig(
        config=config,
        user_file=user_path if user_data is not None else None,
        repo_file=repo_path if repo_data is not None else None,
        trusted=trusted,
        ignored=tuple(ignored),
    )


def load_config(root: Path) -> Config:
    """The merged config of the repository at ``root`` (see ``load``)."""
    return load(root).config


_warned: set[tuple[str, str]] = set()  # (config file, sha256): warned once per process


def _warn_ignored(root: Path, path: Path, data: bytes, ignored: list[str]) -> None:
    key = (str(path), digest(data))
    if key in _warned:
        return
    _warned.add(key)
    log.warning(
        "%s: ignored %s: a repository's own config may set only [retrieve] budget, "
        "[notes] effort and commit, additions to [scan] exclude and deny, and a lower "
        "[scan] max_file_bytes; set the others in %s, or trust this repository's config "
        "with `sleepy-repo trust --repo %s`",
        path,
        ", ".join(ignored),
        user_config_path(),
        root,
    )


def _check_store(root: Path, config: Config, source: Path) -> None:
    """A store chosen by the repository (or the default) stays inside it: no path, symlink
    or ``..`` leads out."""
    store = config.store_dir(root)
    escape = outside(root, store)
    if escape is not None:
        raise ConfigError(
            f"{source}: the store {store} resolves to {escape}, outside the repository "
            f"{root}; nothing is written outside the repository. Remove the symlink or "
            f"[store] path (a store elsewhere can be set only in {user_config_path()})"
        )
    try:
        children = list(store.iterdir()) if store.is_dir() else []
    except OSError:
        children = []
    for child in children:
        # the mirror (.sleepy/notes) is checked where it is written; the config is only read
        if child.name not in ("notes", CONFIG_FILE) and child.is_symlink():
            escape = outside(root, child)
            if escape is not None:
                raise ConfigError(
                    f"{child} is a symlink to {escape}, outside the repository {root}; "
                    "remove it (nothing is written outside the repository)"
                )


DEFAULT_CONFIG_TOML = """\
# sleepy-repo configuration. Every key is optional; these are the defaults.
# A repository's config is honoured in full only once trusted (`sleepy-repo trust`; `init`
# trusts the file it writes, and any edit needs trust again); until then only [retrieve]
# budget, [notes] effort/commit, additions to [scan] exclude/deny and a lower max_file_bytes
# apply. Your own config (every key): ~/.config/sleepy-repo/config.toml.

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

# The Anthropic backend (used only when [notes] backend = "anthropic"; key: $ANTHROPIC_API_KEY).
# [anthropic]
# model = "claude-sonnet-4-5"        # standard effort; brief_model / deep_model for the others
# brief_model = "claude-haiku-4-5"
# base_url = ""                      # "" = $ANTHROPIC_BASE_URL or the default endpoint
# max_tokens = 2048
# concurrency = 4
# [anthropic.prices.claude-sonnet-4-5]  # USD per million tokens
# input = 3.0
# output = 15.0
# cache_read = 0.3
# cache_write = 3.75
# batch = 0.5

# The local GGUF backend (used only when [notes] backend = "local"; needs the [local] extra,
# pip install 'sleepy-repo[local]', and a model: python scripts/fetch_model.py fetches one).
# [local]
# model_path = ""                    # "" = the fetched Qwen2.5-Coder-0.5B-Instruct Q4
# n_ctx = 12288
# n_threads = 0                      # 0 = every core
# max_tokens = 1024

# Model spending limits (0 = unlimited), checked before every call.
# [budget]
# daily_tokens = 0
# daily_usd = 0
# per_refresh_tokens = 0
# per_refresh_usd = 0

# The sleep engine (`sleepy-repo watch`, the language server): model notes are written only
# after idle_seconds without editor or file activity, most-likely-asked modules first.
# [sleep]
# idle_seconds = 30
# churn_commits = 200
# weight_recency = 1.0
# weight_churn = 1.0
# weight_centrality = 1.0
# weight_open = 2.0
# weight_hits = 1.5
# store_limit_mb = 0                  # 0 = no limit; enforced by `gc` and from idle time
# tune = true                         # fit the ranking on this repo's history while idle
# retune_commits = 50                 # again once HEAD is this many commits further

[embed]
# the semantic index, built while idle: "auto" = the small model of the [embed] extra if it
# is installed; "wordllama"; "off"; or the directory of a static embedding model
# (Model2Vec layout: tokenizer.json + model.safetensors), e.g. a code model
# model = "auto"
"""


def default_config_toml() -> str:
    return DEFAULT_CONFIG_TOML.format(exclude=", ".join(f'"{p}"' for p in DEFAULT_EXCLUDE))
