"""A board's overlay flow, written into one folder that Vivado builds on any machine.

    <out>/build.tcl, package_ip.tcl, block_design.tcl, implement.tcl   (hw/overlay/tcl/)
    <out>/settings.tcl     every value the Tcl uses: from the hardware config and the board
    <out>/rtl/dpu_axi.v    the Verilog top the IP packager needs, around dpu_top
    <out>/rtl/*.sv         the DPU's RTL
    <out>/README.md        how to run it

After `vivado -mode batch -source build.tcl`: <out>/<overlay>.bit and <overlay>.hwh, and
<out>/reports/ (timing summary, utilization, summary.json).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dpukit.compiler.hwconfig import HwConfig, load_config
from dpukit.errors import ConfigError
from dpukit.host import regmap
from dpukit.hw.overlay import boards
from dpukit.hw.overlay.boards import BOARDS, Board
from dpukit.hw.params import rtl_files, top_parameters

# PYNQ v3.1's images are built with the 2024.1 tools (Xilinx/PYNQ docs/source/
# pynq_sd_card.rst: "v3.1 2024.1"); an overlay built with the same Vivado matches them.
VIVADO_VERSION = "2024.1"
TCL_DIR = Path(__file__).resolve().parent / "tcl"
TCL_SCRIPTS = ("build.tcl", "package_ip.tcl", "block_design.tcl", "implement.tcl")
BLOCK_DESIGN = "dpukit"
AXI_ID_BITS = 1  # dpu_top's AxiIdBits: one outstanding-transaction ID per master

# AXI signals as (name, driven by the master, width); a width is bits or a key of the
# interface's widths: "id", "addr", "data", "strb".
AXI4_WRITE = (
    ("awid", True, "id"),
    ("awaddr", True, "addr"),
    ("awlen", True, 8),
    ("awsize", True, 3),
    ("awburst", True, 2),
    ("awlock", True, 1),
    ("awcache", True, 4),
    ("awprot", True, 3),
    ("awvalid", True, 1),
    ("awready", False, 1),
    ("wdata", True, "data"),
    ("wstrb", True, "strb"),
    ("wlast", True, 1),
    ("wvalid", True, 1),
    ("wready", False, 1),
    ("bid", False, "id"),
    ("bresp", False, 2),
    ("bvalid", False, 1),
    ("bready", True, 1),
)
AXI4_READ = (
    ("arid", True, "id"),
    ("araddr", True, "addr"),
    ("arlen", True, 8),
    ("arsize", True, 3),
    ("arburst", True, 2),
    ("arlock", True, 1),
    ("arcache", True, 4),
    ("arprot", True, 3),
    ("arvalid", True, 1),
    ("arready", False, 1),
    ("rid", False, "id"),
    ("rdata", False, "data"),
    ("rresp", False, 2),
    ("rlast", False, 1),
    ("rvalid", False, 1),
    ("rready", True, 1),
)
AXI4_LITE = (
    ("awaddr", True, "addr"),
    ("awvalid", True, 1),
    ("awready", False, 1),
    ("wdata", True, 32),
    ("wstrb", True, 4),
    ("wvalid", True, 1),
    ("wready", False, 1),
    ("bresp", False, 2),
    ("bvalid", False, 1),
    ("bready", True, 1),
    ("araddr", True, "addr"),
    ("arvalid", True, 1),
    ("arready", False, 1),
    ("rdata", False, 32),
    ("rresp", False, 2),
    ("rvalid", False, 1),
    ("rready", True, 1),
)


@dataclass(frozen=True)
class AxiPort:
    """One AXI interface of the wrapper and the dpu_top ports it connects to."""

    prefix: str  # the wrapper's, as the IP packager infers it
    core_prefix: str  # dpu_top's
    signals: tuple[tuple[str, bool, int | str], ...]
    is_master: bool
    widths: dict[str, int]
    core_addr_bits: int | None = None  # dpu_top's, when it decodes fewer than the port has


@dataclass(frozen=True)
class OverlayFlow:
    """A written flow folder."""

    out: Path
    board: Board
    cfg: HwConfig
    overlay_name: str

    @property
    def bitstream(self) -> Path:
        return self.out / f"{self.overlay_name}.bit"

    @property
    def hwh(self) -> Path:
        return self.out / f"{self.overlay_name}.hwh"


def find_board(name: str) -> Board:
    """The board called `name`, or a ConfigError listing the boards there are."""
    if name not in BOARDS:
        raise ConfigError(f"no overlay for board '{name}'; boards: {', '.join(sorted(BOARDS))}")
    return BOARDS[name]


def check_fits(board: Board, cfg: HwConfig) -> None:
    """Refuse a config the board cannot carry, naming the field and what the board takes."""
    where = f"hardware config '{cfg.name}' for board {board.name}"
    if cfg.fpga_part != board.fpga_part:
        raise ConfigError(
            f"{where}: fpga_part is {cfg.fpga_part}, the board's chip is {board.fpga_part}"
        )
    if cfg.axi_data_bits not in board.ps.data_widths:
        widths = ", ".join(map(str, board.ps.data_widths))
        raise ConfigError(
            f"{where}: axi_data_bits is {cfg.axi_data_bits}; {board.ps.data_slave} takes {widths}"
        )
    if cfg.axi_addr_bits > board.ps.max_addr_bits:
        raise ConfigError(
            f"{where}: axi_addr_bits is {cfg.axi_addr_bits}; {board.ps.data_slave} takes at "
            f"most {board.ps.max_addr_bits}"
        )


def control_addr_bits(board: Board) -> int:
    """Address bits of the wrapper's control port: they span the board's control window
    (the packager derives the window from them); dpu_top decodes the low regmap.ADDR_BITS."""
    bits = board.control_range.bit_length() - 1
    if board.control_range != 1 << bits or bits < max(12, regmap.ADDR_BITS):
        raise ConfigError(
            f"board {board.name}: control_range {board.control_range:#x} must be a power of "
            f"two of at least 4 KiB and cover the register map"
        )
    return bits


def check_address_map(board: Board) -> None:
    """Refuse a board whose interrupt controller's window is not a power of two aligned to its
    size (Vivado maps no other) or overlaps the DPU's registers."""
    base, size = board.intc_base, board.intc_range
    if size < 0x1000 or size & (size - 1) or base % size:
        raise ConfigError(
            f"board {board.name}: intc_range {size:#x} must be a power of two of at least "
            f"4 KiB, and intc_base {base:#x} a multiple of it"
        )
    if base < board.control_base + board.control_range and board.control_base < base + size:
        raise ConfigError(
            f"board {board.name}: the interrupt controller's window {base:#x}+{size:#x} "
            f"overlaps the DPU's registers {board.control_base:#x}+{board.control_range:#x}"
        )


