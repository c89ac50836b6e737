// Simple dual-port RAM: one write port and one read port on one clock, Depth entries of
// WidthBits bits, written in the template that Yosys (memory_libmap) and Vivado infer as
// block RAM (RAMB36/RAMB18 in simple dual-port mode): no reset and no initial value on the
// memory, a synchronous read into an output register with a read enable.
//
// Write: with we_i at a rising edge, entry waddr_i takes wdata_i.
// Read:  with re_i at a rising edge, rdata_o shows entry raddr_i from then on (latency 1);
//        without re_i, rdata_o holds its last value.
// Read during write of the same address at the same edge is read-first: rdata_o shows the
// entry's old value; the new one is read from the next edge on. (BRAM READ_FIRST; the
// memory and the read register are written in separate always_ff blocks for this.)
// Addresses >= Depth (Depth not a power of two) are not allowed; rdata_o is undefined until
// the first read of a written entry.

module dpu_sram #(
  parameter  int unsigned Depth     = 1024,
  parameter  int unsigned WidthBits = 128,
  localparam int unsigned AddrBits  = Depth > 1 ? $clog2(Depth) : 1
) (
  input  logic                 clk_i,

  input  logic                 we_i,
  input  logic [AddrBits-1:0]  waddr_i,
  input  logic [WidthBits-1:0] wdata_i,

  input  logic                 re_i,
  input  logic [AddrBits-1:0]  raddr_i,
  output logic [WidthBits-1:0] rdata_o
);

  logic [WidthBits-1:0] mem_q [Depth];
  logic [WidthBits-1:0] rdata_q;

  always_ff @(posedge clk_i) begin
    if (we_i) begin
      mem_q[waddr_i] <= wdata_i;
    end
  end

  always_ff @(posedge clk_i) begin
    if (re_i) begin
      rdata_q <= mem_q[raddr_i];
    end
  end

  assign rdata_o = rdata_q;

endmodule
