// The COMPUTE engine of the DPU: executes one GEMM, POST or ALU instruction at a time
// (docs/isa.md; compiler/golden.py is the bit-exact reference, compiler/timing.py the cycle
// model). Datapaths: dpu_array (GEMM), dpu_post (POST), dpu_alu_lanes (ALU). The buffers are
// outside: every port below talks to a simple dual-port synchronous-read SRAM like dpu_sram
// (read address sampled at the edge where re is high, data valid the next cycle and held
// until the next read; a write lands at the edge of the cycle its we is high; a read and a
// write of one entry at the same edge read the old value).
//
// Ports. Addresses are 16 bits; the engine checks every access against the parameters
// InpEntries .. ParEntries itself and never drives an out-of-range address with a strobe.
//   instr_*   one 256-bit instruction per handshake; instr_ready_o is high only while idle
//             (never in the cycle of done_o) and never after an error.
//   done_o    one-cycle pulse in the cycle of the instruction's last buffer write (the write
//             lands at the edge that ends that cycle), or at the end of an access-free
//             instruction's duration.
//   error_o   sticky until reset, with error_code_o: 1 an entry outside a buffer, 2 an ALU
//             op outside alu_op_e, 3 an opcode other than GEMM/POST/ALU. The instruction is
//             taken, then the engine stops for good: no done_o, no strobe from the cycle
//             the error is found on, instr_ready_o low. Opcode and alu_op are checked when
//             the instruction is taken; addresses as each access is generated, before it is
//             issued (so accesses of earlier iterations of the failing instruction may have
//             happened; every address outside a buffer is caught, as check.py does, since
//             every one lies at or below the instruction's last address). A GEMM with no
//             iterations checks nothing (as check.py). Reserved bits are not checked.
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
// not an error), ACC on port a and OUT writes blocks*count times; ALU reads src on port b
// each trip, dst on port a each trip of ADD/MAX, writes ACC each trip.
//
// Timing. Count the cycle the instruction is taken (instr_valid_i && instr_ready_o) as 1
// and the cycle of done_o as D; the next instruction can be taken in cycle D + 1, so D is
// the instruction's period, as compiler/timing.py counts its cost:
//   GEMM  2*Rows + Cols - 2 + T                    (Rows >= 3)
//   POST  blocks*count + 5                         (the SRAM read and dpu_post's 4 stages)
//         blocks + 5 when count = 0, 4 when blocks = 0
//   ALU   trips + 2, also when trips = 0
// The cycle model (compiler/timing.py) charges exactly these.
// GEMM: WGT read in cycle 1, tile rows into the array in cycles 2 .. Rows + 1, vector k
// read from INP in cycle Rows - 1 + k and into the array in cycle Rows + k (overlapping the
// preload as dpu_array's weight-stationary contract allows), its old ACC entry read on port
// a in cycle 2*Rows + Cols - 2 + k and its result written in the cycle after. POST: entry
// j's ACC read (and its block's PAR read) in cycle 1 + j, its OUT write in cycle 6 + j.
// ALU: trip j reads in cycle 1 + j (the first from instr_i, in the cycle it is taken),
// writes in cycle 3 + j.
//
// Hazards. Iterations run in order, as in the golden model: a read that an earlier write of
// the same instruction has not reached yet (ACC written in the read's own cycle, or, for
// the ALU, in the cycle its data is used) takes the value being written (forwarding), so a
// GEMM accumulating into a repeated ACC entry and an ALU reduction into one entry are
// exact. A GEMM with T = 0 leaves ACC unchanged.

module dpu_compute
  import dpu_isa_pkg::*;