def axi_ports(board: Board, cfg: HwConfig) -> tuple[AxiPort, ...]:
    memory = {
        "id": AXI_ID_BITS,
        "addr": cfg.axi_addr_bits,
        "data": cfg.axi_data_bits,
        "strb": cfg.axi_data_bits // 8,
    }
    return (
        AxiPort(
            boards.CONTROL_INTERFACE,
            "s_axil",
            AXI4_LITE,
            False,
            {"addr": control_addr_bits(board)},
            core_addr_bits=regmap.ADDR_BITS,
        ),
        AxiPort(boards.DATA_INTERFACE, "m_axi", AXI4_WRITE + AXI4_READ, True, memory),
        AxiPort(boards.INSTR_INTERFACE, "m_axi_instr", AXI4_READ, True, memory),
    )


def _range(bits: int) -> str:
    return f"[{bits - 1}:0] " if bits > 1 else ""


def _waived(warning: str, line: str) -> list[str]:
    """`line` with a Verilator lint waiver around it."""
    return [f"  /* verilator lint_off {warning} */", line, f"  /* verilator lint_on {warning} */"]


def wrapper_verilog(board: Board, cfg: HwConfig) -> str:
    """The Verilog-2005 top `dpu_axi`: dpu_top with the config's parameters, its ports renamed
    to what Vivado's IP packager infers as a clock, an active-low reset, an interrupt and AXI
    interfaces. The control port's address bits above the register map are not decoded."""
    ports = [
        f"  input  wire {boards.CLOCK_PORT}",
        f"  input  wire {boards.RESET_PORT}",
    ]
    connections = [f"    .clk_i({boards.CLOCK_PORT})", f"    .rst_ni({boards.RESET_PORT})"]
    for axi in axi_ports(board, cfg):
        for signal, by_master, width in axi.signals:
            bits = axi.widths[width] if isinstance(width, str) else width
            direction = "output" if by_master == axi.is_master else "input "
            name = f"{axi.prefix}_{signal}"
            if width == "addr" and axi.core_addr_bits not in (None, bits):
                # The IP's window is wider than the map, which repeats within it.
                ports += _waived("UNUSEDSIGNAL", f"  {direction} wire {_range(bits)}{name}")
                source = f"{name}[{axi.core_addr_bits - 1}:0]"
            else:
                ports.append(f"  {direction} wire {_range(bits)}{name}")
                source = name
            connections.append(f"    .{axi.core_prefix}_{signal}({source})")
    # `interrupt` is the name Vivado and PYNQ expect, and a C++ word to Verilator.
    ports += _waived("SYMRSVDWORD", f"  output wire {boards.INTERRUPT_PIN}")
    connections.append(f"    .irq_o({boards.INTERRUPT_PIN})")
    parameters = {**top_parameters(cfg), "AxiIdBits": AXI_ID_BITS}

    def commas(lines: list[str]) -> list[str]:
        # a comma after every item but the last; lint pragmas are not items
        items = [i for i, line in enumerate(lines) if not line.lstrip().startswith("/*")]
        return [line + ("," if i in items[:-1] else "") for i, line in enumerate(lines)]

    return "\n".join(
        [
            f"// {boards.TOP_MODULE}: the DPU (dpu_top) as the top of the Vivado IP",
            f"// {boards.IP_VLNV}, built for the hardware config '{cfg.name}'",
            f"// (fingerprint {cfg.fingerprint}) on the board {board.name}.",
            "// Generated by `python -m dpukit.hw.overlay` (hw/overlay/flow.py); do not edit.",
            "// Verilog, not SystemVerilog: the IP packager does not take a SystemVerilog top.",
            "",
            f"module {boards.TOP_MODULE} (",
            *commas(ports),
            ");",
            "",
            "  dpu_top #(",
            *commas([f"    .{name}({value})" for name, value in parameters.items()]),
            "  ) core (",
            *commas(connections),
            "  );",
            "",
            "endmodule",
            "",
        ]
    )


