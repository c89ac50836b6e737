"""dpukit.compat's runners over their life: let go of, closed with jobs in flight, waited
on from two threads, closed from their own worker thread; and the pynq backend end to end
(DPU-PYNQ's loop through the stand-in pynq of tests/test_pynq_board.py, over the virtual
board), one graph at a time on the board's one DPU.

Values are checked against whole-model golden runs converted by hand
(tests/test_compat_xir_vart.py); whether a board is closed, by the virtual board's handle
(sim/virtual_board.py: None once closed).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from board_images import compile_digits, digits_pictures
from test_compat_xir_vart import (
    NHWC,
    SHAPE,
    Model,
    _dpu_subgraphs,
    _golden_runs,
    _raises,
    _run_int8,
    _two_dpu_model,
)
from test_pynq_board import STAND_IN, _overlay

from dpukit.compat import vart, xir
from dpukit.compat.pynq_dpu import DpuOverlay
from dpukit.compiler.program import Program
from dpukit.errors import ExecutionError
from dpukit.host.runner import create_runner
from dpukit.verify import dpu_tensors

DEADLINE_S = 20.0  # for what another thread finishes: far more than it takes


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return _two_dpu_model(tmp_path_factory.mktemp("lifecycle_two"))


@pytest.fixture(scope="module")
def two_ref(two: Model) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(31)
    return _golden_runs(two, [rng.uniform(-2, 2, SHAPE).astype(np.float32) for _ in range(3)])


def _eventually(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.005)


def _holds(graph: xir.Graph) -> bool:
    """A whole-model Runner is shared for runners on `graph`."""
    return any(entry[1] is graph for entry in vart._shared.values())


# --- letting go and closing --------------------------------------------------------------------


def test_a_dropped_runner_lets_go_of_its_board(two: Model, two_ref: list) -> None:
    """VART scripts `del` their runners: the shared whole-model Runner is closed then, its
    jobs finished first, and the virtual board with it."""
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s, z = two.names["s"], two.names["z"]
    runner = vart.Runner.create_runner(second, backend="rtl")
    model = runner._model
    board = model.dpu.board
    assert _holds(graph) and board._handle
    np.testing.assert_array_equal(_run_int8(runner, two_ref[0][s]), two_ref[0][z])
    gate = threading.Event()
    model._submit(gate.wait, DEADLINE_S)  # holds the worker: the jobs below stay queued
    jobs = [runner.execute_async([ref[s]], [np.empty(NHWC, np.int8)]) for ref in two_ref]
    futures = [model._jobs[job] for job, _ in jobs]
    threading.Timer(0.05, gate.set).start()
    del runner
    gc.collect()
    assert not _holds(graph)
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)
    assert model._worker is None and not board._handle  # closed
    with _raises(ExecutionError, "closed"):
        model.execute_subgraph_async(second.index, [two_ref[0][s].reshape(-1)])


def test_close_finishes_the_jobs_in_flight_then_refuses(two: Model, two_ref: list) -> None:
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s = two.names["s"]
    runner = vart.Runner.create_runner(second, backend="rtl")
    model = runner._model
    board = model.dpu.board
    gate = threading.Event()
    model._submit(gate.wait, DEADLINE_S)  # holds the worker: the jobs below stay queued
    jobs = [runner.execute_async([ref[s]], [np.empty(NHWC, np.int8)]) for ref in two_ref]
    futures = [model._jobs[job] for job, _ in jobs]
    assert not any(f.done() for f in futures)
    threading.Timer(0.05, gate.set).start()  # once close waits for them
    runner.close()
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)
    assert not _holds(graph) and not board._handle
    with _raises(ExecutionError, "closed"):
        runner.execute_async([two_ref[0][s]], [np.empty(NHWC, np.int8)])
    with _raises(ExecutionError, "closed"):
        runner.wait(jobs[-1])
    runner.close()  # again: nothing to do


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch as often as the interpreter lets them: races show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def _wait_in_two_threads(runner: vart.Runner, job: tuple[int, int]) -> list[object]:
    """What runner.wait(job) gave in each of two threads that call it at once."""
    both = threading.Barrier(2)
    said: list[object] = [None, None]

    def wait(i: int) -> None:
        both.wait()
        try:
            said[i] = runner.wait(job)
        except Exception as exc:  # noqa: BLE001 - which one is the point
            said[i] = exc

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    return said


def test_two_threads_waiting_on_one_job(two: Model, two_ref: list, fast_switching) -> None:
    """Exactly one of them gets the job (0, its output filled); the other an
    ExecutionError, never another exception."""
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s, z = two.names["s"], two.names["z"]
    with vart.Runner.create_runner(second, backend="golden") as runner:
        for k in range(200):
            ref = two_ref[k % len(two_ref)]
            out = np.full(NHWC, 99, np.int8)
            said = _wait_in_two_threads(runner, runner.execute_async([ref[s]], [out]))
            assert said.count(0) == 1, said
            (other,) = [x for x in said if x != 0]
            assert isinstance(other, ExecutionError) and "no job" in str(other), repr(other)
            np.testing.assert_array_equal(out, ref[z])


def _wait_paused_at_line(wait: Callable, job: object, line: int) -> tuple[object, object, bool]:
    """`wait(job)` in a thread A paused before the `line`-th line of `wait` it runs (sys.settrace
    steps it), while this thread's own `wait(job)` runs to its end; then A goes on. What A
    and this thread got, and whether A's wait has that many lines."""
    code = wait.__func__.__code__
    reached, resume = threading.Event(), threading.Event()

    def trace(frame, event: str, arg: object) -> Callable | None:
        if frame.f_code is not code:
            return None
        seen = 0

        def step(frame, event: str, arg: object) -> Callable:
            nonlocal seen
            if event == "line":
                seen += 1
                if seen == line:
                    reached.set()
                    resume.wait(DEADLINE_S)
            return step

        return step

    said: dict[str, object] = {}

    def a() -> None:
        sys.settrace(trace)
        try:
            said["a"] = wait(job)
        except Exception as exc:  # noqa: BLE001 - which one is the point
            said["a"] = exc
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=a)
    thread.start()
    while not reached.is_set() and thread.is_alive():
        thread.join(0.001)
    paused = reached.is_set()
    try:
        said["b"] = wait(job)
    except Exception as exc:  # noqa: BLE001
        said["b"] = exc
    resume.set()
    thread.join(DEADLINE_S)
    return said["a"], said["b"], paused


