"""The demo's small CNN on scikit-learn's bundled 8x8 digits, trained in plain numpy.

Training needs no deep-learning framework so ``make demo`` stays light: im2col convolutions,
hand-written backward passes and Adam, deterministic for a given seed (about 6 s on one core).
The exported float ONNX graph is Conv-Relu, Conv-Relu, MaxPool, Conv-Relu, Flatten, Gemm.

Training runs in float64 and only the result is rounded to float32, so that every machine
trains the same model. BLAS picks its kernels by CPU (OpenBLAS: SkylakeX, Haswell, Zen...),
and their float32 sums differ in the last bit, which over a few hundred Adam steps made a
different model on each CPU: three kernels gave three float32-trained models, and one
float64-trained model (tests/test_models.py). A different model has different rounding
ties, so its quantized outputs differ from onnxruntime's in different places; nothing may
depend on which (tests/verified.py), but the demo's figures now repeat from machine to
machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from dpukit.errors import ModelError

OPSET = 17
IR_VERSION = 8
NUM_CLASSES = 10
CONVS = (("conv1", 1, 16), ("conv2", 16, 32), ("conv3", 32, 32))  # name, in, out (3x3, pad 1)
FC_IN = 32 * 4 * 4

Params = dict[str, np.ndarray]


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fixed stratified 75/25 split; images float32 [N, 1, 8, 8] in [0, 1], labels int64."""
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test


def _im2col(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N*H*W, C*9] patches of a 3x3, pad-1, stride-1 convolution."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * 9)


def _col2im(cols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of ``_im2col``: scatter-add patch gradients back to a [N, C, H, W] gradient."""
    n, c, h, w = shape
    patches = cols.reshape(n, h, w, c, 3, 3)
    padded = np.zeros((n, c, h + 2, w + 2), dtype=cols.dtype)
    for kh in range(3):
        for kw in range(3):
            padded[:, :, kh : kh + h, kw : kw + w] += patches[..., kh, kw].transpose(0, 3, 1, 2)
    return padded[:, :, 1:-1, 1:-1]


def _conv_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 pad-1 conv + Relu; returns the NCHW output and the im2col patches for backward."""
    n, _, h, wd = x.shape
    cols = _im2col(x)
    out = np.maximum(cols @ w.reshape(len(w), -1).T + b, 0.0)
    return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2), cols


