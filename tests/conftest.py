"""Shared fixtures: expensive models are built once per test session and cached on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dpukit.models import zoo
from dpukit.models.digits import digits_model
from dpukit.quantize import quantize_model

QuantizedZoo = Callable[[str, bool, str], Path]


@pytest.fixture(scope="session")
def digits_float(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the trained float digits CNN."""
    return digits_model(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def quantized_zoo(tmp_path_factory: pytest.TempPathFactory) -> QuantizedZoo:
    """Factory ``quantized(name, per_channel, activation_type) -> Path`` of QDQ zoo models."""
    root = tmp_path_factory.mktemp("zoo_qdq")

    def quantized(name: str, per_channel: bool = False, activation_type: str = "int8") -> Path:
        path = root / f"{name}_{'pc' if per_channel else 'pt'}_{activation_type}.onnx"
        if not path.is_file():
            model, shape = zoo.MODELS[name]()
            quantize_model(
                model,
                path,
                zoo.calibration_data(shape),
                per_channel=per_channel,
                activation_type=activation_type,
            )
        return path

    return quantized
