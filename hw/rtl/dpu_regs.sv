// dpu_regs: the DPU's AXI4-Lite control/status register file.
//
// The map (offsets, fields, reset values) comes from dpu_regs_pkg, generated from
// host/regmap.py; docs/registers.md is its reference.
//
// AXI4-Lite: AW and W are accepted independently (also in the same cycle) into one-entry
// buffers; the write takes effect once both are held and no B response is pending, then B
// is held until s_axil_bready. A read is answered the cycle after AR is accepted and held
// until s_axil_rready; AR is not accepted while R is pending. Byte strobes apply to writes.
// Unmapped offsets answer SLVERR (reads return 0, writes are dropped); writes to RO
// registers answer OKAY and are ignored. Address bits [1:0] are ignored.
//
// 64-bit counters: reading <NAME>_LO returns counters_i[i][31:0] and latches
// counters_i[i][63:32] into a per-counter register in the same cycle; reading <NAME>_HI
// returns that latch. So LO-then-HI is one consistent snapshot of a running counter.
//
// Core side: start_o and soft_reset_o are one-cycle pulses, registered, the cycle after
// the write of CTRL takes effect. STATUS.done is set by done_i (a pulse at the end of a
// program, also when it stops on an error) and cleared by the start and soft-reset
// pulses; IRQ_STATUS.done is set by done_i and cleared by writing 1 (a done_i in the same
// cycle wins). irq_o = CTRL.irq_enable & IRQ_STATUS.done.
module dpu_regs
  import dpu_regs_pkg::*;
