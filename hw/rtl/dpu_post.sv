// Post-processing (requantization) unit: the arithmetic of the POST instruction on one
// ACC entry per cycle (docs/isa.md, POST; compiler/golden.py `_post` and `_Rounding`).
//
// Per lane c, bit for bit as the ISA (any int32 bias, mult's low 23 bits, shift's 6 bits):
//   v = wrap32(acc + bias)
//   m = mult[22:0]                                 unsigned; the ISA ignores the bits above
//   p = v * m                                      55-bit signed, exact (|p| < 2^54)
//   r = p / 2^s, to nearest, ties to even          s = shift; r = p when s = 0
//       (floor shift q = p >>> s, then q + 1 when the remainder exceeds half, or equals
//       half and q is odd)
//   y = min(max(r + zero_point, clamp_lo), clamp_hi)   as np.clip: clamp_hi wins if lo > hi
//
// Timing: fully pipelined, one entry per cycle, no backpressure (the consumer, the OUT
// buffer's write port, takes every entry). bias, mult, shift, zero_point, clamp_lo and
// clamp_hi are sampled in the same cycle as acc_i/valid_i and travel with the entry, so
// they may change from one entry to the next. An entry presented with valid_i in cycle t
// leaves on out_o with valid_o in cycle t + Latency, Latency = 4 (the golden cycle model
// charges count + 4 cycles per POST). Inputs are ignored while valid_i is low; out_o is
// meaningful only while valid_o is high. Reset clears the valid pipeline only.
//
// Stages (each ends in a register):
//   1  v = acc + bias                            (registers also feed the DSP inputs)
//   2  p = v * m                                 (two DSP48 multiplies, see below)
//   3  q = p >>> s, round bit and sticky bit -> increment; q saturated to 10 bits
//   4  y = clamp(q + increment + zero_point)     (11-bit arithmetic)
// Saturating q to [-512, 511] before stage 4 does not change y: beyond those bounds
// r + zero_point lies outside [-128, 127] on the same side either way.
//
// The product in two DSP48 multiplies (25 x 18 signed on DSP48E1): with v = vh * 2^17 + vl,
// vl = v[16:0] unsigned and vh = v[31:17] signed,
//   lo = vl * m                                  18 x 24 bit signed, lo >= 0
//   p  = (vh * m + (lo >>> 17)) * 2^17 + lo[16:0]
// the sum in the second DSP's post-adder (the 17-bit shifted cascade of wide multipliers).

