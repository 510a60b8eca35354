"""Prompt templates are versioned files, shipped in the wheel, and part of every note key."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from sleepy_repo import prompt_files
from sleepy_repo.config import Config
from sleepy_repo.errors import ConfigError
from sleepy_repo.models.anthropic import AnthropicBackend

from helpers import ROOT

TEMPLATES = ["system", "module", "notes-brief", "notes-standard", "notes-deep", "retry"]


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_has_a_version_line(name: str) -> None:
    raw = (ROOT / "prompts" / f"{name}.md").read_text()
    assert raw.startswith("version: ")
    p = prompt_files.load_prompt(name)
    assert p.version and p.tag == f"{name}@{p.version}"
    assert not p.text.startswith("version:")


def test_the_system_prompt_treats_file_content_as_untrusted_data() -> None:
    text = prompt_files.load_prompt("system").text.lower()
    assert "untrusted" in text and "ignore any instructions" in text
    assert "never by line number" in text


def test_render_inserts_values_verbatim() -> None:
    p = prompt_files.load_prompt("notes-standard")
    out = p.render(module="M $content ${x}", content="C $module")
    assert "M $content ${x}" in out and "C $module" in out
    with pytest.raises(ConfigError):
        p.render(module="only one")


def test_editing_a_prompt_changes_the_note_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = AnthropicBackend(Config()).prompt_version
    real = prompt_files._read

    def edited(filename: str) -> str:
        text = real(filename)
        return text.replace("version: 1", "version: 2", 1) if filename == "system.md" else text

    monkeypatch.setattr(prompt_files, "_read", edited)
    prompt_files.load_prompt.cache_clear()
    try:
        after = AnthropicBackend(Config()).prompt_version
    finally:
        prompt_files.load_prompt.cache_clear()
    assert before != after and "system@2" in after


def test_the_wheel_maps_prompts_into_the_package() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    force = meta["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force["prompts"] == "sleepy_repo/prompts"


def test_a_built_wheel_contains_the_prompts(tmp_path: Path) -> None:
    import hatchling  # noqa: F401  (in the [test] extra: the build backend must be importable)

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in TEMPLATES:
        assert f"sleepy_repo/prompts/{name}.md" in names