@pytest.mark.parametrize("level", ["vart", "whole model"])
def test_one_job_waited_from_two_threads_at_every_step(
    two: Model, two_ref: list, level: str
) -> None:
    """Whichever line of `wait` the first waiter has reached when the second waits: one of
    them gets the job, the other an ExecutionError (a check, then a take, would fail)."""
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s = two.names["s"]
    x = np.random.default_rng(34).uniform(-2, 2, SHAPE).astype(np.float32)
    with (
        vart.Runner.create_runner(second, backend="golden") as runner,
        create_runner(two.program, "golden") as whole,
    ):
        steps = 0
        for line in range(1, 100):
            if level == "vart":
                job = runner.execute_async([two_ref[0][s]], [np.empty(NHWC, np.int8)])
                a, b, paused = _wait_paused_at_line(runner.wait, job, line)
            else:
                job = whole.execute_async({"input": x})
                a, b, paused = _wait_paused_at_line(whole.wait, job, line)
            if not paused:
                break
            steps += 1
            given = [r for r in (a, b) if not isinstance(r, BaseException)]
            refused = [r for r in (a, b) if isinstance(r, BaseException)]
            assert len(given) == len(refused) == 1, (line, a, b)
            assert isinstance(refused[0], ExecutionError), (line, refused[0])
            assert "no job" in str(refused[0])
        assert steps >= 2  # it did step through wait


def test_the_whole_model_runner_refuses_jobs_once_closed(two: Model) -> None:
    x = np.random.default_rng(32).uniform(-2, 2, SHAPE).astype(np.float32)
    runner = create_runner(two.program, "golden")
    want = runner.run({"input": x}).outputs
    started = runner.execute_async({"input": x})
    runner.close()
    for name, value in runner.wait(started).outputs.items():  # finished by close
        np.testing.assert_array_equal(value, want[name])
    with _raises(ExecutionError, "closed"):
        runner.execute_async({"input": x})
    with _raises(ExecutionError, "closed"):
        runner.run({"input": x})
    assert runner._worker is None


def test_close_from_the_worker_thread(two: Model) -> None:
    """A close the worker thread runs itself (as a finalizer the garbage collector runs
    there does) cannot wait for that thread: it ends closed all the same."""
    x = np.random.default_rng(33).uniform(-2, 2, SHAPE).astype(np.float32)
    runner = create_runner(two.program, "rtl")
    runner.run({"input": x})
    board = runner.dpu.board
    assert runner.wait(runner._submit(runner.close)) is None  # no "cannot join current thread"
    _eventually(lambda: runner._worker is None and not board._handle, "the board closed")
    _eventually(lambda: all(t.name != "dpukit-close" for t in threading.enumerate()), "closed")
    with _raises(ExecutionError, "closed"):
        runner.execute_async({"input": x})


def test_a_runner_collected_on_the_worker_thread_lets_go(two: Model, two_ref: list) -> None:
    """A runner in a reference cycle, collected while a job runs: its finalizer closes the
    whole-model Runner from the worker thread."""
    graph = xir.Graph.deserialize(two.path)
    second = _dpu_subgraphs(graph)[1]
    s = two.names["s"]
    runner = vart.Runner.create_runner(second, backend="rtl")
    model = runner._model
    board = model.dpu.board
    runner.itself = runner  # a cycle: only the garbage collector frees it
    for ref in two_ref:
        runner.execute_async([ref[s]], [np.empty(NHWC, np.int8)])
    enabled = gc.isenabled()
    gc.disable()  # collected on the worker thread only, by the job below
    try:
        del runner
        collect = model._submit(gc.collect)
        model.wait(collect)
    finally:
        if enabled:
            gc.enable()
    assert not _holds(graph)
    _eventually(lambda: model._worker is None and not board._handle, "the board closed")


