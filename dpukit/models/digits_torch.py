"""The digits CNN's PyTorch twin: the same layers and shapes as dpukit.models.digits (Conv-Relu
1->16, Conv-Relu 16->32, MaxPool 2x2, Conv-Relu 32->32, all 3x3 pad 1, Flatten, Linear
512->10, on [N, 1, 8, 8] images), so pruning with fine-tuning needs no ONNX->PyTorch
conversion and its ONNX export reads like the numpy-trained model's (Conv, Relu, MaxPool,
Flatten, Gemm).

The layers are an ``nn.Sequential`` built on demand, so this module imports without torch
(the ``train`` extra); its functions say how to install torch when it is missing.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from dpukit.errors import ModelError
from dpukit.models.digits import CONVS, FC_IN, NUM_CLASSES
from dpukit.optimize.data import Split
from dpukit.optimize.prune import deterministic, fit, require_torch


def build_digits_torch():
    """The untrained network (torch's default initialization)."""
    torch = require_torch()
    nn = torch.nn
    layers = []
    for i, (name, cin, cout) in enumerate(CONVS):
        layers += [(name, nn.Conv2d(cin, cout, 3, padding=1)), (f"{name}_relu", nn.ReLU())]
        if i == 1:
            layers.append(("pool", nn.MaxPool2d(2, 2)))
    layers += [("flatten", nn.Flatten(1)), ("fc", nn.Linear(FC_IN, NUM_CLASSES))]
    return nn.Sequential(OrderedDict(layers))


def train_digits_torch(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    epochs: int = 12,
    seed: int = 0,
    lr: float = 2e-3,
    batch_size: int = 32,
):
    """Train the twin with Adam (as digits.py does: lr 2e-3, batches of 32), keeping the
    epoch with the best accuracy on (val_x, val_y); deterministic for a seed (float64, one
    thread, torch's deterministic algorithms). Returns the float32 model in eval mode."""
    with deterministic(seed):
        model = build_digits_torch()
    return fit(
        model,
        Split(train_x, train_y),
        Split(val_x, val_y),
        epochs=epochs,
        seed=seed,
        lr=lr,
        batch_size=batch_size,
    )


def digits_torch_from_onnx(source: str | Path | onnx.ModelProto):
    """The twin holding the weights of a float digits CNN that dpukit.models.digits trained
    (its initializers conv1.w, conv1.b, ..., fc.w, fc.b), e.g. to prune the demo's model."""
    torch = require_torch()
    model_proto = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    weights = {t.name: numpy_helper.to_array(t) for t in model_proto.graph.initializer}
    model = build_digits_torch()
    state = {}
    for layer in [name for name, _, _ in CONVS] + ["fc"]:
        for onnx_suffix, torch_suffix in (("w", "weight"), ("b", "bias")):
            key = f"{layer}.{onnx_suffix}"
            if key not in weights:
                raise ModelError(
                    f"{source if not isinstance(source, onnx.ModelProto) else 'the model'}: "
                    f"no initializer {key!r}; it is not a digits CNN from "
                    "dpukit.models.digits.train_digits_cnn"
                )
            state[f"{layer}.{torch_suffix}"] = torch.from_numpy(weights[key].copy())
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"the digits CNN's weights do not fit the twin: {exc}") from None
    return model.eval()
