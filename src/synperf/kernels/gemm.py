"""GEMM: out[m, n] = x[m, k] @ w[n, k]^T through cuBLAS (bf16/fp16), cuBLASLt FP8 with per-tensor
scales (torch._scaled_mm), and block-scaled FP8 (CUTLASS / DeepGEMM style, 128x128 scale blocks).

cuBLAS is closed source, so its tiling is read from profiled kernel names and grids
(``nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT``: a 256x128 output tile, 64-deep K steps,
4 stages, 1x2 cluster; ``..._tilesize128x128x64_...``; ``ampere_..._128x128_ldg8_..._64x3``).
``tiles/gemm_<arch>.json`` keeps, per architecture, the profiled shapes with the tile, split-K
and grid cuBLAS chose; a call takes the choice of the nearest profiled shape (log-space distance,
same dtype). Architectures never profiled use a documented heuristic (``heuristic_config``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from synperf.errors import InputError
from synperf.kernels._common import DTYPE_BYTES, TENSOR_DTYPE, ceil_div, one_call, round_up
from synperf.tasks import Launch, Resources, task_demand
from synperf.validate import MAX_TOKENS, get_int

FAMILY = "gemm"
LIBRARIES = ("cublas", "cublaslt_scaled_mm", "fp8_block")
DTYPES = {"cublas": ("bf16", "fp16"), "cublaslt_scaled_mm": ("fp8_e4m3",), "fp8_block": ("fp8_e4m3",)}
FIELDS = {"m", "n", "k"}
OUT_BYTES = 2   # bf16/fp16 output for every library here
_FP8_BLOCK = 128


@dataclass(frozen=True)
class GemmCall:
    m: int
    n: int
    k: int
    dtype: str
    library: str
    # Training only (``as_new_shape``): choose the kernel as for a shape the tile table lacks.
    exclude_own_shape: bool = False


def parse(obj: dict, dtype: str, library: str) -> GemmCall:
    call = GemmCall(get_int(obj, "m", hi=MAX_TOKENS), get_int(obj, "n"), get_int(obj, "k"), dtype, library)
    if library == "cublaslt_scaled_mm" and (call.k % 16 or call.n % 16):
        raise InputError("torch._scaled_mm needs k and n divisible by 16", "k" if call.k % 16 else "n")
    if library == "fp8_block" and call.k % _FP8_BLOCK:
        raise InputError(f"block-scaled FP8 needs k divisible by {_FP8_BLOCK}", "k")
    return call


@dataclass(frozen=True)
class TileConfig:
    """What a GEMM kernel launch does: output tile, K step, split-K factor, CTAs launched."""
    kernel: str
    tile_m: int
    tile_n: int
    tile_k: int
    split_k: int = 1
    persistent_ctas: int | None = None   # persistent grid: at most this many CTAs walk the tiles
    threads: int = 256
    shared_bytes: int = 0
    tensor_path: str = "mma"
    reduce_kernel: bool = False      # split-K partials summed by a second kernel
    cluster_m: int = 1               # Hopper thread-block cluster: CTAs along M share (multicast)
    cluster_n: int = 1               # the B tile, CTAs along N share the A tile
    memset: bool = False             # cuBLAS clears a workspace (tile semaphores) first
    stream_k: bool = False           # split-K over a persistent grid: each CTA an equal K share


_NAME_PATTERNS = (
    # nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT
    re.compile(r"nvjet_sm(?P<sm>\d+)\w*?_(?P<tm>\d+)x(?P<tn>\d+)_(?P<tk>\d+)x(?P<st>\d+)_(?P<cm>\d+)x(?P<cn>\d+)_"),
    # sm90_xmma_gemm_..._tilesize128x128x64_...
    re.compile(r"sm(?P<sm>\d+)_xmma_gemm\w*?tilesize(?P<tm>\d+)x(?P<tn>\d+)x(?P<tk>\d+)"),
    # ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn / sm80_xmma_gemm_..._128x128_...
    re.compile(r"(?:gemm|s16816gemm)\w*?_(?P<tm>\d+)x(?P<tn>\d+)_\w*?stages_(?P<tk>\d+)x(?P<st>\d+)"),
    # cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x10_tn_align8
    re.compile(r"cutlass\w*?_(?P<tm>\d+)x(?P<tn>\d+)_(?P<tk>\d+)x(?P<st>\d+)_"),
)


def tile_from_kernel_name(name: str) -> dict | None:
    """Tile shape encoded in a cuBLAS/CUTLASS kernel name, in this call's orientation, or None
    (e.g. gemv). PyTorch hands cuBLAS the transposed problem (out^T = w . x^T, column-major), so a
    name's first tile extent runs along our n and the second along our m; the same holds for the
    cluster shape of nvjet names."""
    for pattern in _NAME_PATTERNS:
        found = pattern.search(name)
        if found:
            groups = found.groupdict()
            tile = {"tile_m": int(groups["tn"]), "tile_n": int(groups["tm"]), "tile_k": int(groups["tk"])}
            if groups.get("cm"):
                tile.update(cluster_m=int(groups["cn"]), cluster_n=int(groups["cm"]))
            return tile
    return None


def uses_wgmma(name: str) -> bool:
    return bool(re.search(r"sm9\d|sm10\d|nvjet", name))


# -- tile tables ---------------------------------------------------------------------------------

# m decides tile height and split-K most, so it weighs more in the shape distance.
_SHAPE_WEIGHTS = np.array([2.0, 1.0, 1.0])


_CELL = 0.75   # grid cell edge, in weighted log2 units: a few dozen table shapes per occupied cell


@dataclass(frozen=True, eq=False)
class _ShapeGrid:
    """Table shapes of one dtype as weighted log2 (m, n, k), bucketed in a grid of cubic cells so
    that a nearest-shape search reads only the cells around the call."""
    coords: np.ndarray        # (rows, 3), sorted by cell
    config_index: np.ndarray  # per row: index into the configs
    table_order: np.ndarray   # per row: position in the table file (ties go to the earlier shape)
    cell_keys: np.ndarray     # sorted linear cell id per row
    origin: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def build(cls, coords: np.ndarray, config_index: np.ndarray, table_order: np.ndarray) -> "_ShapeGrid":
        origin = coords.min(axis=0)
        cells = np.floor((coords - origin) / _CELL).astype(np.int64)
        shape = tuple(int(x) + 1 for x in cells.max(axis=0))
        keys = np.ravel_multi_index(cells.T, shape)
        order = np.argsort(keys, kind="stable")
        return cls(coords[order], config_index[order], table_order[order], keys[order], origin, shape)

    def nearest(self, query: np.ndarray, count: int) -> np.ndarray:
        """The ``count`` rows nearest ``query`` (Euclidean), nearest first, ties to the earlier table
        row: a full scan's answer, from the cube of cells around the query, grown until no row
        outside it can be nearer."""
        count = min(count, self.coords.shape[0])
        centre = np.floor((query - self.origin) / _CELL).astype(np.int64)
        radius = 1
        while True:
            top = np.array(self.shape) - 1
            lo = np.clip(centre - radius, 0, top)      # the query may lie outside the table's cells
            hi = np.clip(centre + radius, 0, top)
            a, b = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
            column = (a.ravel() * self.shape[1] + b.ravel()) * self.shape[2]   # (a, b, 0) per cell column
            starts = np.searchsorted(self.cell_keys, column + lo[2])
            stops = np.searchsorted(self.cell_keys, column + hi[2] + 1)
            lengths = stops - starts
            # the row indices of every [start, stop) range, concatenated
            found = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(lengths.sum())
            covers_all = (lo == 0).all() and (hi == top).all()
            if found.size >= count:
                diff = self.coords[found] - query
                dist = np.einsum("ij,ij->i", diff, diff)
                kth = np.partition(dist, count - 1)[count - 1]
                near = np.flatnonzero(dist <= kth)       # the count nearest and any ties with them
                picked = near[np.lexsort((self.table_order[found[near]], dist[near]))[:count]]
                # Any shape outside the cube lies at least this far from the query (faces on the
                # table's edge have no shapes beyond them).
                below = np.where(lo > 0, query - (self.origin + lo * _CELL), np.inf)
                above = np.where(hi < top, self.origin + (hi + 1) * _CELL - query, np.inf)
                outside = min(below.min(), above.min())
                if covers_all or dist[picked[-1]] < outside ** 2:
                    return found[picked]
            elif covers_all:
                return found
            radius += 1


@lru_cache(maxsize=None)
def _tile_table(arch: str):
    """Per dtype: the table shapes (``_ShapeGrid``), plus the configs; None when the architecture
    was never profiled."""
    folder = resources.files("synperf.kernels") / "tiles"
    entry, shapes = folder / f"gemm_{arch}.json", folder / f"gemm_{arch}.npy"
    if not entry.is_file():
        return None
    data = json.loads(entry.read_text())
    configs = [TileConfig(**c) for c in data["configs"]]
    with shapes.open("rb") as f:   # dtype_code, m, n, k, config index; binary: 200k shapes load in ms
        rows = np.load(f, allow_pickle=False)
    by_dtype = {}
    for code, dtype in enumerate(data["dtypes"]):
        same = np.flatnonzero(rows[:, 0] == code)
        coords = np.log2(rows[same, 1:4].astype(np.float64)) * np.sqrt(_SHAPE_WEIGHTS)
        by_dtype[dtype] = _ShapeGrid.build(coords, rows[same, 4].astype(np.int64), same)
    return by_dtype, configs


def as_new_shape(call: GemmCall) -> GemmCall:
    """The call as training must see it. The tile table holds every training shape, so a training
    row would otherwise get the kernel cuBLAS ran for it (86 % of sampled rows), while a new shape
    gets its neighbours' choice (15 % exact): the model would learn from features it never meets."""
    return replace(call, exclude_own_shape=True)


