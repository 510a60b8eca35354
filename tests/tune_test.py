"""Tuning: the ranking's weights fitted on a real git history while idle, scored on newer
commits than the ones that chose them, stored with both commit ranges, shown by ``status``,
used by ``context`` once adopted, and run by the sleeper (stopping when the developer is
back)."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from sleepy_repo import api, retrieve, scheduler, tune
from sleepy_repo.config import Config
from sleepy_repo.scheduler import Scheduler
from sleepy_repo.store import SCHEMA_VERSION

from helpers import CLI, git, undo_schema_12

WORDS = [
    "invoice", "refund", "coupon", "shipping", "warehouse", "ledger", "currency", "payroll",
    "discount", "checkout", "inventory", "receipt", "voucher", "tariff", "rebate",
    "pallet", "freight", "customs", "parcel", "invoiceline",
]  # fmt: skip


def _module(word: str, version: int) -> str:
    body = [f'"""Everything about {word}s."""', ""]
    for k, verb in enumerate(("load", "check", "total", "format")):
        body += [
            f"def {verb}_{word}(items, rate={version + k}):",
            f'    """{verb.title()} the {word} for the given items."""',
            f"    {word}_sum = sum(items) * rate",
            f"    return {word}_sum + {version}",
            "",
        ]
    # a long function, so units are cut into pieces
    body += [f"def report_{word}(rows):", f'    """A long {word} report."""', "    out = []"]
    body += [f"    out.append(rows[{i}] * {version})  # {word} column {i}" for i in range(70)]
    body += ["    return out", ""]
    return "\n".join(body)


def make_history(root: Path, rounds: int = 2) -> list[str]:
    """A repository of one module per word and ``rounds`` commits per module, each
    changing one function with a message that names what it changed; the commits' shas,
    oldest first."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "T")
    (root / "shop").mkdir()
    for w in WORDS:
        (root / "shop" / f"{w}.py").write_text(_module(w, 0))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "Initial import of the shop modules")
    shas = []
    for r in range(1, rounds + 1):
        for i, w in enumerate(WORDS):
            verb = ("load", "check", "total", "format")[(i + r) % 4]
            text = (root / "shop" / f"{w}.py").read_text()
            text = text.replace(f"    return {w}_sum + {r - 1}", f"    return {w}_sum + {r}", 1)
            (root / "shop" / f"{w}.py").write_text(text)
            git(root, "commit", "-qam", f"Make {verb}_{w} round the {w} total per line item")
            shas.append(git(root, "rev-parse", "HEAD").strip())
    return shas


@pytest.fixture(scope="module")
def history_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune") / "shop"
    make_history(root)
    return root


def test_a_fit_is_forward_in_time_and_sees_each_case_as_of_its_parent(
    history_repo: Path,
) -> None:
    seen: list[tuple[str, bool]] = []
    real_score = tune.score_case

    def spy(conn, case, root, weights, deny, embedder=None):  # type: ignore[no-untyped-def]
        # the store at this point holds history only up to the case's parent
        subject = case.query.splitlines()[0]
        hits = conn.execute("SELECT count(*) FROM history WHERE instr(summary, ?)", (subject,))
        seen.append((case.commit, hits.fetchone()[0] > 0))
        head = git(root, "rev-parse", "HEAD").strip()
        assert head == case.state
        return real_score(conn, case, root, weights, deny, embedder)

    mp = pytest.MonkeyPatch()
    mp.setattr(tune, "score_case", spy)
    try:
        result = tune.fit(history_repo, n_cases=36)
    finally:
        mp.undo()
    assert len(result.fit) == 24 and len(result.scored) == 12
    assert seen and not any(leak for _, leak in seen)  # no case's message in its store
    # every fit commit is older than every scored one, and (linear history) an ancestor of
    # every scored case's state
    times = dict(line.split() for line in git(history_repo, "log", "--format=%H %ct").splitlines())
    assert max(int(times[c.commit]) for c in result.fit) <= min(
        int(times[c.commit]) for c in result.scored
    )
    for f in result.fit:
        for s in result.scored:
            assert git(history_repo, "merge-base", "--is-ancestor", f.commit, s.state) == ""
    assert set(result.fit_scores) == set(tune.candidates())
    assert all(0.0 <= v <= 2.0 for v in result.fit_scores.values())
    assert result.chosen == max(result.fit_scores, key=lambda k: result.fit_scores[k])
    assert result.adopted == (
        result.chosen != "default" and result.tuned_score > result.default_score
    )


