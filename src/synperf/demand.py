"""Pipeline demand: per pipe, the work a launch puts on the GPU and on its busiest SM, and the
ideal time each needs at this GPU's peak rates. The largest is the launch's ceiling (a lower
bound on its duration); its pipe is the ``bound``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synperf.gpu.spec import GpuSpec
from synperf.schedule import Schedule, schedule
from synperf.tasks import FMA, L2, SHARED, TENSOR, XU, Launch

PIPES = ("tensor", "fma", "xu", "dram", "l2", "shared", "latency")
UNITS = {"tensor": "FLOP", "fma": "op", "xu": "op", "dram": "B", "l2": "B", "shared": "B", "latency": "round"}
# cold: operands not in L2, L2 holding clean lines (a layer's weights in a forward pass);
# cold_dirty: operands not in L2 and L2 full of dirty lines that must be written back as they are
# evicted (what benchmarks flushing L2 with a store measure); warm: the previous identical call
# left its operands in L2.
CACHE_STATES = ("cold", "cold_dirty", "warm")


@dataclass(frozen=True)
class PipeRow:
    pipe: str
    gpu_demand: float       # whole launch, in UNITS[pipe]
    sm_demand: float        # busiest SM for this pipe
    gpu_us: float           # ideal time at GPU-wide peak
    sm_us: float            # ideal time of the busiest SM at per-SM peak

    @property
    def ideal_us(self) -> float:
        return max(self.gpu_us, self.sm_us)


@dataclass(frozen=True, eq=False)
class LaunchDemand:
    launch: Launch
    schedule: Schedule
    rows: tuple[PipeRow, ...]
    fixed_us: float   # launch floor + the first operand's DRAM round trip: before any pipe can work
    slot_makespan_us: float   # the longest CTA slot's tasks back to back, each at the whole SM's rates

    @property
    def ceiling_us(self) -> float:
        return self.fixed_us + max(row.ideal_us for row in self.rows)

    @property
    def bound(self) -> str:
        top = max(self.rows, key=lambda row: row.ideal_us)
        return top.pipe if top.ideal_us >= self.fixed_us else "latency"

    def row(self, pipe: str) -> PipeRow:
        return self.rows[PIPES.index(pipe)]


@dataclass(frozen=True, eq=False)
class KernelDemand:
    """All launches of one kernel call (e.g. a split-K GEMM and its reduce), run back to back."""
    launches: tuple[LaunchDemand, ...]
    # cold_dirty only: DRAM time to write back the dirty lines the call evicts (at most the whole
    # L2, as each line it brings in evicts one). Kept out of the ceiling: kernels pay a share of it
    # that depends on their length, which the efficiency model learns (feature dirty_writeback_us).
    dirty_writeback_us: float = 0.0

    @property
    def ceiling_us(self) -> float:
        return sum(ld.ceiling_us for ld in self.launches)

    @property
    def bound(self) -> str:
        return max(self.launches, key=lambda ld: ld.ceiling_us).bound

    def pipe_us(self, pipe: str) -> float:
        """Ideal time of ``pipe`` summed over launches."""
        return sum(ld.row(pipe).ideal_us for ld in self.launches)


def dram_traffic(launch: Launch, gpu: GpuSpec, cache: str) -> tuple[float, float]:
    """(read, write) bytes crossing the DRAM interface while the launch runs.

    Cold (clean or dirty L2): every input is read once. L2 is write-back, so an output reaches DRAM
    only when its line is evicted: of the stream the launch touches (reads + writes), the last
    L2-sized part is still in L2 when it ends, and the written share of that part is written back
    later, by whatever runs next. Nsight Compute's DRAM write counters on the H200 follow this with
    the whole L2 (docs/counters.md). The write-back of lines left dirty *before* the launch is
    ``KernelDemand.dirty_writeback_us``. Warm: the previous identical call left inputs and outputs
    in L2, so only what overflows L2 moves."""
    read, write = launch.dram_read_bytes, launch.dram_write_bytes
    l2 = gpu.l2_size_mb * 1e6
    touched = read + write
    if touched <= 0.0:
        return 0.0, 0.0
    if cache == "warm":
        scale = max(0.0, touched - l2) / touched
        return read * scale, write * scale
    return read, write * max(0.0, 1.0 - l2 / touched)


def dram_bytes(launch: Launch, gpu: GpuSpec, cache: str) -> float:
    return sum(dram_traffic(launch, gpu, cache))


def launch_demand(launch: Launch, gpu: GpuSpec, cache: str = "cold") -> LaunchDemand:
    sched = schedule(launch, gpu)
    clock = gpu.clock_hz
    n_sm = gpu.sm_count
    total = launch.total_demand
    sm_max = sched.per_sm_demand.max(axis=0)
    tensor_rate = gpu.tensor_rate(launch.tensor_dtype, launch.tensor_path) if launch.tensor_dtype else np.inf

    def math_row(pipe: str, col: int, rate_per_sm: float) -> PipeRow:
        return PipeRow(pipe, float(total[col]), float(sm_max[col]),
                       1e6 * total[col] / (rate_per_sm * n_sm * clock),
                       1e6 * sm_max[col] / (rate_per_sm * clock))

    dram = dram_bytes(launch, gpu, cache)
    serial_rounds = 0 if launch.persistent_ctas else sched.rounds_on_busiest - 1
    rows = (
        math_row("tensor", TENSOR, tensor_rate),
        math_row("fma", FMA, gpu.fp32_ops_per_clk_per_sm),
        math_row("xu", XU, gpu.xu_ops_per_clk_per_sm),
        PipeRow("dram", dram, dram / n_sm, 1e6 * dram / (gpu.dram_bandwidth_gb_s * 1e9), 0.0),
        PipeRow("l2", float(total[L2]), float(sm_max[L2]), 1e6 * total[L2] / (gpu.l2_bandwidth_gb_s * 1e9),
                1e6 * sm_max[L2] / (gpu.l2_load_bytes_per_clk_per_sm * clock)),
        PipeRow("shared", float(total[SHARED]), float(sm_max[SHARED]), 0.0,
                1e6 * sm_max[SHARED] / (gpu.shared_bandwidth_bytes_per_clk_per_sm * clock)),
        # Tasks sharing a CTA slot run one after another and each waits for its first operand
        # (a persistent CTA prefetches its next tile, so only its first one waits, in fixed_us).
        PipeRow("latency", float(serial_rounds), float(serial_rounds), 0.0, 1e-3 * gpu.dram_latency_ns * serial_rounds),
    )
    # Work cannot start before the kernel is launched and its first operand has crossed from DRAM,
    # and an empty kernel already takes the launch floor: these come before every pipe's time.
    fixed = (gpu.kernel_launch_floor_us or 0.0) + 1e-3 * gpu.dram_latency_ns
    return LaunchDemand(launch, sched, rows, fixed, 1e6 * sched.slot_makespan_cycles / clock)


def kernel_demand(launches: tuple[Launch, ...], gpu: GpuSpec, cache: str = "cold") -> KernelDemand:
    demands = tuple(launch_demand(launch, gpu, cache) for launch in launches)
    writeback_us = 0.0
    if cache == "cold_dirty":
        moved = sum(ld.row("dram").gpu_demand for ld in demands)
        writeback_us = 1e6 * min(moved, gpu.l2_size_mb * 1e6) / (gpu.dram_bandwidth_gb_s * 1e9)
    return KernelDemand(demands, writeback_us)