# --- the pynq backend, through the stand-in pynq over the virtual board -----------------------


@pytest.fixture
def pynq_overlay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An overlay .bit for the stand-in pynq (importable in this process; its board the
    virtual board of the digits program's config), gone from sys.modules afterwards."""
    if os.geteuid() != 0:
        pytest.skip("pynq (and the stand-in) maps the DPU's registers as root only")
    (tmp_path / "pkg" / "pynq").mkdir(parents=True)
    (tmp_path / "pkg" / "pynq" / "__init__.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.setenv("STAND_IN_CONFIG", "pynq-z2")
    monkeypatch.delenv("DPUKIT_OVERLAY", raising=False)
    monkeypatch.setattr(vart, "_current_overlay", None)  # DpuOverlay sets it
    yield _overlay(tmp_path / "overlay")
    sys.modules.pop("pynq", None)


@pytest.fixture(scope="module")
def digits(digits_qdq: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The digits program, ten pictures ([10, 1, 8, 8] floats) and the whole model's golden
    logits and quantized image (VART's int8 NHWC, by hand) for each."""
    path = compile_digits(digits_qdq, tmp_path_factory.mktemp("lifecycle_digits") / "d.dpu")
    program = Program.load(path)
    pixels, _ = digits_pictures(per_class=1)
    images = (pixels[:, None] / np.float32(255)).astype(np.float32)
    (dpu_sg,) = [sg for sg in program.subgraphs if sg.device == "DPU"]
    (image_name,) = [n for n in dpu_sg.inputs if "stacked" not in n]
    logits, quantized = [], []
    with create_runner(program, "golden") as whole:
        for image in images:
            logits.append(whole.run({"input": image[None]}).outputs["logits"][0])
            q = dpu_tensors(whole, program)[image_name]
            assert q.dtype == np.int8 and q.shape == (1, 1, 8, 8)
            quantized.append(q.transpose(0, 2, 3, 1))
    return path, images, np.array(logits), quantized


def _dpu_pynq_loop(dpu: vart.Runner, images: np.ndarray) -> np.ndarray:
    """DPU-PYNQ's classification loop (its notebooks' buffers and calls)."""
    shape_in = tuple(dpu.get_input_tensors()[0].dims)
    shape_out = tuple(dpu.get_output_tensors()[0].dims)
    input_data = [np.empty(shape_in, dtype=np.float32, order="C")]
    output_data = [np.empty(shape_out, dtype=np.float32, order="C")]
    got = []
    for image in images:
        input_data[0][0, ...] = image.transpose(1, 2, 0)  # H, W, C
        job_id = dpu.execute_async(input_data, output_data)
        dpu.wait(job_id)
        got.append(output_data[0][0].copy())
    return np.array(got)


def test_dpu_pynq_on_the_pynq_backend(pynq_overlay: Path, digits: tuple) -> None:
    path, images, logits, quantized = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a backend chosen, a model with no host work
        overlay = DpuOverlay(pynq_overlay, backend="pynq")
    with overlay:
        overlay.load_model(path)
        dpu = overlay.runner
        assert "pynq backend" in repr(dpu)
        assert dpu._model.dpu.board.name.startswith("PYNQ board (dpukit_test.bit")
        np.testing.assert_array_equal(_dpu_pynq_loop(dpu, images), logits)
        for q, want in zip(quantized, logits, strict=True):  # int8 in, float out
            out = np.empty([1, 10], np.float32)
            dpu.wait(dpu.execute_async([q], [out]))
            np.testing.assert_array_equal(out[0], want)


def test_the_pynq_board_runs_one_graph_at_a_time(pynq_overlay: Path, digits: tuple) -> None:
    path, images, logits, _ = digits
    other = _dpu_subgraphs(xir.Graph.deserialize(path))[0]  # another Graph of it
    with DpuOverlay(pynq_overlay, backend="pynq") as overlay:
        overlay.load_model(path)
        with _raises(ExecutionError, "in use", "close them"):
            vart.Runner.create_runner(other, "run", backend="pynq")
        assert not _holds(other.get_graph())
        np.testing.assert_array_equal(_dpu_pynq_loop(overlay.runner, images[:3]), logits[:3])
    assert overlay.runner is None
    with vart.Runner.create_runner(other, "run", backend="pynq") as runner:  # now free
        np.testing.assert_array_equal(_dpu_pynq_loop(runner, images), logits)
        with DpuOverlay(pynq_overlay, backend="pynq") as second:
            with _raises(ExecutionError, "in use"):
                second.load_model(path)
