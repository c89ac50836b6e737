// The COMPUTE engine of the DPU: executes GEMM, POST and ALU instructions (docs/isa.md;
// compiler/golden.py is the bit-exact reference, compiler/timing.py the cycle model, whose
// `ComputeTimer` states the rules below). Datapaths: dpu_array (GEMM), dpu_post (POST),
// dpu_alu_lanes (ALU). The buffers are outside: every port below talks to a simple
// dual-port synchronous-read SRAM like dpu_sram (read address sampled at the edge where re
// is high, data valid the next cycle and held until the next read; a write lands at the edge
// of the cycle its we is high; a read and a write of one entry at the same edge read the old
// value).
//
// Two units run side by side: the GEMM unit (INP and WGT reads, the array, ACC
// read-modify-write on ACC port a) and the POST/ALU unit (POST: ACC port b, PAR, OUT; ALU:
// ACC ports a and b, ACC writes). Several instructions can be in flight; they finish
// (done_o) in program order.
//
// Ports. Addresses are 16 bits; the engine checks every access against the parameters
// InpEntries .. ParEntries itself and never drives an out-of-range address with a strobe.
//   instr_*   one 256-bit instruction per handshake. instr_ready_o depends on instr_i's
//             opcode: a POST, an ALU or an illegal opcode is taken only when nothing is in
//             flight; a GEMM when the GEMM unit is free (below), no ALU is in flight and
//             fewer than MaxInFlight instructions are. Never after an error.
//   done_o    one-cycle pulse per instruction, in program order, at most one per cycle: in
//             the cycle of its last buffer write (a GEMM: its last ACC write, or its slot's
//             end for a GEMM of no iterations; POST: last OUT write; ALU: last ACC write, or
//             its duration's end), or later if an older instruction is not done yet.
//   error_o   sticky until reset, with error_code_o: 1 an entry outside a buffer, 2 an ALU
//             op outside alu_op_e, 3 an opcode other than GEMM/POST/ALU. The instruction is
//             taken, then the engine stops for good: no done_o, no strobe from the cycle
//             the error is found on, instr_ready_o low. Opcode and alu_op are checked when
//             the instruction is taken, a GEMM's wgt_addr too; addresses as each access is
//             generated, before it is issued (so accesses of earlier iterations of the
//             failing instruction may have happened; every address outside a buffer is
//             caught, as check.py does, since every one lies at or below the instruction's
//             last address). A GEMM with no iterations checks nothing. Reserved bits are
//             not checked.
//   inp_*     INP read: Rows int8 lanes, lane r at [8r +: 8].
//   wgt_*     WGT read: lane r*Cols + c = W[r][c] at [8(r*Cols + c) +: 8].
//   acc_a_*, acc_b_*  two read ports of ACC (the top keeps two copies); acc_* write port.
//             Cols int32 lanes, lane c at [32c +: 32].
//   par_*     PAR read: int32 lanes bias[0..Cols-1], mult[0..Cols-1], shift[0..Cols-1].
//   out_*     OUT write: Cols int8 lanes.
//   mac_active_o  high in exactly the cycles an activation vector enters the array.
//
// Accesses per instruction (equal to compiler/golden.py `_activity`): GEMM reads WGT once
// (also with no iterations; then from entry 0 if wgt_addr is out of range), INP T times
// (T = n_outer*n_inner), ACC on port a T times when reset = 0, writes ACC T times; POST
// reads PAR once per block (with count = 0 too, where an out-of-range PAR entry is skipped,
// not an error), ACC on port b and OUT writes blocks*count times; ALU reads src on port b
// each trip, dst on port a each trip of ADD/MAX, writes ACC each trip.
//
// Timing. Count the cycle an instruction is taken as 1 and its done cycle (when nothing
// older holds it back) as D: D is the cycle model's cost (compiler/timing.py):
//   GEMM  max(T, 1) + Rows + Cols
//   POST  blocks*count + 5                         (the SRAM read and dpu_post's 4 stages)
//         blocks + 5 when count = 0, 4 when blocks = 0
//   ALU   trips + 2, also when trips = 0
// GEMM: iteration k's INP read in cycle 1 + k (unless held, below), its vector on the
// array's port in the next cycle, its old ACC entry read on port a Rows + Cols - 1 cycles
// after that and its result written in the cycle after. The weight tile goes in along the
// wavefront of the first vector: WGT read in cycle Cols - 2, tile row r into the array in
// cycle Cols - 1 + r, just before the first vector reaches grid row r (dpu_array: row r
// multiplies a vector in the cycle Cols - 2 + r after the one it was on the port), and
// after the last vector of the GEMM before has passed it. So GEMMs follow each other
// without a gap; a GEMM may be taken from the cycle after the previous GEMM's last INP
// read, but no earlier than Rows cycles after the previous GEMM was taken (one tile preload
// at a time, and the WGT read data must hold for it). A GEMM of no iterations sends one
// write-less slot down the pipeline in cycle 1 (and still reads WGT and preloads).
// POST: entry j's ACC read (and its block's PAR read) in cycle 1 + j, its OUT write in
// cycle 6 + j. ALU: trip j reads in cycle 1 + j, writes in cycle 3 + j.
//
// Hazards. In one unit, iterations run in order, as in the golden model: a read that an
// earlier write has not reached yet (ACC written in the read's own cycle, or, for the ALU,
// in the cycle its data is used) takes the value being written (forwarding), so GEMMs
// accumulating into a repeated ACC entry and an ALU reduction into one entry are exact,
// also across back-to-back GEMMs. A POST or ALU starts only when everything older is done,
// so it reads what the golden model reads. GEMMs taken while a POST runs must not overwrite
// ACC entries the POST has still to read: an iteration whose ACC entry lies between the
// base of the POST block being read and the POST's last entry waits (no INP read; a bubble
// in the array, which takes them anywhere) until the POST has moved to a block whose base
// is above the entry or has issued all its reads. POST block bases never decrease (the
// block stride is unsigned), so no entry below the current base is read again.