module dpu_post #(
  parameter int unsigned Cols = 16
) (
  input  logic                  clk_i,
  input  logic                  rst_ni,

  input  logic                  valid_i,
  input  logic [Cols-1:0][31:0] acc_i,         // int32 lanes, lane c at [32c +: 32]
  input  logic [Cols-1:0][31:0] bias_i,        // int32 per lane
  input  logic [Cols-1:0][31:0] mult_i,        // per lane; low 23 bits used, unsigned
  input  logic [Cols-1:0][5:0]  shift_i,       // low 6 bits of each lane's shift
  input  logic [7:0]            zero_point_i,  // int8, all lanes
  input  logic [7:0]            clamp_lo_i,    // int8, all lanes
  input  logic [7:0]            clamp_hi_i,    // int8, all lanes

  output logic                  valid_o,
  output logic [Cols-1:0][7:0]  out_o          // int8 lanes, lane c at [8c +: 8]
);

  localparam int unsigned Latency  = 4;
  localparam int unsigned MultBits = 23;  // mult's bits used (docs/isa.md, POST)
  localparam int unsigned PBits    = 32 + MultBits;  // v * m, signed
  localparam int unsigned QBits    = 10;  // saturated quotient: [-512, 511]
  localparam int unsigned SumBits  = 11;  // q + increment + zero_point: [-640, 639]

  // Each stage is computed inside its register's process, under the valid bit of the entry
  // it takes: the same registers and logic as a next-state process with a hold mux, but a
  // cycle-based simulator (Verilator) then evaluates a stage only in the cycles it loads.

  // Stage 2: the exact product, as vh * m * 2^17 + vl * m (see the header).
  function automatic logic [PBits-1:0] product(logic [31:0] v, logic [MultBits-1:0] m);
    logic signed [MultBits+17:0] prod_lo;  // vl * m: 18 x 24 bit
    logic signed [PBits-18:0]    prod_hi;  // vh * m + (prod_lo >>> 17)
    prod_lo = (MultBits + 18)'($signed({1'b0, v[16:0]}) * $signed({1'b0, m}));
    prod_hi = (PBits - 17)'($signed(v[31:17]) * $signed({1'b0, m}))
            + (PBits - 17)'(prod_lo >>> 17);
    product = {prod_hi, prod_lo[16:0]};
  endfunction

  // Stage 3 (see the header): t = 2p shifted right by s in six steps, by 32 first: t[0] ends
  // as the round bit (p's bit s - 1, or 0 when s = 0) and t >>> 1 as the floor quotient q. A
  // step ORs the bits it drops into the sticky bit (all together: p's bits below s - 1).
  // After the step by 2^k the shift left is below 2^k, so bits from QBits + 2^k - 1 up can
  // only end up above q's QBits: they must all be copies of the sign, else q saturates, and
  // are then replaced by copies of bit QBits + 2^k - 1 (so the later steps are narrow).
  // Round up when the remainder is above half (round bit and sticky bit), or exactly half
  // (round bit alone) with an odd quotient. Returns {saturated q, increment}.
  function automatic logic [QBits:0] round_shift(logic [PBits-1:0] p, logic [5:0] s);
    logic signed [PBits:0] t;
    logic [PBits:0]        above;  // bits at and above QBits + 2^k - 1
    logic                  sticky, fits;
    t      = $signed({p, 1'b0});
    sticky = 1'b0;
    fits   = 1'b1;
    for (int k = 5; k >= 0; k--) begin
      if (s[k]) begin
        sticky = sticky | (|(t & ~({(PBits + 1){1'b1}} << (1 << k))));
        t      = t >>> (1 << k);
      end
      above = {(PBits + 1){1'b1}} << (QBits + (1 << k) - 1);
      fits  = fits & (((t ^ {(PBits + 1){t[PBits]}}) & above) == '0);
      t     = (t & ~above) | ({(PBits + 1){t[QBits + (1 << k) - 1]}} & above);
    end
    if (fits) begin
      round_shift = {t[QBits:1], t[0] & (sticky | t[1])};
    end else begin
      round_shift = {p[PBits-1], {(QBits - 1){~p[PBits-1]}}, t[0] & (sticky | t[1])};
    end
  endfunction

  // Stage 4: zero point and clamp, in SumBits-wide signed arithmetic.
  function automatic logic [7:0] clamp(logic [QBits-1:0] quo, logic up, logic [7:0] zp,
                                       logic [7:0] lo8, logic [7:0] hi8);
    logic signed [SumBits-1:0] sum, lo, hi, clamped;
    sum = SumBits'($signed(quo)) + SumBits'($signed(zp)) + SumBits'(up);
    lo  = SumBits'($signed(lo8));
    hi  = SumBits'($signed(hi8));
    clamped = sum < lo ? lo : sum;
    clamped = clamped > hi ? hi : clamped;
    clamp   = clamped[7:0];
  endfunction

  // valid_q[k] qualifies the registers written by stage k + 1.
  logic [Latency-1:0] valid_q;
  // zero point and clamp bounds, travelling with the entry through stages 1 to 3
  logic [Latency-2:0][7:0] zp_q, lo_q, hi_q;

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      valid_q <= '0;
    end else begin
      valid_q <= {valid_q[Latency-2:0], valid_i};
    end
  end

  // Datapath registers load only with a valid entry and have no reset.
  always_ff @(posedge clk_i) begin
    if (valid_i) begin
      zp_q[0] <= zero_point_i;
      lo_q[0] <= clamp_lo_i;
      hi_q[0] <= clamp_hi_i;
    end
    for (int unsigned k = 1; k < Latency - 1; k++) begin
      if (valid_q[k-1]) begin
        zp_q[k] <= zp_q[k-1];
        lo_q[k] <= lo_q[k-1];
        hi_q[k] <= hi_q[k-1];
      end
    end
  end

  for (genvar c = 0; c < Cols; c++) begin : g_lane
    logic [31:0]         v_q;       // stage 1
    logic [MultBits-1:0] mult_q;
    logic [5:0]          shift1_q;
    logic [PBits-1:0]    p_q;       // stage 2
    logic [5:0]          shift2_q;
    logic [QBits-1:0]    quo_q;     // stage 3
    logic                up_q;
    logic [7:0]          out_q;     // stage 4

    logic [31-MultBits:0] unused_mult_high;  // ignored, as the ISA says
    assign unused_mult_high = mult_i[c][31:MultBits];

    always_ff @(posedge clk_i) begin
      // Stage 1: bias, with int32 wrap.
      if (valid_i) begin
        v_q      <= acc_i[c] + bias_i[c];
        mult_q   <= mult_i[c][MultBits-1:0];
        shift1_q <= shift_i[c];
      end
      // Stage 2: the exact product.
      if (valid_q[0]) begin
        p_q      <= product(v_q, mult_q);
        shift2_q <= shift1_q;
      end
      // Stage 3: rounding shift.
      if (valid_q[1]) begin
        {quo_q, up_q} <= round_shift(p_q, shift2_q);
      end
      // Stage 4: zero point and clamp.
      if (valid_q[Latency-2]) begin
        out_q <= clamp(quo_q, up_q, zp_q[Latency-2], lo_q[Latency-2], hi_q[Latency-2]);
      end
    end

    assign out_o[c] = out_q;
  end

  assign valid_o = valid_q[Latency-1];

endmodule
