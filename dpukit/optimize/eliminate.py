"""Neuron elimination without retraining (seed 001, Algorithms 1-2) on float ONNX models.

For one fully connected or convolution layer whose outputs (after its activation function)
feed exactly one next weighted layer that reads them linearly:

1. run the model on calibration inputs (onnxruntime) and collect the activations the next
   layer reads, A: samples x neurons (a convolution's: positions x channels);
2. choose the p neurons to keep (Algorithm 2): SVD A = U S V^T, then QR with column pivoting
   of the top-p right singular vectors transposed, V_p^T P = Q R; the first p pivots are
   the kept neurons (the seed writes X = A^T, neurons x samples, and takes U_p: the same);
3. re-solve the next layer by least squares (the seed's Eq. 6): every neuron's activation
   is fitted by the kept ones and a constant, A ~ [A_S 1] T, and the next layer's weights
   become T times its weights, its bias takes the constant's share;
4. write the smaller model: the layer loses the dropped weight rows / output channels (and
   so do its bias, per-neuron constants and BatchNormalization on the way), the next layer
   the matching inputs.

For a fully connected next layer, step 3 is exactly the least-squares fit of the next
layer's pre-activations from the kept neurons: least squares is linear in its right-hand
side, so pinv([A_S 1]) (A W + b) = T W + [0; b]. For a next convolution the same channel
map keeps each kernel's taps shared over positions (a free fit per tap would have p x k x k
unknowns per output and overfit a small calibration set); its constant share is exact away
from the next layer's zero padding. A layer whose activations have exact rank r therefore
loses nothing at p = r.

Algorithm 1 sweeps p (`sweep`): per p, test accuracy (measured with onnxruntime) and the
network-level energy of seed 001 (`dpukit.compiler.energy.network_energy`, modeled);
`choose` picks the layer and p that save the most energy at a target accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import scipy.linalg
from onnx import helper, numpy_helper
from threadpoolctl import threadpool_limits

from dpukit.compiler import frontend
from dpukit.compiler.energy import DEFAULT_TABLE, EnergyTable, network_energy
from dpukit.errors import ExecutionError, ModelError
from dpukit.optimize.data import top1

WEIGHTED = ("Gemm", "MatMul", "Conv")
# Elementwise ops that act on each neuron alone, so dropping a neuron drops its output.
ACTIVATIONS = frozenset(
    ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
     "Selu", "Celu", "Gelu", "Mish", "Softplus", "Softsign", "ThresholdedRelu", "Clip",
     "Identity", "Dropout")
)  # fmt: skip
# Elementwise ops with a constant operand: per-neuron constants (a MatMul's bias Add, a
# scale) lose the dropped neurons' entries.
CONSTANT_OPERAND_OPS = frozenset(("Add", "Sub", "Mul", "Div", "PRelu"))
# Pooling works channel by channel, so it may sit between two convolutions.
CHANNEL_POOLS = frozenset(
    ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
)
_RUN_BATCH = 256  # samples per onnxruntime run when the batch dim is symbolic


def _one_blas_thread():
    """The SVD, QR and least squares of a layer are small: on a shared 2-core machine a
    multi-threaded BLAS spins against the other processes and runs 20x slower than one
    thread (measured: a 1347 x 151 least squares, 1.1 s against 0.05 s)."""
    return threadpool_limits(limits=1, user_api="blas")


class _NotEliminable(Exception):
    """Why a layer cannot be eliminated (turned into a ModelError naming the layer)."""


# -- the graph around a layer --------------------------------------------------------------


class _Graph:
    """A model's nodes, constants and tensor users, to walk from a layer to the next one."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.model = model
        self.inits = {t.name: t for t in g.initializer}
        self.users: dict[str, list[onnx.NodeProto]] = {}
        for node in g.node:
            for name in dict.fromkeys(node.input):  # a node reading a tensor twice: one user
                if name:
                    self.users.setdefault(name, []).append(node)
        self.outputs = {o.name for o in g.output}

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name) if name else None
        return None if t is None else numpy_helper.to_array(t)

    def only_user(self, tensor: str, what: str) -> onnx.NodeProto:
        """The one node that reads `tensor`; otherwise why neurons cannot be removed."""
        if tensor in self.outputs:
            raise _NotEliminable(f"{what} '{tensor}' is a graph output")
        users = self.users.get(tensor, [])
        if not users:
            raise _NotEliminable(f"{what} '{tensor}' is read by no node")
        if len(users) > 1:
            names = ", ".join(f"'{_label(u)}' ({u.op_type})" for u in users)
            raise _NotEliminable(
                f"{what} '{tensor}' is read by {len(users)} nodes ({names}); neurons can be "
                "removed only where a single next layer reads them"
            )
        return users[0]

    def unused_extra_outputs(self, node: onnx.NodeProto) -> None:
        for extra in node.output[1:]:
            if extra and (extra in self.users or extra in self.outputs):
                raise _NotEliminable(
                    f"output '{extra}' of {node.op_type} node '{_label(node)}' is used (only the "
                    "first may be)"
                )


