// The virtual board: dpu_top in Verilator with a DRAM model on its AXI4 master ports and an
// AXI4-Lite access path to its registers, built as a shared library with a small C ABI
// (below, `vb_*`). Python (sim/virtual_board.py) wraps it in PYNQ-shaped MMIO and allocate
// objects and host/driver.py drives it register by register, as it drives a board: this
// file holds the hardware around the DPU (clock, reset, DRAM, bus) and no driver.
//
// DRAM model (one memory behind dpu_top's data port and its instruction port, at physical
// addresses [base, base + size)): every AR/AW burst is accepted at once (unless stalled)
// and its first beat is available LATENCY cycles later; beats of accepted bursts then
// stream one per cycle, in request order (as an AXI slave may, across IDs). A write's B
// response comes LATENCY cycles after its AW, and not before its last W beat. A beat
// outside the memory, or inside the fault range set by vb_set_fault, answers SLVERR.
// STALL_PCT > 0 makes every ready and valid the model drives drop randomly with that
// probability (seeded by SEED): the protocol-level backpressure test.
//
// Thread use: one thread at a time per board (the Python side holds a lock around every
// call), except vb_cycles, which any thread may read while the clock runs.

#include <atomic>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <memory>
#include <random>
#include <type_traits>
#include <vector>

#include "Vdpu_top.h"
#include "verilated.h"

namespace {

constexpr int kBusBytes = DPU_AXI_DATA_BITS / 8;

// Data buses are a 64-bit integer up to 64 bits and a word array above.
void put_bytes(QData& sig, const uint8_t* src) {
  uint64_t v = 0;
  for (int i = kBusBytes - 1; i >= 0; --i) v = (v << 8) | src[i];
  sig = v;
}
template <std::size_t N>
void put_bytes(VlWide<N>& sig, const uint8_t* src) {
  for (std::size_t w = 0; w < N; ++w) {
    uint32_t v = 0;
    for (int b = 3; b >= 0; --b) v = (v << 8) | src[4 * w + b];
    sig[w] = v;
  }
}
uint8_t get_byte(const QData& sig, int i) { return static_cast<uint8_t>(sig >> (8 * i)); }
template <std::size_t N>
uint8_t get_byte(const VlWide<N>& sig, int i) {
  return static_cast<uint8_t>(sig[i / 4] >> (8 * (i % 4)));
}

// The DRAM: physical addresses [base, base + size), zeroed pages from calloc (a page no one
// touched costs no host memory, so a board-sized DRAM is cheap), and an address range that
// answers SLVERR (fault injection).
struct Memory {
  uint64_t base = 0;
  uint64_t size = 0;
  uint8_t* bytes = nullptr;
  uint64_t fault_lo = 0, fault_hi = 0;  // [lo, hi) answers SLVERR; empty when lo == hi

  // The host pointer of a whole bus beat at `addr`, or nullptr: outside, or faulted.
  uint8_t* beat(uint64_t addr) const {
    if (addr < base || addr - base + kBusBytes > size) return nullptr;
    if (addr + kBusBytes > fault_lo && addr < fault_hi) return nullptr;
    return bytes + (addr - base);
  }
};

struct Burst {
  uint64_t addr;
  unsigned beats;
  unsigned id;
  uint64_t ready_cycle;  // first beat (read) or B response (write) not before this cycle
  unsigned done = 0;     // beats transferred
};

// One AXI4 read port of the DRAM model (dpu_top has two: data and instructions). Bursts
// are accepted at once (unless stalled), their first beat comes `latency` cycles later and
// their beats then stream in request order; a beat outside the memory answers SLVERR.
template <typename Data, typename Addr>
struct ReadPort {
  // the port's signals on the model
  CData& arvalid;
  CData& arready;
  Addr& araddr;
  CData& arlen;
  CData& arid;
  CData& rvalid;
  CData& rready;
  Data& rdata;
  CData& rresp;
  CData& rid;
  CData& rlast;

  std::deque<Burst> bursts;
  bool held = false;  // a beat shown last cycle and not yet taken
  bool offer = false;

  // Before the edge: drive ready and the next beat.
  void drive(uint64_t cycle, bool ar_stall, bool r_stall, const Memory& mem) {
    arready = !ar_stall;
    offer = !bursts.empty() && bursts.front().ready_cycle <= cycle && (held || !r_stall);
    rvalid = offer;
    if (offer) {
      const Burst& b = bursts.front();
      uint64_t addr = b.addr + uint64_t(b.done) * kBusBytes;
      static const uint8_t zero[kBusBytes] = {};
      const uint8_t* src = mem.beat(addr);
      put_bytes(rdata, src ? src : zero);
      rresp = src ? 0 : 2;
      rid = b.id;
      rlast = (b.done + 1 == b.beats);
    }
  }

  // After the model settled, before the edge: what the handshakes will do at the edge.
  bool sample(uint64_t cycle, unsigned latency) {
    if (arvalid && arready) {
      uint64_t addr = araddr & ~uint64_t(kBusBytes - 1);
      bursts.push_back({addr, unsigned(arlen) + 1u, unsigned(arid), cycle + latency});
    }
    return offer && rready;
  }

