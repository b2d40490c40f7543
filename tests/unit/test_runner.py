"""The per-host runner: every host's result in inventory order, bounded concurrency, Ctrl-C."""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait as futures_wait
from typing import Any

import pytest

from tsops.inventory.load import Target
from tsops.runner import HostResult, Runner


def target(name: str) -> Target:
    return Target(name=name, role="server", group=None, address=name, tags=("tag:server",),
                  user="root", port=22, identity_file=None, sudo=False, jump_host=None, line=1)


HOSTS = [target(f"host{i}") for i in range(6)]


def test_results_come_in_the_targets_order_whatever_order_they_finish_in() -> None:
    release = {t.name: threading.Event() for t in HOSTS}

    def work(t: Target) -> str:
        release[t.name].wait()
        index = int(t.name[-1])
        if index > 0:
            release[f"host{index - 1}"].set()  # finish in reverse order: host5 first
        return t.name

    release["host5"].set()
    assert Runner(concurrency=6).each(HOSTS, work) == [t.name for t in HOSTS]


def test_hosts_run_in_parallel_but_never_more_than_the_concurrency() -> None:
    turn = threading.Condition()
    hosts = HOSTS[:4]
    running = started = most = 0

    def work(t: Target) -> None:
        nonlocal running, started, most
        with turn:
            running += 1
            started += 1
            most = max(most, running)
            turn.notify_all()
            # Hold on until a second host runs beside this one, or no other host is left (the
            # wait's bound only keeps a broken runner from hanging the test).
            turn.wait_for(lambda: running >= 2 or started == len(hosts), timeout=30)
            running -= 1

    Runner(concurrency=2).each(hosts, work)
    assert most == 2


def test_one_host_failing_does_not_stop_the_others() -> None:
    def work(t: Target) -> HostResult:
        if t.name == "host2":
            return HostResult(t.name, "failed", "connection refused")
        return HostResult(t.name, "changed", done=["enroll"])

    results = Runner().each(HOSTS, work)
    assert [r.outcome for r in results] == ["changed"] * 2 + ["failed"] + ["changed"] * 3
    assert [r.failed for r in results] == [False, False, True, False, False, False]


def interrupt_first_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the runner's first wait raise KeyboardInterrupt, as Ctrl-C does; later waits are
    real."""
    real_wait = futures_wait
    calls = 0

    def wait(futures: Any, timeout: float | None = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        return real_wait(futures, timeout=timeout)

    monkeypatch.setattr("tsops.runner.wait", wait)


def test_ctrl_c_stops_at_once_without_waiting_for_a_host_still_running(
        monkeypatch: pytest.MonkeyPatch) -> None:
    interrupt_first_wait(monkeypatch)
    runner = Runner(concurrency=1)
    release = threading.Event()
    started: list[str] = []

    def work(t: Target) -> HostResult:
        started.append(t.name)
        release.wait(30)  # host0 hangs (a hung sshd) until the test is done
        return HostResult(t.name, "changed")

    try:
        with pytest.raises(KeyboardInterrupt):
            runner.each(HOSTS, work,
                        skipped=lambda t: HostResult(t.name, "skipped", "interrupted"))
        assert runner.stopping.is_set()
        assert not release.is_set()  # each returned while host0 was still running
    finally:
        release.set()
    assert started in ([], ["host0"])  # the hosts queued behind it never start


def test_ctrl_c_during_reads_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    interrupt_first_wait(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        Runner(concurrency=1).each(HOSTS, lambda t: t.name)


def test_a_stopping_runner_starts_no_change() -> None:
    runner = Runner()
    runner.stopping.set()
    ran: list[str] = []

    def work(t: Target) -> HostResult:
        ran.append(t.name)
        return HostResult(t.name, "changed")

    results = runner.each(HOSTS, work, skipped=lambda t: HostResult(t.name, "skipped"))
    assert ran == [] and {r.outcome for r in results} == {"skipped"}


def test_an_unexpected_exception_is_not_swallowed() -> None:
    def work(t: Target) -> None:
        raise RuntimeError(f"bug on {t.name}")

    with pytest.raises(RuntimeError, match="bug on host0"):
        Runner().each(HOSTS[:1], work)


def test_the_main_thread_waits_in_slices_so_a_signal_is_never_held_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal the kernel gives a worker thread is handled only when the main thread runs
    Python again: every wait of the runner has a timeout, so none sleeps until the hosts end."""
    timeouts: list[float | None] = []

    def wait(futures: Any, timeout: float | None = None) -> Any:
        timeouts.append(timeout)
        return futures_wait(futures, timeout=timeout)

    monkeypatch.setattr("tsops.runner.wait", wait)
    release = threading.Event()
    runner = Runner(concurrency=2)

    def let_go() -> None:
        time.sleep(0.5)  # longer than a slice: the runner must have woken at least once
        release.set()

    slow = threading.Thread(target=let_go)
    slow.start()
    assert runner.each([target("a"), target("b")],
                       lambda t: release.wait(30) and t.name) == ["a", "b"]
    slow.join()
    assert timeouts and all(t is not None and t <= 1 for t in timeouts)
    assert len(timeouts) > 1  # it woke while the hosts were still running
