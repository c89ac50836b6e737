// DRAM side of one LOAD or STORE, shared by dpu_load_dma and dpu_store_dma: the data window
// check, and the AXI4 bursts that move the instruction's contiguous runs of bytes.
//
// Runs are those of compiler/dma.py `Dma.runs` (the reference): a whole plane when
// x_stride == elem_bytes and y_stride == x_size*elem_bytes, else a whole row when
// x_stride == elem_bytes, else one run per entry; runs in raster order (z, y, x), so their
// bytes in order are the entries' bytes in order. Each run is moved as the aligned beats it
// touches, in INCR bursts of full bus width that never exceed MaxBurstBeats beats nor cross
// a 4 KiB boundary: exactly `dma_beats` of compiler/timing.py beats in all.
//
// Check (combinational from the geometry inputs, so the engine can apply it in the cycle it
// accepts the instruction): has_data_o when z, y, x sizes and elem_bytes are all non-zero;
// range_err_o when has_data_o and the span's last byte
//   offset + (z-1)*z_stride + (y-1)*y_stride + (x-1)*x_stride + elem_bytes - 1
// is not below limit_i. start_i (same cycle, same inputs, only when has_data_o and no
// error) begins the transfer at base_i + offset.
//
// Requests: one burst per cycle at most, ax_* straight from the run registers (the first
// burst is presented in the cycle after start_i). A burst is presented while fewer than
// MaxOutstanding are outstanding (presented, burst_done_i not yet seen) and stop_i is low
// (the engine raises it on an AXI error); once presented it stays until taken. For each
// burst, in order, from the cycle it is first presented (so W beats need not wait for the
// AW handshake), the info FIFO holds its length and the byte lanes its first and last beat
// carry (info_lo_o .. BeatBytes-1 of the first, 0 .. info_hi_o of the last; whole beats
// between): the data channel pops it at the burst's last beat. drained_o and issued_o are
// next-cycle values (so an engine can finish in the cycle of the last response): drained_o
// no request presented or outstanding, issued_o every run requested.
//
// Parameters: MaxBurstBeats in 1 .. 256 (AxLEN); MaxOutstanding >= 1, the depth of the info
// FIFO (distributed RAM, 2*log2(bus bytes) + 8 bits a burst, no per-burst address state):
// the limit costs no throughput while it exceeds the memory's latency in cycles by a few,
// even for single-beat bursts (the default 64 covers the shipped configs' 16 to 48).