def table_configs(call: GemmCall, arch: str, neighbours: int = 8) -> list[TileConfig]:
    """Configurations cuBLAS chose for the profiled shapes nearest this call (log-space distance,
    same dtype), nearest first, without repeats; with ``exclude_own_shape``, the call's own shape
    is left out of the table."""
    table = _tile_table(arch)
    if table is None or call.library == "fp8_block":
        return []
    by_dtype, configs = table
    if call.dtype not in by_dtype:
        return []
    grid = by_dtype[call.dtype]
    query = np.log2([call.m, call.n, call.k]) * np.sqrt(_SHAPE_WEIGHTS)
    nearest = grid.nearest(query, neighbours + 2 if call.exclude_own_shape else neighbours)
    if call.exclude_own_shape:
        nearest = [i for i in nearest if not np.array_equal(grid.coords[i], query)][:neighbours]
    found: list[TileConfig] = []
    for index in nearest:
        cfg = configs[grid.config_index[index]]
        if cfg not in found:
            found.append(cfg)
    return found


def grid_tiles(call: GemmCall, cfg: TileConfig, cluster_padding: bool = True) -> tuple[int, int]:
    """(output tiles, tiles the grid runs). The grid rounds the tile counts along M and N up to
    whole clusters, and the padding CTAs run the full main loop on zero-filled operands: the H200
    tensor counters count their MMAs (docs/counters.md). Not for stream-K, whose CTAs share out
    the real tiles' K iterations. ``cluster_padding=False`` (the counter check's comparison only)
    leaves the padding out."""
    tiles_m, tiles_n = ceil_div(call.m, cfg.tile_m), ceil_div(call.n, cfg.tile_n)
    if not cluster_padding or cfg.stream_k:
        return tiles_m * tiles_n, tiles_m * tiles_n
    return tiles_m * tiles_n, round_up(tiles_m, cfg.cluster_m) * round_up(tiles_n, cfg.cluster_n)


