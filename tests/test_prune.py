"""Pruning with fine-tuning (dpukit.optimize.prune) and the digits CNN's PyTorch twin.

References: the numpy-trained digits CNN under onnxruntime (the twin's architecture),
channel counts and MACs computed by hand from the schedule, the compiler's own MAC count,
onnxruntime on every exported step (float) and on its quantized model (the golden backend
against the QDQ reference, tests/verified.py), and eager PyTorch for the archives.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip(
    "torch",
    reason="torch is not installed: pruning needs the train extra, pip install -e '.[train]'",
)
pytest.importorskip("torch_pruning", reason="torch-pruning is not installed (the train extra)")

from verified import assert_verified  # noqa: E402

from dpukit.compiler.compile import compile_model  # noqa: E402
from dpukit.errors import ModelError  # noqa: E402
from dpukit.models.digits import load_digits_split, train_digits_cnn  # noqa: E402
from dpukit.models.digits_torch import (  # noqa: E402
    build_digits_torch,
    digits_torch_from_onnx,
    train_digits_torch,
)
from dpukit.optimize.prune import (  # noqa: E402
    EXPORT_ATOL,
    EXPORT_RTOL,
    accuracy,
    count_macs,
    count_params,
    export_onnx,
    load_torch_model,
    predict,
    prune_steps,
)
from dpukit.quantize import quantize_model  # noqa: E402

nn = torch.nn
STEPS = 6
# conv1 has 16 channels, conv2 and conv3 32: step k keeps int(c * (1 - 0.1 k)) of them
CONV1 = [14, 12, 11, 9, 8, 6]
CONV23 = [28, 25, 22, 19, 16, 12]


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray


@pytest.fixture(scope="module")
def splits() -> tuple[Split, Split, Split]:
    """Train/validation from the digits training split (80/20), test: its test split."""
    x_train, y_train, x_test, y_test = load_digits_split()
    n = len(x_train) * 4 // 5
    return (
        Split(x_train[:n], y_train[:n]),
        Split(x_train[n:], y_train[n:]),
        Split(x_test, y_test),
    )


@pytest.fixture(scope="module")
def trained(splits):
    train, val, _ = splits
    return train_digits_torch(train.x, train.y, val.x, val.y, epochs=6, seed=0)


@pytest.fixture(scope="module")
def pruned(trained, splits, tmp_path_factory) -> list[tuple[object, Path]]:
    """The 6 default steps (10 % each, l2), one fine-tuning epoch each, and their exports."""
    train, val, test = splits
    out = tmp_path_factory.mktemp("pruned")
    steps = []
    for step, model in prune_steps(trained, train, val, finetune_epochs=1, seed=0):
        steps.append((model, export_onnx(model, test.x[:1], out / f"step{step}.onnx")))
    return steps


def _digits_macs(c1: int, c2: int, c3: int) -> int:
    """Conv 3x3 on 8x8 (conv1, conv2), on 4x4 after the pool (conv3), then the Gemm."""
    return 64 * 9 * (1 * c1 + c1 * c2) + 16 * 9 * c2 * c3 + 16 * c3 * 10


def _onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _assert_same_predictions(torch_out: np.ndarray, onnx_out: np.ndarray, y: np.ndarray):
    """Outputs within export_onnx's tolerance; then equal top-1 where the top two classes
    lie further apart than twice the largest difference (so no difference can swap them),
    which here is every sample, and so the same accuracy."""
    np.testing.assert_allclose(onnx_out, torch_out, rtol=EXPORT_RTOL, atol=EXPORT_ATOL)
    worst = np.abs(onnx_out - torch_out).max()
    top2 = np.sort(torch_out, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > 2 * worst).all(), "a near tie: pick another seed"
    assert (torch_out.argmax(1) == onnx_out.argmax(1)).all()
    assert (torch_out.argmax(1) == y).mean() == (onnx_out.argmax(1) == y).mean()


# --- the twin -----------------------------------------------------------------------------


def test_twin_is_the_numpy_digits_cnn(tmp_path: Path, splits) -> None:
    """The numpy-trained model's weights in the twin give onnxruntime's outputs, and the
    twin's export has the same nodes and weight shapes."""
    _, _, test = splits
    numpy_model = train_digits_cnn(epochs=1, seed=0)
    twin = digits_torch_from_onnx(numpy_model)
    session = ort.InferenceSession(numpy_model.SerializeToString())
    expected = session.run(None, {"input": test.x})[0]
    np.testing.assert_allclose(predict(twin, test.x), expected, atol=1e-4, rtol=1e-4)

    exported = onnx.load(export_onnx(twin, test.x[:1], tmp_path / "twin.onnx"))
    assert [n.op_type for n in exported.graph.node] == [n.op_type for n in numpy_model.graph.node]
    assert exported.opset_import[0].version == 17
    shapes = sorted(tuple(t.dims) for t in exported.graph.initializer)
    assert shapes == sorted(tuple(t.dims) for t in numpy_model.graph.initializer)


