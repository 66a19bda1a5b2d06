"""From a kernel case and a GPU to a latency estimate with an interval, its ceiling and bound.

Until a learned efficiency model ships, the estimate is analytical: ceiling / typical efficiency,
with the typical efficiency and its spread per family read from ``kernels/efficiency_priors.json``
(fitted on measured data, see docs/ceiling.md). The ceiling itself never depends on data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from synperf.cases import KernelCase
from synperf.demand import KernelDemand, kernel_demand
from synperf.gpu.spec import GpuSpec
from synperf.kernels import families

_DEFAULT_PRIOR = {"median": 0.5, "low": 0.2, "high": 0.9, "source": "no measured data: generic prior"}


@dataclass(frozen=True)
class Prediction:
    latency_us: float
    latency_low_us: float
    latency_high_us: float
    ceiling_us: float
    bound: str
    model: str

    def as_dict(self) -> dict:
        return {
            "latency_us": round(self.latency_us, 4),
            "latency_low_us": round(self.latency_low_us, 4),
            "latency_high_us": round(self.latency_high_us, 4),
            "ceiling_us": round(self.ceiling_us, 4),
            "bound": self.bound,
            "model": self.model,
        }


@lru_cache(maxsize=1)
def _priors() -> dict:
    entry = resources.files("synperf.kernels") / "efficiency_priors.json"
    return json.loads(entry.read_text()) if entry.is_file() else {}


def efficiency_prior(family: str, library: str) -> dict:
    priors = _priors()
    return priors.get(f"{family}/{library}") or priors.get(family) or _DEFAULT_PRIOR


def demand_for(case: KernelCase, gpu: GpuSpec) -> KernelDemand:
    launches = families()[case.family].decompose(case.call, gpu)
    return kernel_demand(launches, gpu, case.cache)


@lru_cache(maxsize=200_000)
def predict(case: KernelCase, gpu: GpuSpec) -> Prediction:
    """Cached: serving and end-to-end workloads repeat the same kernel shapes many times."""
    demand = demand_for(case, gpu)
    ceiling = demand.ceiling_us
    prior = efficiency_prior(case.family, case.library)
    # Efficiency = ceiling / latency, so the high-efficiency quantile gives the low latency.
    return Prediction(
        latency_us=ceiling / prior["median"],
        latency_low_us=ceiling / prior["high"],
        latency_high_us=ceiling / prior["low"],
        ceiling_us=ceiling,
        bound=demand.bound,
        model=f"analytical (ceiling / typical efficiency {prior['median']:.2f}; {prior['source']})",
    )