def busiest_sm_flops(call: GemmCall, cfg: TileConfig, sm_count: int) -> float:
    """Tensor FLOP the busiest SM executes under ``cfg`` (full tiles, wave quantisation)."""
    tasks = grid_tiles(call, cfg)[1] * cfg.split_k
    slots = min(cfg.persistent_ctas or sm_count, sm_count)
    k_chunk = round_up(ceil_div(call.k, cfg.split_k), cfg.tile_k)
    return ceil_div(tasks, slots) * 2.0 * cfg.tile_m * cfg.tile_n * k_chunk


# Output tiles of the CUTLASS-style kernels cuBLAS ships for every architecture, (tile_m, tile_n).
_HEURISTIC_TILES = ((64, 64), (64, 128), (128, 64), (128, 128), (128, 256), (256, 128))


def heuristic_config(call: GemmCall, gpu) -> TileConfig:
    """Fallback for GPUs whose cuBLAS choices were never profiled. cuBLAS's heuristic picks the
    kernel it expects to be fastest; without its tables we take, among the common CUTLASS tile
    shapes and split-K factors 1-16, the one with the lowest ceiling (larger tiles and no split first
    on ties), so the ceiling does not assume a worse kernel than cuBLAS runs."""
    from synperf.demand import kernel_demand   # the choice models cuBLAS's own: the fastest kernel
    paths = gpu.tensor_flops_per_clk_per_sm
    hopper_like = "wgmma" in paths or "tcgen05" in paths
    tile_k = 128 if DTYPE_BYTES[call.dtype] == 1 else 64
    path = "tcgen05" if "tcgen05" in paths else ("wgmma" if hopper_like else "mma")
    best = None
    for tile_m, tile_n in _HEURISTIC_TILES:
        tiles = ceil_div(call.m, tile_m) * ceil_div(call.n, tile_n)
        for split in (1, 2, 4, 8, 16):
            # split-K only helps a grid that leaves SMs idle, and needs a few K steps per slice
            if split > 1 and (tiles * split > 2 * gpu.sm_count or call.k < 4 * split * tile_k):
                break
            cfg = TileConfig("heuristic", tile_m, tile_n, tile_k, split_k=split, threads=384 if hopper_like else 256,
                             shared_bytes=min(int(gpu.shared_memory_per_block_kb * 1024),
                                              3 * (tile_m + tile_n) * tile_k * DTYPE_BYTES[call.dtype]),
                             tensor_path=path, reduce_kernel=split > 1, cluster_m=2 if hopper_like else 1)
            key = (round(kernel_demand(launches_for(call, cfg, gpu), gpu).ceiling_us, 6), split, -tile_m * tile_n)
            if best is None or key < best[0]:
                best = (key, cfg)
    return best[1]


