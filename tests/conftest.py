"""Shared fixtures: expensive models are built once per test session and cached on disk."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

from dpukit.models import zoo
from dpukit.models.digits import digits_model, load_digits_split
from dpukit.quantize import quantize_model

QuantizedZoo = Callable[..., Path]

# The suite must not fail at random: every property test draws the same examples on every
# run, so a failure is a bug that repeats. HYPOTHESIS_PROFILE=explore draws new examples
# each run, to hunt for bugs on purpose (and keeps what it finds in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def digits_float(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the trained float digits CNN, trained once per run even across xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by all workers of this run
    cache = root / "digits"
    cache.mkdir(exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait, then find the cached file
        return digits_model(cache)


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


@pytest.fixture(scope="session")
def digits_qdq(digits_float: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN quantized per channel, int8, calibrated on the digits training images."""
    x_train = load_digits_split()[0]
    path = tmp_path_factory.mktemp("digits_qdq") / "digits_pc_int8.onnx"
    return quantize_model(digits_float, path, x_train, per_channel=True, activation_type="int8")
