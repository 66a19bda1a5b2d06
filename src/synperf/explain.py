"""Human-readable breakdown of one kernel call: tasks, waves, imbalance and the per-pipe table."""

from __future__ import annotations

from synperf.demand import PIPES, UNITS, KernelDemand


def _fmt(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.3g}"


def explain_text(demand: KernelDemand, gpu_id: str) -> str:
    lines = [f"GPU {gpu_id}: ceiling {demand.ceiling_us:.3f} us, bound by {demand.bound}"]
    for ld in demand.launches:
        s = ld.schedule
        launch = ld.launch
        lines.append("")
        lines.append(f"launch {launch.name}" + (f"  [{'; '.join(launch.notes)}]" if launch.notes else ""))
        kind = f"persistent grid of {s.resident_ctas} CTAs" if launch.persistent_ctas else "hardware round-robin"
        lines.append(f"  tasks {launch.num_tasks} ({launch.counts.size} class(es)), {kind}, "
                     f"{s.occupancy.ctas_per_sm} CTA/SM (limited by {s.occupancy.limiter}), waves {s.waves}")
        lines.append(f"  tasks per SM min/max {int(s.per_sm_tasks.min())}/{int(s.per_sm_tasks.max())}, "
                     f"busiest SM {s.busiest_sm}, imbalance {s.imbalance:.3f}, "
                     f"longest CTA slot {ld.slot_makespan_us:.3f} us at the whole SM's rates")
        lines.append(f"  {'pipe':<8}{'GPU demand':>14}{'busiest SM':>14}{'GPU us':>10}{'SM us':>10}{'share':>8}")
        ceiling = ld.ceiling_us
        for pipe in PIPES:
            row = ld.row(pipe)
            if row.gpu_demand == 0 and row.sm_demand == 0:
                continue
            share = (row.ideal_us + ld.fixed_us) / ceiling if ceiling else 0.0
            lines.append(f"  {pipe:<8}{_fmt(row.gpu_demand) + ' ' + UNITS[pipe]:>14}{_fmt(row.sm_demand) + ' ' + UNITS[pipe]:>14}"
                         f"{row.gpu_us:>10.3f}{row.sm_us:>10.3f}{share:>8.0%}")
        if launch.access_bytes < 16:
            lines.append(f"  memory accesses {launch.access_bytes} B wide (not 16 B): more instructions for the same bytes")
        if launch.spilled_registers:
            lines.append(f"  needs ~{launch.spilled_registers} registers per thread beyond the "
                         f"{launch.resources.registers_per_thread} allocated (the cap is 255): "
                         f"the compiler spills them to local memory")
        lines.append(f"  fixed   launch floor + first DRAM round trip {ld.fixed_us:.3f} us")
        lines.append(f"  ceiling {ceiling:.3f} us ({ld.bound})")
    if demand.dirty_writeback_us:
        lines.append("")
        lines.append(f"dirty L2 (cold_dirty): writing back the evicted lines takes {demand.dirty_writeback_us:.3f} us of "
                     f"DRAM time, outside the ceiling; the model prices the share kernels pay")
    return "\n".join(lines)


def explain_dict(demand: KernelDemand) -> dict:
    return {
        "ceiling_us": demand.ceiling_us,
        "bound": demand.bound,
        "dirty_writeback_us": demand.dirty_writeback_us,
        "launches": [
            {
                "name": ld.launch.name,
                "notes": list(ld.launch.notes),
                "tasks": ld.launch.num_tasks,
                "ctas_per_sm": ld.schedule.occupancy.ctas_per_sm,
                "occupancy_limiter": ld.schedule.occupancy.limiter,
                "waves": ld.schedule.waves,
                "access_bytes": ld.launch.access_bytes,
                "spilled_registers": ld.launch.spilled_registers,
                "imbalance": ld.schedule.imbalance,
                "slot_makespan_us": ld.slot_makespan_us,
                "fixed_us": ld.fixed_us,
                "ceiling_us": ld.ceiling_us,
                "bound": ld.bound,
                "pipes": {row.pipe: {"gpu_demand": row.gpu_demand, "sm_demand": row.sm_demand, "unit": UNITS[row.pipe],
                                     "gpu_us": row.gpu_us, "sm_us": row.sm_us} for row in ld.rows},
            }
            for ld in demand.launches
        ],
    }
