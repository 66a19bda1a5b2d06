"""Decomposed grids against the grids recorded when the kernels ran (data/h200, CUPTI)."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from synperf.cases import parse_case
from synperf.gpu import resolve_gpu
from synperf.kernels import families
from synperf.schedule import occupancy
from synperf.tasks import Resources
from synperf.kernels.gemm import (GemmCall, _launched_tiles, build_tile_table, config_from_heuristic,
                                  config_from_profile)

pq = pytest.importorskip("pyarrow.parquet")
DATA = Path(__file__).resolve().parents[1] / "data" / "h200"


def rows(family, every=1):
    table = pq.read_table(DATA / f"{family}.parquet").to_pylist()
    return table[::every]


def test_gemm_kernel_names_and_grids_agree():
    """Every profiled nvjet launch: the tile from its name, rounded to clusters, gives its grid
    (or the grid is a persistent one, or a split-K multiple)."""
    exact = persistent = split = 0
    records = rows("gemm", every=7)
    for rec in records:
        names, grids = json.loads(rec["kernel_names"]), json.loads(rec["grids"])
        call = GemmCall(rec["m"], rec["n"], rec["k"], rec["dtype"], rec["library"])
        cfg = config_from_profile(call, names, grids, json.loads(rec["blocks"]), json.loads(rec["shared_mem"]))
        grid = math.prod(next(g for n, g in zip(names, grids) if n.startswith("nvjet")))
        launched = _launched_tiles(call, cfg.tile_m, cfg.tile_n, cfg.cluster_m, cfg.cluster_n)
        if cfg.stream_k:
            assert cfg.persistent_ctas == grid and grid % launched
            split += 1
        elif cfg.persistent_ctas:
            assert cfg.persistent_ctas == grid < launched
            persistent += 1
        elif cfg.split_k > 1:
            assert grid == launched * cfg.split_k
            split += 1
        else:
            assert grid == launched, (rec["m"], rec["n"], rec["k"], names)
            exact += 1
    assert exact > 0.4 * len(records) and persistent > 0.2 * len(records) and split > 0


def test_sdpa_grids_match_the_profile():
    gpu = resolve_gpu("NVIDIA H200")
    decompose = families()["attention"].decompose
    checked = 0
    for rec in rows("attention", every=11):
        if rec["library"] != "flash_attn2_torch_sdpa":
            continue
        case = parse_case(json.loads(rec["case_json"]))
        profiled = [g for n, g in zip(json.loads(rec["kernel_names"]), json.loads(rec["grids"])) if "flash" in n]
        modelled = []
        for launch in decompose(case.call, gpu):
            note = next(n for n in launch.notes if n.startswith("grid="))
            modelled.append([int(x) for x in re.findall(r"\d+", note)])
        assert modelled == profiled, (json.loads(rec["case_json"]), json.loads(rec["kernel_names"]))
        checked += 1
    assert checked > 400


def test_flashinfer_and_fa3_main_kernel_grids_match_the_profile():
    """FlashInfer's planners (KV chunking, the CUDA-graph decode plan's padded grid, FA3's
    persistent grid) reproduce the profiled grid of the attention kernel itself, every time."""
    gpu = resolve_gpu("NVIDIA H200")
    decompose = families()["attention"].decompose
    matched = total = 0
    for rec in rows("attention"):
        if rec["library"] not in ("flashinfer", "fa3"):
            continue
        case = parse_case(json.loads(rec["case_json"]))
        launches = decompose(case.call, gpu)
        main = next(l for l in launches if "Prefill" in l.name or "Decode" in l.name)
        modelled = [int(x) for x in re.findall(r"\d+", next(n for n in main.notes if n.startswith("grid=")))]
        profiled = next(g for n, g in zip(json.loads(rec["kernel_names"]), json.loads(rec["grids"]))
                        if "Prefill" in n or "Decode" in n)
        matched += modelled == profiled
        total += 1
    assert total >= 4000 and matched == total


def test_flash_attn3_tile_splits_and_combine_grid_match_the_profile():
    """vLLM's FlashAttention-3: the tile in the kernel's name, the persistent grid, whether the
    split kernel ran (its combine kernel, or the semaphore reset when unsplit) and the combine grid."""
    gpu = resolve_gpu("NVIDIA H200")
    decompose = families()["attention"].decompose
    total = split = grid_matched = 0
    for rec in rows("attention"):
        if rec["library"] != "flash_attn3":
            continue
        launches = decompose(parse_case(json.loads(rec["case_json"])).call, gpu)
        names, grids = json.loads(rec["kernel_names"]), json.loads(rec["grids"])
        main_name = next(n for n in names if "FlashAttnFwdSm90" in n)
        main = next(l for l in launches if l.name.startswith("FlashAttnFwdSm90"))
        tile = re.search(r"CollectiveMainloopFwdSm90<\d+, cute::tuple<cute::C<\d+>, cute::C<\d+>, cute::C<\d+> >, "
                         r"cute::tuple<cute::C<(\d+)>, cute::C<(\d+)>", main_name).groups()
        assert f"tile=({tile[0]},{tile[1]})" in main.notes, (rec["case_json"], tile)
        assert main.persistent_ctas == math.prod(grids[names.index(main_name)]) == gpu.sm_count
        assert len(launches) == len(names)
        assert any("prepare_varlen" in n for n in names) == any("prepare_varlen" in l.name for l in launches)
        combine = [g for n, g in zip(names, grids) if "FlashAttnFwdCombine" in n]
        modelled_combine = [l for l in launches if "Combine" in l.name]
        assert bool(modelled_combine) == bool(combine), rec["case_json"]
        if combine:
            modelled = [int(x) for x in re.findall(r"\d+", next(n for n in modelled_combine[0].notes
                                                               if n.startswith("grid=")))]
            grid_matched += modelled == combine[0]
            split += 1
        total += 1
    assert total >= 6000 and 0.3 * total < split < 0.95 * total
    assert grid_matched >= 0.99 * split


def test_flashinfer_rope_kernel_and_grid_agree():
    """FlashInfer's rope dispatch: token-parallel from a full wave of CTAs on, head-parallel below;
    the kernel chosen and its grid equal the profiled ones for every FlashInfer rope row."""
    gpu = resolve_gpu("h200")
    seen = set()
    for rec in rows("rope"):
        if rec["library"] != "flashinfer":
            continue
        case = parse_case(json.loads(rec["case_json"]))
        launch, = families()["rope"].decompose(case.call, gpu)
        name, grid = json.loads(rec["kernel_names"])[0], json.loads(rec["grids"])[0]
        assert launch.num_tasks == math.prod(grid), (rec["case_json"], grid)
        assert ("HeadParallelism" in launch.name) == ("HeadParallelism" in name)
        seen.add("HeadParallelism" in name)
    assert seen == {True, False}


def test_triton_rope_block_matches_the_launches_and_explains_single_token_time():
    """The Triton rope kernel's warps (one program per token) equal the profiled block of every
    Triton rope row; and a single-token call, one program alone on the GPU, takes longer the more
    padded block elements each thread walks (the model input ``triton_elements_per_thread_log2``).
    Its registers per thread, which set how many programs share an SM, are within 25 % of what
    Triton built for 90 % of them, and give the same programs per SM for 90 %."""
    gpu = resolve_gpu("h200")
    module = families()["rope"]
    per_thread, latency, register_ratio, same_occupancy = [], [], [], []
    for rec in rows("rope"):
        if rec["library"] != "triton":
            continue
        case = parse_case(json.loads(rec["case_json"]))
        launch, = module.decompose(case.call, gpu)
        assert [launch.num_tasks, 1, 1] == json.loads(rec["grids"])[0]
        assert launch.resources.threads == json.loads(rec["blocks"])[0][0], rec["case_json"]
        built = json.loads(rec["registers"])[0]
        register_ratio.append(launch.resources.registers_per_thread / built)
        as_built = Resources(launch.resources.threads, built, json.loads(rec["shared_mem"])[0])
        same_occupancy.append(occupancy(launch.resources, gpu).ctas_per_sm == occupancy(as_built, gpu).ctas_per_sm)
        if case.call.tokens == 1:
            per_thread.append(module.extra_features(case.call)[0])
            latency.append(rec["latency_us"])
    per_thread, latency = np.array(per_thread), np.array(latency)
    assert len(latency) > 100
    few, many = np.median(latency[per_thread <= np.log2(20)]), np.median(latency[per_thread >= np.log2(64)])
    assert many > 1.2 * few
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(per_thread), rank(latency))[0, 1] > 0.4
    assert np.mean(np.abs(np.array(register_ratio) - 1) <= 0.25) > 0.9
    assert np.mean(same_occupancy) > 0.9


def test_cublaslt_heuristic_names_the_kernel_cublas_ran():
    """cuBLASLt's rank-0 heuristic answer, turned into a TileConfig by the grid rules, is the
    kernel the profile recorded: tile, K step, split-K, cluster, persistent grid, stream-K."""
    import pandas as pd

    heur = pd.read_parquet(DATA.parent / "h200-system" / "cublaslt_heuristic.parquet")
    heur = heur[heur.profiled & (heur["rank"] == 0)]
    gemms = pd.read_parquet(DATA / "gemm.parquet")
    joined = gemms.merge(heur, on=["m", "n", "k", "dtype"], suffixes=("", "_heur")).iloc[::5]
    assert len(joined) > 4000

    def key(cfg):
        return (cfg.tile_m, cfg.tile_n, cfg.tile_k, cfg.split_k, cfg.persistent_ctas, cfg.stream_k,
                cfg.cluster_m, cfg.cluster_n)

    for rec in joined.itertuples():
        call = GemmCall(rec.m, rec.n, rec.k, rec.dtype, rec.library)
        profiled = config_from_profile(call, json.loads(rec.kernel_names), json.loads(rec.grids),
                                       json.loads(rec.blocks), json.loads(rec.shared_mem))
        derived = config_from_heuristic(call, rec.tile, rec.cluster, rec.splitk, int(rec.stages.split("x")[0]),
                                        rec.workspace_bytes, profiled.shared_bytes)
        assert key(derived) == key(profiled), (rec.m, rec.n, rec.k, rec.dtype)


def test_heuristic_rows_extend_the_tile_table_without_overriding_profiles():
    profiled = {"m": 64, "n": 4096, "k": 4096, "dtype": "bf16", "kernel_names": ["nvjet_sm90_tst_128x64_64x8_1x1_v_bz_TNT"],
                "grids": [[32, 1, 1]], "blocks": [[384, 1, 1]], "shared_mem": [200000]}
    same_shape = {"m": 64, "n": 4096, "k": 4096, "dtype": "bf16", "tile": "256x128", "cluster": "2x1x1",
                  "splitk": 1, "stages": "64xAUTO", "workspace_bytes": 0}
    new_shape = {**same_shape, "m": 3000, "tile": "256x128", "workspace_bytes": 1024}
    old_kernel = {**same_shape, "m": 5, "stages": "64x3"}          # a pre-Hopper kernel: skipped
    table = build_tile_table([profiled], [same_shape, new_shape, old_kernel])
    assert [row[1:4] for row in table["rows"]] == [[64, 4096, 4096], [3000, 4096, 4096]]
    added = table["configs"][table["rows"][1][4]]
    # cuBLAS's 256x128 runs along (n, m): our tile is 128 (m) x 256 (n); 24 x 16 tiles > 132 CTAs
    assert (added["tile_m"], added["tile_n"], added["persistent_ctas"], added["memset"]) == (128, 256, 132, True)
    assert added["shared_bytes"] > 0


def test_nearest_shape_search_equals_a_full_scan():
    """The tile table's grid search returns exactly what scanning every table shape returns,
    ties included, for shapes inside, at the edge of and far outside the table."""
    from synperf.kernels.gemm import _SHAPE_WEIGHTS, _tile_table
    by_dtype, _ = _tile_table("hopper")
    grid = by_dtype["bf16"]
    rng = np.random.default_rng(0)
    queries = np.column_stack([rng.uniform(0, 17, 300), rng.uniform(0, 19, 300), rng.uniform(0, 19, 300)])
    queries = np.vstack([queries, np.log2([[1, 4096, 4096], [8192, 8192, 8192], [1 << 20, 1 << 20, 8]])])
    for q in queries * np.sqrt(_SHAPE_WEIGHTS):
        diff = grid.coords - q
        dist = np.einsum("ij,ij->i", diff, diff)
        full = np.lexsort((grid.table_order, dist))[:8]
        assert (grid.nearest(q, 8) == full).all()


def test_torch_silu_and_mul_runs_the_strided_kernel_on_more_than_one_row():
    """silu(x[:, :d]) * x[:, d:]: PyTorch vectorizes only when the halves are contiguous (one row);
    the launches' access width says which kernel ran, for every profiled torch row."""
    from synperf.kernels import silu_mul

    gpu = resolve_gpu("NVIDIA H200")
    records = [r for r in rows("silu_and_mul") if r["library"] == "torch"]
    assert len(records) > 500
    for rec in records:
        vectorized = "vectorized_elementwise_kernel" in " ".join(json.loads(rec["kernel_names"]))
        call = silu_mul.parse(json.loads(rec["case_json"]), rec["dtype"], "torch")
        assert all((launch.access_bytes == 16) == vectorized for launch in silu_mul.decompose(call, gpu))