def _conv_relu_backward(
    dy: np.ndarray, y: np.ndarray, cols: np.ndarray, w: np.ndarray, x_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients (dx, dw, db) of ``_conv_relu`` given its output ``y`` and patches."""
    dz = (dy * (y > 0)).transpose(0, 2, 3, 1).reshape(-1, len(w))
    dw = (dz.T @ cols).reshape(w.shape)
    dx = _col2im(dz @ w.reshape(len(w), -1), x_shape)
    return dx, dw, dz.sum(axis=0)


def _maxpool(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 stride-2 max pool; returns the output and the argmax within each window."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(n, c, h // 2, w // 2, 4)
    idx = windows.argmax(axis=-1)
    return np.take_along_axis(windows, idx[..., None], axis=-1)[..., 0], idx


def _maxpool_backward(dy: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Route each output gradient to the window position that held the maximum."""
    n, c, h, w = dy.shape
    windows = np.zeros((n, c, h, w, 4), dtype=dy.dtype)
    np.put_along_axis(windows, idx[..., None], dy[..., None], axis=-1)
    windows = windows.reshape(n, c, h, w, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return windows.reshape(n, c, 2 * h, 2 * w)


def _init_params(rng: np.random.Generator) -> Params:
    """He-normal weights, zero biases."""
    params: Params = {}
    for name, cin, cout in CONVS:
        std = np.sqrt(2.0 / (cin * 9))
        params[f"{name}.w"] = rng.normal(0.0, std, (cout, cin, 3, 3)).astype(np.float32)
        params[f"{name}.b"] = np.zeros(cout, np.float32)
    std = np.sqrt(2.0 / FC_IN)
    params["fc.w"] = rng.normal(0.0, std, (NUM_CLASSES, FC_IN)).astype(np.float32)
    params["fc.b"] = np.zeros(NUM_CLASSES, np.float32)
    return params


def _loss_and_grads(p: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """Softmax cross-entropy of a mini-batch and the gradient of every parameter."""
    a1, c1 = _conv_relu(x, p["conv1.w"], p["conv1.b"])
    a2, c2 = _conv_relu(a1, p["conv2.w"], p["conv2.b"])
    a3, idx = _maxpool(a2)
    a4, c4 = _conv_relu(a3, p["conv3.w"], p["conv3.b"])
    flat = a4.reshape(len(x), -1)
    logits = flat @ p["fc.w"].T + p["fc.b"]

    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -float(log_probs[np.arange(len(y)), y].mean())
    dlogits = np.exp(log_probs)
    dlogits[np.arange(len(y)), y] -= 1.0
    dlogits /= len(y)

    g: Params = {"fc.w": dlogits.T @ flat, "fc.b": dlogits.sum(axis=0)}
    d4 = (dlogits @ p["fc.w"]).reshape(a4.shape)
    d3, g["conv3.w"], g["conv3.b"] = _conv_relu_backward(d4, a4, c4, p["conv3.w"], a3.shape)
    d2 = _maxpool_backward(d3, idx)
    d1, g["conv2.w"], g["conv2.b"] = _conv_relu_backward(d2, a2, c2, p["conv2.w"], a1.shape)
    _, g["conv1.w"], g["conv1.b"] = _conv_relu_backward(d1, a1, c1, p["conv1.w"], x.shape)
    return loss, g


def _to_onnx(p: Params, softmax: bool) -> onnx.ModelProto:
    """Export trained parameters as a float ONNX graph with a symbolic batch dim "N"."""
    nodes = []
    x = "input"
    for i, (name, _, _) in enumerate(CONVS):
        conv_out, relu_out = f"{name}_out", f"{name}_relu"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w", f"{name}.b"],
                [conv_out],
                name=name,
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            )
        )
        nodes.append(helper.make_node("Relu", [conv_out], [relu_out], name=f"{name}_relu"))
        x = relu_out
        if i == 1:
            nodes.append(
                helper.make_node(
                    "MaxPool", [x], ["pool_out"], name="pool", kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            x = "pool_out"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1))
    nodes.append(
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1)
    )
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1))
        output = "probs"
    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", NUM_CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in p.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="dpukit.models.digits",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _adam_step(
    params: Params, grads: Params, moments: dict[str, Params], step: int, lr: float
) -> None:
    """One in-place Adam update (beta1 0.9, beta2 0.999); ``step`` counts from 1."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for k, g in grads.items():
        m, v = moments["m"][k], moments["v"][k]
        m[...] = beta1 * m + (1 - beta1) * g
        v[...] = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        params[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)


def train_digits_cnn(
    epochs: int = 12,
    seed: int = 0,
    *,
    batch_size: int = 32,
    lr: float = 2e-3,
    softmax: bool = False,
) -> onnx.ModelProto:
    """Train the digits CNN with Adam on the training split and export it as float ONNX.

    Output "logits" [N, 10], or "probs" when ``softmax`` appends a Softmax (a layer the DPU
    leaves to the CPU).
    """
    x_train, y_train, _, _ = load_digits_split()
    x_train = x_train.astype(np.float64)  # see the module docstring: the same model anywhere
    rng = np.random.default_rng(seed)
    params = {k: v.astype(np.float64) for k, v in _init_params(rng).items()}
    moments = {key: {k: np.zeros_like(p) for k, p in params.items()} for key in "mv"}
    step = 0
    # The matmuls are tiny: multi-threaded BLAS only adds contention (7x slower on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(epochs):
            order = rng.permutation(len(x_train))
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                _, grads = _loss_and_grads(params, x_train[batch], y_train[batch])
                step += 1
                _adam_step(params, grads, moments, step, lr)
    return _to_onnx({k: v.astype(np.float32) for k, v in params.items()}, softmax)


def evaluate(model_or_path: onnx.ModelProto | str | Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a float or QDQ model under onnxruntime (fixed-batch inputs handled)."""
    if isinstance(model_or_path, onnx.ModelProto):
        source: bytes | str = model_or_path.SerializeToString()
    elif Path(model_or_path).is_file():
        source = str(model_or_path)
    else:
        raise ModelError(f"{model_or_path}: no such model file; train or quantize it first")
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) else len(x)
    scores = [
        session.run(None, {inp.name: x[i : i + step].astype(np.float32)})[0]
        for i in range(0, len(x), step)
    ]
    return float((np.concatenate(scores).argmax(axis=-1) == y).mean())


def digits_model(cache_dir: Path) -> Path:
    """Path of the trained float digits model, training it once into ``cache_dir``."""
    path = Path(cache_dir) / "digits_cnn.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        onnx.save(train_digits_cnn(), tmp)
        tmp.replace(path)  # atomic, so concurrent callers never read a half-written file
    return path
