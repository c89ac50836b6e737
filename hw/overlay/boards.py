"""The boards an overlay is built for, and the names the DPU has inside an overlay.

Defined once here: the Vivado flow (`dpukit.hw.overlay.flow`) writes these into the IP
package and the block design, and the PYNQ backend imports the IP's names to find the DPU in
the overlay's .hwh (`Overlay.ip_dict[IP_INSTANCE]`, whose "type" is `IP_VLNV`, and
`pynq.Interrupt(INTERRUPT_PATH)`). Standard library only: it is imported on the board
(Python 3.10, no tomllib).

The PS facts name Vivado's own IP properties and pins (processing_system7 for Zynq-7000,
zynq_ultra_ps_e for Zynq UltraScale+), as PYNQ's board designs, FINN's and hls4ml's PYNQ
flows and AMD's UG835 use them.

The DPU's interrupt reaches the PS through an AXI interrupt controller (axi_intc), as in
PYNQ's base overlays: pynq 3.1 lists an interrupt pin (`Overlay.interrupt_pins`, the IP's
ip_dict "interrupts") only when it drives the `intr` input of an axi_intc whose `irq` drives
the PS's interrupt input (pynqmetadata's interrupt_controllers_view.py and
interrupt_pins_view.py), and `pynq.Interrupt` drives that controller's registers
(pynq/interrupt.py). A line wired straight to the PS is not listed, and the driver polls.
"""

from __future__ import annotations

from dataclasses import dataclass

# The packaged IP: `ipx::package_project -vendor IP_VENDOR -library IP_LIBRARY`, then named
# and versioned, so Vivado's .hwh and PYNQ's ip_dict give it the type IP_VLNV.
IP_VENDOR = "dpukit.org"
IP_LIBRARY = "dpukit"
IP_NAME = "dpu"
IP_VERSION = "1.0"
IP_VLNV = f"{IP_VENDOR}:{IP_LIBRARY}:{IP_NAME}:{IP_VERSION}"

IP_INSTANCE = "dpu"  # the block design cell: the key of the DPU in PYNQ's ip_dict
INTERRUPT_PIN = "interrupt"  # the IP's level-high done interrupt (IRQ_STATUS.done & irq enable)
INTERRUPT_PATH = f"{IP_INSTANCE}/{INTERRUPT_PIN}"  # as pynq.Interrupt() names it

# The wrapper's top module and its interfaces, in the names Vivado's IP packager infers:
# ap_clk / ap_rst_n (active-low) as clock and reset, <prefix>_<axi signal> as AXI interfaces.
TOP_MODULE = "dpu_axi"
CLOCK_PORT = "ap_clk"
RESET_PORT = "ap_rst_n"
CONTROL_INTERFACE = "s_axi_control"  # AXI4-Lite slave: the register map (host/regmap.py)
DATA_INTERFACE = "m_axi_data"  # AXI4 master: LOAD and STORE
INSTR_INTERFACE = "m_axi_instr"  # AXI4 read-only master: instruction fetch
CONTROL_BLOCK = "reg0"  # the address block of the control interface's memory map

# The interrupt controller between the DPU's interrupt and the PS: AMD's axi_intc, in the
# names its IP gives its pins, interface and address segment. PYNQ-Z2's base overlay wires its
# own the same way: system_interrupts/s_axi on M_AXI_GP0, S_AXI/Reg mapped at 0x4180_0000 for
# 64 KiB, irq to IRQ_F2P. Here it sits on the PS's control master beside the DPU, at the
# board's `intc_base`.
INTC_VLNV = "xilinx.com:ip:axi_intc"  # without a version: the Vivado at hand picks its own
INTC_INSTANCE = "dpu_intc"  # its key in PYNQ's ip_dict
INTC_SLAVE = "s_axi"  # AXI4-Lite slave: the controller's registers
INTC_SEGMENT = "S_AXI/Reg"  # the slave's address segment
INTC_INPUT = "intr"  # the interrupt inputs; the DPU's is the only one (index 0)
INTC_OUTPUT = "irq"  # to the PS
INTC_CLOCK_PIN = "s_axi_aclk"
INTC_RESET_PIN = "s_axi_aresetn"  # active low
# PYNQ's base overlays leave their axi_intc at the IP's defaults (IP integrator fills in the
# input kinds from the sources); these pin down what pynq relies on, in the IP's parameters
# (PG099; the IP's GUI script axi_intc_v4_1.tcl says what each value means).
INTC_PROPERTIES = {
    "CONFIG.C_IRQ_CONNECTION": "1",  # Single: a plain irq line (0 = Bus, for a MicroBlaze)
    "CONFIG.C_KIND_OF_INTR": "0x00000000",  # every input level-sensitive (1 = edge) ...
    "CONFIG.C_KIND_OF_LVL": "0x00000001",  # ... input 0 active high, as INTERRUPT_PIN is
    "CONFIG.C_IRQ_IS_LEVEL": "1",  # irq a level too, active high
    "CONFIG.Sense_of_IRQ_Level_Type": "Active_High",
    # the optional registers pynq/interrupt.py uses (IPR read, SIE/CIE to unmask/mask a line)
    "CONFIG.C_HAS_IPR": "1",
    "CONFIG.C_HAS_SIE": "1",
    "CONFIG.C_HAS_CIE": "1",
}


