// Weight-stationary systolic array of Rows x Cols dpu_pe: the GEMM datapath of the DPU.
//
// Row r of the grid multiplies input lane r; column c accumulates output lane c. For an
// activation vector a (Rows int8 lanes) and the held weight tile W (W[r][c]: the weight
// from input lane r to output lane c) the result is p[c] = sum_r a[r]*W[r][c], the
// products exact and the sum wrapped to int32 (docs/isa.md, GEMM).
//
// Weight port. One row of Cols int8 weights per cycle while wgt_valid_i is set, lane c
// of wgt_i = W[r][c]. Rows are taken in order r = 0, 1, ..., Rows - 1, then 0 again: an
// internal counter (cleared by reset) picks the grid row the beat is written to, so a
// tile preload is Rows valid beats. A row is written to all its PEs at once.
//
// Activation port. One vector of Rows int8 lanes per cycle while act_valid_i is set. The
// array skews it internally (lane r delayed r cycles); cycles with act_valid_i low are
// bubbles and may fall anywhere.
//
// Result port. One vector of Cols int32 lanes, de-skewed so that all lanes of one
// result come out in the same cycle, with res_valid_o. Results leave in input order.
//
// Latency: Latency = Rows + Cols - 1 cycles (localparam below). A vector on the
// activation port in cycle n (sampled at the clock edge that ends cycle n) has its result
// on the result port in cycle n + Rows + Cols - 1: the Rows + Cols - 2 cycles of the
// systolic wavefront plus one register stage (the PE's output register; res_o comes
// straight from the registers of the last grid row and the de-skew pipelines).
// Throughput is one vector per cycle.
//
// Cycle model (compiler/timing.py: 2*Rows + Cols - 2 + T cycles for T vectors). With
// the model's schedule, first weight row in cycle t0, the T vectors in cycles
// t0 + Rows ... t0 + Rows + T - 1, the last result is on the port in cycle
// t0 + 2*Rows + Cols - 2 + T: exactly the model's cost after the start, so a consumer
// registers it in the first cycle after the GEMM's modelled window.
//
// Weight-stationary contract. There is one weight register per PE (no shadow copy).
// PE (r, c) meets activation vector k (presented in cycle k) in cycle k + r + c, and a
// weight row presented in cycle w is used from cycle w + 1. Hence, with the weight row
// of grid row r presented in cycle w_r:
//   - the first vector k of a tile must satisfy k >= w_r - r + 1 for every r;
//   - the rows of the next tile must satisfy w_r >= k_last + r + Cols - 1, where k_last
//     is the cycle of the last vector of the current tile.
// For a preload in consecutive cycles t0 ... t0 + Rows - 1 this means: stream from
// cycle t0 + 1 on, and start the next preload no earlier than Cols - 1 cycles after the
// last vector. The model's schedule (stream after the preload, drain before the next)
// satisfies both with room to spare; a controller may overlap the preload with the
// stream this way.

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

  /////////////////////
  // Activation skew //
  /////////////////////

  // Bubbles enter the grid as zero vectors.
  logic [Rows-1:0][7:0] act_in;
  assign act_in = act_valid_i ? act_i : '0;

  // act_h[r][c]: activation into PE (r, c); act_h[r][Cols] leaves the last column unused.
  logic [Rows-1:0][Cols:0][7:0] act_h;

  for (genvar r = 0; r < Rows; r++) begin : g_skew
    if (r == 0) begin : g_direct
      assign act_h[r][0] = act_in[r];
    end else begin : g_delay
      // Stage i in bits [8*i +: 8]; flat, as Yosys cannot index 2-D vectors declared here.
      logic [8*r-1:0] skew_d, skew_q;

      always_comb begin
        skew_d = skew_q << 8;
        skew_d[7:0] = act_in[r];
      end

      always_ff @(posedge clk_i or negedge rst_ni) begin
        if (!rst_ni) begin
          skew_q <= '0;
        end else begin
          skew_q <= skew_d;
        end
      end

      assign act_h[r][0] = skew_q[8*r-1 -: 8];
    end
  end

  //////////
  // Grid //
  //////////

  // psum_v[r][c]: partial sum into PE (r, c) from above; psum_v[Rows][c] leaves column c.
  logic [Rows:0][Cols-1:0][31:0] psum_v;

  for (genvar c = 0; c < Cols; c++) begin : g_top
    assign psum_v[0][c] = 32'h0000_0000;
  end

  for (genvar r = 0; r < Rows; r++) begin : g_row
    for (genvar c = 0; c < Cols; c++) begin : g_col
      dpu_pe u_pe (
        .clk_i    (clk_i),
        .rst_ni   (rst_ni),
        .wgt_we_i (wgt_we[r]),
        .wgt_i    (wgt_i[c]),
        .act_i    (act_h[r][c]),
        .act_o    (act_h[r][c+1]),
        .psum_i   (psum_v[r][c]),
        .psum_o   (psum_v[r+1][c])
      );
    end
  end

  logic [Rows-1:0][7:0] unused_act_east;
  for (genvar r = 0; r < Rows; r++) begin : g_east
    assign unused_act_east[r] = act_h[r][Cols];
  end

  ///////////////
  // De-skew   //
  ///////////////

  // Column c finishes Cols - 1 - c cycles before the last column: delay it that much.
  for (genvar c = 0; c < Cols; c++) begin : g_deskew
    if (c == Cols - 1) begin : g_direct
      assign res_o[c] = psum_v[Rows][c];
    end else begin : g_delay
      localparam int unsigned Depth = Cols - 1 - c;
      logic [32*Depth-1:0] deskew_d, deskew_q;  // stage i in bits [32*i +: 32]

      always_comb begin
        deskew_d = deskew_q << 32;
        deskew_d[31:0] = psum_v[Rows][c];
      end

      always_ff @(posedge clk_i or negedge rst_ni) begin
        if (!rst_ni) begin
          deskew_q <= '0;
        end else begin
          deskew_q <= deskew_d;
        end
      end

      assign res_o[c] = deskew_q[32*Depth-1 -: 32];
    end
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
