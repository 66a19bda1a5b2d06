import numpy as np
import pytest

from synperf.schedule import occupancy, schedule
from synperf.tasks import Launch, Resources, task_demand


def test_occupancy_limits(h100):
    # 128 threads, 32 regs, no smem: warps allow 64/4 = 16, CTA slots 32 -> 16, limited by warps.
    occ = occupancy(Resources(128, 32, 0), h100)
    assert (occ.ctas_per_sm, occ.limiter) == (16, "warps")
    # 256 threads x 128 regs = 32768 regs -> 2 CTAs by registers.
    occ = occupancy(Resources(256, 128, 0), h100)
    assert (occ.ctas_per_sm, occ.limiter) == (2, "registers")
    # 100 KB smem: 228 KB / (100 KB + 1 KB reserved) -> 2.
    occ = occupancy(Resources(128, 32, 100 * 1024), h100)
    assert (occ.ctas_per_sm, occ.limiter) == (2, "shared_memory")


def _launch(counts, demand, order=None, persistent=None, task_cta=None, res=Resources(128, 32, 100 * 1024)):
    return Launch("t", np.array(demand, dtype=float), counts, res, 0.0, 0.0, tensor_dtype="bf16",
                  order=order, persistent_ctas=persistent, task_cta=task_cta)


def test_uniform_round_robin_counts(h100):
    s = schedule(_launch([300], [task_demand(tensor_flops=1e6)]), h100)
    # 300 tasks over 132 SMs: 36 SMs get 3, the rest 2.
    assert sorted(set(s.per_sm_tasks.tolist())) == [2, 3]
    assert int((s.per_sm_tasks == 3).sum()) == 300 - 2 * 132
    assert s.waves == 2  # 264 slots at 2 CTA/SM
    assert s.rounds_on_busiest == 2
    assert s.per_sm_demand[:, 0].max() == pytest.approx(3e6)


def test_heterogeneous_simulation_matches_uniform_when_tasks_are_equal(h100):
    uniform = schedule(_launch([300], [task_demand(tensor_flops=1e6)]), h100)
    split = schedule(_launch([100, 200], [task_demand(tensor_flops=1e6)] * 2), h100)
    assert sorted(split.per_sm_tasks.tolist()) == sorted(uniform.per_sm_tasks.tolist())


def test_retirement_sends_work_to_free_slots(h100):
    # 264 long tasks fill every slot, then 264 short ones: they queue behind the long tasks evenly,
    # and a further long task lands where a short one retired first.
    demand = [task_demand(tensor_flops=1e8), task_demand(tensor_flops=1e5)]
    order = np.array([0] * 264 + [1] * 264)
    s = schedule(_launch([264, 264], demand, order=order), h100)
    assert s.per_sm_tasks.tolist() == [4] * 132
    order = np.array([0] * 132 + [1] * 132 + [1] * 132 + [0])
    s = schedule(_launch([133, 264], demand, order=order), h100)
    # The final long task goes to SM 0: its short-task slot (round 1) retires first.
    assert s.per_sm_demand[0, 0] == pytest.approx(2e8 + 2e5)


def test_persistent_static_stride(h100):
    s = schedule(_launch([1000], [task_demand(tensor_flops=1.0)], persistent=132, res=Resources(384, 168, 200_000)), h100)
    assert s.rounds_on_busiest == 8  # ceil(1000 / 132)
    assert int(s.per_sm_tasks.sum()) == 1000 and int(s.per_sm_tasks.max()) == 8
    pinned = np.zeros(10, dtype=int)  # a custom scheduler may pin every task to CTA 0
    s = schedule(_launch([10], [task_demand(tensor_flops=1.0)], persistent=132, task_cta=pinned,
                         res=Resources(384, 168, 200_000)), h100)
    assert s.per_sm_tasks[0] == 10 and s.imbalance > 100


def test_slot_makespan_tells_a_lone_long_cta_from_a_full_sm(h100):
    """A full SM of equal CTAs shares its pipes among its slots, so its longest slot is the SM's
    load over the slots per SM; one long CTA beside short ones is its slot's whole length, which
    the busiest SM's shared load alone would not show."""
    long, short = task_demand(tensor_flops=1e9), task_demand(tensor_flops=1e6)
    full = schedule(_launch([264], [long]), h100)            # 2 slots per SM, one CTA each
    assert full.occupancy.ctas_per_sm == 2
    assert full.slot_makespan_cycles == pytest.approx(full.per_sm_cycles.max())
    lone = schedule(_launch([1, 263], [long, short]), h100)
    assert lone.slot_makespan_cycles == pytest.approx(full.slot_makespan_cycles)
    assert lone.per_sm_cycles.max() == pytest.approx(full.per_sm_cycles.max() / 2, rel=0.01)
    # A persistent CTA runs its tiles back to back: its makespan is their sum.
    res = Resources(384, 168, 200_000)
    one_each = schedule(_launch([132], [short], persistent=132, res=res), h100)
    eight_max = schedule(_launch([1000], [short], persistent=132, res=res), h100)
    assert eight_max.slot_makespan_cycles == pytest.approx(8 * one_each.slot_makespan_cycles)
