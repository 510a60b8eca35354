"""Model backends, registered in one dict. Model-based backends arrive with later work."""

from __future__ import annotations

from collections.abc import Callable

from sleepy_repo.errors import ConfigError
from sleepy_repo.models.base import Backend, Caller, NoteRequest
from sleepy_repo.models.fake import FakeBackend
from sleepy_repo.models.static import StaticBackend

BACKENDS: dict[str, Callable[[], Backend]] = {
    "static": StaticBackend,
    "fake": FakeBackend,
}


def get_backend(name: str) -> Backend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"backend {name!r} is not available; available: {', '.join(BACKENDS)}"
        ) from None
    return factory()


__all__ = [
    "BACKENDS",
    "Backend",
    "Caller",
    "FakeBackend",
    "NoteRequest",
    "StaticBackend",
    "get_backend",
]