def test_vllm_align_and_sum_launches_match_the_profile():
    """vLLM 0.22's own align and sum kernels (profiled with its _moe_C library): for every engine
    row, the launches synperf decomposes have the profiled names, CTA counts and threads, in order,
    covering the naive assignment, the one-CTA small-batch align, the two-kernel align, moe_sum and
    PyTorch's reduce."""
    gpu = resolve_gpu("h200")
    kinds = set()
    for rec in rows("moe"):
        case = json.loads(rec["case_json"])
        if case.get("engine") != "vllm":
            continue
        launches = families()["moe"].decompose(parse_case(case).call, gpu)
        names, grids, blocks = (json.loads(rec[k]) for k in ("kernel_names", "grids", "blocks"))
        assert len(launches) == len(names), rec["case_json"]
        for launch, name, grid, block in zip(launches, names, grids, blocks):
            if "synperf_" in name:
                continue
            assert launch.num_tasks == math.prod(grid), (rec["case_json"], name, grid)
            assert launch.resources.threads == math.prod(block), (rec["case_json"], name, block)
            vllm_kernel = re.search(r"vllm::moe::(\w+)", name)
            assert (vllm_kernel and vllm_kernel.group(1) == launch.name) or ("Fill" in name and "fill" in launch.name) \
                or ("sum_functor" in name and "reduce" in launch.name), (launch.name, name)
            kinds.add(launch.name.split(" ")[0])
    assert {"naive", "moe_align_block_size_small_batch_expert_kernel", "moe_align_block_size_kernel",
            "count_and_sort_expert_tokens_kernel", "moe_sum_kernel", "reduce_kernel"} <= kinds
