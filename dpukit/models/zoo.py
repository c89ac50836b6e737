"""Random-weight float ONNX models that exercise the compiler's layer coverage.

Each builder returns ``(model, input_shape)`` with a static batch-1 input. Weights come from
a seeded numpy RNG and are He-scaled so activations stay in a sane range after quantization;
BatchNormalization layers carry random running statistics so BN folding is exercised.
The test models are small spatially so they run quickly in simulation; ``resnet18`` is the
benchmark's full-size network.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

ModelAndShape = tuple[onnx.ModelProto, tuple[int, ...]]


class _GraphBuilder:
    """Accumulates nodes and initializers; each layer method returns its output tensor name."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, op: str) -> str:
        self._count += 1
        return f"{op.lower()}_{self._count}"

    def _const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        name = self._name(op)
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        *,
        stride: int = 1,
        pads: list[int] | None = None,
        dilation: int = 1,
        group: int = 1,
        bias: bool = True,
    ) -> str:
        """Conv with He-normal weights; ``pads`` defaults to 'same' for stride 1."""
        if pads is None:
            p = dilation * (k - 1) // 2
            pads = [p, p, p, p]
        fan_in = cin // group * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k))
        inputs = [x, self._const(self._name("w"), w)]
        if bias:
            inputs.append(self._const(self._name("b"), self.rng.normal(0.0, 0.1, cout)))
        return self.node(
            "Conv",
            inputs,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=pads,
            dilations=[dilation, dilation],
            group=group,
        )

    def bn(self, x: str, c: int) -> str:
        """BatchNormalization (inference form) with random but well-conditioned statistics."""
        params = [
            self.rng.uniform(0.5, 1.0, c),  # scale
            self.rng.normal(0.0, 0.1, c),  # bias
            self.rng.normal(0.0, 0.1, c),  # running mean
            self.rng.uniform(0.5, 1.5, c),  # running var
        ]
        names = [self._const(self._name(p), v) for p, v in zip("sbmv", params, strict=True)]
        return self.node("BatchNormalization", [x, *names], epsilon=1e-5)

    def relu(self, x: str) -> str:
        """Relu."""
        return self.node("Relu", [x])

    def relu6(self, x: str) -> str:
        """Clip(0, 6), the ONNX spelling of Relu6."""
        lo = self._const(self._name("clip_min"), np.array(0.0))
        hi = self._const(self._name("clip_max"), np.array(6.0))
        return self.node("Clip", [x, lo, hi])

    def gemm(self, x: str, cin: int, cout: int) -> str:
        """Gemm with transB=1 (weights stored [out, in]) and bias."""
        w = self._const(self._name("w"), self.rng.normal(0.0, np.sqrt(2.0 / cin), (cout, cin)))
        b = self._const(self._name("b"), self.rng.normal(0.0, 0.1, cout))
        return self.node("Gemm", [x, w, b], transB=1)

    def matmul_bias(self, x: str, cin: int, cout: int) -> str:
        """MatMul with a [in, out] weight followed by an Add of the bias."""
        w = self._const(self._name("w"), self.rng.normal(0.0, np.sqrt(2.0 / cin), (cin, cout)))
        y = self.node("MatMul", [x, w])
        return self.node("Add", [y, self._const(self._name("b"), self.rng.normal(0, 0.1, cout))])

    def basic_block(self, x: str, cin: int, cout: int, stride: int) -> str:
        """ResNet basic block; a 1x1 projection shortcut when the shape changes."""
        y = self.relu(self.bn(self.conv(x, cin, cout, 3, stride=stride, bias=False), cout))
        y = self.bn(self.conv(y, cout, cout, 3, bias=False), cout)
        if stride != 1 or cin != cout:
            x = self.bn(self.conv(x, cin, cout, 1, stride=stride, bias=False), cout)
        return self.relu(self.node("Add", [y, x]))

    def model(self, name: str, input_shape: tuple[int, ...], output: str) -> onnx.ModelProto:
        """Wrap the accumulated graph with input "input" and a shape-inferred output."""
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            self.inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="dpukit.models.zoo",
        )
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        model.graph.output[0].CopyFrom(inferred.graph.output[0])
        onnx.checker.check_model(model, full_check=True)
        return model


def conv_variants(seed: int = 0) -> ModelAndShape:
    """Stride 2, symmetric and asymmetric pads, dilation 2, 1x1/3x3/5x5 kernels, odd
    channel counts, Relu and Relu6 (Clip), with and without bias."""
    shape = (1, 3, 16, 16)
    g = _GraphBuilder(seed)
    x = g.relu(g.conv("input", 3, 5, 3))  # 16x16
    x = g.relu6(g.conv(x, 5, 7, 5, stride=2, pads=[2, 2, 2, 2], bias=False))  # 8x8
    x = g.relu(g.conv(x, 7, 13, 3, dilation=2))  # 8x8
    x = g.relu(g.conv(x, 13, 20, 3, stride=2, pads=[0, 1, 1, 0], bias=False))  # 4x4
    x = g.relu6(g.conv(x, 20, 7, 1))  # 4x4
    return g.model("conv_variants", shape, x), shape


def residual_block(seed: int = 0) -> ModelAndShape:
    """Stem, an identity-shortcut basic block, then a stride-2 block with 1x1 projection."""
    shape = (1, 3, 16, 16)
    g = _GraphBuilder(seed)
    x = g.relu(g.bn(g.conv("input", 3, 16, 3, bias=False), 16))
    x = g.basic_block(x, 16, 16, 1)
    x = g.basic_block(x, 16, 32, 2)  # 8x8
    return g.model("residual_block", shape, x), shape