module dpu_dma_bursts #(
  parameter int unsigned AxiDataBits    = 64,
  parameter int unsigned AxiAddrBits    = 32,
  parameter int unsigned MaxBurstBeats  = 16,
  parameter int unsigned MaxOutstanding = 64
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,

  // geometry of the instruction (LOAD or STORE fields) and the data window
  input  logic [AxiAddrBits-1:0] base_i,
  input  logic [AxiAddrBits-1:0] limit_i,
  input  logic [31:0]            offset_i,
  input  logic [15:0]            z_size_i,
  input  logic [31:0]            z_stride_i,
  input  logic [15:0]            y_size_i,
  input  logic [31:0]            y_stride_i,
  input  logic [15:0]            x_size_i,
  input  logic [23:0]            x_stride_i,
  input  logic [15:0]            elem_bytes_i,
  output logic                   has_data_o,
  output logic                   range_err_o,
  input  logic                   start_i,
  input  logic                   stop_i,
  output logic                   drained_o,
  output logic                   issued_o,

  // AR or AW channel
  output logic                   ax_valid_o,
  input  logic                   ax_ready_i,
  output logic [AxiAddrBits-1:0] ax_addr_o,
  output logic [7:0]             ax_len_o,

  // per requested burst, in order
  output logic                   info_valid_o,
  output logic [$clog2(AxiDataBits/8)-1:0] info_lo_o,
  output logic [$clog2(AxiDataBits/8)-1:0] info_hi_o,
  output logic [7:0]             info_len_o,
  input  logic                   info_pop_i,
  input  logic                   burst_done_i
);

  localparam int unsigned BeatBytes = AxiDataBits / 8;
  localparam int unsigned LaneBits  = $clog2(BeatBytes);
  localparam int unsigned PageBeats = 4096 / BeatBytes;
  localparam int unsigned SpanBits  = 64;
  localparam int unsigned BeatsBits = AxiAddrBits - LaneBits + 1;  // beats of one run
  localparam int unsigned OutBits   = $clog2(MaxOutstanding + 1);
  localparam int unsigned PtrBits   = MaxOutstanding > 1 ? $clog2(MaxOutstanding) : 1;
  localparam int unsigned InfoBits  = 2 * LaneBits + 8;

  // -- window check and run shape, from the inputs ----------------------------------------
  logic [15:0]         x_steps, y_steps, z_steps;  // sizes - 1
  logic [39:0]         prod_x;
  logic [47:0]         prod_y, prod_z;
  logic [SpanBits-1:0] row_bytes, plane_bytes, span_last;
  logic                rows_are_runs, planes_are_runs;
  logic [AxiAddrBits-1:0] run_bytes;

  assign x_steps = x_size_i - 16'd1;
  assign y_steps = y_size_i - 16'd1;
  assign z_steps = z_size_i - 16'd1;
  assign prod_x  = 40'(x_steps) * 40'(x_stride_i);
  assign prod_y  = 48'(y_steps) * 48'(y_stride_i);
  assign prod_z  = 48'(z_steps) * 48'(z_stride_i);
  assign row_bytes   = SpanBits'(prod_x) + SpanBits'(elem_bytes_i);
  assign plane_bytes = SpanBits'(prod_y) + row_bytes;
  assign span_last   = SpanBits'(offset_i) + SpanBits'(prod_z) + plane_bytes - SpanBits'(1);

  assign has_data_o  = (z_size_i != '0) && (y_size_i != '0) && (x_size_i != '0)
                    && (elem_bytes_i != '0);
  assign range_err_o = has_data_o && (span_last >= SpanBits'(limit_i));

  // when the span is inside the window a run is shorter than 2^AxiAddrBits bytes
  assign rows_are_runs   = 32'(x_stride_i) == 32'(elem_bytes_i);
  assign planes_are_runs = rows_are_runs && (SpanBits'(y_stride_i) == row_bytes);
  assign run_bytes = planes_are_runs ? AxiAddrBits'(plane_bytes)
                   : rows_are_runs   ? AxiAddrBits'(row_bytes)
                   :                   AxiAddrBits'(elem_bytes_i);

  // -- run walker: the current run's start address, in raster order ----------------------
  logic                   wk_valid_d, wk_valid_q;
  logic [15:0]            x_d, x_q, y_d, y_q, z_d, z_q;
  logic [15:0]            x_last_d, x_last_q, y_last_d, y_last_q, z_last_d, z_last_q;
  logic [31:0]            z_stride_d, z_stride_q, y_stride_d, y_stride_q;
  logic [23:0]            x_stride_d, x_stride_q;
  logic [AxiAddrBits-1:0] plane_d, plane_q, row_d, row_q, run_d, run_q;
  logic [AxiAddrBits-1:0] run_last_d, run_last_q;  // run bytes - 1

  // -- the rest of a run longer than one burst --------------------------------------------
  logic                   rm_valid_d, rm_valid_q;
  logic [AxiAddrBits-1:0] rm_addr_d, rm_addr_q;
  logic [BeatsBits-1:0]   rm_beats_d, rm_beats_q;
  logic [LaneBits-1:0]    rm_hi_d, rm_hi_q;

  // -- presented request, outstanding count, info FIFO ------------------------------------
  logic                   held_d, held_q;  // presented and not yet taken
  logic [OutBits-1:0]     out_d, out_q;
  logic [PtrBits-1:0]     wr_ptr_d, wr_ptr_q, rd_ptr_d, rd_ptr_q;
  logic [OutBits-1:0]     fill_d, fill_q;
  logic [InfoBits-1:0]    info_mem [MaxOutstanding];

  // the next burst: from the remainder if any, else the walker's run
  logic [AxiAddrBits-1:0] src_addr;
  logic [BeatsBits-1:0]   src_beats;
  logic [LaneBits-1:0]    src_lo, src_hi;
  logic                   src_valid;
  logic [AxiAddrBits:0]   run_end;  // byte lane of the run's first byte + run bytes - 1

  assign run_end = (AxiAddrBits + 1)'(run_q[LaneBits-1:0]) + (AxiAddrBits + 1)'(run_last_q);

  always_comb begin
    if (rm_valid_q) begin
      src_addr  = rm_addr_q;
      src_beats = rm_beats_q;
      src_lo    = '0;
      src_hi    = rm_hi_q;
    end else begin
      src_addr  = {run_q[AxiAddrBits-1:LaneBits], {LaneBits{1'b0}}};
      src_beats = BeatsBits'(run_end >> LaneBits) + BeatsBits'(1);
      src_lo    = run_q[LaneBits-1:0];
      src_hi    = run_end[LaneBits-1:0];
    end
  end
  assign src_valid = rm_valid_q || wk_valid_q;

  // at most MaxBurstBeats, the beats left and the beats up to the 4 KiB page
  logic [BeatsBits-1:0] page_left, burst_beats;
  logic                 burst_ends_run;
  assign page_left = BeatsBits'(PageBeats) - BeatsBits'(src_addr[11:LaneBits]);
  always_comb begin
    burst_beats = src_beats;
    if (burst_beats > BeatsBits'(MaxBurstBeats)) burst_beats = BeatsBits'(MaxBurstBeats);
    if (burst_beats > page_left) burst_beats = page_left;
  end
  assign burst_ends_run = burst_beats == src_beats;

  logic present, fire;
  assign ax_valid_o = src_valid && (held_q || (!stop_i && (out_q < OutBits'(MaxOutstanding))));
  assign ax_addr_o  = src_addr;
  assign ax_len_o   = 8'(burst_beats - BeatsBits'(1));
  assign present    = ax_valid_o && !held_q;  // first cycle of a request
  assign fire       = ax_valid_o && ax_ready_i;
  assign held_d     = ax_valid_o && !ax_ready_i;

  always_comb begin
    wk_valid_d = wk_valid_q;
    x_d        = x_q;
    y_d        = y_q;
    z_d        = z_q;
    x_last_d   = x_last_q;
    y_last_d   = y_last_q;
    z_last_d   = z_last_q;
    z_stride_d = z_stride_q;
    y_stride_d = y_stride_q;
    x_stride_d = x_stride_q;
    plane_d    = plane_q;
    row_d      = row_q;
    run_d      = run_q;
    run_last_d = run_last_q;
    rm_valid_d = rm_valid_q;
    rm_addr_d  = rm_addr_q;
    rm_beats_d = rm_beats_q;
    rm_hi_d    = rm_hi_q;

    if (fire) begin
      rm_valid_d = !burst_ends_run;
      rm_addr_d  = src_addr + (AxiAddrBits'(burst_beats) << LaneBits);
      rm_beats_d = src_beats - burst_beats;
      rm_hi_d    = src_hi;
      // the walker's run is taken (whole, or its first burst): step to the next run
      if (!rm_valid_q) begin
        if (x_q != x_last_q) begin
          x_d   = x_q + 16'd1;
          run_d = run_q + AxiAddrBits'(x_stride_q);
        end else begin
          x_d = '0;
          if (y_q != y_last_q) begin
            y_d   = y_q + 16'd1;
            row_d = row_q + AxiAddrBits'(y_stride_q);
            run_d = row_d;
          end else begin
            y_d     = '0;
            z_d     = z_q + 16'd1;
            plane_d = plane_q + AxiAddrBits'(z_stride_q);
            row_d   = plane_d;
            run_d   = plane_d;
            if (z_q == z_last_q) begin
              wk_valid_d = 1'b0;
            end
          end
        end
      end
    end

    if (start_i) begin
      wk_valid_d = 1'b1;
      x_d        = '0;
      y_d        = '0;
      z_d        = '0;
      x_last_d   = rows_are_runs ? 16'd0 : x_steps;
      y_last_d   = planes_are_runs ? 16'd0 : y_steps;
      z_last_d   = z_steps;
      z_stride_d = z_stride_i;
      y_stride_d = y_stride_i;
      x_stride_d = x_stride_i;
      plane_d    = base_i + AxiAddrBits'(offset_i);
      row_d      = plane_d;
      run_d      = plane_d;
      run_last_d = run_bytes - AxiAddrBits'(1);
      rm_valid_d = 1'b0;
    end
  end

  // outstanding bursts and the info FIFO (as deep as the outstanding limit, so never full)
  always_comb begin
    out_d    = out_q + OutBits'(present) - OutBits'(burst_done_i);
    fill_d   = fill_q + OutBits'(present) - OutBits'(info_pop_i);
    wr_ptr_d = wr_ptr_q;
    rd_ptr_d = rd_ptr_q;
    if (present) begin
      wr_ptr_d = (32'(wr_ptr_q) == MaxOutstanding - 1) ? '0 : wr_ptr_q + PtrBits'(1);
    end
    if (info_pop_i) begin
      rd_ptr_d = (32'(rd_ptr_q) == MaxOutstanding - 1) ? '0 : rd_ptr_q + PtrBits'(1);
    end
  end

  always_ff @(posedge clk_i) begin
    if (present) begin
      info_mem[wr_ptr_q] <= {src_lo, burst_ends_run ? src_hi : {LaneBits{1'b1}},
                             8'(burst_beats - BeatsBits'(1))};
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      wk_valid_q <= 1'b0;
      x_q        <= '0;
      y_q        <= '0;
      z_q        <= '0;
      x_last_q   <= '0;
      y_last_q   <= '0;
      z_last_q   <= '0;
      z_stride_q <= '0;
      y_stride_q <= '0;
      x_stride_q <= '0;
      plane_q    <= '0;
      row_q      <= '0;
      run_q      <= '0;
      run_last_q <= '0;
      rm_valid_q <= 1'b0;
      rm_addr_q  <= '0;
      rm_beats_q <= '0;
      rm_hi_q    <= '0;
      held_q     <= 1'b0;
      out_q      <= '0;
      fill_q     <= '0;
      wr_ptr_q   <= '0;
      rd_ptr_q   <= '0;
    end else begin
      wk_valid_q <= wk_valid_d;
      x_q        <= x_d;
      y_q        <= y_d;
      z_q        <= z_d;
      x_last_q   <= x_last_d;
      y_last_q   <= y_last_d;
      z_last_q   <= z_last_d;
      z_stride_q <= z_stride_d;
      y_stride_q <= y_stride_d;
      x_stride_q <= x_stride_d;
      plane_q    <= plane_d;
      row_q      <= row_d;
      run_q      <= run_d;
      run_last_q <= run_last_d;
      rm_valid_q <= rm_valid_d;
      rm_addr_q  <= rm_addr_d;
      rm_beats_q <= rm_beats_d;
      rm_hi_q    <= rm_hi_d;
      held_q     <= held_d;
      out_q      <= out_d;
      fill_q     <= fill_d;
      wr_ptr_q   <= wr_ptr_d;
      rd_ptr_q   <= rd_ptr_d;
    end
  end


  assign info_valid_o = fill_q != '0;
  assign {info_lo_o, info_hi_o, info_len_o} = info_mem[rd_ptr_q];

  assign drained_o = out_d == '0;
  assign issued_o  = !wk_valid_d && !rm_valid_d;

endmodule
