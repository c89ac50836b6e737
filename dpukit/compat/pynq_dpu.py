"""DPU-PYNQ's `DpuOverlay` over dpukit: a DPU-PYNQ notebook ports by changing its imports.

    from dpukit.compat.pynq_dpu import DpuOverlay     # instead of: from pynq_dpu import ...
    overlay = DpuOverlay("dpu.bit")                   # dpukit's overlay (`make overlay`)
    overlay.load_model("model.dpu")                   # a dpukit program, not an .xmodel
    dpu = overlay.runner                              # a vart.Runner (dpukit/compat/vart.py)

Where the DPU is: on a PYNQ board (pynq installed), the overlay's; elsewhere the virtual
board (the DPU's RTL in Verilator), said once as a warning. `backend=` or $DPUKIT_BACKEND
picks one: golden, rtl or pynq. `overlay.runner` runs the model's first DPU subgraph, as
DPU-PYNQ's does; a warning names any CPU work around it that is then the script's.

Board-side code: Python 3.10, numpy < 2, no onnx.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from dpukit.compat import vart, xir
from dpukit.errors import ProgramError
from dpukit.host.cpu import cpu_graph_nodes

# CPU ops around the DPU subgraph that a DPU-PYNQ script does itself anyway: float buffers
# are quantized and dequantized by the runner, and a softmax is the script's.
_SCRIPT_DOES = frozenset(("QuantizeLinear", "DequantizeLinear", "Softmax", "Identity"))
# Ops that keep the values and their order: harmless, unless the tensor they reshape is an
# image of several pixels and channels, whose order differs between the model's C, H, W and
# the buffer's H, W, C.
_RESHAPING = frozenset(("Reshape", "Flatten", "Squeeze", "Unsqueeze"))


class DpuOverlay:
    """The DPU's overlay, or the virtual board off a PYNQ board (pynq_dpu.DpuOverlay)."""

    def __init__(
        self, bitfile_name: str | os.PathLike = "dpu.bit", *, backend: str | None = None
    ) -> None:
        """`bitfile_name`: the overlay's .bit (its .hwh beside it) for a board. `backend`:
        golden, rtl or pynq (default: $DPUKIT_BACKEND, else pynq where pynq is installed,
        else rtl)."""
        chosen = vart.choose_backend(backend)
        self.bitfile_name = str(bitfile_name)
        self.backend = chosen
        if chosen == "pynq":
            from dpukit.host.pynq_board import open_pynq

            open_pynq(self.bitfile_name)  # a missing .bit or .hwh, no pynq, not root: now
            vart._current_overlay = self.bitfile_name
        elif backend is None and not os.environ.get("DPUKIT_BACKEND"):
            warnings.warn(
                f"DpuOverlay: pynq is not installed here (not a PYNQ board), so "
                f"{self.bitfile_name} is not loaded: the DPU runs on the virtual board (its "
                "RTL in Verilator). DPUKIT_BACKEND=golden runs the golden model instead.",
                stacklevel=2,
            )
        self.graph: xir.Graph | None = None
        self.runner: vart.Runner | None = None

    @property
    def overlay_dirname(self) -> str:
        return str(Path(self.bitfile_name).resolve().parent)

    def load_model(self, model: str | os.PathLike) -> None:
        """Load a dpukit program (a `.dpu` file, given as is or beside the .bit) and make
        `runner` on its first DPU subgraph."""
        path = Path(model)
        if not path.is_file() and (Path(self.overlay_dirname) / path).is_file():
            path = Path(self.overlay_dirname) / path
        graph = xir.Graph.deserialize(path)
        children = graph.get_root_subgraph().toposort_child_subgraph()
        dpus = [s for s in children if s.get_attr("device") == "DPU"]
        if not dpus:
            raise ProgramError(f"{path}: the model has no DPU subgraph; nothing runs on the DPU")
        _warn_about_host_work(path, children, dpus)
        self.close()  # first: a board's DPU serves one model at a time
        self.runner = vart.Runner.create_runner(
            dpus[0], "run", backend=self.backend,
            overlay=self.bitfile_name if self.backend == "pynq" else None,
        )  # fmt: skip
        self.graph = graph

    def close(self) -> None:
        """Let go of the loaded model's runner (and the board it holds)."""
        if self.runner is not None:
            self.runner.close()
            self.graph = self.runner = None

    def __enter__(self) -> DpuOverlay:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<DpuOverlay {self.bitfile_name}, {self.backend} backend>"


def _warn_about_host_work(path: Path, children: list, dpus: list) -> None:
    """Say what of the model `overlay.runner` leaves to the script: other DPU subgraphs,
    and CPU ops that change values or their order (beyond quantizing and softmax)."""
    notes = []
    if len(dpus) > 1:
        names = ", ".join(f"'{d.get_name()}'" for d in dpus)
        notes.append(
            f"it has {len(dpus)} DPU subgraphs ({names}); overlay.runner runs the first "
            "(vart.Runner.create_runner runs the others)"
        )
    derived = {n.name for d in dpus if d.host_derived for n in d.host_derived.nodes}
    for s in children:
        if s.get_attr("device") != "CPU":
            continue
        sg = s.get_graph().program.subgraphs[s.index]
        ops = _ops_left(sg, derived)
        images = [
            t.name
            for t in (*s.get_input_tensors(), *s.get_output_tensors())
            if t.dtype == "xint8" and t.ndim == 4 and t.dims[1] * t.dims[2] > 1 and t.dims[3] > 1
        ]
        harmless = _SCRIPT_DOES | (set() if images else _RESHAPING)
        extra = [op for op in dict.fromkeys(ops) if op not in harmless]
        if extra:
            what = f"its CPU subgraph '{s.get_name()}' runs {', '.join(extra)}"
            if images and _RESHAPING & set(extra):
                what += (
                    f" (reshaping {', '.join(images)}: the model's order is C, H, W, the "
                    "buffer's H, W, C)"
                )
            notes.append(what)
    if notes:
        warnings.warn(
            f"{path}: " + "; ".join(notes) + ". As in DPU-PYNQ, that work is the script's; "
            "dpukit.host.runner.create_runner runs the whole model.",
            stacklevel=3,
        )


def _ops_left(sg, derived: set[str]) -> list[str]:
    """The op types of CPU subgraph `sg` but for the nodes named in `derived`: node by node
    where its nodes can be read here (an ONNX subgraph takes onnx), else all its ops."""
    try:
        return [n.op_type for n in cpu_graph_nodes(sg) if n.name not in derived]
    except ImportError:  # a board, without onnx
        return list(sg.ops)
