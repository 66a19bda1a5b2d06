"""The feature vector of one kernel call: the per-pipe ideal times of its demand, plus the wave,
occupancy and imbalance measures. Hardware enters only through these times (never a GPU name),
which is what lets the efficiency model carry over to GPUs it was not trained on."""

from __future__ import annotations

import numpy as np

from synperf.cases import KernelCase
from synperf.demand import KernelDemand
from synperf.kernels._common import DTYPE_BYTES

# Pipes with a busiest-SM time and pipes with a GPU-wide time (DRAM is GPU-wide only, shared
# memory and latency per SM only).
SM_PIPES = ("tensor", "fma", "xu", "l2", "shared", "latency")
GPU_PIPES = ("tensor", "fma", "xu", "dram", "l2")

# Times are summed over the call's launches; every time is log1p(microseconds).
FEATURE_NAMES = (
    *(f"{pipe}_sm_us" for pipe in SM_PIPES),
    *(f"{pipe}_gpu_us" for pipe in GPU_PIPES),
    "fixed_us", "ceiling_us",
    "log_tasks", "max_waves", "min_ctas_per_sm", "max_imbalance", "slot_makespan_us", "launches",
    "dtype_bytes", "warm_cache", "dirty_writeback_us", "narrow_access", "loop_trips", "register_spill",
)
DIRTY_COLUMN = FEATURE_NAMES.index("dirty_writeback_us")
WARM_COLUMN = FEATURE_NAMES.index("warm_cache")


def features(case: KernelCase, demand: KernelDemand) -> np.ndarray:
    sm = [sum(ld.row(pipe).sm_us for ld in demand.launches) for pipe in SM_PIPES]
    gpu = [sum(ld.row(pipe).gpu_us for ld in demand.launches) for pipe in GPU_PIPES]
    fixed = sum(ld.fixed_us for ld in demand.launches)
    schedules = [ld.schedule for ld in demand.launches]
    values = [
        *np.log1p(sm), *np.log1p(gpu), np.log1p(fixed), np.log1p(demand.ceiling_us),
        np.log(sum(ld.launch.num_tasks for ld in demand.launches)),
        max(s.waves for s in schedules),
        min(s.occupancy.ctas_per_sm for s in schedules),
        max(s.imbalance for s in schedules),
        np.log1p(sum(ld.slot_makespan_us for ld in demand.launches)),
        len(demand.launches),
        DTYPE_BYTES[case.dtype],
        1.0 if case.cache == "warm" else 0.0,
        np.log1p(demand.dirty_writeback_us),
        np.log2(16 / min(ld.launch.access_bytes for ld in demand.launches)),   # 0 when fully vectorised
        np.log1p(max(ld.launch.loop_trips for ld in demand.launches)),
        np.log1p(max(ld.launch.spilled_registers for ld in demand.launches)),
    ]
    return np.asarray(values, dtype=np.float64)


def blind_unmeasured(X: np.ndarray, libraries, dirty_aware: set, warm_aware: set) -> np.ndarray:
    """Cache states a library was never measured in cannot tell the model what they cost: rows of
    libraries never timed after both kinds of flush count as clean (write-back feature zero), rows
    of libraries never timed warm as cold (warm flag zero; the demand still serves L2-resident
    operands from L2)."""
    libraries = np.asarray(libraries)
    dirty_blind = ~np.isin(libraries, sorted(dirty_aware))
    warm_blind = ~np.isin(libraries, sorted(warm_aware)) & (X[:, WARM_COLUMN] != 0)
    if not (dirty_blind.any() or warm_blind.any()):
        return X
    X = X.copy()
    X[dirty_blind, DIRTY_COLUMN] = 0.0
    X[warm_blind, WARM_COLUMN] = 0.0
    return X


def family_feature_names(family: str) -> tuple[str, ...]:
    """The family's model inputs: the shared features, a one-hot of its libraries and the family's
    own ``EXTRA_FEATURES`` (what its demand cannot show: attention's kernel path, MoE's config)."""
    from synperf.kernels import families
    module = families()[family]
    return (*FEATURE_NAMES, *(f"library_{lib}" for lib in module.LIBRARIES), *getattr(module, "EXTRA_FEATURES", ()))


def family_features(case: KernelCase, demand: KernelDemand) -> np.ndarray:
    from synperf.kernels import families
    module = families()[case.family]
    extra = module.extra_features(case.call) if hasattr(module, "EXTRA_FEATURES") else ()
    return np.concatenate([features(case, demand), [1.0 if case.library == lib else 0.0 for lib in module.LIBRARIES],
                           extra])


def case_variant(case: KernelCase) -> str:
    """The code path a call takes beyond what the features measure (library, dtype, and a
    family's own ``variant``, e.g. attention's phase and page size). The shipped model card lists
    the variants it was trained on; a prediction for another one is flagged out of range."""
    from synperf.kernels import families
    module = families()[case.family]
    own = module.variant(case.call) if hasattr(module, "variant") else ""
    return "/".join(part for part in (case.library, case.dtype, own) if part)
