"""The semantic index: unit vectors built at refresh time (idle time), kept per blob and
model, and fused into the ranking, so a question in other words than the code's finds it;
through the installed CLI, with the [embed] extra's bundled model and with a model directory
in the Model2Vec layout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sleepy_repo import embed
from sleepy_repo.errors import ConfigError

from helpers import CLI, git, undo_schema_12, user_config

pytestmark = pytest.mark.usefixtures("embed_installed")

# six modules on six topics; each question shares no word with the code it is about
MODULES = {
    "payroll.py": '''def monthly_wages(employees):
    """Sum the salaries of every employee for one month."""
    return sum(e.salary / 12 for e in employees)
''',
    "weather.py": '''def forecast_rain(pressure, humidity):
    """Chance of precipitation tomorrow from barometric readings."""
    return max(0.0, min(1.0, (humidity - 0.5) * 2 - (pressure - 1013) / 50))
''',
    "geometry.py": '''def circle_area(radius):
    """Area enclosed by a circle."""
    return 3.14159 * radius * radius
''',
    "mailer.py": '''import smtplib


def deliver(recipient, body):
    """Hand a message to the SMTP relay."""
    with smtplib.SMTP("localhost") as relay:
        relay.sendmail("noreply@example.com", [recipient], body)
''',
    "music.py": '''def transpose(notes, semitones):
    """Shift every note of a melody up or down."""
    return [n + semitones for n in notes]
''',
    "kitchen.py": '''def bake(dough, minutes):
    """Put the bread in the oven."""
    return {"dough": dough, "minutes": minutes, "crust": minutes > 30}
''',
}
QUESTIONS = {
    "how much do we pay our workers": "app/payroll.py",
    "will it be stormy": "app/weather.py",
    "send an email to a customer": "app/mailer.py",
    "cook a loaf": "app/kitchen.py",
    "change the key of a song": "app/music.py",
    "size of a round shape": "app/geometry.py",
}


def _topics(tmp_path: Path) -> Path:
    repo = tmp_path / "topics"
    (repo / "app").mkdir(parents=True)
    for name, text in MODULES.items():
        (repo / "app" / name).write_text(text)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "topics")
    return repo


def _first_code_path(cli: CLI, repo: Path, question: str) -> str | None:
    ctx = cli.json("context", question, "--budget", "600", repo=repo)
    code = [i["path"] for i in ctx["items"] if i["kind"] == "code"]
    return code[0] if code else None


def test_questions_in_other_words_find_their_code_through_the_semantic_index(
    tmp_path: Path, cli: CLI
) -> None:
    repo = _topics(tmp_path)
    out = cli.run("refresh", repo=repo).stdout
    assert "semantic index (wordllama" in out and "6 modules" in out
    status = cli.json("status", repo=repo)
    assert status["semantic_index"]["model"].startswith("wordllama-l2_supercat-256")
    assert status["semantic_index"]["modules"] == 6
    assert "semantic index: wordllama" in cli.run("status", repo=repo).stdout
    for question, path in QUESTIONS.items():
        assert _first_code_path(cli, repo, question) == path, question
    notes = cli.run("notes", "app/mailer.py", repo=repo).stdout
    assert "semantic index: 2 units embedded with wordllama" in notes
    # the same questions with the semantic index off: no word matches, nothing is found
    user_config('[embed]\nmodel = "off"\n')
    found = [_first_code_path(cli, repo, q) == p for q, p in QUESTIONS.items()]
    assert sum(found) <= 1, found
    assert cli.json("status", repo=repo)["semantic_index"]["reason"].startswith("off")
    quiet = cli.run("refresh", repo=repo)  # turned off on purpose: no warning
    assert "semantic index" not in quiet.stdout + quiet.stderr, quiet.stderr


def test_unchanged_code_is_never_embedded_again(tmp_path: Path, cli: CLI) -> None:
    repo = _topics(tmp_path)
    assert cli.json("refresh", repo=repo)["semantic_index"]["modules"] == 6
    again = cli.json("refresh", repo=repo)["semantic_index"]
    assert (again["modules"], again["units"]) == (0, 0)
    (repo / "app" / "music.py").write_text(MODULES["music.py"] + "\n\ndef rest():\n    pass\n")
    changed = cli.json("refresh", repo=repo)["semantic_index"]
    assert changed["modules"] == 1 and changed["units"] == 2
    (repo / "app" / "kitchen.py").unlink()
    cli.run("refresh", repo=repo)
    assert cli.json("status", repo=repo)["semantic_index"]["modules"] == 5
    assert _first_code_path(cli, repo, "cook a loaf") != "app/kitchen.py"


def _model2vec_dir(path: Path, dim: int = 32) -> Path:
    """A static model in the Model2Vec layout: the bundled model's tokenizer and a random
    embedding table of ``dim`` columns."""
    import numpy as np
    import wordllama  # type: ignore[import-untyped]
    from safetensors.numpy import save_file

    path.mkdir(parents=True)
    pkg = Path(wordllama.__file__).parent
    tokens = pkg / "tokenizers" / "l2_supercat_tokenizer_config.json"
    (path / "tokenizer.json").write_bytes(tokens.read_bytes())
    table = np.random.default_rng(7).standard_normal((32000, dim)).astype(np.float32)
    save_file({"embeddings": table}, str(path / "model.safetensors"))
    return path


def test_a_model_directory_in_the_model2vec_layout_is_used(tmp_path: Path, cli: CLI) -> None:
    repo = _topics(tmp_path)
    model = _model2vec_dir(tmp_path / "my-code-model")
    user_config(f'[embed]\nmodel = "{model}"\n')
    sem = cli.json("refresh", repo=repo)["semantic_index"]
    assert sem["model"].startswith("my-code-model@") and sem["modules"] == 6
    assert cli.json("status", repo=repo)["semantic_index"]["modules"] == 6
    cli.run("context", "cook a loaf", repo=repo)  # a random model still serves


def test_a_model_that_cannot_load_says_why_once_and_retrieval_still_works(
    tmp_path: Path, cli: CLI
) -> None:
    repo = _topics(tmp_path)
    user_config(f'[embed]\nmodel = "{tmp_path / "not-downloaded"}"\n')
    proc = cli.run("refresh", repo=repo)
    lines = [ln for ln in proc.stderr.splitlines() if "semantic index" in ln]
    assert len(lines) == 1 and "not a static embedding model directory" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert (
        "not a static embedding model" in cli.json("status", repo=repo)["semantic_index"]["reason"]
    )
    ctx = cli.json("context", "monthly wages of employees", repo=repo)
    assert ctx["items"][0]["path"] == "app/payroll.py"  # BM25 and names still rank


def test_a_repository_config_cannot_choose_the_model(tmp_path: Path, cli: CLI) -> None:
    repo = _topics(tmp_path)
    (repo / ".sleepy").mkdir()
    (repo / ".sleepy" / "config.toml").write_text(f'[embed]\nmodel = "{tmp_path}/evil"\n')
    proc = cli.run("refresh", repo=repo)
    assert "[embed] model" in proc.stderr  # ignored, with the repository config's warning
    assert cli.json("status", repo=repo)["semantic_index"]["model"].startswith("wordllama")


def test_without_the_extra_auto_is_off_and_a_named_model_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embed._load.cache_clear()
    monkeypatch.setitem(sys.modules, "wordllama", None)  # import fails as if not installed
    try:
        assert embed.for_config("auto") is None
        assert "pip install 'sleepy-repo[embed]'" in (embed.status("auto").reason or "")
        with pytest.raises(ConfigError, match=r"pip install 'sleepy-repo\[embed\]'"):
            embed.for_config("wordllama")
        assert embed.for_config("off") is None
    finally:
        embed._load.cache_clear()


def test_a_units_similarity_is_the_best_of_the_pieces_it_overlaps() -> None:
    import random

    import numpy as np

    from sleepy_repo.units import Unit

    rng = random.Random(3)
    for _ in range(200):
        spans, line = [], 1
        for _ in range(rng.randint(1, 12)):
            start = line + rng.randint(0, 3)
            end = start + rng.randint(0, 9)
            spans.append((start, end))
            line = end + 1
        sims = np.asarray([rng.uniform(-1, 1) for _ in spans], dtype=np.float32)
        idx = embed.Index(
            ["m.py"],
            [0],
            [s for s, _ in spans],
            [e for _, e in spans],
            sims[:, None],
            {"m.py": (0, len(spans))},
        )
        a = rng.randint(1, line + 2)
        unit = Unit("m.py", a, a + rng.randint(0, 15), None)
        brute = max(
            (
                float(sims[k])
                for k, (s, e) in enumerate(spans)
                if s <= unit.end_line and unit.start_line <= e
            ),
            default=-1.0,
        )
        assert idx.unit_similarity(sims, unit) == brute
        assert idx.files(sims) == ["m.py"]


def test_a_schema_10_store_gains_the_embeddings_table(tmp_path: Path, cli: CLI) -> None:
    import sqlite3
    from contextlib import closing

    repo = _topics(tmp_path)
    cli.run("refresh", repo=repo)
    with closing(sqlite3.connect(repo / ".sleepy" / "index.db")) as conn:
        undo_schema_12(conn)
        conn.execute("DROP TABLE embeddings")
        conn.execute("PRAGMA user_version = 10")
        conn.commit()
    assert cli.json("status", repo=repo)["semantic_index"]["modules"] == 0  # migrated
    assert cli.json("refresh", repo=repo)["semantic_index"]["modules"] == 6
    assert _first_code_path(cli, repo, "cook a loaf") == "app/kitchen.py"
