"""Structured pruning with fine-tuning (seed 000's prune x6 stages), export to ONNX, and
loading the PyTorch models a user brings.

Channels (conv filters, linear neurons) are removed whole, so the pruned layers really get
smaller and the DPU runs fewer cycles. torch-pruning's dependency graph keeps everything
that shares a channel consistent: a residual add prunes the same channels on both of its
inputs, a concat maps its inputs' channels to its output's, a depthwise conv shrinks with
the conv feeding it, BatchNorm and the next layer's inputs follow. The schedule is
iterative and linear in the original channel count: with the default 10 % for 6 steps,
step k leaves about (1 - 0.1 k) of every prunable layer's original channels (truncated to
whole channels). The classifier head keeps its outputs (the classes); its inputs shrink.
After each step the model is fine-tuned for a few epochs, keeping the epoch with the best
validation accuracy.

Training is repeatable: a fixed seed, torch's deterministic algorithms and one thread. It
runs in float64 by default, as dpukit.models.digits does and for the same reason: float32
training took a different path on each CPU kernel torch picks (AVX-512, AVX2, SSE: three
different models here), float64 gave one model on AVX-512 and AVX2 (not on the pre-AVX2
kernels). The model is float32 again after each fine-tuning.

Export uses torch's legacy exporter (``dynamo=False``, opset 17): it writes the weights
inside the .onnx file and global average pooling as ``GlobalAveragePool``, both of which our
front end takes as they are; the default (dynamo) exporter needs onnxscript, writes opset
18+ with the weights in a side file unless told otherwise, and writes global pooling as
``ReduceMean`` + ``Reshape``. Every export is checked against torch on a sample.

A model comes as a Python file defining ``build_model()`` or ``model``, a TorchScript
archive or a torch.export archive. The archives hold no ``nn.Conv2d`` modules, only graphs
of operators reading weight tensors, which torch-pruning cannot prune; pruning turns their
convolutions, linear layers and batch norms back into modules first (``_lift_layers``).

torch is optional (the ``train`` extra): importing this module does not import it, and
every function needing it says how to install it.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import sys
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import onnx

from dpukit.errors import ModelError
from dpukit.optimize.data import onnx_scores, top1

OPSET = 17
IMPORTANCES = ("l1", "l2", "lamp", "taylor")
# export_onnx's check: onnxruntime's outputs equal torch's within ATOL + RTOL * |torch|.
# Both compute in float32 with different summation orders; observed differences are ~1e-7.
EXPORT_RTOL = 1e-4
EXPORT_ATOL = 1e-5
INPUT_NAME = "input"
_TAYLOR_BATCHES = 8  # training batches whose gradients rank channels for "taylor"


class Split(Protocol):
    """What the pruning needs of a data split (dpukit.optimize.data.Split has it)."""

    x: np.ndarray  # float32 samples along axis 0, as the model takes them
    y: np.ndarray  # int64 class indices


def require_torch() -> ModuleType:
    """The torch module, or one clear error saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ModelError(
            "pruning and PyTorch models need torch: pip install 'dpukit[train]'"
        ) from None
    return torch


def _torch_pruning() -> ModuleType:
    require_torch()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its own deprecation notes, nothing to act on
            import torch_pruning
    except ImportError:
        raise ModelError("pruning needs torch-pruning: pip install 'dpukit[train]'") from None
    return torch_pruning


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch, allow only deterministic algorithms and use one thread; the caller's
    settings and random state come back afterwards."""
    torch = require_torch()
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)


def _copy(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.fx's pytree notes on copying
        return copy.deepcopy(model)


def _tensor(x: Any, dtype=None):
    torch = require_torch()
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(dtype or torch.float32)


def _output(result: Any):
    """The first output of a model that returns a tensor, tuple/list or dict of tensors."""
    if isinstance(result, dict):
        result = next(iter(result.values()))
    if isinstance(result, tuple | list):
        result = result[0]
    return result


def predict(model, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """The model's (first) output on ``x``, float32 numpy, in eval mode."""
    torch = require_torch()
    was_training = model.training
    model.eval()
    dtype = next(iter(model.parameters()), torch.zeros(())).dtype
    try:
        with torch.no_grad():
            outs = [
                _output(model(_tensor(x[i : i + batch_size], dtype))).float().numpy()
                for i in range(0, len(x), batch_size)
            ]
    finally:
        model.train(was_training)
    return np.concatenate(outs)


