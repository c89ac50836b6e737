// A pair of processing elements of the weight-stationary systolic array (dpu_array): the
// PEs of one grid row in the neighbouring columns 2j and 2j + 1 (lanes 0 and 1 here), which
// take the same activation and so share one multiplier, one DSP48 slice.
//
// Packing. With the int8 weights w0 and w1 held as one 25-bit signed word
//   wgt_pk = w1 * 2^16 + w0                  (the DSP's pre-adder, when the row is written)
// one 8 x 25 bit signed product m = a * wgt_pk = a*w1 * 2^16 + a*w0 carries both products.
// Every int8 product lies in [-16256, 16384], inside a signed 16-bit field, so
//   a*w0 = sext(m[15:0])                     (the low 16 bits, sign-extended)
//   a*w1 = (m - a*w0) / 2^16 = m[31:16] + m[15]
// exactly, for all operands (a*w1 - m[15] also fits m[31:16]). Each lane adds its product
// to the partial sum from above, SumBits wide and wrapping (dpu_array picks SumBits so that
// no column sum overflows), the m[15] correction as the adder's carry-in:
//   psum_o[0] = psum_i[0] + sext(m[15:0])
//   psum_o[1] = psum_i[1] + sext(m[31:16]) + m[15]
//
// Timing. A pair written with wgt_we_i in cycle n multiplies with the new weights from
// cycle n + 1 on. An activation on act_i in cycle t is multiplied in cycle t + ActReg
// (ActReg: the DSP's B register), its product added in cycle t + ActReg + ProdReg (ProdReg:
// the DSP's M register) to psum_i of that cycle, and the sums are on psum_o one cycle
// later: in cycle t + ActReg + ProdReg + 1.
//
// No register here has a reset (they are datapath registers; Yosys packs them into the
// DSP48): the weights are undefined until first written.

module dpu_pe #(
  parameter int unsigned SumBits = 20,
  parameter bit          ActReg  = 1'b1,
  parameter bit          ProdReg = 1'b1
) (
  input  logic                    clk_i,

  input  logic                    wgt_we_i,
  input  logic [1:0][7:0]         wgt_i,   // int8 weights of lanes 0 and 1

  input  logic [7:0]              act_i,   // int8 activation, shared by both lanes

  input  logic [1:0][SumBits-1:0] psum_i,  // partial sums from above, one per lane
  output logic [1:0][SumBits-1:0] psum_o
);

  // Packed weights: w1 * 2^16 + w0.
  logic signed [24:0] wgt_pk_d, wgt_pk_q;

  always_comb begin
    wgt_pk_d = wgt_pk_q;
    if (wgt_we_i) begin
      wgt_pk_d = (25'($signed(wgt_i[1])) <<< 16) + 25'($signed(wgt_i[0]));
    end
  end

  always_ff @(posedge clk_i) begin
    wgt_pk_q <= wgt_pk_d;
  end

  // Activation at the multiplier.
  logic [7:0] act;

  if (ActReg) begin : g_act_reg
    logic [7:0] act_q;
    always_ff @(posedge clk_i) begin
      act_q <= act_i;
    end
    assign act = act_q;
  end else begin : g_act_direct
    assign act = act_i;
  end

  // Both products in one: the low 32 bits of a * wgt_pk (|a * wgt_pk| < 2^31).
  logic [31:0] prod_d, prod;

  assign prod_d = 32'($signed(act) * wgt_pk_q);

  if (ProdReg) begin : g_prod_reg
    logic [31:0] prod_q;
    always_ff @(posedge clk_i) begin
      prod_q <= prod_d;
    end
    assign prod = prod_q;
  end else begin : g_prod_direct
    assign prod = prod_d;
  end

  // Unpack and accumulate.
  logic [1:0][SumBits-1:0] psum_d, psum_q;

  always_comb begin
    psum_d[0] = psum_i[0] + SumBits'($signed(prod[15:0]));
    psum_d[1] = psum_i[1] + SumBits'($signed(prod[31:16])) + SumBits'(prod[15]);
  end

  always_ff @(posedge clk_i) begin
    psum_q <= psum_d;
  end

  assign psum_o = psum_q;

endmodule
