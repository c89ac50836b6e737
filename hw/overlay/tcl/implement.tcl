# Synthesis, implementation and bitstream (sourced by build.tcl); then the .bit and the .hwh
# side by side under one name (PYNQ's Overlay finds the .hwh by the .bit's name), the timing
# and utilization reports, and summary.json. Exits 2 when timing is not met.

proc dpukit_check_run {run} {
    if {[get_property PROGRESS [get_runs $run]] ne "100%"} {
        error "Vivado run $run did not complete ([get_property STATUS [get_runs $run]]);\
            its log is in [get_property DIRECTORY [get_runs $run]]"
    }
}

proc dpukit_json_number {value} {
    if {[string is double -strict $value]} {
        return $value
    }
    return null
}

make_wrapper -files [get_files $bd_name.bd] -top -import
set_property top ${bd_name}_wrapper [current_fileset]
update_compile_order -fileset sources_1

launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
dpukit_check_run synth_1
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
dpukit_check_run impl_1

open_run impl_1
report_timing_summary -file [file join $reports_dir timing_summary.rpt]
report_utilization -file [file join $reports_dir utilization.rpt]
report_utilization -hierarchical -file [file join $reports_dir utilization_hierarchical.rpt]
set wns [get_property STATS.WNS [get_runs impl_1]]
set whs [get_property STATS.WHS [get_runs impl_1]]

set project_dir [file join $build_dir $overlay_name]
set bitstream [file join $project_dir $overlay_name.runs impl_1 ${bd_name}_wrapper.bit]
# Vivado 2020.2 and later write generated block design files under <project>.gen, older
# versions under <project>.srcs.
set handoff ""
foreach generated [list $overlay_name.gen $overlay_name.srcs] {
    set candidate [file join $project_dir $generated sources_1 bd $bd_name hw_handoff $bd_name.hwh]
    if {[file exists $candidate]} {
        set handoff $candidate
        break
    }
}
if {![file exists $bitstream] || $handoff eq ""} {
    error "implementation finished but the bitstream ($bitstream) or the block design's\
        hardware handoff (.hwh under $project_dir) is missing"
}
file copy -force $bitstream [file join $here $overlay_name.bit]
file copy -force $handoff [file join $here $overlay_name.hwh]

set timing_met [expr {[string is double -strict $wns] && [string is double -strict $whs]
                      && $wns >= 0 && $whs >= 0}]
set summary [open [file join $reports_dir summary.json] w]
puts $summary "\{"
puts $summary "  \"board\": \"$board_name\","
puts $summary "  \"config\": \"$config_name\","
puts $summary "  \"config_fingerprint\": \"$config_fingerprint\","
puts $summary "  \"fpga_part\": \"$fpga_part\","
puts $summary "  \"vivado_version\": \"$vivado_version\","
puts $summary "  \"ip_vlnv\": \"$ip_vendor:$ip_library:$ip_name:$ip_version\","
puts $summary "  \"bitstream\": \"$overlay_name.bit\","
puts $summary "  \"hwh\": \"$overlay_name.hwh\","
puts $summary "  \"clock_mhz\": $clock_mhz,"
puts $summary "  \"clock_mhz_actual\": [dpukit_json_number $actual_clock_mhz],"
puts $summary "  \"wns_ns\": [dpukit_json_number $wns],"
puts $summary "  \"whs_ns\": [dpukit_json_number $whs],"
puts $summary "  \"timing_met\": [expr {$timing_met ? "true" : "false"}]"
puts $summary "\}"
close $summary

puts "dpukit overlay: [file join $here $overlay_name].bit and .hwh; WNS $wns ns, WHS $whs ns;\
      reports in $reports_dir"
if {!$timing_met} {
    puts "ERROR: timing not met at $clock_mhz MHz (WNS $wns ns, WHS $whs ns): the bitstream may\
          fail on the board. See $reports_dir/timing_summary.rpt; lower clock_mhz in the\
          hardware config or shorten the failing paths."
    exit 2
}
