"""Attention family: grids and task counts from each library's tiling rules, FLOP totals, causal
and GQA effects, input validation. The SDPA grids below were also seen on an H200 (torch 2.11)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from synperf.demand import kernel_demand
from synperf.errors import InputError
from synperf.gpu import resolve_gpu
from synperf.kernels import attention as A


@pytest.fixture(scope="module")
def h100():
    return resolve_gpu("h100-sxm")


@pytest.fixture(scope="module")
def a100(h100):
    # A100-like: cc 8.0, 108 SMs, 164 KB shared memory per SM (enough for these rules)
    return dataclasses.replace(h100, compute_capability="8.0", sm_count=108, shared_memory_per_sm_kb=164,
                               shared_memory_per_block_kb=163, architecture="ampere")


def make(lib="flash_attn2_torch_sdpa", dtype="bf16", **fields):
    return A.parse(fields, dtype, lib)


def grid(launch):
    return next(n for n in launch.notes if n.startswith("grid="))


def tensor_total(launches):
    return sum(float(l.total_demand[0]) for l in launches)


# ------------------------------------------------------------------------------------ SDPA FA2
def test_sdpa_prefill_causal_grid(h100):
    call = make(batch=2, q_len=1024, kv_len=1024, num_heads=32, head_dim=128)
    (launch,) = A.decompose(call, h100)
    assert launch.name.startswith("flash_fwd_kernel")
    assert grid(launch) == "grid=(8,2,32)"            # kBlockM 128 -> 8 m-blocks; (m, b, h)
    assert launch.num_tasks == 8 * 2 * 32
    assert launch.resources.shared_bytes == (128 + 2 * 64) * 128 * 2   # 65536, as profiled
    # causal: m-block i runs i*2+2 kv blocks of 64 -> total 2+4+...+16 = 72 of 128 blocks
    per_head = 4 * 128 * 64 * 128 * sum(2 * i + 2 for i in range(8))
    assert tensor_total([launch]) == pytest.approx(per_head * 2 * 32)


@pytest.mark.parametrize("hd,tile", [(64, (128, 128)), (80, (128, 64)), (96, (128, 64)), (128, (128, 64)),
                                     (192, (128, 64)), (256, (64, 64))])
def test_sdpa_tile_by_head_dim_hopper(h100, hd, tile):
    (launch,) = A.decompose(make(batch=2, q_len=1024, kv_len=1024, num_heads=16, head_dim=hd, causal=False), h100)
    assert f"tile=({tile[0]},{tile[1]}," in " ".join(launch.notes)
    assert grid(launch) == f"grid=({1024 // tile[0]},2,16)"
    kd = 96 if hd == 80 else hd
    # non-causal, tiles divide: total = 4 b h q kv kd
    assert tensor_total([launch]) == pytest.approx(4 * 2 * 16 * 1024 * 1024 * kd)


def test_sdpa_sm8x_and_a100_tiles(h100, a100):
    sm86 = dataclasses.replace(a100, compute_capability="8.6", shared_memory_per_sm_kb=100,
                               shared_memory_per_block_kb=99)
    big = dict(batch=4, q_len=512, kv_len=512, num_heads=32)     # enough CTAs: no split-KV
    (l,) = A.decompose(make(head_dim=128, causal=False, **big), sm86)
    assert "tile=(128,32," in " ".join(l.notes)
    (l,) = A.decompose(make(head_dim=128, **big), sm86)
    assert "tile=(64,64," in " ".join(l.notes)
    (l,) = A.decompose(make(head_dim=256, **big), a100)
    assert "tile=(128,64,8 warps)" in " ".join(l.notes) and l.resources.threads == 256


def test_sdpa_causal_roughly_halves(h100):
    full = tensor_total(A.decompose(make(batch=1, q_len=4096, kv_len=4096, num_heads=8, head_dim=128,
                                         causal=False), h100))
    half = tensor_total(A.decompose(make(batch=1, q_len=4096, kv_len=4096, num_heads=8, head_dim=128), h100))
    assert 0.5 < half / full < 0.55


def test_num_splits_heuristic_matches_profiled():
    # H200/H100 (132 SMs -> 264 in the heuristic), as profiled with torch 2.11
    assert A.num_splits_heuristic(8, 264, 16, 128) == 16       # b1 h32 hkv8 q1 kv4096 hd64 (swapped)
    assert A.num_splits_heuristic(32, 264, 16, 128) == 8       # b1 h32 hkv32 hd64
    assert A.num_splits_heuristic(32, 264, 32, 128) == 7       # b1 h32 hkv32 hd128
    assert A.num_splits_heuristic(512, 264, 8, 128) == 1       # enough blocks: no split


def test_sdpa_decode_split_kv(h100):
    call = make(phase="decode", batch=1, kv_len=4096, num_heads=32, num_kv_heads=32, head_dim=128)
    split, combine = A.decompose(call, h100)
    assert split.name.startswith("flash_fwd_splitkv_kernel") and grid(split) == "grid=(1,7,32)"
    assert combine.name.startswith("flash_fwd_splitkv_combine_kernel") and grid(combine) == "grid=(8,1,1)"
    # the split kernel writes fp32 partials that the combine kernel reads back
    assert split.dram_write_bytes == combine.dram_read_bytes == 7 * 32 * (128 * 4 + 4)
    # 32 kv blocks of 128 over 7 splits of 5 blocks: last split has 2 blocks
    assert sorted(set(split.demand[:, 0] / (4 * 64 * 128 * 128))) == [2.0, 5.0]


def test_sdpa_decode_gqa_swaps_groups_into_rows(h100):
    call = make(phase="decode", batch=64, kv_len=1024, num_heads=32, num_kv_heads=8, head_dim=128)
    (launch,) = A.decompose(call, h100)
    assert grid(launch) == "grid=(1,64,8)"                       # seqlen_q = 4 groups, h = 8
    small = make(phase="decode", batch=1, kv_len=4096, num_heads=32, num_kv_heads=8, head_dim=128)
    split, combine = A.decompose(small, h100)
    assert grid(split) == "grid=(1,32,8)" and grid(combine) == "grid=(8,1,1)"


@pytest.mark.parametrize("b,h,hkv,q,kv,hd,grids", [
    (1, 32, 8, 100, 2000, 128, ["grid=(2,4,32)", "grid=(800,1,1)"]),
    (1, 32, 32, 300, 2000, 128, ["grid=(5,3,32)", "grid=(2400,1,1)"]),
    (1, 8, 8, 64, 4096, 128, ["grid=(1,32,8)", "grid=(128,1,1)"]),
    (2, 16, 4, 1000, 3000, 64, ["grid=(8,2,16)"]),
])
def test_sdpa_bottom_right_causal_grids_as_profiled(h100, b, h, hkv, q, kv, hd, grids):
    """causal with q_len < kv_len (the harness's causal_lower_right mask), grids seen on an H200."""
    call = make(batch=b, q_len=q, kv_len=kv, num_heads=h, num_kv_heads=hkv, head_dim=hd)
    assert [grid(l) for l in A.decompose(call, h100)] == grids


def test_sdpa_bottom_right_causal_counts_visible_blocks(h100):
    # q 128 at the end of kv 1024, hd 64 (128 x 128 tiles): one m-block sees every kv block
    (l,) = A.decompose(make(batch=64, q_len=128, kv_len=1024, num_heads=32, head_dim=64), h100)
    assert tensor_total([l]) == pytest.approx(64 * 32 * 8 * 4 * 128 * 128 * 64)


def test_gqa_lowers_dram(h100):
    mha = A.decompose(make(batch=2, q_len=2048, kv_len=2048, num_heads=32, head_dim=128), h100)
    gqa = A.decompose(make(batch=2, q_len=2048, kv_len=2048, num_heads=32, num_kv_heads=8, head_dim=128), h100)
    kv = 2 * 2 * 2048 * 128 * 2
    assert mha[0].dram_read_bytes - gqa[0].dram_read_bytes == pytest.approx(kv * (32 - 8))
    assert tensor_total(mha) == tensor_total(gqa)


def test_sdpa_ceiling_runs(h100):
    kd = kernel_demand(A.decompose(make(batch=2, q_len=1024, kv_len=1024, num_heads=32, head_dim=128), h100), h100)
    assert kd.ceiling_us > 0 and kd.launches[0].schedule.occupancy.ctas_per_sm == 2


# ----------------------------------------------------------------------------- FlashInfer FA2
def test_flashinfer_prefill_tiles_and_grid(h100):
    call = make("flashinfer", batch=2, q_len=1024, kv_len=1024, num_heads=32, num_kv_heads=8, head_dim=128,
                causal=False)
    (launch,) = A.decompose(call, h100)
    # packed q = 1024*4 > 64 -> CTA_TILE_Q 128 (2 MMA_Q, 4x1 warps); smem allows 10 MMA_KV, regs 4
    assert "tile=(128,64)" in launch.notes
    # 2 requests x 32 q tiles, no kv split (512 >= max_batch_size_if_split = 264 // 8 = 33)
    assert grid(launch) == "grid=(64,1,8)"
    assert tensor_total([launch]) == pytest.approx(4 * 2 * 32 * 1024 * 1024 * 128)


def test_flashinfer_prefill_split_kv_and_merge(h100):
    call = make("flashinfer", batch=1, q_len=64, kv_len=8192, num_heads=8, num_kv_heads=8, head_dim=128,
                causal=False)
    main, merge = A.decompose(call, h100)
    # packed 64 -> CTA_TILE_Q 64; max_batch_size_if_split = 264 // 8 = 33: the smallest chunk with
    # ceil(8192 / chunk) <= 33 is 249 tokens -> 33 chunks
    assert "kv_chunk=249" in main.notes and grid(main) == "grid=(33,1,8)"
    assert merge.name == "PersistentVariableLengthMergeStatesKernel" and merge.persistent_ctas
    assert merge.num_tasks == 64 * 8
    assert main.dram_write_bytes == merge.dram_read_bytes          # fp32 partial O + LSE, re-read


def test_flashinfer_small_q_tile(h100):
    call = make("flashinfer", batch=8, q_len=2, kv_len=2048, num_heads=32, num_kv_heads=8, head_dim=128)
    launches = A.decompose(call, h100)
    assert "tile=(16,128)" in launches[0].notes       # packed 8 <= 16 -> 1x4 warps


def test_flashinfer_decode_kernel(h100):
    call = make("flashinfer", phase="decode", batch=256, kv_len=2048, num_heads=32, num_kv_heads=8, head_dim=128)
    (launch,) = A.decompose(call, h100)
    assert launch.name == "BatchDecodeWithPagedKVCacheKernel"
    assert grid(launch) == "grid=(256,8,1)" and "block=(16,4,2)" in launch.notes
    assert launch.tensor_dtype is None and launch.total_demand[0] == 0
    # CUDA-core math: 2 FMA per (token, head, dim)
    assert launch.total_demand[1] >= 2 * 128 * 32 * 2048 * 256


def test_flashinfer_decode_splits_small_batch(h100):
    call = make("flashinfer", phase="decode", batch=4, kv_len=4096, num_heads=32, num_kv_heads=8, head_dim=128)
    main, merge = A.decompose(call, h100)
    assert "kv_chunk=128" in main.notes and grid(main) == "grid=(128,8,1)"
    assert merge.num_tasks == 4 * 32


def test_flashinfer_decode_fp8_kv_halves_kv_bytes(h100):
    base = dict(phase="decode", batch=256, kv_len=2048, num_heads=32, num_kv_heads=8, head_dim=128)
    bf = A.decompose(make("flashinfer", **base), h100)[0]
    f8 = A.decompose(make("flashinfer", kv_cache_dtype="fp8_e4m3", **base), h100)[0]
    kv = 2 * 256 * 2048 * 8 * 128
    assert bf.dram_read_bytes - f8.dram_read_bytes == pytest.approx(kv)


def test_flashinfer_decode_unsupported_group_uses_prefill(h100):
    call = make("flashinfer", phase="decode", batch=8, kv_len=2048, num_heads=28, num_kv_heads=4, head_dim=128)
    assert A.decompose(call, h100)[0].name == "BatchPrefillWithPagedKVCacheKernel"


def test_flashinfer_causal_roughly_halves(h100):
    kw = dict(batch=1, q_len=8192, kv_len=8192, num_heads=8, head_dim=128)
    full = tensor_total(A.decompose(make("flashinfer", causal=False, **kw), h100))
    half = tensor_total(A.decompose(make("flashinfer", **kw), h100))
    assert 0.5 < half / full < 0.53


# -------------------------------------------------------------------------------------- FA3
def test_fa3_persistent_schedule(h100):
    call = make("fa3", batch=2, q_len=1024, kv_len=1024, num_heads=32, num_kv_heads=8, head_dim=128)
    (launch,) = A.decompose(call, h100)
    assert launch.persistent_ctas == 132 and launch.tensor_path == "wgmma"
    assert launch.num_tasks == 2 * 8 * 32                    # q tiles of 128 per request, per qo head
    assert set(np.asarray(launch.task_cta)) <= set(range(132))
    assert "tile=(128,128)" in launch.notes
    # greedy MinHeap (list scheduling): busiest CTA <= mean + one task (up to the cost model's slack)
    per_cta = np.bincount(launch.task_cta, weights=launch.demand[launch.order, 0], minlength=132)
    assert per_cta.max() <= per_cta.mean() + 1.5 * launch.demand[:, 0].max()
    assert kernel_demand((launch,), h100).ceiling_us > 0


def test_fa3_noncausal_flops_and_tile(h100):
    (launch,) = A.decompose(make("fa3", batch=1, q_len=1536, kv_len=1536, num_heads=4, head_dim=128,
                                 causal=False), h100)
    assert "tile=(128,192)" in launch.notes
    assert tensor_total([launch]) == pytest.approx(4 * 4 * 1536 * 1536 * 128)


def test_fa3_needs_hopper(a100):
    with pytest.raises(InputError) as err:
        A.decompose(make("fa3", batch=1, q_len=128, kv_len=128, num_heads=4, head_dim=128), a100)
    assert err.value.field == "library"


# ------------------------------------------------------------------ FlashAttention-3 (vLLM)
def test_flash_attn3_decode_packs_gqa_heads_and_reads_each_kv_head_once(h100):
    """A decode step with 8 query heads per KV head: one 64-row tile holds all 8 heads' queries
    (PackGQA), so the K/V bytes through L2 are those of the KV heads, not of the query heads."""
    kw = dict(phase="decode", batch=4, kv_len=8192, num_kv_heads=4, head_dim=128)
    grouped = A.decompose(make("flash_attn3", num_heads=32, **kw), h100)
    mha = A.decompose(make("flash_attn3", num_heads=4, **kw), h100)
    assert "tile=(64,128)" in grouped[0].notes and grouped[0].persistent_ctas == 132
    kv_bytes = 2 * 4 * 8192 * 4 * 128 * 2
    assert float(grouped[0].total_demand[3]) == pytest.approx(float(mha[0].total_demand[3]), rel=0.02)
    assert kv_bytes < float(grouped[0].total_demand[3]) < 1.05 * kv_bytes
    # vLLM caps the splits at 32 for a step this small, so the split kernel and its combine run
    assert "Combine" in grouped[1].name


def test_flash_attn3_tile_follows_the_longest_packed_request(h100):
    def tile(**kw):
        return next(n for n in A.decompose(make("flash_attn3", head_dim=128, **kw), h100)[0].notes
                    if n.startswith("tile="))
    assert tile(q_lens=[16, 8], kv_lens=[16, 8], num_heads=4, num_kv_heads=1) == "tile=(64,128)"     # 64 rows
    assert tile(q_lens=[17, 8], kv_lens=[17, 8], num_heads=4, num_kv_heads=1) == "tile=(128,128)"    # 68 rows


def test_flash_attn3_splits_a_lone_long_prompt_but_not_a_full_batch(h100):
    """Above vLLM's 512-token cap FA3's own heuristic decides: a prompt whose tiles fill a tenth
    of the SMs is split, a batch whose tiles fill the GPU is not."""
    lone = A.decompose(make("flash_attn3", batch=1, q_len=600, kv_len=32768, num_heads=8, num_kv_heads=8,
                            head_dim=128), h100)
    full = A.decompose(make("flash_attn3", batch=16, q_len=1024, kv_len=1024, num_heads=32, num_kv_heads=8,
                            head_dim=128), h100)
    assert "Combine" in lone[1].name and "Combine" not in full[1].name
    # unsplit it would be 8 heads x 5 m-blocks = 40 tiles on 40 of the 132 SMs; split, more SMs share it
    assert lone[0].num_tasks >= 2 * 40 and full[0].num_tasks == 16 * 8 * 32     # 4 heads packed: 32 m-blocks


def test_flash_attn3_is_hopper_only_and_paged_through_cp_async(a100, h100):
    with pytest.raises(InputError) as err:
        A.decompose(make("flash_attn3", batch=1, q_len=128, kv_len=128, num_heads=4, head_dim=128), a100)
    assert err.value.field == "library"
    for bad in (dict(head_dim=96), dict(head_dim=128, page_size=128)):
        with pytest.raises(InputError) as err:
            make("flash_attn3", batch=1, q_len=8, kv_len=8, num_heads=4, **bad)
        assert err.value.field == next(iter(bad.keys() - {"head_dim"}), "head_dim")


# ------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("fields,lib,bad", [
    (dict(batch=1, q_len=8, kv_len=8, num_heads=6, num_kv_heads=4, head_dim=128), "flashinfer", "num_kv_heads"),
    (dict(batch=1, q_len=8, kv_len=8, num_heads=4, head_dim=100), "flashinfer", "head_dim"),
    (dict(batch=1, q_len=9, kv_len=8, num_heads=4, head_dim=128), "flashinfer", "q_len"),
    (dict(batch=2, q_lens=[1, 2, 3], kv_lens=[4, 4, 4], num_heads=4, head_dim=128), "flashinfer", "kv_lens"),
    (dict(q_lens=[1, 2], kv_lens=[4, 4, 4], num_heads=4, head_dim=128), "flashinfer", "q_lens"),
    (dict(phase="decode", batch=2, q_len=4, kv_len=8, num_heads=4, head_dim=128), "flashinfer", "q_len"),
    (dict(batch=1, q_len=8, kv_len=8, num_heads=4, head_dim=128, kv_cache_dtype="fp8_e4m3"), "flashinfer",
     "kv_cache_dtype"),
    (dict(q_lens=[8, 9], kv_lens=[9, 9], num_heads=4, head_dim=128, causal=False), "flash_attn2_torch_sdpa",
     "kv_lens"),
    (dict(batch=1, q_len=8, kv_len=8, num_heads=4, head_dim=96), "fa3", "head_dim"),
    (dict(batch=1, q_len=8, kv_len=8, num_heads=4, head_dim=128, causal="yes"), "fa3", "causal"),
    (dict(batch=0, q_len=8, kv_len=8, num_heads=4, head_dim=128), "fa3", "batch"),
    (dict(batch=1, q_len=8, num_heads=4, head_dim=128), "fa3", "kv_len"),
    (dict(phase="mixed", batch=1, q_len=8, kv_len=8, num_heads=4, head_dim=128), "fa3", "phase"),
])
def test_invalid_inputs_name_the_field(fields, lib, bad):
    with pytest.raises(InputError) as err:
        A.parse(fields, "bf16", lib)
    assert err.value.field == bad


