"""From a kernel case and a GPU to a latency estimate with an interval, its ceiling and bound.

The estimate comes from the family's learned efficiency model (``models/<family>.npz``, see
docs/efficiency-model.md): latency = ceiling x exp(predicted log(latency / ceiling)), with the 10th
and 90th quantiles as the interval, and ``ood`` set when a feature is outside the training range or
the call's variant (library, dtype, attention phase and page size, ...) was not in training.
A family without a model falls back to the analytical estimate: ceiling / typical efficiency from
``kernels/efficiency_priors.json``. The ceiling itself never depends on data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from pathlib import Path

import numpy as np

from synperf.cases import KernelCase
from synperf.demand import KernelDemand, kernel_demand
from synperf.efficiency import EfficiencyModel
from synperf.features import blind_unmeasured, case_variant, family_features
from synperf.errors import InputError, SynperfError, UnsupportedDtypeError
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
    ood: bool = False
    launches: int = 1       # kernel launches of the call (split-K reduce, memset, combine, ...)
    host_calls: int = 1     # of which the engine's host issues with calls of its own (Launch.within_call)

    def as_dict(self) -> dict:
        return {
            "latency_us": round(self.latency_us, 4),
            "latency_low_us": round(self.latency_low_us, 4),
            "latency_high_us": round(self.latency_high_us, 4),
            "ceiling_us": round(self.ceiling_us, 4),
            "bound": self.bound,
            "model": self.model,
            "ood": self.ood,
        }


@lru_cache(maxsize=1)
def _priors() -> dict:
    entry = resources.files("synperf.kernels") / "efficiency_priors.json"
    return json.loads(entry.read_text()) if entry.is_file() else {}


def model_dir() -> Path:
    return Path(str(resources.files("synperf") / "models"))


@lru_cache(maxsize=1)
def family_models() -> dict[str, tuple[EfficiencyModel, dict]]:
    """The shipped efficiency models by family (read once; a damaged file fails loudly)."""
    folder = model_dir()
    models = {card.stem: EfficiencyModel.load(folder / card.stem) for card in sorted(folder.glob("*.json"))}
    for family, (_, card) in models.items():
        if not isinstance(card.get("variants"), list):
            raise SynperfError(f"{folder / family}.json: lists no trained variants; rebuild with `synperf train`")
    return models


def efficiency_prior(family: str, library: str) -> dict:
    priors = _priors()
    return priors.get(f"{family}/{library}") or priors.get(family) or _DEFAULT_PRIOR


def demand_for(case: KernelCase, gpu: GpuSpec) -> KernelDemand:
    try:
        launches = families()[case.family].decompose(case.call, gpu)
        return kernel_demand(launches, gpu, case.cache)
    except UnsupportedDtypeError as exc:
        raise InputError(str(exc), "dtype") from None
    except MemoryError:
        # Every field is within its range, but together they ask for more tasks than fit in
        # memory (e.g. 65536 requests x 10M tokens x 1024 heads): the case's fault, one line.
        raise InputError(f"too large to model: the {case.family} call's tasks do not fit in memory"
                         f" (every field is in range, but not all at once)") from None


def interval_margin(card: dict, silicon: str) -> float:
    """The log margin added to both ends of the interval on a die of ``silicon``: on a die the model
    was trained on, what new shapes needed (a held-back fifth of the training rows); elsewhere what
    the other GPUs' measurements required (``synperf train --interval-calibration``)."""
    if silicon in card.get("silicon", ()):
        return float(card.get("seen_silicon_interval", {}).get("margin", 0.0))
    return float(card.get("unseen_silicon_interval", {}).get("margin", 0.0))


def _host_calls(demand: KernelDemand) -> int:
    return sum(not ld.launch.within_call for ld in demand.launches)


@lru_cache(maxsize=200_000)
def predict(case: KernelCase, gpu: GpuSpec) -> Prediction:
    """Cached: serving and end-to-end workloads repeat the same kernel shapes many times."""
    demand = demand_for(case, gpu)
    ceiling = float(demand.ceiling_us)
    learned = family_models().get(case.family)
    if learned is not None:
        model, card = learned
        aware = set(card.get("dirty_aware_libraries", ()))
        warm_aware = set(card.get("warm_aware_libraries", ()))
        x = blind_unmeasured(family_features(case, demand)[None], [case.library], aware, warm_aware)
        low, mid, high = model.predict(x, interval_margin=interval_margin(card, gpu.silicon_family))[0]
        return Prediction(
            latency_us=ceiling * float(np.exp(mid)), latency_low_us=ceiling * float(np.exp(low)),
            latency_high_us=ceiling * float(np.exp(high)), ceiling_us=ceiling, bound=demand.bound,
            model=f"mlp:{case.family}/v{card['format_version']} (trained on {card['rows']} rows from {', '.join(card['gpus'])})",
            ood=bool(model.out_of_range(x)[0]) or case_variant(case) not in card["variants"]
            or (case.cache == "cold_dirty" and case.library not in aware)
            or (case.cache == "warm" and case.library not in warm_aware),
            launches=len(demand.launches), host_calls=_host_calls(demand),
        )
    prior = efficiency_prior(case.family, case.library)
    # Efficiency = ceiling / latency, so the high-efficiency quantile gives the low latency.
    return Prediction(
        latency_us=ceiling / prior["median"],
        latency_low_us=ceiling / prior["high"],
        latency_high_us=ceiling / prior["low"],
        ceiling_us=ceiling,
        bound=demand.bound,
        model=f"analytical (ceiling / typical efficiency {prior['median']:.2f}; {prior['source']})",
        launches=len(demand.launches), host_calls=_host_calls(demand),
    )
