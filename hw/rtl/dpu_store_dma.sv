// STORE engine DMA: executes one STORE instruction (docs/isa.md, STORE; the golden model's
// `_store` in compiler/golden.py, the reference) as OUT buffer reads and AXI4 write bursts.
//
// Entries are read in raster order (z, y, x), one at a time, from OUT entry
// sram_base + (z*y_size + y)*x_size + x (16 bits, wrapping):
//   - the buffer read port is a simple synchronous-read BRAM: rd_addr_o is sampled at the
//     clock edge where rd_valid_o is high and rd_data_i holds that entry on the next cycle
//     (byte i at [8i +: 8]); there is no backpressure;
//   - the entry's bytes [0, elem_bytes) go to DRAM at a = base_i + dram_offset
//     + z*z_stride + y*y_stride + x*x_stride, as whole aligned beats with byte strobes on
//     exactly those bytes, in INCR bursts of full bus width that never exceed
//     MaxBurstBeats beats nor cross a 4 KiB boundary. W beats of a burst may be presented
//     together with its AW request; one burst's AW and W are complete before the next.
// Write responses are collected concurrently (bready is always high); at most MaxOut
// bursts are outstanding. done_o pulses once every B response has been received.
//
// Errors (error_o, valid with done_o and held until the next instruction is accepted):
//   ErrElemBytes  elem_bytes > EntryBytes: nothing read or written.
//   ErrRange      a DRAM byte of the transfer outside [0, limit_i): checked on the whole
//                 span before any read, so no AXI request is issued and nothing is written.
//   ErrAxi        SLVERR/DECERR on a write response: the burst in progress is completed,
//                 no further bursts are issued, the outstanding responses are collected.
// base_i and limit_i are sampled when the instruction is accepted. The read channels of
// m_axi exist only so the port is a complete AXI4 master; they are tied off.

module dpu_store_dma
  import dpu_isa_pkg::*;
