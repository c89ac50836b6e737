"""The Vitis AI view's cost (issue 12): per image of the digits CNN, one image per run, the
DPU-PYNQ loop (DpuOverlay's runner: float32 buffers, execute_async, wait) beside the kit's
whole-model Runner (Runner.run on a batch of one), on the golden model and the virtual
board. Both run the same DPU subgraph; the view adds the buffer checks and conversions, the
Runner its CPU subgraphs (quantize, the stacked rows, dequantize)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from rtl import digits_program

from dpukit.compat.pynq_dpu import DpuOverlay
from dpukit.host.runner import create_runner
from dpukit.models.digits import load_digits_split


def _per_image(run, images: int, repeats: int) -> float:
    """Best of `repeats` mean seconds per image (this VM's noise is mostly one-sided)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for k in range(images):
            run(k)
        best = min(best, (time.perf_counter() - t) / images)
    return best


def bench_compat(config: str, workdir: Path, images: int = 50, repeats: int = 3) -> dict:
    x_test = load_digits_split()[2]
    path = digits_program(config, workdir)
    out = {"model": "digits CNN (8x8), one image per run", "images": images}
    for backend in ("golden", "rtl"):
        out[backend] = _bench_backend(path, backend, x_test[:images], repeats)
    return out


def _bench_backend(path: Path, backend: str, x: np.ndarray, repeats: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overlay = DpuOverlay("dpu.bit", backend=backend)
    overlay.load_model(path)
    dpu = overlay.runner
    inputs = [np.empty(tuple(dpu.get_input_tensors()[0].dims), np.float32)]
    outputs = [np.empty(tuple(dpu.get_output_tensors()[0].dims), np.float32)]

    def view(k: int) -> None:
        inputs[0][0] = x[k, 0][:, :, None]
        dpu.wait(dpu.execute_async(inputs, outputs))

    with overlay, create_runner(path, backend) as runner:
        name = runner.program.inputs[0].name

        def whole(k: int) -> None:
            runner.run({name: x[k : k + 1]})

        view(0), whole(0)  # warm: streams placed, plans made
        view_s = _per_image(view, len(x), repeats)
        whole_s = _per_image(whole, len(x), repeats)
    return {
        "dpu_pynq_loop_ms": round(1e3 * view_s, 3),
        "runner_run_ms": round(1e3 * whole_s, 3),
        "view_over_runner": round(view_s / whole_s, 3),
    }
