"""The energy model: what a model or a program costs in joules. Modeled, always labelled so.

Two levels over one table of energy per event (compiler/energy_tables/*.toml, every entry
with its unit and source):

- Network level (seed 001), hardware-independent, on any ONNX model, float or QDQ: each
  weighted layer (Conv, ConvTranspose, Gemm, MatMul) costs its MACs x E_mac; its weights
  are read once from DRAM and once from SRAM; every activation a weighted layer reads, and
  every network output, is written once to SRAM and read once. Seed 001's convention,
  worked out from its LeNet-5 "Original" row (docs/energy.md): weights without biases;
  the activations are the tensors fed to weighted layers (after pooling and activation
  functions) plus the output; pooling and activation functions cost nothing.
- DPU level: the activity of a program (the cycle model's, or the RTL's counters) x the
  target's energy per event: array MACs, bits read and written in each on-chip buffer,
  bits moved over the DRAM bus (instruction fetch included), cycles of control logic, and
  static power over the run's time.

Sub-byte weights by bit-packing (seed 002, as its Timeloop extension counts them): b-bit
elements are packed whole into w-bit words, floor(w / b) per word, so n of them take
ceil(n / floor(w / b)) words at every memory level they are moved or stored in (network
level: each weight tensor in whole words; DPU level: each WGT entry in whole words, and the
weights loaded over the bus at w / floor(w / b) bits each, so layers add up); MAC energy and
energy per access are unchanged.

Calibration: given measured dynamic energies of programs with different activity mixes,
`calibrate` fits the per-event energies by non-negative least squares.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from dpukit.compiler.hwconfig import SAFE_NAME
from dpukit.errors import EnergyTableError

# Every entry a table has, with its unit. pJ per MAC; pJ per bit moved; pJ per DPU cycle; W.
ENTRY_UNITS = {
    "mac_fp32": "pJ",
    "mac_int16": "pJ",
    "mac_int8": "pJ",
    "sram_read": "pJ/bit",
    "sram_write": "pJ/bit",
    "dram": "pJ/bit",
    "logic": "pJ/cycle",
    "static": "W",
}
_TO_JOULES = {"pJ": 1e-12, "pJ/bit": 1e-12, "pJ/cycle": 1e-12, "W": 1.0}  # x seconds for W
CATEGORIES = ("mac", "sram_weights", "sram_activations", "dram", "logic", "static")
WEIGHT_BITS = (2, 4, 6, 8, 16)  # the widths bit-packing is modeled for
DEFAULT_TABLE = "horowitz45"


# -- tables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    value: float
    unit: str
    source: str


@dataclass(frozen=True)
class EnergyTable:
    name: str
    title: str
    calibrated: bool
    word_bits: int  # one on-chip memory word: sub-byte elements are packed into it
    entries: dict[str, Entry]
    origin: str = ""  # the file it came from

    def joules(self, key: str) -> float:
        """The energy of one event of `key` in J (J per second of run time for static)."""
        return self.entries[key].value * _TO_JOULES[ENTRY_UNITS[key]]

    @property
    def label(self) -> str:
        return f"{self.name}, {'calibrated' if self.calibrated else 'uncalibrated'}"


def table_dir() -> Path:
    return Path(str(resources.files("dpukit.compiler") / "energy_tables"))


def available_tables() -> list[str]:
    return sorted(p.stem for p in table_dir().glob("*.toml"))


def load_table(name_or_path: str | Path = DEFAULT_TABLE) -> EnergyTable:
    """A table by name (a file in energy_tables/) or a path to a .toml file."""
    text = str(name_or_path)
    if text.endswith(".toml"):
        path = Path(text)
        if not path.is_file():
            raise EnergyTableError(f"{path}: no such energy table file")
    else:
        if not SAFE_NAME.fullmatch(text) or not (table_dir() / f"{text}.toml").is_file():
            raise EnergyTableError(
                f"unknown energy table '{text}'; available: {', '.join(available_tables())} "
                "(or a path to a .toml table)"
            )
        path = table_dir() / f"{text}.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EnergyTableError(f"{path}: not a readable TOML energy table: {exc}") from None
    return _table_from(raw, str(path))


def _table_from(raw: dict, where: str) -> EnergyTable:
    def need(ok: bool, problem: str) -> None:
        if not ok:
            raise EnergyTableError(f"{where}: {problem}")

    unknown = set(raw) - {"name", "title", "calibrated", "word_bits", "energy"}
    need(not unknown, f"unknown keys {sorted(unknown)}")
    need(isinstance(raw.get("name"), str) and bool(raw["name"]), "'name' must be a string")
    need(isinstance(raw.get("title", ""), str), "'title' must be a string")
    need(isinstance(raw.get("calibrated"), bool), "'calibrated' must be true or false")
    wb = raw.get("word_bits")
    need(type(wb) is int and 8 <= wb <= 4096, "'word_bits' must be an integer in [8, 4096]")
    energy = raw.get("energy")
    need(isinstance(energy, dict), "no [energy.*] entries")
    entries = {}
    for key, unit in ENTRY_UNITS.items():
        e = energy.get(key)
        need(isinstance(e, dict), f"no [energy.{key}] entry ({unit})")
        need(set(e) == {"value", "unit", "source"}, f"[energy.{key}] needs value, unit, source")
        v = e["value"]
        need(
            type(v) in (int, float) and math.isfinite(v) and v >= 0,
            f"[energy.{key}] value must be a finite number >= 0, not {v!r}",
        )
        need(e["unit"] == unit, f"[energy.{key}] unit must be '{unit}', not {e['unit']!r}")
        need(
            isinstance(e["source"], str) and e["source"].strip() != "",
            f"[energy.{key}] needs a source",
        )
        entries[key] = Entry(float(v), unit, " ".join(e["source"].split()))
    extra = set(energy) - set(ENTRY_UNITS)
    need(not extra, f"unknown entries {sorted(extra)}; known: {', '.join(ENTRY_UNITS)}")
    return EnergyTable(raw["name"], raw.get("title", ""), raw["calibrated"], wb, entries, where)


def table_for_part(fpga_part: str) -> str:
    """The table for an FPGA part (xc7z020clg400-1 -> xc7z020), or the technology table."""
    for name in available_tables():
        if fpga_part.lower().startswith(name):
            return name
    return DEFAULT_TABLE


def write_table(table: EnergyTable, path: str | Path) -> None:
    """Write a table as TOML that `load_table` reads back."""
    try:
        Path(path).write_text(table_toml(table), encoding="utf-8")
    except OSError as exc:
        raise EnergyTableError(f"{path}: cannot write the energy table: {exc.strerror}") from None


def table_toml(table: EnergyTable) -> str:
    """A table as TOML text that `load_table` reads back."""
    lines = [
        f"# Energy table {table.name}: written by dpukit"
        + (" (calibrated)" if table.calibrated else ""),
        f"name = {_toml_str(table.name)}",
        f"title = {_toml_str(table.title)}",
        f"calibrated = {'true' if table.calibrated else 'false'}",
        f"word_bits = {table.word_bits}",
    ]
    for key, e in table.entries.items():
        lines += ["", f"[energy.{key}]", f"value = {e.value!r}", f"unit = {_toml_str(e.unit)}",
                  f"source = {_toml_str(e.source)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _toml_str(s: str) -> str:
    # A JSON string is a TOML basic string: the same escapes (\\, \", \n, \uXXXX).
    return json.dumps(s, ensure_ascii=False)


# -- counting ------------------------------------------------------------------------------


def packed_words(n: int, bits: int, word_bits: int) -> int:
    """Words holding n elements of `bits` each, packed whole: floor(word_bits / bits) a word
    (an element wider than a word takes ceil(bits / word_bits) words)."""
    if bits > word_bits:
        return n * -(-bits // word_bits)
    return -(-n // (word_bits // bits))


def packed_bits(n: int, bits: int, word_bits: int) -> int:
    """Bits moved or stored for n packed elements: whole words."""
    return packed_words(n, bits, word_bits) * word_bits


def mac_key(bits: int) -> str:
    """The table entry a MAC on operands of `bits` is charged: 32-bit float, or integer."""
    return "mac_fp32" if bits > 16 else "mac_int16" if bits > 8 else "mac_int8"


@dataclass
class Energy:
    """Joules by category (modeled)."""

    mac: float = 0.0
    sram_weights: float = 0.0
    sram_activations: float = 0.0
    dram: float = 0.0
    logic: float = 0.0
    static: float = 0.0

    @property
    def total(self) -> float:
        return sum(getattr(self, c) for c in CATEGORIES)

    def add(self, other: Energy) -> None:
        for c in CATEGORIES:
            setattr(self, c, getattr(self, c) + getattr(other, c))

    def scaled(self, k: float) -> Energy:
        return Energy(*(getattr(self, c) * k for c in CATEGORIES))

    def as_dict(self) -> dict[str, float]:
        return {**{c: getattr(self, c) for c in CATEGORIES}, "total": self.total}


@dataclass
class Events:
    """Counts of what a layer or program did, by (category, table entry)."""

    counts: dict[tuple[str, str], float] = field(default_factory=dict)

    def add(self, category: str, key: str, n: float) -> None:
        if n:
            self.counts[(category, key)] = self.counts.get((category, key), 0) + n

    def merge(self, other: Events) -> None:
        for (c, k), n in other.counts.items():
            self.add(c, k, n)

    def by_entry(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (_, k), n in self.counts.items():
            out[k] = out.get(k, 0) + n
        return out

    def energy(self, table: EnergyTable) -> Energy:
        e = Energy()
        for (c, k), n in self.counts.items():
            setattr(e, c, getattr(e, c) + n * table.joules(k))
        return e


@dataclass
class LayerEnergy:
    name: str
    kind: str
    events: Events
    energy: Energy
    macs: int = 0


@dataclass
class EnergyReport:
    """Per-layer and total modeled energy of one inference."""

    level: str  # "network" or "dpu"
    source: str  # the model or program
    table: EnergyTable
    weight_bits: int | None  # None: the model's own
    layers: list[LayerEnergy]
    total: Energy
    seconds: float | None = None  # the DPU's modeled run time (DPU level)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON form: joules, labelled modeled."""
        return {
            "kind": "modeled",
            "level": self.level,
            "source": self.source,
            "table": self.table.name,
            "table_calibrated": self.table.calibrated,
            "table_file": self.table.origin,
            "weight_bits": self.weight_bits,
            "unit": "J per inference",
            "total": self.total.as_dict(),
            "seconds": self.seconds,
            "average_power_w": self.total.total / self.seconds if self.seconds else None,
            "layers": [
                {"name": la.name, "kind": la.kind, "macs": la.macs, **la.energy.as_dict()}
                for la in self.layers
            ],
            "events": _events_json(self.layers),
            "notes": self.notes,
        }


