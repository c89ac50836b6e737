"""The `.dpu` program file: one self-describing, versioned, checksummed file. No pickle.

Layout: MAGIC (8 bytes) | format version (u32) | header length (u32) | JSON header |
payload sections | SHA-256 of everything before it (32 bytes). The header lists the
config (and its fingerprint), graph inputs/outputs, every DPU tensor (shape, layout, scale,
zero point, DRAM offset), the subgraphs in execution order with their kind and ops, the
preprocessing a board script applies to images (or null), and where each payload section
lies in the payload: the constant DRAM image, and per subgraph its instruction stream
(kind "dpu"), its graph for the numpy executor (kind "numpy", host/cpu_ops.py), or, for a
CPU part with an op that executor lacks, its ONNX model (kind "onnx", for onnxruntime).

The checksum detects corruption, not nonsense: `Program.load` also checks every header
field's type and range and the header's consistency (tensors inside the data window, the
window inside the address space, sections tiling the payload, every name a subgraph reads
provided before it, numpy graphs well formed), so a file that passes runs as compiled.
What a CPU subgraph declares it reads and makes is checked against the header when it is
loaded to run (host/cpu.py); an ONNX one only then (importing onnx here would slow every
run, and a board has no onnx). Runs on a board's Python 3.10 without onnx.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NoReturn

import numpy as np

from dpukit.compiler.codegen import ALIGN, LayerStats, constants_start
from dpukit.compiler.hwconfig import HwConfig, config_from_dict
from dpukit.compiler.ir import QTensor
from dpukit.compiler.isa import INSTR_BYTES
from dpukit.errors import ConfigError, ProgramError
from dpukit.host import cpu_ops

MAGIC = b"DPUKIT\x00\x01"
FORMAT_VERSION = 2
_FIXED = struct.Struct("<8sII")
_DIGEST = 32  # SHA-256
_RECOMPILE = "the file is damaged or was not written by dpukit: recompile the model"


@dataclass
class Subgraph:
    """A part of the model on one device, like an XIR subgraph with a `device` attribute."""

    name: str
    device: str  # "DPU" or "CPU"
    inputs: list[str]
    outputs: list[str]
    payload: bytes = field(repr=False)  # what `kind` says
    layers: list[dict] = field(default_factory=list)  # DPU: per-layer statistics
    # "dpu": an instruction stream; "numpy": a host/cpu_ops.py graph; "onnx": an ONNX model
    kind: str = field(kw_only=True)
    ops: list[str] = field(default_factory=list, kw_only=True)  # CPU: its ONNX op types
    # "onnx": why the numpy executor cannot run it, one line per node (a board names them)
    unsupported: list[str] = field(default_factory=list, kw_only=True)


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
    # how a board script prepares images for the input (keys: board_scripts/), or None
    preprocess: dict | None = None
    origin: str | None = field(default=None, compare=False, repr=False)  # the file it came from

    @property
    def dram_size(self) -> int:
        return self.const_base + len(self.const)

    @property
    def label(self) -> str:
        """How error messages name the program: its file, or the model it was compiled from."""
        return self.origin or f"program compiled from {self.source}"

    def hwconfig(self) -> HwConfig:
        """The config the program was compiled for, rebuilt from the copy it carries (never
        looked up by name, so a program compiled for a custom .toml runs anywhere)."""
        return _carried_config(self.config, self.fingerprint, self.label)

    def value_type(self, name: str) -> ValueType | None:
        """The dtype and shape (batch 1) the header gives a value: a graph input or output, or
        a DPU tensor; None for a value only CPU subgraphs see."""
        for spec in (*self.inputs, *self.outputs):
            if spec.name == name:
                return spec.dtype, tuple(spec.shape)
        t = self.tensors.get(name)
        return (t.onnx_dtype, t.shape) if t else None

    def check_config(self, cfg: HwConfig) -> None:
        if cfg.fingerprint != self.fingerprint:
            raise ProgramError(
                f"program was compiled for hardware config '{self.config['name']}' "
                f"(fingerprint {self.fingerprint}) but the target is '{cfg.name}' "
                f"(fingerprint {cfg.fingerprint}); recompile with "
                f"`dpukit compile --config {cfg.name}`"
            )

    def to_bytes(self) -> bytes:
        """The program as a `.dpu` file holds it."""
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
                    "kind": sg.kind,
                    "ops": sg.ops,
                    "unsupported": sg.unsupported,
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
            "preprocess": self.preprocess,
        }
        head = json.dumps(header, sort_keys=True).encode()
        body = _FIXED.pack(MAGIC, FORMAT_VERSION, len(head)) + head + bytes(payload)
        return body + hashlib.sha256(body).digest()

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Program:
        """Read and check a `.dpu` file; anything wrong with it is a ProgramError naming it."""
        path = Path(path)
        if not path.exists():
            raise ProgramError(f"{path}: no such program file")
        if not path.is_file():
            raise ProgramError(f"{path}: not a regular file; give a .dpu program file")
        try:
            with path.open("rb") as f:
                fixed = f.read(_FIXED.size)
                # the magic first: a large file of another kind is refused without reading it
                if len(fixed) < _FIXED.size or fixed[:8] != MAGIC:
                    raise ProgramError(
                        f"{path}: not a dpukit program (bad magic); compile one with "
                        "`dpukit compile model.qdq.onnx`"
                    )
                rest = f.read()
        except OSError as exc:
            raise ProgramError(f"{path}: cannot read the program ({exc.strerror or exc})") from None
        _, version, head_len = _FIXED.unpack(fixed)
        if version != FORMAT_VERSION:
            raise ProgramError(
                f"{path}: program format version {version}; this dpukit reads "
                f"version {FORMAT_VERSION}: recompile the model"
            )
        body, digest = fixed + rest[:-_DIGEST], rest[-_DIGEST:]
        if len(rest) < _DIGEST or hashlib.sha256(body).digest() != digest:
            raise ProgramError(
                f"{path}: checksum mismatch: the file is corrupted or truncated; "
                "recompile the model"
            )
        head_end = _FIXED.size + head_len
        if head_end > len(body):
            raise ProgramError(f"{path}: header length {head_len} runs past the file; {_RECOMPILE}")
        try:
            header = json.loads(body[_FIXED.size : head_end])
        except RecursionError:
            raise ProgramError(f"{path}: header nests too deeply; {_RECOMPILE}") from None
        except ValueError as exc:
            raise ProgramError(f"{path}: header is not valid JSON ({exc}); {_RECOMPILE}") from None
        program = _Header(str(path)).program(header, body[head_end:])
        program.origin = str(path)
        return program


def _carried_config(config: object, fingerprint: object, where: str) -> HwConfig:
    """The HwConfig of a program's `config` dict, validated as a config file is, whose
    fingerprint must be the one the program claims."""
    try:
        cfg = config_from_dict(config, f"{where}: header field 'config'")
    except ConfigError as exc:
        raise ProgramError(f"{exc}; {_RECOMPILE}") from None
    if cfg.fingerprint != fingerprint:
        raise ProgramError(
            f"{where}: header fingerprint {fingerprint} is not that of its config "
            f"'{cfg.name}' ({cfg.fingerprint}); {_RECOMPILE}"
        )
    return cfg


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


_HEADER_KEYS = (
    "format_version", "config", "fingerprint", "source", "inputs", "outputs", "tensors",
    "dram_offsets", "const_base", "subgraphs", "sections", "preprocess",
)  # fmt: skip
_TENSOR_KEYS = ("shape", "scale", "zero_point", "onnx_dtype", "hwc", "flatten_of", "layout")
_SPEC_KEYS = tuple(f.name for f in fields(TensorSpec))
_SUBGRAPH_KEYS = (
    "name", "device", "kind", "ops", "unsupported", "inputs", "outputs", "layers", "section"
)  # fmt: skip
_KINDS = {"DPU": ("dpu",), "CPU": ("numpy", "onnx")}
# a DPU layer's statistics are codegen's LayerStats, as `asdict` writes them
_LAYER_TYPES = typing.get_type_hints(LayerStats)
# A value as a subgraph or the user sees it: numpy dtype name, and shape (None: unknown).
ValueType = tuple[str, tuple[int | None, ...] | None]


class _Header:
    """Builds a Program from a parsed header and the payload, checking every field; an
    error names the file and the field (`subgraphs[1].layers[0].num_instrs`)."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, problem: str) -> NoReturn:
        raise ProgramError(f"{self.where}: {problem}; {_RECOMPILE}")

    # -- typed fields --------------------------------------------------------------------
    def table(
        self, value: object, name: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict:
        """A JSON object with exactly `keys`, of which `optional` may be left out."""
        what = "the header" if name == "header" else f"header field '{name}'"
        if not isinstance(value, dict):
            self.fail(f"{what} must be an object")
        missing = [k for k in keys if k not in value and k not in optional]
        if missing:
            self.fail(f"{what} lacks {', '.join(missing)}")
        unknown = sorted(value.keys() - set(keys))
        if unknown:
            self.fail(f"{what} has unknown key(s) {', '.join(unknown)}")
        return value

    def mapping(self, value: object, name: str) -> dict:
        if not isinstance(value, dict):
            self.fail(f"header field '{name}' must be an object")
        return value

    def items(self, value: object, name: str) -> list:
        if not isinstance(value, list):
            self.fail(f"header field '{name}' must be a list")
        return value

    def count(self, value: object, name: str, lo: int = 0, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"header field '{name}' must be an integer")
        if value < lo or (hi is not None and value > hi):
            bound = f">= {lo}" if hi is None else str(lo) if lo == hi else f"{lo}..{hi}"
            self.fail(f"header field '{name}' is {value}, must be {bound}")
        return value

    def text(self, value: object, name: str) -> str:
        if not isinstance(value, str) or not value:
            self.fail(f"header field '{name}' must be a non-empty string")
        return value

    def names(self, value: object, name: str) -> list[str]:
        """A list of distinct tensor names."""
        items = [self.text(v, f"{name}[{i}]") for i, v in enumerate(self.items(value, name))]
        if len(set(items)) != len(items):
            self.fail(f"header field '{name}' names a tensor twice")
        return items

    def dims(self, value: object, name: str, rank: int | None = None) -> tuple[int, ...]:
        items = self.items(value, name)
        if not items or (rank is not None and len(items) != rank):
            count = f"{rank} dimensions" if rank else "at least one dimension"
            self.fail(f"header field '{name}' must list {count}")
        return tuple(self.count(v, f"{name}[{i}]", lo=1) for i, v in enumerate(items))

    # -- records -------------------------------------------------------------------------
    def spec(self, value: object, name: str) -> TensorSpec:
        d = self.table(value, name, _SPEC_KEYS)
        dtype = self.text(d["dtype"], f"{name}.dtype")
        try:
            numeric = np.dtype(dtype).name == dtype and np.dtype(dtype).kind in "biuf"
        except TypeError:
            numeric = False
        if not numeric:
            self.fail(f"header field '{name}.dtype' is {dtype!r}, not a numeric numpy dtype")
        return TensorSpec(
            self.text(d["name"], f"{name}.name"),
            list(self.dims(d["shape"], f"{name}.shape")),
            dtype,
        )

    def tensor(self, tname: str, value: object) -> QTensor:
        name = f"tensors.{tname}"
        d = self.table(value, name, _TENSOR_KEYS)
        shape = self.dims(d["shape"], f"{name}.shape")
        hwc = self.dims(d["hwc"], f"{name}.hwc", rank=3)
        flat = (
            None if d["flatten_of"] is None else self.dims(d["flatten_of"], f"{name}.flatten_of", 3)
        )
        scale = d["scale"]
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not 0 < scale < math.inf
        ):
            self.fail(f"header field '{name}.scale' must be a positive finite number")
        dtype = d["onnx_dtype"]
        if dtype not in ("int8", "uint8"):
            self.fail(f"header field '{name}.onnx_dtype' must be int8 or uint8")
        if d["layout"] != "HWC":
            self.fail(f"header field '{name}.layout' must be HWC")
        zp = self.count(d["zero_point"], f"{name}.zero_point", -128, 127)  # int8 domain
        t = QTensor(tname, shape, float(scale), zp, dtype, hwc, flat)
        h, w, c = hwc
        # host/layout.py reshapes between these views of the same bytes
        if math.prod(shape) != t.nbytes or (flat and math.prod(flat) != t.nbytes):
            self.fail(f"tensor '{tname}': shape {list(shape)} and hwc {list(hwc)} differ in size")
        if len(shape) == 4 and not flat and shape != (1, c, h, w):
            self.fail(f"tensor '{tname}': shape {list(shape)} is not hwc {list(hwc)} as NCHW")
        return t

    def sections(self, value: object, payload_size: int) -> dict[str, tuple[int, int]]:
        """name -> (offset, size); the sections tile the payload exactly, as `save` writes."""
        spans = {}
        for sname, span in self.mapping(value, "sections").items():
            where = f"sections.{sname}"
            pair = self.items(span, where)
            if len(pair) != 2:
                self.fail(f"header field '{where}' must be [offset, size]")
            spans[sname] = (self.count(pair[0], f"{where}[0]"), self.count(pair[1], f"{where}[1]"))
        end = 0
        for sname, (off, size) in sorted(spans.items(), key=lambda kv: kv[1]):
            if off != end:
                gap = (
                    "overlaps the one before" if off < end else f"leaves bytes {end}..{off} unused"
                )
                self.fail(f"payload section '{sname}' at {off} {gap}")
            end = off + size
        if end != payload_size:
            self.fail(f"the payload sections end at {end}, the payload at {payload_size}")
        return spans

    def layers(self, value: object, name: str, n_instrs: int) -> list[dict]:
        out = []
        for i, layer in enumerate(self.items(value, name)):
            where = f"{name}[{i}]"
            d = self.table(layer, where, tuple(_LAYER_TYPES))
            for key, hint in _LAYER_TYPES.items():
                if not _matches(d[key], hint):
                    self.fail(f"header field '{where}.{key}' must be {_hint_name(hint)}")
            first, count = d["first_instr"], d["num_instrs"]
            if first + count > n_instrs:
                self.fail(
                    f"layer '{d['name']}' ({where}) spans instructions {first}.."
                    f"{first + count - 1} of a stream of {n_instrs}"
                )
            out.append(d)
        return out

    def subgraph(self, value: object, name: str, payloads: dict[str, bytes]) -> Subgraph:
        d = self.table(value, name, _SUBGRAPH_KEYS)
        sg_name = self.text(d["name"], f"{name}.name")
        device = d["device"]
        if device not in _KINDS:
            self.fail(f"header field '{name}.device' must be DPU or CPU")
        kind = d["kind"]
        if kind not in _KINDS[device]:
            kinds = " or ".join(_KINDS[device])
            self.fail(f"header field '{name}.kind' of a {device} subgraph must be {kinds}")
        ops = [
            self.text(v, f"{name}.ops[{i}]")
            for i, v in enumerate(self.items(d["ops"], f"{name}.ops"))
        ]
        if len(set(ops)) != len(ops):
            self.fail(f"header field '{name}.ops' lists an op twice")
        unsupported = [
            self.text(v, f"{name}.unsupported[{i}]")
            for i, v in enumerate(self.items(d["unsupported"], f"{name}.unsupported"))
        ]
        if bool(ops) != (device == "CPU"):
            self.fail(f"header field '{name}.ops' must list the ops of a CPU subgraph only")
        if bool(unsupported) != (kind == "onnx"):
            self.fail(
                f"header field '{name}.unsupported' must say why the numpy executor cannot run "
                "an onnx subgraph, and only that"
            )
        section = self.text(d["section"], f"{name}.section")
        if section not in payloads:
            self.fail(
                f"subgraph '{sg_name}' names payload section '{section}', which is missing "
                "or another subgraph's"
            )
        payload = payloads.pop(section)  # each section belongs to one user
        inputs, outputs = (
            self.names(d["inputs"], f"{name}.inputs"),
            self.names(d["outputs"], f"{name}.outputs"),
        )
        if device == "DPU":
            if not payload or len(payload) % INSTR_BYTES:
                self.fail(
                    f"DPU subgraph '{sg_name}': {len(payload)} bytes of instructions, not a "
                    f"positive multiple of {INSTR_BYTES}"
                )
            layers = self.layers(d["layers"], f"{name}.layers", len(payload) // INSTR_BYTES)
        else:
            if self.items(d["layers"], f"{name}.layers"):
                self.fail(f"CPU subgraph '{sg_name}' lists DPU layers")
            layers = []
        if kind == "numpy":
            self.numpy_graph(sg_name, payload, ops)
        return Subgraph(
            sg_name, device, inputs, outputs, payload, layers,
            kind=kind, ops=ops, unsupported=unsupported,
        )  # fmt: skip

    def numpy_graph(self, sg_name: str, payload: bytes, ops: list[str]) -> None:
        """A numpy subgraph's payload is a well-formed graph of the ops the header lists."""
        try:
            graph = cpu_ops.decode(payload)
        except cpu_ops.FormatError as exc:
            self.fail(f"CPU subgraph '{sg_name}': its numpy graph is damaged: {exc}")
        if graph.ops() != ops:
            self.fail(
                f"CPU subgraph '{sg_name}': the header lists ops {', '.join(ops)}; its graph "
                f"holds {', '.join(graph.ops())}"
            )

    def preprocess(self, value: object) -> dict | None:
        problem = preprocess_problem(value)
        if problem:
            self.fail(f"header field 'preprocess' {problem}")
        return value

    # -- the whole program ---------------------------------------------------------------
    def program(self, header: object, payload: bytes) -> Program:
        h = self.table(header, "header", _HEADER_KEYS, optional=("preprocess",))
        self.count(h["format_version"], "format_version", FORMAT_VERSION, FORMAT_VERSION)
        cfg = _carried_config(h["config"], h["fingerprint"], self.where)
        inputs = [
            self.spec(t, f"inputs[{i}]") for i, t in enumerate(self.items(h["inputs"], "inputs"))
        ]
        outputs = [
            self.spec(t, f"outputs[{i}]") for i, t in enumerate(self.items(h["outputs"], "outputs"))
        ]
        for what, specs in (("inputs", inputs), ("outputs", outputs)):
            names = [s.name for s in specs]
            if not names or len(set(names)) != len(names):
                self.fail(f"header field '{what}' must name distinct tensors, at least one")
        tensors = {n: self.tensor(n, t) for n, t in self.mapping(h["tensors"], "tensors").items()}
        offsets = {
            n: self.count(off, f"dram_offsets.{n}")
            for n, off in self.mapping(h["dram_offsets"], "dram_offsets").items()
        }
        if offsets.keys() != tensors.keys():
            odd = sorted(offsets.keys() ^ tensors.keys())
            self.fail(f"tensors and dram_offsets list different names ({', '.join(odd)})")
        spans = self.sections(h["sections"], len(payload))
        payloads = {n: payload[off : off + size] for n, (off, size) in spans.items()}
        if "const" not in payloads:
            self.fail("no payload section 'const'")
        const = payloads.pop("const")
        subgraphs = [
            self.subgraph(s, f"subgraphs[{k}]", payloads)
            for k, s in enumerate(self.items(h["subgraphs"], "subgraphs"))
        ]
        if payloads:
            self.fail(f"payload section(s) {', '.join(sorted(payloads))} belong to no subgraph")
        const_base = self.count(h["const_base"], "const_base")
        self.window(cfg, tensors, offsets, const_base, len(const))
        program = Program(
            config=h["config"],
            fingerprint=h["fingerprint"],
            source=self.text(h["source"], "source"),
            inputs=inputs,
            outputs=outputs,
            tensors=tensors,
            dram_offsets=offsets,
            const_base=const_base,
            const=const,
            subgraphs=subgraphs,
            preprocess=self.preprocess(h.get("preprocess")),
        )
        self.dataflow(program)
        return program

    def window(self, cfg: HwConfig, tensors, offsets, const_base: int, const_size: int) -> None:
        """Tensors at ALIGN boundaries below the constants, the constants where codegen puts
        them, and the whole data window addressable by the config's AXI bus."""
        for name, t in tensors.items():
            off = offsets[name]
            if off % ALIGN or off + t.nbytes > const_base:
                self.fail(
                    f"tensor '{name}' at DRAM offset {off} ({t.nbytes} bytes) must lie below "
                    f"the constants at {const_base}, at a multiple of {ALIGN}"
                )
        expected = constants_start([offsets[n] + t.nbytes for n, t in tensors.items()])
        if const_base != expected:
            self.fail(f"const_base is {const_base}; the tensors put the constants at {expected}")
        if const_base + const_size > 1 << cfg.axi_addr_bits:
            self.fail(
                f"the data window ({const_base + const_size} bytes) exceeds the "
                f"{cfg.axi_addr_bits}-bit address space of config '{cfg.name}'"
            )

    def dataflow(self, p: Program) -> None:
        """Every name a subgraph reads is a graph input or an earlier subgraph's output, DPU
        subgraphs use only DPU tensors, and every graph output is produced. A value the header
        types twice (a graph input or output that is also a DPU tensor) has one type. What CPU
        subgraphs declare is checked against `value_type` when the Runner loads them."""
        known = {s.name for s in p.inputs}
        for sg in p.subgraphs:
            for name in sg.inputs:
                if name not in known:
                    self.fail(
                        f"subgraph '{sg.name}' reads '{name}', which no graph input or earlier "
                        "subgraph provides"
                    )
            for name in sg.outputs:
                if name in known:
                    self.fail(f"subgraph '{sg.name}' writes '{name}', which is already written")
                known.add(name)
            unknown = [n for n in (*sg.inputs, *sg.outputs) if n not in p.tensors]
            if sg.device == "DPU" and unknown:
                self.fail(
                    f"DPU subgraph '{sg.name}' uses tensor '{unknown[0]}', which is not in "
                    "'tensors'"
                )
        for s in p.outputs:
            if s.name not in known:
                self.fail(f"graph output '{s.name}' is produced by no subgraph")
        for s in (*p.inputs, *p.outputs):
            t = p.tensors.get(s.name)
            if t and not same_value_type((s.dtype, tuple(s.shape)), (t.onnx_dtype, t.shape)):
                self.fail(
                    f"graph input/output '{s.name}' is declared {s.dtype} {s.shape} but its "
                    f"DPU tensor is {t.onnx_dtype} {list(t.shape)}"
                )


def preprocess_problem(value: object) -> str | None:
    """What is wrong with a preprocessing description (None if nothing): it is null or an
    object whose values are JSON scalars (finite numbers) or lists of them."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "must be an object (or null)"
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            return "must have non-empty strings as keys"
        for v in item if isinstance(item, list) else [item]:
            if not (
                v is None
                or isinstance(v, str | bool | int)
                or (isinstance(v, float) and math.isfinite(v))
            ):
                return (
                    f"'{key}' must be a string, finite number, boolean or null, or a list of them"
                )
    return None


def same_value_type(a: ValueType, b: ValueType) -> bool:
    """Equal dtypes, and equal shapes where both are known (a symbolic ONNX dim is None)."""
    (da, sa), (db, sb) = a, b
    if da != db:
        return False
    if sa is None or sb is None:
        return True
    return len(sa) == len(sb) and all(
        x is None or y is None or x == y for x, y in zip(sa, sb, strict=True)
    )


def _matches(value: object, hint) -> bool:
    """`value` as JSON gives it has the type of a LayerStats field (ints are counts: >= 0)."""
    if typing.get_origin(hint) is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _matches(k, key) and _matches(v, item) for k, v in value.items()
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return isinstance(value, hint)


def _hint_name(hint) -> str:
    if typing.get_origin(hint) is dict:
        return "an object of counts"
    return {int: "a count (integer >= 0)", str: "a string"}[hint]
