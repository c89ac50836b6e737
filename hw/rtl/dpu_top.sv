// dpu_top: the DPU core. An AXI4-Lite slave for control and status (dpu_regs, the map in
// docs/registers.md), an AXI4 master for data and a read-only AXI4 master for instructions
// (as Xilinx's DPU has: on Zynq they go to different PS ports, so instruction fetch never
// takes read bandwidth from LOAD, as the cycle model assumes).
//
//   s_axil --> dpu_regs --start--> dpu_fetch --> dpu_dispatch --> load  (dpu_load_dma)
//                                      |                      --> compute (dpu_compute)
//                                      |                      --> store (dpu_store_dma)
//   m_axi_instr <-- AR/R: fetch          m_axi <-- AR/R: load; AW/W/B: store
//
// Buffers (dpu_sram, simple dual-port block RAM): INP, WGT, PAR written by LOAD and read
// by compute; ACC written by LOAD or compute and read by compute through two ports (two
// copies of the memory, written together); OUT written by compute and read by STORE.
// LOAD and compute never touch the same ACC entries at the same time in a valid program
// (the token protocol), but they may write ACC in the same cycle: compute wins and the
// LOAD engine waits a cycle (wr_ready_i).
//
// Run: CTRL.start (ignored while busy) resets the engines, queues and counters, then
// fetches INSTR_COUNT instructions from INSTR_BASE. STATUS.busy is high until the END
// instruction has retired with every engine idle (and no instruction read is outstanding:
// fetch may have read ahead), or until the core has stopped on an error; then STATUS.done
// and IRQ_STATUS.done are set (irq_o if enabled). Words after END are not executed.
//
// Memory protection: every DRAM data access is checked by the DMA engines against the
// data window [DATA_BASE, DATA_BASE + DATA_LIMIT) before any request is issued; fetch reads
// only [INSTR_BASE, INSTR_BASE + 32*INSTR_COUNT).
//
// Errors (ERROR_CODE, host/regmap.py ErrorCode): the first error sets the code; from then on
// no instruction is fetched or dispatched, the engine that failed stops, the LOAD and STORE
// engines finish the instruction they hold (the core does not wait for compute, which may
// hold several: it has no bus transaction to finish), outstanding AXI transactions
// complete, and then the core reports done with STATUS.error. A LOAD finishing after the
// error reads its bytes but writes no buffer entry (each is taken and dropped, so it never
// waits for a write port). No reset is needed after it: CTRL.start resets the engines and
// queues for the next program. A program that cannot progress (a token that is never
// pushed, no END) is detected and reported as DEADLOCK. A DRAM that never answers still
// hangs the AXI transaction in flight: CTRL.soft_reset (or the PL reset) recovers.
//
// Parameters: the hardware config (hw/configs/*.toml), passed by dpukit.hw.params.

module dpu_top
  import dpu_isa_pkg::*;
  import dpu_regs_pkg::*;
