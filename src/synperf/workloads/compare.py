"""Which GPU serves a workload best, and at what cost: the same requests through the serving
simulator (``serving.simulate_serving``) on each GPU, side by side, with the throughput per GPU and,
given an hourly price, the cost of a million output tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

from synperf.errors import InputError
from synperf.workloads.model import ModelConfig
from synperf.workloads.serving import Request, ServeResult, simulate_serving


# A GPU that delivers less than this share of the workload's offered output rate could not keep up.
SATURATED_SHARE = 0.95


@dataclass
class GpuOffer:
    """One replica's answer (a GPU at a TP): its serving result, or why it cannot serve the workload."""
    gpu: str
    tp: int
    trained_on_die: bool            # the efficiency models saw this GPU's silicon in training
    price_per_gpu_hour: float | None
    list_price_usd: float | None
    offered_tok_s: float            # the workload's output tokens over its arrival span (inf: all at once)
    result: ServeResult | None = None
    refused: str = ""

    def as_dict(self) -> dict:
        d = {"gpu": self.gpu, "gpus": self.tp, "trained_on_die": self.trained_on_die,
             "price_per_gpu_hour_usd": self.price_per_gpu_hour, "list_price_usd": self.list_price_usd,
             "serves": self.result is not None}
        if self.result is None:
            return {**d, "refused": self.refused}
        served = self.result.as_dict(timeline=False)
        tok_s = served["output_throughput_tok_s"]
        d.update({key: served[key] for key in ("output_throughput_tok_s", "request_throughput_req_s", "ttft_ms",
                                               "tpot_ms", "e2e_latency_ms", "kv_cache_tokens", "preemptions",
                                               "ood_kernels")})
        d["output_tok_s_per_gpu"] = round(tok_s / self.tp, 2)
        # Below the offered rate the GPU was saturated: its cost per token is its best. Above it,
        # the arrivals set the throughput and the cost would fall with more load.
        d["saturated"] = tok_s < SATURATED_SHARE * self.offered_tok_s
        # the hourly price pays for every GPU of the replica; a purchase price for the GPU alone
        d["usd_per_million_output_tokens"] = (round(self.price_per_gpu_hour * self.tp / 3600 / tok_s * 1e6, 4)
                                              if self.price_per_gpu_hour and tok_s else None)
        d["output_tok_s_per_1000_usd_list"] = (round(tok_s / (self.list_price_usd * self.tp / 1000), 3)
                                               if self.list_price_usd and tok_s else None)
        return d


def trained_silicon() -> set[str]:
    """Dies every shipped efficiency model was trained on (elsewhere the interval carries the
    unseen-die margin and the kernels extrapolate)."""
    from synperf.predict import family_models

    cards = [card for _, card in family_models().values()]
    return set.intersection(*(set(card["silicon"]) for card in cards)) if cards else set()


def compare_gpus(model: ModelConfig, replicas: list, framework: str, requests: list[Request],
                 prices: dict[str, float] | None = None, **serve_options) -> list[GpuOffer]:
    """Every replica in ``replicas`` ((GPU spec, TP) pairs: one GPU at several TPs, or several GPUs)
    serving ``requests``; ``prices``: USD per GPU-hour by GPU id; ``serve_options``:
    ``simulate_serving``'s scheduler and memory options. A replica that cannot serve the workload
    (the weights do not fit, a request outgrows the KV cache, no bf16 tensor cores) is kept with the
    reason. Ordered by the cost of a million output tokens where every serving replica has a price,
    otherwise by output tokens per second per GPU."""
    prices = prices or {}
    trained = trained_silicon()
    last_arrival = max(r.arrival_s for r in requests) if requests else 0.0
    offered = sum(r.output_tokens for r in requests) / last_arrival if last_arrival > 0 else math.inf
    offers = []
    for gpu, tp in replicas:
        offer = GpuOffer(gpu.id, tp, gpu.silicon_family in trained, prices.get(gpu.id), gpu.list_price_usd, offered)
        try:
            offer.result = simulate_serving(model, gpu, tp, framework, requests, **serve_options)
        except InputError as exc:
            offer.refused = str(exc)
        offers.append(offer)
    serving = [o for o in offers if o.result is not None]
    priced = bool(serving) and all(o.price_per_gpu_hour for o in serving)

    def rank(offer: GpuOffer):
        if offer.result is None:
            return (1, 0.0)
        d = offer.as_dict()
        return (0, d["usd_per_million_output_tokens"] if priced else -d["output_tok_s_per_gpu"])
    return sorted(offers, key=rank)


def _ms(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def format_compare(offers: list[GpuOffer], heading: str) -> str:
    rows = [o.as_dict() for o in offers]
    width = max([6] + [len(r["gpu"]) + 2 for r in rows])
    lines = [heading,
             f"{'gpu':<{width}}{'GPUs':>5}{'tok/s':>10}{'per GPU':>9}{'TTFT p50':>10}{'p99':>9}{'TPOT p50':>10}"
             f"{'p99':>8}{'KV tokens':>11}{'$/GPU-h':>9}{'$/Mtok':>9}{'tok/s per $1k':>15}  notes"]
    for r in rows:
        if not r["serves"]:
            lines.append(f"{r['gpu']:<{width}}{r['gpus']:>5}  cannot serve it: {r['refused']}")
            continue
        notes = ["saturated" if r["saturated"] else "keeps up with the arrivals"]
        if not r["trained_on_die"]:
            notes.append("die never trained on: wider uncertainty")
        if r["preemptions"]:
            notes.append(f"{r['preemptions']} preemptions")
        price = f"{r['price_per_gpu_hour_usd']:.2f}" if r["price_per_gpu_hour_usd"] else "-"
        cost = f"{r['usd_per_million_output_tokens']:.3f}" if r["usd_per_million_output_tokens"] else "-"
        capex = f"{r['output_tok_s_per_1000_usd_list']:.2f}" if r["output_tok_s_per_1000_usd_list"] else "-"
        ttft, tpot = r["ttft_ms"], r["tpot_ms"] or {"p50": None, "p99": None}   # no TPOT: one-token outputs
        lines.append(f"{r['gpu']:<{width}}{r['gpus']:>5}{r['output_throughput_tok_s']:>10.0f}{r['output_tok_s_per_gpu']:>9.0f}"
                     f"{_ms(ttft['p50'], 10, 1)}{_ms(ttft['p99'], 9, 1)}{_ms(tpot['p50'], 10, 2)}{_ms(tpot['p99'], 8, 2)}"
                     f"{r['kv_cache_tokens']:>11}{price:>9}{cost:>9}{capex:>15}  {'; '.join(notes)}")
    lines.append("TTFT and TPOT in ms. $/Mtok: the replica's GPU-hours per million output tokens; tok/s per $1k:"
                 " output tokens a second per $1,000 of list price (`synperf gpus`).")
    lines.append("A GPU that keeps up is paced by the arrivals (its cost per token falls with more load): to"
                 " compare best costs, offer more requests a second than any GPU serves.")
    return "\n".join(lines)