def _label(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])


@dataclass
class _Site:
    """Where an elimination applies: the layer, what lies between it and the next weighted
    layer, and that next layer."""

    layer: onnx.NodeProto
    channels: bool  # neurons are a Conv's channels (axis 1), not the last axis
    neurons: int
    rank: int | None  # the activations' rank (Conv: known from its kernel), for broadcasting
    between: list[onnx.NodeProto]  # activation functions, per-neuron constants, BN, pools
    read: str  # the tensor whose neurons the next layer reads (a Flatten's input)
    flatten: onnx.NodeProto | None
    next: onnx.NodeProto


def _weight(graph: _Graph, node: onnx.NodeProto, index: int, role: str) -> np.ndarray:
    name = node.input[index] if index < len(node.input) else ""
    value = graph.const(name)
    if value is None:
        raise _NotEliminable(
            f"the {role} '{name}' of {node.op_type} node '{_label(node)}' is not an "
            "initializer (a constant weight is needed; a quantized model's weights go "
            "through DequantizeLinear: eliminate neurons before quantizing)"
        )
    if not np.issubdtype(value.dtype, np.floating):
        raise _NotEliminable(
            f"the {role} '{name}' of node '{_label(node)}' is {value.dtype}, not float: "
            "eliminate neurons on the float model, before quantizing"
        )
    return value


def _neurons_of_layer(graph: _Graph, node: onnx.NodeProto) -> tuple[int, bool, int | None]:
    """(neurons, channels?, activation rank) of a Gemm, MatMul or Conv with constant
    weights, checking what dropping its output neurons needs."""
    op = node.op_type
    if op not in WEIGHTED:
        raise _NotEliminable(f"it is a {op} node, not a Gemm, MatMul or Conv")
    if op == "Gemm":
        if _attr(node, "transA", 0):
            raise _NotEliminable("it is a Gemm with transA=1")
        w = _weight(graph, node, 1, "weight")
        neurons = w.shape[0] if _attr(node, "transB", 0) else w.shape[1]
        if len(node.input) > 2 and node.input[2]:
            _check_per_neuron(_weight(graph, node, 2, "bias"), neurons, None, f"bias of '{op}'")
        return neurons, False, None
    if op == "MatMul":
        w = _weight(graph, node, 1, "weight")
        if w.ndim != 2:
            raise _NotEliminable(f"its weight has {w.ndim} dims; a 2-D [in, out] is needed")
        return w.shape[1], False, None
    w = _weight(graph, node, 1, "weight")
    if _attr(node, "group", 1) != 1:
        raise _NotEliminable(
            f"it is a grouped Conv (group={_attr(node, 'group', 1)}): dropping output "
            "channels would unbalance its groups"
        )
    if len(node.input) > 2 and node.input[2]:
        _weight(graph, node, 2, "bias")
    return w.shape[0], True, w.ndim


def _neuron_dim(shape: Sequence[int], rank: int | None, channels: bool) -> int | None:
    """The dim of a constant of `shape` that broadcasts over the neuron axis (1 or the
    neuron count), or None when the constant does not reach that axis (broadcast)."""
    if not channels:
        return shape[-1] if shape else None
    index = len(shape) - (rank - 1)  # channels are axis 1 of `rank` dims, aligned from the right
    return shape[index] if index >= 0 else None


def _check_per_neuron(value: np.ndarray, neurons: int, rank: int | None, what: str) -> None:
    dim = _neuron_dim(value.shape, rank, rank is not None)
    if rank is not None and value.ndim > rank:
        raise _NotEliminable(f"the {what} has more dims ({value.ndim}) than its data ({rank})")
    if dim not in (None, 1, neurons):
        raise _NotEliminable(
            f"the {what} has shape {list(value.shape)}, which is neither per-neuron "
            f"({neurons}) nor shared"
        )


