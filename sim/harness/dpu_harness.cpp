// Verilator-native whole-program harness for dpu_top: a DRAM model on the AXI4 master port
// and a register driver on the AXI4-Lite slave, all in C++, so whole networks simulate at
// full Verilator speed. Python (sim/rtl_harness.py) only writes the DRAM image and reads
// the results.
//
//   dpu_harness MEM_IN MEM_OUT LATENCY MAX_CYCLES SEED STALL_PCT [OFFSET=VALUE ...]
//               [-- [OFFSET=VALUE ...]] ...
//
// MEM_IN: the DRAM image, mapped at AXI address 0 (a read or write outside it answers
// SLVERR). Each group of OFFSET=VALUE register writes (hex or decimal; groups separated by
// "--") is one run on the same DPU and DRAM, without a reset between runs: the writes are
// applied in order, IRQ_STATUS.done is cleared, then CTRL = irq_enable | start, and the
// clock runs until irq_o (done) or MAX_CYCLES. Output on stdout, per run: "run K", then one
// "key value" per line: "reg OFFSET VALUE" for every register of the map read back
// afterwards (counters LO then HI), "cycles N" (clock cycles from start to done),
// "wall_s S", "timeout 0|1". MEM_OUT receives the DRAM image after each run, one after the
// other. A run that times out is the last: the core is still busy and ignores a start.
//
// DRAM model (one memory behind dpu_top's data port and its instruction port): every AR/AW
// burst is accepted at once (unless stalled) and its first beat is available LATENCY cycles
// later; beats of accepted bursts then stream one per cycle, in
// request order (as an AXI slave may, across IDs). A write's B response comes LATENCY
// cycles after its AW, and not before its last W beat. STALL_PCT > 0 makes every ready
// and valid the model drives drop randomly with that probability (seeded by SEED): the
// protocol-level backpressure test.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
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
  void drive(uint64_t cycle, bool ar_stall, bool r_stall, const std::vector<uint8_t>& mem) {
    arready = !ar_stall;
    offer = !bursts.empty() && bursts.front().ready_cycle <= cycle && (held || !r_stall);
    rvalid = offer;
    if (offer) {
      const Burst& b = bursts.front();
      uint64_t addr = b.addr + uint64_t(b.done) * kBusBytes;
      static const uint8_t zero[kBusBytes] = {};
      bool ok = addr + kBusBytes <= mem.size();
      put_bytes(rdata, ok ? &mem[addr] : zero);
      rresp = ok ? 0 : 2;
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
  Harness(std::vector<uint8_t> mem, unsigned latency, unsigned stall_pct, unsigned seed)
      : mem_(std::move(mem)), latency_(latency), stall_pct_(stall_pct), rng_(seed) {
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

  // Runs until irq_o; returns the cycles it took, or 0 on timeout.
  uint64_t run_until_irq(uint64_t max_cycles) {
    uint64_t start = cycle_;
    while (!top_->irq_o) {
      if (cycle_ - start >= max_cycles) return 0;
      tick();
    }
    return cycle_ - start;
  }

  const std::vector<uint8_t>& mem() const { return mem_; }

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

  bool in_mem(uint64_t addr) const { return addr + kBusBytes <= mem_.size(); }

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
      bool ok = in_mem(addr);
      if (ok) {
        for (int i = 0; i < kBusBytes; ++i) {
          if ((top_->m_axi_wstrb >> i) & 1) mem_[addr + i] = get_byte(top_->m_axi_wdata, i);
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
    data_->advance(r_fire);
    instr_->advance(ri_fire);
    b_held_ = b_offer && !b_fire;
    if (b_fire) bresp_.pop_front();
  }

  std::vector<uint8_t> mem_;
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
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr,
                 "usage: %s MEM_IN MEM_OUT LATENCY MAX_CYCLES SEED STALL_PCT [OFF=VAL ...]"
                 " [-- [OFF=VAL ...]] ...\n",
                 argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return 2;
  }
  std::vector<uint8_t> mem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  unsigned latency = std::strtoul(argv[3], nullptr, 0);
  uint64_t max_cycles = std::strtoull(argv[4], nullptr, 0);
  unsigned seed = std::strtoul(argv[5], nullptr, 0);
  unsigned stall_pct = std::strtoul(argv[6], nullptr, 0);

  Harness h(std::move(mem), latency, stall_pct, seed);
  h.reset();
  std::ofstream out(argv[2], std::ios::binary);
  int arg = 7;
  for (int run = 0; arg <= argc; ++run) {
    for (; arg < argc && std::string(argv[arg]) != "--"; ++arg) {
      std::string write = argv[arg];
      auto eq = write.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "bad register write %s (want OFFSET=VALUE)\n", argv[arg]);
        return 2;
      }
      h.reg_write(std::strtoul(write.substr(0, eq).c_str(), nullptr, 0),
                  std::strtoul(write.substr(eq + 1).c_str(), nullptr, 0));
    }
    ++arg;  // past "--", or past the end after the last run
    h.reg_write(DPU_IRQ_STATUS_OFFSET, DPU_IRQ_STATUS_DONE);  // W1C: the last run's done
    auto t0 = std::chrono::steady_clock::now();
    h.reg_write(DPU_CTRL_OFFSET, DPU_CTRL_START | DPU_CTRL_IRQ_ENABLE);
    uint64_t cycles = h.run_until_irq(max_cycles);
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::printf("run %d\n", run);
    for (uint32_t off = 0; off <= DPU_LAST_REG_OFFSET; off += 4) {
      std::printf("reg %u %u\n", off, h.reg_read(off));
    }
    std::printf("cycles %llu\n", static_cast<unsigned long long>(cycles));
    std::printf("wall_s %.6f\n", wall);
    std::printf("timeout %d\n", cycles == 0 ? 1 : 0);
    out.write(reinterpret_cast<const char*>(h.mem().data()), std::streamsize(h.mem().size()));
    if (cycles == 0) break;
  }
  return out ? 0 : 2;
}