def _events_json(layers: Sequence[LayerEnergy]) -> dict[str, float]:
    total = Events()
    for la in layers:
        total.merge(la.events)
    return {f"{c}.{k}": n for (c, k), n in sorted(total.counts.items())}


def _report(level, source, table, weight_bits, layers, seconds=None, notes=()) -> EnergyReport:
    total = Energy()
    for la in layers:
        total.add(la.energy)
    return EnergyReport(level, source, table, weight_bits, layers, total, seconds, list(notes))


def _check_bits(weight_bits: int | None) -> None:
    if weight_bits is not None and weight_bits not in WEIGHT_BITS:
        raise EnergyTableError(
            f"weight bits {weight_bits}: bit-packing is modeled for "
            f"{', '.join(map(str, WEIGHT_BITS))} bits"
        )


# -- network level (seed 001) --------------------------------------------------------------

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def network_energy(
    model,
    table: EnergyTable | str = DEFAULT_TABLE,
    *,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> EnergyReport:
    """Seed 001's energy of one inference of an ONNX model (a path or a ModelProto), float
    or QDQ, at its own bit widths unless `weight_bits`/`activation_bits` replace them."""
    from dpukit.compiler import frontend

    _check_bits(weight_bits)
    table = load_table(table) if isinstance(table, str | Path) else table
    proto, where = frontend.read_onnx(model)
    frontend.check_onnx(proto, where)
    proto = frontend.check_shapes(frontend.fix_input_shapes(proto, where, input_shapes), where)
    graph = _NetGraph(proto, where)
    layers: list[LayerEnergy] = []
    counted: set[str] = set()  # activations already charged (a tensor read by two layers)
    w = table.word_bits
    for node in proto.graph.node:
        if node.op_type not in _WEIGHTED:
            continue
        x = node.input[0]
        xbits = activation_bits or graph.bits(x)
        macs = graph.macs(node)
        ev = Events()
        ev.add("mac", mac_key(xbits), macs)
        for name in graph.weights(node):
            n = graph.elements(name)
            bits = packed_bits(n, weight_bits or graph.bits(name), w)
            ev.add("sram_weights", "sram_read", bits)
            ev.add("dram", "dram", bits)
        # Operands computed at run time (the data input; a MatMul's second operand, a
        # weight fed as a graph input) are activations: written and read once in SRAM.
        operands = [n for n in node.input[:2] if n and not graph.is_const(n)]
        for name in operands:
            if graph.stored(name) not in counted:
                counted.add(graph.stored(name))
                bits = packed_bits(graph.elements(name), activation_bits or graph.bits(name), w)
                ev.add("sram_activations", "sram_write", bits)
                ev.add("sram_activations", "sram_read", bits)
        layers.append(
            LayerEnergy(node.name or node.output[0], node.op_type, ev, ev.energy(table), macs)
        )
    if not layers:
        raise EnergyTableError(
            f"{where}: no Conv, ConvTranspose, Gemm or MatMul: nothing the network-level "
            "model charges"
        )
    out = Events()
    for o in proto.graph.output:
        if graph.stored(o.name) not in counted:
            counted.add(graph.stored(o.name))
            bits = packed_bits(graph.elements(o.name), activation_bits or graph.bits(o.name), w)
            out.add("sram_activations", "sram_write", bits)
            out.add("sram_activations", "sram_read", bits)
    if out.counts:
        layers.append(LayerEnergy("(network outputs)", "output", out, out.energy(table)))
    notes = [
        "network level (seed 001): weights read once from DRAM and SRAM, activations "
        "written and read once in SRAM, biases and non-weighted ops not charged"
    ]
    unpriced = sorted({n.op_type for n in proto.graph.node if n.op_type in _UNPRICED})
    if unpriced:
        notes.append(
            f"not charged: {', '.join(unpriced)} (multiply-accumulate ops this model does not "
            "price; quantize to QDQ for a model it prices fully)"
        )
    return _report("network", where, table, weight_bits, layers, notes=notes)


# Ops that multiply and accumulate but that the network level does not price.
_UNPRICED = frozenset(
    ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "Einsum", "LSTM", "GRU",
     "RNN", "Attention")
)  # fmt: skip