def _find_site(graph: _Graph, layer: onnx.NodeProto) -> _Site:
    neurons, channels, rank = _neurons_of_layer(graph, layer)
    between: list[onnx.NodeProto] = []
    tensor = layer.output[0]
    for _ in range(len(graph.model.graph.node)):
        user = graph.only_user(tensor, "its output" if not between else "the activation")
        op = user.op_type
        graph.unused_extra_outputs(user)
        if op in WEIGHTED:
            _check_next(graph, user, tensor, neurons, channels, flatten=None)
            return _Site(layer, channels, neurons, rank, between, tensor, None, user)
        if op == "Flatten" and channels:
            if _attr(user, "axis", 1) != 1:
                raise _NotEliminable(f"Flatten node '{_label(user)}' has axis != 1")
            nxt = graph.only_user(user.output[0], "the flattened activation")
            if nxt.op_type not in ("Gemm", "MatMul"):
                raise _NotEliminable(
                    f"Flatten node '{_label(user)}' feeds {nxt.op_type} node "
                    f"'{_label(nxt)}', not a Gemm or MatMul"
                )
            _check_next(graph, nxt, user.output[0], neurons, channels, flatten=user)
            return _Site(layer, channels, neurons, rank, between, tensor, user, nxt)
        if op in CONSTANT_OPERAND_OPS and not (op == "PRelu" and user.input[0] != tensor):
            others = [n for n in user.input if n != tensor]
            const = graph.const(others[0]) if len(others) == 1 else None
            if const is None:
                raise _NotEliminable(
                    f"{op} node '{_label(user)}' combines the activation with a computed "
                    "tensor, not a constant"
                )
            _check_per_neuron(const, neurons, rank, f"constant of {op} node '{_label(user)}'")
        elif op == "BatchNormalization" and channels:
            for index in range(1, 5):
                _weight(graph, user, index, "parameter")
        elif op in CHANNEL_POOLS and channels:
            pass
        elif op not in ACTIVATIONS:
            allowed = "elementwise activations, per-neuron constants" + (
                ", BatchNormalization, pooling and a Flatten" if channels else ""
            )
            raise _NotEliminable(
                f"the activation goes to {op} node '{_label(user)}', which mixes or "
                f"reshapes neurons; only {allowed} may sit between it and the next weighted "
                "layer"
            )
        between.append(user)
        tensor = user.output[0]
    raise _NotEliminable("the graph has a cycle")  # pragma: no cover - checked on load


def _check_next(graph, node, tensor, neurons, channels, flatten) -> None:
    """The next weighted layer must read `tensor` as its data input, linearly over neurons."""
    op, what = node.op_type, f"the next layer, {node.op_type} node '{_label(node)}',"
    if node.input[0] != tensor or tensor in node.input[1:]:
        raise _NotEliminable(f"{what} reads the activation as its weight operand")
    if op == "Conv" and not channels:
        raise _NotEliminable(f"{what} is a Conv after a fully connected layer")
    if op in ("Gemm", "MatMul") and channels and flatten is None:
        raise _NotEliminable(
            f"{what} reads the convolution's output without a Flatten, so not over its channels"
        )
    if op == "Gemm" and _attr(node, "transA", 0):
        raise _NotEliminable(f"{what} has transA=1")
    w = _weight(graph, node, 1, "weight")
    if op == "Conv":
        if _attr(node, "group", 1) != 1:
            raise _NotEliminable(f"{what} is grouped (group={_attr(node, 'group', 1)})")
        inputs = w.shape[1]
    elif op == "MatMul":
        if w.ndim != 2:
            raise _NotEliminable(f"{what} has a {w.ndim}-D weight; a 2-D [in, out] is needed")
        inputs = w.shape[0]
    else:
        inputs = w.shape[1] if _attr(node, "transB", 0) else w.shape[0]
        if len(node.input) > 2 and node.input[2]:
            c = _weight(graph, node, 2, "bias")
            outputs = w.shape[0] if _attr(node, "transB", 0) else w.shape[1]
            if c.size not in (1, outputs) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
                raise _NotEliminable(f"{what} has a bias of shape {list(c.shape)}")
    if inputs % neurons or (flatten is None and inputs != neurons):
        raise _NotEliminable(
            f"{what} takes {inputs} inputs, which do not match the layer's {neurons} neurons"
        )


def _find_layer(model: onnx.ModelProto, where: str, layer: str) -> onnx.NodeProto:
    named = [n for n in model.graph.node if n.name == layer]
    if not named:
        named = [n for n in model.graph.node if not n.name and n.output[0] == layer]
    if len(named) > 1:
        raise ModelError(f"{where}: {len(named)} nodes are named '{layer}'; names must be unique")
    if not named:
        candidates = ", ".join(eliminable_layers(model)) or "none"
        raise ModelError(
            f"{where}: no node named '{layer}' (layers whose neurons can be eliminated: "
            f"{candidates})"
        )
    return named[0]