#(
  parameter int unsigned Rows          = 4,
  parameter int unsigned Cols          = 4,
  parameter int unsigned InpEntries    = 1024,
  parameter int unsigned WgtEntries    = 64,
  parameter int unsigned AccEntries    = 256,
  parameter int unsigned OutEntries    = 128,
  parameter int unsigned ParEntries    = 16,
  parameter int unsigned QueueDepth    = 16,
  parameter int unsigned ComputeInFlight = 16,  // compiler/timing.py COMPUTE_IN_FLIGHT
  parameter int unsigned AxiDataBits   = 64,
  parameter int unsigned AxiAddrBits   = 32,
  parameter int unsigned MaxBurstBeats = 16,
  parameter int unsigned AxiIdBits     = 1,
  parameter logic [63:0] ConfigFingerprint = 64'h0
) (
  input  logic                       clk_i,
  input  logic                       rst_ni,

  // control and status
  input  logic [RegAddrBits-1:0]     s_axil_awaddr,
  input  logic                       s_axil_awvalid,
  output logic                       s_axil_awready,
  input  logic [31:0]                s_axil_wdata,
  input  logic [3:0]                 s_axil_wstrb,
  input  logic                       s_axil_wvalid,
  output logic                       s_axil_wready,
  output logic [1:0]                 s_axil_bresp,
  output logic                       s_axil_bvalid,
  input  logic                       s_axil_bready,
  input  logic [RegAddrBits-1:0]     s_axil_araddr,
  input  logic                       s_axil_arvalid,
  output logic                       s_axil_arready,
  output logic [31:0]                s_axil_rdata,
  output logic [1:0]                 s_axil_rresp,
  output logic                       s_axil_rvalid,
  input  logic                       s_axil_rready,

  // DRAM
  output logic [AxiIdBits-1:0]       m_axi_awid,
  output logic [AxiAddrBits-1:0]     m_axi_awaddr,
  output logic [7:0]                 m_axi_awlen,
  output logic [2:0]                 m_axi_awsize,
  output logic [1:0]                 m_axi_awburst,
  output logic                       m_axi_awlock,
  output logic [3:0]                 m_axi_awcache,
  output logic [2:0]                 m_axi_awprot,
  output logic                       m_axi_awvalid,
  input  logic                       m_axi_awready,
  output logic [AxiDataBits-1:0]     m_axi_wdata,
  output logic [AxiDataBits/8-1:0]   m_axi_wstrb,
  output logic                       m_axi_wlast,
  output logic                       m_axi_wvalid,
  input  logic                       m_axi_wready,
  input  logic [AxiIdBits-1:0]       m_axi_bid,
  input  logic [1:0]                 m_axi_bresp,
  input  logic                       m_axi_bvalid,
  output logic                       m_axi_bready,
  output logic [AxiIdBits-1:0]       m_axi_arid,
  output logic [AxiAddrBits-1:0]     m_axi_araddr,
  output logic [7:0]                 m_axi_arlen,
  output logic [2:0]                 m_axi_arsize,
  output logic [1:0]                 m_axi_arburst,
  output logic                       m_axi_arlock,
  output logic [3:0]                 m_axi_arcache,
  output logic [2:0]                 m_axi_arprot,
  output logic                       m_axi_arvalid,
  input  logic                       m_axi_arready,
  input  logic [AxiIdBits-1:0]       m_axi_rid,
  input  logic [AxiDataBits-1:0]     m_axi_rdata,
  input  logic [1:0]                 m_axi_rresp,
  input  logic                       m_axi_rlast,
  input  logic                       m_axi_rvalid,
  output logic                       m_axi_rready,

  // instructions (read only)
  output logic [AxiIdBits-1:0]       m_axi_instr_arid,
  output logic [AxiAddrBits-1:0]     m_axi_instr_araddr,
  output logic [7:0]                 m_axi_instr_arlen,
  output logic [2:0]                 m_axi_instr_arsize,
  output logic [1:0]                 m_axi_instr_arburst,
  output logic                       m_axi_instr_arlock,
  output logic [3:0]                 m_axi_instr_arcache,
  output logic [2:0]                 m_axi_instr_arprot,
  output logic                       m_axi_instr_arvalid,
  input  logic                       m_axi_instr_arready,
  input  logic [AxiIdBits-1:0]       m_axi_instr_rid,
  input  logic [AxiDataBits-1:0]     m_axi_instr_rdata,
  input  logic [1:0]                 m_axi_instr_rresp,
  input  logic                       m_axi_instr_rlast,
  input  logic                       m_axi_instr_rvalid,
  output logic                       m_axi_instr_rready,

  output logic                       irq_o
);

  // Entry widths (docs/isa.md; compiler/hwconfig.py): bytes per buffer entry.
  localparam int unsigned InpBytes  = Rows;
  localparam int unsigned WgtBytes  = Rows * Cols;
  localparam int unsigned AccLanes  = Cols;         // LOAD into ACC: one byte per int32 lane
  localparam int unsigned OutBytes  = Cols;
  localparam int unsigned ParBytes  = Cols * 12;
  localparam int unsigned LoadBytes = (WgtBytes > ParBytes) ? WgtBytes : ParBytes;

  localparam int unsigned InpAddrBits = $clog2(InpEntries);
  localparam int unsigned WgtAddrBits = $clog2(WgtEntries);
  localparam int unsigned AccAddrBits = $clog2(AccEntries);
  localparam int unsigned OutAddrBits = $clog2(OutEntries);
  localparam int unsigned ParAddrBits = $clog2(ParEntries);

  // DMA error encodings (dpu_load_dma, dpu_store_dma)
  localparam logic [1:0] DmaErrRange     = 2'd1;
  localparam logic [1:0] DmaErrAxi       = 2'd2;
  // dispatch error encodings (dpu_dispatch)
  localparam logic [1:0] DispErrOpcode   = 2'd1;
  localparam logic [1:0] DispErrFlags    = 2'd2;
  // compute error encodings (dpu_compute)
  localparam logic [1:0] CompErrBuffer   = 2'd1;
  localparam logic [1:0] CompErrAluOp    = 2'd2;

  localparam int unsigned DeadlockCycles = 4;

  // =========================================================================================
  // Control and status
  // =========================================================================================
  logic        start, soft_reset;
  logic [63:0] instr_base, data_base;
  logic [31:0] instr_count, data_limit;
  logic        running_q, running_d;
  logic        halt_q, halt_d;                 // an error happened: wind down
  logic        ending_q, ending_d;             // END retired: wait for fetch to go quiet
  logic [ErrorCodeCodeBits-1:0] err_code_q, err_code_d;
  logic        finish;                        // done pulse to the register file
  logic        clear_q;                       // core reset for one cycle after start
  logic        launch_q;                      // fetch starts the cycle after the clear
  logic [NumCounters-1:0][63:0] counters_q, counters_d;
  logic [NumCounters-1:0]       count_inc;    // +1 this cycle
  logic                         core_rst_n;

  dpu_regs #(
    .AddrWidth         (RegAddrBits),
    .ConfigFingerprint (ConfigFingerprint)
  ) u_regs (
    .clk_i          (clk_i),
    .rst_ni         (rst_ni),
    .s_axil_awaddr  (s_axil_awaddr),
    .s_axil_awvalid (s_axil_awvalid),
    .s_axil_awready (s_axil_awready),
    .s_axil_wdata   (s_axil_wdata),
    .s_axil_wstrb   (s_axil_wstrb),
    .s_axil_wvalid  (s_axil_wvalid),
    .s_axil_wready  (s_axil_wready),
    .s_axil_bresp   (s_axil_bresp),
    .s_axil_bvalid  (s_axil_bvalid),
    .s_axil_bready  (s_axil_bready),
    .s_axil_araddr  (s_axil_araddr),
    .s_axil_arvalid (s_axil_arvalid),
    .s_axil_arready (s_axil_arready),
    .s_axil_rdata   (s_axil_rdata),
    .s_axil_rresp   (s_axil_rresp),
    .s_axil_rvalid  (s_axil_rvalid),
    .s_axil_rready  (s_axil_rready),
    .start_o        (start),
    .soft_reset_o   (soft_reset),
    .instr_base_o   (instr_base),
    .instr_count_o  (instr_count),
    .data_base_o    (data_base),
    .data_limit_o   (data_limit),
    .irq_o          (irq_o),
    .busy_i         (running_q),
    .done_i         (finish),
    .error_i        (err_code_q != ErrNone),
    .error_code_i   (err_code_q),
    .counters_i     (counters_q)
  );

  // The engines, queues and buffers' control start from reset for every program.
  assign core_rst_n = rst_ni && !soft_reset && !clear_q;

  // =========================================================================================
  // Engines
  // =========================================================================================
  // fetch -> dispatch
  logic                 fetch_valid, fetch_ready, fetch_idle, fetch_exhausted;
  logic                 fetch_error, fetch_align_error;
  logic [InstrBits-1:0] fetch_instr;
  // dispatch -> engines
  logic                 disp_load_valid, disp_compute_valid, disp_store_valid;
  logic [InstrBits-1:0] load_instr, compute_instr, store_instr;
  logic                 load_ready, compute_ready, store_ready;
  logic                 load_done, compute_done, store_done;
  logic [2:0]           disp_busy, disp_blocked;
  logic                 disp_done, disp_error;
  logic [1:0]           disp_error_code;
  logic                 load_valid, compute_valid, store_valid;
  logic [1:0]           load_error, store_error;
  logic                 compute_error;
  logic [1:0]           compute_error_code;
  logic                 load_elem_error;      // LOAD rejected at handoff (elem_bytes)
  logic                 error_now;            // an error is pending or happens this cycle


  dpu_fetch #(
    .AxiDataBits   (AxiDataBits),
    .AxiAddrBits   (AxiAddrBits),
    .AxiIdBits     (AxiIdBits),
    .MaxBurstBeats (MaxBurstBeats)
  ) u_fetch (
    .clk_i         (clk_i),
    .rst_ni        (core_rst_n),
    .start_i       (launch_q),
    .base_i        (instr_base[AxiAddrBits-1:0]),
    .count_i       (instr_count),
    .halt_i        (halt_q || ending_q),
    .instr_valid_o (fetch_valid),
    .instr_ready_i (fetch_ready),
    .instr_o       (fetch_instr),
    .idle_o        (fetch_idle),
    .exhausted_o   (fetch_exhausted),
    .error_o       (fetch_error),
    .align_error_o (fetch_align_error),
    .m_axi_arid    (m_axi_instr_arid),
    .m_axi_araddr  (m_axi_instr_araddr),
    .m_axi_arlen   (m_axi_instr_arlen),
    .m_axi_arsize  (m_axi_instr_arsize),
    .m_axi_arburst (m_axi_instr_arburst),
    .m_axi_arlock  (m_axi_instr_arlock),
    .m_axi_arcache (m_axi_instr_arcache),
    .m_axi_arprot  (m_axi_instr_arprot),
    .m_axi_arvalid (m_axi_instr_arvalid),
    .m_axi_arready (m_axi_instr_arready),
    .m_axi_rid     (m_axi_instr_rid),
    .m_axi_rdata   (m_axi_instr_rdata),
    .m_axi_rresp   (m_axi_instr_rresp),
    .m_axi_rlast   (m_axi_instr_rlast),
    .m_axi_rvalid  (m_axi_instr_rvalid),
    .m_axi_rready  (m_axi_instr_rready)
  );

  logic disp_in_valid, disp_in_ready;
  // Nothing enters the dispatcher after an error or once END has retired (the stream may
  // hold more words after END: they are not a program).
  logic stop_fetch;
  assign stop_fetch    = halt_q || ending_q || disp_done;
  assign disp_in_valid = fetch_valid && !stop_fetch;
  assign fetch_ready   = disp_in_ready && !stop_fetch;

  dpu_dispatch #(
    .QueueDepth      (QueueDepth),
    .ComputeInFlight (ComputeInFlight)
  ) u_dispatch (
    .clk_i              (clk_i),
    .rst_ni             (core_rst_n),
    .instr_valid_i      (disp_in_valid),
    .instr_ready_o      (disp_in_ready),
    .instr_i            (fetch_instr),
    .load_valid_o       (disp_load_valid),
    .load_ready_i       (load_ready && !load_elem_error && !halt_q && !error_now),
    .load_instr_o       (load_instr),
    .load_complete_i    (load_done),
    .compute_valid_o    (disp_compute_valid),
    .compute_ready_i    (compute_ready && !halt_q && !error_now),
    .compute_instr_o    (compute_instr),
    .compute_complete_i (compute_done),
    .store_valid_o      (disp_store_valid),
    .store_ready_i      (store_ready && !halt_q && !error_now),
    .store_instr_o      (store_instr),
    .store_complete_i   (store_done),
    .busy_o             (disp_busy),
    .blocked_o          (disp_blocked),
    .done_o             (disp_done),
    .error_o            (disp_error),
    .error_code_o       (disp_error_code)
  );

  // Nothing new starts once an error is pending (this cycle's error included): valid to the
  // engine and ready to the dispatcher are both masked, so neither side sees a handshake.
  assign load_valid    = disp_load_valid && !halt_q && !error_now;
  assign compute_valid = disp_compute_valid && !halt_q && !error_now;
  assign store_valid   = disp_store_valid && !halt_q && !error_now;

  // -- LOAD: entry width per destination buffer --------------------------------------------
  buffer_e           load_buf_q, load_buf_d;      // destination of the LOAD in flight
  buffer_e           handoff_buf;
  logic [15:0]       handoff_elem_bytes;
  logic              load_take;
  assign handoff_buf        = buffer_e'(load_instr[LoadBufferLsb +: LoadBufferBits]);
  assign handoff_elem_bytes = load_instr[LoadElemBytesLsb +: LoadElemBytesBits];
  always_comb begin
    unique case (handoff_buf)
      BufInp:  load_elem_error = handoff_elem_bytes > 16'(InpBytes);
      BufWgt:  load_elem_error = handoff_elem_bytes > 16'(WgtBytes);
      BufAcc:  load_elem_error = handoff_elem_bytes > 16'(AccLanes);
      default: load_elem_error = handoff_elem_bytes > 16'(ParBytes);
    endcase
    load_elem_error = load_elem_error && disp_load_valid;
  end
  assign load_take  = load_valid && load_ready;
  assign load_buf_d = load_take ? handoff_buf : load_buf_q;

  logic                   load_wr_valid, load_wr_ready;
  logic [15:0]            load_wr_addr;
  logic [LoadBytes*8-1:0] load_wr_data;
  logic                   load_dma_done;
  logic [AxiDataBits-1:0] unused_load_wdata;
  logic [AxiDataBits/8-1:0] unused_load_wstrb;
  logic [AxiIdBits-1:0]   unused_load_awid;
  logic [AxiAddrBits-1:0] unused_load_awaddr;
  logic [7:0]             unused_load_awlen;
  logic [2:0]             unused_load_awsize, unused_load_awprot;
  logic [1:0]             unused_load_awburst;
  logic [3:0]             unused_load_awcache;
  logic                   unused_load_awlock, unused_load_awvalid, unused_load_wlast;
  logic                   unused_load_wvalid, unused_load_bready;

  dpu_load_dma #(
    .AxiDataBits   (AxiDataBits),
    .AxiAddrBits   (AxiAddrBits),
    .AxiIdBits     (AxiIdBits),
    .EntryBytes    (LoadBytes),
    .MaxBurstBeats (MaxBurstBeats)
  ) u_load (
    .clk_i         (clk_i),
    .rst_ni        (core_rst_n),
    .instr_i       (load_instr),
    .instr_valid_i (load_valid),
    .instr_ready_o (load_ready),
    .base_i        (data_base[AxiAddrBits-1:0]),
    .limit_i       (AxiAddrBits'(data_limit)),
    .wr_valid_o    (load_wr_valid),
    .wr_ready_i    (load_wr_ready),
    .wr_addr_o     (load_wr_addr),
    .wr_data_o     (load_wr_data),
    .done_o        (load_dma_done),
    .error_o       (load_error),
    .m_axi_awid    (unused_load_awid),
    .m_axi_awaddr  (unused_load_awaddr),
    .m_axi_awlen   (unused_load_awlen),
    .m_axi_awsize  (unused_load_awsize),
    .m_axi_awburst (unused_load_awburst),
    .m_axi_awlock  (unused_load_awlock),
    .m_axi_awcache (unused_load_awcache),
    .m_axi_awprot  (unused_load_awprot),
    .m_axi_awvalid (unused_load_awvalid),
    .m_axi_awready (1'b0),
    .m_axi_wdata   (unused_load_wdata),
    .m_axi_wstrb   (unused_load_wstrb),
    .m_axi_wlast   (unused_load_wlast),
    .m_axi_wvalid  (unused_load_wvalid),
    .m_axi_wready  (1'b0),
    .m_axi_bid     ('0),
    .m_axi_bresp   (2'b00),
    .m_axi_bvalid  (1'b0),
    .m_axi_bready  (unused_load_bready),
    .m_axi_arid    (m_axi_arid),
    .m_axi_araddr  (m_axi_araddr),
    .m_axi_arlen   (m_axi_arlen),
    .m_axi_arsize  (m_axi_arsize),
    .m_axi_arburst (m_axi_arburst),
    .m_axi_arlock  (m_axi_arlock),
    .m_axi_arcache (m_axi_arcache),
    .m_axi_arprot  (m_axi_arprot),
    .m_axi_arvalid (m_axi_arvalid),
    .m_axi_arready (m_axi_arready),
    .m_axi_rid     (m_axi_rid),
    .m_axi_rdata   (m_axi_rdata),
    .m_axi_rresp   (m_axi_rresp),
    .m_axi_rlast   (m_axi_rlast),
    .m_axi_rvalid  (m_axi_rvalid),
    .m_axi_rready  (m_axi_rready)
  );
  // A DMA error also completes the instruction (the engine is idle again); the error stops
  // the core before anything else is dispatched.
  assign load_done = load_dma_done;

  // -- compute ------------------------------------------------------------------------------
  logic                   inp_re, wgt_re, acc_a_re, acc_b_re, par_re;
  logic [15:0]            inp_raddr, wgt_raddr, acc_a_raddr, acc_b_raddr, par_raddr;
  logic [Rows*8-1:0]      inp_rdata;
  logic [WgtBytes*8-1:0]  wgt_rdata;
  logic [Cols*32-1:0]     acc_a_rdata, acc_b_rdata;
  logic [ParBytes*8-1:0]  par_rdata;
  logic                   comp_acc_we, comp_out_we;
  logic [15:0]            comp_acc_waddr, comp_out_waddr;
  logic [Cols*32-1:0]     comp_acc_wdata;
  logic [Cols*8-1:0]      comp_out_wdata;
  logic                   mac_active;

  dpu_compute #(
    .Rows        (Rows),
    .Cols        (Cols),
    .InpEntries  (InpEntries),
    .WgtEntries  (WgtEntries),
    .AccEntries  (AccEntries),
    .OutEntries  (OutEntries),
    .ParEntries  (ParEntries),
    .MaxInFlight (ComputeInFlight)
  ) u_compute (
    .clk_i         (clk_i),
    .rst_ni        (core_rst_n),
    .instr_i       (compute_instr),
    .instr_valid_i (compute_valid),
    .instr_ready_o (compute_ready),
    .done_o        (compute_done),
    .error_o       (compute_error),
    .error_code_o  (compute_error_code),
    .inp_re_o      (inp_re),
    .inp_raddr_o   (inp_raddr),
    .inp_rdata_i   (inp_rdata),
    .wgt_re_o      (wgt_re),
    .wgt_raddr_o   (wgt_raddr),
    .wgt_rdata_i   (wgt_rdata),
    .acc_a_re_o    (acc_a_re),
    .acc_a_raddr_o (acc_a_raddr),
    .acc_a_rdata_i (acc_a_rdata),
    .acc_b_re_o    (acc_b_re),
    .acc_b_raddr_o (acc_b_raddr),
    .acc_b_rdata_i (acc_b_rdata),
    .acc_we_o      (comp_acc_we),
    .acc_waddr_o   (comp_acc_waddr),
    .acc_wdata_o   (comp_acc_wdata),
    .par_re_o      (par_re),
    .par_raddr_o   (par_raddr),
    .par_rdata_i   (par_rdata),
    .out_we_o      (comp_out_we),
    .out_waddr_o   (comp_out_waddr),
    .out_wdata_o   (comp_out_wdata),
    .mac_active_o  (mac_active)
  );

  // -- STORE --------------------------------------------------------------------------------
  logic                   store_rd_valid;
  logic [15:0]            store_rd_addr;
  logic [OutBytes*8-1:0]  out_rdata;
  logic                   store_dma_done;
  logic                   store_buffer_error;
  logic [AxiIdBits-1:0]   unused_store_arid;
  logic [AxiAddrBits-1:0] unused_store_araddr;
  logic [7:0]             unused_store_arlen;
  logic [2:0]             unused_store_arsize, unused_store_arprot;
  logic [1:0]             unused_store_arburst;
  logic [3:0]             unused_store_arcache;
  logic                   unused_store_arlock, unused_store_arvalid, unused_store_rready;

  dpu_store_dma #(
    .AxiDataBits   (AxiDataBits),
    .AxiAddrBits   (AxiAddrBits),
    .AxiIdBits     (AxiIdBits),
    .EntryBytes    (OutBytes),
    .MaxBurstBeats (MaxBurstBeats)
  ) u_store (
    .clk_i         (clk_i),
    .rst_ni        (core_rst_n),
    .instr_i       (store_instr),
    .instr_valid_i (store_valid),
    .instr_ready_o (store_ready),
    .base_i        (data_base[AxiAddrBits-1:0]),
    .limit_i       (AxiAddrBits'(data_limit)),
    .rd_valid_o    (store_rd_valid),
    .rd_addr_o     (store_rd_addr),
    .rd_data_i     (out_rdata),
    .done_o        (store_dma_done),
    .error_o       (store_error),
    .m_axi_awid    (m_axi_awid),
    .m_axi_awaddr  (m_axi_awaddr),
    .m_axi_awlen   (m_axi_awlen),
    .m_axi_awsize  (m_axi_awsize),
    .m_axi_awburst (m_axi_awburst),
    .m_axi_awlock  (m_axi_awlock),
    .m_axi_awcache (m_axi_awcache),
    .m_axi_awprot  (m_axi_awprot),
    .m_axi_awvalid (m_axi_awvalid),
    .m_axi_awready (m_axi_awready),
    .m_axi_wdata   (m_axi_wdata),
    .m_axi_wstrb   (m_axi_wstrb),
    .m_axi_wlast   (m_axi_wlast),
    .m_axi_wvalid  (m_axi_wvalid),
    .m_axi_wready  (m_axi_wready),
    .m_axi_bid     (m_axi_bid),
    .m_axi_bresp   (m_axi_bresp),
    .m_axi_bvalid  (m_axi_bvalid),
    .m_axi_bready  (m_axi_bready),
    .m_axi_arid    (unused_store_arid),
    .m_axi_araddr  (unused_store_araddr),
    .m_axi_arlen   (unused_store_arlen),
    .m_axi_arsize  (unused_store_arsize),
    .m_axi_arburst (unused_store_arburst),
    .m_axi_arlock  (unused_store_arlock),
    .m_axi_arcache (unused_store_arcache),
    .m_axi_arprot  (unused_store_arprot),
    .m_axi_arvalid (unused_store_arvalid),
    .m_axi_arready (1'b0),
    .m_axi_rid     ('0),
    .m_axi_rdata   ('0),
    .m_axi_rresp   (2'b00),
    .m_axi_rlast   (1'b0),
    .m_axi_rvalid  (1'b0),
    .m_axi_rready  (unused_store_rready)
  );
  assign store_done = store_dma_done;

  // =========================================================================================
  // Buffers
  // =========================================================================================
  logic load_wr_inp, load_wr_wgt, load_wr_acc, load_wr_par;  // a LOAD write this cycle
  logic load_wr_take;       // the LOAD engine hands over an entry this cycle
  logic load_wr_keep;       // and it is written: in its buffer, no error so far
  logic load_wr_in_range, load_buffer_error;

  always_comb begin
    unique case (load_buf_q)
      BufInp:  load_wr_in_range = load_wr_addr < 16'(InpEntries);
      BufWgt:  load_wr_in_range = load_wr_addr < 16'(WgtEntries);
      BufAcc:  load_wr_in_range = load_wr_addr < 16'(AccEntries);
      default: load_wr_in_range = load_wr_addr < 16'(ParEntries);
    endcase
  end

  // Compute owns the ACC write port in a cycle it writes; the LOAD waits. After an error the
  // LOAD engine must still finish the instruction it holds (the core reports done only once
  // it is idle), so from then on every entry it offers is taken at once and dropped: the
  // program is over, and the buffers keep what they held when the error happened.
  assign load_wr_ready     = halt_q || !(load_buf_q == BufAcc && comp_acc_we);
  assign load_wr_take      = load_wr_valid && load_wr_ready;
  assign load_wr_keep      = load_wr_take && !halt_q && load_wr_in_range;
  assign load_buffer_error = load_wr_take && !halt_q && !load_wr_in_range;
  assign load_wr_inp = load_wr_keep && load_buf_q == BufInp;
  assign load_wr_wgt = load_wr_keep && load_buf_q == BufWgt;
  assign load_wr_acc = load_wr_keep && load_buf_q == BufAcc;
  assign load_wr_par = load_wr_keep && load_buf_q == BufPar;

  // ACC entries from DRAM: byte c sign-extended to int32 lane c
  logic [Cols*32-1:0] load_acc_data;
  for (genvar c = 0; c < Cols; c++) begin : g_acc_lane
    assign load_acc_data[32*c +: 32] = {{24{load_wr_data[8*c+7]}}, load_wr_data[8*c +: 8]};
  end

  logic                   acc_we;
  logic [AccAddrBits-1:0] acc_waddr;
  logic [Cols*32-1:0]     acc_wdata;
  assign acc_we    = comp_acc_we || load_wr_acc;
  assign acc_waddr = comp_acc_we ? comp_acc_waddr[AccAddrBits-1:0] : load_wr_addr[AccAddrBits-1:0];
  assign acc_wdata = comp_acc_we ? comp_acc_wdata : load_acc_data;

  assign store_buffer_error = store_rd_valid && (store_rd_addr >= 16'(OutEntries));

  dpu_sram #(.Depth(InpEntries), .WidthBits(InpBytes * 8)) u_inp (
    .clk_i   (clk_i),
    .we_i    (load_wr_inp),
    .waddr_i (load_wr_addr[InpAddrBits-1:0]),
    .wdata_i (load_wr_data[InpBytes*8-1:0]),
    .re_i    (inp_re),
    .raddr_i (inp_raddr[InpAddrBits-1:0]),
    .rdata_o (inp_rdata)
  );

  dpu_sram #(.Depth(WgtEntries), .WidthBits(WgtBytes * 8)) u_wgt (
    .clk_i   (clk_i),
    .we_i    (load_wr_wgt),
    .waddr_i (load_wr_addr[WgtAddrBits-1:0]),
    .wdata_i (load_wr_data[WgtBytes*8-1:0]),
    .re_i    (wgt_re),
    .raddr_i (wgt_raddr[WgtAddrBits-1:0]),
    .rdata_o (wgt_rdata)
  );

  dpu_sram #(.Depth(AccEntries), .WidthBits(Cols * 32)) u_acc_a (
    .clk_i   (clk_i),
    .we_i    (acc_we),
    .waddr_i (acc_waddr),
    .wdata_i (acc_wdata),
    .re_i    (acc_a_re),
    .raddr_i (acc_a_raddr[AccAddrBits-1:0]),
    .rdata_o (acc_a_rdata)
  );

  dpu_sram #(.Depth(AccEntries), .WidthBits(Cols * 32)) u_acc_b (
    .clk_i   (clk_i),
    .we_i    (acc_we),
    .waddr_i (acc_waddr),
    .wdata_i (acc_wdata),
    .re_i    (acc_b_re),
    .raddr_i (acc_b_raddr[AccAddrBits-1:0]),
    .rdata_o (acc_b_rdata)
  );

  dpu_sram #(.Depth(ParEntries), .WidthBits(ParBytes * 8)) u_par (
    .clk_i   (clk_i),
    .we_i    (load_wr_par),
    .waddr_i (load_wr_addr[ParAddrBits-1:0]),
    .wdata_i (load_wr_data[ParBytes*8-1:0]),
    .re_i    (par_re),
    .raddr_i (par_raddr[ParAddrBits-1:0]),
    .rdata_o (par_rdata)
  );

  dpu_sram #(.Depth(OutEntries), .WidthBits(OutBytes * 8)) u_out (
    .clk_i   (clk_i),
    .we_i    (comp_out_we),
    .waddr_i (comp_out_waddr[OutAddrBits-1:0]),
    .wdata_i (comp_out_wdata),
    .re_i    (store_rd_valid && !store_buffer_error),
    .raddr_i (store_rd_addr[OutAddrBits-1:0]),
    .rdata_o (out_rdata)
  );

  // =========================================================================================
  // Errors, deadlock, run control
  // =========================================================================================
  logic [ErrorCodeCodeBits-1:0] new_code;   // first error seen this cycle, in priority order

  always_comb begin
    new_code = ErrNone;
    if (disp_error) begin
      unique case (disp_error_code)
        DispErrOpcode: new_code = ErrIllegalOpcode;
        DispErrFlags:  new_code = ErrIllegalFlags;
        default:       new_code = ErrTokenOverflow;
      endcase
    end else if (fetch_error) begin
      new_code = fetch_align_error ? ErrFetchAlign : ErrFetchAxi;
    end else if (load_elem_error) begin
      new_code = ErrLoadElemBytes;
    end else if (load_buffer_error) begin
      new_code = ErrLoadBuffer;
    end else if (load_dma_done && load_error != 2'd0) begin
      unique case (load_error)
        DmaErrRange: new_code = ErrLoadRange;
        DmaErrAxi:   new_code = ErrLoadAxi;
        default:     new_code = ErrLoadElemBytes;
      endcase
    end else if (store_buffer_error) begin
      new_code = ErrStoreBuffer;
    end else if (store_dma_done && store_error != 2'd0) begin
      unique case (store_error)
        DmaErrRange: new_code = ErrStoreRange;
        DmaErrAxi:   new_code = ErrStoreAxi;
        default:     new_code = ErrStoreElemBytes;
      endcase
    end else if (compute_error) begin
      unique case (compute_error_code)
        CompErrBuffer: new_code = ErrComputeBuffer;
        CompErrAluOp:  new_code = ErrIllegalAluOp;
        default:       new_code = ErrIllegalOpcode;
      endcase
    end
  end
  assign error_now = (new_code != ErrNone) || halt_q;

  // Deadlock: no engine busy or able to start, and fetch has nothing the dispatcher takes,
  // for DeadlockCycles cycles (token counters are registered: one quiet cycle is normal).
  logic       stuck;
  logic [2:0] stuck_cycles_q, stuck_cycles_d;
  assign stuck = running_q && !halt_q && !ending_q && !launch_q && !clear_q && disp_busy == 3'b000
              && !disp_load_valid && !disp_compute_valid && !disp_store_valid
              && ((fetch_exhausted && !fetch_valid) || (fetch_valid && !disp_in_ready));
  assign stuck_cycles_d = stuck ? stuck_cycles_q + 3'd1 : 3'd0;

  // Wind-down after END or an error: fetch has no burst outstanding (it may have read ahead
  // past END), the DMA engines are idle.
  logic quiescent;
  assign quiescent = fetch_idle && !disp_busy[0] && !disp_busy[2] && !launch_q;

  always_comb begin
    running_d  = running_q;
    halt_d     = halt_q;
    ending_d   = ending_q;
    err_code_d = err_code_q;
    finish     = 1'b0;
    if (start && !running_q) begin
      running_d  = 1'b1;
      halt_d     = 1'b0;
      ending_d   = 1'b0;
      err_code_d = ErrNone;
    end else if (running_q) begin
      if (!halt_q && !ending_q && new_code != ErrNone) begin
        halt_d     = 1'b1;
        err_code_d = new_code;
      end else if (!halt_q && !ending_q && stuck_cycles_q == 3'(DeadlockCycles)) begin
        halt_d     = 1'b1;
        err_code_d = ErrDeadlock;
      end
      if (disp_done && !halt_q) begin
        ending_d = 1'b1;
      end
      if ((halt_q || ending_q) && quiescent) begin
        running_d = 1'b0;
        finish    = 1'b1;
      end
    end
  end

  // =========================================================================================
  // Counters (cleared by start and soft reset)
  // =========================================================================================
  logic r_beat_load, w_beat;
  assign r_beat_load = m_axi_rvalid && m_axi_rready;
  assign w_beat      = m_axi_wvalid && m_axi_wready;

  always_comb begin
    count_inc                = '0;
    count_inc[CntCycles]     = running_q;
    count_inc[CntMacCycles]  = mac_active;
    count_inc[CntStallLoad]    = running_q && disp_blocked[0];
    count_inc[CntStallCompute] = running_q && disp_blocked[1];
    count_inc[CntStallStore]   = running_q && disp_blocked[2];
    count_inc[CntDramReadBeats]  = r_beat_load;
    count_inc[CntDramWriteBeats] = w_beat;
    count_inc[CntInpReads]   = inp_re;
    count_inc[CntInpWrites]  = load_wr_inp;
    count_inc[CntWgtReads]   = wgt_re;
    count_inc[CntWgtWrites]  = load_wr_wgt;
    count_inc[CntOutReads]   = store_rd_valid && !store_buffer_error;
    count_inc[CntOutWrites]  = comp_out_we;
    count_inc[CntParReads]   = par_re;
    count_inc[CntParWrites]  = load_wr_par;
    count_inc[CntAccWrites]  = acc_we;
    for (int unsigned i = 0; i < NumCounters; i++) begin
      counters_d[i] = counters_q[i] + 64'(count_inc[i]);
    end
    // two ACC read ports
    counters_d[CntAccReads] = counters_q[CntAccReads] + 64'(acc_a_re) + 64'(acc_b_re);
    if (start && !running_q) begin
      counters_d = '0;
    end
  end

  always_ff @(posedge clk_i or negedge rst_ni) begin
    if (!rst_ni) begin
      running_q         <= 1'b0;
      halt_q            <= 1'b0;
      ending_q          <= 1'b0;
      err_code_q        <= ErrNone;
      clear_q           <= 1'b0;
      launch_q          <= 1'b0;
      stuck_cycles_q    <= '0;
      counters_q        <= '0;
      load_buf_q        <= BufInp;
    end else if (soft_reset) begin
      running_q         <= 1'b0;
      halt_q            <= 1'b0;
      ending_q          <= 1'b0;
      err_code_q        <= ErrNone;
      clear_q           <= 1'b0;
      launch_q          <= 1'b0;
      stuck_cycles_q    <= '0;
      counters_q        <= '0;
      load_buf_q        <= BufInp;
    end else begin
      running_q         <= running_d;
      halt_q            <= halt_d;
      ending_q          <= ending_d;
      err_code_q        <= err_code_d;
      clear_q           <= start && !running_q;
      launch_q          <= clear_q;
      stuck_cycles_q    <= stuck_cycles_d;
      counters_q        <= counters_d;
      load_buf_q        <= load_buf_d;
    end
  end

  logic unused;
  assign unused = ^{instr_base[63:AxiAddrBits], data_base[63:AxiAddrBits], unused_load_wdata,
                    unused_load_wstrb, unused_load_awid, unused_load_awaddr, unused_load_awlen,
                    unused_load_awsize, unused_load_awprot, unused_load_awburst,
                    unused_load_awcache, unused_load_awlock, unused_load_awvalid,
                    unused_load_wlast, unused_load_wvalid, unused_load_bready,
                    unused_store_arid, unused_store_araddr, unused_store_arlen,
                    unused_store_arsize, unused_store_arprot, unused_store_arburst,
                    unused_store_arcache, unused_store_arlock, unused_store_arvalid,
                    unused_store_rready,
                    // compute checks its addresses against the buffer sizes itself
                    inp_raddr, wgt_raddr, acc_a_raddr, acc_b_raddr, par_raddr,
                    comp_acc_waddr, comp_out_waddr};

endmodule