class _NetGraph:
    """Shapes, bit widths and constants of a shape-inferred ONNX graph, looking through
    DequantizeLinear to the stored (quantized) tensor."""

    _BITS = {
        "FLOAT": 32, "FLOAT16": 16, "BFLOAT16": 16, "DOUBLE": 64, "INT8": 8, "UINT8": 8,
        "INT16": 16, "UINT16": 16, "INT32": 32, "UINT32": 32, "INT64": 64, "INT4": 4,
        "UINT4": 4, "FLOAT8E4M3FN": 8, "FLOAT8E5M2": 8,
    }  # fmt: skip

    def __init__(self, proto, where: str):
        import onnx

        from dpukit.compiler.frontend import value_types

        self.where = where
        g = proto.graph
        self.producer = {o: n for n in g.node for o in n.output}
        self.inits = {t.name for t in g.initializer}
        self.types = value_types(proto)
        self._name = onnx.TensorProto.DataType.Name

    def stored(self, name: str) -> str:
        """The tensor that holds `name` in memory: a DequantizeLinear's quantized input."""
        node = self.producer.get(name)
        return node.input[0] if node is not None and node.op_type == "DequantizeLinear" else name

    def bits(self, name: str) -> int:
        elem = self.types.get(self.stored(name), (0, ()))[0]
        bits = self._BITS.get(self._name(elem) if elem else "", 0)
        if not bits:
            raise EnergyTableError(f"{self.where}: tensor '{name}' has no known element type")
        return bits

    def dims(self, name: str) -> tuple[int, ...]:
        dims = self.types.get(name, (0, None))[1]
        if dims is None or any(d is None for d in dims):
            raise EnergyTableError(
                f"{self.where}: the shape of tensor '{name}' cannot be inferred; give fixed "
                "input shapes (--input-shape)"
            )
        return dims

    def elements(self, name: str) -> int:
        return math.prod(self.dims(name))

    def is_const(self, name: str) -> bool:
        s = self.stored(name)
        return s in self.inits or (s in self.producer and self.producer[s].op_type == "Constant")

    def weights(self, node) -> list[str]:
        """The constant operands that are weights (a bias is not: seed 001 charges none)."""
        operands = (
            node.input[:2] if node.op_type in ("Conv", "ConvTranspose", "Gemm") else node.input
        )
        return [n for n in operands[1:] if n and self.is_const(n)] + (
            [node.input[0]]
            if node.op_type in ("Gemm", "MatMul") and self.is_const(node.input[0])
            else []
        )

    def macs(self, node) -> int:
        out = self.dims(node.output[0])
        if node.op_type in ("Conv", "ConvTranspose"):
            w = self.dims(node.input[1])  # [M, C/group, k...] (ConvTranspose: [C, M/group, k...])
            if node.op_type == "Conv":
                return math.prod(out) * math.prod(w[1:])
            return math.prod(self.dims(node.input[0])) * math.prod(w[1:])
        a = self.dims(node.input[0])
        if node.op_type == "Gemm":
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[0] if trans_a else a[-1]
        else:
            k = a[-1]
        return math.prod(out) * k


