"""The host's CPU subgraphs without onnx: a numpy executor of the ONNX ops the compiler leaves
on the CPU, and the form a program stores such a subgraph in.

A board (PYNQ's Python 3.10, numpy < 2) has neither onnx nor onnxruntime, so a CPU subgraph
travels as a `CpuGraph`: nodes with their ONNX op type, attributes as JSON values, and the
constants as raw little-endian arrays. Each op computes what onnxruntime computes, in the same
float32 steps where onnxruntime is exact (QuantizeLinear divides by the scale, as it does, and
rounds half to even; tests/test_cpu_ops.py checks every op against it). Only the
transcendental ops (Softmax, Sigmoid, Tanh) differ, by a few float32 ulp: onnxruntime uses
its own approximations of exp and tanh.

The stored form: FORM_MAGIC | form version (u32 LE) | JSON length (u32 LE) | JSON | blob,
where the JSON lists the graph's inputs and outputs (name, dtype, shape), its nodes, and each
constant's dtype, shape and offset in the blob. No pickle: loading runs no code.

Imports only numpy and the standard library, and runs on Python 3.10 with numpy 1.2x.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np

FORM_MAGIC = b"DPUCPU\x00\x01"
FORM_VERSION = 1
_FIXED = struct.Struct("<8sII")

# The dtypes a CPU graph's values may have (numpy names); float16 and bfloat16 are left to
# onnxruntime, whose kernels round them in their own ways.
DTYPES = frozenset(
    ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
     "float32", "float64")
)  # fmt: skip
# ONNX TensorProto data types (Cast's `to`, QuantizeLinear's `output_dtype`) as numpy names.
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 11: "float64", 12: "uint32", 13: "uint64",
}  # fmt: skip
_FLOAT = frozenset(("float32", "float64"))
_QUANTIZED = frozenset(("int8", "uint8"))
_INTEGER = frozenset(("int32", "int64"))
_NUMBER = DTYPES - {"bool"}


class FormatError(ValueError):
    """A stored CPU graph is malformed; the message says what is wrong."""


class OpError(RuntimeError):
    """A node failed on its inputs; the message names the node."""


@dataclass(frozen=True)
class ValueInfo:
    """A graph input or output: numpy dtype name and shape (None: a dim or rank unknown)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass
class Node:
    op_type: str
    name: str
    inputs: list[str]  # "" for an optional input left out
    outputs: list[str]
    attrs: dict[str, object] = field(default_factory=dict)


