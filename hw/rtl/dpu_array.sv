// Weight-stationary systolic array of Rows x Cols int8 PEs: the GEMM datapath of the DPU.
//
// Row r of the grid multiplies input lane r; column c accumulates output lane c. For an
// activation vector a (Rows int8 lanes) and the held weight tile W (W[r][c]: the weight
// from input lane r to output lane c) the result is p[c] = sum_r a[r]*W[r][c], the
// products exact and the sum wrapped to int32 (docs/isa.md, GEMM).
//
// Weight port. One row of Cols int8 weights per cycle while wgt_valid_i is set, lane c
// of wgt_i = W[r][c]. Rows are taken in order r = 0, 1, ..., Rows - 1, then 0 again: an
// internal counter (cleared by reset) picks the grid row the beat is written to, so a
// tile preload is Rows valid beats. A row is written to all its PEs at once. The weight
// and activation ports are independent: a row may be written while vectors stream.
//
// Activation port. One vector of Rows int8 lanes per cycle while act_valid_i is set. The
// array skews it internally (lane r delayed r cycles); cycles with act_valid_i low are
// bubbles (zero vectors inside, no result) and may fall anywhere.
//
// Result port. One vector of Cols int32 lanes, de-skewed so that all lanes of one
// result come out in the same cycle, with res_valid_o. Results leave in input order.
//
// Latency: Latency = Rows + Cols - 1 cycles (localparam below). A vector on the
// activation port in cycle k (sampled at the clock edge that ends cycle k) has its result
// on the result port in cycle k + Rows + Cols - 1. res_o comes straight from the partial
// sum registers of the last grid row. Throughput is one vector per cycle.
//
// Timing contract (exact). There is one weight register per PE (no shadow copy). Let
// MulLead = Cols - 1 - ProdRegs (Cols - 2 for Cols >= 2; 0 for Cols = 1). Grid row r
// multiplies the vector that was on the activation port in cycle k during cycle
// k + r + MulLead, all its columns at once; a weight row for grid row r presented (with
// wgt_valid_i) in cycle w is used from cycle w + 1 on. So that row applies to exactly the
// vectors on the port in cycles k with k + r + MulLead > w, i.e. k >= w - r - MulLead + 1,
// and to none before (the earlier ones see the row it replaces). For a tile whose row r is
// presented in cycle w_r:
//   - its first vector may be on the port in cycle max_r (w_r - r - MulLead + 1) at the
//     earliest;
//   - its row r may be presented in cycle k_last + r + MulLead at the earliest, where
//     k_last is the cycle of the previous tile's last vector.
// Both bounds are tight: one cycle earlier and a vector multiplies in grid row r with the
// other tile's row (sim/array_tests.py checks both ways). dpu_compute (Cols >= 3) runs the
// array at these bounds: a GEMM taken in cycle a puts its T vectors on the port in cycles
// a + 1 ... a + T and presents tile row r in cycle a + r + MulLead, just before vector
// a + 1 reaches grid row r and not before the previous GEMM's last vector (on the port in
// cycle a or earlier) has passed it. So a GEMM's vectors may follow the previous GEMM's
// without a gap, the preload riding along the wavefront of the first vector, and only the
// weight port (one tile of Rows beats at a time) spaces GEMMs: compiler/timing.py starts
// them max(T, Rows) cycles apart. The last result is on the port in cycle
// a + T + Rows + Cols - 1: counting cycle a as 1, cycle T + Rows + Cols, the cycle model's
// GEMM cost (for T >= 1).
//
// Reset clears the weight row counter and the valid pipeline only: weights are undefined
// until a tile is loaded, and the datapath registers have no reset.
//
// Structure. Columns 2j and 2j + 1 of a grid row share one multiplier (dpu_pe: two int8
// products out of one DSP48 multiply), so the grid is Rows x ceil(Cols/2) dpu_pe; with
// an odd Cols the last pair's second weight is 0 and its second sum unused. An activation
// lane is broadcast along its grid row (no horizontal systolic pass, so no de-skew of the
// results); lane r is delayed r + ActDelay cycles (shift registers, SRL-friendly), and
// the ActDelay stages plus the PE's activation and product registers (ActRegs, ProdRegs)
// make up the Cols - 1 cycles of the latency beyond the Rows cycles of the vertical
// wavefront: grid row r multiplies in cycle k + r + ActDelay + ActRegs = k + r + MulLead,
// adds the products ProdRegs cycles later and registers the sums at the end of that cycle,
// where grid row r + 1 adds to them in the next. Column sums run
// SumBits = 16 + clog2(Rows) bits wide, which holds any sum of Rows int8 products
// (|sum| <= Rows * 2^14), and are sign-extended to int32 at the bottom.

