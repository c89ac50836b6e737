// STORE engine DMA: executes one STORE instruction (docs/isa.md, STORE; the golden model's
// `_store` in compiler/golden.py, the reference) as OUT buffer reads and AXI4 write bursts.
//
// Pipelined to the cycle model (compiler/timing.py: dram_latency + max(data beats, entries)):
//   - entries are read in raster order (z, y, x), one per cycle at most, from OUT entry
//     sram_base + (z*y_size + y)*x_size + x (16 bits, wrapping), each exactly once. The read
//     port is a simple synchronous-read BRAM: rd_addr_o is sampled at the clock edge where
//     rd_valid_o is high and rd_data_i holds that entry on the next cycle (byte i at
//     [8i +: 8]), not later; there is no backpressure, so reads run at most two entries
//     ahead of the splitter, which keeps them in registers;
//   - the splitter appends each entry's bytes [0, elem_bytes) to a byte queue (4 beats
//     deep), up to one beat of bytes per cycle, across entry boundaries, taking an entry
//     straight from rd_data_i when no older one waits;
//   - dpu_dma_bursts writes the instruction's contiguous DRAM runs (a plane, a row or an
//     entry, as `Dma.runs`) as whole full-width INCR bursts; W beats take the queue's bytes
//     into their byte lanes, with strobes on exactly the run's bytes, and may precede their
//     AW handshake. Up to MaxOutstanding bursts are outstanding; bready is always high.
//
// Timing: the instruction is accepted (instr_valid_i && instr_ready_o) in StIdle or in the
// done cycle (done_o is high one cycle per instruction, so twice in a row when the next one
// fails its checks at once). The window check is combinational on instr_i, so the first
// read and the first AW are presented in the cycle after the accepting edge, the first W
// beat two cycles later. With a memory that takes AW and W at once and answers each burst
// L cycles after its last W beat (handshake to handshake), done_o is high at most
// L + max(beats, entries) + 3 cycles after the accepting edge (2, plus 1 when the last
// entry's bytes straddle two beats).
//
// Errors (error_o, valid with done_o and held until the next instruction is accepted):
//   ErrElemBytes  elem_bytes > EntryBytes: nothing read or written.
//   ErrRange      a DRAM byte of the transfer outside [0, limit_i): checked on the whole
//                 span before any read, so no AXI request is issued and nothing is written.
//   ErrAxi        SLVERR/DECERR on a write response: no further bursts are requested, the
//                 bursts already requested are completed, the outstanding responses are
//                 collected; done_o once the last one is in.
// base_i and limit_i are sampled when the instruction is accepted. The read channels of
// m_axi exist only so the port is a complete AXI4 master; they are tied off.

