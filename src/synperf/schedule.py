"""Place a launch's tasks on SMs: hardware round-robin with CTA retirement, or the kernel's own
persistent scheduler. The result is per-SM demand, from which the busiest SM is read."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synperf.gpu.spec import GpuSpec
from synperf.tasks import L2, SHARED, TENSOR, FMA, XU, Launch, Resources

_REGISTER_ALLOCATION_UNIT = 256     # registers are allocated per warp in chunks of 256
_SHARED_RESERVED_PER_CTA = 1024     # bytes the driver reserves per CTA (sm_80 and later)


@dataclass(frozen=True)
class Occupancy:
    ctas_per_sm: int
    limiter: str


def occupancy(resources: Resources, gpu: GpuSpec) -> Occupancy:
    """Resident CTAs per SM allowed by warps, registers, shared memory and the CTA limit."""
    warps = math.ceil(resources.threads / 32)
    regs_per_warp = math.ceil(resources.registers_per_thread * 32 / _REGISTER_ALLOCATION_UNIT) * _REGISTER_ALLOCATION_UNIT
    limits = {
        "cta_slots": gpu.max_ctas_per_sm,
        "warps": gpu.max_warps_per_sm // warps,
        "registers": (gpu.registers_per_sm // max(regs_per_warp, 1)) // warps if regs_per_warp else gpu.max_ctas_per_sm,
        "shared_memory": (int(gpu.shared_memory_per_sm_kb * 1024) // (resources.shared_bytes + _SHARED_RESERVED_PER_CTA)
                          if resources.shared_bytes else gpu.max_ctas_per_sm),
    }
    limiter = min(limits, key=limits.get)
    # A kernel that profiled fine always fits at least one CTA; clamp rather than divide by zero.
    return Occupancy(max(1, limits[limiter]), limiter)


def _per_sm_rates(gpu: GpuSpec, launch: Launch) -> np.ndarray:
    """Per-SM per-clock throughput of each task pipe, used to estimate task durations."""
    tensor = gpu.tensor_rate(launch.tensor_dtype, launch.tensor_path) if launch.tensor_dtype else 1.0
    rates = np.empty(5)
    rates[TENSOR] = tensor
    rates[FMA] = gpu.fp32_ops_per_clk_per_sm
    rates[XU] = gpu.xu_ops_per_clk_per_sm
    rates[L2] = gpu.l2_load_bytes_per_clk_per_sm
    rates[SHARED] = gpu.shared_bandwidth_bytes_per_clk_per_sm
    return rates


@dataclass(frozen=True, eq=False)
class Schedule:
    occupancy: Occupancy
    resident_ctas: int            # CTAs the grid keeps on the GPU at once (persistent grid or a full wave)
    per_sm_tasks: np.ndarray      # (n_sm,)
    per_sm_demand: np.ndarray     # (n_sm, 5) summed task demand
    per_sm_cycles: np.ndarray     # (n_sm,) estimated busy cycles (sum of task pipe-max cycles / slots)
    rounds_on_busiest: int        # tasks the busiest slot runs one after another
    waves: int
    # Cycles the longest-running CTA slot needs with each of its tasks at the whole SM's rate: with
    # per_sm_cycles (the busiest SM's load shared by its slots) it tells a lone long CTA, which
    # cannot use a whole SM, from a full SM of short ones.
    slot_makespan_cycles: float

    @property
    def busiest_sm(self) -> int:
        return int(np.argmax(self.per_sm_cycles))

    @property
    def imbalance(self) -> float:
        """Busiest SM's load over the mean SM load (1.0 = perfectly even)."""
        mean = float(self.per_sm_cycles.mean())
        return float(self.per_sm_cycles.max() / mean) if mean > 0 else 1.0