module dpu_compute
  import dpu_isa_pkg::*;
#(
  parameter int unsigned Rows        = 4,
  parameter int unsigned Cols        = 4,
  parameter int unsigned InpEntries  = 1024,
  parameter int unsigned WgtEntries  = 64,
  parameter int unsigned AccEntries  = 256,
  parameter int unsigned OutEntries  = 128,
  parameter int unsigned ParEntries  = 16,
  parameter int unsigned MaxInFlight = 16  // compiler/timing.py COMPUTE_IN_FLIGHT
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,

  input  logic [InstrBits-1:0]   instr_i,
  input  logic                   instr_valid_i,
  output logic                   instr_ready_o,
  output logic                   done_o,
  output logic                   error_o,
  output logic [1:0]             error_code_o,

  output logic                   inp_re_o,
  output logic [15:0]            inp_raddr_o,
  input  logic [Rows*8-1:0]      inp_rdata_i,

  output logic                   wgt_re_o,
  output logic [15:0]            wgt_raddr_o,
  input  logic [Rows*Cols*8-1:0] wgt_rdata_i,

  output logic                   acc_a_re_o,
  output logic [15:0]            acc_a_raddr_o,
  input  logic [Cols*32-1:0]     acc_a_rdata_i,
  output logic                   acc_b_re_o,
  output logic [15:0]            acc_b_raddr_o,
  input  logic [Cols*32-1:0]     acc_b_rdata_i,
  output logic                   acc_we_o,
  output logic [15:0]            acc_waddr_o,
  output logic [Cols*32-1:0]     acc_wdata_o,

  output logic                   par_re_o,
  output logic [15:0]            par_raddr_o,
  input  logic [Cols*12*8-1:0]   par_rdata_i,

  output logic                   out_we_o,
  output logic [15:0]            out_waddr_o,
  output logic [Cols*8-1:0]      out_wdata_o,

  output logic                   mac_active_o
);

  localparam int unsigned Latency     = Rows + Cols - 1;  // dpu_array, port to port
  localparam int unsigned PostLatency = 4;                // dpu_post
  // Cycles from taking a GEMM to its WGT read (see Timing above).
  localparam int unsigned WgtDelay    = Cols - 3;
  // Durations of POST and ALU without iterations (timing.py).
  localparam int unsigned PostIdle    = 4;
  localparam int unsigned AluIdle     = 2;
  localparam int unsigned RowBits     = (Rows > 1) ? $clog2(Rows) : 1;
  localparam int unsigned FlightBits  = $clog2(MaxInFlight + 1);
  // Generated addresses: an in-range address (< 2^16) plus a stride (< 2^16) fits in 17 bits,
  // and every address is checked before the next one is derived from it.
  localparam int unsigned AddrBits    = 17;

  if (Cols < 3) begin : g_cols_check
    $error("dpu_compute needs Cols >= 3: the weight tile goes in behind the first vector");
  end

  localparam logic [1:0] ErrRange  = 2'd1;
  localparam logic [1:0] ErrAluOp  = 2'd2;
  localparam logic [1:0] ErrOpcode = 2'd3;

  // The three address streams of the two-level loop: X, Y, Z.
  //   GEMM  X = INP (vector),  Y = ACC (result)
  //   POST  X = ACC (read),    Y = OUT (write),   Z = PAR (one entry per block)
  //   ALU   X = dst,           Y = src
  localparam int unsigned SX = 0;
  localparam int unsigned SY = 1;
  localparam int unsigned SZ = 2;

  typedef enum logic [1:0] {
    ModeGemm,
    ModePost,
    ModeAlu
  } mode_e;

  typedef struct packed {
    logic [15:0]      n_outer;
    logic [15:0]      n_inner;
    logic [2:0][15:0] outer_stride;
    logic [2:0][15:0] inner_stride;
  } loop_cfg_t;

  typedef struct packed {
    logic [15:0]              o;
    logic [15:0]              i;
    logic [2:0][AddrBits-1:0] outer;  // address at i = 0 of outer step o
    logic [2:0][AddrBits-1:0] addr;
  } loop_pos_t;

  // The position after p (p not the last iteration), with n_inner and the strides of c.
  function automatic loop_pos_t loop_step(logic [15:0] n_inner, logic [2:0][15:0] outer_stride,
                                          logic [2:0][15:0] inner_stride, loop_pos_t p);
    loop_pos_t n;
    n = p;
    if (p.i != n_inner - 16'd1) begin
      n.i = p.i + 16'd1;
      for (int unsigned s = 0; s < 3; s++) begin
        n.addr[s] = p.addr[s] + AddrBits'(inner_stride[s]);
      end
    end else begin
      n.i = 16'd0;
      n.o = p.o + 16'd1;
      for (int unsigned s = 0; s < 3; s++) begin
        n.outer[s] = p.outer[s] + AddrBits'(outer_stride[s]);
        n.addr[s]  = n.outer[s];
      end
    end
    return n;
  endfunction

  function automatic logic below(logic [AddrBits-1:0] addr, int unsigned entries);
    return 32'(addr) < entries;
  endfunction

  ////////////
  // Decode //
  ////////////

  opcode_e     in_opcode;
  gemm_instr_t in_gemm;
  post_instr_t in_post;
  alu_instr_t  in_alu;

  assign in_opcode = opcode_e'(instr_i[OpcodeBits-1:0]);
  assign in_gemm   = gemm_instr_t'(instr_i);
  assign in_post   = post_instr_t'(instr_i);
  assign in_alu    = alu_instr_t'(instr_i);

  logic      dec_legal_op, dec_legal_alu, dec_work, dec_count0, dec_wgt_ok;
  mode_e     dec_mode;
  loop_cfg_t dec_cfg;
  loop_pos_t dec_pos;

  always_comb begin
    dec_legal_op  = 1'b1;
    dec_legal_alu = 1'b1;
    dec_work      = 1'b0;
    dec_count0    = 1'b0;
    dec_mode      = ModeGemm;
    dec_cfg       = '0;
    dec_pos       = '0;
    unique case (in_opcode)
      OpGemm: begin
        dec_mode                 = ModeGemm;
        dec_work                 = (in_gemm.n_outer != 16'd0) && (in_gemm.n_inner != 16'd0);
        dec_cfg.n_outer          = in_gemm.n_outer;
        dec_cfg.n_inner          = in_gemm.n_inner;
        dec_cfg.outer_stride[SX] = in_gemm.inp_outer_stride;
        dec_cfg.inner_stride[SX] = in_gemm.inp_inner_stride;
        dec_cfg.outer_stride[SY] = in_gemm.acc_outer_stride;
        dec_cfg.inner_stride[SY] = in_gemm.acc_inner_stride;
        dec_pos.outer[SX]        = AddrBits'(in_gemm.inp_base);
        dec_pos.outer[SY]        = AddrBits'(in_gemm.acc_base);
      end
      OpPost: begin
        dec_mode                 = ModePost;
        dec_work                 = in_post.blocks != 16'd0;
        dec_count0               = in_post.count == 16'd0;
        dec_cfg.n_outer          = in_post.blocks;
        dec_cfg.n_inner          = dec_count0 ? 16'd1 : in_post.count;
        dec_cfg.outer_stride[SX] = in_post.acc_block_stride;
        dec_cfg.inner_stride[SX] = 16'd1;
        dec_cfg.outer_stride[SY] = in_post.out_block_stride;
        dec_cfg.inner_stride[SY] = 16'd1;
        dec_cfg.outer_stride[SZ] = 16'd1;
        dec_cfg.inner_stride[SZ] = 16'd0;
        dec_pos.outer[SX]        = AddrBits'(in_post.acc_base);
        dec_pos.outer[SY]        = AddrBits'(in_post.out_base);
        dec_pos.outer[SZ]        = AddrBits'(in_post.par_addr);
      end
      OpAlu: begin
        dec_mode                 = ModeAlu;
        dec_legal_alu            = in_alu.alu_op inside {AluOpMov, AluOpAdd, AluOpMax,
                                                         AluOpMuli, AluOpAddi};
        dec_work                 = (in_alu.n_outer != 16'd0) && (in_alu.n_inner != 16'd0);
        dec_cfg.n_outer          = in_alu.n_outer;
        dec_cfg.n_inner          = in_alu.n_inner;
        dec_cfg.outer_stride[SX] = in_alu.dst_outer_stride;
        dec_cfg.inner_stride[SX] = in_alu.dst_inner_stride;
        dec_cfg.outer_stride[SY] = in_alu.src_outer_stride;
        dec_cfg.inner_stride[SY] = in_alu.src_inner_stride;
        dec_pos.outer[SX]        = AddrBits'(in_alu.dst_base);
        dec_pos.outer[SY]        = AddrBits'(in_alu.src_base);
      end
      default: begin
        dec_legal_op = 1'b0;
      end
    endcase
    dec_pos.addr = dec_pos.outer;
    dec_wgt_ok   = below(AddrBits'(in_gemm.wgt_addr), WgtEntries);
  end

  // Fields the decode above does not read: token flags (the dispatcher's) and reserved bits.
  logic unused_instr;
  assign unused_instr = ^{in_gemm.reserved, in_gemm.flags, in_gemm.opcode,
                          in_post.reserved, in_post.flags, in_post.opcode,
                          in_alu.reserved, in_alu.flags, in_alu.opcode};

  /////////////////////////
  // Taking instructions //
  /////////////////////////

  logic                  err_q, err_d, err_now, stop;
  logic [1:0]            err_code_q, err_code_d;
  logic [FlightBits-1:0] flight_q, flight_d;  // taken and not yet done_o
  logic                  idle, gemm_free, accept, g_accept, pa_accept;
  logic                  g_run_q, pa_busy_q, g_done, pa_done;
  mode_e                 pa_mode_q;
  logic [RowBits:0]      g_gap_q, g_gap_d;    // cycles until the next GEMM may be taken

  assign idle      = flight_q == '0;
  assign gemm_free = !g_run_q && g_gap_q == '0 && !(pa_busy_q && pa_mode_q == ModeAlu) &&
                     32'(flight_q) < MaxInFlight;

  always_comb begin
    instr_ready_o = 1'b0;
    if (!err_q) begin
      instr_ready_o = (in_opcode == OpGemm) ? gemm_free : idle;
    end
  end

  assign accept    = instr_valid_i && instr_ready_o;
  assign g_accept  = accept && in_opcode == OpGemm;
  assign pa_accept = accept && in_opcode != OpGemm;  // POST, ALU, or an illegal opcode

  //////////////////////////////
  // GEMM unit: issue, weights //
  //////////////////////////////

  logic      g_wgt_err;      // a GEMM with iterations and wgt_addr outside WGT
  logic      g_reset_q, g_reset_d, g_run_d;
  loop_cfg_t g_cfg_q, g_cfg_d, g_cfg_cur;
  loop_pos_t g_pos_q, g_pos_d, g_pos_cur;
  logic      g_issue, g_range_err, g_hold, g_fire, g_last, g_slot;
  logic      post_reading;
  logic [AddrBits-1:0] post_block;  // base of the POST block being read (its ACC X stream)
  logic [32:0]         post_last_entry_q;  // the POST's last ACC entry

  assign g_wgt_err = g_accept && dec_work && !dec_wgt_ok;
  assign g_cfg_cur = g_accept ? dec_cfg : g_cfg_q;
  assign g_pos_cur = g_accept ? dec_pos : g_pos_q;
  // An iteration tries to issue in the cycle its GEMM is taken and in every cycle after
  // until its last one has issued; a GEMM without iterations sends one write-less slot.
  assign g_issue   = (g_accept && dec_work && !g_wgt_err) || g_run_q;
  assign g_slot    = g_accept && !dec_work;
  assign g_last    = (g_pos_cur.i == g_cfg_cur.n_inner - 16'd1) &&
                     (g_pos_cur.o == g_cfg_cur.n_outer - 16'd1);
  assign g_range_err = !below(g_pos_cur.addr[SX], InpEntries) ||
                       !below(g_pos_cur.addr[SY], AccEntries);
  assign g_hold    = post_reading && g_pos_cur.addr[SY] >= post_block &&
                     33'(g_pos_cur.addr[SY]) <= post_last_entry_q;
  assign g_fire    = g_issue && !g_range_err && !g_hold && !stop;

  always_comb begin
    g_run_d   = g_run_q;
    g_cfg_d   = g_cfg_q;
    g_pos_d   = g_pos_q;
    g_reset_d = g_reset_q;
    g_gap_d   = (g_gap_q != '0) ? g_gap_q - 1'b1 : g_gap_q;
    if (g_accept) begin
      g_run_d   = dec_work && !g_wgt_err;
      g_cfg_d   = dec_cfg;
      g_pos_d   = dec_pos;
      g_reset_d = in_gemm.reset;
      g_gap_d   = (RowBits + 1)'(Rows - 1);
    end
    if (g_fire) begin
      g_pos_d = loop_step(g_cfg_cur.n_inner, g_cfg_cur.outer_stride, g_cfg_cur.inner_stride,
                          g_pos_cur);
      if (g_last) begin
        g_run_d = 1'b0;
      end
    end
    if (stop) begin
      g_run_d = 1'b0;
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      g_run_q <= 1'b0;
      g_gap_q <= '0;
    end else begin
      g_run_q <= g_run_d;
      g_gap_q <= g_gap_d;
    end
  end

  always_ff @(posedge clk_i) begin
    g_cfg_q   <= g_cfg_d;
    g_pos_q   <= g_pos_d;
    g_reset_q <= g_reset_d;
  end

  // The WGT read, WgtDelay cycles after the GEMM is taken (entry 0 for an out-of-range
  // wgt_addr of a GEMM without iterations: the read is counted, as the golden model does),
  // then the tile rows into the array in the Rows cycles after it.
  logic        wgt_req;
  logic [15:0] wgt_req_addr;

  assign wgt_req      = g_accept && !g_wgt_err;
  assign wgt_req_addr = dec_wgt_ok ? in_gemm.wgt_addr : 16'd0;

  if (WgtDelay == 0) begin : g_wgt_now
    assign wgt_re_o    = wgt_req && !stop;
    assign wgt_raddr_o = wgt_req_addr;
  end else begin : g_wgt_later
    // Stage k: the request k + 1 cycles old; addresses 16 bits per stage, flat.
    logic [WgtDelay-1:0]    wd_v_q;
    logic [16*WgtDelay-1:0] wd_addr_q;
    always_ff @(posedge clk_i or negedge rst_ni) begin
      if (!rst_ni) begin
        wd_v_q <= '0;
      end else begin
        wd_v_q <= (wd_v_q << 1) | WgtDelay'(wgt_req);
      end
    end
    always_ff @(posedge clk_i) begin
      wd_addr_q <= (wd_addr_q << 16) | (16 * WgtDelay)'(wgt_req_addr);
    end
    assign wgt_re_o    = wd_v_q[WgtDelay-1] && !stop;
    assign wgt_raddr_o = wd_addr_q[16*WgtDelay-1 -: 16];
  end

  logic               pre_q, pre_d;  // tile rows going into the array
  logic [RowBits-1:0] row_q, row_d;

  always_comb begin
    pre_d = pre_q;
    row_d = row_q;
    if (pre_q) begin
      row_d = row_q + RowBits'(1);
      if (row_q == RowBits'(Rows - 1)) begin
        pre_d = 1'b0;
        row_d = '0;
      end
    end
    if (wgt_re_o) begin  // the next tile follows the previous one's last row at the earliest
      pre_d = 1'b1;
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      pre_q <= 1'b0;
      row_q <= '0;
    end else begin
      pre_q <= pre_d;
      row_q <= row_d;
    end
  end

  /////////////////////
  // POST / ALU unit //
  /////////////////////

  logic        pa_busy_d, pa_run_q, pa_run_d, pa_wait_q, pa_wait_d;
  logic [15:0] pa_wait_cnt_q, pa_wait_cnt_d;
  mode_e       pa_mode_d, pa_mode_cur;
  loop_cfg_t   pa_cfg_q, pa_cfg_d, pa_cfg_cur;
  loop_pos_t   pa_pos_q, pa_pos_d, pa_pos_cur;
  logic        count0_q, count0_d, count0_cur;
  alu_op_e     alu_op_q, alu_op_d, alu_op_cur;
  logic [31:0] imm_q, imm_d;
  logic [7:0]  zp_q, zp_d, lo_q, lo_d, hi_q, hi_d;
  logic [32:0] post_last_entry_d;
  logic        pa_issue, pa_range_err, pa_fire, pa_last, pa_wait_done;
  logic        z_ok, z_read;

  // The iteration issued this cycle: from instr_i in the cycle the instruction is taken.
  assign pa_mode_cur = pa_accept ? dec_mode : pa_mode_q;
  assign pa_cfg_cur  = pa_accept ? dec_cfg : pa_cfg_q;
  assign pa_pos_cur  = pa_accept ? dec_pos : pa_pos_q;
  assign count0_cur  = pa_accept ? dec_count0 : count0_q;
  assign alu_op_cur  = pa_accept ? in_alu.alu_op : alu_op_q;

  assign pa_issue = (pa_accept && dec_legal_op && dec_legal_alu && dec_work) || pa_run_q;
  assign pa_last  = (pa_pos_cur.i == pa_cfg_cur.n_inner - 16'd1) &&
                    (pa_pos_cur.o == pa_cfg_cur.n_outer - 16'd1);

  always_comb begin
    z_ok         = below(pa_pos_cur.addr[SZ], ParEntries);
    z_read       = 1'b0;
    pa_range_err = 1'b0;
    if (pa_mode_cur == ModePost) begin
      z_read       = (pa_pos_cur.i == 16'd0) && z_ok;
      pa_range_err = !count0_cur && (!below(pa_pos_cur.addr[SX], AccEntries) ||
                                     !below(pa_pos_cur.addr[SY], OutEntries) || !z_ok);
    end else begin
      pa_range_err = !below(pa_pos_cur.addr[SX], AccEntries) ||
                     !below(pa_pos_cur.addr[SY], AccEntries);
    end
  end

  assign pa_fire = pa_issue && !pa_range_err && !stop;

  // A running POST's reads, for the GEMMs beside it: the base of the block being read, and
  // the last entry (bases never decrease, so it lies in the last block).
  assign post_reading = pa_run_q && pa_mode_q == ModePost && !count0_q;
  assign post_block = pa_pos_q.outer[SX];
  assign post_last_entry_d = 33'(in_post.acc_base) + 33'(in_post.count) - 33'd1 +
                             (33'(in_post.blocks) - 33'd1) * 33'(in_post.acc_block_stride);

  always_comb begin
    pa_busy_d     = pa_busy_q;
    pa_mode_d     = pa_mode_q;
    pa_run_d      = pa_run_q;
    pa_wait_d     = pa_wait_q;
    pa_wait_cnt_d = (pa_wait_cnt_q != 16'd0) ? pa_wait_cnt_q - 16'd1 : pa_wait_cnt_q;
    pa_cfg_d      = pa_cfg_q;
    pa_pos_d      = pa_pos_q;
    count0_d      = count0_q;
    alu_op_d      = alu_op_q;
    imm_d         = imm_q;
    zp_d          = zp_q;
    lo_d          = lo_q;
    hi_d          = hi_q;
    if (pa_accept) begin
      pa_busy_d     = 1'b1;
      pa_mode_d     = dec_mode;
      pa_cfg_d      = dec_cfg;
      pa_pos_d      = dec_pos;
      count0_d      = dec_count0;
      alu_op_d      = in_alu.alu_op;
      imm_d         = in_alu.imm;
      zp_d          = in_post.zero_point;
      lo_d          = in_post.clamp_lo;
      hi_d          = in_post.clamp_hi;
      pa_run_d      = dec_legal_op && dec_legal_alu && dec_work;
      pa_wait_d     = dec_legal_op && dec_legal_alu && !dec_work;
      pa_wait_cnt_d = (dec_mode == ModePost) ? 16'(PostIdle - 2) : 16'(AluIdle - 2);
    end
    if (pa_fire) begin
      pa_pos_d = loop_step(pa_cfg_cur.n_inner, pa_cfg_cur.outer_stride, pa_cfg_cur.inner_stride,
                           pa_pos_cur);
      if (pa_last) begin
        pa_run_d = 1'b0;
      end
    end
    if (pa_wait_done) begin
      pa_wait_d = 1'b0;
    end
    if (pa_done) begin
      pa_busy_d = 1'b0;
    end
    if (stop) begin
      pa_run_d  = 1'b0;
      pa_wait_d = 1'b0;
    end
  end

  assign pa_wait_done = pa_wait_q && pa_wait_cnt_q == 16'd0;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      pa_busy_q     <= 1'b0;
      pa_mode_q     <= ModePost;
      pa_run_q      <= 1'b0;
      pa_wait_q     <= 1'b0;
      pa_wait_cnt_q <= 16'd0;
    end else begin
      pa_busy_q     <= pa_busy_d;
      pa_mode_q     <= pa_mode_d;
      pa_run_q      <= pa_run_d;
      pa_wait_q     <= pa_wait_d;
      pa_wait_cnt_q <= pa_wait_cnt_d;
    end
  end

  // Instruction fields and loop position: loaded when an instruction is taken.
  always_ff @(posedge clk_i) begin
    pa_cfg_q <= pa_cfg_d;
    pa_pos_q <= pa_pos_d;
    count0_q <= count0_d;
    alu_op_q <= alu_op_d;
    imm_q    <= imm_d;
    zp_q     <= zp_d;
    lo_q     <= lo_d;
    hi_q     <= hi_d;
    if (pa_accept) begin
      post_last_entry_q <= post_last_entry_d;
    end
  end

  ////////////
  // Errors //
  ////////////

  always_comb begin
    err_now    = 1'b0;
    err_code_d = err_code_q;
    if (pa_accept && !dec_legal_op) begin
      err_now    = 1'b1;
      err_code_d = ErrOpcode;
    end else if (pa_accept && !dec_legal_alu) begin
      err_now    = 1'b1;
      err_code_d = ErrAluOp;
    end else if (g_wgt_err || (g_issue && g_range_err) || (pa_issue && pa_range_err)) begin
      err_now    = 1'b1;
      err_code_d = ErrRange;
    end
    if (err_q) begin
      err_code_d = err_code_q;
    end
  end

  assign err_d = err_q || err_now;
  assign stop  = err_q || err_now;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      err_q      <= 1'b0;
      err_code_q <= 2'd0;
    end else begin
      err_q      <= err_d;
      err_code_q <= err_code_d;
    end
  end

  assign error_o      = err_q;
  assign error_code_o = err_code_q;

  ///////////////////////////////////
  // Issue: reads and write tokens //
  ///////////////////////////////////

  logic post_fire, alu_fire;
  assign post_fire = pa_fire && pa_mode_cur == ModePost;
  assign alu_fire  = pa_fire && pa_mode_cur == ModeAlu;

  // Write tokens travel with the data: valid (where the datapath has none), last, reset and
  // the write address. Stage j holds the iteration issued j + 1 cycles ago.
  logic [Latency-1:0]         gemm_v_d, gemm_v_q;
  logic [Latency:0]           gemm_last_d, gemm_last_q;
  logic [Latency:0]           gemm_rst_d, gemm_rst_q;
  logic [Latency:0][15:0]     gemm_addr_d, gemm_addr_q;
  logic [PostLatency:0]       post_last_d, post_last_pipe_q;
  logic [PostLatency:0][15:0] post_addr_d, post_addr_q;
  logic                       post_v_d, post_v_q;
  logic [1:0]                 alu_last_d, alu_last_q;
  logic [1:0][15:0]           alu_addr_d, alu_addr_q;
  logic                       alu_v_d, alu_v_q;

  if (Latency > 1) begin : g_gemm_v_shift
    assign gemm_v_d = {gemm_v_q[Latency-2:0], g_fire};
  end else begin : g_gemm_v_single
    assign gemm_v_d = g_fire;
  end
  assign gemm_last_d = {gemm_last_q[Latency-1:0], (g_fire && g_last) || (g_slot && !stop)};
  assign gemm_rst_d  = {gemm_rst_q[Latency-1:0], g_accept ? in_gemm.reset : g_reset_q};
  assign gemm_addr_d = {gemm_addr_q[Latency-1:0], g_pos_cur.addr[SY][15:0]};
  assign post_v_d    = post_fire && !count0_cur;
  assign post_last_d = {post_last_pipe_q[PostLatency-1:0], post_fire && pa_last};
  assign post_addr_d = {post_addr_q[PostLatency-1:0], pa_pos_cur.addr[SY][15:0]};
  assign alu_v_d     = alu_fire;
  assign alu_last_d  = {alu_last_q[0], alu_fire && pa_last};
  assign alu_addr_d  = {alu_addr_q[0], pa_pos_cur.addr[SX][15:0]};

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      gemm_v_q         <= '0;
      gemm_last_q      <= '0;
      post_last_pipe_q <= '0;
      post_v_q         <= 1'b0;
      alu_last_q       <= '0;
      alu_v_q          <= 1'b0;
    end else begin
      gemm_v_q         <= gemm_v_d;
      gemm_last_q      <= gemm_last_d;
      post_last_pipe_q <= post_last_d;
      post_v_q         <= post_v_d;
      alu_last_q       <= alu_last_d;
      alu_v_q          <= alu_v_d;
    end
  end

  always_ff @(posedge clk_i) begin
    gemm_rst_q  <= gemm_rst_d;
    gemm_addr_q <= gemm_addr_d;
    post_addr_q <= post_addr_d;
    alu_addr_q  <= alu_addr_d;
  end

  logic gemm_acc_rd, alu_dst_rd;
  assign gemm_acc_rd = gemm_v_q[Latency-1] && !gemm_rst_q[Latency-1] && !err_q;
  assign alu_dst_rd  = alu_fire && (alu_op_cur == AluOpAdd || alu_op_cur == AluOpMax);

  assign inp_re_o    = g_fire;
  assign inp_raddr_o = g_pos_cur.addr[SX][15:0];

  // Port a: GEMM read-modify-write and ALU dst (never at once: an ALU runs alone). Port b:
  // POST and ALU src.
  assign acc_a_re_o    = gemm_acc_rd || alu_dst_rd;
  assign acc_a_raddr_o = gemm_acc_rd ? gemm_addr_q[Latency-1] : pa_pos_cur.addr[SX][15:0];
  assign acc_b_re_o    = (post_fire && !count0_cur) || alu_fire;
  assign acc_b_raddr_o = (pa_mode_cur == ModePost) ? pa_pos_cur.addr[SX][15:0]
                                                   : pa_pos_cur.addr[SY][15:0];

  assign par_re_o    = post_fire && z_read;
  assign par_raddr_o = pa_pos_cur.addr[SZ][15:0];

  ////////////////
  // Forwarding //
  ////////////////

  // ACC as the iterations so far left it, for the data of a read issued last cycle: the
  // entry being written now by the ALU (its result, not yet in ACC), else the one written
  // in the read's own cycle (the SRAM read the old value), else what the SRAM read. (A POST
  // needs none: nothing it reads is written while it runs.)
  logic [Cols-1:0][31:0] acc_a_view, acc_b_view, alu_out;
  logic [Cols-1:0][31:0] fwd_data_q;  // ACC as written last cycle
  logic [15:0]           rd_a_addr_q, rd_b_addr_q;
  logic                  fwd_a_hit_q, fwd_b_hit_q, alu_we;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      fwd_a_hit_q <= 1'b0;
      fwd_b_hit_q <= 1'b0;
    end else begin
      fwd_a_hit_q <= acc_a_re_o && acc_we_o && acc_waddr_o == acc_a_raddr_o;
      fwd_b_hit_q <= acc_b_re_o && acc_we_o && acc_waddr_o == acc_b_raddr_o;
    end
  end

  always_ff @(posedge clk_i) begin
    fwd_data_q <= acc_wdata_o;
    if (acc_a_re_o) begin
      rd_a_addr_q <= acc_a_raddr_o;
    end
    if (acc_b_re_o) begin
      rd_b_addr_q <= acc_b_raddr_o;
    end
  end

  always_comb begin
    acc_a_view = acc_a_rdata_i;
    if (alu_we && alu_addr_q[1] == rd_a_addr_q) begin
      acc_a_view = alu_out;
    end else if (fwd_a_hit_q) begin
      acc_a_view = fwd_data_q;
    end
    acc_b_view = acc_b_rdata_i;
    if (alu_we && alu_addr_q[1] == rd_b_addr_q) begin
      acc_b_view = alu_out;
    end else if (fwd_b_hit_q) begin
      acc_b_view = fwd_data_q;
    end
  end

  //////////
  // GEMM //
  //////////

  logic [Rows-1:0][Cols-1:0][7:0] wgt_tile;
  logic [Cols-1:0][31:0]          gemm_res, gemm_sum;
  logic                           gemm_res_valid, act_v_q;

  assign wgt_tile = wgt_rdata_i;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      act_v_q <= 1'b0;
    end else begin
      act_v_q <= inp_re_o;
    end
  end

  assign mac_active_o = act_v_q;

  dpu_array #(
    .Rows (Rows),
    .Cols (Cols)
  ) u_array (
    .clk_i       (clk_i),
    .rst_ni      (rst_ni),
    .wgt_valid_i (pre_q),
    .wgt_i       (wgt_tile[row_q]),
    .act_valid_i (act_v_q),
    .act_i       (inp_rdata_i),
    .res_valid_o (gemm_res_valid),
    .res_o       (gemm_res)
  );

  for (genvar c = 0; c < Cols; c++) begin : g_gemm_sum
    assign gemm_sum[c] = gemm_res[c] + (gemm_rst_q[Latency] ? 32'd0 : acc_a_view[c]);
  end

  //////////
  // POST //
  //////////

  logic [2:0][Cols-1:0][31:0] par_lanes;  // bias, mult, shift
  logic [Cols-1:0][5:0]       post_shift;
  logic [Cols-1:0][25:0]      unused_shift_hi;
  logic                       post_valid;
  logic [Cols-1:0][7:0]       post_out;

  assign par_lanes = par_rdata_i;
  for (genvar c = 0; c < Cols; c++) begin : g_shift
    assign post_shift[c]      = par_lanes[2][c][5:0];
    assign unused_shift_hi[c] = par_lanes[2][c][31:6];
  end

  dpu_post #(
    .Cols (Cols)
  ) u_post (
    .clk_i        (clk_i),
    .rst_ni       (rst_ni),
    .valid_i      (post_v_q),
    .acc_i        (acc_b_rdata_i),
    .bias_i       (par_lanes[0]),
    .mult_i       (par_lanes[1]),
    .shift_i      (post_shift),
    .zero_point_i (zp_q),
    .clamp_lo_i   (lo_q),
    .clamp_hi_i   (hi_q),
    .valid_o      (post_valid),
    .out_o        (post_out)
  );

  /////////
  // ALU //
  /////////

  logic alu_valid, alu_illegal;

  dpu_alu_lanes #(
    .Cols (Cols)
  ) u_alu (
    .clk_i     (clk_i),
    .rst_ni    (rst_ni),
    .valid_i   (alu_v_q),
    .op_i      (alu_op_q),
    .dst_i     (acc_a_view),
    .src_i     (acc_b_view),
    .imm_i     (imm_q),
    .valid_o   (alu_valid),
    .illegal_o (alu_illegal),  // cannot happen: alu_op is checked when the ALU is taken
    .out_o     (alu_out)
  );

  ////////////
  // Writes //
  ////////////

  logic gemm_we;
  assign gemm_we = gemm_res_valid && !err_q;
  assign alu_we  = alu_valid && !err_q;

  // GEMM and ALU writes never meet: an ALU runs alone.
  assign acc_we_o    = gemm_we || alu_we;
  assign acc_waddr_o = gemm_we ? gemm_addr_q[Latency] : alu_addr_q[1];
  assign acc_wdata_o = gemm_we ? gemm_sum : alu_out;

  assign out_we_o    = post_valid && !err_q;
  assign out_waddr_o = post_addr_q[PostLatency];
  assign out_wdata_o = post_out;

  ////////////////////////////
  // Finishing, in order    //
  ////////////////////////////

  // A POST or ALU is taken only when nothing is in flight, so it is the oldest instruction
  // while it runs, and every GEMM in flight is younger; GEMMs finish in order among
  // themselves. A GEMM done while a POST still runs waits (g_backlog) and finishes after it,
  // one per cycle.
  logic [FlightBits-1:0] g_backlog_q, g_backlog_d;
  logic                  g_retire;

  assign g_done  = gemm_last_q[Latency] && !err_q;
  assign pa_done = (post_last_pipe_q[PostLatency] || alu_last_q[1] || pa_wait_done) && !err_q;
  assign g_retire = !pa_busy_q && (g_backlog_q != '0 || g_done);

  always_comb begin
    g_backlog_d = g_backlog_q + FlightBits'(g_done) - FlightBits'(g_retire);
    flight_d    = flight_q + FlightBits'(accept) - FlightBits'(done_o);
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      g_backlog_q <= '0;
      flight_q    <= '0;
    end else begin
      g_backlog_q <= g_backlog_d;
      flight_q    <= flight_d;
    end
  end

  assign done_o = !err_q && (pa_done || g_retire);

  logic unused_misc;
  assign unused_misc = ^{alu_illegal, unused_shift_hi};

endmodule