def test_a_state_that_cannot_be_checked_out_is_left_out(
    history_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clone missing a blob of an old state (a partial mirror) loses that case, not the fit."""
    from sleepy_repo.errors import RepoError

    real = tune.checkout
    broken: list[str] = []

    def checkout(path: Path, state: str) -> None:
        if not broken:
            broken.append(state)
            raise RepoError(f"git checkout {state} failed: unable to read sha1 file")
        real(path, state)

    monkeypatch.setattr(tune, "checkout", checkout)
    result = tune.fit(history_repo, n_cases=36)
    assert result.skipped == 1 and len(result.fit) == 23 and len(result.scored) == 12
    assert all(c.state != broken[0] for c in result.fit)


def test_tune_stores_the_run_status_shows_it_and_context_uses_adopted_weights(
    history_repo: Path, tmp_path: Path, cli: CLI
) -> None:
    root = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(history_repo), str(root))
    cli.run("refresh", repo=root)
    assert cli.json("status", repo=root)["tuning"]["weights"] == "default"
    out = cli.run("tune", "--cases", "36", repo=root).stdout
    assert "tuned on 24 commits" in out and "scored on the 12 newer ones" in out, out
    status = cli.json("status", repo=root)["tuning"]
    run = status["run"]
    shas = git(root, "log", "--format=%H").split()
    oldest_fit, newest_fit = run["fit_range"].split("..")
    oldest_scored, _ = run["score_range"].split("..")
    assert shas.index(newest_fit) > shas.index(oldest_scored)  # log is newest first
    assert shas.index(oldest_fit) > shas.index(newest_fit)
    assert run["head"] == shas[0] and run["fit_cases"] == 24 and run["score_cases"] == 12
    assert status["weights"] == ("tuned" if run["adopted"] else "default")
    human = cli.run("status", repo=root).stdout
    assert f"ranking weights: {status['weights']}" in human
    # weights a run adopted rank every question after it; a run that did not, none
    small = retrieve.Weights(
        retrieve.DEFAULT_WEIGHTS.files, retrieve.GRAPH_WEIGHT, retrieve.UNIT_WEIGHTS, 10
    )
    repo = api.open_repo(root)
    for adopted in (True, False):
        with repo.store.write() as conn:
            repo.store.save_tuning(conn, {**run, "weights": small.to_json(), "adopted": adopted})
        with repo.store.read() as conn:
            ranking = retrieve.rank(conn, "the long ledger report rows")
        longest = max(r.unit.lines for r in ranking.units)
        assert (longest <= 10) == adopted, longest
    # weights fitted from other defaults (an older sleepy-repo) are out of date: not used,
    # and a new fit is due
    other = {**run, "detail": {**run["detail"], "defaults": "older"}}
    with repo.store.write() as conn:
        repo.store.save_tuning(conn, {**other, "weights": small.to_json(), "adopted": True})
    with repo.store.read() as conn:
        ranking = retrieve.rank(conn, "the long ledger report rows")
    assert max(r.unit.lines for r in ranking.units) > 10
    assert tune.due(root, repo.store, 50)
    with repo.store.read() as conn:
        assert conn.execute("SELECT count(*) FROM tuning").fetchone()[0] == 4


def test_a_young_repository_keeps_the_defaults(tmp_path: Path, cli: CLI) -> None:
    root = tmp_path / "young"
    make_history(root, rounds=1)  # 20 commits: fewer cases than a fit needs
    result = cli.json("tune", repo=root)
    assert not result["adopted"] and result["fit_cases"] == 0
    assert "history too short" in result["reason"]
    assert cli.json("status", repo=root)["tuning"]["weights"] == "default"


def test_tune_outside_git_is_an_expected_error(tmp_path: Path, cli: CLI) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.py").write_text("x = 1\n")
    proc = cli.run("tune", repo=tmp_path / "plain", check=False)
    assert proc.returncode == 2 and "tuning learns from its history" in proc.stderr


def test_the_sleeper_tunes_when_idle_and_stops_when_the_developer_is_back(
    history_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(history_repo), str(root))
    repo = api.open_repo(root)
    api.refresh(repo)
    monkeypatch.setattr(tune, "CASES", 36)  # passed on to the child process
    sch = Scheduler(repo.root, True, repo.store, Config(), None)
    worktrees = git(root, "worktree", "list")
    # the developer comes back once the child's worktree exists: the child is stopped,
    # nothing is stored, and its worktree is gone
    monkeypatch.setattr(
        sch, "is_idle", lambda: tune.WORKTREE_PREFIX not in git(root, "worktree", "list")
    )
    paused = sch.step()
    assert paused.state == "paused" and paused.detail == "tuning stopped: the developer is back"
    with repo.store.read() as conn:
        assert repo.store.latest_tuning(conn) is None
    assert git(root, "worktree", "list") == worktrees
    # idle throughout: not before the pause's backoff is over; then the run is stored, and
    # not repeated until HEAD moves on
    monkeypatch.setattr(sch, "is_idle", lambda: True)
    assert sch.step().state == "no-backend"
    later = time.time() + scheduler.TUNE_PAUSE_SECONDS + 1
    monkeypatch.setattr(sch, "clock", lambda: later)
    ran = sch.step()
    assert ran.state == "ran" and ran.detail.startswith("tuning: "), ran
    with repo.store.read() as conn:
        run = repo.store.latest_tuning(conn)
    assert run is not None and run["fit_cases"] == 24
    assert sch.step().state == "no-backend"
    assert not tune.due(repo.root, repo.store, Config().sleep.retune_commits)


def test_a_stopping_sleeper_stops_the_fit(
    history_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(history_repo), str(root))
    repo = api.open_repo(root)
    api.refresh(repo)
    sch = Scheduler(repo.root, True, repo.store, Config(), None)
    monkeypatch.setattr(sch, "is_idle", lambda: True)
    polls = iter([False, False] + [True] * 1000)
    sch.stop_requested = lambda: next(polls)
    assert sch.step().state == "paused"
    with repo.store.read() as conn:
        assert repo.store.latest_tuning(conn) is None


def test_a_schema_9_store_gains_the_tuning_table(history_repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(history_repo), str(root))
    repo = api.open_repo(root)
    api.refresh(repo)
    with closing(sqlite3.connect(repo.store.path)) as conn:
        undo_schema_12(conn)  # the schemas after it
        conn.execute("DROP TABLE tuning")
        conn.execute("DROP TABLE embeddings")
        conn.execute("PRAGMA user_version = 9")
        conn.commit()
    again = api.open_repo(root)
    with again.store.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert again.store.latest_tuning(conn) is None
    assert api.status(again)["tuning"]["weights"] == "default"