@dataclass(frozen=True)
class ProcessingSystem:
    """A Zynq family's processing system as Vivado's PS IP names it.

    `properties` are set as they are; the clock and the HP port's width come from the
    hardware config and go into `clock_property` and `data_width_property`.
    """

    family: str
    vlnv: str  # without a version: the Vivado at hand picks its own
    cell: str
    automation_rule: str
    automation_config: str
    properties: dict[str, str]
    clock_property: str  # the requested PL clock, MHz
    actual_clock_property: str  # what the PS's dividers really give, MHz
    data_width_property: str  # the HP port's data width
    control_master: str  # the PS master interface the DPU's registers hang on
    data_slave: str  # the high-performance slave port both DPU masters share
    clock_pin: str
    reset_pin: str  # active-low PL reset out of the PS
    bus_clock_pins: tuple[str, ...]  # the clock inputs of the two ports above
    irq_pin: str  # the first fabric interrupt input, which pynq's UIO interrupt serves
    address_space: str  # the PS master's address space
    data_widths: tuple[int, ...]  # widths the HP port can be set to
    max_addr_bits: int  # address bits the HP port takes


ZYNQ_7000 = ProcessingSystem(
    family="zynq7",
    vlnv="xilinx.com:ip:processing_system7",
    cell="processing_system7_0",
    automation_rule="xilinx.com:bd_rule:processing_system7",
    automation_config=(
        'make_external "FIXED_IO, DDR" apply_board_preset "1" Master "Disable" Slave "Disable"'
    ),
    properties={
        "CONFIG.PCW_USE_M_AXI_GP0": "1",
        "CONFIG.PCW_USE_S_AXI_HP0": "1",
        "CONFIG.PCW_USE_FABRIC_INTERRUPT": "1",
        "CONFIG.PCW_IRQ_F2P_INTR": "1",
    },
    clock_property="CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ",
    actual_clock_property="CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ",
    data_width_property="CONFIG.PCW_S_AXI_HP0_DATA_WIDTH",
    control_master="M_AXI_GP0",
    data_slave="S_AXI_HP0",
    clock_pin="FCLK_CLK0",
    reset_pin="FCLK_RESET0_N",
    bus_clock_pins=("M_AXI_GP0_ACLK", "S_AXI_HP0_ACLK"),
    irq_pin="IRQ_F2P",
    address_space="Data",
    data_widths=(32, 64),
    max_addr_bits=32,
)

# On zynq_ultra_ps_e, M_AXI_GP0/1/2 are M_AXI_HPM0_FPD/HPM1_FPD/HPM0_LPD and S_AXI_GP2 is
# S_AXI_HP0_FPD. The unused masters are switched off so no clock input is left unconnected.
ZYNQ_ULTRASCALE = ProcessingSystem(
    family="zynqmp",
    vlnv="xilinx.com:ip:zynq_ultra_ps_e",
    cell="zynq_ultra_ps_e_0",
    automation_rule="xilinx.com:bd_rule:zynq_ultra_ps_e",
    automation_config='apply_board_preset "1"',
    properties={
        "CONFIG.PSU__USE__M_AXI_GP0": "1",
        "CONFIG.PSU__USE__M_AXI_GP1": "0",
        "CONFIG.PSU__USE__M_AXI_GP2": "0",
        "CONFIG.PSU__USE__S_AXI_GP2": "1",
        "CONFIG.PSU__USE__IRQ0": "1",
        "CONFIG.PSU__FPGA_PL0_ENABLE": "1",
        "CONFIG.PSU__NUM_FABRIC_RESETS": "1",
    },
    clock_property="CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
    actual_clock_property="CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ",
    data_width_property="CONFIG.PSU__SAXIGP2__DATA_WIDTH",
    control_master="M_AXI_HPM0_FPD",
    data_slave="S_AXI_HP0_FPD",
    clock_pin="pl_clk0",
    reset_pin="pl_resetn0",
    bus_clock_pins=("maxihpm0_fpd_aclk", "saxihp0_fpd_aclk"),
    irq_pin="pl_ps_irq0",
    address_space="Data",
    data_widths=(32, 64, 128),
    max_addr_bits=49,
)


@dataclass(frozen=True)
class Board:
    """A board: the hardware config its overlay is built from, its chip and Vivado board
    part, its PS, and where the DPU's and the interrupt controller's registers sit in the
    PS's address map."""

    name: str
    config: str  # hw/configs/<config>.toml
    fpga_part: str  # the chip on the board; a config built for another part is refused
    board_part: str  # Vivado board files (PS presets: DDR, MIO, clocks)
    ps: ProcessingSystem
    control_base: int  # the DPU's register window, in the PS's peripheral range
    intc_base: int  # the interrupt controller's register window, on the same PS master
    control_range: int = 0x1_0000  # 64 KiB; the wrapper ignores the bits above the map's
    intc_range: int = 0x1_0000  # 64 KiB, as PYNQ's base overlays map their axi_intc


BOARDS: dict[str, Board] = {
    "pynq-z2": Board(
        name="pynq-z2",
        config="pynq-z2",
        fpga_part="xc7z020clg400-1",
        board_part="tul.com.tw:pynq-z2:part0:1.0",
        ps=ZYNQ_7000,
        control_base=0x4000_0000,  # M_AXI_GP0 starts at 0x4000_0000
        intc_base=0x4001_0000,  # the next 64 KiB
    ),
    "ultra96v2": Board(
        name="ultra96v2",
        config="ultra96v2",
        fpga_part="xczu3eg-sbva484-1-i",
        board_part="avnet.com:ultra96v2:part0:1.2",
        ps=ZYNQ_ULTRASCALE,
        control_base=0xA000_0000,  # M_AXI_HPM0_FPD starts at 0xA000_0000
        intc_base=0xA001_0000,  # the next 64 KiB
    ),
}


def overlay_basename(board: str, config: str) -> str:
    """The shared name of an overlay's .bit and .hwh (PYNQ finds the .hwh by it), e.g.
    dpukit_pynq_z2: the board's, with the config's appended when it is not the board's own."""
    names = [board] if config == BOARDS[board].config else [board, config]
    return "_".join(["dpukit", *names]).replace("-", "_")
