"""Single instructions on the golden model, against results worked out by hand.

Every stream runs on sim-small (a 4x4 array: INP entries of 4 int8 lanes, WGT entries of
16, ACC/OUT/PAR entries of 4 lanes) and ends with END. Instructions on different engines
that share data are ordered by one dependency token: the last LOAD pushes to the compute
engine (`push_next`), the first compute instruction pops it (`pop_prev`); likewise compute
-> store. Later instructions on the same engine are ordered by the engine itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from stream_helpers import instr

from dpukit.compiler import isa
from dpukit.compiler.golden import GoldenDPU
from dpukit.compiler.hwconfig import load_config
from dpukit.compiler.isa import AluOp, Buffer, Opcode

CFG = load_config("sim-small")


def _load(
    buffer: Buffer,
    sram_base: int,
    dram_offset: int,
    y_size: int,
    x_size: int,
    y_stride: int,
    x_stride: int,
    elem_bytes: int,
    **rest: int,
) -> isa.Instr:
    return instr(
        Opcode.LOAD,
        buffer=buffer,
        sram_base=sram_base,
        dram_offset=dram_offset,
        y_size=y_size,
        x_size=x_size,
        y_stride=y_stride,
        x_stride=x_stride,
        elem_bytes=elem_bytes,
        **rest,
    )


def _gemm(**fields: int) -> isa.Instr:
    return instr(Opcode.GEMM, **fields)


def _alu(op: AluOp, **fields: int) -> isa.Instr:
    """ALU of one trip (n_outer = n_inner = 1) unless given."""
    return instr(Opcode.ALU, alu_op=op, **({"n_outer": 1, "n_inner": 1} | fields))


def _post(acc_base: int, out_base: int, count: int, par_addr: int, **rest: int) -> isa.Instr:
    """POST; no clamp (-128..127) and zero point 0 unless given."""
    fields = {"zero_point": 0, "clamp_lo": -128, "clamp_hi": 127} | rest
    return instr(
        Opcode.POST, acc_base=acc_base, out_base=out_base, count=count, par_addr=par_addr, **fields
    )


END = isa.make(Opcode.END)


def _run(instrs: list[isa.Instr], dram: np.ndarray):
    dpu = GoldenDPU(CFG)
    activity = dpu.run(isa.to_bytes([*instrs, END]), dram)
    return dpu, activity


def _dram(size: int, chunks: dict[int, bytes]) -> np.ndarray:
    dram = np.zeros(size, np.uint8)
    for off, data in chunks.items():
        dram[off : off + len(data)] = np.frombuffer(data, np.uint8)
    return dram


def _i8(values) -> bytes:
    return np.asarray(values, np.int8).tobytes()


def _par(bias, mult, shift) -> bytes:
    """One PAR entry: bias[cols], then multiplier[cols], then shift[cols], int32 LE."""
    return np.asarray([bias, mult, shift], "<i4").tobytes()


def test_sim_small_shape() -> None:
    assert (CFG.rows, CFG.cols, CFG.dram_latency_cycles, CFG.axi_data_bits) == (4, 4, 16, 64)


# --- LOAD -------------------------------------------------------------------------------------


def test_load_of_zero_bytes_per_entry_zero_fills_and_pads_par_too() -> None:
    # First fill INP entries 0..3 and PAR entry 0 with ones, then LOAD elem_bytes 0 over
    # INP (data entries become all zero) and a padded PAR load (padding is pad_value).
    ones = np.ones(256, np.uint8)
    stream = [
        _load(Buffer.INP, 0, 0, 1, 4, 0, 4, 4),
        _load(Buffer.PAR, 0, 0, 1, 1, 0, 48, 48),
        _load(Buffer.INP, 0, 0, 1, 4, 0, 4, 0),
        _load(Buffer.PAR, 0, 0, 0, 1, 0, 48, 48, pad_top=1, pad_value=-2),
    ]
    dpu, _ = _run(stream, ones)
    assert not dpu.inp[:4].any()
    assert (dpu.par[0].view(np.int8) == -2).all()


def test_load_with_padding_and_strides_fills_inp() -> None:
    dram = np.arange(64, dtype=np.uint8)
    dram[15] = 200  # reads back as int8 -56
    # 2 rows of 2 entries; rows 10 bytes apart, entries 3 apart; 3 bytes per 4-lane entry.
    # Padding: 1 row above and below, 1 entry left, none right; pad value -7.
    load = _load(
        Buffer.INP, 2, 5, 2, 2, 10, 3, 3, pad_top=1, pad_bottom=1, pad_left=1, pad_value=-7
    )
    dpu, _ = _run([load], dram)
    p = [-7] * 4  # a padding entry
    expected = [
        [p, p, p],  # y=0: padding row (1 padding column + 2 data columns)
        [p, [5, 6, 7, 0], [8, 9, 10, 0]],  # y=1: dram[5:8], dram[8:11]; lane 3 zero-filled
        [p, [-56, 16, 17, 0], [18, 19, 20, 0]],  # y=2: dram[15:18], dram[18:21]
        [p, p, p],  # y=3: padding row
    ]
    np.testing.assert_array_equal(dpu.inp[2:14], np.reshape(expected, (12, 4)))
    assert not dpu.inp[:2].any() and not dpu.inp[14:].any()  # nothing else written


def test_load_into_acc_sign_extends_each_byte() -> None:
    dram = _dram(64, {0: bytes([0xFF, 0x80, 0x7F, 0x01, 0x05, 0xFE])})
    dpu, _ = _run([_load(Buffer.ACC, 3, 0, 1, 2, 0, 4, 3)], dram)
    np.testing.assert_array_equal(dpu.acc[3:5], [[-1, -128, 127, 0], [5, -2, 0, 0]])
    assert dpu.acc.dtype == np.int32


# --- GEMM -------------------------------------------------------------------------------------


def test_gemm_reset_then_accumulate_equals_integer_matmul() -> None:
    rng = np.random.default_rng(5)
    w1 = rng.integers(-128, 128, (4, 4), dtype=np.int8)
    w2 = rng.integers(-128, 128, (4, 4), dtype=np.int8)
    w1[0, 0], w2[3, 3] = -128, 127
    x = rng.integers(-128, 128, (12, 4), dtype=np.int8)
    x[0] = -128  # extreme products: (-128)*(-128) summed over a row
    dram = _dram(128, {0: w1.tobytes() + w2.tobytes(), 64: x.tobytes()})
    # o < 2, i < 3: INP entry o + 2*i -> ACC entry 4*o + i
    loop = dict(
        acc_base=0,
        n_outer=2,
        n_inner=3,
        inp_outer_stride=1,
        inp_inner_stride=2,
        acc_outer_stride=4,
        acc_inner_stride=1,
    )
    stream = [
        _load(Buffer.WGT, 0, 0, 1, 2, 32, 16, 16),  # WGT[0] = w1, WGT[1] = w2 (lane r*4+c)
        _load(Buffer.INP, 0, 64, 1, 12, 48, 4, 4, push_next=True),  # INP[0:12] = x
        # acc[4*o + i] = x[o + 2*i] @ w1          for o < 2, i < 3
        _gemm(reset=1, wgt_addr=0, inp_base=0, **loop, pop_prev=True),
        # acc[4*o + i] += x[6 + o + 2*i] @ w2
        _gemm(reset=0, wgt_addr=1, inp_base=6, **loop),
    ]
    dpu, activity = _run(stream, dram)
    expected = np.zeros((8, 4), np.int64)
    xs, a, b = x.astype(np.int64), w1.astype(np.int64), w2.astype(np.int64)
    for o in range(2):
        for i in range(3):
            expected[4 * o + i] = xs[o + 2 * i] @ a + xs[6 + o + 2 * i] @ b
    np.testing.assert_array_equal(dpu.acc[:8], expected)
    assert activity.mac_cycles == 12 and activity.macs == 12 * 16


# --- POST -------------------------------------------------------------------------------------


def _post_run(acc: list[list[int]], par: bytes, post: isa.Instr) -> np.ndarray:
    dram = _dram(128, {0: _i8(acc), 64: par})
    stream = [
        _load(Buffer.ACC, 0, 0, 1, len(acc), 0, 4, 4),
        _load(Buffer.PAR, 0, 64, 1, 1, 0, 48, 48, push_next=True),
        post.with_flags(pop_prev=True),
    ]
    dpu, _ = _run(stream, dram)
    return dpu.out


def test_post_rounds_half_to_even() -> None:
    # mult 1, shift 1: v / 2.
    out = _post_run(
        [[5, 7, -5, -7], [3, -3, 1, -1]], _par([0] * 4, [1] * 4, [1] * 4), _post(0, 6, 2, 0)
    )
    # 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4 | 1.5 -> 2, -1.5 -> -2, 0.5 -> 0, -0.5 -> 0
    np.testing.assert_array_equal(out[6:8], [[2, 4, -2, -4], [2, -2, 0, 0]])


def test_post_bias_multiplier_zero_point_clamp_and_wrap() -> None:
    par = _par([1000, -1000, 5, 2**31 - 1], [3, 3, 2**22, 1], [4, 4, 23, 31])
    post = _post(0, 0, 1, 0, zero_point=-10, clamp_lo=-100, clamp_hi=100)
    out = _post_run([[100, -100, 10, 127]], par, post)
    # lane 0: (100 + 1000) * 3 / 16 = 206.25 -> 206; - 10 = 196 -> clamp_hi 100
    # lane 1: -206.25 -> -206; - 10 = -216 -> clamp_lo -100
    # lane 2: (10 + 5) * 2^22 / 2^23 = 7.5 -> 8 (tie to even); - 10 = -2
    # lane 3: 127 + (2^31 - 1) wraps to -2^31 + 126; / 2^31 = -0.99999994 -> -1; - 10 = -11
    np.testing.assert_array_equal(out[0], [100, -100, -2, -11])


def _half_even(num: int, shift: int) -> int:
    """num / 2^shift rounded to nearest, ties to even, in exact integer arithmetic."""
    q, r = divmod(num, 1 << shift)
    half = 1 << shift >> 1
    return q + (shift > 0 and (r > half or (r == half and q % 2 == 1)))


def test_post_with_products_past_float64_precision() -> None:
    # |v * mult| beyond 2^53: the exact value is needed (the golden model's integer path).
    bias = [2**31 - 200, -(2**31) + 50, 2**30 + 12345, -123456789]
    mult = [2**23 - 1, 2**23 - 3, 2**22 + 7, 2**23 - 5]
    shift = [48, 48, 46, 43]
    acc = [5, -7, 100, -3]
    out = _post_run([acc], _par(bias, mult, shift), _post(0, 0, 1, 0))
    expected = []
    for a, b, m, sh in zip(acc, bias, mult, shift, strict=True):
        v = (a + b + 2**31) % 2**32 - 2**31  # int32 wrap
        expected.append(max(-128, min(127, _half_even(v * m, sh))))
    assert max(abs(a + b) * m for a, b, m in zip(acc, bias, mult, strict=True)) > 2**53
    np.testing.assert_array_equal(out[0], expected)


def test_post_uses_the_low_23_bits_of_mult_unsigned() -> None:
    # The bits of mult above POST_MULT_BITS are ignored, and the rest is unsigned.
    assert isa.POST_MULT_BITS == 23
    bias = [0, 0, 0, 0]
    mult = [3 + 2**23, -1, -(2**31) + 5, 2**31 - 1]  # used: 3, 2^23 - 1, 5, 2^23 - 1
    shift = [0, 20, 1, 30]
    acc = [7, 3, -9, -100]
    out = _post_run([acc], _par(bias, mult, shift), _post(0, 0, 1, 0))
    used = [3, 2**23 - 1, 5, 2**23 - 1]
    expected = [_half_even(a * m, sh) for a, m, sh in zip(acc, used, shift, strict=True)]
    # 7 * 3 = 21; 3 * (2^23 - 1) / 2^20 = 23.99...; -45 / 2 = -22.5 -> -22 (tie to even);
    # -100 * (2^23 - 1) / 2^30 = -0.78... (with all 32 bits of mult, every lane differs)
    assert expected == [21, 24, -22, -1]
    np.testing.assert_array_equal(out[0], expected)


# --- ALU --------------------------------------------------------------------------------------


def test_alu_operations() -> None:
    acc = [
        [1, -2, 3, -4],  # e0
        [5, -6, -7, 8],  # e1
        [6, -9, -1, 2],  # e2: MAX destination
        [10, 20, 30, 40],  # e3: ADD destination
        [0, 0, 0, 0],  # e4: MULI destination
        [0, 0, 0, 0],  # e5: ADDI destination
        [9, 9, 9, 9],  # e6: MOV destination
        [1, 1, 1, 1],  # e7: reduction destination
    ]
    dram = _dram(64, {0: _i8(acc)})
    stream = [
        _load(Buffer.ACC, 0, 0, 1, 8, 0, 4, 4, push_next=True),
        _alu(AluOp.MAX, dst_base=2, src_base=1, pop_prev=True),
        _alu(AluOp.ADD, dst_base=3, src_base=1),
        _alu(AluOp.MULI, dst_base=4, src_base=1, imm=-(2**24)),
        _alu(AluOp.ADDI, dst_base=5, src_base=0, imm=-100),
        _alu(AluOp.MOV, dst_base=6, src_base=1),
        # dst stride 0, src e0, e1: e7 = e7 + e0 + e1, iterations in order
        _alu(AluOp.ADD, dst_base=7, src_base=0, n_inner=2, src_inner_stride=1),
    ]
    dpu, _ = _run(stream, dram)
    expected = [
        [1, -2, 3, -4],
        [5, -6, -7, 8],
        [6, -6, -1, 8],  # max(e2, e1)
        [15, 14, 23, 48],  # e3 + e1
        # e1 * -2^24 (MULI's most negative multiplier)
        [-5 * 2**24, 6 * 2**24, 7 * 2**24, -8 * 2**24],
        [-99, -102, -97, -104],  # e0 - 100
        [5, -6, -7, 8],  # e1
        [7, -7, -3, 5],  # 1 + e0 + e1
    ]
    np.testing.assert_array_equal(dpu.acc[:8], np.array(expected, np.int64))


# --- STORE ------------------------------------------------------------------------------------


def test_store_writes_strided_bytes() -> None:
    acc = [[1, 2, 3, 4], [-1, -2, -3, -4], [100, 101, 102, 103], [-128, 127, 0, 9]]
    dram = _dram(192, {0: _i8(acc), 64: _par([0] * 4, [1] * 4, [0] * 4)})
    dram[128:] = 0xAA
    stream = [
        _load(Buffer.ACC, 0, 0, 1, 4, 0, 4, 4),
        _load(Buffer.PAR, 0, 64, 1, 1, 0, 48, 48, push_next=True),
        _post(0, 0, 4, 0, pop_prev=True, push_next=True),  # OUT = ACC (mult 1, shift 0)
        # 2 rows of 2 entries, rows 16 bytes apart, entries 5 apart, first 3 lanes each
        isa.make(
            Opcode.STORE,
            sram_base=0,
            dram_offset=128,
            y_size=2,
            x_size=2,
            y_stride=16,
            x_stride=5,
            elem_bytes=3,
            pop_prev=True,
        ),
    ]
    _run(stream, dram)
    expected = np.full(64, 0xAA, np.uint8)
    expected[0:3] = [1, 2, 3]  # OUT[0] at 128
    expected[5:8] = [255, 254, 253]  # OUT[1] at 133: -1, -2, -3
    expected[16:19] = [100, 101, 102]  # OUT[2] at 144
    expected[21:24] = [128, 127, 0]  # OUT[3] at 149: -128, 127, 0
    np.testing.assert_array_equal(dram[128:], expected)


# --- schedule and timing ----------------------------------------------------------------------


def test_stream_without_post_runs() -> None:
    """A stream of one LOAD and END is legal (it passes the checker's rules) and must run."""
    dram = _dram(64, {0: _i8([1, 2, 3, 4])})
    dpu, _ = _run([_load(Buffer.INP, 0, 0, 1, 1, 0, 4, 4)], dram)
    np.testing.assert_array_equal(dpu.inp[0], [1, 2, 3, 4])


def _single_gemm(n_outer: int, n_inner: int) -> isa.Instr:
    return _gemm(
        reset=1,
        n_outer=n_outer,
        n_inner=n_inner,
        inp_outer_stride=n_inner,
        inp_inner_stride=1,
        acc_outer_stride=n_inner,
        acc_inner_stride=1,
    )


def test_single_gemm_cycle_count() -> None:
    """The cycle model of compiler/timing.py, worked out by hand for [GEMM, END] on sim-small.

    - Fetch: an instruction is 32 bytes = 4 beats of the 8-byte bus; the first fetch waits
      the DRAM latency (16), so the GEMM dispatches at 16 + 4 = 20 and starts there (the
      compute engine is idle and it pops no token).
    - GEMM: n_outer*n_inner + rows + cols = 15 + 4 + 4 = 23 cycles: 20 -> 43.
    - END: starts when every engine is idle, at 43 (its own fetch, done at 24, is earlier),
      and takes 1 cycle.
    Total: 16 + 4 + (3*5 + 4 + 4) + 1 = 44.
    """
    _, activity = _run([_single_gemm(3, 5)], np.zeros(64, np.uint8))
    assert activity.cycles == 16 + 4 + (3 * 5 + 4 + 4) + 1 == 44
    assert activity.busy == {"load": 0, "compute": 23, "store": 0}


@pytest.mark.parametrize("n_outer,n_inner", [(1, 1), (3, 5), (4, 16)])
def test_single_gemm_then_empty_post_cycle_count(n_outer: int, n_inner: int) -> None:
    """[GEMM, POST of one block of count 0, END]: as above, plus the POST after the GEMM on
    the compute engine: the block's PAR read (1 cycle, as for count 1) + POST_PIPELINE (the
    ACC read and the 4 requantization stages) = 1 + 5 cycles.
    Total 16 + 4 + (n + 8) + 6 + 1 = 35 + n."""
    n = n_outer * n_inner
    stream = [_single_gemm(n_outer, n_inner), _post(0, 0, 0, 0)]
    _, activity = _run(stream, np.zeros(64, np.uint8))
    assert activity.cycles == 16 + 4 + (n + 4 + 4) + (1 + 5) + 1 == 35 + n
    assert activity.busy == {"load": 0, "compute": n + 8 + 6, "store": 0}


def test_back_to_back_gemms_cycle_count() -> None:
    """[GEMM of 15 vectors, GEMM of 2, GEMM of 15, END] on sim-small (rows = cols = 4), by
    hand. Fetch dispatches them at 20, 24 and 28 (END at 32).
    - GEMM 1 starts at 20, done at 20 + 15 + 8 = 43; the next GEMM may start when its vectors
      have streamed and no earlier than rows after it: max(20 + 15, 20 + 4) = 35.
    - GEMM 2 starts at 35 (draining GEMM 1 beside it), done at 35 + 2 + 8 = 45; the next may
      start at max(35 + 2, 35 + 4) = 39: one weight-tile preload of 4 rows at a time.
    - GEMM 3 starts at 39, done at 39 + 15 + 8 = 62. END: 62 + 1 = 63."""
    _, activity = _run(
        [_single_gemm(3, 5), _single_gemm(1, 2), _single_gemm(3, 5)], np.zeros(64, np.uint8)
    )
    assert activity.cycles == 63
    assert activity.busy == {"load": 0, "compute": 62 - 20, "store": 0}


@pytest.mark.parametrize("acc_base,cycles", [(5, 50), (9, 47)])
def test_gemm_beside_post_cycle_count(acc_base: int, cycles: int) -> None:
    """[GEMM of 4 vectors into ACC 0..3, POST of ACC 0..7, GEMM of 1 vector into ACC
    `acc_base`, END] on sim-small, by hand. Dispatch at 20, 24, 28 (END 32).
    - GEMM 1: 20 -> 20 + 4 + 8 = 32.
    - POST starts when GEMM 1 has finished, 32; 8 entries + 5 = 13 cycles: done at 45. Its
      ACC reads are in cycles 33 .. 40.
    - GEMM 2 starts one cycle after the POST, 33, beside it. Into ACC 9, outside what the POST
      reads: its vector issues in cycle 34, done at 34 + 8 = 42; it finishes after the POST
      (in order, one per cycle): 46. END: 47.
      Into ACC 5, which the POST reads in cycle 38: the vector waits until the POST has
      issued all its reads (its one block, up to cycle 40) and issues in 41; done at
      41 + 8 = 49. END: 50."""
    gemm = _gemm(
        reset=1, acc_base=acc_base, n_outer=1, n_inner=1, inp_outer_stride=0, inp_inner_stride=0
    )
    stream = [_single_gemm(1, 4), _post(0, 0, 8, 0), gemm]
    _, activity = _run(stream, np.zeros(64, np.uint8))
    assert activity.cycles == cycles


def test_instructions_without_iterations_write_nothing() -> None:
    """A GEMM of no iterations (even naming a WGT entry out of range, which it never reads as
    data) and a POST of count 0 change no buffer and no DRAM byte (docs/isa.md: their loops
    are empty); the activity still counts what the hardware reads (WGT once, PAR per block)."""
    dram = np.arange(64, dtype=np.uint8)
    empty_gemm = instr(Opcode.GEMM, reset=1, wgt_addr=CFG.wgt_entries + 5, n_outer=0, n_inner=3)
    empty_post = _post(0, 0, 0, 0, blocks=2)
    dpu, activity = _run([empty_gemm, empty_post], dram.copy())
    assert not dpu.acc.any() and not dpu.out.any()
    assert activity.buffer_reads["wgt"] == 1 and activity.buffer_reads["par"] == 2
    assert activity.buffer_writes["acc"] == 0 and activity.buffer_writes["out"] == 0


def test_muli_uses_the_low_25_bits_of_imm_signed() -> None:
    """MULI multiplies by imm's low 25 bits, sign-extended (docs/isa.md): bits above are
    ignored, bit 24 is the sign, and the product wraps to int32. Hand-computed: 3 * (2^24 - 1),
    3 * -2^24, -5 * -1, and (3 * (2^24 - 1)) * 256 = 3 * 2^32 - 768 -> -768."""
    acc = np.array([[3] * CFG.cols, [-5] * CFG.cols], np.int32)
    dram = np.zeros(64, np.uint8)
    dram[: acc.size] = acc[:, : CFG.cols].astype(np.int8).ravel().view(np.uint8)
    load = instr(
        Opcode.LOAD,
        buffer=Buffer.ACC,
        y_size=1,
        x_size=2,
        x_stride=CFG.cols,
        elem_bytes=CFG.cols,
        push_next=True,
    )
    cases = [
        (0, 0x7E00_0000 | (2**24 - 1), 3 * (2**24 - 1)),  # bits 25..30 ignored
        (0, 2**24, 3 * -(2**24)),  # bit 24 alone: -2^24
        (1, -1, 5),
        (4, 256 - 2**31, -768),  # the first result times 256 (bit 31 ignored), wrapped
    ]
    stream = [load]
    for k, (src, imm, _) in enumerate(cases):
        stream.append(
            instr(
                Opcode.ALU,
                alu_op=AluOp.MULI,
                dst_base=4 + k,
                src_base=src,
                n_outer=1,
                n_inner=1,
                imm=imm,
                pop_prev=k == 0,
            )
        )
    dpu, _ = _run(stream, dram)
    for k, (_, _, want) in enumerate(cases):
        assert (dpu.acc[4 + k] == want).all(), (k, dpu.acc[4 + k], want)
