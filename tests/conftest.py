"""Shared fixtures: a scratch working directory, composed configs, one trained finance run."""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# What the suite and the processes it starts write to temporary folders (pytest's own
# folders, Ray's short links, YOLO settings, servers' scratch files) lands in one folder of
# this session's: removed when the session passes, kept and named when it does not.
SESSION_TMP = Path(tempfile.mkdtemp(prefix="vt-"))  # short: Ray's socket paths start there
os.environ["TMPDIR"] = tempfile.tempdir = str(SESSION_TMP)
os.environ.setdefault("MPLBACKEND", "Agg")
# `make test` runs the suite in two pytest-xdist workers. Each then gets one OpenMP thread
# (torch, LightGBM, implicit, and the servers, CLI runs and kernels it starts), so the two
# share the cores instead of fighting over them: 711 s against 1,284 s on 2 cores, and the
# planted trainings take as long as with two threads. Tests that are about threads set them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# ultralytics reads its settings folder on first import: a fresh one per session proves
# that setting it up (settings, fonts) needs no network either.
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="verticals-yolo-"))
# A developer's own MLflow server must not receive the tests' runs and promotions.
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Servers started without log settings (a bundle's serve.py) log here, not into the checkout.
os.environ["VERTICALS_LOG_DIR"] = tempfile.mkdtemp(prefix="verticals-test-predlog-")
for _key in ("VERTICALS_LOG", "VERTICALS_LOG_URL"):
    os.environ.pop(_key, None)

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline, registry  # noqa: E402

from .toy_vertical import ToyVertical  # noqa: E402

SMALL_SYNTHETIC = ["data=synthetic", "data.n_rows=6000", "model.num_boost_round=300"]


# In CI (CI=true) nothing may pass by skipping: a test or module that skips because an
# extra is not installed or a data folder is missing fails the run. Only tests that need
# hardware CI does not have (a GPU) may skip there.
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_CI_MAY_SKIP = ("GPU", "CUDA")


def _fail_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not (_IN_CI and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    if not any(word in reason for word in _CI_MAY_SKIP):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run it: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> object:
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


# The suite loads torch, Ray (its gRPC threads), onnxruntime, LightGBM and implicit (OpenMP)
# into one process. Once, a run whose every test had passed died of SIGSEGV while the
# interpreter tore those libraries down, after pytest had reported; make turned that into a
# failure. The process now ends with pytest's own status as soon as pytest is done
# (`PYTHONFAULTHANDLER=1 VERTICALS_TEST_NORMAL_EXIT=1` shows such a crash's stacks instead).
_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _STATUS.append(int(exitstatus))
    if exitstatus == 0:
        import shutil

        shutil.rmtree(SESSION_TMP, ignore_errors=True)
    else:
        print(f"\nthe session's temporary files are kept in {SESSION_TMP}")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker's results go out as it ends
        return
    if _STATUS and not os.environ.get("VERTICALS_TEST_NORMAL_EXIT"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_STATUS[-1])


_THREADS_AT_START = os.environ.get("OMP_NUM_THREADS")


@pytest.fixture(scope="module", autouse=True)
def _thread_settings_kept() -> Iterator[None]:
    """No module leaves OMP_NUM_THREADS changed: every process started later (servers, CLI
    runs, notebook kernels) would inherit it (ultralytics' import sets it to 1)."""
    yield
    now = os.environ.get("OMP_NUM_THREADS")
    assert now == _THREADS_AT_START, f"OMP_NUM_THREADS left at {now!r}"


# Model threads of the apps tests build: released after each test, as a server's shutdown
# releases them. Many tests call an app through `TestClient(app)` without `with`, so it is
# never shut down, and its request threads would live on. Each once ran torch with an
# OpenMP team of its own, and once a process holds more OpenMP threads than cores, libgomp
# stops spin-waiting in every thread: torch then trained about 1.5x slower in every later
# test (measured on 2 cores). A released app makes its threads again on its next request.
_MODEL_THREADS: weakref.WeakSet[Any] = weakref.WeakSet()


@pytest.fixture(scope="session", autouse=True)
def _model_threads_tracked() -> Iterator[None]:
    from verticals.core.batching import MicroBatcher
    from verticals.core.routes import ModelThreads

    patch = pytest.MonkeyPatch()
    for kind in (ModelThreads, MicroBatcher):
        made = kind.__init__

        def tracked(self: Any, *args: Any, _made: Callable[..., None] = made, **kw: Any) -> None:
            _made(self, *args, **kw)
            _MODEL_THREADS.add(self)

        patch.setattr(kind, "__init__", tracked)
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def _model_threads_released(_model_threads_tracked: None) -> Iterator[None]:
    yield
    for threads in list(_MODEL_THREADS):
        threads.close()


@pytest.fixture(scope="session", autouse=True)
def _toy_registered() -> None:
    registry.register(ToyVertical())


def needs_ultralytics() -> None:
    """Skip when ultralytics is not installed, without importing it: its own import sets
    OMP_NUM_THREADS=1 for every process the suite starts afterwards (the vertical imports it
    through `verticals.manufacturing.offline`, which undoes that)."""
    import importlib.util

    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed")


def finance_cfg(root: Path, *overrides: str):
    return compose("train", "finance", [f"paths.root_dir={root}", "trainer.device=cpu", *overrides])


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Path]]:
    """`tiny(vertical)`: one seconds-long demo run (`debug=fast`, no tracking) and its bundle
    per vertical, trained on first use and shared by every test that needs a model served,
    not a good one (limits, the client, fuzzing)."""
    from verticals.core.bundle import write_bundle

    made: dict[str, tuple[Any, Path]] = {}

    def get(vertical: str) -> tuple[Any, Path]:
        if vertical not in made:
            root = tmp_path_factory.mktemp(f"tiny-{vertical}")
            cfg = compose("train", vertical, [f"paths.root_dir={root}", "trainer.device=cpu",
                                              "debug=fast", "tracking=none"])  # fmt: skip
            run = pipeline.train(cfg)
            made[vertical] = (run, write_bundle(run.run_dir, root / "bundles"))
        return made[vertical]

    return get


@pytest.fixture(scope="session")
def finance_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    """One small synthetic finance run shared by the end-to-end tests."""
    root = tmp_path_factory.mktemp("finance")
    monotone = "++model.monotone={debt_to_income: 1, late_payments_12m: 1, age: -1}"
    return pipeline.train(finance_cfg(root, *SMALL_SYNTHETIC, monotone))
