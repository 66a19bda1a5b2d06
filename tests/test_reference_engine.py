"""The reference engine's CPU-side logic, the collectives benchmark's plan and the ncu output parser
(the GPU paths ran on an H200; their outputs are data/h200-system/*.parquet)."""

import json
from pathlib import Path

import pytest

from synperf.profile.comm_bench import iterations, sizes
from synperf.profile.counters import parse_raw_csv, select_metrics, split_by_marker
from synperf.profile.engine import MAX_BATCH_TOKENS, PassClocks, batch_grid, kernel_class, slot_layout
from synperf.workloads.model import load_model, with_layers

NCU_SAMPLE = Path(__file__).parent / "data" / "ncu_raw_sample.csv"


def test_batch_grid_respects_the_token_cap_and_is_stable():
    grid = batch_grid()
    assert grid == batch_grid()                       # fixed shuffle
    assert all(sum(g) <= MAX_BATCH_TOKENS for g in grid)
    assert [8192] * 16 not in grid and [2048] * 64 not in grid       # 131k tokens: over the cap
    assert [512] * 64 in grid and [8192] in grid
    assert len({tuple(g) for g in grid}) == len(grid)
    assert batch_grid(batches=(2,), prompts=(100, 200), max_tokens=300) == [[100, 100]]


class _FakeNvml:
    """NVML's two calls PassClocks makes: the SM clock falls 10 MHz a sample, the power is 700 W."""
    NVML_CLOCK_SM = 1

    def __init__(self):
        self.clock = 1980

    def nvmlDeviceGetClockInfo(self, handle, which):
        assert handle == "gpu0" and which == self.NVML_CLOCK_SM
        self.clock -= 10
        return self.clock

    def nvmlDeviceGetPowerUsage(self, handle):
        return 700_000          # milliwatts


def test_pass_clocks_average_what_nvml_reports_while_the_passes_run():
    import time

    nvml = _FakeNvml()
    with PassClocks(nvml, "gpu0", interval_s=0.001) as clocks:
        time.sleep(0.05)
    mhz, watts = clocks.means()
    n = len(clocks.samples)
    assert n >= 5 and watts == 700.0
    assert mhz == pytest.approx(1980 - 10 * (n + 1) / 2, abs=0.1)
    taken = len(clocks.samples)
    time.sleep(0.01)
    assert len(clocks.samples) == taken          # the thread stopped with the block
    with PassClocks(None, None) as silent:       # no NVML: nothing recorded, no thread
        pass
    assert silent.means() == (None, None)


def test_slot_layout_gives_each_request_its_own_run():
    base = slot_layout([3, 5, 2], output_len=4)
    assert base == [0, 7, 16]
    for (start, prompt), nxt in zip(zip(base, [3, 5, 2]), base[1:] + [None]):
        if nxt is not None:
            assert start + prompt + 4 == nxt


@pytest.mark.parametrize("name, family", [
    ("void flashinfer::PrefillWithKVCacheKernel<flashinfer::CollectiveMainloop<cutlass::bfloat16_t>>", "attention"),
    ("void flashinfer::BatchDecodeWithPagedKVCacheKernel<(flashinfer::PosEncodingMode)0, 2u>", "attention"),
    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT", "gemm"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "all_reduce"),
    ("void norm::FusedAddRMSNormKernel<8u, __nv_bfloat16>", "rmsnorm"),
    ("synperf_fused_moe_kernel", "moe"),
    ("void at::native::index_elementwise_kernel<128, 4>", "other"),
])
def test_kernel_names_map_to_the_priced_family(name, family):
    assert kernel_class(name) == family


def test_with_layers_keeps_the_layer_mix():
    moe = with_layers(load_model("qwen3-30b-a3b"), 8)
    assert (moe.num_layers, moe.num_moe_layers, moe.num_dense_layers) == (8, 8, 0)
    dense = with_layers(load_model("llama-3.1-8b"), 8)
    assert (dense.num_layers, dense.num_moe_layers) == (8, 0)
    full = load_model("llama-3.1-8b")
    assert with_layers(full, None) is full and with_layers(full, 64) is full


def test_comm_bench_sizes_and_repetitions():
    s = sizes()
    assert s[0] == 1024 and s[-1] == 1 << 30 and len(s) == 21
    assert iterations(1024) == 200 and iterations(1 << 30) == 5
    assert all(iterations(a) >= iterations(b) for a, b in zip(s, s[1:]))


def test_ncu_raw_output_splits_into_cases():
    kernels = parse_raw_csv(NCU_SAMPLE.read_text())
    assert len(kernels) == 11
    groups = split_by_marker(kernels)
    assert [len(g) for g in groups.values()] == [1, 1, 2, 1, 1]   # SDPA split-KV: main kernel + combine
    first = groups[0][0]
    assert first["Kernel Name"].startswith("nvjet_sm90")
    assert float(first["dram__bytes_read.sum"].replace(",", "")) > 0
    assert parse_raw_csv("==PROF== nothing profiled\n") == []


def test_metric_selection_reads_only_what_ncu_knows():
    known = {"sm__inst_executed_pipe_tensor_op_gmma", "dram__bytes_read", "sm__ops_path_tensor_src_fp8",
             "gpu__time_duration", "sm__ops_path_tensor_src_int8"}
    chosen = select_metrics(known)
    assert "sm__inst_executed_pipe_tensor_op_gmma.max" in chosen and "dram__bytes_read.sum" in chosen
    assert "sm__ops_path_tensor_src_fp8.sum" in chosen
    assert not any("int8" in m or "hmma" in m or "lts__" in m for m in chosen)
    assert "launch__grid_size" in chosen


