"""A request thread's OpenMP limit holds for torch, so serving starts no second OpenMP team.

Once a process holds more OpenMP threads than cores, libgomp stops spinning between
parallel regions in every thread, and torch ran about 1.5x slower on the main thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

torch = pytest.importorskip("torch")

from verticals.core.routes import ModelThreads  # noqa: E402
from verticals.core.thread_limits import limit_this_thread  # noqa: E402


def _native_threads() -> set[int]:
    """Threads of this process that Python did not start (OpenMP's workers among them)."""
    python = {t.native_id for t in threading.enumerate()}
    return {int(t) for t in os.listdir(f"/proc/{os.getpid()}/task")} - python


def _model_work() -> None:
    x = torch.randn(2_000_000)
    x.sigmoid()  # MKL's vector math: a thread count of its own
    (x * 2).sum()  # ATen's parallel_for: the thread's OpenMP count


def _threads_it_added(start: Callable[[Callable[[], None]], Callable[[], None]]) -> int:
    """How many threads the model work added while the thread that ran it is still alive;
    `start(work)` runs it and returns what ends that thread."""
    before = _native_threads()
    done = threading.Event()

    def work() -> None:
        _model_work()
        done.set()

    end = start(work)
    try:
        assert done.wait(30)
        time.sleep(0.2)
        return len(_native_threads() - before)
    finally:
        end()


def _plain_thread(setup: Callable[[], None]):
    def start(work: Callable[[], None]) -> Callable[[], None]:
        release = threading.Event()

        def run() -> None:
            setup()
            work()
            release.wait(30)

        thread = threading.Thread(target=run)
        thread.start()
        return lambda: (release.set(), thread.join())

    return start


def _model_threads(start_work: Callable[[], None]) -> Callable[[], None]:
    pool = ModelThreads(threads=1, workers=1)
    pool.executor().submit(start_work).result(30)
    return pool.close


@pytest.fixture
def trained_in_this_process():
    """torch's process-wide count set, as a training in the same process leaves it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.randn(2_000_000).sigmoid()  # the main thread's own team, made before counting
    yield
    torch.set_num_threads(before)


def test_an_unlimited_thread_adds_an_openmp_team(trained_in_this_process) -> None:
    assert _threads_it_added(_plain_thread(lambda: None)) >= 1  # what the others must avoid


def test_a_limited_thread_adds_none(trained_in_this_process) -> None:
    assert _threads_it_added(_plain_thread(lambda: limit_this_thread(1))) == 0
    assert torch.get_num_threads() == 2  # the main thread keeps its count


def test_the_servers_model_threads_add_none(trained_in_this_process) -> None:
    assert _threads_it_added(_model_threads) == 0
