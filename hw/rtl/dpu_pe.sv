// One processing element of the weight-stationary systolic array (dpu_array).
//
// Holds one int8 weight, written when wgt_we_i is set (dpu_array loads a whole array row
// in one cycle). Every cycle it takes an int8 activation from the left and an int32
// partial sum from above, and registers
//   act_o  = act_i                         (passed right one cycle later)
//   psum_o = psum_i + act_i * weight       (passed down one cycle later)
// with a signed int8 x int8 -> int16 product and a wrapping int32 add. The weight used in
// a cycle is the one held before that cycle's clock edge: a weight written in cycle n is
// used from cycle n + 1 on.

module dpu_pe (
  input  logic        clk_i,
  input  logic        rst_ni,

  input  logic        wgt_we_i,
  input  logic [7:0]  wgt_i,

  input  logic [7:0]  act_i,
  output logic [7:0]  act_o,

  input  logic [31:0] psum_i,
  output logic [31:0] psum_o
);

  logic [7:0]  wgt_d, wgt_q;
  logic [7:0]  act_d, act_q;
  logic [31:0] psum_d, psum_q;
  logic [15:0] prod;

  always_comb begin
    wgt_d = wgt_q;
    if (wgt_we_i) begin
      wgt_d = wgt_i;
    end
  end

  assign prod   = 16'($signed(act_i) * $signed(wgt_q));
  assign act_d  = act_i;
  assign psum_d = psum_i + {{16{prod[15]}}, prod};

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      wgt_q  <= 8'h00;
      act_q  <= 8'h00;
      psum_q <= 32'h0000_0000;
    end else begin
      wgt_q  <= wgt_d;
      act_q  <= act_d;
      psum_q <= psum_d;
    end
  end

  assign act_o  = act_q;
  assign psum_o = psum_q;

endmodule
