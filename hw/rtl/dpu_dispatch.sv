// Instruction dispatch and dependency tokens of the DPU (docs/isa.md; the cycle model's
// rules in compiler/timing.py).
//
// Input: one 256-bit instruction word per handshake (instr_valid_i/instr_ready_o/instr_i),
// in program order. The opcode selects the engine: LOAD -> load, GEMM/POST/ALU ->
// compute, STORE -> store. Each engine has a command FIFO of QueueDepth words; the input
// stalls (instr_ready_o low) while the target FIFO is full, so fetch stays in order.
//
// Engine ports (<e> = load, compute, store): <e>_valid_o/<e>_ready_i/<e>_instr_o offer
// the head of the engine's FIFO; the engine takes it with the handshake and, when the
// instruction has finished, pulses <e>_complete_i for one cycle. <e>_instr_o is the full
// instruction word, stable while <e>_valid_o is high.
//
// In flight: an instruction is in flight from the cycle it is taken until the cycle of its
// <e>_complete_i pulse. The load and store engines hold at most one instruction, the
// compute engine at most ComputeInFlight (GEMMs pipelined back to back, GEMMs beside a
// POST). An engine completes its instructions in the order it took them (program order),
// at most one <e>_complete_i pulse per cycle; a pulse with nothing in flight is ignored.
// A command is offered only while fewer than the engine's limit are in flight, or exactly
// the limit and one completes in that cycle (then the next command may be taken in the
// same cycle). Below the limit the engine decides with <e>_ready_i whether it takes the
// next one while others run. With ComputeInFlight = 1 every engine is one-at-a-time.
//
// Tokens: four counters, l2c, c2l, c2s, s2c (load -> compute -> store chain). The head of a
// FIFO is offered only when every counter its pop flags name is non-zero; the counters are
// decremented when the engine takes it. The push flags of each instruction in flight are
// kept per engine, oldest first, and the oldest one's are added to their counters on
// <e>_complete_i (in-order completion is what pairs a pulse with its instruction). Counters
// are registered: a token pushed in cycle t can be consumed by a command taken in t + 1 or
// later. A take and a completion in the same cycle (even on the same counter) both count.
//   LOAD:    pop_next <- c2l   push_next -> l2c   (pop_prev, push_prev illegal)
//   compute: pop_prev <- l2c   pop_next <- s2c    push_prev -> c2l   push_next -> c2s
//   STORE:   pop_prev <- c2s   push_prev -> s2c   (pop_next, push_next illegal)
//
// END: not accepted until all FIFOs are empty and nothing is in flight; done_o pulses in the
// cycle after END is accepted. Instructions after END are accepted as a new program.
// Token flags of END are ignored; tokens left over in the counters are kept.
//
// Errors (sticky until reset): error_o high with error_code_o
//   1 ErrOpcode   illegal opcode (0, 6, 8..15) presented with instr_valid_i
//   2 ErrFlags    a token flag naming a neighbour the engine does not have (see above)
//   3 ErrOverflow a completion would raise a token counter above QueueDepth
// The offending word is not accepted. From the error on, instr_ready_o and every
// <e>_valid_o stay low (instructions already taken may still complete), so nothing
// hangs waiting on the dispatcher's handshakes: software reads the error and resets.

module dpu_dispatch
  import dpu_isa_pkg::*;
