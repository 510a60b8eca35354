"""Process identity and liveness (``sleepy_repo.procs``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from sleepy_repo import procs


def test_this_process_is_alive_by_pid_and_identity() -> None:
    assert procs.alive(os.getpid(), procs.identity())
    assert procs.alive(os.getpid())


def test_an_exited_process_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ident = procs.identity(child.pid)
    child.wait()
    assert not procs.alive(child.pid, ident)
    assert not procs.alive(child.pid)


def test_a_reused_pid_or_a_reboot_is_not_the_owner() -> None:
    if not procs.boot_id():
        pytest.skip("no /proc")
    assert not procs.alive(os.getpid(), f"{procs.boot_id()}/1")  # another start time
    assert not procs.alive(os.getpid(), "another-boot/1")


def test_a_zombie_is_dead() -> None:
    """Exited but not yet reaped: ``os.kill(pid, 0)`` still succeeds, yet it runs nothing."""
    if not procs.boot_id():
        pytest.skip("no /proc")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while (procs._stat(child.pid) or ("Z",))[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not procs.alive(child.pid)
    finally:
        child.wait()