def accuracy(model, split: Split) -> float:
    """Top-1 accuracy of the torch model on a split."""
    return top1(predict(model, split.x), split.y)


def fit(
    model,
    train: Split,
    val: Split,
    *,
    epochs: int,
    seed: int = 0,
    lr: float = 1e-3,
    batch_size: int = 32,
    float64: bool = True,
):
    """Train ``model`` in place with Adam and cross-entropy for ``epochs`` epochs, keep the
    epoch with the best validation accuracy (the earliest of equals) and return the model,
    float32, in eval mode. Deterministic for a given seed (see the module docstring)."""
    torch = require_torch()
    if epochs < 1:
        return model.float().eval()
    _check_data(model, train, "training")
    _check_data(model, val, "validation")
    x = _tensor(train.x, torch.float64 if float64 else torch.float32)
    y = torch.from_numpy(np.asarray(train.y, dtype=np.int64))
    with deterministic(seed):
        if float64:
            model.double()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        order_rng = torch.Generator().manual_seed(seed)
        best = (-1.0, None)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=order_rng)
            for start in range(0, len(x), batch_size):
                batch = order[start : start + batch_size]
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(_output(model(x[batch])), y[batch])
                loss.backward()
                optimizer.step()
            val_accuracy = accuracy(model, val)
            if val_accuracy > best[0]:
                best = (val_accuracy, copy.deepcopy(model.state_dict()))
        model.load_state_dict(best[1])
    return model.float().eval()


