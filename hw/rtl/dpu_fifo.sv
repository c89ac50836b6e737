// A synchronous FIFO of Depth entries of Width bits: the dispatcher's command queues and its
// in-flight push flags (dpu_dispatch).
//
// push_i writes data_i at the edge that ends the cycle; pop_i removes the head at that edge.
// Both may happen in one cycle (also when full: the pop frees the entry the push fills, as
// the callers use it). head_o is the oldest entry, valid while count_o is non-zero; pushing
// into a full FIFO or popping an empty one is the caller's error (not checked here).
// Storage has no reset (only entries between the read and write pointers are ever read);
// reset empties the FIFO.

module dpu_fifo #(
  parameter int unsigned Width = 8,
  parameter int unsigned Depth = 4,
  localparam int unsigned CntBits = $clog2(Depth + 1)
) (
  input  logic               clk_i,
  input  logic               rst_ni,

  input  logic               push_i,
  input  logic [Width-1:0]   data_i,
  input  logic               pop_i,
  output logic [Width-1:0]   head_o,
  output logic [CntBits-1:0] count_o
);

  localparam int unsigned PtrBits = (Depth > 1) ? $clog2(Depth) : 1;

  logic [Width-1:0]   mem_q [Depth];
  logic [PtrBits-1:0] wptr_q, wptr_d;
  logic [PtrBits-1:0] rptr_q, rptr_d;
  logic [CntBits-1:0] count_q, count_d;

  always_comb begin
    wptr_d  = wptr_q;
    rptr_d  = rptr_q;
    count_d = count_q;
    if (push_i) begin
      wptr_d = (wptr_q == PtrBits'(Depth - 1)) ? '0 : wptr_q + PtrBits'(1);
    end
    if (pop_i) begin
      rptr_d = (rptr_q == PtrBits'(Depth - 1)) ? '0 : rptr_q + PtrBits'(1);
    end
    unique case ({push_i, pop_i})
      2'b10:   count_d = count_q + CntBits'(1);
      2'b01:   count_d = count_q - CntBits'(1);
      default: count_d = count_q;
    endcase
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      wptr_q  <= '0;
      rptr_q  <= '0;
      count_q <= '0;
    end else begin
      wptr_q  <= wptr_d;
      rptr_q  <= rptr_d;
      count_q <= count_d;
    end
  end

  always_ff @(posedge clk_i) begin
    if (push_i) begin
      mem_q[wptr_q] <= data_i;
    end
  end

  assign head_o  = mem_q[rptr_q];
  assign count_o = count_q;

endmodule