def fp8_block_config(call: GemmCall, gpu) -> TileConfig:
    """DeepGEMM-style block-scaled FP8 (get_best_configs): BLOCK_M 64 or 128; BLOCK_N from {64..256}
    with the fewest waves over a persistent grid of one CTA per SM, then the fullest last wave,
    then the larger tile; K step 128 (one scale block)."""
    tile_m = 64 if call.m <= 64 else 128
    best = None
    for tile_n in (64, 96, 128, 160, 192, 224, 256):
        tiles = ceil_div(call.m, tile_m) * ceil_div(call.n, tile_n)
        waves = ceil_div(tiles, gpu.sm_count)
        last_wave = tiles - (waves - 1) * gpu.sm_count
        key = (waves, -last_wave, -tile_n)
        if best is None or key < best[0]:
            best = (key, tile_n)
    tile_n = best[1]
    path = "wgmma" if "wgmma" in gpu.tensor_flops_per_clk_per_sm else ("tcgen05" if "tcgen05" in gpu.tensor_flops_per_clk_per_sm else "mma")
    return TileConfig("fp8_block_scaled_gemm", tile_m, tile_n, _FP8_BLOCK, persistent_ctas=gpu.sm_count, threads=384,
                      shared_bytes=min(int(gpu.shared_memory_per_block_kb * 1024), 4 * (tile_m + tile_n) * _FP8_BLOCK),
                      tensor_path=path)


@lru_cache(maxsize=65536)
def choose_config(call: GemmCall, gpu) -> TileConfig:
    """cuBLAS's heuristic picks among its kernels the fastest for the shape; we take, among the
    kernels it picked for the nearest profiled shapes, the one with the least work on the busiest
    SM (nearest first on ties)."""
    if call.library == "fp8_block":
        return fp8_block_config(call, gpu)
    candidates = table_configs(call, gpu.architecture)
    if not candidates:
        return heuristic_config(call, gpu)
    return min(candidates, key=lambda cfg: busiest_sm_flops(call, cfg, gpu.sm_count))