module dpu_store_dma
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

  // STORE instruction word
  input  logic [InstrBits-1:0]       instr_i,
  input  logic                       instr_valid_i,
  output logic                       instr_ready_o,

  // data window
  input  logic [AxiAddrBits-1:0]     base_i,
  input  logic [AxiAddrBits-1:0]     limit_i,

  // OUT buffer read port (synchronous read: data one cycle after the address)
  output logic                       rd_valid_o,
  output logic [15:0]                rd_addr_o,
  input  logic [EntryBytes*8-1:0]    rd_data_i,

  output logic                       done_o,
  output logic [1:0]                 error_o,

  // AXI4 master, write only
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
  // byte queue: a W beat needs all its bytes at once, so room for the splitter to go on
  // while a beat waits for its last bytes
  localparam int unsigned QRows     = 4;
  localparam int unsigned QBytes    = QRows * BeatBytes;
  localparam int unsigned QPtrBits  = LaneBits + 2;
  localparam int unsigned QCntBits  = LaneBits + 3;

  localparam int unsigned EntBits   = Chunks * AxiDataBits;  // entry, padded to whole beats

  typedef logic [AxiDataBits-1:0] beat_t;  // byte m at [8m +: 8]

  typedef enum logic [1:0] {
    StIdle,
    StRun,
    StDone
  } state_e;

  // rotate a beat's byte lanes up by r: lane m goes to lane (m + r) mod BeatBytes
  // (the upper half of {x, x} << 8r; a shift by AxiDataBits gives zero, so r = 0 is x)
  function automatic beat_t rotate(beat_t x, logic [LaneBits-1:0] r);
    rotate = (x << {r, 3'b000}) | (x >> (AxiDataBits - 32'({r, 3'b000})));
  endfunction

  state_e           state_d, state_q;
  store_instr_t     instr_d, instr_q, in_instr;
  logic [1:0]       err_d, err_q;
  logic             accept, in_elem_err, in_range_err, in_has_data, running;
  logic             bursts_drained, bursts_issued;

  assign in_instr    = store_instr_t'(instr_i);
  assign accept      = instr_valid_i && instr_ready_o;
  assign in_elem_err = 32'(in_instr.elem_bytes) > EntryBytes;
  assign running     = state_q == StRun;

  // -- AW channel: the runs as bursts ----------------------------------------------------
  logic                berr_d, berr_q;
  logic [LaneBits-1:0] info_lo, info_hi;
  logic                info_valid;
  logic [7:0]          info_len;
  logic                w_fire, w_last_fire, b_fire;

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
    .stop_i       (berr_q),
    .drained_o    (bursts_drained),
    .issued_o     (bursts_issued),
    .ax_valid_o   (m_axi_awvalid),
    .ax_ready_i   (m_axi_awready),
    .ax_addr_o    (m_axi_awaddr),
    .ax_len_o     (m_axi_awlen),
    .info_valid_o (info_valid),
    .info_lo_o    (info_lo),
    .info_hi_o    (info_hi),
    .info_len_o   (info_len),
    .info_pop_i   (w_last_fire),
    .burst_done_i (b_fire)
  );

  // -- OUT reads, at most two entries ahead of the splitter ------------------------------
  logic               rd_more_d, rd_more_q;  // entries left to read
  logic [15:0]        rd_addr_d, rd_addr_q, rx_d, rx_q, ry_d, ry_q, rz_d, rz_q;
  logic               inflight_d, inflight_q;  // rd_data_i holds an entry this cycle
  logic [EntBits-1:0] slot_q [2];               // entries read and not yet queued
  logic               old_d, old_q;              // the slot of the oldest
  logic [1:0]         ent_n_d, ent_n_q;          // entries in the slots
  logic               rd_go;
  logic [EntBits-1:0] rd_entry;
  // the oldest entry to queue and the next one's first chunk: from the slots, then the one
  // on rd_data_i
  logic [EntBits-1:0]     ent0;
  logic [AxiDataBits-1:0] ent1_head;
  logic [1:0]         ents_n;

  // -- splitter: entries -> byte queue ---------------------------------------------------
  logic [QBytes*8-1:0]  q_q;  // circular, byte q at [8q +: 8]
  logic [QPtrBits-1:0]  qh_d, qh_q, qt_d, qt_q;
  logic [QCntBits-1:0]  qc_d, qc_q;
  logic [FillBits-1:0]  fill_d, fill_q;  // bytes of slot 0 already queued
  logic [FillBits-1:0]  eb, need, take, head_n;
  logic                 can_push, complete;
  logic [FillBits-LaneBits-1:0] fill_chunk;
  beat_t                cur;

  assign eb       = FillBits'(instr_q.elem_bytes);
  assign ents_n   = ent_n_q + 2'(inflight_q);
  assign can_push = running && (ents_n != '0) && (qc_q <= QCntBits'(QBytes - BeatBytes));
  assign need     = eb - fill_q;
  assign take     = !can_push ? '0
                  : (32'(need) > BeatBytes) ? FillBits'(BeatBytes) : need;
  assign complete = (take != '0) && (take == need);
  always_comb begin
    head_n = '0;
    if (complete && (ents_n == 2'd2)) begin
      head_n = FillBits'(BeatBytes) - take;
      if (head_n > eb - FillBits'(1)) head_n = eb - FillBits'(1);
    end
  end

  assign ent0 = (ent_n_q == '0) ? rd_entry : slot_q[old_q];
  always_comb begin
    ent1_head = rd_entry[AxiDataBits-1:0];
    if (ent_n_q == 2'd2) begin
      ent1_head = slot_q[!old_q][AxiDataBits-1:0];
    end
  end

  // slot 0's bytes from `fill` on, each in its own lane (the chunk at fill, then the next)
  assign fill_chunk = fill_q[FillBits-1:LaneBits];
  always_comb begin
    for (int unsigned m = 0; m < BeatBytes; m++) begin
      cur[8*m +: 8] = 8'd0;
      for (int unsigned c = 0; c < Chunks; c++) begin
        if (32'(fill_chunk) + ((LaneBits'(m) >= fill_q[LaneBits-1:0]) ? 0 : 1) == c) begin
          cur[8*m +: 8] = ent0[8*(c*BeatBytes+m) +: 8];
        end
      end
    end
  end

  assign rd_entry = EntBits'(rd_data_i);

  // the byte queue with slot 0's tail and slot 1's head written from the tail on (computed
  // in the register's process, in the cycles bytes are queued)
  function automatic logic [QBytes*8-1:0] q_write(logic [QBytes*8-1:0] old, beat_t tail_b,
                                                  beat_t head_b, logic [QPtrBits-1:0] tail,
                                                  logic [FillBits-1:0] tail_n,
                                                  logic [FillBits-1:0] head_cnt);
    logic [QPtrBits-1:0] off;
    q_write = old;
    for (int unsigned q = 0; q < QBytes; q++) begin
      off = QPtrBits'(q) - tail;
      if (32'(off) < 32'(tail_n)) begin
        q_write[8*q +: 8] = tail_b[8*(q%BeatBytes) +: 8];
      end else if (32'(off) < 32'(tail_n) + 32'(head_cnt)) begin
        q_write[8*q +: 8] = head_b[8*(q%BeatBytes) +: 8];
      end
    end
  endfunction
  assign rd_go = running && rd_more_q
              && (ents_n - 2'(complete) < 2'd2);

  // -- W beats from the byte queue -------------------------------------------------------
  logic [7:0]           wb_d, wb_q;  // beat of the burst
  logic [LaneBits-1:0]  w_lo, w_hi;
  logic [QCntBits-1:0]  w_n;
  beat_t                win;

  assign w_lo = (wb_q == '0) ? info_lo : '0;
  assign w_hi = (wb_q == info_len) ? info_hi : '1;
  assign w_n  = QCntBits'(w_hi) - QCntBits'(w_lo) + QCntBits'(1);
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

  // unstrobed lanes are zero, so the beat holds still while it waits for wready
  beat_t w_rot;
  assign w_rot        = rotate(win, w_lo - qh_q[LaneBits-1:0]);
  assign m_axi_wvalid = running && info_valid && (qc_q >= w_n);
  assign m_axi_wlast  = wb_q == info_len;
  always_comb begin
    for (int unsigned m = 0; m < BeatBytes; m++) begin
      m_axi_wstrb[m]        = (LaneBits'(m) >= w_lo) && (LaneBits'(m) <= w_hi);
      m_axi_wdata[8*m +: 8] = m_axi_wstrb[m] ? w_rot[8*m +: 8] : 8'd0;
    end
  end
  assign w_fire      = m_axi_wvalid && m_axi_wready;
  assign w_last_fire = w_fire && m_axi_wlast;
  assign b_fire      = m_axi_bvalid;

  always_comb begin
    state_d    = state_q;
    instr_d    = instr_q;
    err_d      = err_q;
    berr_d     = berr_q || (b_fire && m_axi_bresp[1]);
    rd_more_d  = rd_more_q;
    rd_addr_d  = rd_addr_q;
    rx_d       = rx_q;
    ry_d       = ry_q;
    rz_d       = rz_q;
    inflight_d = rd_go;
    old_d      = old_q ^ (complete && (ent_n_q != '0));
    ent_n_d    = ents_n - 2'(complete);
    qh_d       = qh_q;
    qt_d       = qt_q + QPtrBits'(take) + QPtrBits'(head_n);
    qc_d       = qc_q + QCntBits'(take) + QCntBits'(head_n);
    fill_d     = complete ? head_n : fill_q + take;
    wb_d       = wb_q;

    // reads step through the block
    if (rd_go) begin
      rd_addr_d = rd_addr_q + 16'd1;
      if (rx_q != instr_q.x_size - 16'd1) begin
        rx_d = rx_q + 16'd1;
      end else begin
        rx_d = '0;
        if (ry_q != instr_q.y_size - 16'd1) begin
          ry_d = ry_q + 16'd1;
        end else begin
          ry_d = '0;
          rz_d = rz_q + 16'd1;
          if (rz_q == instr_q.z_size - 16'd1) begin
            rd_more_d = 1'b0;
          end
        end
      end
    end


    // W beats out of it
    if (w_fire) begin
      qh_d = qh_q + QPtrBits'(w_n);
      qc_d = qc_d - w_n;
      wb_d = m_axi_wlast ? '0 : wb_q + 8'd1;
    end

    unique case (state_q)
      StIdle: ;

      StRun: begin
        if (!berr_q) begin
          if (!rd_more_d && (ent_n_d == '0) && !inflight_d && bursts_issued
              && bursts_drained) begin
            state_d = StDone;
            if (berr_d) begin  // the last response, arriving now, is an error
              err_d = ErrAxi;
            end
          end
        end else if (bursts_drained && !inflight_q) begin
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
      instr_d    = in_instr;
      berr_d     = 1'b0;
      rd_more_d  = 1'b0;
      rd_addr_d  = in_instr.sram_base;
      rx_d       = '0;
      ry_d       = '0;
      rz_d       = '0;
      inflight_d = 1'b0;
      ent_n_d    = '0;
      old_d      = 1'b0;
      qh_d       = '0;
      qt_d       = '0;
      qc_d       = '0;
      fill_d     = '0;
      wb_d       = '0;
      state_d    = StDone;
      if (in_elem_err) begin
        err_d = ErrElemBytes;
      end else if (in_range_err) begin
        err_d = ErrRange;
      end else begin
        err_d = ErrNone;
        if (in_has_data) begin
          rd_more_d = 1'b1;
          state_d   = StRun;
        end
      end
    end
  end

  // wide data registers: no reset
  always_ff @(posedge clk_i) begin
    if (take != '0) begin
      q_q <= q_write(q_q, rotate(cur, qt_q[LaneBits-1:0] - fill_q[LaneBits-1:0]),
                     rotate(ent1_head, qt_q[LaneBits-1:0] + take[LaneBits-1:0]), qt_q, take,
                     head_n);
    end
    // the entry read lands behind the others, unless queued straight away
    if (inflight_q && !((ent_n_q == '0) && complete)) begin
      slot_q[old_q ^ (ent_n_q == 2'd1)] <= rd_entry;
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q    <= StIdle;
      instr_q    <= '0;
      err_q      <= ErrNone;
      berr_q     <= 1'b0;
      rd_more_q  <= 1'b0;
      rd_addr_q  <= '0;
      rx_q       <= '0;
      ry_q       <= '0;
      rz_q       <= '0;
      inflight_q <= 1'b0;
      ent_n_q    <= '0;
      old_q      <= 1'b0;
      qh_q       <= '0;
      qt_q       <= '0;
      qc_q       <= '0;
      fill_q     <= '0;
      wb_q       <= '0;
    end else begin
      state_q    <= state_d;
      instr_q    <= instr_d;
      err_q      <= err_d;
      berr_q     <= berr_d;
      rd_more_q  <= rd_more_d;
      rd_addr_q  <= rd_addr_d;
      rx_q       <= rx_d;
      ry_q       <= ry_d;
      rz_q       <= rz_d;
      inflight_q <= inflight_d;
      ent_n_q    <= ent_n_d;
      old_q      <= old_d;
      qh_q       <= qh_d;
      qt_q       <= qt_d;
      qc_q       <= qc_d;
      fill_q     <= fill_d;
      wb_q       <= wb_d;
    end
  end

  assign instr_ready_o = (state_q == StIdle) || (state_q == StDone);
  assign done_o        = state_q == StDone;
  assign error_o       = err_q;

  assign rd_valid_o = rd_go;
  assign rd_addr_o  = rd_addr_q;

  assign m_axi_awid    = '0;
  assign m_axi_awsize  = 3'(LaneBits);
  assign m_axi_awburst = 2'b01;  // INCR
  assign m_axi_awlock  = 1'b0;
  assign m_axi_awcache = 4'b0011;  // normal, non-cacheable, bufferable
  assign m_axi_awprot  = 3'b000;
  assign m_axi_bready  = 1'b1;

  assign m_axi_arid    = '0;
  assign m_axi_araddr  = '0;
  assign m_axi_arlen   = '0;
  assign m_axi_arsize  = 3'(LaneBits);
  assign m_axi_arburst = 2'b01;
  assign m_axi_arlock  = 1'b0;
  assign m_axi_arcache = 4'b0011;
  assign m_axi_arprot  = 3'b000;
  assign m_axi_arvalid = 1'b0;
  assign m_axi_rready  = 1'b1;

  logic unused_inputs;
  assign unused_inputs = ^{m_axi_arready, m_axi_rid, m_axi_rdata, m_axi_rresp, m_axi_rlast,
                           m_axi_rvalid, m_axi_bid, m_axi_bresp[0], instr_q.flags,
                           instr_q.opcode, instr_q.reserved, instr_q.dram_offset,
                           instr_q.y_stride, instr_q.x_stride, instr_q.z_stride,
                           instr_q.sram_base};

endmodule