#(
  parameter int unsigned Rows       = 4,
  parameter int unsigned Cols       = 4,
  parameter int unsigned InpEntries = 1024,
  parameter int unsigned WgtEntries = 64,
  parameter int unsigned AccEntries = 256,
  parameter int unsigned OutEntries = 128,
  parameter int unsigned ParEntries = 16
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

  localparam int unsigned Latency     = Rows + Cols - 1;  // dpu_array
  localparam int unsigned PostLatency = 4;                // dpu_post
  // Cycles from the one the GEMM is taken in to its first INP read (Rows - 2 with the
  // model's timing; at least 1, as vectors may enter the array from the third cycle on).
  localparam int unsigned GemmStart   = (Rows >= 3) ? Rows - 2 : 1;
  // Durations of instructions without iterations (timing.py; ALU: one more than its 1).
  localparam int unsigned GemmIdle    = 2 * Rows + Cols - 2;
  localparam int unsigned PostIdle    = 4;
  localparam int unsigned AluIdle     = 2;
  localparam int unsigned RowBits     = (Rows > 1) ? $clog2(Rows) : 1;
  // Generated addresses: an in-range address (< 2^16) plus a stride (< 2^16) fits in 17 bits,
  // and every address is checked before the next one is derived from it.
  localparam int unsigned AddrBits    = 17;

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

  ///////////
  // State //
  ///////////

  logic        busy_d, busy_q;        // an instruction is taken and not done
  logic        err_d, err_q;
  logic [1:0]  err_code_d, err_code_q;
  mode_e       mode_d, mode_q;
  logic        run_d, run_q;          // iterations left to issue
  logic [15:0] start_d, start_q;      // GEMM: cycles until the first INP read
  logic        wait_d, wait_q;        // an instruction without iterations
  logic [15:0] wait_cnt_d, wait_cnt_q;
  logic        pre_d, pre_q;          // GEMM: weight tile rows going into the array
  logic [RowBits-1:0] row_d, row_q;
  loop_cfg_t   cfg_d, cfg_q;
  loop_pos_t   pos_d, pos_q;
  logic        count0_d, count0_q;    // POST with count = 0: PAR reads only
  logic        gemm_reset_d, gemm_reset_q;
  alu_op_e     alu_op_d, alu_op_q;
  logic [31:0] imm_d, imm_q;
  logic [7:0]  zp_d, zp_q, lo_d, lo_q, hi_d, hi_q;

  logic      accept, err_now, wait_done;
  logic      issue_now, issue_run, issue, range_err, fire, last;
  mode_e     mode_cur;
  loop_cfg_t cfg_cur;
  loop_pos_t pos_cur;
  logic      count0_cur;
  alu_op_e   alu_op_cur;
  logic      x_ok, y_ok, z_ok, z_read;

  assign instr_ready_o = !busy_q && !err_q;
  assign accept        = instr_valid_i && instr_ready_o;

  // The iteration issued this cycle: from instr_i in the cycle an ALU or POST is taken,
  // else from the registers.
  assign mode_cur   = accept ? dec_mode : mode_q;
  assign cfg_cur    = accept ? dec_cfg : cfg_q;
  assign pos_cur    = accept ? dec_pos : pos_q;
  assign count0_cur = accept ? dec_count0 : count0_q;
  assign alu_op_cur = accept ? in_alu.alu_op : alu_op_q;

  assign issue_now = accept && dec_legal_op && dec_legal_alu && dec_work &&
                     (dec_mode != ModeGemm);
  assign issue_run = run_q && !err_q && (mode_q != ModeGemm || start_q == 16'd0);
  assign issue     = issue_now || issue_run;
  assign last      = (pos_cur.i == cfg_cur.n_inner - 16'd1) &&
                     (pos_cur.o == cfg_cur.n_outer - 16'd1);

  always_comb begin
    x_ok      = 1'b1;
    y_ok      = 1'b1;
    z_ok      = below(pos_cur.addr[SZ], ParEntries);
    z_read    = 1'b0;
    range_err = 1'b0;
    unique case (mode_cur)
      ModeGemm: begin
        x_ok      = below(pos_cur.addr[SX], InpEntries);
        y_ok      = below(pos_cur.addr[SY], AccEntries);
        range_err = !x_ok || !y_ok;
      end
      ModePost: begin
        x_ok      = below(pos_cur.addr[SX], AccEntries);
        y_ok      = below(pos_cur.addr[SY], OutEntries);
        z_read    = (pos_cur.i == 16'd0) && z_ok;
        range_err = !count0_cur && (!x_ok || !y_ok || !z_ok);
      end
      ModeAlu: begin
        x_ok      = below(pos_cur.addr[SX], AccEntries);
        y_ok      = below(pos_cur.addr[SY], AccEntries);
        range_err = !x_ok || !y_ok;
      end
      default: ;
    endcase
  end

  assign fire = issue && !range_err;

  always_comb begin
    err_now    = 1'b0;
    err_code_d = err_code_q;
    if (accept && !dec_legal_op) begin
      err_now    = 1'b1;
      err_code_d = ErrOpcode;
    end else if (accept && !dec_legal_alu) begin
      err_now    = 1'b1;
      err_code_d = ErrAluOp;
    end else if ((accept && dec_mode == ModeGemm && dec_work && !dec_wgt_ok) ||
                 (issue && range_err)) begin
      err_now    = 1'b1;
      err_code_d = ErrRange;
    end
    if (err_q) begin
      err_code_d = err_code_q;
    end
  end

  assign err_d     = err_q || err_now;
  assign wait_done = wait_q && wait_cnt_q == 16'd0;

  always_comb begin
    busy_d       = busy_q;
    mode_d       = mode_q;
    run_d        = run_q;
    start_d      = (start_q != 16'd0) ? start_q - 16'd1 : start_q;
    wait_d       = wait_q;
    wait_cnt_d   = (wait_cnt_q != 16'd0) ? wait_cnt_q - 16'd1 : wait_cnt_q;
    pre_d        = pre_q;
    row_d        = row_q;
    cfg_d        = cfg_q;
    pos_d        = pos_q;
    count0_d     = count0_q;
    gemm_reset_d = gemm_reset_q;
    alu_op_d     = alu_op_q;
    imm_d        = imm_q;
    zp_d         = zp_q;
    lo_d         = lo_q;
    hi_d         = hi_q;

    if (pre_q) begin
      row_d = row_q + RowBits'(1);
      if (row_q == RowBits'(Rows - 1)) begin
        pre_d = 1'b0;
        row_d = '0;
      end
    end

    if (accept) begin
      busy_d       = 1'b1;
      mode_d       = dec_mode;
      cfg_d        = dec_cfg;
      pos_d        = dec_pos;
      count0_d     = dec_count0;
      gemm_reset_d = in_gemm.reset;
      alu_op_d     = in_alu.alu_op;
      imm_d        = in_alu.imm;
      zp_d         = in_post.zero_point;
      lo_d         = in_post.clamp_lo;
      hi_d         = in_post.clamp_hi;
      run_d        = dec_legal_op && dec_legal_alu && dec_work;
      wait_d       = dec_legal_op && dec_legal_alu && !dec_work;
      start_d      = 16'(GemmStart - 1);
      unique case (dec_mode)
        ModeGemm: wait_cnt_d = 16'(GemmIdle - 2);
        ModePost: wait_cnt_d = 16'(PostIdle - 2);
        ModeAlu:  wait_cnt_d = 16'(AluIdle - 2);
        default:  wait_cnt_d = 16'd0;
      endcase
      if (dec_mode == ModeGemm && dec_legal_op && !err_now) begin
        pre_d = 1'b1;
        row_d = '0;
      end
    end

    if (fire) begin
      pos_d = loop_step(cfg_cur.n_inner, cfg_cur.outer_stride, cfg_cur.inner_stride, pos_cur);
      if (last) begin
        run_d = 1'b0;
      end
    end

    if (wait_done) begin
      wait_d = 1'b0;
    end
    if (done_o) begin
      busy_d = 1'b0;
    end
    if (err_now || err_q) begin
      run_d  = 1'b0;
      wait_d = 1'b0;
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      busy_q     <= 1'b0;
      err_q      <= 1'b0;
      err_code_q <= 2'd0;
      mode_q     <= ModeGemm;
      run_q      <= 1'b0;
      start_q    <= 16'd0;
      wait_q     <= 1'b0;
      wait_cnt_q <= 16'd0;
      pre_q      <= 1'b0;
      row_q      <= '0;
    end else begin
      busy_q     <= busy_d;
      err_q      <= err_d;
      err_code_q <= err_code_d;
      mode_q     <= mode_d;
      run_q      <= run_d;
      start_q    <= start_d;
      wait_q     <= wait_d;
      wait_cnt_q <= wait_cnt_d;
      pre_q      <= pre_d;
      row_q      <= row_d;
    end
  end

  // Instruction fields and loop position: loaded when an instruction is taken.
  always_ff @(posedge clk_i) begin
    cfg_q        <= cfg_d;
    pos_q        <= pos_d;
    count0_q     <= count0_d;
    gemm_reset_q <= gemm_reset_d;
    alu_op_q     <= alu_op_d;
    imm_q        <= imm_d;
    zp_q         <= zp_d;
    lo_q         <= lo_d;
    hi_q         <= hi_d;
  end

  assign error_o      = err_q;
  assign error_code_o = err_code_q;

  ///////////////////////////////////
  // Issue: reads and write tokens //
  ///////////////////////////////////

  logic gemm_fire, post_fire, alu_fire;
  assign gemm_fire = fire && mode_cur == ModeGemm;
  assign post_fire = fire && mode_cur == ModePost;
  assign alu_fire  = fire && mode_cur == ModeAlu;

  // Write tokens travel with the data: valid (where the datapath has none), last (done_o)
  // and the write address. Stage j holds the iteration issued j + 1 cycles ago.
  logic [Latency-1:0]       gemm_v_d, gemm_v_q;
  logic [Latency:0]         gemm_last_d, gemm_last_q;
  logic [Latency:0][15:0]   gemm_addr_d, gemm_addr_q;
  logic [PostLatency:0]       post_last_d, post_last_q;
  logic [PostLatency:0][15:0] post_addr_d, post_addr_q;
  logic                     post_v_d, post_v_q;
  logic [1:0]               alu_last_d, alu_last_q;
  logic [1:0][15:0]         alu_addr_d, alu_addr_q;
  logic                     alu_v_d, alu_v_q;

  if (Latency > 1) begin : g_gemm_v_shift
    assign gemm_v_d = {gemm_v_q[Latency-2:0], gemm_fire};
  end else begin : g_gemm_v_single
    assign gemm_v_d = gemm_fire;
  end
  assign gemm_last_d = {gemm_last_q[Latency-1:0], gemm_fire && last};
  assign gemm_addr_d = {gemm_addr_q[Latency-1:0], pos_cur.addr[SY][15:0]};
  assign post_v_d    = post_fire && !count0_cur;
  assign post_last_d = {post_last_q[PostLatency-1:0], post_fire && last};
  assign post_addr_d = {post_addr_q[PostLatency-1:0], pos_cur.addr[SY][15:0]};
  assign alu_v_d     = alu_fire;
  assign alu_last_d  = {alu_last_q[0], alu_fire && last};
  assign alu_addr_d  = {alu_addr_q[0], pos_cur.addr[SX][15:0]};

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      gemm_v_q    <= '0;
      gemm_last_q <= '0;
      post_last_q <= '0;
      post_v_q    <= 1'b0;
      alu_last_q  <= '0;
      alu_v_q     <= 1'b0;
    end else begin
      gemm_v_q    <= gemm_v_d;
      gemm_last_q <= gemm_last_d;
      post_last_q <= post_last_d;
      post_v_q    <= post_v_d;
      alu_last_q  <= alu_last_d;
      alu_v_q     <= alu_v_d;
    end
  end

  always_ff @(posedge clk_i) begin
    gemm_addr_q <= gemm_addr_d;
    post_addr_q <= post_addr_d;
    alu_addr_q  <= alu_addr_d;
  end

  logic gemm_acc_rd, alu_dst_rd;
  assign gemm_acc_rd = gemm_v_q[Latency-1] && !gemm_reset_q && !err_q;
  assign alu_dst_rd  = alu_fire && (alu_op_cur == AluOpAdd || alu_op_cur == AluOpMax);

  assign wgt_re_o    = accept && in_opcode == OpGemm && !(dec_work && !dec_wgt_ok);
  assign wgt_raddr_o = dec_wgt_ok ? in_gemm.wgt_addr : 16'd0;

  assign inp_re_o    = gemm_fire;
  assign inp_raddr_o = pos_cur.addr[SX][15:0];

  assign acc_a_re_o    = gemm_acc_rd || (post_fire && !count0_cur) || alu_dst_rd;
  assign acc_a_raddr_o = gemm_acc_rd ? gemm_addr_q[Latency-1] : pos_cur.addr[SX][15:0];
  assign acc_b_re_o    = alu_fire;
  assign acc_b_raddr_o = pos_cur.addr[SY][15:0];

  assign par_re_o    = post_fire && z_read;
  assign par_raddr_o = pos_cur.addr[SZ][15:0];

  ////////////////
  // Forwarding //
  ////////////////

  // ACC as the iterations so far left it, for the data of a read issued last cycle: the
  // entry being written now by the ALU (its result, not yet in ACC), else the one written
  // in the read's own cycle (the SRAM read the old value), else what the SRAM read.
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
    assign gemm_sum[c] = gemm_res[c] + (gemm_reset_q ? 32'd0 : acc_a_view[c]);
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
    .acc_i        (acc_a_rdata_i),
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

  assign acc_we_o    = gemm_we || alu_we;
  assign acc_waddr_o = gemm_we ? gemm_addr_q[Latency] : alu_addr_q[1];
  assign acc_wdata_o = gemm_we ? gemm_sum : alu_out;

  assign out_we_o    = post_valid && !err_q;
  assign out_waddr_o = post_addr_q[PostLatency];
  assign out_wdata_o = post_out;

  assign done_o = !err_q && (gemm_last_q[Latency] || post_last_q[PostLatency] ||
                             alu_last_q[1] || wait_done);

  logic unused_misc;
  assign unused_misc = ^{alu_illegal, unused_shift_hi};

endmodule
