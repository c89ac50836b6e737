"""Post-training static quantization: float ONNX -> QDQ ONNX via onnxruntime.quantization.

What onnxruntime 1.32 emits here (checked on conv-bn-relu/conv-clip -> add -> maxpool -> avgpool
-> concat -> gap/flatten/reshape -> gemm and on the zoo; same structure for int8/uint8 and
per_channel True/False, only dtypes, zero points and scale shapes change):
- Pre-processing folds BatchNormalization into Conv and fuses MatMul + Add(bias) into Gemm.
- Graph input: Q -> DQ; every tensor between ops: Q -> DQ pair with a scalar scale and a
  zero point of the activation type (asymmetric MinMax, range widened to include 0: e.g.
  zp -128/0 for [0,1) inputs, 31/159 for a signed Gemm output); graph output ends in a DQ.
- Weights: int8 initializer -> DQ, zp 0, values in [-127, 127], scale max|w|/127; a scalar
  scale per tensor, or [C_out] scales with axis=0 per channel (Conv OIHW, Gemm transB=1; a
  MatMul-derived Gemm has transB=0, B [K, N] and axis=1).
- Bias: int32 initializer -> DQ, zp 0, scale = input_scale * weight_scale (shape [1] per
  tensor, [C_out] with axis=0 per channel).
- Relu and Clip(0,6) vanish when their input has one consumer and is not a graph input: the
  producer (Conv, Gemm, Add) is quantized with the activation's range [0, max] and zp = qmin
  (-128 int8, 0 uint8), so saturation does the Relu/Relu6. Otherwise Relu stays as
  DQ -> Relu -> Q (or a float Relu on the graph input).
- MaxPool, AveragePool, Reshape, Flatten: DQ -> op -> Q reusing the input's scale and zp.
  Add, Concat (inputs keep their own scales), GlobalAveragePool, Gemm, Conv: DQ inputs -> op
  -> Q with their own calibrated scale. Softmax: output scale 1/255, zp 0 (uint8) / -128 (int8).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from dpukit.compiler import isa
from dpukit.compiler.frontend import (
    check_onnx,
    check_shapes,
    onnx_message,
    onnxruntime_refusal,
    set_input_shapes,
)
from dpukit.errors import ModelError

log = logging.getLogger(__name__)

_ACTIVATION_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
_QUANTIZED_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "ConvInteger",
    "MatMulInteger",
}
_DYNAMIC_BATCH_CHUNK = 32


class _ArrayReader(CalibrationDataReader):
    """Feeds a list of ready-made input batches to the graph's single input."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter({input_name: b} for b in batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _load(float_model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Load the model and return it with a label naming it in error messages."""
    if isinstance(float_model, onnx.ModelProto):
        return float_model, "the given model"
    path = Path(float_model)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; pass the path of a float ONNX model")
    try:
        return onnx.load(path), str(path)
    except Exception as exc:  # onnx raises DecodeError, OSError, ... for non-ONNX bytes
        raise ModelError(
            f"{path}: not a readable ONNX model ({exc.__class__.__name__}); "
            "export the network to ONNX (e.g. torch.onnx.export) and pass that file"
        ) from exc


