# Package the DPU as the IP $ip_vendor:$ip_library:$ip_name:$ip_version (sourced by build.tcl).
# The IP packager takes a Verilog top only, hence dpu_axi (Verilog) around dpu_top
# (SystemVerilog). It infers the AXI interfaces from the port names; what it may leave out
# (clock, reset, interrupt, their parameters, the address ranges) is set here explicitly.

set ip_repo [file join $build_dir ip_repo]
set ip_dir [file join $ip_repo $ip_name]

create_project -force ${ip_name}_package [file join $build_dir ${ip_name}_package] -part $fpga_part
set sources {}
foreach source $rtl_files {
    lappend sources [file join $here $source]
}
add_files -norecurse $sources
set_property top $top_module [current_fileset]
update_compile_order -fileset sources_1

ipx::package_project -root_dir $ip_dir -vendor $ip_vendor -library $ip_library \
    -taxonomy /UserIP -import_files -set_current true -force
set core [ipx::current_core]
set_property name $ip_name $core
set_property version $ip_version $core
set_property display_name "dpukit DPU ($config_name)" $core
set_property description "dpukit DPU built for the hardware config $config_name\
    (fingerprint $config_fingerprint)" $core

proc dpukit_bus_parameter {busif name value} {
    set parameter [ipx::get_bus_parameters -quiet $name -of_objects $busif]
    if {$parameter eq ""} {
        set parameter [ipx::add_bus_parameter $name $busif]
    }
    set_property value $value $parameter
}

foreach {port definition} [list \
    $clock_port xilinx.com:signal:clock_rtl:1.0 \
    $reset_port xilinx.com:signal:reset_rtl:1.0 \
    $interrupt_pin xilinx.com:signal:interrupt_rtl:1.0] {
    if {[ipx::get_bus_interfaces -quiet $port -of_objects $core] eq ""} {
        ipx::infer_bus_interface $port $definition $core
    }
}
dpukit_bus_parameter [ipx::get_bus_interfaces $reset_port -of_objects $core] POLARITY ACTIVE_LOW
dpukit_bus_parameter [ipx::get_bus_interfaces $interrupt_pin -of_objects $core] \
    SENSITIVITY LEVEL_HIGH
# No fixed frequency on the clock: the block design gives the PS clock's to the IP.
set clock_busif [ipx::get_bus_interfaces $clock_port -of_objects $core]
if {[ipx::get_bus_parameters -quiet FREQ_HZ -of_objects $clock_busif] ne ""} {
    ipx::remove_bus_parameter FREQ_HZ $clock_busif
}

foreach busif [concat [list $control_interface] $master_interfaces] {
    if {[ipx::get_bus_interfaces -quiet $busif -of_objects $core] eq ""} {
        error "the IP packager inferred no AXI interface $busif from the ports of $top_module"
    }
    ipx::associate_bus_interfaces -busif $busif -clock $clock_port $core
}
ipx::associate_bus_interfaces -clock $clock_port -reset $reset_port $core

# The control registers: one address block of control_range bytes.
set memory_map [ipx::get_memory_maps -quiet $control_interface -of_objects $core]
if {$memory_map eq ""} {
    set memory_map [ipx::add_memory_map $control_interface $core]
    set_property slave_memory_map_ref $control_interface \
        [ipx::get_bus_interfaces $control_interface -of_objects $core]
}
set block [ipx::get_address_blocks -quiet $control_block -of_objects $memory_map]
if {$block eq ""} {
    set block [ipx::add_address_block $control_block $memory_map]
}
set_property range $control_range $block

# The masters address 2^axi_addr_bits bytes (the PS's memory is mapped into that space).
foreach busif $master_interfaces {
    set space [ipx::get_address_spaces -quiet $busif -of_objects $core]
    if {$space eq ""} {
        set space [ipx::add_address_space $busif $core]
    }
    set_property range $master_range $space
    set_property master_address_space_ref $busif [ipx::get_bus_interfaces $busif -of_objects $core]
}

ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
close_project
