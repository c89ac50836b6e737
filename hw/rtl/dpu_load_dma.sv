// LOAD engine DMA: executes one LOAD instruction (docs/isa.md, LOAD; compiler/dma.py
// `Dma.load_entries`, the reference) as AXI4 read bursts and buffer-entry writes.
//
// Pipelined to the cycle model (compiler/timing.py: dram_latency + max(data beats, entries)):
//   - dpu_dma_bursts reads the instruction's contiguous DRAM runs (a plane, a row or an
//     entry, as `Dma.runs`) as whole full-width INCR bursts, up to MaxOutstanding of them
//     in flight, so a memory of first-beat latency L streams beats back to back;
//   - the bytes of the runs, in order, are the data entries' bytes in raster order: each
//     beat's bytes go into a byte queue (4 beats deep), and an assembler cuts the queue into
//     elem_bytes entries, up to one beat of bytes and one finished entry per cycle (a beat
//     rotator and chunk-wide writes into the entry register, no entry-wide shifter);
//   - data entries are written in raster order as they complete; padding entries (pad_value
//     in every lane) are written in raster order in the cycles no data entry is written, so
//     they overlap the memory latency and the data stream. With elem_bytes = 0 the data
//     entries are written as zeros with the padding, without a read.
// wr_addr_o = sram_base + (z*rows + y)*cols + x (16 bits, wrapping), wr_data_o is the raw
// bytes, byte i at [8i +: 8], zero from elem_bytes on (ACC sign extension is the buffer's
// job). A write happens in a cycle with wr_valid_o && wr_ready_i; while wr_ready_i is low
// wr_valid_o, wr_addr_o and wr_data_o stay as they are, and the R channel may stall.
// Each entry is written exactly once.
//
// Timing: the instruction is accepted (instr_valid_i && instr_ready_o) in StIdle or in the
// done cycle (done_o is high one cycle per instruction, so twice in a row when the next one
// fails its checks at once). The window check is combinational on instr_i, so the first AR
// is presented in the cycle after the accepting edge; three setup cycles for the entry
// addresses overlap the memory latency. With a memory that answers AR at once and returns a
// burst's first beat L cycles after its AR handshake (handshake to handshake), beats back
// to back, and wr_ready_i high, done_o is high at most L + max(beats, entries) + 3 cycles
// after the accepting edge (2, plus 1 when the first beat completes no entry).
//
// Errors (error_o, valid with done_o and held until the next instruction is accepted):
//   ErrElemBytes  elem_bytes > EntryBytes: nothing read or written.
//   ErrRange      a DRAM byte of the transfer outside [0, limit_i): checked on the whole
//                 span before any read, so no AXI request is issued and nothing is written.
//   ErrAxi        SLVERR/DECERR on a read beat: no further bursts are requested, the
//                 outstanding beats are drained; data entries whose bytes all arrived before
//                 the failing beat are written, later ones are not; padding is written.
// base_i and limit_i are sampled when the instruction is accepted. The write channels of
// m_axi exist only so the port is a complete AXI4 master; they are tied off.

module dpu_load_dma
  import dpu_isa_pkg::*;
