// ALU lanes: the arithmetic of the ALU instruction on one entry of Cols int32 lanes per
// cycle (docs/isa.md, ALU). Per lane c, with int32 wrap-around (the low 32 bits):
//   AluOpMov   out = src
//   AluOpAdd   out = dst + src
//   AluOpMax   out = max(dst, src)       signed
//   AluOpMuli  out = src * m             m = imm[24:0] sign-extended (docs/isa.md): a 32 x 25
//                                        product, low 32 bits (same signed or not)
//   AluOpAddi  out = src + imm
// imm is one int32 shared by all lanes.
//
// Timing: one entry per cycle, no backpressure. An entry presented with valid_i in cycle t
// leaves on out_o with valid_o in cycle t + 1 (Latency = 1). An op value outside alu_op_e
// (5..7) gives illegal_o high together with valid_o and out_o = 0. Inputs are ignored while
// valid_i is low, and out_o and illegal_o then hold; illegal_o is low whenever valid_o is.
// Reset clears the valid bit only.

module dpu_alu_lanes
  import dpu_isa_pkg::*;
#(
  parameter int unsigned Cols = 16
) (
  input  logic                   clk_i,
  input  logic                   rst_ni,

  input  logic                   valid_i,
  input  alu_op_e                op_i,
  input  logic [Cols-1:0][31:0]  dst_i,      // int32 lanes, lane c at [32c +: 32]
  input  logic [Cols-1:0][31:0]  src_i,      // int32 lanes
  input  logic [31:0]            imm_i,      // int32, all lanes

  output logic                   valid_o,
  output logic                   illegal_o,  // op_i was not an alu_op_e value
  output logic [Cols-1:0][31:0]  out_o       // int32 lanes
);

  localparam int unsigned MuliBits = 25;  // compiler/isa.py MULI_IMM_BITS

  logic                  valid_q;
  logic [Cols-1:0][31:0] muli;      // src * imm[MuliBits-1:0], low 32 bits
  logic                  illegal_d, illegal_q;
  logic [Cols-1:0][31:0] out_d, out_q;

  // src * m as two products that each fit one DSP48 (25 x 18 signed): src = hi*2^17 + lo with
  // lo = src[16:0] (unsigned, 18 bits signed) and hi = src[31:17] (signed). Written at these
  // widths, synthesis maps each to one slice; as one 32 x 25 product it takes three.
  for (genvar c = 0; c < Cols; c++) begin : g_muli
    logic signed [17+MuliBits-1:0] prod_lo;  // 18 x 25
    logic signed [15+MuliBits-1:0] prod_hi;  // 15 x 25
    assign prod_lo = $signed({1'b0, src_i[c][16:0]}) * $signed(imm_i[MuliBits-1:0]);
    assign prod_hi = $signed(src_i[c][31:17]) * $signed(imm_i[MuliBits-1:0]);
    assign muli[c] = 32'(prod_lo) + {prod_hi[14:0], 17'd0};
    logic unused_high;  // bits that land at 2^32 and above wrap away (int32)
    assign unused_high = ^{prod_lo[17+MuliBits-1:32], prod_hi[15+MuliBits-1:15]};
  end

  always_comb begin
    illegal_d = illegal_q;
    out_d     = out_q;
    if (valid_i) begin
      illegal_d = 1'b0;
      for (int unsigned c = 0; c < Cols; c++) begin
        unique case (op_i)
          AluOpMov:  out_d[c] = src_i[c];
          AluOpAdd:  out_d[c] = dst_i[c] + src_i[c];
          AluOpMax:  out_d[c] = $signed(dst_i[c]) > $signed(src_i[c]) ? dst_i[c] : src_i[c];
          AluOpMuli: out_d[c] = muli[c];
          AluOpAddi: out_d[c] = src_i[c] + imm_i;
          default: begin
            out_d[c]  = 32'd0;
            illegal_d = 1'b1;
          end
        endcase
      end
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      valid_q <= 1'b0;
    end else begin
      valid_q <= valid_i;
    end
  end

  always_ff @(posedge clk_i) begin
    illegal_q <= illegal_d;
    out_q     <= out_d;
  end

  assign valid_o   = valid_q;
  assign illegal_o = valid_q & illegal_q;
  assign out_o     = out_q;

endmodule
