"""Units of the ranking signals in ``retrieve``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sleepy_repo import api, embed, retrieve
from sleepy_repo.retrieve import Chunk, file_evidence
from sleepy_repo.store import NoteStore

from helpers import CLI, git


def _chunk(i: int, path: str, score: float) -> Chunk:
    return Chunk(i, path, i, i, None, "x", True, score=score)


def test_a_file_scores_by_its_three_best_chunks() -> None:
    chunks = [  # best first, as bm25_chunks returns them
        _chunk(1, "one_strong.py", 9.0),
        _chunk(2, "many.py", 4.0),
        _chunk(3, "many.py", 3.5),
        _chunk(4, "two.py", 3.4),
        _chunk(5, "many.py", 3.0),
        _chunk(6, "two.py", 3.0),
        _chunk(7, "many.py", 2.9),  # a fourth chunk does not count
        _chunk(8, "many.py", 2.8),
    ]
    # many.py: 4 + 3.5 + 3 = 10.5; one_strong.py: 9; two.py: 6.4
    assert file_evidence(chunks) == ["many.py", "one_strong.py", "two.py"]
    assert file_evidence(chunks, top=1) == ["one_strong.py", "many.py", "two.py"]


def test_ties_keep_the_order_of_each_files_best_chunk() -> None:
    chunks = [_chunk(1, "b.py", 2.0), _chunk(2, "a.py", 2.0), _chunk(3, "c.py", 1.0)]
    assert file_evidence(chunks) == ["b.py", "a.py", "c.py"]
    assert file_evidence([]) == []


def _hooks_repo(tmp_path: Path) -> Path:
    """A source module with a retry hook and a test that says every word of the question
    more often than the code does."""
    repo = tmp_path / "hooks"
    (repo / "src").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "src" / "client.py").write_text(
        "def run_hooks(hooks, request):\n"
        '    """Call each before-request hook with the request and the retry count."""\n'
        "    for hook in hooks:\n"
        "        hook(request)\n"
    )
    (repo / "tests" / "test_client.py").write_text(
        "from src.client import run_hooks\n\n\n"
        "def test_before_request_hook_gets_the_retry_count():\n"
        '    """Every before-request hook gets the retry count of the request."""\n'
        "    seen = []\n"
        "    run_hooks([seen.append], 'request retry count hook')\n"
        "    assert seen == ['request retry count hook']\n"
    )
    (repo / "examples").mkdir()
    (repo / "examples" / "retry_hook.py").write_text(
        '"""A before-request hook that logs the retry count of every request."""\n'
        "from src.client import run_hooks\n\n\n"
        "def log_retry_count(request):\n"
        '    """Print the retry count of the request before the request hook runs."""\n'
        "    print('before request hook: retry count', request)\n"
    )
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "hooks")
    return repo


def _files(cli: CLI, repo: Path, question: str, *args: str) -> list[str]:
    ctx = cli.json("context", question, "--budget", "600", *args, repo=repo)
    return list(dict.fromkeys(i["path"] for i in ctx["items"]))


def test_tests_and_examples_rank_behind_the_code_unless_the_question_names_them(
    tmp_path: Path, cli: CLI
) -> None:
    repo = _hooks_repo(tmp_path)
    cli.run("refresh", repo=repo)
    question = "before request hook retry count"
    assert _files(cli, repo, question)[0] == "src/client.py"
    assert _files(cli, repo, question + " tests")[0] == "tests/test_client.py"
    assert _files(cli, repo, question + " example")[0] == "examples/retry_hook.py"
    # without the prior the code loses: the prior, not the wording, put it first
    with api.open_repo(repo).store.read() as conn:
        plain = retrieve.rank(conn, question, off=frozenset({"usage-prior"}))
        assert plain.files[0][0] != "src/client.py", plain.files


def test_threads_asking_two_stores_at_once_each_get_their_own_code(tmp_path: Path) -> None:
    """The language server asks from several threads, about several workspace folders'
    stores (the same relative paths in each): the code kept in memory never crosses over."""
    import sys
    import threading

    repos = []
    for name in ("left", "right"):
        root = tmp_path / name
        root.mkdir()
        (root / "app.py").write_text(f"def f():\n    return '{name} code'\n")
        repo = api.open_repo(root)
        api.refresh(repo)
        repos.append(repo)
    wrong: list[str] = []

    def ask(repo: api.Repo, want: str) -> None:
        with repo.store.read() as conn:
            for _ in range(3000):
                got = retrieve.modules(conn, ["app.py"])["app.py"][0][1]
                if want not in got:
                    wrong.append(got)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [
            threading.Thread(target=ask, args=(r, f"{n} code"))
            for r, n in zip(repos, ("left", "right"), strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


def test_a_long_lived_process_serves_the_code_of_the_last_refresh(tmp_path: Path) -> None:
    """The language server and the MCP server keep each module's lines and units, and the
    semantic index, in memory between questions: after a refresh that rewrites a module,
    the same process serves the new code, and a rebuilt store never gets the old one."""
    root = tmp_path / "app"
    root.mkdir()
    src = root / "billing.py"
    src.write_text("def invoice_total(lines):\n    return sum(lines)  # plain sum\n")
    repo = api.open_repo(root)
    api.refresh(repo)
    question = "How is the invoice total computed?"

    def served() -> str:
        ctx = retrieve.context(repo.store, question, 400, embedder=api.embedder(repo))
        return "\n".join(i.text for i in ctx.items if i.kind == "code")

    assert "plain sum" in served()
    assert "plain sum" in served()
    model = api.embedder(repo)
    assert model is not None
    with repo.store.read() as conn:
        before = NoteStore.generation(conn, "modules", "embeddings")
        old_index = embed.index(conn, model.name)
        assert old_index is not None and embed.index(conn, model.name) is old_index  # kept
        code = retrieve.modules(conn, ["billing.py"])["billing.py"]
        assert retrieve.modules(conn, ["billing.py"])["billing.py"] is code  # kept too
    src.write_text("def invoice_total(lines):\n    return round(sum(lines), 2)  # rounded\n")
    api.refresh(repo)
    with repo.store.read() as conn:
        after = NoteStore.generation(conn, "modules", "embeddings")
        assert embed.index(conn, model.name) is not old_index  # the vectors were rewritten
    assert after[0] == before[0] and after[1] > before[1] and after[2] > before[2]
    code = served()
    assert "rounded" in code and "plain sum" not in code

    # a touched file (same content, new mtime) keeps what memory holds
    os.utime(src, ns=(1, 1))
    api.refresh(repo)
    with repo.store.read() as conn:
        assert NoteStore.generation(conn, "modules", "embeddings")[1] == after[1]

    # a new store at the same place, asked first when its modules have changed as often
    # as the old one's had: another store id, so nothing cached is reused
    shutil.rmtree(root / ".sleepy")
    repo = api.open_repo(root)
    api.refresh(repo)
    src.write_text("def invoice_total(lines):\n    return sum(lines)  # plain sum again\n")
    api.refresh(repo)
    with repo.store.read() as conn:
        rebuilt = NoteStore.generation(conn, "modules", "embeddings")
    assert rebuilt[1] == after[1] and rebuilt[0] != after[0]
    code = served()
    assert "plain sum again" in code and "rounded" not in code
