"""The `.dpu` program file: one self-describing, versioned, checksummed file. No pickle.

Layout: MAGIC (8 bytes) | format version (u32) | header length (u32) | JSON header |
payload sections | SHA-256 of everything before it (32 bytes). The header lists the
config (and its fingerprint), graph inputs/outputs, every DPU tensor (shape, layout, scale,
zero point, DRAM offset), the subgraphs in execution order, and where each payload section
(constant DRAM image, instruction streams, CPU subgraphs as ONNX) lies in the payload.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dpukit.compiler.hwconfig import HwConfig
from dpukit.compiler.ir import QTensor
from dpukit.errors import ProgramError

MAGIC = b"DPUKIT\x00\x01"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<8sII")


@dataclass
class Subgraph:
    """A part of the model on one device, like an XIR subgraph with a `device` attribute."""

    name: str
    device: str  # "DPU" or "CPU"
    inputs: list[str]
    outputs: list[str]
    payload: bytes = field(repr=False)  # DPU: instruction stream; CPU: an ONNX model
    layers: list[dict] = field(default_factory=list)  # DPU: per-layer statistics


@dataclass
class TensorSpec:
    """A graph input or output as the user sees it."""

    name: str
    shape: list[int]
    dtype: str


@dataclass
class Program:
    config: dict  # HwConfig.as_dict()
    fingerprint: str
    source: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    tensors: dict[str, QTensor]
    dram_offsets: dict[str, int]
    const_base: int  # the constants follow the tensors in the data window
    const: bytes = field(repr=False)
    subgraphs: list[Subgraph] = field(default_factory=list)

    @property
    def dram_size(self) -> int:
        return self.const_base + len(self.const)

    def check_config(self, cfg: HwConfig) -> None:
        if cfg.fingerprint != self.fingerprint:
            raise ProgramError(
                f"program was compiled for hardware config '{self.config['name']}' "
                f"(fingerprint {self.fingerprint}) but the target is '{cfg.name}' "
                f"(fingerprint {cfg.fingerprint}); recompile with "
                f"`dpukit compile --config {cfg.name}`"
            )

    def save(self, path: str | Path) -> None:
        sections: dict[str, list[int]] = {}
        payload = bytearray()

        def add(name: str, data: bytes) -> None:
            sections[name] = [len(payload), len(data)]
            payload.extend(data)

        add("const", self.const)
        subs = []
        for k, sg in enumerate(self.subgraphs):
            add(f"subgraph.{k}", sg.payload)
            subs.append(
                {
                    "name": sg.name,
                    "device": sg.device,
                    "inputs": sg.inputs,
                    "outputs": sg.outputs,
                    "layers": sg.layers,
                    "section": f"subgraph.{k}",
                }
            )
        header = {
            "format_version": FORMAT_VERSION,
            "config": self.config,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "inputs": [asdict(t) for t in self.inputs],
            "outputs": [asdict(t) for t in self.outputs],
            "tensors": {n: _tensor_json(t) for n, t in self.tensors.items()},
            "dram_offsets": self.dram_offsets,
            "const_base": self.const_base,
            "subgraphs": subs,
            "sections": sections,
        }
        head = json.dumps(header, sort_keys=True).encode()
        body = _FIXED.pack(MAGIC, FORMAT_VERSION, len(head)) + head + bytes(payload)
        Path(path).write_bytes(body + hashlib.sha256(body).digest())

    @classmethod
    def load(cls, path: str | Path) -> Program:
        path = Path(path)
        if not path.is_file():
            raise ProgramError(f"{path}: no such program file")
        blob = path.read_bytes()
        if len(blob) < _FIXED.size + 32 or blob[:8] != MAGIC:
            raise ProgramError(
                f"{path}: not a dpukit program (bad magic); compile one with "
                "`dpukit compile model.qdq.onnx`"
            )
        body, digest = blob[:-32], blob[-32:]
        _, version, head_len = _FIXED.unpack_from(body)
        if version != FORMAT_VERSION:
            raise ProgramError(
                f"{path}: program format version {version}; this dpukit reads "
                f"version {FORMAT_VERSION}: recompile the model"
            )
        if hashlib.sha256(body).digest() != digest:
            raise ProgramError(
                f"{path}: checksum mismatch: the file is corrupted or truncated; "
                "recompile the model"
            )
        try:
            h = json.loads(body[_FIXED.size : _FIXED.size + head_len])
            payload = body[_FIXED.size + head_len :]

            def section(name: str) -> bytes:
                off, n = h["sections"][name]
                return payload[off : off + n]

            return cls(
                config=h["config"],
                fingerprint=h["fingerprint"],
                source=h["source"],
                inputs=[TensorSpec(**t) for t in h["inputs"]],
                outputs=[TensorSpec(**t) for t in h["outputs"]],
                tensors={n: _tensor_from_json(n, t) for n, t in h["tensors"].items()},
                dram_offsets=h["dram_offsets"],
                const_base=h["const_base"],
                const=section("const"),
                subgraphs=[
                    Subgraph(
                        s["name"],
                        s["device"],
                        s["inputs"],
                        s["outputs"],
                        section(s["section"]),
                        s["layers"],
                    )
                    for s in h["subgraphs"]
                ],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProgramError(f"{path}: malformed program header ({exc}); recompile") from None


def _tensor_json(t: QTensor) -> dict:
    return {
        "shape": list(t.shape),
        "scale": t.scale,
        "zero_point": t.zero_point,
        "onnx_dtype": t.onnx_dtype,
        "hwc": list(t.hwc),
        "flatten_of": list(t.flatten_of) if t.flatten_of else None,
        "layout": "HWC",
    }


def _tensor_from_json(name: str, d: dict) -> QTensor:
    return QTensor(
        name,
        tuple(d["shape"]),
        d["scale"],
        d["zero_point"],
        d["onnx_dtype"],
        tuple(d["hwc"]),
        tuple(d["flatten_of"]) if d["flatten_of"] else None,
    )
