"""Which GPU serves a workload best, and at what cost: the same requests through the serving
simulator (``serving.simulate_serving``) on each GPU, side by side, with the throughput per GPU and,
given an hourly price, the cost of a million output tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

from synperf.errors import InputError
from synperf.workloads.model import ModelConfig
from synperf.workloads.serving import Request, ServeResult, simulate_serving

# The load search of an SLO: doublings (or halvings) from the workload's own rate until the SLO
# flips, then halvings of the bracket in log space (2^(1/32): about 2 % apart).
SLO_DOUBLINGS = 12
SLO_BISECTIONS = 5


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
    load_scale: float | None = None     # with an SLO: the arrival-rate multiple the result ran at
    offered_req_s: float = math.inf

    def as_dict(self) -> dict:
        d = {"gpu": self.gpu, "gpus": self.tp, "trained_on_die": self.trained_on_die,
             "price_per_gpu_hour_usd": self.price_per_gpu_hour, "list_price_usd": self.list_price_usd,
             "serves": self.result is not None}
        if self.result is None:
            return {**d, "refused": self.refused}
        served = self.result.as_dict(timeline=False)
        d.update({key: served[key] for key in ("output_throughput_tok_s", "request_throughput_req_s", "ttft_ms",
                                               "tpot_ms", "e2e_latency_ms", "kv_cache_tokens", "preemptions",
                                               "ood_kernels")})
        if self.load_scale is not None:
            # within its SLO the replica keeps up: it sustains the arrivals' output rate (the run's own
            # throughput also counts the ramp and the drain of a finite run)
            d["output_throughput_tok_s"] = round(self.offered_tok_s, 2)
            d["load_scale"] = round(self.load_scale, 4)
            d["max_request_rate_req_s"] = round(self.offered_req_s, 4)
            d["max_request_rate_req_s_per_gpu"] = round(self.offered_req_s / self.tp, 4)
        tok_s = d["output_throughput_tok_s"]
        d["output_tok_s_per_gpu"] = round(tok_s / self.tp, 2)
        # Below the offered rate the GPU was saturated: its cost per token is its best. Above it,
        # the arrivals set the throughput and the cost would fall with more load.
        d["saturated"] = tok_s < SATURATED_SHARE * self.offered_tok_s
        # both prices are per GPU: the replica pays for tp of them
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


@dataclass(frozen=True)
class Slo:
    """Service-level objectives on the 99th percentiles (ms); None: not constrained."""
    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None

    def met_by(self, result: ServeResult) -> bool:
        d = result.as_dict(timeline=False)
        ttft_ok = self.ttft_p99_ms is None or d["ttft_ms"]["p99"] <= self.ttft_p99_ms
        tpot_ok = self.tpot_p99_ms is None or d["tpot_ms"] is None or d["tpot_ms"]["p99"] <= self.tpot_p99_ms
        return ttft_ok and tpot_ok


def at_load(requests: list[Request], scale: float) -> list[Request]:
    """The workload with its arrivals ``scale`` times as frequent (the same requests, sooner)."""
    return [Request(r.arrival_s / scale, r.prompt_tokens, r.output_tokens) for r in requests]


def heaviest_load_within(slo: Slo, run) -> tuple[float | None, ServeResult]:
    """The largest arrival-rate multiple (searched as the constants above say) at which ``run(scale)``
    meets ``slo``, with that run; None and the lightest run when even a 4096th of the load misses it
    (4096 times the load meeting it ends the search there)."""
    cache: dict[float, ServeResult] = {}

    def ok(scale: float) -> bool:
        if scale not in cache:
            cache[scale] = run(scale)
        return slo.met_by(cache[scale])

    scale = 1.0
    step = 2.0 if ok(scale) else 0.5
    for _ in range(SLO_DOUBLINGS):
        if ok(scale * step) != (step > 1):
            break
        scale *= step
    else:
        return (scale, cache[scale]) if ok(scale) else (None, cache[scale])
    low, high = (scale, scale * step) if step > 1 else (scale * step, scale)   # low meets it, high not
    for _ in range(SLO_BISECTIONS):
        middle = (low * high) ** 0.5
        low, high = (middle, high) if ok(middle) else (low, middle)
    return low, cache[low]


def compare_gpus(model: ModelConfig, replicas: list, framework: str, requests: list[Request],
                 prices: dict[str, float] | None = None, slo: Slo | None = None, **serve_options) -> list[GpuOffer]:
    """Every replica in ``replicas`` ((GPU spec, TP) pairs: one GPU at several TPs, or several GPUs)
    serving ``requests``; ``prices``: USD per GPU-hour by GPU id; ``slo``: instead of the workload as
    given, each replica serves it at the heaviest arrival rate that still meets the SLO
    (``heaviest_load_within``); ``serve_options``: ``simulate_serving``'s scheduler and memory
    options. A replica that cannot serve the workload (the weights do not fit, a request outgrows
    the KV cache, no bf16 tensor cores, the SLO missed at every load) is kept with the reason.
    Ordered by the cost of a million output tokens where every serving replica has a price,
    otherwise by the rate per GPU (requests under an SLO, output tokens without)."""
    prices = prices or {}
    trained = trained_silicon()
    last_arrival = max(r.arrival_s for r in requests) if requests else 0.0
    if slo is not None and last_arrival <= 0:
        raise InputError("an SLO search needs arrivals spread in time (a rate, or a trace with arrival times)")
    offered = sum(r.output_tokens for r in requests) / last_arrival if last_arrival > 0 else math.inf
    offers = []
    for gpu, tp in replicas:
        offer = GpuOffer(gpu.id, tp, gpu.silicon_family in trained, prices.get(gpu.id), gpu.list_price_usd, offered)
        try:
            if slo is None:
                offer.result = simulate_serving(model, gpu, tp, framework, requests, **serve_options)
            else:
                scale, result = heaviest_load_within(slo, lambda scale: simulate_serving(
                    model, gpu, tp, framework, at_load(requests, scale), **serve_options))
                if scale is None:
                    d = result.as_dict(timeline=False)
                    offer.refused = (f"misses the SLO even at a 4096th of the workload's rate (p99 TTFT"
                                     f" {d['ttft_ms']['p99']:.0f} ms, TPOT "
                                     + (f"{d['tpot_ms']['p99']:.1f} ms)" if d["tpot_ms"] else "- )"))
                else:
                    offer.load_scale, offer.result = scale, result
                    offer.offered_tok_s = offered * offer.load_scale
                    offer.offered_req_s = len(requests) / last_arrival * offer.load_scale
        except InputError as exc:
            offer.refused = str(exc)
        offers.append(offer)
    serving = [o for o in offers if o.result is not None]
    priced = bool(serving) and all(o.price_per_gpu_hour for o in serving)

    def rank(offer: GpuOffer):
        if offer.result is None:
            return (1, 0.0)
        d = offer.as_dict()
        if priced:
            return (0, d["usd_per_million_output_tokens"])
        return (0, -(d["max_request_rate_req_s_per_gpu"] if slo is not None else d["output_tok_s_per_gpu"]))
    return sorted(offers, key=rank)


def _ms(value: float | None, width: int, digits: int) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def format_compare(offers: list[GpuOffer], heading: str) -> str:
    rows = [o.as_dict() for o in offers]
    searched = any("load_scale" in r for r in rows) or any("SLO" in r.get("refused", "") for r in rows)
    width = max([6] + [len(r["gpu"]) + 2 for r in rows])
    lines = [heading,
             f"{'gpu':<{width}}{'GPUs':>5}" + (f"{'req/s':>8}" if searched else "")
             + f"{'tok/s':>10}{'per GPU':>9}{'TTFT p50':>10}{'p99':>9}{'TPOT p50':>10}"
             f"{'p99':>8}{'KV tokens':>11}{'$/GPU-h':>9}{'$/Mtok':>9}{'tok/s per $1k':>15}  notes"]
    for r in rows:
        if not r["serves"]:
            lines.append(f"{r['gpu']:<{width}}{r['gpus']:>5}  cannot serve it: {r['refused']}")
            continue
        notes = [] if searched else ["saturated" if r["saturated"] else "keeps up with the arrivals"]
        if not r["trained_on_die"]:
            notes.append("die never trained on: wider uncertainty")
        if r["preemptions"]:
            notes.append(f"{r['preemptions']} preemptions")
        price = f"{r['price_per_gpu_hour_usd']:.2f}" if r["price_per_gpu_hour_usd"] else "-"
        cost = f"{r['usd_per_million_output_tokens']:.3f}" if r["usd_per_million_output_tokens"] else "-"
        capex = f"{r['output_tok_s_per_1000_usd_list']:.2f}" if r["output_tok_s_per_1000_usd_list"] else "-"
        ttft, tpot = r["ttft_ms"], r["tpot_ms"] or {"p50": None, "p99": None}   # no TPOT: one-token outputs
        lines.append(f"{r['gpu']:<{width}}{r['gpus']:>5}" + (f"{r['max_request_rate_req_s']:>8.2f}" if searched else "")
                     + f"{r['output_throughput_tok_s']:>10.0f}{r['output_tok_s_per_gpu']:>9.0f}"
                     f"{_ms(ttft['p50'], 10, 1)}{_ms(ttft['p99'], 9, 1)}{_ms(tpot['p50'], 10, 2)}{_ms(tpot['p99'], 8, 2)}"
                     f"{r['kv_cache_tokens']:>11}{price:>9}{cost:>9}{capex:>15}  {'; '.join(notes)}")
    lines.append("TTFT and TPOT in ms. $/Mtok: the replica's GPU-hours per million output tokens; tok/s per $1k:"
                 " output tokens a second per $1,000 of list price (`synperf gpus`).")
    if searched:
        lines.append("req/s: the heaviest arrival rate of this workload at which the replica meets the SLO (within"
                     " about 2 %); tok/s: the output rate it then sustains; latencies from the run at that rate.")
    else:
        lines.append("A GPU that keeps up is paced by the arrivals (its cost per token falls with more load): to"
                     " compare best costs, offer more requests a second than any GPU serves, or give an SLO.")
    return "\n".join(lines)
