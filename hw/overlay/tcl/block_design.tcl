# The board's block design (sourced by build.tcl): the PS from the board's preset, the DPU,
# an AXI interrupt controller, one interconnect from the PS's master to the DPU's and the
# controller's registers, one from both DPU masters to the PS's high-performance port,
# everything on the PS's PL clock, and the registers at control_base and intc_base in the
# PS's address map. The DPU's interrupt goes to the controller's input 0 and the controller's
# irq to the PS's first fabric interrupt: pynq 3.1 finds an interrupt pin only behind an
# axi_intc that drives the PS, as in PYNQ's base overlays (a line straight to the PS is not
# in Overlay.interrupt_pins, and pynq.Interrupt cannot wait on it).

create_project -force $overlay_name [file join $build_dir $overlay_name] -part $fpga_part
if {[get_board_parts -quiet $board_part] eq ""} {
    error "Vivado knows no board $board_part: install its board files (Vivado's Tools >\
        Vivado Store > Boards, or the vendor's board files with set_param board.repoPaths)\
        and run again"
}
set_property board_part $board_part [current_project]
set_property ip_repo_paths [list $ip_repo] [current_project]
update_ip_catalog

create_bd_design $bd_name

create_bd_cell -type ip -vlnv $ps_vlnv $ps_cell
apply_bd_automation -rule $ps_automation_rule -config $ps_automation_config [get_bd_cells $ps_cell]
set_property -dict $ps_properties [get_bd_cells $ps_cell]
set actual_clock_mhz [get_property $ps_actual_clock_property [get_bd_cells $ps_cell]]
if {![string is double -strict $actual_clock_mhz]
    || abs($actual_clock_mhz - $clock_mhz) > 0.01 * $clock_mhz} {
    error "the PS makes '$actual_clock_mhz' MHz of the $clock_mhz MHz that the hardware config\
        $config_name asks for: set its clock_mhz to a frequency the PS's dividers reach"
}

create_bd_cell -type ip -vlnv $ip_vendor:$ip_library:$ip_name:$ip_version $ip_instance
create_bd_cell -type ip -vlnv $intc_vlnv $intc_instance
set_property -dict $intc_properties [get_bd_cells $intc_instance]
create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset dpu_reset
create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect control_interconnect
set control_slaves [list $ip_instance/$control_interface $intc_instance/$intc_slave]
set_property -dict [list CONFIG.NUM_SI 1 CONFIG.NUM_MI [llength $control_slaves]] \
    [get_bd_cells control_interconnect]
create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect memory_interconnect
set_property -dict [list CONFIG.NUM_SI [llength $master_interfaces] CONFIG.NUM_MI 1] \
    [get_bd_cells memory_interconnect]

connect_bd_intf_net [get_bd_intf_pins $ps_cell/$ps_control_master] \
    [get_bd_intf_pins control_interconnect/S00_AXI]
set master_port 0
foreach slave $control_slaves {
    connect_bd_intf_net [get_bd_intf_pins [format control_interconnect/M%02d_AXI $master_port]] \
        [get_bd_intf_pins $slave]
    incr master_port
}
set slave_port 0
foreach busif $master_interfaces {
    connect_bd_intf_net [get_bd_intf_pins $ip_instance/$busif] \
        [get_bd_intf_pins [format memory_interconnect/S%02d_AXI $slave_port]]
    incr slave_port
}
connect_bd_intf_net [get_bd_intf_pins memory_interconnect/M00_AXI] \
    [get_bd_intf_pins $ps_cell/$ps_data_slave]

set clock_sinks [list $ip_instance/$clock_port $intc_instance/$intc_clock_pin \
    control_interconnect/aclk memory_interconnect/aclk dpu_reset/slowest_sync_clk]
foreach pin $ps_bus_clock_pins {
    lappend clock_sinks $ps_cell/$pin
}
foreach pin $clock_sinks {
    connect_bd_net [get_bd_pins $ps_cell/$ps_clock_pin] [get_bd_pins $pin]
}

connect_bd_net [get_bd_pins $ps_cell/$ps_reset_pin] [get_bd_pins dpu_reset/ext_reset_in]
foreach pin [list $ip_instance/$reset_port $intc_instance/$intc_reset_pin] {
    connect_bd_net [get_bd_pins dpu_reset/peripheral_aresetn] [get_bd_pins $pin]
}
foreach interconnect {control_interconnect memory_interconnect} {
    connect_bd_net [get_bd_pins dpu_reset/interconnect_aresetn] \
        [get_bd_pins $interconnect/aresetn]
}

connect_bd_net [get_bd_pins $ip_instance/$interrupt_pin] [get_bd_pins $intc_instance/$intc_input]
connect_bd_net [get_bd_pins $intc_instance/$intc_output] [get_bd_pins $ps_cell/$ps_irq_pin]

foreach {segment offset range} [list \
    $ip_instance/$control_interface/$control_block $control_base $control_range \
    $intc_instance/$intc_segment $intc_base $intc_range] {
    assign_bd_address -target_address_space [get_bd_addr_spaces $ps_cell/$ps_address_space] \
        -offset $offset -range $range [get_bd_addr_segs $segment]
}
# The rest: the PS's memory in the address spaces of both DPU masters.
assign_bd_address
validate_bd_design
save_bd_design