@dataclass
class CpuGraph:
    """An ONNX graph of default-domain ops at one opset version, ready for numpy."""

    opset: int
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    nodes: list[Node]
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def ops(self) -> list[str]:
        """The op types it holds, each once, in node order."""
        return list(dict.fromkeys(n.op_type for n in self.nodes))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs (in `outputs` order, fresh arrays) for these inputs; a node that fails
        on them raises OpError naming it."""
        env: dict[str, np.ndarray] = dict(self.constants)
        env.update((v.name, feeds[v.name]) for v in self.inputs)
        for node in self.nodes:
            op = OPS[node.op_type]
            args = [env[name] if name else None for name in node.inputs]
            try:
                _check_dtypes(op, args)
                with np.errstate(all="ignore"):  # inf and NaN are values here, as in ONNX
                    results = op.compute(args, node.attrs, self.opset)
            except (ValueError, TypeError, IndexError, ZeroDivisionError, MemoryError) as exc:
                raise OpError(f"node '{node.name}' ({node.op_type}): {exc}") from None
            env.update(zip(node.outputs, results, strict=True))
        return [np.array(env[v.name]) for v in self.outputs]


# -- the ops -------------------------------------------------------------------------------
Args = list  # the node's inputs in order, None for an optional one left out
Attrs = Mapping[str, object]


@dataclass(frozen=True)
class OpSpec:
    """One op: its computation, the attributes it knows (name -> JSON kind), how many inputs
    it takes, the dtypes its inputs may have (by position; None: any of DTYPES), and the
    oldest opset whose semantics `compute` implements. `check` finds attribute values it
    cannot handle (None when it can), so the compiler and the loader refuse them early."""

    compute: Callable[[Args, Attrs, int], list[np.ndarray]]
    attrs: Mapping[str, str]
    inputs: tuple[int, int]
    dtypes: tuple[frozenset[str] | None, ...] = ()
    since: int = 1
    check: Callable[[Attrs, int], str | None] = lambda attrs, opset: None


def _axis(axis: object, rank: int, what: str = "axis") -> int:
    """A (possibly negative) axis of a tensor of `rank` dims, as ONNX counts it."""
    if not isinstance(axis, int | np.integer) or not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} is out of range for a tensor of rank {rank}")
    return int(axis) % rank


def _ints(value: np.ndarray | None, what: str) -> list[int]:
    """A 1-D (or scalar) integer tensor input as Python ints."""
    if value is None:
        raise ValueError(f"input '{what}' is required")
    if value.dtype.kind not in "iu" or value.ndim > 1:
        raise ValueError(f"input '{what}' must be a 1-D integer tensor, not {value.dtype}")
    return [int(v) for v in value.reshape(-1)]


def _input(args: Args, k: int) -> np.ndarray | None:
    return args[k] if k < len(args) else None


def _attr(attrs: Attrs, name: str):
    """An attribute the op cannot do without."""
    if name not in attrs:
        raise ValueError(f"attribute '{name}' is required")
    return attrs[name]


def _check_dtypes(op: OpSpec, args: Args) -> None:
    """The inputs' dtypes are ones the op takes (inputs past `op.dtypes` take any)."""
    for k, (arg, allowed) in enumerate(zip(args, op.dtypes, strict=False)):
        if arg is not None and allowed is not None and arg.dtype.name not in allowed:
            raise ValueError(f"input {k} is {arg.dtype}; the op takes {', '.join(sorted(allowed))}")


def _quantization(x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, op: str):
    """Scale and zero point shaped to broadcast against x: one for the tensor (a scalar or a
    1-element vector, as onnxruntime reads it) or one per slice along `axis`."""
    if zp is not None and zp.shape != scale.shape:
        raise ValueError(f"{op}: zero point shape {list(zp.shape)} != scale {list(scale.shape)}")
    if scale.size == 1 and scale.ndim <= 1:
        return scale.reshape(()), None if zp is None else zp.reshape(())
    axis = _axis(axis, x.ndim)
    if scale.ndim != 1 or scale.shape[0] != x.shape[axis]:
        raise ValueError(
            f"{op}: scale of shape {list(scale.shape)} for axis {axis} of an input of shape "
            f"{list(x.shape)}"
        )
    shape = [1] * x.ndim
    shape[axis] = -1
    return scale.reshape(shape), None if zp is None else zp.reshape(shape)


def _check_quantize(attrs: Attrs, opset: int) -> str | None:
    if attrs.get("block_size", 0):
        return "blocked quantization (block_size)"
    if attrs.get("output_dtype", 0) and ONNX_DTYPES.get(attrs["output_dtype"]) not in _QUANTIZED:
        return f"output_dtype {attrs['output_dtype']} (only int8 and uint8)"
    return None