#(
  parameter int unsigned QueueDepth      = 16,
  // compute instructions taken and not yet completed, at most (load and store: 1)
  parameter int unsigned ComputeInFlight = 1
) (
  input  logic                 clk_i,
  input  logic                 rst_ni,

  // instruction stream, program order
  input  logic                 instr_valid_i,
  output logic                 instr_ready_o,
  input  logic [InstrBits-1:0] instr_i,

  // load engine
  output logic                 load_valid_o,
  input  logic                 load_ready_i,
  output logic [InstrBits-1:0] load_instr_o,
  input  logic                 load_complete_i,

  // compute engine (GEMM, POST, ALU)
  output logic                 compute_valid_o,
  input  logic                 compute_ready_i,
  output logic [InstrBits-1:0] compute_instr_o,
  input  logic                 compute_complete_i,

  // store engine
  output logic                 store_valid_o,
  input  logic                 store_ready_i,
  output logic [InstrBits-1:0] store_instr_o,
  input  logic                 store_complete_i,

  // activity, for the top's deadlock detection and stall counters (per engine, bit 0 load,
  // 1 compute, 2 store): busy_o at least one instruction is in flight in the engine;
  // blocked_o none is in flight, the FIFO is not empty and its head waits for a token
  output logic [2:0]           busy_o,
  output logic [2:0]           blocked_o,

  output logic                 done_o,        // one-cycle pulse: END reached, all idle
  output logic                 error_o,       // sticky
  output logic [1:0]           error_code_o   // ErrOpcode / ErrFlags / ErrOverflow
);

  localparam int unsigned NumEngines = 3;
  localparam int unsigned NumQueues = 4;
  localparam int unsigned CntBits = $clog2(QueueDepth + 1);
  localparam int unsigned TokBits = $clog2(QueueDepth + 2);  // holds QueueDepth + 1

  // engine indices
  localparam int unsigned EngLoad = 0;
  localparam int unsigned EngCompute = 1;
  localparam int unsigned EngStore = 2;

  // token counter indices
  localparam int unsigned QL2c = 0;
  localparam int unsigned QC2l = 1;
  localparam int unsigned QC2s = 2;
  localparam int unsigned QS2c = 3;

  localparam logic [1:0] ErrNone = 2'd0;
  localparam logic [1:0] ErrOpcode = 2'd1;
  localparam logic [1:0] ErrFlags = 2'd2;
  localparam logic [1:0] ErrOverflow = 2'd3;

  if (ComputeInFlight < 1) begin : g_bad_in_flight
    $error("dpu_dispatch: ComputeInFlight must be at least 1");
  end

  // ---------------------------------------------------------------------------------
  // Input decode
  // ---------------------------------------------------------------------------------
  opcode_e in_op;
  flags_t  in_flags;
  assign in_op    = opcode_e'(instr_i[OpcodeBits-1:0]);
  assign in_flags = flags_t'(instr_i[FieldsLsb-1:OpcodeBits]);

  logic [NumEngines-1:0] in_target;  // one-hot engine of the input word
  logic                  in_is_end;
  logic                  in_bad_op;
  logic                  in_bad_flags;

  always_comb begin
    in_target    = '0;
    in_is_end    = 1'b0;
    in_bad_op    = 1'b0;
    in_bad_flags = 1'b0;
    unique case (in_op)
      OpLoad: begin
        in_target[EngLoad] = 1'b1;
        in_bad_flags = in_flags.pop_prev | in_flags.push_prev;
      end
      OpGemm, OpPost, OpAlu: begin
        in_target[EngCompute] = 1'b1;
      end
      OpStore: begin
        in_target[EngStore] = 1'b1;
        in_bad_flags = in_flags.pop_next | in_flags.push_next;
      end
      OpEnd: begin
        in_is_end = 1'b1;
      end
      default: begin
        in_bad_op = 1'b1;
      end
    endcase
  end

  // ---------------------------------------------------------------------------------
  // Command FIFOs and engine handshakes
  // ---------------------------------------------------------------------------------
  logic                                 error_q, error_d;
  logic [1:0]                           error_code_q, error_code_d;
  logic                                 done_q, done_d;

  logic [NumEngines-1:0]                fifo_push;    // input word written to the FIFO
  logic [NumEngines-1:0]                fifo_full;
  logic [NumEngines-1:0]                fifo_empty;
  instr_t [NumEngines-1:0]               head;         // word at the FIFO's head
  logic [NumEngines-1:0]                cmd_valid;
  logic [NumEngines-1:0]                cmd_ready;
  logic [NumEngines-1:0]                cmd_take;     // engine takes the head this cycle
  logic [NumEngines-1:0]                complete;
  logic [NumEngines-1:0]                busy;         // at least one instruction in flight
  logic [NumEngines-1:0]                flight_full;  // the engine's limit is in flight
  logic [NumEngines-1:0]                retire;       // the oldest in flight completes
  logic [NumEngines-1:0][NumQueues-1:0] retire_pushes;  // counters it pushes
  logic [NumEngines-1:0]                tok_ok;       // all tokens the head pops available
  logic [NumEngines-1:0][NumQueues-1:0] head_pops;    // counters the head pops
  logic [NumEngines-1:0][NumQueues-1:0] head_pushes;  // counters the head pushes

  assign cmd_ready = {store_ready_i, compute_ready_i, load_ready_i};
  assign complete  = {store_complete_i, compute_complete_i, load_complete_i};

  for (genvar e = 0; e < NumEngines; e++) begin : g_fifo
    logic [InstrBits-1:0] head_word;
    logic [CntBits-1:0]   count;

    dpu_fifo #(
      .Width (InstrBits),
      .Depth (QueueDepth)
    ) u_cmd (
      .clk_i   (clk_i),
      .rst_ni  (rst_ni),
      .push_i  (fifo_push[e]),
      .data_i  (instr_i),
      .pop_i   (cmd_take[e]),
      .head_o  (head_word),
      .count_o (count)
    );

    assign head[e]       = instr_t'(head_word);
    assign fifo_full[e]  = (count == CntBits'(QueueDepth));
    assign fifo_empty[e] = (count == '0);
  end

  // Instructions in flight, per engine: the push flags of each one taken and not yet
  // completed, in a FIFO as deep as the engine's limit. Completions come in the order of the
  // takes, so a completion always belongs to the oldest entry.
  for (genvar e = 0; e < NumEngines; e++) begin : g_flight
    localparam int unsigned Limit    = (e == EngCompute) ? ComputeInFlight : 1;
    localparam int unsigned FCntBits = $clog2(Limit + 1);

    logic [FCntBits-1:0] count;

    dpu_fifo #(
      .Width (NumQueues),
      .Depth (Limit)
    ) u_pushes (
      .clk_i   (clk_i),
      .rst_ni  (rst_ni),
      .push_i  (cmd_take[e]),
      .data_i  (head_pushes[e]),
      .pop_i   (retire[e]),
      .head_o  (retire_pushes[e]),
      .count_o (count)
    );

    assign busy[e]        = (count != '0);
    assign flight_full[e] = (count == FCntBits'(Limit));
    assign retire[e]      = complete[e] && busy[e];
  end

  // Token flags of each FIFO head, mapped onto the counters (validated at the input).
  always_comb begin
    head_pops   = '0;
    head_pushes = '0;
    head_pops[EngLoad][QC2l]      = head[EngLoad].flags.pop_next;
    head_pushes[EngLoad][QL2c]    = head[EngLoad].flags.push_next;
    head_pops[EngCompute][QL2c]   = head[EngCompute].flags.pop_prev;
    head_pops[EngCompute][QS2c]   = head[EngCompute].flags.pop_next;
    head_pushes[EngCompute][QC2l] = head[EngCompute].flags.push_prev;
    head_pushes[EngCompute][QC2s] = head[EngCompute].flags.push_next;
    head_pops[EngStore][QC2s]     = head[EngStore].flags.pop_prev;
    head_pushes[EngStore][QS2c]   = head[EngStore].flags.push_prev;
  end

  // ---------------------------------------------------------------------------------
  // Token counters
  // ---------------------------------------------------------------------------------
  logic [NumQueues-1:0][TokBits-1:0] tok_q, tok_d;
  logic [NumQueues-1:0]              tok_avail;
  logic [NumQueues-1:0]              tok_pop;
  logic [NumQueues-1:0]              tok_push;
  logic                              tok_overflow;

  for (genvar q = 0; q < NumQueues; q++) begin : g_tok_avail
    assign tok_avail[q] = (tok_q[q] != '0);
  end

  always_comb begin
    tok_pop      = '0;
    tok_push     = '0;
    tok_overflow = 1'b0;
    for (int unsigned e = 0; e < NumEngines; e++) begin
      if (cmd_take[e]) begin
        tok_pop = tok_pop | head_pops[e];
      end
      if (retire[e]) begin
        tok_push = tok_push | retire_pushes[e];
      end
    end
    for (int unsigned q = 0; q < NumQueues; q++) begin
      tok_d[q] = tok_q[q] + TokBits'(tok_push[q]) - TokBits'(tok_pop[q]);
      if (tok_d[q] > TokBits'(QueueDepth)) begin
        tok_overflow = 1'b1;
      end
    end
    if (error_q) begin
      tok_d = tok_q;  // frozen: late completions after an error change nothing
    end
  end

  // ---------------------------------------------------------------------------------
  // Engine side
  // ---------------------------------------------------------------------------------
  // At the limit, a completion in this cycle frees the slot the take fills (flight_full
  // implies busy, so the completion is a real one).
  always_comb begin
    for (int unsigned e = 0; e < NumEngines; e++) begin
      tok_ok[e]    = ((head_pops[e] & ~tok_avail) == '0);
      cmd_valid[e] = !error_q && !fifo_empty[e] && tok_ok[e] && (!flight_full[e] || complete[e]);
      cmd_take[e]  = cmd_valid[e] && cmd_ready[e];
    end
  end

  assign load_valid_o    = cmd_valid[EngLoad];
  assign compute_valid_o = cmd_valid[EngCompute];
  assign store_valid_o   = cmd_valid[EngStore];
  assign load_instr_o    = head[EngLoad];
  assign compute_instr_o = head[EngCompute];
  assign store_instr_o   = head[EngStore];

  // ---------------------------------------------------------------------------------
  // Input handshake, END and errors
  // ---------------------------------------------------------------------------------
  logic all_idle;
  logic in_fire;
  assign all_idle = (&fifo_empty) && (busy == '0);

  always_comb begin
    instr_ready_o = 1'b0;
    if (!error_q && !in_bad_op && !in_bad_flags) begin
      instr_ready_o = in_is_end ? all_idle : ((in_target & fifo_full) == '0);
    end
  end

  assign in_fire   = instr_valid_i && instr_ready_o;
  assign fifo_push = in_fire ? in_target : '0;

  always_comb begin
    done_d       = in_fire && in_is_end;
    error_d      = error_q;
    error_code_d = error_code_q;
    if (!error_q) begin
      if (instr_valid_i && in_bad_op) begin
        error_d      = 1'b1;
        error_code_d = ErrOpcode;
      end else if (instr_valid_i && in_bad_flags) begin
        error_d      = 1'b1;
        error_code_d = ErrFlags;
      end else if (tok_overflow) begin
        error_d      = 1'b1;
        error_code_d = ErrOverflow;
      end
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      tok_q        <= '0;
      done_q       <= 1'b0;
      error_q      <= 1'b0;
      error_code_q <= ErrNone;
    end else begin
      tok_q        <= tok_d;
      done_q       <= done_d;
      error_q      <= error_d;
      error_code_q <= error_code_d;
    end
  end

  assign busy_o       = busy;
  assign blocked_o    = ~busy & ~fifo_empty & ~tok_ok;
  assign done_o       = done_q;
  assign error_o      = error_q;
  assign error_code_o = error_code_q;

endmodule