#(
  parameter int unsigned AddrWidth = RegAddrBits,
  parameter logic [63:0] ConfigFingerprint = 64'h0
) (
  input  logic                 clk_i,
  input  logic                 rst_ni,

  // AXI4-Lite slave
  input  logic [AddrWidth-1:0] s_axil_awaddr,
  input  logic                 s_axil_awvalid,
  output logic                 s_axil_awready,
  input  logic [31:0]          s_axil_wdata,
  input  logic [3:0]           s_axil_wstrb,
  input  logic                 s_axil_wvalid,
  output logic                 s_axil_wready,
  output logic [1:0]           s_axil_bresp,
  output logic                 s_axil_bvalid,
  input  logic                 s_axil_bready,
  input  logic [AddrWidth-1:0] s_axil_araddr,
  input  logic                 s_axil_arvalid,
  output logic                 s_axil_arready,
  output logic [31:0]          s_axil_rdata,
  output logic [1:0]           s_axil_rresp,
  output logic                 s_axil_rvalid,
  input  logic                 s_axil_rready,

  // to the core
  output logic                 start_o,
  output logic                 soft_reset_o,
  output logic [63:0]          instr_base_o,
  output logic [31:0]          instr_count_o,
  output logic [63:0]          data_base_o,
  output logic [31:0]          data_limit_o,
  output logic                 irq_o,

  // from the core
  input  logic                 busy_i,
  input  logic                 done_i,
  input  logic                 error_i,
  input  logic [ErrorCodeCodeBits-1:0] error_code_i,
  input  logic [NumCounters-1:0][63:0] counters_i
);

  localparam logic [1:0] RespOkay = 2'b00;
  localparam logic [1:0] RespSlvErr = 2'b10;

  if (AddrWidth < RegAddrBits || AddrWidth > 32) begin : g_bad_addr_width
    $error("dpu_regs: AddrWidth must lie in [RegAddrBits, 32]");
  end

  // -- state ------------------------------------------------------------------------------
  logic                 aw_full_d, aw_full_q;
  logic [AddrWidth-1:2] aw_addr_d, aw_addr_q;
  logic                 w_full_d, w_full_q;
  logic [31:0]          w_data_d, w_data_q;
  logic [3:0]           w_strb_d, w_strb_q;
  logic                 b_valid_d, b_valid_q;
  logic [1:0]           b_resp_d, b_resp_q;
  logic                 r_valid_d, r_valid_q;
  logic [31:0]          r_data_d, r_data_q;
  logic [1:0]           r_resp_d, r_resp_q;

  logic        start_d, start_q;
  logic        soft_reset_d, soft_reset_q;
  logic        irq_enable_d, irq_enable_q;
  logic        irq_done_d, irq_done_q;
  logic        status_done_d, status_done_q;
  logic [31:0] instr_base_lo_d, instr_base_lo_q;
  logic [31:0] instr_base_hi_d, instr_base_hi_q;
  logic [31:0] instr_count_d, instr_count_q;
  logic [31:0] data_base_lo_d, data_base_lo_q;
  logic [31:0] data_base_hi_d, data_base_hi_q;
  logic [31:0] data_limit_d, data_limit_q;
  logic [NumCounters-1:0][31:0] cnt_hi_d, cnt_hi_q;

  // -- write channel ----------------------------------------------------------------------
  logic        do_write;
  logic [31:0] wr_off;
  logic [31:0] wmask;
  logic [31:0] wr_ones;  // data bits written as 1 (strobed)
  logic        wr_hit;

  assign s_axil_awready = ~aw_full_q;
  assign s_axil_wready  = ~w_full_q;
  assign s_axil_bvalid  = b_valid_q;
  assign s_axil_bresp   = b_resp_q;
  assign do_write = aw_full_q & w_full_q & ~b_valid_q;
  assign wr_off   = 32'({aw_addr_q, 2'b00});
  assign wmask    = {{8{w_strb_q[3]}}, {8{w_strb_q[2]}}, {8{w_strb_q[1]}}, {8{w_strb_q[0]}}};
  assign wr_ones  = w_data_q & wmask;

  // old value with the strobed bytes of the write data
  function automatic logic [31:0] merge(logic [31:0] old, logic [31:0] data, logic [31:0] mask);
    return (old & ~mask) | (data & mask);
  endfunction

  always_comb begin
    aw_full_d = aw_full_q;
    aw_addr_d = aw_addr_q;
    w_full_d  = w_full_q;
    w_data_d  = w_data_q;
    w_strb_d  = w_strb_q;
    b_valid_d = b_valid_q;
    b_resp_d  = b_resp_q;
    if (s_axil_awvalid && s_axil_awready) begin
      aw_full_d = 1'b1;
      aw_addr_d = s_axil_awaddr[AddrWidth-1:2];
    end
    if (s_axil_wvalid && s_axil_wready) begin
      w_full_d = 1'b1;
      w_data_d = s_axil_wdata;
      w_strb_d = s_axil_wstrb;
    end
    if (b_valid_q && s_axil_bready) begin
      b_valid_d = 1'b0;
    end
    if (do_write) begin
      aw_full_d = 1'b0;
      w_full_d  = 1'b0;
      b_valid_d = 1'b1;
      b_resp_d  = wr_hit ? RespOkay : RespSlvErr;
    end
  end

  // register writes, pulses and core events
  always_comb begin
    wr_hit          = 1'b1;
    start_d         = 1'b0;
    soft_reset_d    = 1'b0;
    irq_enable_d    = irq_enable_q;
    irq_done_d      = irq_done_q;
    status_done_d   = status_done_q;
    instr_base_lo_d = instr_base_lo_q;
    instr_base_hi_d = instr_base_hi_q;
    instr_count_d   = instr_count_q;
    data_base_lo_d  = data_base_lo_q;
    data_base_hi_d  = data_base_hi_q;
    data_limit_d    = data_limit_q;
    unique case (wr_off)
      CtrlOffset: begin
        start_d      = do_write & wr_ones[CtrlStartLsb];
        soft_reset_d = do_write & wr_ones[CtrlSoftResetLsb];
        if (do_write && wmask[CtrlIrqEnableLsb]) irq_enable_d = w_data_q[CtrlIrqEnableLsb];
      end
      IrqStatusOffset: begin
        if (do_write && wr_ones[IrqStatusDoneLsb]) irq_done_d = 1'b0;
      end
      InstrBaseLoOffset: if (do_write) instr_base_lo_d = merge(instr_base_lo_q, w_data_q, wmask);
      InstrBaseHiOffset: if (do_write) instr_base_hi_d = merge(instr_base_hi_q, w_data_q, wmask);
      InstrCountOffset:  if (do_write) instr_count_d = merge(instr_count_q, w_data_q, wmask);
      DataBaseLoOffset:  if (do_write) data_base_lo_d = merge(data_base_lo_q, w_data_q, wmask);
      DataBaseHiOffset:  if (do_write) data_base_hi_d = merge(data_base_hi_q, w_data_q, wmask);
      DataLimitOffset:   if (do_write) data_limit_d = merge(data_limit_q, w_data_q, wmask);
      StatusOffset, ErrorCodeOffset, ConfigFingerprintLoOffset, ConfigFingerprintHiOffset: ;
      default: begin
        wr_hit = (wr_off >= CounterBaseOffset) && (wr_off < CounterBaseOffset + 8 * NumCounters);
      end
    endcase
    if (start_q || soft_reset_q) status_done_d = 1'b0;
    if (done_i) begin
      status_done_d = 1'b1;
      irq_done_d    = 1'b1;
    end
  end

  // -- read channel -----------------------------------------------------------------------
  logic                   ar_fire;
  logic [31:0]            rd_off;
  logic [31:0]            rd_data;
  logic                   rd_hit;
  logic [NumCounters-1:0] rd_cnt_lo;

  assign s_axil_arready = ~r_valid_q;
  assign s_axil_rvalid  = r_valid_q;
  assign s_axil_rdata   = r_data_q;
  assign s_axil_rresp   = r_resp_q;
  assign ar_fire = s_axil_arvalid & s_axil_arready;
  assign rd_off  = 32'({s_axil_araddr[AddrWidth-1:2], 2'b00});

  always_comb begin
    rd_hit    = 1'b1;
    rd_data   = '0;
    rd_cnt_lo = '0;
    unique case (rd_off)
      CtrlOffset: rd_data[CtrlIrqEnableLsb] = irq_enable_q;
      StatusOffset: begin
        rd_data[StatusBusyLsb]  = busy_i;
        rd_data[StatusDoneLsb]  = status_done_q;
        rd_data[StatusErrorLsb] = error_i;
      end
      ErrorCodeOffset: rd_data[ErrorCodeCodeLsb +: ErrorCodeCodeBits] = error_code_i;
      IrqStatusOffset: rd_data[IrqStatusDoneLsb] = irq_done_q;
      InstrBaseLoOffset: rd_data = instr_base_lo_q;
      InstrBaseHiOffset: rd_data = instr_base_hi_q;
      InstrCountOffset: rd_data = instr_count_q;
      DataBaseLoOffset: rd_data = data_base_lo_q;
      DataBaseHiOffset: rd_data = data_base_hi_q;
      DataLimitOffset: rd_data = data_limit_q;
      ConfigFingerprintLoOffset: rd_data = ConfigFingerprint[31:0];
      ConfigFingerprintHiOffset: rd_data = ConfigFingerprint[63:32];
      default: begin
        rd_hit = 1'b0;
        for (int unsigned i = 0; i < NumCounters; i++) begin
          if (rd_off == CounterBaseOffset + 8 * i) begin
            rd_hit       = 1'b1;
            rd_data      = counters_i[i][31:0];
            rd_cnt_lo[i] = 1'b1;
          end
          if (rd_off == CounterBaseOffset + 8 * i + 4) begin
            rd_hit  = 1'b1;
            rd_data = cnt_hi_q[i];
          end
        end
      end
    endcase
  end

  always_comb begin
    r_valid_d = r_valid_q;
    r_data_d  = r_data_q;
    r_resp_d  = r_resp_q;
    cnt_hi_d  = cnt_hi_q;
    if (r_valid_q && s_axil_rready) begin
      r_valid_d = 1'b0;
    end
    if (ar_fire) begin
      r_valid_d = 1'b1;
      r_data_d  = rd_data;
      r_resp_d  = rd_hit ? RespOkay : RespSlvErr;
      for (int unsigned i = 0; i < NumCounters; i++) begin
        if (rd_cnt_lo[i]) cnt_hi_d[i] = counters_i[i][63:32];
      end
    end
  end

  // -- flops ------------------------------------------------------------------------------
  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      aw_full_q       <= 1'b0;
      aw_addr_q       <= '0;
      w_full_q        <= 1'b0;
      w_data_q        <= '0;
      w_strb_q        <= '0;
      b_valid_q       <= 1'b0;
      b_resp_q        <= RespOkay;
      r_valid_q       <= 1'b0;
      r_data_q        <= '0;
      r_resp_q        <= RespOkay;
      start_q         <= 1'b0;
      soft_reset_q    <= 1'b0;
      irq_enable_q    <= CtrlReset[CtrlIrqEnableLsb];
      irq_done_q      <= IrqStatusReset[IrqStatusDoneLsb];
      status_done_q   <= StatusReset[StatusDoneLsb];
      instr_base_lo_q <= InstrBaseLoReset;
      instr_base_hi_q <= InstrBaseHiReset;
      instr_count_q   <= InstrCountReset;
      data_base_lo_q  <= DataBaseLoReset;
      data_base_hi_q  <= DataBaseHiReset;
      data_limit_q    <= DataLimitReset;
      cnt_hi_q        <= '0;
    end else begin
      aw_full_q       <= aw_full_d;
      aw_addr_q       <= aw_addr_d;
      w_full_q        <= w_full_d;
      w_data_q        <= w_data_d;
      w_strb_q        <= w_strb_d;
      b_valid_q       <= b_valid_d;
      b_resp_q        <= b_resp_d;
      r_valid_q       <= r_valid_d;
      r_data_q        <= r_data_d;
      r_resp_q        <= r_resp_d;
      start_q         <= start_d;
      soft_reset_q    <= soft_reset_d;
      irq_enable_q    <= irq_enable_d;
      irq_done_q      <= irq_done_d;
      status_done_q   <= status_done_d;
      instr_base_lo_q <= instr_base_lo_d;
      instr_base_hi_q <= instr_base_hi_d;
      instr_count_q   <= instr_count_d;
      data_base_lo_q  <= data_base_lo_d;
      data_base_hi_q  <= data_base_hi_d;
      data_limit_q    <= data_limit_d;
      cnt_hi_q        <= cnt_hi_d;
    end
  end

  // -- outputs ----------------------------------------------------------------------------
  assign start_o       = start_q;
  assign soft_reset_o  = soft_reset_q;
  assign instr_base_o  = {instr_base_hi_q, instr_base_lo_q};
  assign instr_count_o = instr_count_q;
  assign data_base_o   = {data_base_hi_q, data_base_lo_q};
  assign data_limit_o  = data_limit_q;
  assign irq_o         = irq_enable_q & irq_done_q;

  logic unused_addr_lsbs;
  assign unused_addr_lsbs = ^{s_axil_awaddr[1:0], s_axil_araddr[1:0]};

endmodule : dpu_regs
