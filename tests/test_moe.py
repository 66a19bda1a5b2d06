import math

import numpy as np
import pytest

from synperf.demand import kernel_demand
from synperf.errors import InputError
from synperf.gpu import resolve_gpu
from synperf.kernels import families, moe
from synperf.tasks import L2, SHARED, TENSOR

LIB = "triton_fused_moe"


def expected_active_blocks_random(tokens: int, num_experts: int, topk: int, block_m: int) -> float:
    """Oracle: expected BLOCK_SIZE_M blocks when each token picks topk distinct experts uniformly at
    random (an expert's pair count is Binomial(tokens, topk / E), ceil(count / BM) blocks)."""
    p = topk / num_experts
    if p >= 1.0:
        return float(num_experts * math.ceil(tokens / block_m))
    counts = np.arange(tokens + 1)
    log_pmf = np.array([math.lgamma(tokens + 1.0) - math.lgamma(c + 1.0) - math.lgamma(tokens - c + 1.0)
                        for c in counts]) + counts * math.log(p) + (tokens - counts) * math.log1p(-p)
    return float(num_experts * (np.exp(log_pmf) * np.ceil(counts / block_m)).sum())


def cfg(bm=16, bn=32, bk=64, gm=1, warps=4, stages=3):
    return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk, "GROUP_SIZE_M": gm,
            "num_warps": warps, "num_stages": stages}


def call(tokens=4, hidden=128, intermediate=64, e=8, topk=2, stage="w13", config=None, dtype="bf16",
         routing="balanced", engine=None):
    # the by-hand layouts below are round-robin ones; the random layout has its own tests
    obj = {"tokens": tokens, "hidden": hidden, "intermediate": intermediate, "num_experts": e,
           "topk": topk, "stage": stage, "routing": routing}
    if engine is not None:
        obj["engine"] = engine
    if config is not None:
        obj["config"] = config
    return moe.parse(obj, dtype, LIB)


def test_family_is_registered():
    assert families()["moe"] is moe
    assert moe.LIBRARIES == (LIB,) and moe.DTYPES == ("bf16", "fp16")


# ---------------------------------------------------------------- padding and grid, by hand

def test_padding_tokens4_e8_top2_bm16():
    # P = 8 pairs, one per expert -> 8 blocks of 1 valid row; EM = 8 + 8*15 = 128 (P >= E: no cap).
    p = moe.padding(4, 8, 2, 16, "balanced")
    assert p.counts.tolist() == [1] * 8
    assert (p.em, p.grid_m, p.active_m, p.padded_total, p.exit_m) == (128, 8, 8, 128, 0)
    assert p.block_rows.tolist() == [1] * 8


def test_padding_cap_when_fewer_pairs_than_experts():
    # P = 6 < E = 8: EM = min(6 + 8*15, 6*16) = 96 -> 6 M blocks, all active (6 experts, 1 pair each).
    p = moe.padding(3, 8, 2, 16, "balanced")
    assert (p.em, p.grid_m, p.active_m, p.exit_m) == (96, 6, 6, 0)
    assert moe.max_padded_len(6, 8, 16) == 96


def test_padding_with_early_exit_blocks():
    # P = 80: 10 per expert -> 8 active blocks; EM = 80 + 120 = 200 -> 13 M blocks, 5 exit early.
    p = moe.padding(40, 8, 2, 16, "balanced")
    assert (p.em, p.grid_m, p.active_m, p.padded_total, p.exit_m) == (200, 13, 8, 128, 5)
    # P = 200: 25 per expert -> blocks of 16 and 9 rows; EM = 320 -> 20 M blocks, 4 exit.
    p = moe.padding(100, 8, 2, 16, "balanced")
    assert (p.grid_m, p.active_m, p.exit_m) == (20, 16, 4)
    assert p.block_rows.tolist() == [16, 9] * 8


def test_padding_uneven_round_robin():
    # P = 26 over 4 experts: round robin gives 7, 7, 6, 6.
    p = moe.padding(13, 4, 2, 16, "balanced")
    assert p.counts.tolist() == [7, 7, 6, 6]
    assert p.block_rows.tolist() == [7, 7, 6, 6]
    assert p.padded_total == 64