def config_from_profile(call: GemmCall, kernel_names: list[str], grids: list, blocks: list,
                        shared_mem: list) -> TileConfig:
    """The TileConfig a profiled cuBLAS call used, from its kernel names and launch grids.

    The main kernel is the first whose name encodes a tile; without one (gemv-style kernels) each
    CTA is taken to own an equal slice of N with the whole of M and K. A grid with more CTAs than
    output tiles is split-K (a ``reduce`` kernel after it sums the partials); one with fewer is a
    persistent kernel that walks the tiles."""
    memset = any(name.startswith("[gpu_memset]") for name in kernel_names)
    kept = [i for i, name in enumerate(kernel_names) if not name.startswith("[gpu_")]
    kernel_names = [kernel_names[i] for i in kept]
    grids, blocks, shared_mem = ([seq[i] for i in kept] for seq in (grids, blocks, shared_mem))
    main = next((i for i, name in enumerate(kernel_names) if tile_from_kernel_name(name)), None)
    if main is None:
        main = 0
        ctas = int(np.prod(grids[0]))
        tile = {"tile_m": round_up(call.m, 16), "tile_n": max(1, ceil_div(call.n, ctas)), "tile_k": round_up(call.k, 16)}
    else:
        tile = tile_from_kernel_name(kernel_names[main])
        ctas = int(np.prod(grids[main]))
    launched = _launched_tiles(call, tile.get("tile_m"), tile.get("tile_n"), tile.get("cluster_m", 1), tile.get("cluster_n", 1))
    has_reduce = any("reduce" in name.lower() for i, name in enumerate(kernel_names) if i != main)
    name = kernel_names[main]
    split_named = "splitk" in name.lower() or has_reduce
    # A split-K grid that is no whole multiple of the tiles (or smaller than them) shares the
    # K iterations of all tiles evenly over its CTAs (stream-K).
    stream_k = split_named and ctas % launched != 0
    split = ctas // launched if ctas >= 2 * launched and not stream_k else 1
    persistent = (ctas < launched and not split_named) or stream_k
    return TileConfig(
        kernel=re.sub(r"<.*", "", name)[:120], split_k=split, persistent_ctas=ctas if persistent else None,
        stream_k=stream_k,
        threads=int(np.prod(blocks[main])), shared_bytes=int(shared_mem[main] or 0),
        tensor_path="wgmma" if uses_wgmma(name) else "mma", reduce_kernel=has_reduce and (split > 1 or stream_k),
        memset=memset, **tile,
    )


def _launched_tiles(call: GemmCall, tile_m: int, tile_n: int, cluster_m: int, cluster_n: int) -> int:
    """CTAs of a one-tile-per-CTA grid: tile counts rounded up to whole clusters."""
    return round_up(ceil_div(call.m, tile_m), cluster_m) * round_up(ceil_div(call.n, tile_n), cluster_n)


# Persistent nvjet grids on 132-SM Hopper parts: one CTA an SM for clusters of 1-2 CTAs, 120 CTAs
# for clusters of 4 and 8 (whole clusters per GPC); every profiled H200 persistent grid is one of these.
_PERSISTENT_CTAS_SMALL_CLUSTER = 132
_PERSISTENT_CTAS_LARGE_CLUSTER = 120


def config_from_heuristic(call: GemmCall, tile: str, cluster: str, split_k: int, k_step: int,
                          workspace_bytes: int, shared_bytes: int) -> TileConfig | None:
    """The TileConfig of the algorithm cuBLASLt's heuristic ranks first for a shape
    (``synperf.profile.cublaslt_query``; its tile and cluster are cuBLAS's ``MxN`` of the transposed
    problem). On the H200 this is the kernel cuBLAS ran for all 20,418 profiled shapes (tile, K
    step, cluster, split-K), and the grid follows from it: the tile grid rounded to clusters when it
    fits the persistent grid, else the persistent grid; a split-K grid that would not fit becomes
    stream-K on the persistent grid. Cooperative kernels (a workspace, no split) zero it first.
    None for algorithms without a named tile (non-nvjet kernels)."""
    try:
        tile_n, tile_m = (int(x) for x in tile.split("x"))
        cluster_n, cluster_m = (int(x) for x in cluster.split("x")[:2])
    except ValueError:
        return None
    cap = _PERSISTENT_CTAS_SMALL_CLUSTER if cluster_m * cluster_n <= 2 else _PERSISTENT_CTAS_LARGE_CLUSTER
    launched = _launched_tiles(call, tile_m, tile_n, cluster_m, cluster_n)
    stream_k = split_k > 1 and launched * split_k > cap
    persistent = cap if stream_k or (split_k == 1 and launched > cap) else None
    return TileConfig(
        kernel=f"nvjet_sm90_{tile}_{k_step}_{cluster_n}x{cluster_m}" + ("_splitK" if split_k > 1 else ""),
        tile_m=tile_m, tile_n=tile_n, tile_k=k_step, split_k=1 if stream_k else split_k,
        persistent_ctas=persistent, stream_k=stream_k, threads=384, shared_bytes=shared_bytes,
        tensor_path="wgmma", reduce_kernel=split_k > 1, cluster_m=cluster_m, cluster_n=cluster_n,
        memset=workspace_bytes > 0 and split_k == 1)