def _graph_input(model: onnx.ModelProto, label: str) -> tuple[str, list[int | None]]:
    """The name and shape (None for symbolic dims) of the model's single data input."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(
            f"{label}: quantization needs exactly one graph input, found {names}; "
            "export the model with a single image/feature input"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _batches(
    calibration: Iterable[np.ndarray] | np.ndarray, shape: list[int | None], label: str
) -> list[np.ndarray]:
    """Split/validate calibration data into float32 batches the model input accepts.

    An array is a stack of samples along axis 0, fed in batches the input's batch dim allows;
    an iterable yields ready-made batches.
    """
    if isinstance(calibration, np.ndarray):
        samples = np.atleast_1d(calibration)
        step = shape[0] or _DYNAMIC_BATCH_CHUNK
        batches = [samples[i : i + step] for i in range(0, len(samples), step)]
    else:
        batches = [np.asarray(b) for b in calibration]
    for batch in batches:
        fits = batch.ndim == len(shape) and all(
            d is None or d == s for d, s in zip(shape, batch.shape, strict=True)
        )
        if not fits:
            expected = ", ".join("N" if d is None else str(d) for d in shape)
            raise ModelError(
                f"{label}: calibration batch of shape {list(batch.shape)} does not fit the "
                f"model input [{expected}]; pass samples stacked along axis 0"
            )
    if not any(len(b) for b in batches):
        raise ModelError(f"{label}: calibration data is empty; pass at least one sample")
    return [b.astype(np.float32, copy=False) for b in batches]


def quantize_model(
    float_model: str | Path | onnx.ModelProto,
    out_path: str | Path,
    calibration: Iterable[np.ndarray] | np.ndarray,
    *,
    per_channel: bool = False,
    activation_type: str = "int8",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> Path:
    """Quantize a float model to QDQ ONNX (int8 symmetric weights, MinMax-calibrated activations).

    ``calibration`` is either an array of samples stacked along axis 0 or an iterable of
    input batches. ``activation_type`` is "int8" or "uint8". ``input_shapes`` fixes inputs'
    symbolic dims (batch 1), as `compile_model`'s does; the QDQ model keeps them.
    Returns ``out_path``.
    """
    if activation_type not in _ACTIVATION_TYPES:
        raise ValueError(f"activation_type must be 'int8' or 'uint8', not {activation_type!r}")
    model, label = _load(float_model)
    if input_shapes:
        model = set_input_shapes(model, label, input_shapes)
    quantized_ops = sorted(
        {
            n.op_type
            for n in model.graph.node
            if n.op_type in _QUANTIZED_OPS or n.op_type.startswith("QLinear")
        }
    )
    if quantized_ops:
        raise ModelError(
            f"{label}: already quantized (has {', '.join(quantized_ops)} nodes); "
            "pass the float model instead"
        )
    # what onnxruntime would refuse, named here rather than in a traceback from its quantizer
    check_onnx(model, label)
    _check_sizes(check_shapes(model, label), label)
    why = onnxruntime_refusal(model.SerializeToString())
    if why:
        raise ModelError(f"{label}: onnxruntime cannot run the model: {why}")
    input_name, shape = _graph_input(model, label)
    batches = _batches(calibration, shape, label)
    with tempfile.TemporaryDirectory(prefix="dpukit-quant-") as tmp:
        # ORT rewrites a ModelProto passed to it in place, so it only ever sees file copies.
        source = Path(tmp) / "float.onnx"
        onnx.save(model, source)
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Folds BatchNormalization into Conv and infers shapes; symbolic inference needs
            # sympy and only matters for dynamic shapes, so it is skipped.
            quant_pre_process(source, prepared, skip_symbolic_shape=True)
            source = prepared
        except Exception as exc:  # pre-processing is an optimization; the raw model still works
            log.warning("%s: ONNX pre-processing failed (%s); quantizing the raw model", label, exc)
        quantized = Path(tmp) / "quantized.onnx"  # written out once it is whole
        try:
            quantize_static(
                source,
                quantized,
                _ArrayReader(input_name, batches),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=_ACTIVATION_TYPES[activation_type],
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        except Exception as exc:  # onnxruntime's own types; a model it cannot run or quantize
            raise ModelError(
                f"{label}: onnxruntime could not quantize the model: {onnx_message(exc)}"
            ) from None
        data = _drop_unused_opsets(onnx.load(quantized)).SerializeToString()
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_bytes(data)
    except OSError as exc:
        raise ModelError(
            f"{out_path}: cannot write the quantized model ({exc.strerror or exc}); "
            "choose another path"
        ) from None
    return out_path


def _drop_unused_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep only the opset imports the nodes use (pre-processing adds every ORT domain)."""
    used = {"", *(n.domain for n in model.graph.node)}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


# Every DPU tensor lies in the data window, which 32-bit DRAM offsets address.
MAX_WINDOW_BYTES = next(f.hi for f in isa.LAYOUT[isa.Opcode.LOAD] if f.name == "dram_offset") + 1


def _check_sizes(model: onnx.ModelProto, label: str) -> None:
    """A model whose activations, one byte each (batch 1), overflow the data window no DPU
    config can run: refused before calibration would allocate them in float32."""
    total, largest = 0, ("", 0)
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        size = int(np.prod([d.dim_value if d.HasField("dim_value") else 1 for d in dims]))
        total += size
        largest = max(largest, (vi.name, size), key=lambda x: x[1])
    if total > MAX_WINDOW_BYTES:
        raise ModelError(
            f"{label}: the model's activations take {total:,} bytes at int8 (the largest, "
            f"'{largest[0]}', {largest[1]:,}), past the {MAX_WINDOW_BYTES:,} any DPU "
            "addresses: no config can run it; give the model a smaller input"
        )
