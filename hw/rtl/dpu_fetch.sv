// Instruction fetch: reads the program's instruction stream over AXI4 and hands it to the
// dispatcher one 256-bit instruction per handshake, in order (docs/isa.md; the cycle
// model's fetch rule in compiler/timing.py).
//
// start_i (a pulse while idle) samples base_i and count_i: instructions i = 0 .. count-1
// are the InstrBits/8 bytes at base_i + i*InstrBytes. base_i must be a multiple of
// InstrBytes (otherwise error_o with align_error_o, nothing is read). Reads are INCR bursts
// of whole instructions at full bus width, at most MaxBurstBeats beats, never crossing a
// 4 KiB boundary, and never past the last instruction: fetch reads nothing outside
// [base, base + count*InstrBytes). Bursts are issued ahead while the instruction FIFO
// (FifoInstrs deep) has room for every instruction requested but not yet handed out, so a
// memory with a long first-beat latency still streams one beat per cycle.
//
// An error response (SLVERR/DECERR) on any beat raises error_o (sticky until the next
// start or reset): no further bursts are issued, outstanding beats are drained, and no
// instruction from the failing burst onwards is handed out. halt_i (the top stops on an
// error elsewhere) likewise stops issuing bursts; beats in flight are drained.
//
// idle_o: no burst outstanding (safe to stop). exhausted_o: every instruction of the
// stream has been handed out, or fetch stopped on an error or halt.
//
// Only the read channels of an AXI4 master: the top ties off the write channels.
// ARID is 0; the top remaps IDs.

module dpu_fetch
  import dpu_isa_pkg::*;