def write_tile_table(table: dict, json_path: str) -> str:
    """The kernel configurations as JSON and the shape rows beside it as ``.npy``; returns that path."""
    rows_path = str(Path(json_path).with_suffix(".npy"))
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({"dtypes": table["dtypes"], "configs": table["configs"]}, f, separators=(",", ":"))
    np.save(rows_path, np.asarray(table["rows"], dtype=np.int32).reshape(-1, 5), allow_pickle=False)
    return rows_path


def build_tile_table(records: list[dict], heuristic: list[dict] = ()) -> dict:
    """Tile table (see ``_tile_table``) from profiled records with m, n, k, dtype, kernel_names,
    grids, blocks and shared_mem (lists), plus shapes labelled by cuBLASLt's heuristic (rows of
    ``cublaslt_query``, rank 0: m, n, k, dtype, tile, cluster, splitk, stages, workspace_bytes);
    a profiled shape keeps its profiled kernel. Heuristic kernels take the shared memory profiled
    for the same tile and K step (else three stages' operand tiles)."""
    dtypes: list[str] = []
    configs: list[TileConfig] = []
    index: dict[TileConfig, int] = {}
    rows = []
    smem: dict[tuple, int] = {}

    def add(call, cfg):
        if cfg not in index:
            index[cfg] = len(configs)
            configs.append(cfg)
        if call.dtype not in dtypes:
            dtypes.append(call.dtype)
        rows.append([dtypes.index(call.dtype), call.m, call.n, call.k, index[cfg]])

    seen = set()
    for rec in records:
        call = GemmCall(int(rec["m"]), int(rec["n"]), int(rec["k"]), rec["dtype"], "cublas")
        cfg = config_from_profile(call, rec["kernel_names"], rec["grids"], rec["blocks"], rec["shared_mem"])
        smem.setdefault((call.dtype, cfg.tile_m, cfg.tile_n, cfg.tile_k), cfg.shared_bytes)
        seen.add((call.m, call.n, call.k, call.dtype))
        add(call, cfg)
    for h in heuristic:
        call = GemmCall(int(h["m"]), int(h["n"]), int(h["k"]), h["dtype"], "cublas")
        if (call.m, call.n, call.k, call.dtype) in seen:
            continue
        seen.add((call.m, call.n, call.k, call.dtype))
        # nvjet algorithms report their stages as "<K step>xAUTO"; the others are pre-Hopper
        # kernels cuBLAS falls back to for shapes TMA cannot load (n or k not a multiple of 8)
        stages = str(h["stages"])
        k_step = int(stages.split("x")[0]) if stages.endswith("xAUTO") else 0
        if int(h["splitk"]) < 1 or call.n % 8 or call.k % 8:    # -1: a split cuBLAS settles at run time
            continue
        probe = config_from_heuristic(call, str(h["tile"]), str(h["cluster"]), int(h["splitk"]), k_step or 64,
                                      int(h["workspace_bytes"]), 0)
        if probe is None or not k_step:
            continue
        shared = smem.get((call.dtype, probe.tile_m, probe.tile_n, k_step),
                          min(227 * 1024, 3 * (probe.tile_m + probe.tile_n) * k_step * DTYPE_BYTES[call.dtype]))
        add(call, config_from_heuristic(call, str(h["tile"]), str(h["cluster"]), int(h["splitk"]), k_step,
                                        int(h["workspace_bytes"]), shared))
    return {"dtypes": dtypes, "configs": [cfg.__dict__ for cfg in configs], "rows": rows}