def depthwise_separable(seed: int = 0) -> ModelAndShape:
    """MobileNet-style depthwise (stride 1 and 2) + pointwise blocks and a groups=2 conv."""
    shape = (1, 3, 16, 16)
    g = _GraphBuilder(seed)
    x = g.relu6(g.bn(g.conv("input", 3, 16, 3, bias=False), 16))
    x = g.relu6(g.bn(g.conv(x, 16, 16, 3, group=16, bias=False), 16))
    x = g.relu(g.bn(g.conv(x, 16, 24, 1, bias=False), 24))
    x = g.relu6(g.bn(g.conv(x, 24, 24, 3, stride=2, group=24, bias=False), 24))  # 8x8
    x = g.relu(g.bn(g.conv(x, 24, 32, 1, bias=False), 32))
    x = g.relu(g.bn(g.conv(x, 32, 32, 3, group=2, bias=False), 32))
    return g.model("depthwise_separable", shape, x), shape


def mlp(seed: int = 0) -> ModelAndShape:
    """Flatten, Gemm 64->100, MatMul+Add 100->37, Gemm 37->10, Relu between layers."""
    shape = (1, 64)
    g = _GraphBuilder(seed)
    x = g.node("Flatten", ["input"], axis=1)
    x = g.relu(g.gemm(x, 64, 100))
    x = g.relu(g.matmul_bias(x, 100, 37))
    x = g.gemm(x, 37, 10)
    return g.model("mlp", shape, x), shape


def pools_concat(seed: int = 0) -> ModelAndShape:
    """MaxPool and AveragePool branches joined by Concat, then GlobalAveragePool and Gemm."""
    shape = (1, 3, 16, 16)
    g = _GraphBuilder(seed)
    x = g.relu(g.conv("input", 3, 12, 3))  # 16x16
    a = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    a = g.relu(g.conv(a, 12, 8, 1))  # 8x8
    b = g.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
    b = g.relu(g.conv(b, 12, 6, 3))  # 8x8
    x = g.node("Concat", [a, b], axis=1)  # 14 channels
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    x = g.gemm(x, 14, 10)
    return g.model("pools_concat", shape, x), shape


def resnet18(input_hw: int = 224, seed: int = 0) -> ModelAndShape:
    """ResNet-18 topology (random weights) for the benchmark: 1000 classes."""
    shape = (1, 3, input_hw, input_hw)
    g = _GraphBuilder(seed)
    x = g.relu(g.bn(g.conv("input", 3, 64, 7, stride=2, bias=False), 64))
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        x = g.basic_block(x, cin, cout, 1 if stage == 0 else 2)
        x = g.basic_block(x, cout, cout, 1)
        cin = cout
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    x = g.gemm(x, 512, 1000)
    return g.model("resnet18", shape, x), shape


def alexnet(input_hw: int = 227, seed: int = 0) -> ModelAndShape:
    """AlexNet with CaffeNet's layer shapes (random weights), the ones seed 001 lists: conv
    11x11 3->96 stride 4, 5x5 96->256 in 2 groups, 3x3 256->384, 3x3 384->384 and 384->256
    in 2 groups, max pooling 3/2 after conv 1, 2 and 5, FC 9216->4096->4096->1000; no LRN
    (it only rescales activations), no dropout (inference). 227x227 gives 55x55 after conv
    1 and the 6x6x256 = 9216 the first FC reads."""
    shape = (1, 3, input_hw, input_hw)
    g = _GraphBuilder(seed)

    def pool(x: str) -> str:
        return g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])

    x = pool(g.relu(g.conv("input", 3, 96, 11, stride=4, pads=[0, 0, 0, 0])))
    x = pool(g.relu(g.conv(x, 96, 256, 5, group=2)))
    x = g.relu(g.conv(x, 256, 384, 3))
    x = g.relu(g.conv(x, 384, 384, 3, group=2))
    x = pool(g.relu(g.conv(x, 384, 256, 3, group=2)))
    side = ((input_hw - 11) // 4 + 1 - 3) // 2 + 1  # after conv 1 and pool 1
    for _ in range(2):  # pool 2 and pool 5 (convs 2 to 5 keep the size)
        side = (side - 3) // 2 + 1
    x = g.node("Flatten", [x], axis=1)
    x = g.relu(g.gemm(x, 256 * side * side, 4096))
    x = g.relu(g.gemm(x, 4096, 4096))
    x = g.gemm(x, 4096, 1000)
    return g.model("alexnet", shape, x), shape


def single_conv(
    in_hw: int, cin: int, cout: int, k: int, *, stride: int = 1, pad: int = 0, seed: int = 0
) -> ModelAndShape:
    """One Conv (with bias, symmetric ``pad``) and a Relu on an ``in_hw`` square input: one
    layer shape on its own, for per-layer cycle comparisons."""
    shape = (1, cin, in_hw, in_hw)
    g = _GraphBuilder(seed)
    x = g.relu(g.conv("input", cin, cout, k, stride=stride, pads=[pad] * 4))
    return g.model(f"conv{k}x{k}_{cin}_{cout}_s{stride}", shape, x), shape


def calibration_data(input_shape: tuple[int, ...], n: int = 16, seed: int = 0) -> np.ndarray:
    """``n`` samples uniform in [0, 1), stacked along axis 0: shape [n, *input_shape[1:]]."""
    rng = np.random.default_rng(seed)
    return rng.random((n, *input_shape[1:]), dtype=np.float32)


MODELS: dict[str, Callable[..., ModelAndShape]] = {
    "conv_variants": conv_variants,
    "residual_block": residual_block,
    "depthwise_separable": depthwise_separable,
    "mlp": mlp,
    "pools_concat": pools_concat,
}
"""The compiler-test models (small inputs); ``resnet18`` is kept out as benchmark-only."""