def test_committed_engine_rows_are_complete():
    pd = pytest.importorskip("pandas")
    d = pd.read_parquet(Path(__file__).parents[1] / "data" / "h200-system" / "e2e_reference.parquet")
    assert set(d["tp"]) == {1, 2} and set(d["pp"]) == {1, 2} and not ((d["tp"] > 1) & (d["pp"] > 1)).any()
    assert {"llama-3.1-8b", "phi-4", "qwen3-8b", "qwen3-30b-a3b"} <= set(d["model"])
    assert d["cuda_graph"].all() and (d["prefill_ms"] > 0).all()
    for steps, median, n in zip(d["decode_steps_ms"], d["decode_step_median_ms"], d["output_len"]):
        steps = json.loads(steps)
        assert len(steps) == n - 1 and min(steps) <= median <= max(steps)


def test_tp2_rows_are_timed_ten_times_and_the_median_lies_within_the_reps():
    """The TP=2 rows were re-measured with the rank barrier and 10 timed prefills; the barrier's A/B
    rows are kept apart, and without the barrier the same small prefills took longer."""
    pd = pytest.importorskip("pandas")
    here = Path(__file__).parents[1] / "data" / "h200-system"
    d = pd.read_parquet(here / "e2e_reference.parquet")
    tp2 = d[(d["tp"] == 2) & (d["pp"] == 1)]
    assert len(tp2) == 60 and (tp2["prefill_reps"] == 10).all()
    assert ((tp2["prefill_min_ms"] <= tp2["prefill_ms"]) & (tp2["prefill_ms"] <= tp2["prefill_max_ms"])).all()
    check = pd.read_parquet(here / "e2e_host_check.parquet")
    free = check[check["session"].str.contains("without the rank barrier")]
    paired = free.merge(tp2, on=["model", "prompt_lens"], suffixes=("_free", "_barrier"))
    small = paired[paired["prompt_tokens_free"] <= 512]
    assert len(small) >= 4 and small["prefill_ms_free"].median() > small["prefill_ms_barrier"].median()


def test_engine_rejects_fewer_than_one_timed_prefill(capsys):
    from synperf.profile.engine import main

    with pytest.raises(SystemExit) as exc:
        main(["--models", "llama-3.1-8b", "--out", "x.jsonl", "--prefill-reps", "0"])
    assert exc.value.code == 2 and "--prefill-reps" in capsys.readouterr().err


def test_pipeline_stages_link_neighbours_and_return_ids_to_the_first():
    from synperf.profile.engine import Stages

    # TP 2 x PP 2: ranks 0,1 are stage 0, ranks 2,3 stage 1
    assert Stages.of(0, 2, 2) == Stages(2, None, 2, 0, 2)
    assert Stages.of(3, 2, 2) == Stages(2, 1, None, 1, 3)
    middle = Stages.of(1, 1, 3)
    assert (middle.prev, middle.next, middle.first, middle.last) == (0, 2, 0, 2)
    assert Stages.of(0, 4, 1) == Stages()


def test_send_recv_kernels_are_not_counted_as_all_reduce():
    assert kernel_class("ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)") == "send_recv"
    assert kernel_class("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)") == "all_reduce"


def test_host_cost_per_kernel_is_alike_for_moe_and_dense_calls():
    """The committed host-cost measurements (profile.host_cost on an H200 host): an MoE layer's
    routing and expert calls cost the host about what a dense layer's library calls cost per
    kernel, which is why one issue rate per launch serves both (docs/reference-engine.md)."""
    pd = pytest.importorskip("pandas")
    rows = pd.read_parquet(Path(__file__).resolve().parents[1] / "data" / "h200-system" / "host_cost.parquet")
    assert (rows.host_us > 0).all() and (rows.kernels >= 1).all() and (rows.host_us_min <= rows.host_us).all()
    dense_layer = ["flashinfer_fused_add_rmsnorm", "linear", "flashinfer_rope", "kv_cache_write",
                   "flashinfer_fa3_prefill_run", "linear", "flashinfer_fused_add_rmsnorm", "linear",
                   "flashinfer_silu_and_mul", "linear"]
    for _, at in rows.groupby("shape_tokens"):
        cost = at.set_index("kind")
        dense = sum(cost.host_us[k] for k in dense_layer) / sum(cost.kernels[k] for k in dense_layer)
        moe = (cost.host_us["moe_routing"] + cost.host_us["moe_workspace_full"]) \
            / (cost.kernels["moe_routing"] + cost.kernels["moe_workspace_full"])
        assert 0.7 < moe / dense < 1.4


def test_power_census_calls_are_cases_synperf_prices():
    """The census runs on the GPU only and skips a call it cannot build: every call must be a case
    the profiler normalises and synperf parses, or its row would silently go missing."""
    from synperf.cases import parse_case
    from synperf.profile.cases import normalize_case
    from synperf.profile.power_census import CASES

    assert len({json.dumps(c, sort_keys=True) for c in CASES}) == len(CASES) >= 10
    for case in CASES:
        assert parse_case(normalize_case(dict(case))).family == case["family"]