#(
  parameter int unsigned AxiDataBits    = 64,
  parameter int unsigned AxiAddrBits    = 32,
  parameter int unsigned AxiIdBits      = 1,
  parameter int unsigned EntryBytes     = 16,
  parameter int unsigned MaxBurstBeats  = 16,
  parameter int unsigned MaxOutstanding = 64
) (
  input  logic                       clk_i,
  input  logic                       rst_ni,

  // LOAD instruction word
  input  logic [InstrBits-1:0]       instr_i,
  input  logic                       instr_valid_i,
  output logic                       instr_ready_o,

  // data window
  input  logic [AxiAddrBits-1:0]     base_i,
  input  logic [AxiAddrBits-1:0]     limit_i,

  // buffer write port
  output logic                       wr_valid_o,
  output logic [15:0]                wr_addr_o,
  output logic [EntryBytes*8-1:0]    wr_data_o,
  input  logic                       wr_ready_i,

  output logic                       done_o,
  output logic [1:0]                 error_o,

  // AXI4 master, read only
  output logic [AxiIdBits-1:0]       m_axi_awid,
  output logic [AxiAddrBits-1:0]     m_axi_awaddr,
  output logic [7:0]                 m_axi_awlen,
  output logic [2:0]                 m_axi_awsize,
  output logic [1:0]                 m_axi_awburst,
  output logic                       m_axi_awlock,
  output logic [3:0]                 m_axi_awcache,
  output logic [2:0]                 m_axi_awprot,
  output logic                       m_axi_awvalid,
  input  logic                       m_axi_awready,
  output logic [AxiDataBits-1:0]     m_axi_wdata,
  output logic [AxiDataBits/8-1:0]   m_axi_wstrb,
  output logic                       m_axi_wlast,
  output logic                       m_axi_wvalid,
  input  logic                       m_axi_wready,
  input  logic [AxiIdBits-1:0]       m_axi_bid,
  input  logic [1:0]                 m_axi_bresp,
  input  logic                       m_axi_bvalid,
  output logic                       m_axi_bready,
  output logic [AxiIdBits-1:0]       m_axi_arid,
  output logic [AxiAddrBits-1:0]     m_axi_araddr,
  output logic [7:0]                 m_axi_arlen,
  output logic [2:0]                 m_axi_arsize,
  output logic [1:0]                 m_axi_arburst,
  output logic                       m_axi_arlock,
  output logic [3:0]                 m_axi_arcache,
  output logic [2:0]                 m_axi_arprot,
  output logic                       m_axi_arvalid,
  input  logic                       m_axi_arready,
  input  logic [AxiIdBits-1:0]       m_axi_rid,
  input  logic [AxiDataBits-1:0]     m_axi_rdata,
  input  logic [1:0]                 m_axi_rresp,
  input  logic                       m_axi_rlast,
  input  logic                       m_axi_rvalid,
  output logic                       m_axi_rready
);

  localparam logic [1:0] ErrNone      = 2'd0;
  localparam logic [1:0] ErrRange     = 2'd1;
  localparam logic [1:0] ErrAxi       = 2'd2;
  localparam logic [1:0] ErrElemBytes = 2'd3;

  localparam int unsigned BeatBytes = AxiDataBits / 8;
  localparam int unsigned LaneBits  = $clog2(BeatBytes);
  localparam int unsigned Chunks    = (EntryBytes + BeatBytes - 1) / BeatBytes;
  localparam int unsigned FillBits  = $clog2(Chunks * BeatBytes + 1);  // 0 .. entry bytes
  // byte queue: a reserve of beats for the cycles where partial beats (run boundaries)
  // bring fewer bytes than an entry needs
  localparam int unsigned QRows     = 4;
  localparam int unsigned QBytes    = QRows * BeatBytes;
  localparam int unsigned QPtrBits  = LaneBits + 2;
  localparam int unsigned QCntBits  = LaneBits + 3;
  localparam int unsigned DimBits   = 17;  // rows, cols: 16-bit size plus two 6-bit pads

  typedef logic [AxiDataBits-1:0] beat_t;  // byte m at [8m +: 8]

  typedef enum logic [1:0] {
    StIdle,
    StSetup,
    StRun,
    StDone
  } state_e;

  // rotate a beat's byte lanes up by r: lane m goes to lane (m + r) mod BeatBytes
  // (the upper half of {x, x} << 8r; a shift by AxiDataBits gives zero, so r = 0 is x)
  function automatic beat_t rotate(beat_t x, logic [LaneBits-1:0] r);
    rotate = (x << {r, 3'b000}) | (x >> (AxiDataBits - 32'({r, 3'b000})));
  endfunction

  state_e           state_d, state_q;
  load_instr_t      instr_d, instr_q, in_instr;
  logic [1:0]       err_d, err_q;
  logic             has_data_d, has_data_q;
  logic             accept, in_elem_err, in_range_err, in_has_data, running;
  logic             bursts_drained, bursts_issued;

  assign in_instr    = load_instr_t'(instr_i);
  assign accept      = instr_valid_i && instr_ready_o;
  assign in_elem_err = 32'(in_instr.elem_bytes) > EntryBytes;
  assign running     = (state_q == StSetup) || (state_q == StRun);

  // -- AR channel: the runs as bursts ----------------------------------------------------
  logic                rerr_d, rerr_q;
  logic [LaneBits-1:0] info_lo, info_hi;
  logic                info_valid;
  logic [7:0]          info_len;
  logic                r_fire, r_last_fire;

  dpu_dma_bursts #(
    .AxiDataBits   (AxiDataBits),
    .AxiAddrBits   (AxiAddrBits),
    .MaxBurstBeats (MaxBurstBeats),
    .MaxOutstanding(MaxOutstanding)
  ) u_bursts (
    .clk_i        (clk_i),
    .rst_ni       (rst_ni),
    .base_i       (base_i),
    .limit_i      (limit_i),
    .offset_i     (in_instr.dram_offset),
    .z_size_i     (in_instr.z_size),
    .z_stride_i   (in_instr.z_stride),
    .y_size_i     (in_instr.y_size),
    .y_stride_i   (in_instr.y_stride),
    .x_size_i     (in_instr.x_size),
    .x_stride_i   (in_instr.x_stride),
    .elem_bytes_i (in_instr.elem_bytes),
    .has_data_o   (in_has_data),
    .range_err_o  (in_range_err),
    .start_i      (accept && in_has_data && !in_elem_err && !in_range_err),
    .stop_i       (rerr_q),
    .drained_o    (bursts_drained),
    .issued_o     (bursts_issued),
    .ax_valid_o   (m_axi_arvalid),
    .ax_ready_i   (m_axi_arready),
    .ax_addr_o    (m_axi_araddr),
    .ax_len_o     (m_axi_arlen),
    .info_valid_o (info_valid),
    .info_lo_o    (info_lo),
    .info_hi_o    (info_hi),
    .info_len_o   (info_len),
    .info_pop_i   (r_last_fire),
    .burst_done_i (r_last_fire)
  );

  // -- geometry of the padded block, from the accepted instruction -----------------------
  logic [DimBits-1:0] rows, cols, y_end, x_end, z_size;
  logic [15:0]        xs16;
  logic               pads_exist, no_entries;
  assign rows  = DimBits'(instr_q.pad_top) + DimBits'(instr_q.y_size)
               + DimBits'(instr_q.pad_bottom);
  assign cols  = DimBits'(instr_q.pad_left) + DimBits'(instr_q.x_size)
               + DimBits'(instr_q.pad_right);
  assign y_end = DimBits'(instr_q.pad_top) + DimBits'(instr_q.y_size);
  assign x_end = DimBits'(instr_q.pad_left) + DimBits'(instr_q.x_size);
  assign z_size = DimBits'(instr_q.z_size);
  assign xs16   = instr_q.x_size;
  assign pads_exist = (instr_q.pad_top != '0) || (instr_q.pad_bottom != '0)
                   || (instr_q.pad_left != '0) || (instr_q.pad_right != '0);
  assign no_entries = (z_size == '0) || (rows == '0) || (cols == '0);

  // entry-address steps, from one multiplier over the three StSetup cycles (mod 2^16):
  // pad_top*cols for the first data entry, then (pad_top + pad_bottom)*cols for the step
  // from a plane's last data entry to the next plane's first, then y_size*cols, the entries
  // of a plane's data rows
  logic [1:0]  setup_d, setup_q;
  logic [15:0] mul_a, product;
  logic [15:0] plane_step_d, plane_step_q;
  logic [15:0] data_rows_d, data_rows_q;
  always_comb begin
    unique case (setup_q)
      2'd0:    mul_a = 16'(instr_q.pad_top);
      2'd1:    mul_a = 16'(instr_q.pad_top) + 16'(instr_q.pad_bottom);
      default: mul_a = instr_q.y_size;
    endcase
  end
  assign product = mul_a * cols[15:0];

  // -- R channel into the byte queue -----------------------------------------------------
  logic [QBytes*8-1:0]  q_q;  // circular, byte q at [8q +: 8]
  logic [QPtrBits-1:0]  qh_d, qh_q, qt_d, qt_q;
  logic [QCntBits-1:0]  qc_d, qc_q;
  logic                 r_first_d, r_first_q;  // the next beat is its burst's first
  logic [LaneBits-1:0]  r_lo, r_hi;
  logic [QCntBits-1:0]  push_n;
  logic                 push;
  beat_t                r_rot;

  // the byte queue with a beat's push_n bytes written from the tail on (computed in the
  // register's process, in the cycles a beat arrives)
  function automatic logic [QBytes*8-1:0] q_write(logic [QBytes*8-1:0] old, beat_t rot,
                                                  logic [QPtrBits-1:0] tail,
                                                  logic [QCntBits-1:0] n);
    logic [QPtrBits-1:0] off;
    q_write = old;
    for (int unsigned q = 0; q < QBytes; q++) begin
      off = QPtrBits'(q) - tail;
      if (QCntBits'(off) < n) begin
        q_write[8*q +: 8] = rot[8*(q%BeatBytes) +: 8];
      end
    end
  endfunction

  assign m_axi_rready = running && (rerr_q || (qc_q <= QCntBits'(QBytes - BeatBytes)));
  assign r_fire       = m_axi_rvalid && m_axi_rready;
  assign r_last_fire  = r_fire && m_axi_rlast;
  assign r_lo   = r_first_q ? info_lo : '0;
  assign r_hi   = m_axi_rlast ? info_hi : '1;
  assign push   = r_fire && !rerr_q && !m_axi_rresp[1];
  assign push_n = push ? QCntBits'(r_hi) - QCntBits'(r_lo) + QCntBits'(1) : '0;
  assign r_rot  = rotate(m_axi_rdata, qt_q[LaneBits-1:0] - r_lo);

  // -- assembler: byte queue -> entries --------------------------------------------------
  logic [Chunks*AxiDataBits-1:0] asm_q;  // entry byte i at [8i +: 8]
  logic                 asm_full_d, asm_full_q;
  logic [FillBits-1:0]  fill_d, fill_q;      // bytes of the current entry so far
  beat_t                head_q;              // the next entry's first bytes, lanes 0..
  logic [LaneBits-1:0]  head_n_d, head_n_q;
  logic                 head_pend_d, head_pend_q;
  logic [FillBits-1:0]  eb, need, take, head_n, fill_end;
  logic                 can_pop, complete, data_accept;
  beat_t                win;

  assign eb = FillBits'(instr_q.elem_bytes);

  // the queue's first BeatBytes bytes, each in its own lane
  always_comb begin
    for (int unsigned m = 0; m < BeatBytes; m++) begin
      win[8*m +: 8] = 8'd0;
      for (int unsigned r = 0; r < QRows; r++) begin
        if (qh_q[QPtrBits-1:LaneBits] + ((LaneBits'(m) >= qh_q[LaneBits-1:0]) ? 2'd0 : 2'd1)
            == 2'(r)) begin
          win[8*m +: 8] = q_q[8*(r*BeatBytes+m) +: 8];
        end
      end
    end
  end

  assign can_pop = running && (!asm_full_q || data_accept);
  assign need    = eb - fill_q;
  always_comb begin
    take = need;
    if (32'(take) > 32'(qc_q)) take = FillBits'(qc_q);
    if (32'(take) > BeatBytes) take = FillBits'(BeatBytes);
    if (!can_pop) take = '0;
  end
  assign complete = (take != '0) && (take == need);
  always_comb begin
    head_n = '0;
    if (complete) begin
      head_n = FillBits'(BeatBytes) - take;
      if (32'(qc_q) - 32'(take) < 32'(head_n)) head_n = FillBits'(32'(qc_q) - 32'(take));
      if (head_n > eb - FillBits'(1)) head_n = eb - FillBits'(1);
    end
  end
  assign fill_end = fill_q + take - FillBits'(1);

  // entry bytes [fill, fill + take) from the tail rotation, chunk by chunk; pending head
  // bytes into lanes 0 .. head_n - 1 of chunk 0 once the register is free
  logic [FillBits-LaneBits-1:0] first_chunk, last_chunk;
  logic [BeatBytes-1:0]         from_lane, to_lane;
  assign first_chunk = fill_q[FillBits-1:LaneBits];
  assign last_chunk  = fill_end[FillBits-1:LaneBits];
  always_comb begin
    for (int unsigned m = 0; m < BeatBytes; m++) begin
      from_lane[m] = LaneBits'(m) >= fill_q[LaneBits-1:0];
      to_lane[m]   = LaneBits'(m) <= fill_end[LaneBits-1:0];
    end
  end
  logic head_write, tail_write;
  assign head_write = can_pop && head_pend_q;
  assign tail_write = take != '0;

  // the entry register with those bytes written (computed in the register's process, in
  // the cycles bytes arrive, so a cycle-based simulator skips it in the others)
  function automatic logic [Chunks*AxiDataBits-1:0] asm_write(
      logic [Chunks*AxiDataBits-1:0] old, logic head_en, logic [LaneBits-1:0] head_cnt,
      beat_t head, logic tail_en, logic [FillBits-LaneBits-1:0] first,
      logic [FillBits-LaneBits-1:0] last, logic [BeatBytes-1:0] from,
      logic [BeatBytes-1:0] to, beat_t tail);
    asm_write = old;
    for (int unsigned c = 0; c < Chunks; c++) begin
      for (int unsigned m = 0; m < BeatBytes; m++) begin
        if ((c == 0) && head_en && (LaneBits'(m) < head_cnt)) begin
          asm_write[8*(c*BeatBytes+m) +: 8] = head[8*m +: 8];
        end
        if (tail_en
            && ((c > 32'(first)) || ((c == 32'(first)) && from[m]))
            && ((c < 32'(last)) || ((c == 32'(last)) && to[m]))) begin
          asm_write[8*(c*BeatBytes+m) +: 8] = tail[8*m +: 8];
        end
      end
    end
  endfunction

  // -- entry writers ----------------------------------------------------------------------
  // data entries in raster order
  logic              dw_valid_d, dw_valid_q;
  logic [15:0]       dw_x_d, dw_x_q, dw_y_d, dw_y_q, dw_z_d, dw_z_q, dw_addr_d, dw_addr_q;
  // padding entries (all entries when there is no data) in raster order
  logic              pw_init_d, pw_init_q, pw_valid_d, pw_valid_q;
  logic [DimBits-1:0] pw_x_d, pw_x_q, pw_y_d, pw_y_q, pw_z_d, pw_z_q;
  logic [15:0]       pw_addr_d, pw_addr_q;
  logic              sticky_d, sticky_q;  // a padding entry presented and not yet taken
  logic              sel_pad, pad_accept;

  // the padding walker's next position: along the row past the data columns, else the
  // first padding entry of the next row, past whole data rows and planes
  logic               skip_data;
  logic [DimBits-1:0] nx, ny, nz;
  logic [15:0]        na;
  logic               nv;
  assign skip_data = has_data_q;

  function automatic logic is_data_row(logic [DimBits-1:0] y, logic [DimBits-1:0] top,
                                       logic [DimBits-1:0] bottom);
    is_data_row = (y >= top) && (y < bottom);
  endfunction

  always_comb begin
    nv = 1'b1;
    if (pw_init_q) begin  // from "the end of row -1" of plane 0
      nx = DimBits'(cols);
      ny = '1;
      nz = '0;
      na = instr_q.sram_base;
    end else begin
      nz = pw_z_q;
      nx = pw_x_q + DimBits'(1);
      ny = pw_y_q;
      na = pw_addr_q + 16'd1;
      if (skip_data && is_data_row(pw_y_q, DimBits'(instr_q.pad_top), y_end)
          && (nx == DimBits'(instr_q.pad_left))) begin
        nx = x_end;
        na = na + xs16;
      end
    end
    if (nx == cols) begin
      nx = '0;
      ny = ny + DimBits'(1);
      if (ny == rows) begin
        ny = '0;
        nz = nz + DimBits'(1);
      end
      if (skip_data && is_data_row(ny, DimBits'(instr_q.pad_top), y_end)) begin
        if (instr_q.pad_left != '0) begin
          nx = '0;
        end else if (instr_q.pad_right != '0) begin
          nx = x_end;
          na = na + xs16;
        end else begin  // rows without padding: on to the bottom padding or the next plane
          ny = y_end;
          na = na + data_rows_q;
          if (ny == rows) begin
            ny = '0;
            nz = nz + DimBits'(1);
          end
        end
      end
      if (nz == z_size) begin
        nv = 1'b0;
      end
    end
  end

  // write port: a data entry when one is complete, else padding; a presented padding entry
  // stays until taken
  assign sel_pad     = pw_valid_q && (sticky_q || !asm_full_q);
  assign data_accept = asm_full_q && !sel_pad && wr_ready_i;
  assign pad_accept  = sel_pad && wr_ready_i;

  logic [7:0] pad_byte;
  assign pad_byte = (!skip_data && is_data_row(pw_y_q, DimBits'(instr_q.pad_top), y_end)
                     && (pw_x_q >= DimBits'(instr_q.pad_left)) && (pw_x_q < x_end))
                  ? 8'd0 : instr_q.pad_value;

  always_comb begin
    state_d     = state_q;
    instr_d     = instr_q;
    err_d       = err_q;
    has_data_d  = has_data_q;
    rerr_d      = rerr_q || (r_fire && m_axi_rresp[1]);
    r_first_d   = r_fire ? m_axi_rlast : r_first_q;
    qh_d        = qh_q + QPtrBits'(take) + QPtrBits'(head_n);
    qt_d        = qt_q + QPtrBits'(push_n);
    qc_d        = qc_q + push_n - QCntBits'(take) - QCntBits'(head_n);
    asm_full_d  = complete || (asm_full_q && !data_accept);
    fill_d      = complete ? head_n : fill_q + take;
    head_n_d    = complete ? LaneBits'(head_n) : head_n_q;
    head_pend_d = complete ? (head_n != '0) : (head_pend_q && !can_pop);
    sticky_d    = sel_pad && !wr_ready_i;
    setup_d      = '0;
    plane_step_d = plane_step_q;
    data_rows_d  = data_rows_q;
    dw_valid_d  = dw_valid_q;
    dw_x_d      = dw_x_q;
    dw_y_d      = dw_y_q;
    dw_z_d      = dw_z_q;
    dw_addr_d   = dw_addr_q;
    pw_init_d   = pw_init_q;
    pw_valid_d  = pw_valid_q;
    pw_x_d      = pw_x_q;
    pw_y_d      = pw_y_q;
    pw_z_d      = pw_z_q;
    pw_addr_d   = pw_addr_q;

    // data entries step through the data region
    if (data_accept) begin
      if (dw_x_q != instr_q.x_size - 16'd1) begin
        dw_x_d    = dw_x_q + 16'd1;
        dw_addr_d = dw_addr_q + 16'd1;
      end else begin
        dw_x_d = '0;
        if (dw_y_q != instr_q.y_size - 16'd1) begin
          dw_y_d    = dw_y_q + 16'd1;
          dw_addr_d = dw_addr_q + 16'(instr_q.pad_left) + 16'(instr_q.pad_right) + 16'd1;
        end else begin
          dw_y_d    = '0;
          dw_z_d    = dw_z_q + 16'd1;
          dw_addr_d = dw_addr_q + plane_step_q;
          if (dw_z_q == instr_q.z_size - 16'd1) begin
            dw_valid_d = 1'b0;
          end
        end
      end
    end

    // padding entries
    if (pw_init_q || pad_accept) begin
      pw_init_d  = 1'b0;
      pw_valid_d = nv;
      pw_x_d     = nx;
      pw_y_d     = ny;
      pw_z_d     = nz;
      pw_addr_d  = na;
    end

    unique case (state_q)
      StIdle: ;

      StSetup: begin
        setup_d = setup_q + 2'd1;
        unique case (setup_q)
          2'd0: begin
            dw_valid_d = has_data_q;
            dw_x_d     = '0;
            dw_y_d     = '0;
            dw_z_d     = '0;
            dw_addr_d  = instr_q.sram_base + product + 16'(instr_q.pad_left);
          end
          2'd1: begin
            plane_step_d = product + 16'(instr_q.pad_left) + 16'(instr_q.pad_right) + 16'd1;
          end
          default: begin
            data_rows_d = product;
            pw_init_d   = !no_entries && (pads_exist || !has_data_q);
            state_d     = StRun;
          end
        endcase
      end

      StRun: begin
        if (!rerr_q) begin
          if (!dw_valid_d && !pw_valid_d && !pw_init_d) begin
            state_d = StDone;
          end
        end else if (bursts_drained && (qc_q == '0) && !asm_full_q && !pw_valid_q
                     && !pw_init_q) begin
          err_d   = ErrAxi;
          state_d = StDone;
        end
      end

      StDone: begin
        state_d = StIdle;
      end

      default: begin
        state_d = StIdle;
      end
    endcase

    if (accept) begin
      instr_d     = in_instr;
      has_data_d  = in_has_data;
      rerr_d      = 1'b0;
      r_first_d   = 1'b1;
      qh_d        = '0;
      qt_d        = '0;
      qc_d        = '0;
      asm_full_d  = 1'b0;
      fill_d      = '0;
      head_pend_d = 1'b0;
      sticky_d    = 1'b0;
      dw_valid_d  = 1'b0;
      pw_init_d   = 1'b0;
      pw_valid_d  = 1'b0;
      if (in_elem_err) begin
        err_d   = ErrElemBytes;
        state_d = StDone;
      end else if (in_range_err) begin
        err_d   = ErrRange;
        state_d = StDone;
      end else begin
        err_d   = ErrNone;
        state_d = StSetup;
      end
    end
  end

  // wide data registers: no reset
  always_ff @(posedge clk_i) begin
    if (push) begin
      q_q <= q_write(q_q, r_rot, qt_q, push_n);
    end
    if (head_write || tail_write) begin
      asm_q <= asm_write(asm_q, head_write, head_n_q, head_q, tail_write, first_chunk,
                         last_chunk, from_lane, to_lane,
                         rotate(win, fill_q[LaneBits-1:0] - qh_q[LaneBits-1:0]));
    end
    if (complete) begin
      head_q <= rotate(win, LaneBits'(0) - qh_q[LaneBits-1:0] - take[LaneBits-1:0]);
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q      <= StIdle;
      instr_q      <= '0;
      err_q        <= ErrNone;
      has_data_q   <= 1'b0;
      rerr_q       <= 1'b0;
      r_first_q    <= 1'b1;
      qh_q         <= '0;
      qt_q         <= '0;
      qc_q         <= '0;
      asm_full_q   <= 1'b0;
      fill_q       <= '0;
      head_n_q     <= '0;
      head_pend_q  <= 1'b0;
      sticky_q     <= 1'b0;
      setup_q      <= '0;
      plane_step_q <= '0;
      data_rows_q  <= '0;
      dw_valid_q   <= 1'b0;
      dw_x_q       <= '0;
      dw_y_q       <= '0;
      dw_z_q       <= '0;
      dw_addr_q    <= '0;
      pw_init_q    <= 1'b0;
      pw_valid_q   <= 1'b0;
      pw_x_q       <= '0;
      pw_y_q       <= '0;
      pw_z_q       <= '0;
      pw_addr_q    <= '0;
    end else begin
      state_q      <= state_d;
      instr_q      <= instr_d;
      err_q        <= err_d;
      has_data_q   <= has_data_d;
      rerr_q       <= rerr_d;
      r_first_q    <= r_first_d;
      qh_q         <= qh_d;
      qt_q         <= qt_d;
      qc_q         <= qc_d;
      asm_full_q   <= asm_full_d;
      fill_q       <= fill_d;
      head_n_q     <= head_n_d;
      head_pend_q  <= head_pend_d;
      sticky_q     <= sticky_d;
      setup_q      <= setup_d;
      plane_step_q <= plane_step_d;
      data_rows_q  <= data_rows_d;
      dw_valid_q   <= dw_valid_d;
      dw_x_q       <= dw_x_d;
      dw_y_q       <= dw_y_d;
      dw_z_q       <= dw_z_d;
      dw_addr_q    <= dw_addr_d;
      pw_init_q    <= pw_init_d;
      pw_valid_q   <= pw_valid_d;
      pw_x_q       <= pw_x_d;
      pw_y_q       <= pw_y_d;
      pw_z_q       <= pw_z_d;
      pw_addr_q    <= pw_addr_d;
    end
  end

  assign instr_ready_o = (state_q == StIdle) || (state_q == StDone);
  assign done_o        = state_q == StDone;
  assign error_o       = err_q;

  // write port; data bytes from elem_bytes on are zero
  logic [EntryBytes*8-1:0] data_keep;  // bits of the bytes below elem_bytes
  assign data_keep = ~({(EntryBytes*8){1'b1}} << {eb, 3'b000});
  assign wr_valid_o = asm_full_q || pw_valid_q;
  assign wr_addr_o  = sel_pad ? pw_addr_q : dw_addr_q;
  assign wr_data_o = sel_pad ? {EntryBytes{pad_byte}}
                   : asm_q[EntryBytes*8-1:0] & data_keep;

  assign m_axi_arid    = '0;
  assign m_axi_arsize  = 3'(LaneBits);
  assign m_axi_arburst = 2'b01;  // INCR
  assign m_axi_arlock  = 1'b0;
  assign m_axi_arcache = 4'b0011;  // normal, non-cacheable, bufferable
  assign m_axi_arprot  = 3'b000;

  assign m_axi_awid    = '0;
  assign m_axi_awaddr  = '0;
  assign m_axi_awlen   = '0;
  assign m_axi_awsize  = 3'(LaneBits);
  assign m_axi_awburst = 2'b01;
  assign m_axi_awlock  = 1'b0;
  assign m_axi_awcache = 4'b0011;
  assign m_axi_awprot  = 3'b000;
  assign m_axi_awvalid = 1'b0;
  assign m_axi_wdata   = '0;
  assign m_axi_wstrb   = '0;
  assign m_axi_wlast   = 1'b0;
  assign m_axi_wvalid  = 1'b0;
  assign m_axi_bready  = 1'b1;

  logic unused_inputs;
  assign unused_inputs = ^{m_axi_awready, m_axi_wready, m_axi_bid, m_axi_bresp, m_axi_bvalid,
                           m_axi_rid, m_axi_rresp[0], instr_q.flags, instr_q.opcode,
                           instr_q.reserved, instr_q.buffer, info_valid, info_len,
                           bursts_issued};

endmodule
