"""A static batch end to end: SGLang ``bench_one_batch`` / vLLM ``benchmarks/latency`` semantics.

All prompts are prefilled as one batch (which also yields the first output token), then
``output_len - 1`` decode steps run the whole batch, each adding one token to every sequence
(step i sees kv lengths prompt + 1 + i). Each step is the sum of its kernels' predicted latencies
(``synperf.predict.predict``), its TP all-reduces (``comm``) and a CPU/launch overhead:

- decode runs under CUDA graphs: ``DECODE_GRAPH_OVERHEAD_US`` a step (assumption, not measured);
- prefill launches eagerly: ``PREFILL_LAUNCH_OVERHEAD_US`` per kernel launch (assumption).

Decode steps are priced every ``DECODE_STRIDE`` steps (and at the last one) and interpolated
linearly in between, as AIConfigurator does; step time is near-linear in kv length.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from synperf.cases import parse_case
from synperf.errors import InputError
from synperf.predict import predict
from synperf.workloads import comm
from synperf.workloads.engines import ForwardPass, forward_pass
from synperf.workloads.model import ModelConfig

DECODE_GRAPH_OVERHEAD_US = 30.0
PREFILL_LAUNCH_OVERHEAD_US = 4.0
DECODE_STRIDE = 16


@dataclass
class StepCost:
    latency_us: float
    low_us: float
    high_us: float
    comm_us: float
    overhead_us: float
    by_family: dict[str, float]
    ood_cases: int
    cases: int
    comm_model: str = ""


@dataclass
class BatchResult:
    model: str
    gpu: str
    tp: int
    framework: str
    batch: int
    prompt_tokens: int
    output_len: int
    prefill: StepCost
    decode_steps_us: list[float] = field(default_factory=list)
    decode_low_us: float = 0.0
    decode_high_us: float = 0.0
    median_decode: StepCost | None = None
    ood_kernels: int = 0
    kernels_priced: int = 0

    @property
    def prefill_ms(self) -> float:
        return self.prefill.latency_us / 1e3

    @property
    def decode_step_median_ms(self) -> float:
        return float(np.median(self.decode_steps_us)) / 1e3 if self.decode_steps_us else 0.0

    @property
    def decode_total_ms(self) -> float:
        return float(np.sum(self.decode_steps_us)) / 1e3

    @property
    def total_ms(self) -> float:
        return self.prefill_ms + self.decode_total_ms

    def as_dict(self) -> dict:
        def fam(step):
            return {k: round(v / 1e3, 4) for k, v in sorted(step.by_family.items())} if step else {}
        return {
            "model": self.model, "gpu": self.gpu, "tp": self.tp, "framework": self.framework,
            "batch": self.batch, "prompt_tokens": self.prompt_tokens, "output_len": self.output_len,
            "prefill_ms": round(self.prefill_ms, 4),
            "decode_step_median_ms": round(self.decode_step_median_ms, 4),
            "decode_steps": len(self.decode_steps_us),
            "total_ms": round(self.total_ms, 4),
            "total_low_ms": round((self.prefill.low_us + self.decode_low_us) / 1e3, 4),
            "total_high_ms": round((self.prefill.high_us + self.decode_high_us) / 1e3, 4),
            "breakdown_ms": {"prefill": fam(self.prefill), "decode_step_median": fam(self.median_decode)},
            "ood_kernels": self.ood_kernels, "kernels_priced": self.kernels_priced,
            "comm_model": self.prefill.comm_model or (self.median_decode.comm_model if self.median_decode else ""),
            "assumptions": {"decode_graph_overhead_us": DECODE_GRAPH_OVERHEAD_US,
                            "prefill_launch_overhead_us": PREFILL_LAUNCH_OVERHEAD_US,
                            "decode_stride": DECODE_STRIDE},
        }


def price_pass(fp: ForwardPass, gpu) -> StepCost:
    """Kernels via predict (cached), all-reduces via comm, plus the step's launch overhead."""
    lat = low = high = 0.0
    fam: dict[str, float] = defaultdict(float)
    ood = 0
    for case, count, _tag in fp.kernels:
        p = predict(parse_case(case), gpu)
        lat += p.latency_us * count
        low += p.latency_low_us * count
        high += p.latency_high_us * count
        fam[case["family"]] += p.latency_us * count
        ood += bool(p.ood)
    impl = f"{fp.framework}_{'graph' if fp.phase == 'decode' else 'eager'}"
    comm_us, models = 0.0, set()
    for nbytes, count, _tag in fp.allreduces:
        t, which = comm.allreduce_us(nbytes, fp.tp, gpu, impl)
        comm_us += t * count
        models.add(which)
    if comm_us:
        fam["all_reduce"] += comm_us
    overhead = DECODE_GRAPH_OVERHEAD_US if fp.phase == "decode" else PREFILL_LAUNCH_OVERHEAD_US * fp.kernel_launches
    fam["overhead"] += overhead
    extra = comm_us + overhead
    return StepCost(lat + extra, low + extra, high + extra, comm_us, overhead, dict(fam), ood, len(fp.kernels),
                    ", ".join(sorted(models)))


