"""The distinct convolution shapes of ResNet-18, and each one as a one-conv QDQ model.

The per-layer benchmark compiles each shape on its own (Conv + Relu, random weights,
quantized like bench/run.py quantizes ResNet-18) and compares its modeled cycles with
SCALE-Sim's (bench/scalesim_peer.py). The input size is a parameter: 224 gives the real
network's shapes; a smaller one keeps the RTL simulation short.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dpukit.models import zoo
from dpukit.quantize import quantize_model


@dataclass(frozen=True)
class ConvLayer:
    """One convolution: square kernel and stride, symmetric zero padding, batch 1.

    ``count`` is how often the shape occurs in the network; ``groups`` > 1 (depthwise or
    grouped) has no SCALE-Sim equivalent.
    """

    name: str
    in_h: int
    in_w: int
    pad: int
    k: int
    cin: int
    cout: int
    stride: int
    groups: int = 1
    count: int = 1

    @property
    def out_h(self) -> int:
        return (self.in_h + 2 * self.pad - self.k) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.in_w + 2 * self.pad - self.k) // self.stride + 1

    @property
    def macs(self) -> int:
        return self.out_h * self.out_w * self.k * self.k * self.cin // self.groups * self.cout


def _half(hw: int, k: int, pad: int) -> int:
    """Output size of a stride-2 window."""
    return (hw + 2 * pad - k) // 2 + 1


def resnet18_layers(input_hw: int = 224) -> list[ConvLayer]:
    """The 11 distinct conv shapes of ResNet-18 on an ``input_hw`` square image, and its FC
    as a 1x1 conv on a 1x1 input (the global average pool's output)."""
    c1 = _half(input_hw, 7, 3)
    hw = _half(c1, 3, 1)  # the 3x3/2 max pool
    layers = [ConvLayer("conv1", input_hw, input_hw, 3, 7, 3, 64, 2)]
    layers.append(ConvLayer("layer1_3x3", hw, hw, 1, 3, 64, 64, 1, count=4))
    cin = 64
    for stage, cout in enumerate((128, 256, 512), start=2):
        out = _half(hw, 3, 1)
        layers += [
            ConvLayer(f"layer{stage}_3x3s2", hw, hw, 1, 3, cin, cout, 2),
            ConvLayer(f"layer{stage}_3x3", out, out, 1, 3, cout, cout, 1, count=3),
            ConvLayer(f"layer{stage}_down", hw, hw, 0, 1, cin, cout, 2),
        ]
        hw, cin = out, cout
    layers.append(ConvLayer("fc", 1, 1, 0, 1, 512, 1000, 1))
    return layers


def build_layer_model(layer: ConvLayer, workdir: Path, seed: int = 0) -> Path:
    """The layer as a QDQ model (Conv + Relu, random weights, int8, per-tensor) in workdir."""
    if layer.in_h != layer.in_w or layer.groups != 1:
        raise ValueError(f"{layer.name}: only square, ungrouped convolutions are built")
    model, shape = zoo.single_conv(
        layer.in_h, layer.cin, layer.cout, layer.k, stride=layer.stride, pad=layer.pad, seed=seed
    )
    path = Path(workdir) / f"{layer.name}_{layer.in_h}.qdq.onnx"
    return quantize_model(model, path, zoo.calibration_data(shape, n=4))