def _check_data(model, split: Split, label: str) -> None:
    """The model runs on the split's samples and has an output for each of its classes."""
    if len(split.x) == 0 or len(split.x) != len(split.y):
        raise ModelError(
            f"the {label} data has {len(split.x)} samples and {len(split.y)} labels; "
            "it needs at least one sample and one label per sample"
        )
    try:
        scores = predict(model, split.x[:2])
    except Exception as exc:
        raise ModelError(
            f"the model does not run on the {label} samples (shape "
            f"{list(np.shape(split.x)[1:])} each): {_one_line(exc)}"
        ) from None
    if scores.ndim != 2 or int(np.max(split.y)) >= scores.shape[1] or int(np.min(split.y)) < 0:
        raise ModelError(
            f"the {label} labels run from {int(np.min(split.y))} to {int(np.max(split.y))}, "
            f"but the model's output has shape {list(scores.shape[1:])} per sample; a "
            "classifier's output is one score per class"
        )


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model, example_input) -> int:
    """Multiply-accumulates of the model's convolutions and linear layers for one sample
    (the compiler's count: outputs x inputs per output)."""
    torch = require_torch()
    nn = torch.nn
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        per_output = (
            module.in_features
            if isinstance(module, nn.Linear)
            else module.in_channels // module.groups * int(np.prod(module.kernel_size))
        )
        total += output[0].numel() * per_output  # output[0]: the first sample

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)
    ]
    try:
        predict(model, _tensor(example_input)[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def _layers_in_call_order(model, example_input) -> list:
    torch = require_torch()
    order = []
    handles = [
        m.register_forward_hook(lambda m, i, o: order.append(m))
        for m in model.modules()
        if isinstance(m, torch.nn.Linear | torch.nn.modules.conv._ConvNd)
    ]
    try:
        predict(model, _tensor(example_input))
    finally:
        for h in handles:
            h.remove()
    return order


def _importance(tp: ModuleType, importance: Any):
    if not isinstance(importance, str):
        return importance  # a torch_pruning importance object, used as given
    makers = {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "lamp": lambda: tp.importance.LAMPImportance(p=2),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }
    if importance not in makers:
        raise ModelError(
            f"importance {importance!r}: choose one of {', '.join(IMPORTANCES)} "
            "(or pass a torch_pruning importance object)"
        )
    return makers[importance]()


def _schedule(steps: int, ratio: float, schedule: Sequence[float] | None) -> list[float]:
    """Cumulative fraction of the original channels removed after each step."""
    if schedule is None:
        if steps < 1 or not 0 < ratio or ratio * steps >= 1:
            raise ModelError(
                f"prune {steps} steps of {ratio:g}: need steps >= 1 and 0 < ratio, with "
                "steps x ratio < 1 (it is the fraction of channels removed in the end)"
            )
        return [ratio * k for k in range(1, steps + 1)]
    schedule = [float(s) for s in schedule]
    if not schedule or any(not 0 < s < 1 for s in schedule) or schedule != sorted(set(schedule)):
        raise ModelError(
            f"prune schedule {schedule}: give the fraction of the original channels removed "
            "after each step, increasing, each between 0 and 1"
        )
    return schedule


def _resolve_ignored(model, ignored: Sequence[Any]) -> list:
    modules = dict(model.named_modules())
    out = []
    for item in ignored:
        if isinstance(item, str):
            if item not in modules:
                raise ModelError(
                    f"ignored layer {item!r}: the model has no such module (its modules: "
                    f"{', '.join(n for n in modules if n)})"
                )
            item = modules[item]
        out.append(item)
    return out


def _accumulate_taylor_gradients(model, train: Split, batch_size: int, seed: int) -> None:
    """Gradients of the training loss over a few batches, which TaylorImportance reads (in
    eval mode, so batch norms keep their statistics)."""
    torch = require_torch()
    with deterministic(seed):
        model.eval()
        model.zero_grad()
        x, y = _tensor(train.x), torch.from_numpy(np.asarray(train.y, dtype=np.int64))
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        for start in range(0, min(len(x), _TAYLOR_BATCHES * batch_size), batch_size):
            batch = order[start : start + batch_size]
            torch.nn.functional.cross_entropy(_output(model(x[batch])), y[batch]).backward()


def _check_runs(model, example_input, step: int) -> None:
    """A pruned model must still run; a reshape to a fixed size is the usual reason not."""
    torch = require_torch()
    x = _tensor(example_input)
    try:
        predict(model, torch.cat([x, x]))
    except Exception as exc:
        raise ModelError(
            f"after pruning step {step} the model no longer runs: {_one_line(exc)}. "
            "A reshape to a fixed feature count (x.view(n, 512)) cannot follow pruning; "
            "use torch.flatten(x, 1) or x.view(x.size(0), -1)"
        ) from None


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def prune_steps(
    model,
    train: Split,
    val: Split,
    *,
    steps: int = 6,
    ratio: float = 0.1,
    schedule: Sequence[float] | None = None,
    importance: Any = "l2",
    finetune_epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    example_input: Any = None,
    ignored_layers: Sequence[Any] = (),
    round_to: int | None = None,
    float64: bool = True,
) -> Iterator[tuple[int, Any]]:
    """Prune ``model`` iteratively and fine-tune after each step; yields ``(step, model)``
    for step 1..steps, each model a separate float32 copy in eval mode (the input model is
    left as it is).

    ``schedule``: the cumulative fraction of every layer's original channels removed after
    each step (default ``ratio * k`` for step k); ``importance``: "l1"/"l2" (filter weight
    magnitude), "lamp" or "taylor" (weight x gradient on a few training batches), or a
    torch_pruning importance object; ``ignored_layers``: modules (or their names) whose
    output channels stay, besides the classifier head (the last conv/linear layer run);
    ``round_to``: keep channel counts multiples of this; ``example_input``: one input
    sample batch (default the first training sample).
    """
    torch = require_torch()
    tp = _torch_pruning()
    cumulative = _schedule(steps, ratio, schedule)
    if example_input is None:
        example_input = train.x[:1]
    example = _tensor(example_input)
    _check_data(model, train, "training")
    _check_data(model, val, "validation")
    model = prunable(model, example)
    model = _copy(model).float().eval()
    head = _layers_in_call_order(model, example)
    if not head:
        raise ModelError("the model has no Conv or Linear layer to prune")
    ignored = [head[-1], *_resolve_ignored(model, ignored_layers)]
    scorer = _importance(tp, importance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MetaPruner/BasePruner naming notes
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=scorer,
            pruning_ratio=cumulative[-1],
            iterative_steps=len(cumulative),
            iterative_pruning_ratio_scheduler=lambda _ratio, _steps: [0.0, *cumulative],
            ignored_layers=ignored,
            round_to=round_to,
        )
    for step in range(1, len(cumulative) + 1):
        if isinstance(scorer, tp.importance.GroupTaylorImportance):
            _accumulate_taylor_gradients(model, train, batch_size, seed + step)
        with torch.no_grad():
            pruner.step()
        model.zero_grad(set_to_none=True)
        _check_runs(model, example, step)
        fit(
            model,
            train,
            val,
            epochs=finetune_epochs,
            seed=seed + step,
            lr=lr,
            batch_size=batch_size,
            float64=float64,
        )
        yield step, _copy(model)


def export_onnx(model, example_input: Any, path: str | Path, *, check_x: Any = None) -> Path:
    """Write ``model`` as a float ONNX file our front end reads (legacy exporter, opset 17,
    weights inside, batch dim "N") and check that onnxruntime computes what torch does on
    ``check_x`` (default ``example_input``), within EXPORT_ATOL + EXPORT_RTOL x |torch|.
    Returns ``path``."""
    torch = require_torch()
    path = Path(path)
    model = model.float()
    was_training = model.training
    model.eval()
    example = _tensor(example_input)
    try:
        with torch.no_grad():
            result = model(example)
        if isinstance(result, dict):
            result = list(result.values())
        count = len(result) if isinstance(result, tuple | list) else 1
        output_names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                external_data=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=output_names,
                dynamic_axes={name: {0: "N"} for name in [INPUT_NAME, *output_names]},
            )
    except OSError as exc:
        raise ModelError(f"{path}: cannot write the ONNX model ({exc.strerror or exc})") from None
    except Exception as exc:
        raise ModelError(f"torch could not export the model to ONNX: {_one_line(exc)}") from None
    finally:
        model.train(was_training)
    _check_export(model, path, check_x if check_x is not None else example_input)
    return path


def _check_export(model, path: Path, x: Any) -> None:
    """onnxruntime on the written file against torch on the same inputs."""
    x = _tensor(x).numpy()
    expected = predict(model, x)
    got = onnx_scores(path, x, optimize=True)  # onnxruntime as it runs by default
    if got.shape != expected.shape or not np.allclose(
        got, expected, rtol=EXPORT_RTOL, atol=EXPORT_ATOL
    ):
        worst = np.abs(got - expected).max() if got.shape == expected.shape else float("nan")
        raise ModelError(
            f"{path}: the exported model's output differs from torch's (max |difference| "
            f"{worst:.3g}, allowed {EXPORT_ATOL:g} + {EXPORT_RTOL:g} x |torch|); the model "
            "does something the ONNX exporter records wrongly"
        )
    onnx.checker.check_model(onnx.load(path), full_check=True)


# --- models the user brings ------------------------------------------------------------------


def load_torch_model(path: str | Path):
    """A PyTorch model from a Python file (defining ``build_model()``, called, or ``model``),
    a TorchScript archive (torch.jit.save) or a torch.export archive (torch.export.save)."""
    torch = require_torch()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.suffix == ".py":
        return _model_from_python(torch, path)
    kind = _archive_kind(path)
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript, but users still have such archives
            warnings.simplefilter("ignore", DeprecationWarning)
            if kind == "torchscript":
                return torch.jit.load(str(path), map_location="cpu")
            if kind == "torch.export":
                return _trainable(torch.export.load(str(path)).module(check_guards=False))
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the {kind} archive: {_one_line(exc)}") from None
    if kind == "checkpoint":
        raise ModelError(
            f"{path}: a torch.save checkpoint (a state_dict or a pickled module), which holds "
            "no code to rebuild the model from; pass a .py file whose build_model() builds "
            "the network and loads these weights, or save it with torch.jit.save or "
            "torch.export.save"
        )
    raise ModelError(
        f"{path}: not a PyTorch model: pass a .py file defining build_model() or model, a "
        "TorchScript archive (torch.jit.save) or a torch.export archive (torch.export.save)"
    )


def _trainable(module):
    """torch.export's module refuses train() and eval() and checks the input shapes against
    the exported ones; fine-tuning switches modes and runs batches of other sizes. Mode-
    dependent operators stay as exported (a dropout exported in eval mode stays off), the
    batch norms pruning turns into modules follow the mode."""
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)  # instance overrides raising NotImplementedError
    module._forward_pre_hooks.clear()
    return module