  // After the edge.
  void advance(bool r_fire) {
    held = offer && !r_fire;
    if (r_fire && ++bursts.front().done == bursts.front().beats) bursts.pop_front();
  }
};

class Harness {
 public:
  Harness(Memory mem, unsigned latency, unsigned stall_pct, unsigned seed)
      : mem_(mem), latency_(latency), stall_pct_(stall_pct), rng_(seed) {
    ctx_ = std::make_unique<VerilatedContext>();
    top_ = std::make_unique<Vdpu_top>(ctx_.get());
    Vdpu_top& t = *top_;
    data_.reset(new Port{t.m_axi_arvalid, t.m_axi_arready, t.m_axi_araddr, t.m_axi_arlen,
                         t.m_axi_arid, t.m_axi_rvalid, t.m_axi_rready, t.m_axi_rdata,
                         t.m_axi_rresp, t.m_axi_rid, t.m_axi_rlast});
    instr_.reset(new Port{t.m_axi_instr_arvalid, t.m_axi_instr_arready, t.m_axi_instr_araddr,
                          t.m_axi_instr_arlen, t.m_axi_instr_arid, t.m_axi_instr_rvalid,
                          t.m_axi_instr_rready, t.m_axi_instr_rdata, t.m_axi_instr_rresp,
                          t.m_axi_instr_rid, t.m_axi_instr_rlast});
  }

  void reset() {
    top_->rst_ni = 0;
    idle_inputs();
    for (int i = 0; i < 5; ++i) tick();
    top_->rst_ni = 1;
    tick();
  }

  void reg_write(uint32_t offset, uint32_t value) {
    top_->s_axil_awaddr = offset;
    top_->s_axil_awvalid = 1;
    top_->s_axil_wdata = value;
    top_->s_axil_wstrb = 0xF;
    top_->s_axil_wvalid = 1;
    top_->s_axil_bready = 1;
    bool aw = false, w = false;
    while (true) {
      top_->eval();
      bool aw_fire = top_->s_axil_awvalid && top_->s_axil_awready;
      bool w_fire = top_->s_axil_wvalid && top_->s_axil_wready;
      bool b_fire = top_->s_axil_bvalid && top_->s_axil_bready;
      tick();
      if (aw_fire) { aw = true; top_->s_axil_awvalid = 0; }
      if (w_fire) { w = true; top_->s_axil_wvalid = 0; }
      if (b_fire && aw && w) break;
    }
    top_->s_axil_bready = 0;
  }

  uint32_t reg_read(uint32_t offset) {
    top_->s_axil_araddr = offset;
    top_->s_axil_arvalid = 1;
    top_->s_axil_rready = 1;
    uint32_t data = 0;
    while (true) {
      top_->eval();
      bool ar_fire = top_->s_axil_arvalid && top_->s_axil_arready;
      bool r_fire = top_->s_axil_rvalid && top_->s_axil_rready;
      if (r_fire) data = top_->s_axil_rdata;
      tick();
      if (ar_fire) top_->s_axil_arvalid = 0;
      if (r_fire) break;
    }
    top_->s_axil_rready = 0;
    return data;
  }

  // Runs the clock until irq_o is high or `max_cycles` cycles passed; returns the cycles run.
  uint64_t run(uint64_t max_cycles) {
    uint64_t start = cycle_;
    while (!top_->irq_o && cycle_ - start < max_cycles) tick();
    return cycle_ - start;
  }

  bool irq() const { return top_->irq_o; }
  uint64_t cycles() const { return published_cycles_.load(std::memory_order_relaxed); }
  Memory& mem() { return mem_; }

 private:
  bool stall() { return stall_pct_ && (rng_() % 100) < stall_pct_; }

  void idle_inputs() {
    top_->s_axil_awvalid = 0;
    top_->s_axil_wvalid = 0;
    top_->s_axil_bready = 0;
    top_->s_axil_arvalid = 0;
    top_->s_axil_rready = 0;
    top_->m_axi_arready = 0;
    top_->m_axi_rvalid = 0;
    top_->m_axi_instr_arready = 0;
    top_->m_axi_instr_rvalid = 0;
    top_->m_axi_awready = 0;
    top_->m_axi_wready = 0;
    top_->m_axi_bvalid = 0;
  }