def _read(model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    proto, where = frontend.read_onnx(model)
    frontend.check_onnx(proto, where)
    return proto, where


def eliminable_layers(model: str | Path | onnx.ModelProto) -> list[str]:
    """The names (a nameless node: its first output) of the layers `eliminate` can shrink,
    in graph order: Gemm, MatMul with a constant weight, or Conv whose output, through
    elementwise activations (and for a Conv, BatchNormalization and pooling), feeds one next
    Gemm/MatMul (a Conv: a Conv, or a Flatten and a Gemm/MatMul) that reads it linearly."""
    proto, _ = _read(model)
    graph = _Graph(proto)
    found = []
    for node in proto.graph.node:
        if node.op_type in WEIGHTED:
            try:
                _find_site(graph, node)
            except _NotEliminable:
                continue
            found.append(_label(node))
    return found


def _site_for(proto: onnx.ModelProto, where: str, layer: str) -> _Site:
    node = _find_layer(proto, where, layer)
    try:
        return _find_site(_Graph(proto), node)
    except _NotEliminable as why:
        raise ModelError(
            f"{where}: the neurons of layer '{layer}' ({node.op_type}) cannot be eliminated: {why}"
        ) from None


# -- running the model ---------------------------------------------------------------------


def _input_of(proto: onnx.ModelProto, where: str) -> onnx.ValueInfoProto:
    inputs = frontend.graph_inputs(proto)
    if len(inputs) != 1:
        raise ModelError(
            f"{where}: the model has {len(inputs)} inputs; neuron elimination takes models "
            "with one input"
        )
    return inputs[0]


def _checked_inputs(proto: onnx.ModelProto, where: str, x, what: str) -> np.ndarray:
    """`x` as the model's input dtype, after checking it fits the declared input."""
    inp = _input_of(proto, where)
    dims = [
        d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim
    ]
    shown = "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"
    try:
        x = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ExecutionError(f"{what} is not an array: {exc}") from None
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ExecutionError(f"{what} has dtype {x.dtype}; numbers are needed")
    if x.ndim != len(dims) or any(
        d is not None and d != s for d, s in zip(dims[1:], x.shape[1:], strict=False)
    ):
        raise ExecutionError(
            f"{what} has shape {list(x.shape)}; the model's input '{inp.name}' is {shown} "
            "(samples along the first dim)"
        )
    if len(x) == 0:
        raise ExecutionError(f"{what} has no samples")
    if dims and dims[0] is not None and len(x) % dims[0]:
        raise ExecutionError(
            f"{what} has {len(x)} samples; the model's input has a fixed batch of {dims[0]}, "
            "so give a multiple of it"
        )
    dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    x = x.astype(dtype)
    if np.issubdtype(dtype, np.floating) and not np.isfinite(x).all():
        raise ExecutionError(f"{what} has NaN or infinite values")
    return x


def _session(proto: onnx.ModelProto, where: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # small models, shared cores
    try:
        return ort.InferenceSession(
            proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own types per status code
        raise ModelError(
            f"{where}: onnxruntime cannot load the model: {frontend.onnx_message(exc)}"
        ) from None


def _run(proto: onnx.ModelProto, where: str, x: np.ndarray, output: str | None = None):
    """One output (the first by default) of the model on all of `x`, batch by batch."""
    session = _session(proto, where)
    inp = session.get_inputs()[0]
    step = inp.shape[0] if isinstance(inp.shape[0], int) else _RUN_BATCH
    names = [output] if output else [session.get_outputs()[0].name]
    try:
        parts = [session.run(names, {inp.name: x[i : i + step]})[0] for i in range(0, len(x), step)]
    except Exception as exc:  # onnxruntime raises its own types per status code
        raise ModelError(
            f"{where}: onnxruntime cannot run the model: {frontend.onnx_message(exc)}"
        ) from None
    return np.concatenate(parts)


def _activations(
    proto: onnx.ModelProto, where: str, site: _Site, x: np.ndarray
) -> tuple[np.ndarray, tuple[int, ...], float]:
    """What the next layer reads, as samples (a Conv: positions) x neurons in float64, a
    Conv's spatial dims, and the machine epsilon of the type the model computed them in."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    elem = _Graph(probe).inits[site.layer.input[1]].data_type  # the layer computes in it
    probe.graph.output.append(helper.make_tensor_value_info(site.read, elem, None))
    a = _run(probe, where, x, site.read)
    eps = float(np.finfo(a.dtype).eps) if np.issubdtype(a.dtype, np.floating) else 0.0
    a = a.astype(np.float64)
    if site.channels:
        a = np.moveaxis(a, 1, -1)
    if a.shape[-1] != site.neurons:
        raise ModelError(
            f"{where}: '{site.read}' has {a.shape[-1]} neurons along its "
            f"{'channel' if site.channels else 'last'} axis; layer '{_label(site.layer)}' "
            f"makes {site.neurons}"
        )
    return a.reshape(-1, site.neurons), a.shape[1:-1], eps


# -- Algorithm 2 and the least-squares re-solve --------------------------------------------


def select_neurons(activations: np.ndarray, keep: int) -> np.ndarray:
    """Seed 001's Algorithm 2: the `keep` neurons (columns of `activations`, samples x
    neurons) that QR with column pivoting picks from the top-`keep` right singular vectors,
    in ascending order."""
    with _one_blas_thread():
        _, _, vt = _svd(activations)
        return _pivots(vt, keep)


def _svd(a: np.ndarray):
    try:
        return scipy.linalg.svd(a, full_matrices=False)
    except np.linalg.LinAlgError:  # gesdd may not converge where the slower gesvd does
        return scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesvd")


def _pivots(vt: np.ndarray, keep: int) -> np.ndarray:
    # V_p^T, keep x neurons (fewer rows when there are fewer samples than `keep`: pivoting
    # still orders every column, the ones past the rank by what is left of their norms)
    _, pivots = scipy.linalg.qr(vt[:keep], mode="r", pivoting=True)
    return np.sort(pivots[:keep])


def reconstruction(activations: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """T, (len(kept) + 1) x neurons, minimizing ||[A_S 1] T - A|| over the calibration
    activations (the minimum-norm solution where A_S is rank deficient); the kept neurons
    map to themselves exactly."""
    n = activations.shape[1]
    t = np.zeros((len(kept) + 1, n))
    t[np.arange(len(kept)), kept] = 1.0
    dropped = np.setdiff1d(np.arange(n), kept)
    if len(dropped):
        design = np.hstack([activations[:, kept], np.ones((len(activations), 1))])
        t[:, dropped] = scipy.linalg.lstsq(design, activations[:, dropped])[0]
    return t


# -- writing the smaller model -------------------------------------------------------------


class _Writer:
    """Replaces constants in a model copy; a constant other nodes share gets a new name."""

    def __init__(self, proto: onnx.ModelProto):
        self.proto = proto
        self.graph = _Graph(proto)
        self.taken = {t.name for t in proto.graph.initializer} | {
            o for n in proto.graph.node for o in n.output
        }
        self.taken |= {i.name for i in proto.graph.input}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def put(self, node: onnx.NodeProto, index: int, value: np.ndarray, like: str = "") -> None:
        """Make `value` input `index` of `node` (appending a missing optional input)."""
        name = node.input[index] if index < len(node.input) else ""
        dtype = self.dtype(name or like)
        tensor_value = np.ascontiguousarray(value.astype(dtype))
        users = self.graph.users.get(name, [])
        if name and len(users) == 1 and name not in self.graph.outputs:
            tensor = self.graph.inits[name]
            tensor.CopyFrom(numpy_helper.from_array(tensor_value, name))
            for inp in self.proto.graph.input:  # an initializer also listed as an input
                if inp.name == name:
                    inp.CopyFrom(helper.make_tensor_value_info(name, tensor.data_type, value.shape))
            return
        new = self.fresh(f"{name}.{_label(node)}" if name else f"{_label(node)}.bias")
        self.proto.graph.initializer.append(numpy_helper.from_array(tensor_value, new))
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = new

    def dtype(self, name: str):
        t = self.graph.inits.get(name)
        return helper.tensor_dtype_to_np_dtype(t.data_type) if t is not None else np.float32

    def const(self, name: str) -> np.ndarray:
        return self.graph.const(name).astype(np.float64)


def _take(value: np.ndarray, kept: np.ndarray, axis_dim: int | None, neurons: int, axis: int):
    return np.take(value, kept, axis=axis) if axis_dim == neurons else value


def _shrink_layer(w: _Writer, site: _Site, kept: np.ndarray) -> None:
    """Drop the unkept neurons from the layer and from every per-neuron constant after it."""
    node, n = site.layer, site.neurons
    weight = w.const(node.input[1])
    if node.op_type == "Conv":
        w.put(node, 1, weight[kept])
    elif node.op_type == "Gemm" and _attr(node, "transB", 0):
        w.put(node, 1, weight[kept, :])
    else:
        w.put(node, 1, weight[:, kept])
    if len(node.input) > 2 and node.input[2]:
        bias = w.const(node.input[2])
        if node.op_type == "Conv":
            w.put(node, 2, bias[kept])
        else:
            w.put(node, 2, _take(bias, kept, bias.shape[-1] if bias.ndim else None, n, -1))
    for op in site.between:
        if op.op_type == "BatchNormalization":
            for index in range(1, 5):
                w.put(op, index, w.const(op.input[index])[kept])
        elif op.op_type in CONSTANT_OPERAND_OPS:
            for index, name in enumerate(op.input):
                value = w.graph.const(name)
                if value is None:
                    continue
                dim = _neuron_dim(value.shape, site.rank, site.channels)
                axis = -1 if not site.channels else value.ndim - (site.rank - 1)
                w.put(op, index, _take(value.astype(np.float64), kept, dim, n, axis))


def _resolve_next(w: _Writer, site: _Site, t: np.ndarray, block: int) -> None:
    """Next layer: weights T[:p] x W over each neuron's inputs, bias + T[p] x (W summed)."""
    node, n = site.next, site.neurons
    p = len(t) - 1
    weight = w.const(node.input[1])
    if node.op_type == "Conv":
        taps = weight.shape[2:]
        per_neuron = np.moveaxis(weight, 1, 0).reshape(n, -1)
        unit_response = weight.sum(axis=tuple(range(2, weight.ndim))).T  # n x outputs
    else:
        trans_b = node.op_type == "Gemm" and _attr(node, "transB", 0)
        matrix = weight.T if trans_b else weight  # inputs x outputs
        if node.op_type == "Gemm":
            matrix = matrix * _attr(node, "alpha", 1.0)
        outputs = matrix.shape[1]
        blocks = matrix.reshape(n, block, outputs)  # a Flatten puts channel c in block c
        per_neuron = blocks.reshape(n, -1)
        unit_response = blocks.sum(axis=1)
    new_weight = t[:p] @ per_neuron
    bias_shift = t[p] @ unit_response
    if node.op_type == "Conv":
        w.put(node, 1, np.moveaxis(new_weight.reshape(p, weight.shape[0], *taps), 0, 1))
        _add_bias(w, node, 2, bias_shift)
        return
    new_matrix = new_weight.reshape(p * block, outputs)
    w.put(node, 1, new_matrix.T if trans_b else new_matrix)
    if node.op_type == "Gemm":
        _set_attr(node, "alpha", 1.0)
        if len(node.input) > 2 and node.input[2]:
            bias_shift = bias_shift + _attr(node, "beta", 1.0) * w.const(node.input[2])
        _set_attr(node, "beta", 1.0)
        _add_bias(w, node, 2, bias_shift, replace=True)
    else:
        _matmul_bias(w, node, bias_shift)


def _add_bias(w: _Writer, node, index: int, shift: np.ndarray, replace: bool = False) -> None:
    has = len(node.input) > index and node.input[index]
    if has and not replace:
        shift = w.const(node.input[index]) + shift
    if has or np.any(shift):
        w.put(node, index, shift, like=node.input[1])


def _matmul_bias(w: _Writer, node: onnx.NodeProto, shift: np.ndarray) -> None:
    """A MatMul's bias is the Add after it (a constant operand), or a new Add."""
    if not np.any(shift):
        return
    out = node.output[0]
    users = w.graph.users.get(out, [])
    if len(users) == 1 and out not in w.graph.outputs and users[0].op_type == "Add":
        add = users[0]
        index = 1 if add.input[0] == out else 0
        value = w.graph.const(add.input[index])
        if value is not None and add.input[1 - index] == out:
            w.put(add, index, value.astype(np.float64) + shift)
            return
    graph = w.proto.graph
    unbiased = w.fresh(f"{out}_unbiased")
    node.output[0] = unbiased
    bias = w.fresh(f"{_label(node)}.b")
    graph.initializer.append(numpy_helper.from_array(shift.astype(w.dtype(node.input[1])), bias))
    position = list(graph.node).index(node) + 1
    add = helper.make_node("Add", [unbiased, bias], [out], name=w.fresh(f"{_label(node)}_bias"))
    graph.node.insert(position, add)


@dataclass
class _Analysis:
    """A layer's activations on the calibration data and their SVD, shared by every p."""

    proto: onnx.ModelProto
    where: str
    site: _Site
    activations: np.ndarray  # samples (a Conv: positions) x neurons
    vt: np.ndarray
    singular_values: np.ndarray
    block: int  # inputs of the next layer per neuron (a Flatten's spatial size; else 1)
    eps: float  # of the activations' own type: float32 rounding is their noise floor

    @property
    def rank(self) -> int:
        """Numerical rank (Algorithm 1 starts at p = rank), numpy's matrix_rank tolerance
        at the precision the model computed in."""
        s = self.singular_values
        if not len(s) or s[0] == 0:
            return 0
        return int((s > s[0] * max(self.activations.shape) * self.eps).sum())

    def check_keep(self, keep) -> int:
        n = self.site.neurons
        if isinstance(keep, bool) or not isinstance(keep, int | np.integer) or not 1 <= keep <= n:
            raise ModelError(
                f"{self.where}: keep {keep!r} neurons of layer '{_label(self.site.layer)}': "
                f"give a whole number from 1 to its {n} neurons"
            )
        return int(keep)

    def build(self, keep: int) -> onnx.ModelProto:
        keep = self.check_keep(keep)
        with _one_blas_thread():
            kept = _pivots(self.vt, keep)
            t = reconstruction(self.activations, kept)
        out = onnx.ModelProto()
        out.CopyFrom(self.proto)
        site = _find_site(_Graph(out), _find_layer(out, self.where, _label(self.site.layer)))
        writer = _Writer(out)
        _shrink_layer(writer, site, kept)
        _resolve_next(writer, site, t, self.block)
        # The shapes of the activations between the two layers changed: infer them anew.
        changed = {site.layer.output[0], *(o for op in site.between for o in op.output)}
        if site.flatten is not None:
            changed.add(site.flatten.output[0])
        kept_info = [vi for vi in out.graph.value_info if vi.name not in changed]
        del out.graph.value_info[:]
        out.graph.value_info.extend(kept_info)
        note = f"{_label(site.layer)}: {site.neurons} -> {keep} neurons (seed 001)"
        props = {p.key: p for p in out.metadata_props}
        if "dpukit.eliminate" in props:
            props["dpukit.eliminate"].value += f"; {note}"
        else:
            out.metadata_props.append(
                onnx.StringStringEntryProto(key="dpukit.eliminate", value=note)
            )
        try:
            onnx.checker.check_model(out, full_check=True)
        except Exception as exc:
            raise ModelError(
                f"{self.where}: the model with layer '{_label(site.layer)}' cut to {keep} "
                f"neurons is not valid ONNX: {frontend.onnx_message(exc)}"
            ) from None
        return out


def _analyze(model, layer: str, calib_x) -> _Analysis:
    proto, where = _read(model)
    site = _site_for(proto, where, layer)
    x = _checked_inputs(proto, where, calib_x, "calib_x")
    activations, spatial, eps = _activations(proto, where, site, x)
    block = math.prod(spatial) if site.flatten is not None else 1
    if site.flatten is not None:
        inputs = _next_inputs(proto, site)
        if inputs != site.neurons * block:
            raise ModelError(
                f"{where}: Flatten node '{_label(site.flatten)}' gives {site.neurons * block} "
                f"values, the next layer '{_label(site.next)}' takes {inputs}"
            )
    with _one_blas_thread():
        _, s, vt = _svd(activations)
    return _Analysis(proto, where, site, activations, vt, s, block, eps)


def _next_inputs(proto: onnx.ModelProto, site: _Site) -> int:
    w = _Graph(proto).const(site.next.input[1])
    if site.next.op_type == "Gemm" and _attr(site.next, "transB", 0):
        return w.shape[1]
    return w.shape[0]


def eliminate(
    model: str | Path | onnx.ModelProto, layer: str, keep: int, calib_x: np.ndarray
) -> onnx.ModelProto:
    """The model with layer `layer` cut to `keep` neurons (a Conv: output channels), chosen
    by seed 001's SVD + QR with column pivoting on its activations over `calib_x` (inputs
    as the model takes them, samples first), and the next layer re-solved by least squares.
    The input model is not changed."""
    return _analyze(model, layer, calib_x).build(keep)


# -- Algorithm 1: the sweep over p, and the choice of layer --------------------------------


def default_keeps(neurons: int, rank: int | None = None) -> list[int]:
    """A sweep's p values: all neurons, the activations' rank (Algorithm 1 starts there),
    and fractions down to a few percent."""
    fractions = (1.0, 0.75, 0.5, 0.35, 0.25, 0.15, 0.1, 0.05)
    keeps = {max(1, round(neurons * f)) for f in fractions}
    if rank:
        keeps.add(min(rank, neurons))
    return sorted(keeps, reverse=True)


def model_costs(model: onnx.ModelProto, table: EnergyTable | str = DEFAULT_TABLE) -> dict:
    """Parameters, MACs and seed 001's network-level energy per inference (modeled)."""
    report = network_energy(model, table)
    energy = report.total.as_dict()
    params = sum(
        math.prod(t.dims)
        for t in model.graph.initializer
        if np.issubdtype(helper.tensor_dtype_to_np_dtype(t.data_type), np.floating)
    )
    return {
        "params": int(params),
        "macs": int(sum(la.macs for la in report.layers)),
        "energy_j_modeled": energy["total"],
        "energy_breakdown_j_modeled": {
            k: energy[k] for k in ("mac", "sram_weights", "sram_activations", "dram")
        },
        "energy_table": report.table.name,
    }


def _layer_params(model: onnx.ModelProto, layer: str) -> int:
    node = next(n for n in model.graph.node if _label(n) == layer)
    sizes = {t.name: math.prod(t.dims) for t in model.graph.initializer}
    return int(sum(sizes.get(name, 0) for name in node.input[1:]))


def _checked_split(proto, where, split) -> tuple[np.ndarray, np.ndarray]:
    if not (hasattr(split, "x") and hasattr(split, "y")):
        raise ExecutionError("eval_split needs .x (inputs) and .y (labels), as a data.Split")
    x = _checked_inputs(proto, where, split.x, "eval_split.x")
    y = np.asarray(split.y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ExecutionError(
            f"eval_split.y has shape {list(y.shape)} and dtype {y.dtype}; one integer label "
            f"per sample of eval_split.x ({len(x)}) is needed"
        )
    return x, y


def _accuracy(proto, where, x, y) -> float:
    return top1(_run(proto, where, x), y)


def sweep(
    model: str | Path | onnx.ModelProto,
    layer: str,
    keeps: Iterable[int] | None,
    calib_x: np.ndarray,
    eval_split,
    *,
    min_accuracy: float | None = None,
    table: EnergyTable | str = DEFAULT_TABLE,
) -> list[dict]:
    """Seed 001's Algorithm 1 for one layer: for each p in `keeps` (None: `default_keeps`),
    from the largest down, the model cut to p neurons, its top-1 accuracy on `eval_split`
    (.x, .y; measured with onnxruntime), parameters, MACs and network-level energy per
    inference (modeled). Stops after the first p whose accuracy falls below `min_accuracy`
    (the seed's degradation threshold), if given."""
    analysis = _analyze(model, layer, calib_x)
    x, y = _checked_split(analysis.proto, analysis.where, eval_split)
    name, n = _label(analysis.site.layer), analysis.site.neurons
    keeps = default_keeps(n, analysis.rank) if keeps is None else list(keeps)
    if not keeps:
        raise ModelError(f"{analysis.where}: no p values to sweep layer '{name}' over")
    keeps = sorted({analysis.check_keep(k) for k in keeps}, reverse=True)
    curve = []
    for keep in keeps:
        smaller = analysis.build(keep)
        accuracy = _accuracy(smaller, analysis.where, x, y)
        curve.append(
            {
                "layer": name,
                "keep": keep,
                "neurons": n,
                "activation_rank": analysis.rank,
                "accuracy": accuracy,
                "accuracy_kind": "measured (onnxruntime, eval split)",
                "layer_params": _layer_params(smaller, name),
                **model_costs(smaller, table),
            }
        )
        if min_accuracy is not None and accuracy < min_accuracy:
            break
    return curve


def choose(curves: dict[str, list[dict]], target_accuracy: float) -> tuple[str, int]:
    """The (layer, p) of the sweeps in `curves` (layer -> `sweep` result) with the least
    modeled energy among those whose accuracy reaches `target_accuracy` (a fraction)."""
    if not 0.0 <= target_accuracy <= 1.0:
        raise ModelError(
            f"target accuracy {target_accuracy}: give a fraction from 0 to 1 (0.95 for 95 %)"
        )
    points = [(layer, p) for layer, curve in curves.items() for p in curve]
    if not points:
        raise ModelError("no sweep results to choose from")
    good = [(layer, p) for layer, p in points if p["accuracy"] >= target_accuracy]
    if not good:
        best_layer, best = max(points, key=lambda lp: lp[1]["accuracy"])
        raise ModelError(
            f"no elimination reaches accuracy {target_accuracy:.4f}; the best is "
            f"{best['accuracy']:.4f} (layer '{best_layer}', {best['keep']} neurons)"
        )
    layer, point = min(good, key=lambda lp: (lp[1]["energy_j_modeled"], -lp[1]["accuracy"]))
    return layer, int(point["keep"])