# -- DPU level -----------------------------------------------------------------------------


# The RTL keeps ACC twice (hw/rtl/dpu_top.sv: u_acc_a, u_acc_b, one per read port) and
# writes every entry to both: one ACC write the activity counts is two physical writes.
ACC_COPIES = 2


def dpu_events(act, cfg, table: EnergyTable, weight_bits: int | None = None) -> Events:
    """What an Activity (compiler.golden) did, as events the table prices. Weights narrower
    or wider than the DPU's operands are modeled by bit-packing the WGT buffer's entries and
    the weight bytes loaded from DRAM; MACs are unchanged (seed 002's convention)."""
    from dpukit.compiler.isa import INSTR_BYTES

    _check_bits(weight_bits)
    native = cfg.operand_bits
    wb = weight_bits or native
    ev = Events()
    ev.add("mac", mac_key(native), act.macs)
    lanes = cfg.rows * cfg.cols
    wgt_entry = packed_bits(lanes, wb, table.word_bits) if wb != native else lanes * native
    width = {
        "inp": cfg.inp_entry_bytes * 8,
        "wgt": wgt_entry,
        "acc": cfg.acc_entry_bytes * 8,
        "out": cfg.out_entry_bytes * 8,
        "par": cfg.par_entry_bytes * 8,
    }
    for buf, bits in width.items():
        category = "sram_weights" if buf in ("wgt", "par") else "sram_activations"
        copies = ACC_COPIES if buf == "acc" else 1
        ev.add(category, "sram_read", act.buffer_reads.get(buf, 0) * bits)
        ev.add(category, "sram_write", act.buffer_writes.get(buf, 0) * bits * copies)
    bus = cfg.axi_data_bits
    dram = (act.dram_read_beats + act.dram_write_beats) * bus
    dram += sum(act.instructions.values()) * max(INSTR_BYTES * 8, bus)  # instruction fetch
    if wb != native:
        # Weight elements LOADed into WGT, packed floor(bus / wb) to a bus word: counted per
        # element (bus / floor(bus / wb) bits each), so layers add up to their program.
        weights = act.buffer_writes.get("wgt", 0) * lanes
        dram += weights * (bus / (bus // wb) - native)
    ev.add("dram", "dram", dram)
    ev.add("logic", "logic", act.cycles)
    ev.add("static", "static", act.cycles / (cfg.clock_mhz * 1e6))
    return ev


def activity_energy(act, cfg, table: EnergyTable, weight_bits: int | None = None) -> Energy:
    """Modeled energy of an Activity on `cfg`, in J."""
    return dpu_events(act, cfg, table, weight_bits).energy(table)


@dataclass
class InferenceEnergy:
    """The DPU-level model over a run's summed activity, per inference."""

    table: EnergyTable
    total: Energy  # J per inference
    seconds: float  # the DPU's time per inference
    events: dict[str, float]  # per inference, by table entry: what `calibrate` fits

    @property
    def average_w(self) -> float:
        return self.total.total / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "kind": "modeled",
            "level": "dpu",
            "table": self.table.name,
            "table_calibrated": self.table.calibrated,
            "unit": "J per inference",
            **self.total.as_dict(),
            "average_power_w": self.average_w,
            "events_per_inference": self.events,
        }


def per_inference(act, images: int, cfg, table: EnergyTable | None = None) -> InferenceEnergy:
    """Energy per inference of the activity of `images` inferences, with the table of the
    config's part unless another is given."""
    table = table or load_table(table_for_part(cfg.fpga_part))
    per = 1 / max(images, 1)
    events = dpu_events(act, cfg, table)
    total = events.energy(table).scaled(per)
    per_entry = {k: n * per for k, n in events.by_entry().items()}
    return InferenceEnergy(table, total, act.cycles * per / (cfg.clock_mhz * 1e6), per_entry)


def program_energy(
    program,
    table: EnergyTable | str | None = None,
    *,
    weight_bits: int | None = None,
    cfg=None,
) -> EnergyReport:
    """Per-layer and total DPU-level energy of one inference of a Program (or .dpu path) on
    its hardware config; the table defaults to the config's part."""
    from dpukit.compiler.golden import stream_activity
    from dpukit.compiler.program import Program

    if not isinstance(program, Program):
        program = Program.load(program)
    cfg = cfg or program.hwconfig()
    program.check_config(cfg)
    if table is None:
        table = table_for_part(cfg.fpga_part)
    table = load_table(table) if isinstance(table, str | Path) else table
    layers: list[LayerEnergy] = []
    cycles = 0
    for sg in program.subgraphs:
        if sg.device != "DPU":
            continue
        ranges = [(la["first_instr"], la["num_instrs"]) for la in sg.layers]
        whole, per_layer = stream_activity(cfg, sg.payload, program.dram_size, ranges)
        cycles += whole.cycles
        rest = Events()
        rest.merge(dpu_events(whole, cfg, table, weight_bits))
        for la, act in zip(sg.layers, per_layer, strict=True):
            ev = dpu_events(act, cfg, table, weight_bits)
            for key, n in ev.counts.items():
                rest.counts[key] = rest.counts.get(key, 0) - n
            layers.append(LayerEnergy(la["name"], la["kind"], ev, ev.energy(table), la["macs"]))
        # What no layer's range holds (the END, instructions between layers): its own row,
        # so the rows add up to the subgraph's whole activity.
        rest.counts = {k: n for k, n in rest.counts.items() if abs(n) > 1e-9 * max(1, abs(n))}
        if rest.counts:
            layers.append(LayerEnergy("(outside layers)", "-", rest, rest.energy(table)))
    notes = [
        "DPU level: the cycle model's activity x the table's energy per event; CPU subgraphs "
        "(host) are not charged"
    ]
    if not table.calibrated:
        notes.append(f"table {table.name} is uncalibrated: estimates, see its sources")
    seconds = cycles / (cfg.clock_mhz * 1e6)
    return _report("dpu", program.label, table, weight_bits, layers, seconds, notes)


# -- calibration ---------------------------------------------------------------------------

# What a fit to baseline-subtracted (dynamic) energies can determine: static power is in
# the idle baseline, and at one clock frequency it is proportional to cycles, like logic.
FITTED = ("mac_int8", "sram_read", "sram_write", "dram", "logic")


@dataclass
class Calibration:
    table: EnergyTable  # the calibrated table
    fitted: tuple[str, ...]  # entries the fit determined
    kept: tuple[str, ...]  # entries the measurements did not exercise: the prior's values
    residuals_j: np.ndarray  # measured - modeled, per measurement
    relative_rms: float  # rms of residual / measured
    # One standard error of each fitted entry, in its unit (NaN with no measurement to
    # spare: as many measurements as entries fit them exactly, and say nothing of the noise)
    std_error: dict[str, float] = field(default_factory=dict)
    condition: float = math.nan  # of the weighted, column-scaled activity matrix

    def relative_error(self, key: str) -> float:
        """An entry's standard error / its value (inf for a value of 0)."""
        v = self.table.entries[key].value
        return self.std_error[key] / v if v else math.inf

    def poorly_determined(self, limit: float = 0.1) -> list[str]:
        """Fitted entries whose standard error exceeds `limit` x their value (or unknown)."""
        return [k for k in self.fitted if not self.relative_error(k) <= limit]

    def as_dict(self) -> dict:
        def num(v: float) -> float | None:  # JSON has no NaN or inf
            return v if math.isfinite(v) else None

        return {
            "table": self.table.name,
            "fitted": {k: self.table.entries[k].value for k in self.fitted},
            "std_error": {k: num(self.std_error[k]) for k in self.fitted},
            "std_error_relative": {k: num(self.relative_error(k)) for k in self.fitted},
            "poorly_determined": self.poorly_determined(),
            "condition_number": num(self.condition),
            "kept_from_prior": list(self.kept),
            "residuals_j": self.residuals_j.tolist(),
            "relative_rms": self.relative_rms,
        }


def calibrate(
    prior: EnergyTable,
    events: Sequence[Events | dict[str, float]],
    measured_j: Iterable[float],
    *,
    name: str | None = None,
    static_w: float | None = None,
) -> Calibration:
    """Fit per-event energies to measured dynamic energies (J, idle baseline subtracted) of
    programs whose events are given (`dpu_events`, or {entry: count}), by non-negative
    least squares on relative residuals (each measurement weighted by 1 / itself: the
    energies span orders of magnitude, and unweighted the largest programs would decide
    every entry). Reports each entry's standard error (the least-squares covariance scaled
    by the residuals' variance) and the condition number of the weighted, column-scaled
    activity matrix: programs whose mixes hardly differ leave entries poorly determined.
    Entries no measurement exercises keep the prior's value; `static_w` (the idle power the
    recorder measured above the board's baseline, if known) replaces the prior's static
    power."""
    from scipy.optimize import nnls

    rows = [e.by_entry() if isinstance(e, Events) else dict(e) for e in events]
    b = np.asarray(list(measured_j), np.float64)
    if len(rows) != len(b):
        raise EnergyTableError(f"{len(rows)} activity records but {len(b)} measurements")
    for i, v in enumerate(b):
        if not (math.isfinite(v) and v > 0):
            raise EnergyTableError(
                f"measurement {i} is {v:g} J: measured dynamic energies must be finite and > 0 J"
            )
    for i, r in enumerate(rows):
        other = sorted(k for k, n in r.items() if k not in FITTED and k != "static" and n)
        if other:
            raise EnergyTableError(
                f"activity record {i} counts {', '.join(other)}, which the fit does not "
                f"determine (it fits {', '.join(FITTED)}; static power is in the baseline)"
            )
        if not all(math.isfinite(n) and n >= 0 for n in r.values()):
            raise EnergyTableError(f"activity record {i}: event counts must be finite and >= 0")
    if static_w is not None and not (math.isfinite(static_w) and static_w >= 0):
        raise EnergyTableError(f"static power {static_w!r} W must be finite and >= 0")
    a = np.array([[r.get(k, 0.0) for k in FITTED] for r in rows], np.float64)
    used = [j for j, k in enumerate(FITTED) if a[:, j].any()]
    if not used:
        raise EnergyTableError(f"no activity record counts any of {', '.join(FITTED)}")
    if len(rows) < len(used):
        raise EnergyTableError(
            f"{len(rows)} measurements cannot determine {len(used)} energies "
            f"({', '.join(FITTED[j] for j in used)}): measure at least as many programs"
        )
    a_used = a[:, used]
    # Relative residuals (rows / measured); columns differ by orders of magnitude (MACs vs
    # bits vs cycles): scaled to unit norm for the solver, the rank and the condition.
    with np.errstate(all="ignore"):
        weighted = a_used / b[:, None]
        scale = np.linalg.norm(weighted, axis=0)
        weighted = weighted / scale
    if not np.all(np.isfinite(weighted)):  # counts of absurd magnitude (1e308 over 1e-300)
        raise EnergyTableError("event counts / measured energies overflow: check the runs")
    rank = np.linalg.matrix_rank(weighted)
    if rank < len(used):
        raise EnergyTableError(
            "the measured programs' activity mixes are not independent (one event count is a "
            "combination of others in every program): measure programs that differ more"
        )
    x, _ = nnls(weighted, np.ones(len(b)))
    x = x / scale
    entries = dict(prior.entries)
    per_j = {k: _TO_JOULES[ENTRY_UNITS[k]] for k in FITTED}
    residuals = b - a_used @ x
    rel = float(np.sqrt(np.mean((residuals / b) ** 2)))
    spare = len(b) - len(used)
    variance = np.sum((residuals / b) ** 2) / spare if spare else math.nan
    se = np.sqrt(np.sum(np.linalg.pinv(weighted) ** 2, axis=1) * variance) / scale
    fitted = tuple(FITTED[j] for j in used)
    for col, k in enumerate(fitted):
        e = prior.entries[k]
        entries[k] = Entry(
            float(x[col] / per_j[k]),
            e.unit,
            f"calibrated: NNLS fit to {len(b)} measured dynamic energies (relative rms "
            f"residual {rel:.2%}"
            + (f", standard error {se[col] / per_j[k]:.3g} {e.unit}" if spare else "")
            + f"); prior {e.value:g} {e.unit}: {e.source}",
        )
    if static_w is not None:
        entries["static"] = Entry(float(static_w), "W", "measured idle power above baseline")
    kept = tuple(k for k in FITTED if k not in fitted)
    table = EnergyTable(
        name or f"{prior.name}-calibrated", prior.title, True, prior.word_bits, entries
    )
    std = {k: float(se[col] / per_j[k]) for col, k in enumerate(fitted)}
    return Calibration(table, fitted, kept, residuals, rel, std, float(np.linalg.cond(weighted)))