def test_random_layout_is_a_typical_draw():
    """Binomial quantiles: the counts sum to the pairs, and their blocks match the expected block
    count under uniform random routing."""
    for tokens, e, topk, bm in ((405, 128, 4, 16), (7372, 64, 6, 16), (5, 128, 4, 64), (32768, 8, 2, 64)):
        counts = np.array(moe.random_expert_counts(tokens, e, topk))
        assert counts.sum() == tokens * topk and (np.diff(counts) <= 0).all()
        p = moe.padding(tokens, e, topk, bm)
        expected = expected_active_blocks_random(tokens, e, topk, bm)
        assert abs(p.active_m - expected) <= max(1.0, 1e-3 * expected)
    # T = 4, E = 8, top-2: Binomial(4, 1/4) quantiles 0,0,0,1,1,1,2,2 (+1 to sum to 8): 5 experts hit
    assert moe.random_expert_counts(4, 8, 2) == (3, 2, 1, 1, 1, 0, 0, 0)


def test_random_layout_oracle_corner_cases():
    # all experts hit whatever the routing: the expectation is the balanced count
    assert expected_active_blocks_random(128, 32, 6, 64) == pytest.approx(32.0, rel=1e-6)
    assert expected_active_blocks_random(10, 4, 4, 16) == 4.0


def test_routing_field_and_its_variant():
    assert moe.parse({"tokens": 4, "hidden": 128, "intermediate": 64, "num_experts": 8, "topk": 2},
                     "bf16", LIB).routing == "random"
    assert moe.variant(call()) == "routing_balanced"
    with pytest.raises(InputError, match="routing"):
        call(routing="skewed")


def test_w13_grid_and_classes_small(h100):
    # tokens=4, E=8, topk=2, BM=16, BN=32: N = 2*64 = 128 -> 4 N blocks; 8 M blocks -> 32 CTAs.
    (launch,) = moe.decompose(call(config=cfg()), h100)
    assert launch.num_tasks == 8 * 4
    assert launch.counts.tolist() == [32]
    # K = hidden = 128 = 2 x BK: FLOP per CTA = 2*16*32*128.
    assert launch.demand[0, TENSOR] == 2 * 16 * 32 * 128
    # l2: 1 gathered A row + 32x128 weight tile + 1x32 store (bf16) + ids (16*4 + 4 + 4)
    assert launch.demand[0, L2] == 1 * 128 * 2 + 32 * 128 * 2 + 1 * 32 * 2 + 16 * 4 + 8
    assert launch.resources.threads == 128
    # BM=16 takes the mma path: num_stages - 1 = 2 tile copies, as Triton allocated on the H200
    assert launch.resources.shared_bytes == 2 * (16 * 64 + 64 * 32) * 2


def test_w2_grid_with_exit_ctas(h100):
    # tokens=40: 13 M blocks (8 active, 5 exit); w2 N = hidden = 128 -> 4 N blocks (BN=32).
    (launch,) = moe.decompose(call(tokens=40, stage="w2", config=cfg()), h100)
    assert launch.num_tasks == 13 * 4
    assert launch.counts.tolist() == [32, 20]
    assert launch.demand[1].tolist() == [0.0, 0.0, 0.0, 4.0, 0.0]      # early exit: one 4-byte load
    # K = intermediate = 64 = BK; routed weight: BM*BN multiplies on the FMA pipe.
    assert launch.demand[0, TENSOR] == 2 * 16 * 32 * 64
    assert launch.demand[0, 1] == 16 * 32


def test_partial_n_block_is_its_own_class(h100):
    # N = 2*40 = 80 with BN = 32: blocks of 32, 32 and 16 columns; store bytes differ.
    (launch,) = moe.decompose(call(intermediate=40, config=cfg()), h100)
    assert launch.counts.tolist() == [8 * 2, 8 * 1]
    assert launch.demand[0, L2] - launch.demand[1, L2] == 1 * (32 - 16) * 2


