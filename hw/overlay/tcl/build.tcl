# The dpukit overlay build, from any directory:
#     vivado -mode batch -source <this folder>/build.tcl
# 1. package_ip.tcl    the DPU (dpu_axi around dpu_top) as an IP of the IP catalog
# 2. block_design.tcl  the board's PS, the DPU, their interconnects, clock, reset, the DPU's
#                      interrupt through an AXI interrupt controller, and the address map
# 3. implement.tcl     synthesis, implementation, bitstream; the .bit and .hwh side by side
#                      under one name, the timing (WNS) and utilization reports in reports/
# Every value (part, board, clock, widths, addresses, names) is in settings.tcl, written from
# the hardware config and the board table by `python -m dpukit.hw.overlay`.

set here [file dirname [file normalize [info script]]]
source [file join $here settings.tcl]
set build_dir [file join $here build]
set reports_dir [file join $here reports]
file mkdir $build_dir $reports_dir

set vivado_version [version -short]
if {![string match "${written_for_vivado}*" $vivado_version]} {
    puts "WARNING: this flow was written for Vivado $written_for_vivado; running in\
          $vivado_version. If a step fails, run it in Vivado $written_for_vivado."
}

source [file join $here package_ip.tcl]
source [file join $here block_design.tcl]
source [file join $here implement.tcl]