# -- decomposition -------------------------------------------------------------------------------

def decompose(call: GemmCall, gpu) -> tuple[Launch, ...]:
    return launches_for(call, choose_config(call, gpu), gpu)


def launches_for(call: GemmCall, cfg: TileConfig, gpu, *, cluster_padding: bool = True) -> tuple[Launch, ...]:
    """The launches of one GEMM under ``cfg``, cluster padding included (``grid_tiles``)."""
    b = DTYPE_BYTES[call.dtype]
    tiles, launched = grid_tiles(call, cfg, cluster_padding)
    tasks = launched * cfg.split_k
    k_chunk = round_up(ceil_div(call.k, cfg.split_k), cfg.tile_k)   # K slice one CTA walks
    partial_bytes = 4 if cfg.split_k > 1 or cfg.stream_k else OUT_BYTES   # split-K partials are fp32
    if cfg.stream_k:
        tasks = min(cfg.persistent_ctas, gpu.sm_count)
        k_chunk = round_up(ceil_div(tiles * round_up(call.k, cfg.tile_k), tasks), cfg.tile_k)
    # A cluster multicasts a tile to all its CTAs, so each CTA pulls only its share through L2.
    operand_l2 = (cfg.tile_m / cfg.cluster_n + cfg.tile_n / cfg.cluster_m) * k_chunk * b
    per_task = task_demand(
        tensor_flops=2.0 * cfg.tile_m * cfg.tile_n * k_chunk,
        # padding CTAs move no data of their own: the real tiles' bytes are spread over all tasks
        l2_bytes=(operand_l2 + cfg.tile_m * cfg.tile_n * partial_bytes) * (tiles / launched),
        shared_bytes=(cfg.tile_m + cfg.tile_n) * k_chunk * b,
    )
    scale_reads = 0.0
    if call.library == "fp8_block":
        scale_reads = 4.0 * (call.m + ceil_div(call.n, _FP8_BLOCK)) * ceil_div(call.k, _FP8_BLOCK)
    pieces = cfg.split_k if not cfg.stream_k else ceil_div(tasks, tiles) + 1   # partial sums per output
    writes = call.m * call.n * (partial_bytes * pieces if cfg.reduce_kernel else OUT_BYTES)
    main = Launch(
        name=cfg.kernel, demand=per_task, counts=[tasks],
        resources=Resources(cfg.threads, 168, cfg.shared_bytes),
        dram_read_bytes=(call.m + call.n) * call.k * b + scale_reads, dram_write_bytes=writes,
        tensor_dtype=TENSOR_DTYPE[call.dtype], tensor_path=cfg.tensor_path,
        persistent_ctas=min(tasks, cfg.persistent_ctas, gpu.sm_count) if cfg.persistent_ctas else None,
        loop_trips=k_chunk // cfg.tile_k,
        notes=(f"tile {cfg.tile_m}x{cfg.tile_n}x{cfg.tile_k}", f"split_k={cfg.split_k}", f"tiles={tiles}"),
    )
    launches = [main]
    if cfg.memset:
        # One small clear of the per-tile semaphores the persistent kernel synchronises on.
        launches.insert(0, Launch("memset workspace", task_demand(l2_bytes=4.0 * tiles), [1],
                                  Resources(32, 16, 0), dram_read_bytes=0.0, dram_write_bytes=4.0 * tiles))
    if cfg.reduce_kernel:
        # splitKreduce_kernel: reads every fp32 partial, writes the output once.
        elems = call.m * call.n
        per_cta = 256 * 4
        launches.append(Launch(
            name="splitKreduce_kernel",
            demand=task_demand(fma_ops=per_cta * pieces, l2_bytes=per_cta * (4 * pieces + OUT_BYTES)),
            counts=[ceil_div(elems, per_cta)], resources=Resources(256, 32, 0),
            dram_read_bytes=4.0 * elems * pieces, dram_write_bytes=OUT_BYTES * elems,
        ))
    return one_call(*launches)


def flops(call: GemmCall) -> float:
    """Useful FLOP of the call (what throughput figures are quoted against)."""
    return 2.0 * call.m * call.n * call.k