#(
  parameter int unsigned AxiDataBits   = 64,
  parameter int unsigned AxiAddrBits   = 32,
  parameter int unsigned AxiIdBits     = 1,
  parameter int unsigned MaxBurstBeats = 16,
  parameter int unsigned FifoInstrs    = 32
) (
  input  logic                       clk_i,
  input  logic                       rst_ni,

  input  logic                       start_i,
  input  logic [AxiAddrBits-1:0]     base_i,
  input  logic [31:0]                count_i,
  input  logic                       halt_i,

  output logic                       instr_valid_o,
  input  logic                       instr_ready_i,
  output logic [InstrBits-1:0]       instr_o,

  output logic                       idle_o,
  output logic                       exhausted_o,
  output logic                       error_o,
  output logic                       align_error_o,

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

  localparam int unsigned InstrBytes    = InstrBits / 8;
  localparam int unsigned BusBytes      = AxiDataBits / 8;
  localparam int unsigned BeatsPerInstr = InstrBits / AxiDataBits;
  localparam int unsigned BurstInstrs   = MaxBurstBeats / BeatsPerInstr;
  localparam int unsigned PageInstrs    = 4096 / InstrBytes;
  localparam int unsigned InstrShift    = $clog2(InstrBytes);
  localparam int unsigned PtrBits       = $clog2(FifoInstrs);
  localparam int unsigned CntBits       = $clog2(FifoInstrs + 1);
  localparam int unsigned BeatBits      = (BeatsPerInstr > 1) ? $clog2(BeatsPerInstr) : 1;
  localparam int unsigned PageBits      = $clog2(PageInstrs);

  if (AxiDataBits > InstrBits || InstrBits % AxiDataBits != 0) begin : g_bad_bus
    $error("dpu_fetch: the bus must divide the instruction width");
  end
  if (BurstInstrs < 1 || MaxBurstBeats % BeatsPerInstr != 0 || MaxBurstBeats > 256) begin : g_bad_burst
    $error("dpu_fetch: MaxBurstBeats must be a multiple of the beats per instruction, <= 256");
  end
  if (FifoInstrs < BurstInstrs || (FifoInstrs & (FifoInstrs - 1)) != 0) begin : g_bad_fifo
    $error("dpu_fetch: FifoInstrs must be a power of two holding at least one burst");
  end

  // -- request side -------------------------------------------------------------------------
  logic [AxiAddrBits-InstrShift-1:0] next_q, next_d;    // next instruction to request (index in DRAM)
  logic [31:0]                       left_q, left_d;    // instructions not yet requested
  logic [31:0]                       unhanded_q, unhanded_d;  // not yet handed out
  logic [CntBits-1:0]                credit_q, credit_d;      // FIFO slots not promised
  logic                              ar_valid_q, ar_valid_d;
  logic [AxiAddrBits-1:0]            ar_addr_q, ar_addr_d;
  logic [7:0]                        ar_len_q, ar_len_d;
  logic [8:0]                        outstanding_q, outstanding_d;  // bursts in flight (AR sent)
  logic                              error_q, error_d, align_q, align_d;
  logic                              running_q, running_d;   // between start and exhausted
  logic                              drop_q, drop_d;         // discard beats (error or halt)

  // Instructions in the next burst: limited by the burst length, the 4 KiB page, the rest
  // of the stream and the FIFO credit.
  logic [31:0]         burst_n;
  logic [PageBits:0]   to_page;
  always_comb begin
    to_page = (PageBits + 1)'(PageInstrs) - {1'b0, next_q[PageBits-1:0]};
    burst_n = 32'(BurstInstrs);
    if (32'(to_page) < burst_n) begin
      burst_n = 32'(to_page);
    end
    if (left_q < burst_n) begin
      burst_n = left_q;
    end
    if (32'(credit_q) < burst_n) begin
      burst_n = 32'(credit_q);
    end
  end

  // -- FIFO -----------------------------------------------------------------------------------
  logic [InstrBits-1:0] fifo_mem [FifoInstrs];
  logic [PtrBits-1:0]   wptr_q, wptr_d, rptr_q, rptr_d;
  logic [CntBits-1:0]   count_q, count_d;
  logic                 push, pop;

  // -- beat assembly --------------------------------------------------------------------------
  logic [BeatsPerInstr-1:0][AxiDataBits-1:0] beats_q, beats_d;
  logic [BeatBits-1:0]                       beat_q, beat_d;
  logic                                      r_fire;
  logic                                      r_bad;

  assign r_fire = m_axi_rvalid && m_axi_rready;
  assign r_bad  = m_axi_rresp[1];
  assign m_axi_rready = 1'b1;  // credit guarantees FIFO room for every requested beat
  assign pop = instr_valid_o && instr_ready_i;

  always_comb begin
    next_d        = next_q;
    left_d        = left_q;
    unhanded_d    = unhanded_q;
    credit_d      = credit_q;
    ar_valid_d    = ar_valid_q;
    ar_addr_d     = ar_addr_q;
    ar_len_d      = ar_len_q;
    outstanding_d = outstanding_q;
    error_d       = error_q;
    align_d       = align_q;
    running_d     = running_q;
    drop_d        = drop_q;
    beats_d       = beats_q;
    beat_d        = beat_q;
    push          = 1'b0;

    if (start_i && !running_q && outstanding_q == '0 && !ar_valid_q) begin
      running_d  = 1'b1;
      error_d    = 1'b0;
      drop_d     = 1'b0;
      beat_d     = '0;
      next_d     = base_i[AxiAddrBits-1:InstrShift];
      left_d     = count_i;
      unhanded_d = count_i;
      credit_d   = CntBits'(FifoInstrs);
      align_d    = (base_i[InstrShift-1:0] != '0);
      if (base_i[InstrShift-1:0] != '0) begin
        error_d = 1'b1;
        drop_d  = 1'b1;
        left_d  = '0;
      end
    end else begin
      // issue the next burst
      if (!ar_valid_q && running_q && !drop_q && !halt_i && left_q != '0 && burst_n != '0) begin
        ar_valid_d = 1'b1;
        ar_addr_d  = {next_q, InstrShift'(0)};
        ar_len_d   = 8'(burst_n * BeatsPerInstr - 1);
        next_d     = next_q + (AxiAddrBits - InstrShift)'(burst_n);
        left_d     = left_q - burst_n;
        credit_d   = credit_q - CntBits'(burst_n);
      end
      if (ar_valid_q && m_axi_arready) begin
        ar_valid_d = 1'b0;
      end
      // beats
      if (r_fire) begin
        beats_d[beat_q] = m_axi_rdata;
        beat_d = (beat_q == BeatBits'(BeatsPerInstr - 1)) ? '0 : beat_q + BeatBits'(1);
        if (r_bad && !drop_q) begin
          error_d = 1'b1;
          drop_d  = 1'b1;
        end
        if (beat_q == BeatBits'(BeatsPerInstr - 1) && !drop_q && !r_bad) begin
          push = 1'b1;
        end
      end
      if (halt_i) begin
        drop_d = 1'b1;
      end
      if (pop) begin
        credit_d   = credit_d + CntBits'(1);
        unhanded_d = unhanded_q - 32'd1;
      end
    end
    unique case ({ar_valid_q && m_axi_arready, r_fire && m_axi_rlast})
      2'b10:   outstanding_d = outstanding_q + 9'd1;
      2'b01:   outstanding_d = outstanding_q - 9'd1;
      default: outstanding_d = outstanding_q;
    endcase
    if (running_q && (unhanded_d == '0 || drop_d)) begin
      running_d = 1'b0;
    end
  end

  always_comb begin
    wptr_d  = push ? wptr_q + PtrBits'(1) : wptr_q;
    rptr_d  = pop ? rptr_q + PtrBits'(1) : rptr_q;
    count_d = count_q + CntBits'(push) - CntBits'(pop);
    if (start_i && !running_q && outstanding_q == '0 && !ar_valid_q) begin
      wptr_d  = '0;
      rptr_d  = '0;
      count_d = '0;
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      next_q        <= '0;
      left_q        <= '0;
      unhanded_q    <= '0;
      credit_q      <= '0;
      ar_valid_q    <= 1'b0;
      ar_addr_q     <= '0;
      ar_len_q      <= '0;
      outstanding_q <= '0;
      error_q       <= 1'b0;
      align_q       <= 1'b0;
      running_q     <= 1'b0;
      drop_q        <= 1'b0;
      beat_q        <= '0;
      wptr_q        <= '0;
      rptr_q        <= '0;
      count_q       <= '0;
    end else begin
      next_q        <= next_d;
      left_q        <= left_d;
      unhanded_q    <= unhanded_d;
      credit_q      <= credit_d;
      ar_valid_q    <= ar_valid_d;
      ar_addr_q     <= ar_addr_d;
      ar_len_q      <= ar_len_d;
      outstanding_q <= outstanding_d;
      error_q       <= error_d;
      align_q       <= align_d;
      running_q     <= running_d;
      drop_q        <= drop_d;
      beat_q        <= beat_d;
      wptr_q        <= wptr_d;
      rptr_q        <= rptr_d;
      count_q       <= count_d;
    end
  end

  // data registers without reset: only read once written
  always_ff @(posedge clk_i) begin
    beats_q <= beats_d;
    if (push) begin
      fifo_mem[wptr_q] <= beats_d;
    end
  end

  assign instr_valid_o = (count_q != '0) && !drop_q;
  assign instr_o       = fifo_mem[rptr_q];
  assign idle_o        = (outstanding_q == '0) && !ar_valid_q;
  assign exhausted_o   = !running_q;
  assign error_o       = error_q;
  assign align_error_o = align_q;

  assign m_axi_arid    = '0;
  assign m_axi_araddr  = ar_addr_q;
  assign m_axi_arlen   = ar_len_q;
  assign m_axi_arsize  = 3'($clog2(BusBytes));
  assign m_axi_arburst = 2'b01;  // INCR
  assign m_axi_arlock  = 1'b0;
  assign m_axi_arcache = 4'b0011;
  assign m_axi_arprot  = 3'b000;
  assign m_axi_arvalid = ar_valid_q;

  logic unused_inputs;
  assign unused_inputs = ^{m_axi_rid, m_axi_rresp[0]};

endmodule
