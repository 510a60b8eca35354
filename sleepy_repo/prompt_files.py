"""Prompt templates: files in the top-level ``prompts/`` folder, one per note kind/effort.

The wheel maps that folder to ``sleepy_repo/prompts/`` (pyproject's hatch force-include), so
an installed package reads it with ``importlib.resources``; an editable install falls back to
the repository's ``prompts/``. Each file starts with a ``version: <n>`` line. The versions of
the templates a backend uses are part of every note's key (``prompt_version``), so editing a
prompt makes the notes it wrote stale.

Templates use ``string.Template`` placeholders (``$name``). Values are inserted verbatim and
never re-expanded, so file content containing ``$`` is safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template

from sleepy_repo.errors import ConfigError

PACKAGE_DIR = "prompts"
SOURCE_DIR = Path(__file__).resolve().parent.parent / "prompts"  # editable installs
_VERSION = re.compile(r"version:\s*(\S+)\s*\n")


@dataclass(frozen=True)
class Prompt:
    name: str  # file name without ".md"
    version: str
    text: str  # the template, without its version line

    @property
    def tag(self) -> str:
        """``<name>@<version>``: what a note key records about this template."""
        return f"{self.name}@{self.version}"

    def render(self, **values: object) -> str:
        try:
            return Template(self.text).substitute({k: str(v) for k, v in values.items()})
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"prompt {self.name}: bad or missing placeholder {exc}") from None


def _read(filename: str) -> str:
    packaged = resources.files("sleepy_repo").joinpath(PACKAGE_DIR, filename)
    try:
        return packaged.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        pass
    try:
        return (SOURCE_DIR / filename).read_text(encoding="utf-8")
    except OSError:
        raise ConfigError(
            f"prompt template {filename} is missing from this installation "
            f"(looked in sleepy_repo/{PACKAGE_DIR}/ and {SOURCE_DIR})"
        ) from None


@cache
def load_prompt(name: str) -> Prompt:
    """The template ``prompts/<name>.md`` with its version."""
    raw = _read(f"{name}.md")
    m = _VERSION.match(raw)
    if m is None:
        raise ConfigError(f"prompt template {name}.md must start with a 'version: <n>' line")
    return Prompt(name=name, version=m.group(1), text=raw[m.end() :])
