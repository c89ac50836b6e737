// LOAD engine DMA: executes one LOAD instruction (docs/isa.md, LOAD; compiler/dma.py
// `Dma.load_entries`, the reference) as AXI4 read bursts and buffer-entry writes.
//
// Entries are produced in raster order (z, y, x over the padded plane), one at a time:
//   - a padding entry is written in one cycle: pad_value in every byte;
//   - a data entry with elem_bytes = 0 is written as zeros, without a read;
//   - a data entry's bytes [a, a + elem_bytes) (a = base_i + DRAM offset) are fetched as
//     whole aligned beats, in INCR bursts of full bus width that never exceed MaxBurstBeats
//     beats nor cross a 4 KiB boundary; the beats land in a beat buffer and the entry is
//     extracted (shift by a's byte lane, zero beyond elem_bytes) and written one cycle
//     after the last beat. One entry's bursts may be outstanding at a time.
// wr_addr_o = sram_base + (z*rows + y)*cols + x (16 bits, wrapping), wr_data_o is the raw
// bytes, byte i at [8i +: 8] (ACC sign extension is the buffer's job).
//
// Errors (error_o, valid with done_o and held until the next instruction is accepted):
//   ErrElemBytes  elem_bytes > EntryBytes: nothing read or written.
//   ErrRange      a DRAM byte of the transfer outside [0, limit_i): checked on the whole
//                 span before any read, so no AXI request is issued and nothing is written.
//   ErrAxi        SLVERR/DECERR on a read beat: no further bursts are issued, the
//                 outstanding beats are drained, the entry being fetched is not written.
// base_i and limit_i are sampled when the instruction is accepted. The write channels of
// m_axi exist only so the port is a complete AXI4 master; they are tied off.

