"""Conversions between ONNX tensors (NCHW, int8/uint8) and the DPU's DRAM bytes (HWC, int8).

One place for the layout rules of `ir.QTensor`: uint8 values shift by -128, 4-D tensors go
channel-last, flattened views keep the HWC byte order of their source.
"""

from __future__ import annotations

import numpy as np

from dpukit.compiler.ir import QTensor
from dpukit.errors import ExecutionError


def to_dram(t: QTensor, value: np.ndarray) -> np.ndarray:
    """ONNX value (batch 1) -> int8 bytes in DRAM order."""
    value = np.asarray(value)
    if value.dtype != np.dtype(t.onnx_dtype):
        raise ExecutionError(f"tensor '{t.name}': expected {t.onnx_dtype}, got {value.dtype}")
    if value.size != int(np.prod(t.shape)):
        raise ExecutionError(f"tensor '{t.name}': expected shape {t.shape}, got {value.shape}")
    v = value.astype(np.int16) - (128 if t.onnx_dtype == "uint8" else 0)
    h, w, c = t.hwc
    if t.flatten_of is not None:
        ch, hh, ww = t.flatten_of
        v = v.reshape(ch, hh, ww).transpose(1, 2, 0)
    elif len(t.shape) == 4:
        v = v.reshape(c, h, w).transpose(1, 2, 0)
    return v.astype(np.int8).reshape(-1)


def from_dram(t: QTensor, data: np.ndarray) -> np.ndarray:
    """int8 bytes in DRAM order -> ONNX value (batch 1, ONNX dtype and shape)."""
    h, w, c = t.hwc
    v = data.view(np.int8).astype(np.int16)
    if t.flatten_of is not None:
        ch, hh, ww = t.flatten_of
        v = v.reshape(hh, ww, ch).transpose(2, 0, 1)
    elif len(t.shape) == 4:
        v = v.reshape(h, w, c).transpose(2, 0, 1)
    v = v + (128 if t.onnx_dtype == "uint8" else 0)
    return v.astype(t.onnx_dtype).reshape(t.shape)