def simulate_batch(model: ModelConfig, gpu, tp: int, framework: str, prompt_lens: list[int],
                   output_len: int) -> BatchResult:
    if gpu.cc_major < 8:
        raise InputError(f"{gpu.id} (sm{gpu.compute_capability.replace('.', '')}) has no bf16 tensor cores;"
                         " end-to-end simulation is bf16 only")
    if not isinstance(output_len, int) or output_len < 1:
        raise InputError(f"output_len must be a positive integer, got {output_len!r}")
    prompts = [int(p) for p in prompt_lens]
    prefill = price_pass(forward_pass(model, gpu, tp, framework, "prefill", prompts), gpu)
    result = BatchResult(model.name.removesuffix(".json"), gpu.id, tp, framework, len(prompts), sum(prompts),
                         output_len, prefill)
    n_steps = output_len - 1
    ood, priced = prefill.ood_cases, prefill.cases
    if n_steps > 0:
        anchors = sorted(set(range(0, n_steps, DECODE_STRIDE)) | {n_steps - 1})
        costs = {}
        for i in anchors:
            costs[i] = price_pass(forward_pass(model, gpu, tp, framework, "decode", [p + 1 + i for p in prompts]), gpu)
            ood += costs[i].ood_cases
            priced += costs[i].cases
        xs = np.array(anchors, dtype=float)
        steps = np.arange(n_steps, dtype=float)
        interp = {k: np.interp(steps, xs, [getattr(costs[i], k) for i in anchors])
                  for k in ("latency_us", "low_us", "high_us")}
        result.decode_steps_us = interp["latency_us"].tolist()
        result.decode_low_us = float(interp["low_us"].sum())
        result.decode_high_us = float(interp["high_us"].sum())
        mid = int(np.argsort(interp["latency_us"])[(n_steps - 1) // 2])
        result.median_decode = costs[min(anchors, key=lambda a: abs(a - mid))]
    result.ood_kernels, result.kernels_priced = ood, priced
    return result


def format_result(r: BatchResult) -> str:
    d = r.as_dict()
    lines = [
        f"{d['model']} on {d['gpu']} x{d['tp']} (TP), {d['framework']}: batch {d['batch']}, "
        f"{d['prompt_tokens']} prompt tokens, {d['output_len']} output tokens each",
        f"  prefill          {d['prefill_ms']:10.3f} ms",
        f"  decode step      {d['decode_step_median_ms']:10.3f} ms (median of {d['decode_steps']} steps)",
        f"  total            {d['total_ms']:10.3f} ms  (interval {d['total_low_ms']:.1f} - {d['total_high_ms']:.1f} ms)",
        "  per family (ms)       prefill   decode step",
    ]
    pre, dec = d["breakdown_ms"]["prefill"], d["breakdown_ms"]["decode_step_median"]
    for fam in sorted(set(pre) | set(dec), key=lambda f: -pre.get(f, 0.0)):
        lines.append(f"    {fam:<16} {pre.get(fam, 0.0):10.3f} {dec.get(fam, 0.0):12.4f}")
    lines.append(f"  kernel cases priced: {d['kernels_priced']}, out of training range: {d['ood_kernels']}"
                 + (f"; all-reduce: {d['comm_model']}" if d["comm_model"] else ""))
    return "\n".join(lines)
