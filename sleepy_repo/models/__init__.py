"""Model backends, registered in one dict: name -> factory(config, effort).

The Anthropic backend (and its SDK) and the local backend (and llama-cpp-python) are
imported only when chosen, so the CLI starts fast, a key in the environment never switches
one on, and a model is never picked automatically.
"""

from __future__ import annotations

from collections.abc import Callable

from sleepy_repo.config import Config
from sleepy_repo.errors import ConfigError
from sleepy_repo.models.base import Backend, Caller, Estimate, NoteRequest
from sleepy_repo.models.fake import FakeBackend
from sleepy_repo.models.static import StaticBackend


def _anthropic(config: Config, effort: str) -> Backend:
    from sleepy_repo.models.anthropic import AnthropicBackend

    return AnthropicBackend(config, effort)


def _local(config: Config, effort: str) -> Backend:
    from sleepy_repo.models.local import LocalBackend

    return LocalBackend(config, effort)


BACKENDS: dict[str, Callable[[Config, str], Backend]] = {
    "static": lambda config, effort: StaticBackend(),
    "fake": lambda config, effort: FakeBackend(),
    "anthropic": _anthropic,
    "local": _local,
}


def get_backend(name: str, config: Config | None = None, effort: str | None = None) -> Backend:
    """The backend ``name``, set up from ``config`` (default: the defaults) for ``effort``
    (default: ``[notes] effort``). No call is made and no key is needed to build one."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"backend {name!r} is not available; available: {', '.join(BACKENDS)}"
        ) from None
    config = config or Config()
    return factory(config, effort or config.notes.effort)


def ready(backend: Backend) -> None:
    """Raise ``ConfigError`` if ``backend`` cannot make calls (a model backend without its
    key); nothing for backends without a model."""
    check = getattr(backend, "ready", None)
    if check is not None:
        check()


__all__ = [
    "BACKENDS",
    "Backend",
    "Caller",
    "Estimate",
    "FakeBackend",
    "NoteRequest",
    "StaticBackend",
    "get_backend",
    "ready",
]