module dpu_load_dma
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

  // LOAD instruction word
  input  logic [InstrBits-1:0]       instr_i,
  input  logic                       instr_valid_i,
  output logic                       instr_ready_o,

  // data window
  input  logic [AxiAddrBits-1:0]     base_i,
  input  logic [AxiAddrBits-1:0]     limit_i,

  // buffer write port (no backpressure)
  output logic                       wr_valid_o,
  output logic [15:0]                wr_addr_o,
  output logic [EntryBytes*8-1:0]    wr_data_o,

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
  localparam int unsigned BeatShift = $clog2(BeatBytes);
  // beats one entry can touch: elem_bytes <= EntryBytes starting at any byte lane
  localparam int unsigned MaxBeats  = (EntryBytes + 2 * BeatBytes - 2) / BeatBytes;
  localparam int unsigned BeatCntW  = $clog2(MaxBeats + 1);
  localparam int unsigned BufBits   = MaxBeats * AxiDataBits;
  localparam int unsigned EntryBits = EntryBytes * 8;
  localparam int unsigned DimBits   = 17;  // rows, cols: 16-bit size plus two 6-bit pads
  localparam int unsigned SpanBits  = 64;
  localparam int unsigned PageBeats = 4096 / BeatBytes;

  typedef enum logic [2:0] {
    StIdle,
    StCheck,
    StEntry,
    StFetch,
    StWrite,
    StDone
  } state_e;

  state_e                   state_d, state_q;
  load_instr_t              instr_d, instr_q;
  logic [AxiAddrBits-1:0]   base_d, base_q, limit_d, limit_q;
  logic [1:0]               err_d, err_q;
  // position in the padded block, entry index, DRAM offsets of plane, row and element
  logic [15:0]              z_d, z_q, idx_d, idx_q;
  logic [DimBits-1:0]       y_d, y_q, x_d, x_q;
  logic [31:0]              plane_d, plane_q, row_d, row_q, elem_d, elem_q;
  // fetch of one data entry
  logic [AxiAddrBits-1:0]   ar_addr_d, ar_addr_q;
  logic [7:0]               ar_len_d, ar_len_q;
  logic                     ar_valid_d, ar_valid_q;
  logic [BeatCntW-1:0]      ar_left_d, ar_left_q;  // beats not yet requested
  logic [BeatCntW-1:0]      out_d, out_q;          // beats requested, not yet received
  logic [BeatCntW-1:0]      recv_d, recv_q;        // beats received
  logic                     rerr_d, rerr_q;
  logic [BeatShift-1:0]     lane_d, lane_q;        // byte lane of the entry's first byte
  logic [BufBits-1:0]       buf_d, buf_q;

  // decoded geometry
  logic [DimBits-1:0]  rows, cols, y_end, x_end;
  logic                has_data, range_err, no_entries, elem_err;
  logic [SpanBits-1:0] span_last;
  logic                y_data, x_data, is_data, last_x, last_y, last_z;
  logic [7:0]          pad_byte;

  assign rows = DimBits'(instr_q.pad_top) + DimBits'(instr_q.y_size)
              + DimBits'(instr_q.pad_bottom);
  assign cols = DimBits'(instr_q.pad_left) + DimBits'(instr_q.x_size)
              + DimBits'(instr_q.pad_right);
  assign y_end = DimBits'(instr_q.pad_top) + DimBits'(instr_q.y_size);
  assign x_end = DimBits'(instr_q.pad_left) + DimBits'(instr_q.x_size);

  assign has_data = (instr_q.z_size != '0) && (instr_q.y_size != '0)
                 && (instr_q.x_size != '0) && (instr_q.elem_bytes != '0);
  assign span_last = SpanBits'(instr_q.dram_offset)
                   + SpanBits'(instr_q.z_size - 16'd1) * SpanBits'(instr_q.z_stride)
                   + SpanBits'(instr_q.y_size - 16'd1) * SpanBits'(instr_q.y_stride)
                   + SpanBits'(instr_q.x_size - 16'd1) * SpanBits'(instr_q.x_stride)
                   + SpanBits'(instr_q.elem_bytes) - SpanBits'(1);
  assign range_err  = has_data && (span_last >= SpanBits'(limit_q));
  assign elem_err   = 32'(instr_q.elem_bytes) > EntryBytes;
  assign no_entries = (instr_q.z_size == '0) || (rows == '0) || (cols == '0);

  assign y_data  = (y_q >= DimBits'(instr_q.pad_top)) && (y_q < y_end);
  assign x_data  = (x_q >= DimBits'(instr_q.pad_left)) && (x_q < x_end);
  assign is_data = y_data && x_data;
  assign last_x  = x_q == cols - DimBits'(1);
  assign last_y  = y_q == rows - DimBits'(1);
  assign last_z  = z_q == instr_q.z_size - 16'd1;

  assign pad_byte = instr_q.pad_value;

  // the current data entry: beats shifted down to its first byte, zero from elem_bytes on
  logic [EntryBits-1:0] entry_data;
  always_comb begin
    entry_data = EntryBits'(buf_q >> {lane_q, 3'b000});
    for (int unsigned i = 0; i < EntryBytes; i++) begin
      if (i >= 32'(instr_q.elem_bytes)) begin
        entry_data[8*i +: 8] = 8'd0;
      end
    end
  end

  // the entry's first beat and beat count
  logic [AxiAddrBits-1:0] entry_addr;
  logic [BeatCntW-1:0]    entry_beats;
  assign entry_addr  = base_q + AxiAddrBits'(elem_q);
  assign entry_beats = BeatCntW'((32'(entry_addr[BeatShift-1:0]) + 32'(instr_q.elem_bytes)
                                  - 32'd1) >> BeatShift) + BeatCntW'(1);

  // next burst: at most ar_left_q beats, MaxBurstBeats, and the beats up to the 4 KiB page
  logic [31:0] page_left, burst_beats;
  assign page_left = 32'(PageBeats) - 32'(ar_addr_q[11:BeatShift]);
  always_comb begin
    burst_beats = 32'(ar_left_q);
    if (burst_beats > MaxBurstBeats) burst_beats = MaxBurstBeats;
    if (burst_beats > page_left) burst_beats = page_left;
  end

  logic ar_fire, r_fire, entry_write, advance;
  assign ar_fire = ar_valid_q && m_axi_arready;
  assign r_fire  = (state_q == StFetch) && m_axi_rvalid;

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
    ar_addr_d  = ar_addr_q;
    ar_len_d   = ar_len_q;
    ar_valid_d = ar_valid_q;
    ar_left_d  = ar_left_q;
    out_d      = out_q;
    recv_d     = recv_q;
    rerr_d     = rerr_q;
    lane_d     = lane_q;
    buf_d      = buf_q;
    entry_write = 1'b0;
    advance     = 1'b0;

    unique case (state_q)
      StIdle: begin
        if (instr_valid_i) begin
          instr_d = load_instr_t'(instr_i);
          base_d  = base_i;
          limit_d = limit_i;
          err_d   = ErrNone;
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
        end else if (no_entries) begin
          state_d = StDone;
        end else begin
          state_d = StEntry;
        end
      end

      StEntry: begin
        if (is_data && (instr_q.elem_bytes != '0)) begin
          ar_addr_d = {entry_addr[AxiAddrBits-1:BeatShift], {BeatShift{1'b0}}};
          ar_left_d = entry_beats;
          lane_d    = entry_addr[BeatShift-1:0];
          out_d     = '0;
          recv_d    = '0;
          rerr_d    = 1'b0;
          state_d   = StFetch;
        end else begin
          entry_write = 1'b1;
          advance     = 1'b1;
        end
      end

      StFetch: begin
        if (ar_fire) begin
          ar_valid_d = 1'b0;
          ar_addr_d  = ar_addr_q + (AxiAddrBits'(ar_len_q) + AxiAddrBits'(1) << BeatShift);
        end
        if (!ar_valid_q && (ar_left_q != '0) && !rerr_q) begin
          ar_valid_d = 1'b1;
          ar_len_d   = 8'(burst_beats - 32'd1);
          ar_left_d  = ar_left_q - BeatCntW'(burst_beats);
        end
        out_d = out_q + (ar_fire ? BeatCntW'(ar_len_q) + BeatCntW'(1) : '0)
                      - (r_fire ? BeatCntW'(1) : '0);
        if (r_fire) begin
          for (int unsigned b = 0; b < MaxBeats; b++) begin
            if (32'(recv_q) == b) begin
              buf_d[b*AxiDataBits +: AxiDataBits] = m_axi_rdata;
            end
          end
          recv_d = recv_q + BeatCntW'(1);
          if (m_axi_rresp[1]) begin
            rerr_d = 1'b1;
          end
        end
        if (!ar_valid_q && (out_q == '0) && ((ar_left_q == '0) || rerr_q)) begin
          if (rerr_q) begin
            err_d   = ErrAxi;
            state_d = StDone;
          end else begin
            state_d = StWrite;
          end
        end
      end

      StWrite: begin
        entry_write = 1'b1;
        advance     = 1'b1;
        state_d     = StEntry;
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
            state_d = StDone;
          end
        end else begin
          y_d    = y_q + DimBits'(1);
          row_d  = y_data ? row_q + instr_q.y_stride : row_q;
          elem_d = row_d;
        end
      end else begin
        x_d    = x_q + DimBits'(1);
        elem_d = x_data ? elem_q + 32'(instr_q.x_stride) : elem_q;
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
      ar_addr_q  <= '0;
      ar_len_q   <= '0;
      ar_valid_q <= 1'b0;
      ar_left_q  <= '0;
      out_q      <= '0;
      recv_q     <= '0;
      rerr_q     <= 1'b0;
      lane_q     <= '0;
      buf_q      <= '0;
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
      ar_addr_q  <= ar_addr_d;
      ar_len_q   <= ar_len_d;
      ar_valid_q <= ar_valid_d;
      ar_left_q  <= ar_left_d;
      out_q      <= out_d;
      recv_q     <= recv_d;
      rerr_q     <= rerr_d;
      lane_q     <= lane_d;
      buf_q      <= buf_d;
    end
  end

  assign instr_ready_o = state_q == StIdle;
  assign done_o        = state_q == StDone;
  assign error_o       = err_q;

  assign wr_valid_o = entry_write;
  assign wr_addr_o  = instr_q.sram_base + idx_q;
  assign wr_data_o  = (state_q == StWrite) ? entry_data : {EntryBytes{is_data ? 8'd0 : pad_byte}};

  assign m_axi_arid    = '0;
  assign m_axi_araddr  = ar_addr_q;
  assign m_axi_arlen   = ar_len_q;
  assign m_axi_arsize  = 3'(BeatShift);
  assign m_axi_arburst = 2'b01;  // INCR
  assign m_axi_arlock  = 1'b0;
  assign m_axi_arcache = 4'b0011;  // normal, non-cacheable, bufferable
  assign m_axi_arprot  = 3'b000;
  assign m_axi_arvalid = ar_valid_q;
  assign m_axi_rready  = state_q == StFetch;

  assign m_axi_awid    = '0;
  assign m_axi_awaddr  = '0;
  assign m_axi_awlen   = '0;
  assign m_axi_awsize  = 3'(BeatShift);
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
                           m_axi_rid, m_axi_rlast, instr_q.flags, instr_q.opcode,
                           instr_q.reserved, instr_q.pad_bottom, instr_q.pad_right,
                           m_axi_rresp[0]};

endmodule