#(
  parameter int unsigned AxiDataBits   = 64,
  parameter int unsigned AxiAddrBits   = 32,
  parameter int unsigned AxiIdBits     = 1,
  parameter int unsigned EntryBytes    = 16,
  parameter int unsigned MaxBurstBeats = 16
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
  localparam int unsigned BeatShift = $clog2(BeatBytes);
  // beats one entry can touch: elem_bytes <= EntryBytes starting at any byte lane
  localparam int unsigned MaxBeats  = (EntryBytes + 2 * BeatBytes - 2) / BeatBytes;
  localparam int unsigned BeatCntW  = $clog2(MaxBeats + 1);
  localparam int unsigned BufBits   = MaxBeats * AxiDataBits;
  localparam int unsigned BufBytes  = MaxBeats * BeatBytes;
  localparam int unsigned EntryBits = EntryBytes * 8;
  localparam int unsigned SpanBits  = 64;
  localparam int unsigned PageBeats = 4096 / BeatBytes;
  localparam int unsigned OutBits   = 8;  // outstanding bursts: at most 2^OutBits - 1

  typedef enum logic [2:0] {
    StIdle,
    StCheck,
    StEntry,
    StLatch,
    StSend,
    StDrain,
    StDone
  } state_e;

  state_e                   state_d, state_q;
  store_instr_t             instr_d, instr_q;
  logic [AxiAddrBits-1:0]   base_d, base_q, limit_d, limit_q;
  logic [1:0]               err_d, err_q;
  // position in the block, entry index, DRAM offsets of plane, row and element
  logic [15:0]              z_d, z_q, y_d, y_q, x_d, x_q, idx_d, idx_q;
  logic [31:0]              plane_d, plane_q, row_d, row_q, elem_d, elem_q;
  // bursts of one entry
  logic [AxiAddrBits-1:0]   aw_addr_d, aw_addr_q;
  logic [7:0]               aw_len_d, aw_len_q;
  logic                     aw_valid_d, aw_valid_q;
  logic [BeatCntW-1:0]      aw_left_d, aw_left_q;  // beats not yet requested
  logic [BeatCntW-1:0]      w_left_d, w_left_q;    // beats of the current burst not yet sent
  logic [OutBits-1:0]       out_d, out_q;          // bursts requested, response not received
  logic                     berr_d, berr_q;
  // the entry's beats and strobes, the next beat in the low bits
  logic [BufBits-1:0]       buf_d, buf_q;
  logic [BufBytes-1:0]      strb_d, strb_q;

  // decoded geometry
  logic                has_data, range_err, elem_err;
  logic [SpanBits-1:0] span_last;
  logic                last_x, last_y, last_z;

  assign has_data = (instr_q.z_size != '0) && (instr_q.y_size != '0)
                 && (instr_q.x_size != '0) && (instr_q.elem_bytes != '0);
  assign span_last = SpanBits'(instr_q.dram_offset)
                   + SpanBits'(instr_q.z_size - 16'd1) * SpanBits'(instr_q.z_stride)
                   + SpanBits'(instr_q.y_size - 16'd1) * SpanBits'(instr_q.y_stride)
                   + SpanBits'(instr_q.x_size - 16'd1) * SpanBits'(instr_q.x_stride)
                   + SpanBits'(instr_q.elem_bytes) - SpanBits'(1);
  assign range_err = has_data && (span_last >= SpanBits'(limit_q));
  assign elem_err  = 32'(instr_q.elem_bytes) > EntryBytes;

  assign last_x = x_q == instr_q.x_size - 16'd1;
  assign last_y = y_q == instr_q.y_size - 16'd1;
  assign last_z = z_q == instr_q.z_size - 16'd1;

  // the entry's DRAM address, its byte lane in the first beat, and its beat count
  logic [AxiAddrBits-1:0] entry_addr;
  logic [BeatShift-1:0]   lane;
  logic [BeatCntW-1:0]    entry_beats;
  assign entry_addr  = base_q + AxiAddrBits'(elem_q);
  assign lane        = entry_addr[BeatShift-1:0];
  assign entry_beats = BeatCntW'((32'(lane) + 32'(instr_q.elem_bytes) - 32'd1) >> BeatShift)
                     + BeatCntW'(1);

  // the entry read from OUT, bytes from elem_bytes on dropped, and their strobes
  logic [EntryBits-1:0]  entry_data;
  logic [EntryBytes-1:0] entry_strb;
  always_comb begin
    entry_data = rd_data_i;
    entry_strb = '1;
    for (int unsigned i = 0; i < EntryBytes; i++) begin
      if (i >= 32'(instr_q.elem_bytes)) begin
        entry_data[8*i +: 8] = 8'd0;
        entry_strb[i]        = 1'b0;
      end
    end
  end

  // next burst: at most aw_left_q beats, MaxBurstBeats, and the beats up to the 4 KiB page
  logic [31:0] page_left, burst_beats;
  assign page_left = 32'(PageBeats) - 32'(aw_addr_q[11:BeatShift]);
  always_comb begin
    burst_beats = 32'(aw_left_q);
    if (burst_beats > MaxBurstBeats) burst_beats = MaxBurstBeats;
    if (burst_beats > page_left) burst_beats = page_left;
  end

  logic aw_fire, w_fire, b_fire, entry_read, advance;
  assign aw_fire = aw_valid_q && m_axi_awready;
  assign w_fire  = (w_left_q != '0) && m_axi_wready;
  assign b_fire  = m_axi_bvalid;

  always_comb begin
    state_d    = state_q;
    instr_d    = instr_q;
    base_d     = base_q;
    limit_d    = limit_q;
    err_d      = err_q;
    z_d        = z_q;
    y_d        = y_q;
    x_d        = x_q;
    idx_d      = idx_q;
    plane_d    = plane_q;
    row_d      = row_q;
    elem_d     = elem_q;
    aw_addr_d  = aw_addr_q;
    aw_len_d   = aw_len_q;
    aw_valid_d = aw_valid_q;
    aw_left_d  = aw_left_q;
    w_left_d   = w_left_q;
    berr_d     = berr_q;
    buf_d      = buf_q;
    strb_d     = strb_q;
    entry_read = 1'b0;
    advance    = 1'b0;

    // responses are collected in every state; a burst counts as outstanding once requested
    out_d = out_q - (b_fire ? OutBits'(1) : '0);
    if (b_fire && m_axi_bresp[1]) begin
      berr_d = 1'b1;
    end

    unique case (state_q)
      StIdle: begin
        if (instr_valid_i) begin
          instr_d = store_instr_t'(instr_i);
          base_d  = base_i;
          limit_d = limit_i;
          err_d   = ErrNone;
          berr_d  = 1'b0;
          state_d = StCheck;
        end
      end

      StCheck: begin
        z_d     = '0;
        y_d     = '0;
        x_d     = '0;
        idx_d   = '0;
        plane_d = instr_q.dram_offset;
        row_d   = instr_q.dram_offset;
        elem_d  = instr_q.dram_offset;
        if (elem_err) begin
          err_d   = ErrElemBytes;
          state_d = StDone;
        end else if (range_err) begin
          err_d   = ErrRange;
          state_d = StDone;
        end else if (!has_data) begin
          state_d = StDone;
        end else begin
          state_d = StEntry;
        end
      end

      StEntry: begin
        entry_read = 1'b1;
        state_d    = StLatch;
      end

      StLatch: begin
        buf_d     = BufBits'(entry_data) << {lane, 3'b000};
        strb_d    = BufBytes'(entry_strb) << lane;
        aw_addr_d = {entry_addr[AxiAddrBits-1:BeatShift], {BeatShift{1'b0}}};
        aw_left_d = entry_beats;
        state_d   = StSend;
      end

      StSend: begin
        if (aw_fire) begin
          aw_valid_d = 1'b0;
          aw_addr_d  = aw_addr_q + (AxiAddrBits'(aw_len_q) + AxiAddrBits'(1) << BeatShift);
        end
        if (w_fire) begin
          w_left_d = w_left_q - BeatCntW'(1);
          buf_d    = buf_q >> AxiDataBits;
          strb_d   = strb_q >> BeatBytes;
        end
        if (!aw_valid_q && (w_left_q == '0) && (aw_left_q != '0) && !berr_q
            && (out_q != '1)) begin
          aw_valid_d = 1'b1;
          aw_len_d   = 8'(burst_beats - 32'd1);
          aw_left_d  = aw_left_q - BeatCntW'(burst_beats);
          w_left_d   = BeatCntW'(burst_beats);
          out_d      = out_d + OutBits'(1);
        end
        if (!aw_valid_q && (w_left_q == '0) && ((aw_left_q == '0) || berr_q)) begin
          if (berr_q) begin
            state_d = StDrain;
          end else begin
            advance = 1'b1;
            state_d = StEntry;
          end
        end
      end

      StDrain: begin
        if (out_q == '0) begin
          if (berr_q) begin
            err_d = ErrAxi;
          end
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

    // step to the next entry in raster order, keeping the DRAM offsets in step
    if (advance) begin
      idx_d = idx_q + 16'd1;
      if (last_x) begin
        x_d = '0;
        if (last_y) begin
          y_d     = '0;
          z_d     = z_q + 16'd1;
          plane_d = plane_q + instr_q.z_stride;
          row_d   = plane_d;
          elem_d  = plane_d;
          if (last_z) begin
            state_d = StDrain;
          end
        end else begin
          y_d    = y_q + 16'd1;
          row_d  = row_q + instr_q.y_stride;
          elem_d = row_d;
        end
      end else begin
        x_d    = x_q + 16'd1;
        elem_d = elem_q + 32'(instr_q.x_stride);
      end
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      state_q    <= StIdle;
      instr_q    <= '0;
      base_q     <= '0;
      limit_q    <= '0;
      err_q      <= ErrNone;
      z_q        <= '0;
      y_q        <= '0;
      x_q        <= '0;
      idx_q      <= '0;
      plane_q    <= '0;
      row_q      <= '0;
      elem_q     <= '0;
      aw_addr_q  <= '0;
      aw_len_q   <= '0;
      aw_valid_q <= 1'b0;
      aw_left_q  <= '0;
      w_left_q   <= '0;
      out_q      <= '0;
      berr_q     <= 1'b0;
      buf_q      <= '0;
      strb_q     <= '0;
    end else begin
      state_q    <= state_d;
      instr_q    <= instr_d;
      base_q     <= base_d;
      limit_q    <= limit_d;
      err_q      <= err_d;
      z_q        <= z_d;
      y_q        <= y_d;
      x_q        <= x_d;
      idx_q      <= idx_d;
      plane_q    <= plane_d;
      row_q      <= row_d;
      elem_q     <= elem_d;
      aw_addr_q  <= aw_addr_d;
      aw_len_q   <= aw_len_d;
      aw_valid_q <= aw_valid_d;
      aw_left_q  <= aw_left_d;
      w_left_q   <= w_left_d;
      out_q      <= out_d;
      berr_q     <= berr_d;
      buf_q      <= buf_d;
      strb_q     <= strb_d;
    end
  end

  assign instr_ready_o = state_q == StIdle;
  assign done_o        = state_q == StDone;
  assign error_o       = err_q;

  assign rd_valid_o = entry_read;
  assign rd_addr_o  = instr_q.sram_base + idx_q;

  assign m_axi_awid    = '0;
  assign m_axi_awaddr  = aw_addr_q;
  assign m_axi_awlen   = aw_len_q;
  assign m_axi_awsize  = 3'(BeatShift);
  assign m_axi_awburst = 2'b01;  // INCR
  assign m_axi_awlock  = 1'b0;
  assign m_axi_awcache = 4'b0011;  // normal, non-cacheable, bufferable
  assign m_axi_awprot  = 3'b000;
  assign m_axi_awvalid = aw_valid_q;
  assign m_axi_wdata   = buf_q[AxiDataBits-1:0];
  assign m_axi_wstrb   = strb_q[BeatBytes-1:0];
  assign m_axi_wlast   = w_left_q == BeatCntW'(1);
  assign m_axi_wvalid  = w_left_q != '0;
  assign m_axi_bready  = 1'b1;

  assign m_axi_arid    = '0;
  assign m_axi_araddr  = '0;
  assign m_axi_arlen   = '0;
  assign m_axi_arsize  = 3'(BeatShift);
  assign m_axi_arburst = 2'b01;
  assign m_axi_arlock  = 1'b0;
  assign m_axi_arcache = 4'b0011;
  assign m_axi_arprot  = 3'b000;
  assign m_axi_arvalid = 1'b0;
  assign m_axi_rready  = 1'b1;

  logic unused_inputs;
  assign unused_inputs = ^{m_axi_arready, m_axi_rid, m_axi_rdata, m_axi_rresp, m_axi_rlast,
                           m_axi_rvalid, m_axi_bid, m_axi_bresp[0], instr_q.flags,
                           instr_q.opcode, instr_q.reserved};

endmodule