def _quantize_linear(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    """y = saturate(round_half_even(x / scale) + zero_point), computed in float32 as
    onnxruntime does (it divides; multiplying by 1/scale rounds some ties the other way)."""
    x, scale, zp = args[0], args[1], _input(args, 2)
    # the zero point's dtype, else output_dtype (opset 21; 0 = unset), else uint8
    declared = ONNX_DTYPES.get(attrs.get("output_dtype", 0))
    dtype = np.dtype(zp.dtype if zp is not None else declared or "uint8")
    if declared and declared != dtype.name:
        raise ValueError(f"output_dtype {declared} differs from the zero point's {dtype}")
    if dtype.name not in _QUANTIZED:
        raise ValueError(f"quantizing to {dtype} (only int8 and uint8)")
    s, z = _quantization(x, scale, zp, attrs.get("axis", 1), "QuantizeLinear")
    return [quantize(x, s, np.zeros((), np.int32) if z is None else z, dtype)]


ArrayOrScalar = np.ndarray | np.generic  # a scale or zero point: an array or a numpy scalar


def quantize(x: np.ndarray, scale: ArrayOrScalar, zero_point: ArrayOrScalar, dtype) -> np.ndarray:
    """saturate(round_half_even(x / scale) + zero_point) as `dtype`, in x's float width as
    onnxruntime computes QuantizeLinear (it divides; multiplying by 1/scale rounds some ties
    the other way). `scale` and `zero_point` broadcast against x."""
    z = np.asarray(zero_point).astype(np.int32)
    info = np.iinfo(dtype)
    # clamp while still float (as onnxruntime does), so huge values saturate, never wrap
    q = np.clip(np.rint(x / scale), (info.min - z).astype(x.dtype), (info.max - z).astype(x.dtype))
    return (q.astype(np.int32) + z).astype(dtype)


def _dequantize_linear(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    x, scale, zp = args[0], args[1], _input(args, 2)
    s, z = _quantization(x, scale, zp, attrs.get("axis", 1), "DequantizeLinear")
    return [dequantize(x, s, np.zeros((), np.int32) if z is None else z)]


def dequantize(q: np.ndarray, scale: ArrayOrScalar, zero_point: ArrayOrScalar) -> np.ndarray:
    """(q - zero_point) * scale: the difference in int32, one rounding to scale's width."""
    diff = q.astype(np.int32) - np.asarray(zero_point).astype(np.int32)
    return diff.astype(scale.dtype) * scale


def _softmax(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    """Opset 13 on: over one axis (default -1). Before: over the dims from `axis` (default 1)
    on, taken as one row."""
    x = args[0]
    if opset >= 13:
        rows, axis = x, _axis(attrs.get("axis", -1), x.ndim)
    else:
        at = _axis(attrs.get("axis", 1), x.ndim)
        rows, axis = x.reshape(math.prod(x.shape[:at]), math.prod(x.shape[at:])), 1
    e = np.exp(rows - rows.max(axis=axis, keepdims=True))
    return [(e / e.sum(axis=axis, keepdims=True)).reshape(x.shape)]


_PAD_MODES = ("constant", "edge", "reflect")


def _check_pad(attrs: Attrs, opset: int) -> str | None:
    mode = attrs.get("mode", "constant")
    return None if mode in _PAD_MODES else f"mode '{mode}'"


def _pad(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    x, mode = args[0], attrs.get("mode", "constant")
    if opset < 11:
        pads, value, axes = list(_attr(attrs, "pads")), attrs.get("value", 0.0), None
    else:
        pads, value = _ints(args[1], "pads"), _input(args, 2)
        axes = _input(args, 3)
        axes = None if axes is None else _ints(axes, "axes")
        if value is not None and value.size != 1:
            raise ValueError("constant_value must be a scalar")
        value = 0 if value is None else value.reshape(())
    axes = list(range(x.ndim)) if axes is None else [_axis(a, x.ndim) for a in axes]
    if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
        raise ValueError(f"{len(pads)} pads for {len(axes)} distinct axes")
    widths = [[0, 0] for _ in range(x.ndim)]
    for k, a in enumerate(axes):
        widths[a] = [pads[k], pads[k + len(axes)]]
    if any(p < 0 for w in widths for p in w):
        if mode != "constant":
            raise ValueError(f"negative pads in mode '{mode}'")
        for a, (b, e) in enumerate(widths):
            if max(-b, 0) + max(-e, 0) > x.shape[a]:
                raise ValueError(f"pads {b}, {e} remove more than the {x.shape[a]} on axis {a}")
        # a negative pad removes: crop first (the same as after, for a constant)
        x = x[tuple(slice(max(-b, 0), x.shape[a] - max(-e, 0)) for a, (b, e) in enumerate(widths))]
        widths = [[max(b, 0), max(e, 0)] for b, e in widths]
    if mode == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=np.array(value, x.dtype))]
    for a, (b, e) in enumerate(widths):
        limit = x.shape[a] - 1 if mode == "reflect" else x.shape[a]
        if (b or e) and max(b, e) > limit:
            raise ValueError(f"mode '{mode}' pads axis {a} of {x.shape[a]} by {max(b, e)}")
    return [np.pad(x, widths, mode=mode)]


_END_OF_AXIS = (2**31 - 1, 2**63 - 1)  # INT32_MAX, INT64_MAX as Slice ends


def _slice(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    """ONNX's clamping: starts and ends past either end stop at it, negative ones count
    from the end; a negative step runs backwards."""
    x = args[0]
    if opset < 10:
        starts, ends = list(_attr(attrs, "starts")), list(_attr(attrs, "ends"))
        axes, steps = attrs.get("axes"), None
    else:
        starts, ends = _ints(args[1], "starts"), _ints(args[2], "ends")
        axes, steps = _input(args, 3), _input(args, 4)
        axes = None if axes is None else _ints(axes, "axes")
        steps = None if steps is None else _ints(steps, "steps")
    axes = list(range(len(starts))) if axes is None else [_axis(a, x.ndim) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps) or len(set(axes)) != len(axes):
        raise ValueError("starts, ends, axes and steps must list the same distinct axes")
    index = [slice(None)] * x.ndim
    for start, end, a, step in zip(starts, ends, axes, steps, strict=True):
        dim = x.shape[a]
        if step == 0:
            raise ValueError(f"step 0 on axis {a}")
        if end in _END_OF_AXIS:  # onnxruntime: to the end in the step's direction (numpy's None)
            end = dim if step > 0 else -1
        else:
            end = end + dim if end < 0 else end
        start = start + dim if start < 0 else start
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[a] = slice(start, end, step)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            index[a] = slice(start, None if end < 0 else end, step)
    return [x[tuple(index)]]


def _concat(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    return [np.concatenate(args, axis=_axis(_attr(attrs, "axis"), args[0].ndim))]


def _reshape(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    """A 0 copies the input's dim (unless allowzero), one -1 takes what is left."""
    x, shape = args[0], _ints(args[1], "shape")
    allowzero = attrs.get("allowzero", 0)
    if (
        any(d < -1 for d in shape)
        or shape.count(-1) > 1
        or (allowzero and 0 in shape and -1 in shape)
    ):
        raise ValueError(f"shape {shape} is not a valid target shape")
    if not allowzero:
        if any(d == 0 and k >= x.ndim for k, d in enumerate(shape)):
            raise ValueError(f"shape {shape} copies a dim the input of rank {x.ndim} lacks")
        shape = [x.shape[k] if d == 0 else d for k, d in enumerate(shape)]
    return [x.reshape(shape)]


def _transpose(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    x = args[0]
    perm = attrs.get("perm", list(range(x.ndim))[::-1])
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"perm {perm} is not a permutation of {x.ndim} axes")
    return [np.transpose(x, perm)]


def _flatten(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    x, axis = args[0], attrs.get("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise ValueError(f"axis {axis} is out of range for a tensor of rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


def _axes(args: Args, attrs: Attrs, opset: int) -> list[int] | None:
    """Squeeze's and Unsqueeze's axes: an attribute before opset 13, an input from it."""
    if opset < 13:
        return attrs.get("axes")
    axes = _input(args, 1)
    return None if axes is None else _ints(axes, "axes")


def _squeeze(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    x, axes = args[0], _axes(args, attrs, opset)
    if axes is None:
        return [x.reshape([d for d in x.shape if d != 1])]
    axes = sorted({_axis(a, x.ndim) for a in axes})
    if any(x.shape[a] != 1 for a in axes):
        raise ValueError(f"cannot squeeze axes {axes} of shape {list(x.shape)}")
    return [np.squeeze(x, axis=tuple(axes))]


def _unsqueeze(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    x, axes = args[0], _axes(args, attrs, opset)
    if axes is None:
        raise ValueError("Unsqueeze needs axes")
    rank = x.ndim + len(axes)
    normal = {_axis(a, rank) for a in axes}
    if len(normal) != len(axes):
        raise ValueError(f"axes {axes} repeat an axis")
    return [np.expand_dims(x, tuple(sorted(normal)))]


def _identity(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    return [args[0]]


def _elementwise(fn: Callable[..., np.ndarray]) -> Callable[[Args, Attrs, int], list]:
    """An op of one input and no attributes."""
    return lambda args, attrs, opset: [fn(args[0])]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, x.dtype.type(0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    one = x.dtype.type(1)
    return one / (one + np.exp(-x))


def _leaky_relu(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    x = args[0]
    return [np.where(x >= 0, x, x * x.dtype.type(attrs.get("alpha", 0.01)))]


def _clip(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    """max(x, min) then min(.., max); before opset 11 the bounds are attributes."""
    x = args[0]
    if opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
        lo, hi = (None if v is None else np.array(v, x.dtype) for v in (lo, hi))
    else:
        lo, hi = _input(args, 1), _input(args, 2)
    for bound in (lo, hi):
        if bound is not None and bound.size != 1:
            raise ValueError("min and max must be scalars")
    y = x if lo is None else np.maximum(x, lo.reshape(()))
    return [y if hi is None else np.minimum(y, hi.reshape(()))]


def _hard_sigmoid_of(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """max(0, min(1, alpha * x + beta)), the product and the sum each rounded (no FMA)."""
    t = x.dtype.type
    return np.maximum(np.minimum(x * t(alpha) + t(beta), t(1)), t(0))


def _hard_sigmoid(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    return [_hard_sigmoid_of(args[0], attrs.get("alpha", 0.2), attrs.get("beta", 0.5))]


def _hard_swish(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    """x * HardSigmoid(x) with alpha 1/6 (a product, as onnxruntime computes it; x / 6
    rounds differently)."""
    x = args[0]
    return [x * _hard_sigmoid_of(x, 1 / 6, 0.5)]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    """An op of two inputs of one dtype, broadcast as numpy does (ONNX's multidirectional
    broadcasting is numpy's)."""

    def compute(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
        a, b = args
        if a.dtype != b.dtype:
            raise ValueError(f"inputs of dtypes {a.dtype} and {b.dtype}")
        return [np.asarray(fn(a, b), a.dtype)]

    return compute


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Floats: IEEE division. Integers: truncated toward zero, as C (and onnxruntime) does."""
    if a.dtype.kind == "f":
        return a / b
    if (b == 0).any():
        raise ZeroDivisionError("integer division by zero")
    q = a // b
    return q + ((a % b != 0) & ((a < 0) != (b < 0)))


def _check_cast(attrs: Attrs, opset: int) -> str | None:
    to = attrs.get("to")
    return None if to in ONNX_DTYPES else f"to {to} (a type the numpy executor lacks)"


def _cast(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    return [args[0].astype(ONNX_DTYPES[_attr(attrs, "to")])]


def _shape(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    dims = list(args[0].shape)[attrs.get("start", 0) : attrs.get("end", args[0].ndim)]
    return [np.array(dims, np.int64)]


def _gather(args: Args, attrs: Attrs, opset: int) -> list[np.ndarray]:
    x, indices = args
    if indices.dtype.name not in _INTEGER:
        raise ValueError(f"indices of dtype {indices.dtype}")
    axis = _axis(attrs.get("axis", 0), x.ndim)
    if indices.size and not (-x.shape[axis] <= indices.min() and indices.max() < x.shape[axis]):
        raise IndexError(f"an index is out of range for axis {axis} of size {x.shape[axis]}")
    return [np.take(x, indices, axis=axis)]


def _no_blocks(attrs: Attrs, opset: int) -> str | None:
    return "blocked quantization (block_size)" if attrs.get("block_size", 0) else None


def _needs(name: str) -> Callable[[Attrs, int], str | None]:
    return lambda attrs, opset: None if name in attrs else f"no attribute '{name}'"


_ANY = None
_F32 = frozenset({"float32"})
_I64 = frozenset({"int64"})
OPS: dict[str, OpSpec] = {
    "QuantizeLinear": OpSpec(
        _quantize_linear,
        {"axis": "int", "block_size": "int", "output_dtype": "int", "saturate": "int"},
        (2, 3),
        (_F32, _F32, _QUANTIZED),
        since=10,
        check=_check_quantize,
    ),
    "DequantizeLinear": OpSpec(
        _dequantize_linear,
        {"axis": "int", "block_size": "int"},
        (2, 3),
        (_QUANTIZED | {"int32"}, _F32, _QUANTIZED | {"int32"}),
        since=10,
        check=_no_blocks,
    ),
    "Softmax": OpSpec(_softmax, {"axis": "int"}, (1, 1), (_FLOAT,)),
    "Pad": OpSpec(
        _pad,
        {"mode": "string", "pads": "ints", "value": "float"},
        (1, 4),
        (_ANY, _I64, _ANY, _INTEGER),
        since=2,
        check=_check_pad,
    ),
    "Slice": OpSpec(
        _slice,
        {"starts": "ints", "ends": "ints", "axes": "ints"},
        (1, 5),
        (_ANY, _INTEGER, _INTEGER, _INTEGER, _INTEGER),
    ),
    "Concat": OpSpec(_concat, {"axis": "int"}, (1, 1 << 16), check=_needs("axis")),
    "Reshape": OpSpec(_reshape, {"allowzero": "int"}, (2, 2), (_ANY, _I64), since=5),
    "Transpose": OpSpec(_transpose, {"perm": "ints"}, (1, 1)),
    "Flatten": OpSpec(_flatten, {"axis": "int"}, (1, 1)),
    "Squeeze": OpSpec(_squeeze, {"axes": "ints"}, (1, 2), (_ANY, _I64)),
    "Unsqueeze": OpSpec(_unsqueeze, {"axes": "ints"}, (1, 2), (_ANY, _I64)),
    "Identity": OpSpec(_identity, {}, (1, 1)),
    "Relu": OpSpec(_elementwise(_relu), {}, (1, 1), (_NUMBER,)),
    "Sigmoid": OpSpec(_elementwise(_sigmoid), {}, (1, 1), (_FLOAT,)),
    "Tanh": OpSpec(_elementwise(np.tanh), {}, (1, 1), (_FLOAT,)),
    "LeakyRelu": OpSpec(_leaky_relu, {"alpha": "float"}, (1, 1), (_FLOAT,)),
    "Clip": OpSpec(
        _clip, {"min": "float", "max": "float"}, (1, 3), (_NUMBER, _NUMBER, _NUMBER), since=6
    ),
    "HardSigmoid": OpSpec(_hard_sigmoid, {"alpha": "float", "beta": "float"}, (1, 1), (_FLOAT,)),
    "HardSwish": OpSpec(_hard_swish, {}, (1, 1), (_FLOAT,), since=14),
    "Add": OpSpec(_binary(np.add), {}, (2, 2), (_NUMBER, _NUMBER), since=7),
    "Sub": OpSpec(_binary(np.subtract), {}, (2, 2), (_NUMBER, _NUMBER), since=7),
    "Mul": OpSpec(_binary(np.multiply), {}, (2, 2), (_NUMBER, _NUMBER), since=7),
    "Div": OpSpec(_binary(_divide), {}, (2, 2), (_NUMBER, _NUMBER), since=7),
    "Cast": OpSpec(_cast, {"to": "int", "saturate": "int"}, (1, 1), since=6, check=_check_cast),
    "Shape": OpSpec(_shape, {"start": "int", "end": "int"}, (1, 1)),
    "Gather": OpSpec(_gather, {"axis": "int"}, (2, 2), (_ANY, _INTEGER)),
}


def unsupported(op_type: str, attrs: Attrs, opset: int) -> str | None:
    """Why the executor cannot run this op with these attributes at this opset, or None."""
    spec = OPS.get(op_type)
    if spec is None:
        return "an op the numpy executor lacks"
    if opset < spec.since:
        return f"opset {opset} (the numpy executor implements it from opset {spec.since})"
    for name, value in attrs.items():
        if name not in spec.attrs:
            return f"attribute '{name}', which the numpy executor does not implement"
        kind = spec.attrs[name]
        if not _ATTR_KINDS[kind][0](value):
            return f"attribute '{name}' = {value!r} (must be {_ATTR_KINDS[kind][1]})"
    return spec.check(attrs, opset)


# -- the stored form -----------------------------------------------------------------------
def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _list_of(item: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, list) and all(item(x) for x in v)


# attribute kind -> (test of a JSON value, how messages say it)
_ATTR_KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "int": (_is_int, "an integer"),
    "float": (_is_float, "a finite number"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "ints": (_list_of(_is_int), "a list of integers"),
}


def encode(graph: CpuGraph) -> bytes:
    """The stored form of a graph (deterministic: the same graph gives the same bytes)."""
    blob = bytearray()
    constants = []
    for name, value in graph.constants.items():
        if value.dtype.name not in DTYPES:
            raise ValueError(f"constant '{name}' is {value.dtype}, which the stored form lacks")
        little = np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
        constants.append(
            {"name": name, "dtype": value.dtype.name, "shape": list(value.shape),
             "offset": len(blob)}
        )  # fmt: skip
        blob += little.tobytes()
    doc = {
        "opset": graph.opset,
        "inputs": [_value_json(v) for v in graph.inputs],
        "outputs": [_value_json(v) for v in graph.outputs],
        "nodes": [
            {"op_type": n.op_type, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
             "attrs": n.attrs}
            for n in graph.nodes
        ],
        "constants": constants,
    }  # fmt: skip
    head = json.dumps(doc, sort_keys=True, allow_nan=False).encode()
    return _FIXED.pack(FORM_MAGIC, FORM_VERSION, len(head)) + head + bytes(blob)


def _value_json(v: ValueInfo) -> dict:
    return {"name": v.name, "dtype": v.dtype, "shape": None if v.shape is None else list(v.shape)}


def decode(data: bytes) -> CpuGraph:
    """The graph a stored form holds, checked as far as it can be without running it (fields
    and their types, constants inside the blob, every name made before it is read, ops the
    executor has with attributes it knows); anything wrong is a FormatError saying what."""
    if len(data) < _FIXED.size or data[:8] != FORM_MAGIC:
        raise FormatError("not a numpy CPU graph (bad magic)")
    _, version, head_len = _FIXED.unpack_from(data)
    if version != FORM_VERSION:
        raise FormatError(f"CPU graph form version {version}; this dpukit reads {FORM_VERSION}")
    if _FIXED.size + head_len > len(data):
        raise FormatError(f"its JSON length {head_len} runs past the {len(data)} bytes")
    try:
        doc = json.loads(data[_FIXED.size : _FIXED.size + head_len])
    except RecursionError:
        raise FormatError("its JSON nests too deeply") from None
    except ValueError as exc:
        raise FormatError(f"its JSON is not valid ({exc})") from None
    return _Reader().graph(doc, memoryview(data)[_FIXED.size + head_len :])


class _Reader:
    """Checks a decoded JSON document field by field; errors name the field."""

    def fail(self, problem: str) -> NoReturn:
        raise FormatError(problem)

    def table(self, value: object, where: str, keys: Sequence[str]) -> dict:
        if not isinstance(value, dict):
            self.fail(f"'{where}' must be an object")
        if set(value) != set(keys):
            odd = sorted(set(value) ^ set(keys))
            self.fail(f"'{where}' must have the keys {', '.join(keys)} (not: {', '.join(odd)})")
        return value

    def items(self, value: object, where: str) -> list:
        if not isinstance(value, list):
            self.fail(f"'{where}' must be a list")
        return value

    def name(self, value: object, where: str, empty_ok: bool = False) -> str:
        if not isinstance(value, str) or not (value or empty_ok):
            self.fail(f"'{where}' must be a non-empty string")
        return value

    def dtype(self, value: object, where: str) -> str:
        if value not in DTYPES:
            self.fail(f"'{where}' is {value!r}, not one of {', '.join(sorted(DTYPES))}")
        return value

    def value(self, v: object, where: str) -> ValueInfo:
        d = self.table(v, where, ("name", "dtype", "shape"))
        shape = d["shape"]
        if shape is not None:
            dims = self.items(shape, f"{where}.shape")
            if not all(x is None or (_is_int(x) and x >= 0) for x in dims):
                self.fail(f"'{where}.shape' must list sizes >= 0 (or null)")
            shape = tuple(dims)
        return ValueInfo(
            self.name(d["name"], f"{where}.name"), self.dtype(d["dtype"], where), shape
        )

    def constant(self, c: object, where: str, blob: memoryview, at: int) -> np.ndarray:
        d = self.table(c, where, ("name", "dtype", "shape", "offset"))
        dtype = np.dtype(self.dtype(d["dtype"], f"{where}.dtype")).newbyteorder("<")
        shape = self.items(d["shape"], f"{where}.shape")
        if not all(_is_int(x) and x >= 0 for x in shape):
            self.fail(f"'{where}.shape' must list sizes >= 0")
        if d["offset"] != at:
            self.fail(f"'{where}.offset' is {d['offset']!r}; the constants before it end at {at}")
        size = math.prod(shape) * dtype.itemsize
        if at + size > len(blob):
            self.fail(f"constant '{d['name']}' ({size} bytes at {at}) runs past the blob's "
                      f"{len(blob)} bytes")  # fmt: skip
        array = np.frombuffer(blob[at : at + size], dtype).reshape(shape)
        return array.astype(dtype.newbyteorder("="))  # a copy, in this machine's byte order

    def node(self, n: object, where: str, opset: int) -> Node:
        d = self.table(n, where, ("op_type", "name", "inputs", "outputs", "attrs"))
        if not isinstance(d["attrs"], dict):
            self.fail(f"'{where}.attrs' must be an object")
        inputs = self.items(d["inputs"], f"{where}.inputs")
        outputs = self.items(d["outputs"], f"{where}.outputs")
        node = Node(
            self.name(d["op_type"], f"{where}.op_type"),
            self.name(d["name"], f"{where}.name"),
            [self.name(v, f"{where}.inputs", empty_ok=True) for v in inputs],
            [self.name(v, f"{where}.outputs") for v in outputs],
            d["attrs"],
        )
        why = unsupported(node.op_type, node.attrs, opset)
        if why:
            self.fail(f"node '{node.name}' ({node.op_type}): {why}")
        lo, hi = OPS[node.op_type].inputs
        if not lo <= len(node.inputs) <= hi or not all(node.inputs[:lo]):
            self.fail(f"node '{node.name}' ({node.op_type}) takes {lo}..{hi} inputs, the first "
                      f"{lo} given; it lists {node.inputs}")  # fmt: skip
        if len(node.outputs) != 1:
            self.fail(f"node '{node.name}' ({node.op_type}) makes one output, not {node.outputs}")
        return node

    def graph(self, doc: object, blob: memoryview) -> CpuGraph:
        d = self.table(doc, "graph", ("opset", "inputs", "outputs", "nodes", "constants"))
        opset = d["opset"]
        if not _is_int(opset) or not 1 <= opset <= 1000:
            self.fail(f"'opset' is {opset!r}, not an opset version")
        inputs = [
            self.value(v, f"inputs[{i}]") for i, v in enumerate(self.items(d["inputs"], "inputs"))
        ]
        outputs = [
            self.value(v, f"outputs[{i}]")
            for i, v in enumerate(self.items(d["outputs"], "outputs"))
        ]
        constants, at = {}, 0
        for i, c in enumerate(self.items(d["constants"], "constants")):
            value = self.constant(c, f"constants[{i}]", blob, at)
            constants[self.name(c["name"], f"constants[{i}].name")] = value
            at += value.nbytes
        if at != len(blob):
            self.fail(f"the constants end at byte {at} of a blob of {len(blob)}")
        nodes = [
            self.node(n, f"nodes[{i}]", opset)
            for i, n in enumerate(self.items(d["nodes"], "nodes"))
        ]
        known = set(constants)
        for v in inputs:
            if v.name in known:
                self.fail(f"input '{v.name}' is also a constant or another input")
            known.add(v.name)
        for node in nodes:
            for name in node.inputs:
                if name and name not in known:
                    self.fail(f"node '{node.name}' reads '{name}', which nothing makes before it")
            for name in node.outputs:
                if name in known:
                    self.fail(f"node '{node.name}' writes '{name}', which is already made")
                known.add(name)
        for v in outputs:
            if v.name not in known:
                self.fail(f"output '{v.name}' is made by no node")
        return CpuGraph(opset, inputs, outputs, nodes, constants)