def test_defaults():
    call = make(phase="decode", batch=3, kv_len=100, num_heads=8, head_dim=64)
    assert call.q_lens == (1, 1, 1) and call.causal is False and call.kv_cache_dtype == "bf16"
    assert call.num_kv_heads == 8 and call.page_size == 16
    assert make(batch=1, q_len=4, kv_len=4, num_heads=8, head_dim=64).causal is True
    lists = make("flashinfer", q_lens=[3, 5], kv_lens=[10, 20], num_heads=8, head_dim=64)
    assert lists.batch == 2


def test_family_is_discovered():
    from synperf.kernels import families
    assert families()["attention"] is A


def test_prefill_is_paged_only_when_a_page_size_is_given():
    from synperf.cases import parse_case
    from synperf.gpu import resolve_gpu
    from synperf.kernels import families
    gpu = resolve_gpu("h100-sxm")
    base = {"family": "attention", "library": "flashinfer", "phase": "prefill", "batch": 2, "q_len": 512,
            "kv_len": 512, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128}
    ragged = parse_case(base).call
    paged = parse_case({**base, "page_size": 16}).call
    assert not ragged.paged and paged.paged
    decompose = families()["attention"].decompose
    assert "Ragged" in decompose(ragged, gpu)[0].name
    assert "Paged" in decompose(paged, gpu)[0].name