_TCL_WORD = re.compile(r"[A-Za-z0-9_.:/+-]+")


def tcl_word(value: object) -> str:
    """`value` as one Tcl word: bare when it is plain, else in braces (no substitution)."""
    text = str(value)
    if _TCL_WORD.fullmatch(text):
        return text
    if "\\" in text or text.count("{") != text.count("}"):
        raise ValueError(f"cannot brace-quote {text!r} for Tcl")
    return "{" + text + "}"


def tcl_list(values: Iterable[object]) -> str:
    """`values` as one Tcl list word, each element a Tcl word."""
    return "{" + " ".join(tcl_word(v) for v in values) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def settings_tcl(board: Board, cfg: HwConfig, overlay_name: str, jobs: int) -> str:
    """settings.tcl: every value the flow's Tcl uses, one `set` each."""
    ps = board.ps
    ps_properties = {
        **ps.properties,
        ps.clock_property: _number(cfg.clock_mhz),
        ps.data_width_property: str(cfg.axi_data_bits),
    }
    values: list[tuple[str, object, str]] = [
        ("board_name", board.name, ""),
        ("config_name", cfg.name, ""),
        ("config_fingerprint", cfg.fingerprint, "CONFIG_FINGERPRINT registers"),
        ("fpga_part", cfg.fpga_part, ""),
        ("board_part", board.board_part, ""),
        ("clock_mhz", _number(cfg.clock_mhz), "the PS's PL clock, the DPU's only clock"),
        ("written_for_vivado", VIVADO_VERSION, ""),
        ("jobs", jobs, "parallel Vivado runs"),
        ("overlay_name", overlay_name, "the Vivado project; <overlay_name>.bit, .hwh"),
        ("bd_name", BLOCK_DESIGN, ""),
        ("rtl_files", _rtl_names(), "packages first, then the top"),
        ("top_module", boards.TOP_MODULE, ""),
        ("ip_vendor", boards.IP_VENDOR, ""),
        ("ip_library", boards.IP_LIBRARY, ""),
        ("ip_name", boards.IP_NAME, ""),
        ("ip_version", boards.IP_VERSION, ""),
        ("ip_instance", boards.IP_INSTANCE, ""),
        ("clock_port", boards.CLOCK_PORT, ""),
        ("reset_port", boards.RESET_PORT, "active low"),
        ("interrupt_pin", boards.INTERRUPT_PIN, "level high, to the interrupt controller"),
        ("control_interface", boards.CONTROL_INTERFACE, "AXI4-Lite slave"),
        ("control_block", boards.CONTROL_BLOCK, ""),
        ("control_base", f"{board.control_base:#010x}", "in the PS's address map"),
        ("control_range", board.control_range, "bytes"),
        (
            "master_interfaces",
            [boards.DATA_INTERFACE, boards.INSTR_INTERFACE],
            "AXI4 masters",
        ),
        ("master_range", 1 << cfg.axi_addr_bits, "2^axi_addr_bits bytes"),
        ("intc_vlnv", boards.INTC_VLNV, "the interrupt controller PYNQ waits through"),
        ("intc_instance", boards.INTC_INSTANCE, ""),
        ("intc_properties", _flatten(boards.INTC_PROPERTIES), "level-sensitive input"),
        ("intc_slave", boards.INTC_SLAVE, "AXI4-Lite slave"),
        ("intc_segment", boards.INTC_SEGMENT, ""),
        ("intc_input", boards.INTC_INPUT, ""),
        ("intc_output", boards.INTC_OUTPUT, "to ps_irq_pin"),
        ("intc_clock_pin", boards.INTC_CLOCK_PIN, ""),
        ("intc_reset_pin", boards.INTC_RESET_PIN, "active low"),
        ("intc_base", f"{board.intc_base:#010x}", "in the PS's address map"),
        ("intc_range", board.intc_range, "bytes"),
        ("ps_vlnv", ps.vlnv, ""),
        ("ps_cell", ps.cell, ""),
        ("ps_automation_rule", ps.automation_rule, ""),
        ("ps_automation_config", ps.automation_config, ""),
        ("ps_properties", _flatten(ps_properties), "clock and HP width included"),
        ("ps_actual_clock_property", ps.actual_clock_property, ""),
        ("ps_control_master", ps.control_master, ""),
        ("ps_data_slave", ps.data_slave, f"{cfg.axi_data_bits} bits"),
        ("ps_clock_pin", ps.clock_pin, ""),
        ("ps_reset_pin", ps.reset_pin, ""),
        ("ps_bus_clock_pins", ps.bus_clock_pins, ""),
        ("ps_irq_pin", ps.irq_pin, ""),
        ("ps_address_space", ps.address_space, ""),
    ]
    lines = [
        f"# The overlay of board {board.name} from hardware config {cfg.name}.",
        "# Generated by `python -m dpukit.hw.overlay` (hw/overlay/flow.py); do not edit.",
        "",
    ]
    for name, value, note in values:
        word = tcl_list(value) if isinstance(value, (list, tuple)) else tcl_word(value)
        lines.append(f"set {name} {word}" + (f"  ;# {note}" if note else ""))
    return "\n".join(lines) + "\n"


