import pytest

from synperf.cases import parse_case
from synperf.demand import PIPES, kernel_demand
from synperf.kernels import families


def demand(case_obj, gpu):
    case = parse_case(case_obj)
    return kernel_demand(families()[case.family].decompose(case.call, gpu), gpu, case.cache)


def main_launch(d):
    return max(d.launches, key=lambda ld: ld.row("tensor").gpu_demand)


def test_gemm_flops_and_bytes_are_exact_when_tiles_divide(h100):
    d = demand({"family": "gemm", "m": 4096, "n": 4096, "k": 4096}, h100)
    main = main_launch(d)
    assert main.row("tensor").gpu_demand == pytest.approx(2 * 4096 ** 3)
    # cold: A and B read once, C written once (bf16); of C, the share that is still dirty in L2
    # when the kernel ends (the written part of the last L2-sized stretch of traffic) goes later
    reads, writes = 2 * (2 * 4096 * 4096), 2 * 4096 * 4096
    still_in_l2 = writes * h100.l2_size_mb * 1e6 / (reads + writes)
    assert main.launch.dram_read_bytes + main.launch.dram_write_bytes == pytest.approx(reads + writes)
    assert main.row("dram").gpu_demand == pytest.approx(reads + writes - still_in_l2)


def test_outputs_that_fit_in_l2_are_written_back_after_the_kernel(h100):
    """Streaming kernels: a small output stays dirty in L2 (DRAM sees its reads only); a large one
    reaches DRAM except for the last L2-sized stretch of the stream."""
    small = main_launch(demand({"family": "silu_and_mul", "tokens": 64, "intermediate": 4096}, h100))
    assert small.row("dram").gpu_demand == pytest.approx(small.launch.dram_read_bytes)
    big = main_launch(demand({"family": "silu_and_mul", "tokens": 32768, "intermediate": 14336}, h100))
    read, write = big.launch.dram_read_bytes, big.launch.dram_write_bytes
    assert read + write > 4 * h100.l2_size_mb * 1e6
    assert big.row("dram").gpu_demand == pytest.approx(read + write * (1 - h100.l2_size_mb * 1e6 / (read + write)))


def test_ceiling_is_the_largest_pipe_and_units_hold(h100):
    d = demand({"family": "gemm", "m": 8192, "n": 8192, "k": 8192}, h100)
    ld = main_launch(d)
    # fixed part: launch floor + one DRAM round trip, then the slowest pipe
    assert ld.fixed_us == pytest.approx(h100.kernel_launch_floor_us + h100.dram_latency_ns * 1e-3)
    assert ld.ceiling_us == pytest.approx(ld.fixed_us + max(r.ideal_us for r in ld.rows))
    assert d.ceiling_us == pytest.approx(sum(x.ceiling_us for x in d.launches))
    tensor = ld.row("tensor")
    # the FLOP issued: the call's, plus the padding of edge tiles when cuBLAS's tile does not divide
    assert 2 * 8192 ** 3 <= tensor.gpu_demand <= 2 * 8192 ** 3 * 1.1
    # GPU-wide tensor time = FLOP / (SMs x rate x clock), in microseconds
    expected = tensor.gpu_demand / (132 * 4096 * h100.clock_hz) * 1e6
    assert tensor.gpu_us == pytest.approx(expected)
    assert d.bound == "tensor"
    assert [r.pipe for r in ld.rows] == list(PIPES)


def test_warm_cache_removes_dram_traffic_that_fits_in_l2(h100):
    cold = demand({"family": "rmsnorm", "tokens": 64, "hidden": 4096, "library": "flashinfer"}, h100)
    warm = demand({"family": "rmsnorm", "tokens": 64, "hidden": 4096, "library": "flashinfer", "cache": "warm"}, h100)
    assert cold.launches[0].row("dram").gpu_demand > 0
    assert warm.launches[0].row("dram").gpu_demand == 0
    assert warm.ceiling_us <= cold.ceiling_us


def test_decode_gemm_is_memory_bound_and_large_gemm_compute_bound(h100):
    assert demand({"family": "gemm", "m": 1, "n": 4096, "k": 4096}, h100).bound in ("dram", "latency")
    assert demand({"family": "gemm", "m": 16384, "n": 16384, "k": 8192}, h100).bound == "tensor"


def test_fp8_uses_the_fp8_tensor_rate(h100):
    bf16 = main_launch(demand({"family": "gemm", "m": 8192, "n": 8192, "k": 8192}, h100)).row("tensor")
    fp8 = main_launch(demand({"family": "gemm", "m": 8192, "n": 8192, "k": 8192, "dtype": "fp8_e4m3",
                              "library": "cublaslt_scaled_mm"}, h100)).row("tensor")
    assert fp8.sm_us == pytest.approx(bf16.sm_us / 2, rel=0.15)


def test_gpu_without_fp8_is_refused(a100):
    from synperf.errors import SpecError
    with pytest.raises(SpecError, match="fp8"):
        demand({"family": "gemm", "m": 64, "n": 64, "k": 64, "dtype": "fp8_e4m3", "library": "cublaslt_scaled_mm"}, a100)


def test_dirty_l2_keeps_the_ceiling_and_prices_the_write_back_apart(h100):
    """A dirty L2 moves no compulsory byte: the ceiling is the cold one. The write-back the call may
    pay is at most the whole L2 at DRAM bandwidth, and no more than the bytes the call moves."""
    small = {"family": "rmsnorm", "tokens": 4, "hidden": 4096}
    big = {"family": "gemm", "m": 64, "n": 8192, "k": 8192}
    for case in (small, big):
        cold, dirty = demand(case, h100), demand(dict(case, cache="cold_dirty"), h100)
        assert dirty.ceiling_us == cold.ceiling_us and cold.dirty_writeback_us == 0
        moved = sum(ld.row("dram").gpu_demand for ld in cold.launches)
        expected = min(moved, h100.l2_size_mb * 1e6) / (h100.dram_bandwidth_gb_s * 1e9) * 1e6
        assert dirty.dirty_writeback_us == pytest.approx(expected)
    assert demand(dict(big, cache="cold_dirty"), h100).dirty_writeback_us == pytest.approx(
        h100.l2_size_mb * 1e6 / (h100.dram_bandwidth_gb_s * 1e9) * 1e6)   # 128 MB of weights: the whole L2