def test_flashinfer_decode_cuda_graph_plan_always_splits_and_pads_the_grid():
    """DecodePlan with enable_cuda_graph: below a full wave the KV is split even when no request
    is cut, and the grid is max_grid / num_kv_heads rows; the eager plan launches no merge then."""
    from synperf.cases import parse_case

    h200 = resolve_gpu("h200")
    decompose = A.decompose
    base = {"family": "attention", "dtype": "bf16", "library": "flashinfer", "phase": "decode", "batch": 4,
            "kv_len": 100, "num_heads": 32, "num_kv_heads": 4, "head_dim": 128, "page_size": 1}
    eager = decompose(parse_case(base).call, h200)
    graph = decompose(parse_case({**base, "cuda_graph": True}).call, h200)
    assert len(eager) == 1 and "grid=(4,4,1)" in eager[0].notes
    # group 8 compiles to 56 registers: 9 CTAs of 128 threads an SM, 9 x 132 / 4 kv heads = 297 rows
    assert len(graph) == 2 and "grid=(297,4,1)" in graph[0].notes
    assert graph[0].total_demand[1] == pytest.approx(eager[0].total_demand[1])   # padding CTAs do no work
    with pytest.raises(InputError, match="cuda_graph"):
        parse_case({**base, "num_heads": 24, "num_kv_heads": 4, "cuda_graph": True})   # group 6: tensor-core path


def test_kernel_path_names_the_kernel_flashinfer_ran():
    """The path input of the efficiency model is the kernel the profiles show: ragged or paged
    prefill (also a decode whose GQA group the CUDA-core kernel lacks), none for that kernel."""
    import json
    from pathlib import Path

    pq = pytest.importorskip("pyarrow.parquet")
    from synperf.cases import parse_case

    table = pq.read_table(Path(__file__).resolve().parents[1] / "data" / "h200" / "attention.parquet",
                          columns=["library", "case_json", "kernel_names"]).to_pylist()
    seen = set()
    for rec in table[::5]:
        if rec["library"] != "flashinfer":
            continue
        names = " ".join(json.loads(rec["kernel_names"]))
        expected = ("ragged_prefill" if "BatchPrefillWithRaggedKVCacheKernel" in names else
                    "paged_prefill" if "BatchPrefillWithPagedKVCacheKernel" in names else None)
        assert A.kernel_path(parse_case(json.loads(rec["case_json"])).call) == expected, rec["case_json"]
        seen.add(expected)
    assert seen == {"ragged_prefill", "paged_prefill", None}