module dpu_array #(
  parameter int unsigned Rows = 4,
  parameter int unsigned Cols = 4
) (
  input  logic                       clk_i,
  input  logic                       rst_ni,

  // Weight preload: one tile row per beat, rows in order.
  input  logic                       wgt_valid_i,
  input  logic [Cols-1:0][7:0]       wgt_i,

  // Activation stream: one vector per beat.
  input  logic                       act_valid_i,
  input  logic [Rows-1:0][7:0]       act_i,

  // Results: one vector per beat, Latency cycles after its activation vector.
  output logic                       res_valid_o,
  output logic [Cols-1:0][31:0]      res_o
);

  localparam int unsigned Latency = Rows + Cols - 1;
  localparam int unsigned RowIdxBits = (Rows > 1) ? $clog2(Rows) : 1;
  localparam logic [RowIdxBits-1:0] LastRow = RowIdxBits'(Rows - 1);

  localparam int unsigned Pairs   = (Cols + 1) / 2;
  localparam int unsigned SumBits = 16 + $clog2(Rows);
  // Pipeline registers in the PE (activation, product), as many as Cols - 1 allows, and
  // the activation delay that makes up the rest of the Cols - 1 cycles.
  localparam int unsigned ProdRegs = (Cols >= 2) ? 1 : 0;
  localparam int unsigned ActRegs  = (Cols >= 3) ? 1 : 0;
  localparam int unsigned ActDelay = Cols - 1 - ProdRegs - ActRegs;

  ////////////////////
  // Weight preload //
  ////////////////////

  logic [RowIdxBits-1:0] wgt_row_d, wgt_row_q;
  logic [Rows-1:0]       wgt_we;

  always_comb begin
    wgt_row_d = wgt_row_q;
    if (wgt_valid_i) begin
      wgt_row_d = (wgt_row_q == LastRow) ? '0 : wgt_row_q + RowIdxBits'(1);
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      wgt_row_q <= '0;
    end else begin
      wgt_row_q <= wgt_row_d;
    end
  end

  for (genvar r = 0; r < Rows; r++) begin : g_wgt_we
    assign wgt_we[r] = wgt_valid_i && (wgt_row_q == RowIdxBits'(r));
  end

  // Weight lanes padded to whole pairs (an odd Cols leaves a zero weight in the last).
  logic [2*Pairs-1:0][7:0] wgt_pairs;

  assign wgt_pairs[Cols-1:0] = wgt_i;
  if (Cols % 2 == 1) begin : g_wgt_pad
    assign wgt_pairs[Cols] = 8'h00;
  end

  //////////////////////
  // Activation delay //
  //////////////////////

  // Bubbles enter the grid as zero vectors.
  logic [Rows-1:0][7:0] act_in;
  assign act_in = act_valid_i ? act_i : '0;

  // act_row[r]: lane r, r + ActDelay cycles late, broadcast to grid row r.
  logic [Rows-1:0][7:0] act_row;

  for (genvar r = 0; r < Rows; r++) begin : g_delay
    localparam int unsigned Depth = r + ActDelay;
    if (Depth == 0) begin : g_direct
      assign act_row[r] = act_in[r];
    end else begin : g_shift
      // Stage i in bits [8*i +: 8]; flat, as Yosys cannot index 2-D vectors declared here.
      logic [8*Depth-1:0] delay_d, delay_q;

      always_comb begin
        delay_d = delay_q << 8;
        delay_d[7:0] = act_in[r];
      end

      always_ff @(posedge clk_i) begin
        delay_q <= delay_d;
      end

      assign act_row[r] = delay_q[8*Depth-1 -: 8];
    end
  end

  //////////
  // Grid //
  //////////

  // psum_v[r][c]: partial sum into grid row r of column c; psum_v[Rows][c] leaves it.
  logic [Rows:0][2*Pairs-1:0][SumBits-1:0] psum_v;

  assign psum_v[0] = '0;

  for (genvar r = 0; r < Rows; r++) begin : g_row
    for (genvar j = 0; j < Pairs; j++) begin : g_pair
      dpu_pe #(
        .SumBits (SumBits),
        .ActReg  (ActRegs == 1),
        .ProdReg (ProdRegs == 1)
      ) u_pe (
        .clk_i    (clk_i),
        .wgt_we_i (wgt_we[r]),
        .wgt_i    (wgt_pairs[2*j +: 2]),
        .act_i    (act_row[r]),
        .psum_i   (psum_v[r][2*j +: 2]),
        .psum_o   (psum_v[r+1][2*j +: 2])
      );
    end
  end

  // Column sums, sign-extended: exact, so also the int32 wrap of the exact sum.
  for (genvar c = 0; c < Cols; c++) begin : g_res
    assign res_o[c] = 32'($signed(psum_v[Rows][c]));
  end

  if (Cols % 2 == 1) begin : g_unused_pad
    logic [SumBits-1:0] unused_psum_pad;
    assign unused_psum_pad = psum_v[Rows][Cols];
  end

  ////////////////////
  // Valid pipeline //
  ////////////////////

  logic [Latency-1:0] valid_d, valid_q;

  always_comb begin
    valid_d = valid_q << 1;
    valid_d[0] = act_valid_i;
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      valid_q <= '0;
    end else begin
      valid_q <= valid_d;
    end
  end

  assign res_valid_o = valid_q[Latency-1];

endmodule