def _flatten(mapping: dict[str, str]) -> list[str]:
    return [item for pair in mapping.items() for item in pair]


def _rtl_names() -> list[str]:
    return [f"rtl/{p.name}" for p in rtl_files()] + [f"rtl/{boards.TOP_MODULE}.v"]


def run_instructions(flow: OverlayFlow) -> str:
    """How to build the written folder, on this machine or another (one paragraph)."""
    return (
        f"The {flow.board.name} overlay flow in {flow.out} was written for Vivado "
        f"{VIVADO_VERSION}, the tool version PYNQ v3.1's SD card images are built with (other "
        f"versions print a warning and may need the IP upgraded). To build it on a machine "
        f"with Vivado {VIVADO_VERSION} and the board files of {flow.board.board_part}, copy "
        f"the folder there and run `vivado -mode batch -source build.tcl` inside it (or `make "
        f"overlay BOARD={flow.board.name}` in a dpukit checkout). It writes "
        f"{flow.bitstream.name} and {flow.hwh.name} side by side (copy both to the board), and "
        f"reports/ with the timing summary (WNS), utilization and summary.json."
    )


def write_flow(
    board_name: str, out: Path, config: str | Path | None = None, jobs: int = 4
) -> OverlayFlow:
    """Write the flow of `board_name` (with its own config, or `config`) into `out`."""
    board = find_board(board_name)
    cfg = load_config(board.config if config is None else config)
    check_fits(board, cfg)
    check_address_map(board)
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    flow = OverlayFlow(out, board, cfg, boards.overlay_basename(board.name, cfg.name))
    rtl = out / "rtl"
    rtl.mkdir(parents=True, exist_ok=True)
    for source in rtl_files():
        shutil.copyfile(source, rtl / source.name)
    (rtl / f"{boards.TOP_MODULE}.v").write_text(wrapper_verilog(board, cfg))
    for script in TCL_SCRIPTS:
        shutil.copyfile(TCL_DIR / script, out / script)
    (out / "settings.tcl").write_text(settings_tcl(board, cfg, flow.overlay_name, jobs))
    (out / "README.md").write_text(
        f"# dpukit overlay: {board.name}, hardware config {cfg.name}\n\n{run_instructions(flow)}\n"
    )
    return flow
