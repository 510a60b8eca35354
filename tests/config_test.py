from __future__ import annotations

from pathlib import Path

import pytest

from sleepy_repo.config import Config, default_config_toml, load_config, parse_config
from sleepy_repo.errors import ConfigError

SRC = Path("/repo/.sleepy/config.toml")


def test_defaults_when_no_file(tmp_path: Path) -> None:
    assert load_config(tmp_path) == Config()


def test_default_file_round_trips() -> None:
    assert parse_config(default_config_toml(), SRC) == Config()


def test_values_are_read() -> None:
    c = parse_config(
        '[scan]\nmax_file_bytes = 10\nexclude = ["gen/"]\n[retrieve]\nbudget = 99\n', SRC
    )
    assert c.scan.max_file_bytes == 10
    assert c.scan.exclude == ("gen/",)
    assert c.retrieve.budget == 99


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[scan\n", "not valid TOML"),
        ("[nope]\n", "unknown section [nope]"),
        ("[scan]\nmax_bytes = 1\n", "unknown key [scan] 'max_bytes'"),
        ("[scan]\nmax_file_bytes = -1\n", "[scan] max_file_bytes must be a positive integer"),
        ("[scan]\nmax_file_bytes = true\n", "must be a positive integer"),
        ("[scan]\nexclude = 'x'\n", "must be a list of strings"),
        ('[notes]\nbackend = "gpt"\n', "backend must be one of"),
        ('[notes]\neffort = "max"\n', "effort must be one of"),
        ("scan = 3\n", "[scan] must be a table"),
    ],
)
def test_bad_config_names_file_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, SRC)
    assert message in str(exc.value)
    assert str(SRC) in str(exc.value)