def _archive_kind(path: Path) -> str | None:
    """What a torch zip archive holds, from its entries (every one sits in a top folder)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            entries = {name.split("/")[1] for name in archive.namelist() if "/" in name}
    except (zipfile.BadZipFile, OSError):
        return None
    if "archive_format" in entries:
        return "torch.export"
    if "code" in entries and "constants.pkl" in entries:
        return "torchscript"
    if "data.pkl" in entries:
        return "checkpoint"
    return None


def _model_from_python(torch: ModuleType, path: Path):
    name = f"dpukit_user_model_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # deepcopy, pickling and torch.jit find the classes here
    try:
        spec.loader.exec_module(module)
        if hasattr(module, "build_model"):
            model = module.build_model()
            source = "build_model()"
        elif hasattr(module, "model"):
            model, source = module.model, "model"
        else:
            raise ModelError(
                f"{path}: defines neither build_model() nor model; define one that returns "
                "(or is) the torch.nn.Module to prune"
            )
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: running it failed: {_one_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{path}: {source} is a {type(model).__name__}, not a torch.nn.Module")
    return model


def prunable(model, example_input):
    """``model`` as modules torch-pruning can prune: a TorchScript module becomes an FX
    graph (through torch's TorchScript converter), and an FX graph's convolution, linear
    and batch norm operators become modules again. Other models are returned as they are."""
    torch = require_torch()
    example = _tensor(example_input)
    if isinstance(model, torch.jit.ScriptModule):
        from torch._export.converter import TS2EPConverter  # torch's own, pinned with torch

        batch = torch.cat([example, example])  # batch 2, so the batch dim stays free
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = TS2EPConverter(model, (batch,)).convert()
        except Exception as exc:
            raise ModelError(
                f"the TorchScript model cannot be turned into a prunable graph: "
                f"{_one_line(exc)}; pass the model's Python source (a .py file) instead"
            ) from None
        model = _trainable(program.module(check_guards=False))
    if isinstance(model, torch.fx.GraphModule):
        try:
            before = predict(model, example)
            predict(model, torch.cat([example, example]))
        except Exception as exc:
            raise ModelError(
                f"the model's graph does not run on batches of 1 and 2 samples "
                f"({_one_line(exc)}); export it with a free batch dim: torch.export.export("
                "model, (x,), dynamic_shapes=({0: torch.export.Dim('batch')},))"
            ) from None
        model = _lift_layers(torch, _copy(model))  # the caller's graph stays as it is
        if not np.array_equal(predict(model, example), before):
            raise ModelError("turning the model's graph into layers changed its output")
    return model


def _schema_args(node) -> dict[str, Any]:
    """An aten call's arguments by name, defaults filled in."""
    values = {}
    for i, arg in enumerate(node.target._schema.arguments):
        if i < len(node.args):
            values[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            values[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            values[arg.name] = arg.default_value
    return values


def _lift_layers(torch: ModuleType, gm):
    """Replace the graph's aten conv/linear/batch_norm calls on weight attributes by calls
    of equivalent nn modules holding the same parameters."""
    nn, aten = torch.nn, torch.ops.aten
    builders = {aten.linear.default: _linear_layer, aten.batch_norm.default: _batch_norm_layer}
    builders |= dict.fromkeys(
        (aten.conv1d.default, aten.conv2d.default, aten.convolution.default), _conv_layer
    )
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        build = builders.get(node.target)
        if build is None:
            continue
        try:
            layer = build(nn, node, gm)
        except _NotLiftable:  # a weight that is no attribute of the module
            continue
        if layer is None:
            continue
        module, attr_nodes = layer
        name = _place_module(nn, gm, module, attr_nodes)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(name, (node.args[0],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _attr(gm, node):
    """The parameter or buffer a get_attr node reads (None for a missing optional one)."""
    if node is None:
        return None
    if getattr(node, "op", None) != "get_attr":
        raise _NotLiftable
    return gm.get_submodule(node.target.rpartition(".")[0]).__getattr__(
        node.target.rpartition(".")[2]
    )


class _NotLiftable(Exception):
    pass


def _as_parameter(nn: ModuleType, tensor):
    return tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor.detach().clone())


def _conv_layer(nn: ModuleType, node, gm):
    a = _schema_args(node)
    weight, bias = _attr(gm, a["weight"]), _attr(gm, a.get("bias"))
    if a.get("transposed", False) or isinstance(a["padding"], str) or weight.dim() not in (3, 4):
        return None
    dims = weight.dim() - 2

    def expand(v):
        v = list(v) if isinstance(v, list | tuple) else [v]
        return tuple(v * dims if len(v) == 1 else v)

    groups = a["groups"]
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=expand(a["stride"]),
        padding=expand(a["padding"]),
        dilation=expand(a["dilation"]),
        groups=groups,
        bias=bias is not None,
    )
    conv.weight = _as_parameter(nn, weight)
    if bias is not None:
        conv.bias = _as_parameter(nn, bias)
    return conv, [a["weight"], a.get("bias")]


def _linear_layer(nn: ModuleType, node, gm):
    a = _schema_args(node)
    weight, bias = _attr(gm, a["weight"]), _attr(gm, a.get("bias"))
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight = _as_parameter(nn, weight)
    if bias is not None:
        linear.bias = _as_parameter(nn, bias)
    return linear, [a["weight"], a.get("bias")]


def _batch_norm_layer(nn: ModuleType, node, gm):
    a = _schema_args(node)
    keys = ("weight", "bias", "running_mean", "running_var")
    weight, bias, mean, var = (_attr(gm, a.get(k)) for k in keys)
    if mean is None or var is None:
        return None
    value = node.args[0].meta.get("val") if hasattr(node.args[0], "meta") else None
    rank = value.dim() if value is not None else 4
    kind = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}.get(rank)
    if kind is None:
        return None
    bn = kind(len(mean), eps=a["eps"], momentum=a["momentum"], affine=weight is not None)
    if weight is not None:
        bn.weight, bn.bias = _as_parameter(nn, weight), _as_parameter(nn, bias)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    return bn, [a.get(k) for k in keys]


def _place_module(nn: ModuleType, gm, module, attr_nodes) -> str:
    """Put ``module`` where its weights lived when that container held only them (so the
    layer keeps its name, e.g. "conv1"), else under a new name; returns the name."""
    owners = {n.target.rpartition(".")[0] for n in attr_nodes if n is not None}
    if len(owners) == 1:
        owner = owners.pop()
        container = gm.get_submodule(owner) if owner else None
        consumed = {n.target.rpartition(".")[2] for n in attr_nodes if n is not None}
        held = {k for k, _ in container.named_parameters(recurse=False)} if container else set()
        held |= {k for k, _ in container.named_buffers(recurse=False)} if container else set()
        held -= {"num_batches_tracked"}
        if (
            container is not None
            and type(container) is nn.Module  # a bare holder of weights, not a layer
            and not list(container.children())
            and held == consumed
        ):
            parent, _, leaf = owner.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, module)
            return owner
    base = "_".join(sorted(owners)).replace(".", "_") or type(module).__name__.lower()
    name, k = base, 1
    while hasattr(gm, name):
        name, k = f"{base}_{k}", k + 1
    gm.add_module(name, module)
    return name