def test_total_flop_matches_padded_gemm(h100):
    for tokens, e, topk, hidden, inter, c in [(4, 8, 2, 128, 64, cfg()), (100, 8, 2, 256, 96, cfg()),
                                              (300, 16, 4, 320, 160, cfg(64, 64, 32, 8)),
                                              (1000, 64, 6, 512, 192, cfg(32, 128, 64, 4, 8, 2))]:
        k = call(tokens, hidden, inter, e, topk, "all", c)
        launches = moe.decompose(k, h100)
        w13, w2 = [ln for ln in launches if ln.name.startswith("synperf_fused_moe_kernel")]
        pad = moe.padding(tokens, e, topk, c["BLOCK_SIZE_M"], "balanced")
        kp13 = -(-hidden // c["BLOCK_SIZE_K"]) * c["BLOCK_SIZE_K"]
        kp2 = -(-inter // c["BLOCK_SIZE_K"]) * c["BLOCK_SIZE_K"]
        n13 = -(-2 * inter // c["BLOCK_SIZE_N"]) * c["BLOCK_SIZE_N"]
        n2 = -(-hidden // c["BLOCK_SIZE_N"]) * c["BLOCK_SIZE_N"]
        assert w13.total_demand[TENSOR] == 2 * pad.padded_total * n13 * kp13
        assert w2.total_demand[TENSOR] == 2 * pad.padded_total * n2 * kp2
        assert w13.num_tasks == pad.grid_m * (n13 // c["BLOCK_SIZE_N"])


def test_launch_order_follows_group_swizzle(h100):
    # GROUP_SIZE_M = 1: programs walk N fastest within each M block, so the active ones come first.
    (launch,) = moe.decompose(call(tokens=40, config=cfg()), h100)
    order = launch.task_classes()
    assert order[:32].tolist() == [0] * 32 and order[32:].tolist() == [1] * 20
    # GROUP_SIZE_M = 8 with 13 M blocks: group 0 = M blocks 0..7 (all active), group 1 = 8..12 (exit).
    (launch,) = moe.decompose(call(tokens=40, config=cfg(gm=8)), h100)
    assert np.bincount(launch.task_classes()).tolist() == launch.counts.tolist()


def test_routing_weight_dram_and_active_experts(h100):
    # 1 token, top-2 of 8: exactly 2 experts' weights are read.
    assert moe.expected_active_experts(1, 8, 2) == pytest.approx(2.0)
    assert moe.expected_active_experts(10_000, 8, 2) == pytest.approx(8.0)
    assert moe.expected_active_experts(4, 64, 8) <= 32
    k = call(tokens=1, hidden=256, intermediate=128, config=cfg())
    (launch,) = moe.decompose(k, h100)
    weights = 2 * (2 * 128) * 256 * 2
    assert launch.dram_read_bytes >= weights
    assert launch.dram_read_bytes < weights + 4096
    assert launch.dram_write_bytes == 2 * 256 * 2


# ---------------------------------------------------------------- default configs

SMALL = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}
LARGE = {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 8, "num_warps": 4, "num_stages": 3}


@pytest.mark.parametrize("rule", ["vllm_legacy_default", "sglang_default"])
@pytest.mark.parametrize("tokens,e,expected", [(1, 8, SMALL), (8, 8, SMALL), (9, 8, LARGE), (64, 64, SMALL),
                                               (65, 64, LARGE), (4096, 8, LARGE), (128, 256, SMALL)])
def test_default_config_rules(rule, tokens, e, expected):
    assert moe.default_config(rule, tokens, e, 4096, 14336, 2, "bf16") == expected
    assert moe.default_config(rule, tokens, e, 4096, 14336, 2, "fp16") == expected


def _vllm(bm, bn, bk, gm, warps, stages):
    return dict(zip(moe.CONFIG_KEYS, (bm, bn, bk, gm, warps, stages)))


# vLLM 0.17+ (read in 0.22.0): tiles grow with M; GROUP_SIZE_M 16 past 128 tokens an expert
@pytest.mark.parametrize("tokens,e,expected", [
    (1, 8, _vllm(16, 64, 128, 1, 4, 4)), (32, 8, _vllm(16, 64, 128, 1, 4, 4)), (33, 8, _vllm(32, 64, 128, 1, 4, 3)),
    (65, 128, _vllm(32, 128, 64, 1, 4, 3)), (97, 8, _vllm(64, 128, 64, 1, 4, 3)),
    (129, 8, _vllm(64, 128, 64, 1, 8, 3)), (513, 8, _vllm(128, 128, 64, 1, 8, 3)),
    (1032, 8, _vllm(128, 128, 64, 16, 8, 3)), (1024, 8, _vllm(128, 128, 64, 1, 8, 3))])
def test_vllm_default_rule_since_0_17(tokens, e, expected):
    assert moe.default_config("vllm_default", tokens, e, 4096, 14336, 2, "bf16") == expected


def test_default_config_used_by_parse():
    k = call(tokens=9, e=8)               # no config -> vllm_default
    assert k.config.as_dict() == _vllm(16, 64, 128, 1, 4, 4) and k.config_source == "vllm_default"
    k = call(tokens=8, e=8, config="sglang_default")
    assert k.config.as_dict() == SMALL and k.config_source == "sglang_default"
    with pytest.raises(ValueError):
        moe.default_config("tuned", 1, 8, 1, 1, 1)


def test_profile_resolver_delegates():
    from synperf.profile.moe_configs import resolve_config, resolve_default_config
    assert resolve_default_config("vllm_legacy_default", 9, 8, 4096, 14336, 2) == LARGE
    assert resolve_default_config("sglang_default", 3, 8, 4096, 14336, 2) == SMALL
    assert resolve_config({"tokens": 3, "num_experts": 8, "hidden": 1, "intermediate": 1, "topk": 2})[0] == \
        moe.default_config("vllm_default", 3, 8, 1, 1, 2)
    with pytest.raises(ValueError):
        resolve_default_config("nope", 1, 8, 1, 1, 1)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("bad", [
    cfg(bm=8), cfg(bm=48), cfg(bn=8), cfg(bk=512), cfg(warps=3), cfg(warps=64), cfg(stages=0), cfg(gm=0),
    {**cfg(), "BLOCK_SIZE_M": True}, {**cfg(), "BLOCK_SIZE_N": "32"}, {**cfg(), "num_warps": 4.5},
    {k: v for k, v in cfg().items() if k != "num_stages"}, {**cfg(), "SPLIT_K": 1},
    "default", "tuned", 16, ["BLOCK_SIZE_M"],
])
def test_invalid_config_names_config(bad):
    with pytest.raises(InputError) as err:
        call(config=bad)
    assert err.value.field == "config"


def test_config_too_big_for_shared_memory(h100):
    k = call(config=cfg(256, 256, 256, 1, 8, 4))
    with pytest.raises(InputError) as err:
        moe.decompose(k, h100)
    assert err.value.field == "config"


@pytest.mark.parametrize("obj,field", [
    ({"topk": 9}, "topk"), ({"topk": 0}, "topk"), ({"tokens": 0}, "tokens"), ({"stage": "w3"}, "stage"),
    ({"num_experts": "8"}, "num_experts"), ({"hidden": None}, "hidden"),
])
def test_invalid_fields(obj, field):
    base = {"tokens": 4, "hidden": 128, "intermediate": 64, "num_experts": 8, "topk": 2}
    base.update(obj)
    if base.get("hidden") is None:
        del base["hidden"]
    with pytest.raises(InputError) as err:
        moe.parse(base, "bf16", LIB)
    assert err.value.field == field


# ---------------------------------------------------------------- MMA path and layout

def test_tensor_path_rules(h100, a100):
    assert moe.tensor_path(call(tokens=64, config=cfg(64, 64, 32, 8)).config, h100) == "wgmma"
    assert moe.tensor_path(call(config=cfg()).config, h100) == "mma"                 # BM = 16
    assert moe.tensor_path(call(config=cfg(64, 64, 32, 8, warps=2)).config, h100) == "mma"
    assert moe.tensor_path(call(config=cfg(64, 64, 32, 8)).config, a100) == "mma"
    (launch,) = moe.decompose(call(tokens=64, config=cfg(64, 64, 32, 8)), h100)
    assert launch.tensor_path == "wgmma" and launch.tensor_dtype == "bf16"


def test_warps_per_tile():
    c = lambda bm, bn, w: moe.MoeConfig(bm, bn, 64, 1, w, 3)  # noqa: E731
    assert moe.warps_per_tile(c(16, 32, 4), "mma") == (1, 4)
    assert moe.warps_per_tile(c(64, 64, 4), "mma") == (2, 2)
    assert moe.warps_per_tile(c(64, 64, 4), "wgmma") == (4, 1)
    assert moe.warps_per_tile(c(64, 64, 8), "wgmma") == (4, 2)
    assert moe.warps_per_tile(c(128, 128, 8), "wgmma") == (8, 1)


def test_shared_reads_per_cta(h100):
    # BM=16, BN=32, mma with warps (1, 4): A read 4x, B once, K padded to 128.
    (launch,) = moe.decompose(call(config=cfg()), h100)
    assert launch.demand[0, SHARED] == (16 * 4 + 32 * 1) * 128 * 2


# ---------------------------------------------------------------- whole call

def test_stage_all_launch_sequence(h100):
    launches = moe.decompose(call(tokens=64, hidden=256, intermediate=128, stage="all"), h100)
    names = [ln.name for ln in launches]
    assert all(n.startswith("moe_align") for n in names[:-4])
    assert names[-4:] == ["synperf_fused_moe_kernel[w13]", "synperf_silu_and_mul_kernel",
                          "synperf_fused_moe_kernel[w2]", "reduce_kernel (sum over topk)"]
    silu = launches[-3]
    assert silu.num_tasks == 64 * 2 and silu.dram_write_bytes == 64 * 2 * 128 * 2
    red = launches[-1]
    assert red.dram_read_bytes == 64 * 2 * 256 * 2 and red.dram_write_bytes == 64 * 256 * 2


def test_kernel_demand_runs_and_decode_is_dram_bound(h100):
    k = call(tokens=1, hidden=4096, intermediate=14336, e=8, topk=2, stage="w13")
    kd = kernel_demand(moe.decompose(k, h100), h100)
    assert kd.bound == "dram"
    # two experts of w13 weights at 3.35 TB/s
    assert kd.ceiling_us == pytest.approx(2 * 2 * 14336 * 4096 * 2 / 3350e9 * 1e6, rel=0.01)
    kd = kernel_demand(moe.decompose(call(tokens=2048, hidden=4096, intermediate=14336, stage="all"), h100), h100)
    assert np.isfinite(kd.ceiling_us) and kd.ceiling_us > 0


def test_register_estimate_matches_what_triton_reported():
    """Occupancy rests on registers per thread: against the registers Triton reported for every
    profiled H200 fused-MoE kernel, as the SM allocates them (units of 8), the fit is within 20 %
    for most; rows of K not 16-element aligned (GPT-OSS's w2 at I = 360) included, which need
    several times the registers of aligned ones, and whose largest mma-path tiles ptxas built with
    32 registers and the tile in local memory (the decomposer says which). On the H200 the
    register census (a separate build of every config) answers instead, and agrees with what the
    timed kernels reported."""
    pq = pytest.importorskip("pyarrow.parquet")
    import json
    from pathlib import Path

    from synperf.cases import parse_case
    from synperf.dataset import case_of
    from synperf.kernels._common import triton_access_bytes
    h200 = resolve_gpu("h200")
    rows = pq.read_table(Path(__file__).resolve().parents[1] / "data" / "h200" / "moe.parquet").to_pylist()
    ratios, narrow_ratios, narrow_over_aligned, local_memory_builds, census_gaps = [], [], [], 0, []
    for row in rows:
        if row["stage"] == "all":
            continue
        case = parse_case(case_of(row))
        cfg = case.call.config
        reported = [r for r, name in zip(json.loads(row["registers"]), json.loads(row["kernel_names"]))
                    if r is not None and "fused_moe" in name]
        k = case.call.hidden if case.call.stage == "w13" else case.call.intermediate
        narrow = triton_access_bytes(k, 2) < 16
        path = moe.tensor_path(cfg, h200)
        allocated, spilled = moe.fitted_allocation(cfg, path, narrow)
        census_gaps.append(abs(moe.register_allocation(cfg, h200, case.call.stage, narrow)[0] - reported[0]))
        ratio = allocated / (math.ceil(reported[0] / 8) * 8)
        if not narrow:
            ratios.append(ratio)
        else:
            narrow_ratios.append(ratio)
            narrow_over_aligned.append(moe._register_need(cfg, path, True) / moe._register_need(cfg, path, False))
            local_memory_builds += reported[0] == 32
            assert (reported[0] == 32) == (allocated == 32 and spilled > 0), row["case_json"]
    ratios, narrow_ratios = np.asarray(ratios), np.asarray(narrow_ratios)
    assert ratios.size > 1000 and narrow_ratios.size > 100
    assert np.mean(np.abs(ratios - 1) <= 0.2) > 0.8
    assert 0.95 < np.median(ratios) < 1.15      # the old pointer-tensor count was about 2x
    assert np.mean(np.abs(narrow_ratios - 1) <= 0.2) > 0.7
    assert np.median(narrow_over_aligned) > 2
    assert local_memory_builds >= 7
    assert np.mean(np.asarray(census_gaps) <= 8) > 0.95


def test_register_census_overrides_the_fit_where_ptxas_fit_the_tile():
    """GPT-OSS's w2 tile 32 x 32 x 256 on 4 warps: the fit puts its need past the 255 cap, ptxas
    built it at 255 with nothing spilled (the census); an A100 has no census and keeps the fit."""
    cfg = moe._parse_config_dict({"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 256, "GROUP_SIZE_M": 1,
                                  "num_warps": 4, "num_stages": 2})
    assert moe.fitted_allocation(cfg, "mma", narrow=True)[1] > 0
    assert moe.register_allocation(cfg, resolve_gpu("h200"), "w2", narrow=True)[1] == 0
    assert moe.register_allocation(cfg, resolve_gpu("a100-sxm4-80gb"), "w2", narrow=True) == moe.fitted_allocation(cfg, "mma", True)
    # a census row where ptxas did spill: 128 x 256 x 32 on 4 warps, the w2 specialisation
    big = moe._parse_config_dict({"BLOCK_SIZE_M": 128, "BLOCK_SIZE_N": 256, "BLOCK_SIZE_K": 32, "GROUP_SIZE_M": 1,
                                  "num_warps": 4, "num_stages": 3})
    assert moe.register_allocation(big, resolve_gpu("h200"), "w2", narrow=False)[1] > 100


def test_main_loop_trips_of_tiled_gemms(h100):
    """The K loop one task walks: K / BLOCK_K for the fused MoE kernel (K padded), k_chunk / tile_k for
    cuBLAS (per split); the efficiency model sees it as a feature (per-iteration overhead)."""
    call = families()["moe"].parse({"tokens": 64, "hidden": 4096, "intermediate": 1000, "num_experts": 8,
                                    "topk": 2, "stage": "w2", "config": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64,
                                    "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}},
                                   "bf16", "triton_fused_moe")
    (w2,) = moe.decompose(call, h100)
    assert w2.loop_trips == math.ceil(1000 / 64)          # w2's K is the intermediate size
    from synperf.kernels import gemm
    g = gemm.GemmCall(64, 4096, 4096, "bf16", "cublas")
    cfg = gemm.choose_config(g, h100)
    main = max(gemm.launches_for(g, cfg, h100), key=lambda launch: launch.loop_trips)
    assert main.loop_trips * cfg.tile_k * cfg.split_k >= 4096 and main.loop_trips * cfg.tile_k < 4096 + cfg.tile_k * cfg.split_k


def test_config_knobs_reach_the_efficiency_model():
    """Two configs with the same tile and occupancy but another pipeline depth differ to the model
    in the num_stages input alone (the demand cannot show the depth)."""
    import numpy as np

    from synperf.cases import parse_case
    from synperf.features import family_feature_names, family_features
    from synperf.gpu import resolve_gpu
    from synperf.predict import demand_for

    gpu = resolve_gpu("h200")
    base = {"family": "moe", "tokens": 256, "hidden": 4096, "intermediate": 1024, "num_experts": 64, "topk": 8,
            "stage": "w13", "config": {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 64,
                                       "GROUP_SIZE_M": 8, "num_warps": 4, "num_stages": 2}}
    deeper = dict(base, config=dict(base["config"], num_stages=4))
    x2, x4 = (family_features(c, demand_for(c, gpu)) for c in (parse_case(base), parse_case(deeper)))
    names = family_feature_names("moe")
    differ = {names[i] for i in np.flatnonzero(x2 != x4)}
    assert "log2_num_stages" in differ and x4[names.index("log2_num_stages")] == 2.0
    assert not differ & {"log2_block_m", "log2_block_n", "log2_block_k", "log2_num_warps", "tensor_gpu_us"}


def test_stage_all_launches_match_every_profile():
    """Stage "all" launches what the profiled align step, Triton kernels and top-k sum ran: the
    same count (kernels, memcpys and memsets) for every committed H200 row, small and radix sorts,
    a single key, and top-k sums split past 2 GiB."""
    import json
    from pathlib import Path

    import pyarrow.parquet as pq

    from synperf.cases import parse_case
    from synperf.predict import demand_for

    h200 = resolve_gpu("h200")
    rows = pq.read_table(Path(__file__).resolve().parents[1] / "data" / "h200" / "moe.parquet",
                         columns=["case_json", "stage", "kernel_names"]).to_pylist()
    rows = [r for r in rows if r["stage"] == "all"]
    assert len(rows) >= 700
    mismatched = []
    for r in rows:
        case = json.loads(r["case_json"])
        case.pop("id", None)
        modelled = len(demand_for(parse_case(case), h200).launches)
        if modelled != len(json.loads(r["kernel_names"])):
            mismatched.append(case)
    assert mismatched == []


def test_topk_sum_splits_past_two_gib():
    call = moe.parse({"tokens": 32768, "hidden": 7168, "intermediate": 256, "num_experts": 256, "topk": 8},
                     "bf16", "triton_fused_moe")
    pieces = moe.topk_sum_launches(call)
    assert len(pieces) == 2 and sum(p.dram_read_bytes for p in pieces) == 32768 * 8 * 7168 * 2


@pytest.mark.parametrize("intermediate, narrow", [(360, True), (720, False), (352, False)])
def test_rows_not_16_elements_apart_load_one_element_at_a_time(h100, intermediate, narrow):
    """Triton assumes 16-byte alignment only for integer arguments divisible by 16: w2 reads A and B
    rows ``intermediate`` elements apart (GPT-OSS at TP 8: 360), so it falls back to 2-byte loads;
    w13's rows are ``hidden`` apart, and the SiLU between reads rows of 2 x intermediate."""
    from synperf.cases import parse_case
    from synperf.features import FEATURE_NAMES, features
    obj = {"family": "moe", "library": LIB, "dtype": "bf16", "tokens": 256, "hidden": 2880,
           "intermediate": intermediate, "num_experts": 32, "topk": 4, "stage": "all", "config": "vllm_default"}
    case = parse_case(obj)
    launches = {ld.name: ld for ld in moe.decompose(case.call, h100)}
    assert launches["synperf_fused_moe_kernel[w13]"].access_bytes == 16
    assert launches["synperf_fused_moe_kernel[w2]"].access_bytes == (2 if narrow else 16)
    assert launches["synperf_silu_and_mul_kernel"].access_bytes == (2 if narrow else 16)
    x = features(case, kernel_demand(tuple(launches.values()), h100))
    assert x[FEATURE_NAMES.index("narrow_access")] == (3.0 if narrow else 0.0)


def test_engines_align_and_sum_differ_from_the_reference(h100):
    # 2 tokens x topk 2 = 4 pairs, 4 * 4 <= 16 experts: vLLM skips the align (one fill, one block a
    # pair); SGLang still aligns; the reference runs its torch ops.
    kw = dict(tokens=2, e=16, topk=2, stage="all", config=cfg(), routing="random")
    vllm = moe.decompose(call(engine="vllm", **kw), h100)
    sglang = moe.decompose(call(engine="sglang", **kw), h100)
    reference = moe.decompose(call(**kw), h100)
    assert vllm[0].name.startswith("naive") and len(vllm) == 5
    assert sglang[0].name == "moe_align_block_size_small_batch_expert_kernel" and len(sglang) == 5
    assert len(reference) > 30
    # one M block per pair under the naive assignment: 4 blocks x 4 N blocks, none exiting early;
    # aligned, the same grid holds fewer active blocks (pairs of one expert share a block)
    assert vllm[1].num_tasks == sglang[1].num_tasks == 4 * 4
    assert vllm[1].counts.sum() == 16 and moe.padding(2, 16, 2, 16, "random", naive=True).active_m == 4
    # topk 2 sums with vLLM's moe_sum (one CTA a token), the reference with PyTorch's reduce
    assert vllm[-1].name == "moe_sum_kernel" and vllm[-1].num_tasks == 2
    assert reference[-1].name.startswith("reduce_kernel")
    assert moe.variant(call(engine="sglang", **kw)) == "routing_random/align_cuda"
    # top-1: SGLang writes the expert's output in place, vLLM still reduces over the one slot
    top1 = dict(kw, topk=1)
    assert len(moe.decompose(call(engine="sglang", **top1), h100)) == len(moe.decompose(call(engine="vllm", **top1), h100)) - 1
    assert moe.variant(call(engine="vllm", tokens=2, e=16, topk=2, config=cfg(), routing="random")) == "routing_random"
    with pytest.raises(InputError, match="engine"):
        call(engine="trtllm")


def test_balanced_routing_reads_every_expert_it_hits(h100):
    # 16 tokens x top-8 over 128 experts: round-robin hits all 128 experts, a random draw ~82
    kw = dict(tokens=16, hidden=256, intermediate=128, e=128, topk=8, config=cfg())
    weights = 2 * 128 * 256 * 2                               # one expert's w13 tile rows, bf16
    (balanced,) = moe.decompose(call(routing="balanced", **kw), h100)
    (random,) = moe.decompose(call(routing="random", **kw), h100)
    assert balanced.dram_read_bytes >= 128 * weights > random.dram_read_bytes
    assert 81 * weights < random.dram_read_bytes < 84 * weights
    assert 81 < moe.expected_active_experts(16, 128, 8) < 83


def test_scalar_load_input_counts_only_unaligned_passes():
    """Aligned rows load 16-byte vectors, which the tile inputs already describe: the input is 0.
    Where a pass's K is not a multiple of 16 every element is its own load: (BM*BK + BK*BN) per
    thread, whichever pass is unaligned."""
    column = moe.EXTRA_FEATURES.index("log2_scalar_loads_per_thread")
    per_thread = (16 * 64 + 64 * 32) / (4 * 32)
    assert moe.extra_features(call(hidden=128, intermediate=64, stage="all", config=cfg()))[column] == 0.0
    assert moe.extra_features(call(hidden=128, intermediate=72, stage="all", config=cfg()))[column] == math.log2(per_thread)
    assert moe.extra_features(call(hidden=136, intermediate=64, stage="w2", config=cfg()))[column] == 0.0


@pytest.mark.parametrize("pairs", [1024, 4096, 16384])
def test_reference_align_issues_one_host_call_per_torch_op(h100, pairs):
    """The reference align is a run of torch ops: each is one host call, but a cumsum launches its
    scan inside its call and an argsort its copies and sort passes (cub's radix sort past 4,096
    keys): those launches are marked ``within_call`` and counted by ``align_launches_in_call``."""
    c = call(tokens=pairs // 8, e=128, topk=8, stage="all", config=cfg(), routing="random")
    align = moe.align_launches(c)
    inside = [launch.name for launch in align if launch.within_call]
    assert len(inside) == moe.align_launches_in_call(pairs)
    assert sum(name.endswith(": scan") for name in inside) == 2
    assert len(align) - len(inside) == len(moe.align_launches(call(tokens=1, e=128, topk=8, stage="all", config=cfg(),
                                                                   routing="random"))) - moe.align_launches_in_call(8)
    engine = moe.engine_align_launches(call(tokens=pairs // 8, e=128, topk=8, stage="all", config=cfg(),
                                            routing="random", engine="vllm"))
    assert [launch.within_call for launch in engine] == [False, True]