def schedule(launch: Launch, gpu: GpuSpec) -> Schedule:
    n_sm = gpu.sm_count
    occ = occupancy(launch.resources, gpu)
    task_cycles = (launch.demand / _per_sm_rates(gpu, launch)).max(axis=1)  # per class

    if launch.persistent_ctas is not None:
        ctas = min(launch.persistent_ctas, n_sm * occ.ctas_per_sm)
        classes = launch.task_classes()
        cta_of_task = (np.asarray(launch.task_cta, dtype=np.int64) if launch.task_cta is not None
                       else np.arange(classes.size) % ctas)
        sm_of_task = cta_of_task % n_sm
        per_cta = np.bincount(cta_of_task, minlength=ctas)
        rounds = int(per_cta.max())
        per_sm_tasks = np.bincount(sm_of_task, minlength=n_sm)
        per_sm_demand = np.zeros((n_sm, 5))
        np.add.at(per_sm_demand, sm_of_task, launch.demand[classes])
        per_sm_cycles = np.bincount(sm_of_task, weights=task_cycles[classes], minlength=n_sm)
        per_cta_cycles = np.bincount(cta_of_task, weights=task_cycles[classes], minlength=ctas)
        return Schedule(occ, ctas, per_sm_tasks, per_sm_demand, per_sm_cycles / max(1, math.ceil(ctas / n_sm)),
                        rounds, rounds, float(per_cta_cycles.max()))

    slots = n_sm * occ.ctas_per_sm
    total = launch.num_tasks
    waves = math.ceil(total / slots)
    used = np.flatnonzero(launch.counts)
    if used.size == 1:
        # Uniform tasks (one class, or one with tasks and empty others, e.g. a partial last column
        # block when there is only one column block): round-robin with retirement deals them
        # evenly in SM order.
        only = int(used[0])
        per_sm_tasks = np.full(n_sm, total // n_sm, dtype=np.int64)
        per_sm_tasks[: total % n_sm] += 1
        per_sm_demand = per_sm_tasks[:, None] * launch.demand[only][None, :]
        per_sm_cycles = per_sm_tasks * task_cycles[only] / occ.ctas_per_sm
        rounds = math.ceil(int(per_sm_tasks.max()) / occ.ctas_per_sm)
        return Schedule(occ, min(total, slots), per_sm_tasks, per_sm_demand.astype(np.float64), per_sm_cycles, rounds, waves,
                        rounds * float(task_cycles[only]))

    # Heterogeneous tasks: the GigaThread engine first deals one CTA to every SM, then more rounds
    # while resources allow; afterwards a waiting CTA goes to the slot that retires first. Tasks
    # after the first fill are placed in batches of half the slots, each batch onto the
    # slots that free up earliest (exact when a batch's tasks retire in the order they started;
    # one heap operation per task would cost seconds for a 100k-CTA causal attention grid).
    classes = launch.task_classes()
    durations = task_cycles[classes]
    slot_sm = np.arange(slots) % n_sm          # slot s = (round s // n_sm, SM s % n_sm)
    free_at = np.zeros(slots)
    slot_tasks = np.zeros(slots, dtype=np.int64)
    slot_of_task = np.empty(total, dtype=np.int64)
    first = min(total, slots)
    slot_of_task[:first] = np.arange(first)
    free_at[:first] = durations[:first]
    slot_tasks[:first] = 1
    # Very long grids are placed in runs of consecutive CTAs (at most ~32 runs per slot), which
    # keeps the cost bounded while each run stays small against a slot's total load.
    run = max(1, (total - first) // (32 * slots))
    starts = np.arange(first, total, run)
    run_durations = np.add.reduceat(durations[first:], starts - first) if starts.size else starts
    batch = max(1, slots // 2)
    run_slot = np.empty(starts.size, dtype=np.int64)
    for b0 in range(0, starts.size, batch):
        b1 = min(starts.size, b0 + batch)
        targets = np.argsort(free_at, kind="stable")[: b1 - b0]
        free_at[targets] += run_durations[b0:b1]
        slot_tasks[targets] += np.minimum(run, total - starts[b0:b1])
        run_slot[b0:b1] = targets
    # run j holds tasks starts[j] .. starts[j] + run - 1 (the last one may be short)
    slot_of_task[first:] = np.repeat(run_slot, run)[: total - first]
    sm_of_task = slot_sm[slot_of_task]
    per_sm_tasks = np.bincount(sm_of_task, minlength=n_sm)
    per_sm_demand = np.zeros((n_sm, 5))
    for column in range(5):
        per_sm_demand[:, column] = np.bincount(sm_of_task, weights=launch.demand[classes, column], minlength=n_sm)
    per_sm_cycles = np.bincount(sm_of_task, weights=durations, minlength=n_sm) / occ.ctas_per_sm
    return Schedule(occ, min(total, slots), per_sm_tasks, per_sm_demand, per_sm_cycles,
                    int(slot_tasks.max()), waves, float(free_at.max()))