  // One clock cycle: drive the DRAM model's outputs from its state, settle, sample the
  // handshakes, clock edge, then update the model.
  void tick() {
    // -- drive. A valid once shown stays until its handshake (AXI); only new offers and
    // ready signals may be stalled.
    for (Port* port : {data_.get(), instr_.get()}) {
      bool ar_stall = stall();
      port->drive(cycle_, ar_stall, stall(), mem_);
    }
    top_->m_axi_awready = !stall();
    top_->m_axi_wready = !aw_.empty() && !stall();
    bool b_offer = !bresp_.empty() && bresp_.front().ready_cycle <= cycle_ && (b_held_ || !stall());
    top_->m_axi_bvalid = b_offer;
    if (b_offer) {
      top_->m_axi_bid = bresp_.front().id;
      top_->m_axi_bresp = bresp_.front().done ? 2 : 0;  // done = 1 marks an error
    }
    top_->clk_i = 0;
    top_->eval();
    // -- sample
    bool r_fire = data_->sample(cycle_, latency_);
    bool ri_fire = instr_->sample(cycle_, latency_);
    bool aw_fire = top_->m_axi_awvalid && top_->m_axi_awready;
    bool w_fire = top_->m_axi_wvalid && top_->m_axi_wready;
    bool b_fire = b_offer && top_->m_axi_bready;
    if (aw_fire) {
      uint64_t addr = top_->m_axi_awaddr & ~uint64_t(kBusBytes - 1);
      aw_.push_back({addr, unsigned(top_->m_axi_awlen) + 1u, unsigned(top_->m_axi_awid),
                     cycle_ + latency_});
    }
    if (w_fire) {
      Burst& b = aw_.front();
      uint64_t addr = b.addr + uint64_t(b.done) * kBusBytes;
      uint8_t* dst = mem_.beat(addr);
      if (dst) {
        for (int i = 0; i < kBusBytes; ++i) {
          if ((top_->m_axi_wstrb >> i) & 1) dst[i] = get_byte(top_->m_axi_wdata, i);
        }
      } else {
        write_error_ = true;
      }
      if (++b.done == b.beats || top_->m_axi_wlast) {
        Burst resp = b;
        resp.ready_cycle = std::max<uint64_t>(b.ready_cycle, cycle_ + 1);
        resp.done = write_error_ ? 1 : 0;
        write_error_ = false;
        bresp_.push_back(resp);
        aw_.pop_front();
      }
    }
    // -- clock edge
    top_->clk_i = 1;
    top_->eval();
    ++cycle_;
    published_cycles_.store(cycle_, std::memory_order_relaxed);  // a plain store on x86/ARM
    data_->advance(r_fire);
    instr_->advance(ri_fire);
    b_held_ = b_offer && !b_fire;
    if (b_fire) bresp_.pop_front();
  }

  Memory mem_;
  unsigned latency_, stall_pct_;
  std::mt19937 rng_;
  std::unique_ptr<VerilatedContext> ctx_;
  std::unique_ptr<Vdpu_top> top_;
  using Port = ReadPort<std::remove_reference_t<decltype(Vdpu_top::m_axi_rdata)>,
                        std::remove_reference_t<decltype(Vdpu_top::m_axi_araddr)>>;
  std::unique_ptr<Port> data_, instr_;
  std::deque<Burst> aw_, bresp_;
  bool write_error_ = false;
  bool b_held_ = false;
  uint64_t cycle_ = 0;
  std::atomic<uint64_t> published_cycles_{0};  // cycle_, for threads other than the clock's
};

}  // namespace

// -- C ABI -------------------------------------------------------------------------------

// The library is built with hidden visibility (no symbol interposition, so the model's
// calls between its files are direct): only these functions are exported.
#define VB_API __attribute__((visibility("default")))

extern "C" {

// A board with `size` bytes of DRAM at physical address `base`, out of reset; NULL if the
// host cannot reserve the memory.
VB_API void* vb_create(uint64_t base, uint64_t size, unsigned latency, unsigned stall_pct,
                unsigned seed) {
  Memory mem;
  mem.base = base;
  mem.size = size;
  mem.bytes = static_cast<uint8_t*>(std::calloc(size ? size : 1, 1));
  if (!mem.bytes) return nullptr;
  auto* h = new Harness(mem, latency, stall_pct, seed);
  h->reset();
  return h;
}

// Frees the model; the DRAM stays until vb_free_memory, for buffers that outlive it.
VB_API void vb_destroy(void* vb) { delete static_cast<Harness*>(vb); }

VB_API void vb_free_memory(uint8_t* memory) { std::free(memory); }

VB_API uint8_t* vb_memory(void* vb) { return static_cast<Harness*>(vb)->mem().bytes; }

VB_API void vb_set_fault(void* vb, uint64_t lo, uint64_t hi) {
  Memory& m = static_cast<Harness*>(vb)->mem();
  m.fault_lo = lo;
  m.fault_hi = hi;
}

VB_API uint32_t vb_reg_read(void* vb, uint32_t offset) {
  return static_cast<Harness*>(vb)->reg_read(offset);
}

VB_API void vb_reg_write(void* vb, uint32_t offset, uint32_t value) {
  static_cast<Harness*>(vb)->reg_write(offset, value);
}

VB_API uint64_t vb_run(void* vb, uint64_t max_cycles) {
  return static_cast<Harness*>(vb)->run(max_cycles);
}

VB_API int vb_irq(void* vb) { return static_cast<Harness*>(vb)->irq() ? 1 : 0; }

VB_API uint64_t vb_cycles(void* vb) { return static_cast<Harness*>(vb)->cycles(); }

VB_API int vb_bus_bytes(void) { return kBusBytes; }

}  // extern "C"