def test_twin_rejects_another_model() -> None:
    not_digits = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    with pytest.raises(ModelError, match="no initializer 'conv1.w'"):
        digits_torch_from_onnx(not_digits)


def test_training_is_deterministic_and_learns(trained, splits) -> None:
    train, val, test = splits
    again = train_digits_torch(train.x, train.y, val.x, val.y, epochs=6, seed=0)
    for (name, a), b in zip(trained.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    other = train_digits_torch(train.x, train.y, val.x, val.y, epochs=1, seed=1)
    assert not torch.equal(other.conv1.weight, trained.conv1.weight)
    assert accuracy(trained, test) > 0.9
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()


# --- pruning the digits CNN -----------------------------------------------------------------


def test_each_step_has_fewer_channels_and_macs(trained, pruned, splits) -> None:
    _, _, test = splits
    assert [m.conv1.out_channels for m, _ in pruned] == CONV1
    assert [m.conv2.out_channels for m, _ in pruned] == CONV23
    assert [m.conv3.out_channels for m, _ in pruned] == CONV23
    for model, _ in pruned:
        assert model.conv1.weight.shape[0] == model.conv2.weight.shape[1]
        assert model.conv2.weight.shape[0] == model.conv3.weight.shape[1]
        assert tuple(model.fc.weight.shape) == (10, model.conv3.out_channels * 16)  # head kept
    macs = [count_macs(m, test.x[:1]) for m, _ in pruned]
    assert macs == [_digits_macs(c1, c, c) for c1, c in zip(CONV1, CONV23, strict=True)]
    original = count_macs(trained, test.x[:1])
    assert original == _digits_macs(16, 32, 32)
    assert all(a > b for a, b in zip([original, *macs], macs, strict=False))
    params = [count_params(m) for m, _ in pruned]
    assert all(a > b for a, b in zip([count_params(trained), *params], params, strict=False))
    assert trained.conv1.out_channels == 16  # the caller's model is not pruned
    # fine-tuning keeps a working model at every step (deterministic, so no flip)
    assert min(accuracy(m, test) for m, _ in pruned) > 0.9


def test_exported_steps_predict_as_torch_does(pruned, splits) -> None:
    _, _, test = splits
    for model, path in pruned:
        _assert_same_predictions(predict(model, test.x), _onnx_outputs(path, test.x), test.y)


def test_exported_steps_quantize_compile_and_run_on_golden(pruned, splits, tmp_path) -> None:
    train, _, test = splits
    for step, (model, path) in enumerate(pruned, start=1):
        qdq = quantize_model(path, tmp_path / f"q{step}.onnx", train.x[:256], per_channel=True)
        program = compile_model(qdq, "pynq-z2")
        compiled_macs = sum(
            layer["macs"] for sg in program.subgraphs if sg.device == "DPU" for layer in sg.layers
        )
        assert compiled_macs == count_macs(model, test.x[:1])
        assert_verified(qdq, test.x[:8], program=program)


def test_pruning_with_fine_tuning_repeats(trained, splits) -> None:
    train, val, _ = splits
    runs = [
        [m.state_dict() for _, m in prune_steps(trained, train, val, steps=2, finetune_epochs=1)]
        for _ in range(2)
    ]
    for first, second in zip(*runs, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(first.values(), second.values(), strict=True))


# --- what pruning is configured with ---------------------------------------------------------


class _OneConv(nn.Module):
    """conv (1 -> 8, no bias) -> relu -> flatten -> fc, filters of known sizes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


@pytest.mark.parametrize("importance", ["l1", "l2"])
def test_magnitude_removes_the_smallest_filters(importance: str, splits) -> None:
    """Filter k is constant (sizes 4, 1, 6, 2, 8, 3, 7, 5 tenths) and the head weighs every
    input alike: a 25 % step removes the 2 smallest filters (1 and 3) and keeps the others
    as they were, in their order."""
    train, val, _ = splits
    model = _OneConv()
    sizes = torch.tensor([3.0, 0.0, 5.0, 1.0, 7.0, 2.0, 6.0, 4.0]) + 1
    with torch.no_grad():
        model.conv.weight.copy_(sizes.view(8, 1, 1, 1).expand(8, 1, 3, 3) / 10)
        model.fc.weight.fill_(0.01)
    ((_, pruned),) = prune_steps(
        model, train, val, steps=1, ratio=0.25, importance=importance, finetune_epochs=0
    )
    kept = pruned.conv.weight[:, 0, 0, 0] * 10
    assert kept.tolist() == pytest.approx([4.0, 6.0, 8.0, 3.0, 7.0, 5.0])
    assert pruned.fc.in_features == 6 * 64


def test_taylor_and_lamp_and_a_schedule(trained, splits) -> None:
    train, val, test = splits
    schedule = [0.25, 0.5]
    for importance in ("taylor", "lamp"):
        models = [
            m
            for _, m in prune_steps(
                trained, train, val, schedule=schedule, importance=importance, finetune_epochs=0
            )
        ]
        assert [m.conv1.out_channels for m in models] == [12, 8]
        assert [m.conv2.out_channels for m in models] == [24, 16]
        predict(models[-1], test.x[:4])  # still runs


def test_round_to_and_ignored_layers(trained, splits) -> None:
    train, val, _ = splits
    ((_, model),) = prune_steps(
        trained, train, val, steps=1, ratio=0.3, round_to=4, ignored_layers=["conv2"],
        finetune_epochs=0,
    )  # fmt: skip
    assert model.conv2.out_channels == 32
    assert model.conv1.out_channels == 8  # int(16 * 0.7) = 11, rounded down to 4s
    assert model.conv3.out_channels == 20  # 22 -> 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"importance": "l3"}, "importance 'l3'"),
        ({"steps": 10, "ratio": 0.1}, "steps x ratio < 1"),
        ({"schedule": [0.3, 0.2]}, "increasing"),
        ({"ignored_layers": ["conv9"]}, "no such module"),
    ],
)
def test_bad_pruning_options(trained, splits, options, message) -> None:
    train, val, _ = splits
    with pytest.raises(ModelError, match=message):
        next(prune_steps(trained, train, val, finetune_epochs=0, **options))


def test_data_the_model_cannot_take(trained, splits) -> None:
    train, val, _ = splits
    wrong_size = Split(np.zeros((4, 1, 10, 10), np.float32), train.y[:4])
    with pytest.raises(ModelError, match=r"does not run on the training samples \(shape \[1, 10"):
        next(prune_steps(trained, wrong_size, val))
    eleven_classes = Split(val.x[:3], np.array([0, 5, 10]))
    with pytest.raises(ModelError, match="validation labels run from 0 to 10.*shape \\[10\\]"):
        next(prune_steps(trained, train, eleven_classes))


class _FixedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 64, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).reshape(-1, 512))


def test_a_fixed_reshape_is_a_clear_error(splits) -> None:
    train, val, _ = splits
    with pytest.raises(ModelError, match="no longer runs.*torch.flatten"):
        next(prune_steps(_FixedView(), train, val, finetune_epochs=0))


# --- a residual block, a concat and a depthwise conv ------------------------------------------


class ResidualNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 1),
        )
        self.side = nn.Conv2d(16, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.block(x))
        x = torch.cat([torch.relu(self.depthwise(x)), torch.relu(self.side(x))], 1)
        return self.fc(torch.flatten(self.pool(x), 1))


def test_residual_concat_depthwise_stay_consistent(splits, tmp_path) -> None:
    train, val, test = splits
    torch.manual_seed(0)
    original = ResidualNet()
    steps = list(prune_steps(original, train, val, steps=3, ratio=0.2, finetune_epochs=1))
    widths = []
    for step, model in steps:
        trunk = model.stem[0].out_channels  # the residual add ties stem and block together
        assert model.stem[1].num_features == model.block[3].out_channels == trunk
        assert model.block[4].num_features == model.block[0].in_channels == trunk
        dw = model.depthwise[0]
        assert dw.in_channels == dw.out_channels == dw.groups == trunk
        assert model.fc.in_features == model.depthwise[3].out_channels + model.side.out_channels
        widths.append((trunk, model.block[0].out_channels, model.fc.in_features))
        path = export_onnx(model, test.x[:1], tmp_path / f"residual{step}.onnx")
        ops = {n.op_type for n in onnx.load(path).graph.node}
        assert {"Add", "Concat", "GlobalAveragePool"} <= ops
        _assert_same_predictions(predict(model, test.x), _onnx_outputs(path, test.x), test.y)
    # int(c * (1 - 0.2 k)) of the trunk's 16 channels, and of the concat's 16 + 8
    assert widths == [(12, 12, 12 + 6), (9, 9, 9 + 4), (6, 6, 6 + 3)]
    qdq = quantize_model(path, tmp_path / "residual.qdq.onnx", train.x[:256])
    assert_verified(qdq, test.x[:4], "pynq-z2")


# --- loading a user's model ----------------------------------------------------------------------

PY_MODEL = """
import torch
from dpukit.models.digits_torch import build_digits_torch

torch.manual_seed(3)
{definition}
"""


def _digits_archives(tmp_path: Path, model) -> dict[str, Path]:
    example = torch.zeros(2, 1, 8, 8)
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    paths = {
        "torchscript": tmp_path / "scripted.pt",
        "traced": tmp_path / "traced.pt",
        "export": tmp_path / "exported.pt2",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: users still have it
        torch.jit.save(torch.jit.script(model), paths["torchscript"])
        torch.jit.save(torch.jit.trace(model, example), paths["traced"])
    torch.export.save(program, paths["export"])
    return paths


def test_load_each_kind_and_prune_it_like_the_eager_model(tmp_path: Path, splits) -> None:
    """Every kind loads to the same outputs; a pruning step on an archive removes the same
    channels as on the eager model (the archives' layers become modules again)."""
    train, val, test = splits
    for name, definition in {
        "model": "model = build_digits_torch()",
        "build": "def build_model():\n    return build_digits_torch()",
    }.items():
        (tmp_path / f"{name}.py").write_text(PY_MODEL.format(definition=definition))
    torch.manual_seed(3)
    eager = build_digits_torch().eval()
    sources = {
        "model.py": tmp_path / "model.py",
        "build.py": tmp_path / "build.py",
        **_digits_archives(tmp_path, eager),
    }
    expected = predict(eager, test.x)
    ((_, eager_pruned),) = prune_steps(eager, train, val, steps=1, ratio=0.25, finetune_epochs=0)
    pruned_expected = predict(eager_pruned, test.x)
    for kind, path in sources.items():
        loaded = load_torch_model(path)
        np.testing.assert_allclose(predict(loaded, test.x), expected, atol=1e-6, err_msg=kind)
        ((_, pruned),) = prune_steps(loaded, train, val, steps=1, ratio=0.25, finetune_epochs=0)
        widths = sorted(m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d))
        assert widths == [12, 24, 24], kind
        np.testing.assert_allclose(predict(pruned, test.x), pruned_expected, atol=1e-6)
        export_onnx(pruned, test.x[:1], tmp_path / f"{kind}.onnx", check_x=test.x[:32])
        # pruning worked on a copy: the loaded model is as it was
        np.testing.assert_allclose(predict(loaded, test.x), expected, atol=1e-6, err_msg=kind)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("checkpoint", "torch.save checkpoint"),
        (b"not a model", "not a PyTorch model"),
        ("x = 1\n", "defines neither build_model\\(\\) nor model"),
        ("model = 42\n", "model is a int, not a torch.nn.Module"),
        ("def build_model():\n    raise ValueError('no weights here')\n", "ValueError: no weig"),
    ],
)
def test_load_torch_model_errors(tmp_path: Path, content, message) -> None:
    if content == "checkpoint":
        path = tmp_path / "weights.pt"
        torch.save(build_digits_torch().state_dict(), path)
    elif isinstance(content, bytes):
        path = tmp_path / "junk.pt"
        path.write_bytes(content)
    else:
        path = tmp_path / "user.py"
        path.write_text(content)
    with pytest.raises(ModelError, match=message):
        load_torch_model(path)
    with pytest.raises(ModelError, match="no such model file"):
        load_torch_model(tmp_path / "missing.pt")


def test_export_to_an_unwritable_place(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelError, match="cannot write"):
        export_onnx(build_digits_torch(), np.zeros((1, 1, 8, 8), np.float32), tmp_path / "file/x")


def test_without_torch_everything_else_imports() -> None:
    """Importing the modules does not even try to import torch; with torch missing, asking
    for it names the extra."""
    code = """
import sys
tried = []
class NoTorch:  # as if torch and torch-pruning were not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torch_pruning"):
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NoTorch())
import dpukit, dpukit.optimize.prune as p, dpukit.models.digits_torch as d
from dpukit.errors import ModelError
assert not tried, tried
for call in (lambda: p.load_torch_model("m.py"), d.build_digits_torch):
    try:
        call()
    except ModelError as exc:
        print(exc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("pip install 'dpukit[train]'") == 2, result.stdout
