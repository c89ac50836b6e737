"""The compiler's intermediate representation: quantized DPU operators between quantized tensors.

Every DPU tensor is int8 in DRAM, stored height-width-channel (HWC). A uint8 ONNX tensor
becomes int8 by subtracting 128 from its values and its zero point (same real values), so
the hardware has one data type; the host converts at the boundary (`host/layout.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class QTensor:
    """A quantized activation tensor: real = scale * (q - zero_point), q int8 on the DPU."""

    name: str
    shape: tuple[int, ...]  # ONNX logical shape, batch 1 (NCHW, or (1, K))
    scale: float
    zero_point: int  # in the int8 domain
    onnx_dtype: str  # "int8" or "uint8": what the ONNX graph carries
    hwc: tuple[int, int, int]  # how the DPU stores it in DRAM
    # For a flattened view of a (C, H, W) tensor: the source shape, so the host can put
    # the HWC-ordered bytes back into ONNX's CHW order.
    flatten_of: tuple[int, int, int] | None = None

    @property
    def nbytes(self) -> int:
        h, w, c = self.hwc
        return h * w * c


@dataclass(frozen=True)
class QConv:
    """Conv, Gemm and MatMul (and average pooling, as a depthwise conv of ones)."""

    name: str
    x: str
    y: str
    weight: np.ndarray = field(repr=False)  # int8 [Co, Ci/groups, kh, kw]
    bias: np.ndarray = field(repr=False)  # int32 [Co], scale sx*sw[co], zero point folded in
    multiplier: np.ndarray = field(repr=False)  # float64 [Co]: sx * sw[co] / sy
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1
    clamp: tuple[int, int] = (-128, 127)
    kind: str = "Conv"
    # When the host builds x from another tensor (its kernel rows stacked, see
    # frontend._stack_kernel_rows): that tensor. It is an input of the op's DPU subgraph too,
    # so the DRAM holds the conv's input as the model has it (per-layer checks read it).
    source: str | None = None

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]


@dataclass(frozen=True)
class QMaxPool:
    name: str
    x: str
    y: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    multiplier: float  # sx / sy
    clamp: tuple[int, int] = (-128, 127)
    kind: str = "MaxPool"


@dataclass(frozen=True)
class QAdd:
    name: str
    a: str
    b: str
    y: str
    clamp: tuple[int, int] = (-128, 127)
    kind: str = "Add"


@dataclass(frozen=True)
class QConcat:
    name: str
    inputs: tuple[str, ...]
    y: str
    kind: str = "Concat"


@dataclass(frozen=True)
class QView:
    """Flatten/Reshape: no data moves; y is another name for x's DRAM bytes."""

    name: str
    x: str
    y: str
    kind: str = "Flatten"


DpuOp = QConv | QMaxPool | QAdd | QConcat | QView


def op_inputs(op: DpuOp) -> tuple[str, ...]:
    if isinstance(op, QAdd):
        return (op.a, op.b)
    if isinstance(op, QConcat):
        return op.inputs
    if isinstance(op, QConv) and op.source is not None:
        return (op.x, op.source)
    return (op.x,)
