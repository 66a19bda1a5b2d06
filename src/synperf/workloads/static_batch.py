"""A static batch end to end: SGLang ``bench_one_batch`` / vLLM ``benchmarks/latency`` semantics.

All prompts are prefilled as one batch (which also yields the first output token), then
``output_len - 1`` decode steps run the whole batch, each adding one token to every sequence
(step i sees kv lengths prompt + 1 + i). A step's modelled time is the sum of its kernels' predicted
latencies (``synperf.predict.predict``) and its TP all-reduces (``comm``); the engine overhead
model (``calibration.EngineOverhead``, fitted on reference-engine measurements) turns it into wall
time: eager prefill is bound by the GPU's work or the host's kernel-issue rate, a CUDA-graph decode
step adds per-layer, per-sequence and fixed host/unmodelled-kernel time.

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
from synperf.workloads.calibration import EngineOverhead, bundled_overhead, sum_interval
from synperf.workloads.engines import ForwardPass, forward_pass
from synperf.workloads.model import ModelConfig, with_layers

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
    gpu_us: tuple[float, float, float] = (0.0, 0.0, 0.0)   # the GPU's share (latency, low, high)
    issue_us: float = 0.0       # eager passes: the host's time to issue the kernels (0 for CUDA graphs)
    execution: str = "eager"    # how the engine runs the pass: eager, piecewise (CUDA graphs split at attention), graph


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
    pp: int = 1
    host_us_per_launch: float = 0.0     # the host's cost per call the prefill was priced at (TP=1)
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
            "model": self.model, "gpu": self.gpu, "tp": self.tp, "pp": self.pp, "framework": self.framework,
            "batch": self.batch, "prompt_tokens": self.prompt_tokens, "output_len": self.output_len,
            "prefill_ms": round(self.prefill_ms, 4),
            # what sets the eager prefill: the GPU's work, or the host issuing the kernels (the
            # first pipeline stage's host, which overlaps the stages after it)
            "prefill_bound": "host" if self.prefill.issue_us >= self.prefill.gpu_us[0] else "gpu",
            "prefill_host_issue_ms": round(self.prefill.issue_us / 1e3, 4),
            "prefill_execution": self.prefill.execution,
            "host_us_per_launch": self.host_us_per_launch,
            "decode_step_median_ms": round(self.decode_step_median_ms, 4),
            "decode_steps": len(self.decode_steps_us),
            "total_ms": round(self.total_ms, 4),
            **dict(zip(("total_low_ms", "total_high_ms"), (round(v / 1e3, 4) for v in sum_interval(
                (self.prefill.latency_us, self.prefill.low_us, self.prefill.high_us),
                (self.decode_total_ms * 1e3, self.decode_low_us, self.decode_high_us))))),
            "breakdown_ms": {"prefill": fam(self.prefill), "decode_step_median": fam(self.median_decode)},
            "ood_kernels": self.ood_kernels, "kernels_priced": self.kernels_priced,
            "comm_model": self.prefill.comm_model or (self.median_decode.comm_model if self.median_decode else ""),
            "engine_overhead": bundled_overhead().source, "decode_stride": DECODE_STRIDE,
        }


@dataclass
class ModelledPass:
    """What synperf's kernel and collective models price in a pass, before engine overhead."""
    kernels_us: float
    kernels_low_us: float
    kernels_high_us: float
    comm_us: float
    launches: int
    host_calls: int     # of the launches, those the host issues with calls of their own (Launch.within_call)
    by_family: dict[str, float]
    ood_cases: int
    cases: int
    comm_model: str
    call_us: tuple[tuple[float, int], ...] = ()    # kernel calls: (time, times called); collectives not


def model_pass(fp: ForwardPass, gpu, allreduce_impl: str | None = None) -> ModelledPass:
    """Kernels via predict (cached), all-reduces via comm (``allreduce_impl``: default the
    framework's custom all-reduce, graph (decode steps, piecewise passes) or eager as the pass runs)."""
    lat = low = high = 0.0
    launches = host_calls = ood = 0
    fam: dict[str, float] = defaultdict(float)
    calls = []
    for case, count, _tag in fp.kernels:
        p = predict(parse_case(case), gpu)
        calls.append((p.latency_us, count))
        lat += p.latency_us * count
        low += p.latency_low_us * count
        high += p.latency_high_us * count
        fam[case["family"]] += p.latency_us * count
        launches += p.launches * count
        host_calls += p.host_calls * count
        ood += bool(p.ood)
    impl = allreduce_impl or f"{fp.framework}_{'graph' if fp.phase == 'decode' or fp.piecewise else 'eager'}"
    comm_us, models = 0.0, set()
    for nbytes, count, _tag in fp.allreduces:
        t, which = comm.allreduce_us(nbytes, fp.tp, gpu, impl)
        comm_us += t * count
        models.add(which)
    if comm_us:
        fam["all_reduce"] += comm_us
    return ModelledPass(lat, low, high, comm_us, launches, host_calls, dict(fam), ood, len(fp.kernels),
                        ", ".join(sorted(models)), tuple(calls))


def price_pass(fp: ForwardPass, gpu, allreduce_impl: str | None = None, overhead: EngineOverhead | None = None
               ) -> StepCost:
    """The pass's wall time: modelled kernels and collectives turned into a step by the engine
    overhead model (``calibration.EngineOverhead``, default the bundled fit), applied alike to the
    low/high interval ends."""
    m = model_pass(fp, gpu, allreduce_impl)
    overhead = overhead or bundled_overhead()

    def wall(kernels_us: float) -> float:
        return overhead.pass_us(fp.phase, kernels_us + m.comm_us, m.launches, fp.num_tokens, fp.num_seqs,
                                fp.num_layers, fp.layer_kind, fp.attention_library, fp.tp, fp.routed_pairs,
                                m.host_calls, m.call_us, fp.piecewise, fp.attention_calls)

    def gpu_part(kernels_us: float) -> float:
        return overhead.gpu_us(fp.phase, kernels_us + m.comm_us, fp.num_tokens, fp.num_layers, fp.layer_kind,
                               fp.attention_library, fp.routed_pairs, m.call_us,
                               m.launches if fp.piecewise else None)

    latency = wall(m.kernels_us)
    fam = dict(m.by_family)
    fam["overhead"] = latency - m.kernels_us - m.comm_us
    if fp.phase == "decode":
        issue = 0.0
    elif fp.piecewise:
        issue = overhead.piecewise_issue_us(m.launches, fp.num_layers, fp.layer_kind, fp.tp, fp.routed_pairs,
                                            fp.attention_calls)
    else:
        issue = overhead.issue_us(m.launches, fp.num_layers, fp.layer_kind, fp.tp, fp.routed_pairs, m.host_calls)
    return StepCost(latency, wall(m.kernels_low_us), wall(m.kernels_high_us), m.comm_us, fam["overhead"], fam,
                    m.ood_cases, m.cases, m.comm_model,
                    (gpu_part(m.kernels_us), gpu_part(m.kernels_low_us), gpu_part(m.kernels_high_us)), issue,
                    "graph" if fp.phase == "decode" else "piecewise" if fp.piecewise else "eager")


def price_pipeline(model: ModelConfig, gpu, tp: int, pp: int, framework: str, phase: str, lens: list[int],
                   allreduce_impl: str | None = None, overhead: EngineOverhead | None = None,
                   moe_engine: str | None = None) -> StepCost:
    """One pass of a batch through ``pp`` pipeline stages, one after another (no micro-batching, as
    in bench_one_batch). Every stage's host starts issuing its work at once and its GPU waits for
    its input: the pass is the first stage's wall time, then per later stage its activation transfer
    (hidden state and residual) and GPU time, or that stage's own issue time if its host is still
    issuing, then the sampled ids' way back to the first stage. A stage's host issues at the rate of
    its TP ranks: the PP ranks' host slowdown differed between hosts (1.4-2.8 x per launch,
    docs/reference-engine.md) and is not applied. ``moe_engine``: see ``engines.mixed_pass``. The interval is widened to what
    leave-one-model-out needed (``EngineOverhead.widen``)."""
    overhead = overhead or bundled_overhead()
    if pp == 1:
        cost = price_pass(forward_pass(model, gpu, tp, framework, phase, lens, moe_engine=moe_engine), gpu,
                          allreduce_impl, overhead)
        cost.low_us, cost.high_us = overhead.widen(phase, cost.latency_us, cost.low_us, cost.high_us)
        return cost
    stage_model = with_layers(model, model.num_layers // pp)
    ends = [(True, False)] + [(False, False)] * (pp - 2) + [(False, True)]
    stage_overhead = overhead.at_duty(1.0 / pp)
    stages = {}
    for end in set(ends):
        stages[end] = price_pass(forward_pass(stage_model, gpu, tp, framework, phase, lens, *end, moe_engine),
                                 gpu, allreduce_impl, stage_overhead)
    tokens = sum(lens) if phase == "prefill" else len(lens)
    hop, _ = comm.send_recv_us(2 * tokens * model.hidden_size * 2, gpu)
    ids_back, _ = comm.send_recv_us(8 * len(lens), gpu)
    p2p = (pp - 1) * hop + ids_back
    first, later = stages[ends[0]], [stages[end] for end in ends[1:]]
    bounds = [first.latency_us, first.low_us, first.high_us]
    for st in later:
        bounds = [max(b + hop + g, st.issue_us) for b, g in zip(bounds, st.gpu_us)]
    latency, low, high = (b + ids_back for b in bounds)
    low, high = overhead.widen(phase, latency, low, high)
    fam: dict[str, float] = defaultdict(float)
    for st in [first] + later:
        for k, v in st.by_family.items():
            if k != "overhead":
                fam[k] += v
    fam["send_recv"] = p2p
    comm_us = sum(st.comm_us for st in [first] + later) + p2p
    fam["overhead"] = latency - sum(fam.values())
    return StepCost(latency, low, high, comm_us, fam["overhead"], dict(fam), sum(st.ood_cases for st in stages.values()),
                    sum(st.cases for st in stages.values()), first.comm_model,
                    tuple(sum(st.gpu_us[i] for st in [first] + later) + p2p for i in range(3)),
                    max(st.issue_us for st in [first] + later), first.execution)


def simulate_batch(model: ModelConfig, gpu, tp: int, framework: str, prompt_lens: list[int],
                   output_len: int, allreduce_impl: str | None = None, pp: int = 1,
                   overhead: EngineOverhead | None = None) -> BatchResult:
    """``overhead``: the engine overhead model (default the bundled fit; ``EngineOverhead.with_host_rate``
    for another host)."""
    overhead = overhead or bundled_overhead()
    if gpu.cc_major < 8:
        raise InputError(f"{gpu.id} (sm{gpu.compute_capability.replace('.', '')}) has no bf16 tensor cores;"
                         " end-to-end simulation is bf16 only")
    if not isinstance(output_len, int) or output_len < 1:
        raise InputError(f"output_len must be a positive integer, got {output_len!r}")
    prompts = [int(p) for p in prompt_lens]
    if not isinstance(pp, int) or pp < 1 or model.num_layers % pp:
        raise InputError(f"pp: {pp} does not divide {model.name}'s {model.num_layers} layers")
    prefill = price_pipeline(model, gpu, tp, pp, framework, "prefill", prompts, allreduce_impl, overhead)
    result = BatchResult(model.name.removesuffix(".json"), gpu.id, tp, framework, len(prompts), sum(prompts),
                         output_len, prefill, pp=pp, host_us_per_launch=overhead.prefill["cpu_us_per_launch"])
    n_steps = output_len - 1
    ood, priced = prefill.ood_cases, prefill.cases
    if n_steps > 0:
        anchors = sorted(set(range(0, n_steps, DECODE_STRIDE)) | {n_steps - 1})
        costs = {}
        for i in anchors:
            costs[i] = price_pipeline(model, gpu, tp, pp, framework, "decode", [p + 1 + i for p in prompts], allreduce_impl,
                                      overhead)
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
        f"{d['model']} on {d['gpu']} x{d['tp'] * d['pp']} (TP {d['tp']}, PP {d['pp']}), {d['framework']}: batch {d['batch']}, "
        f"{d['prompt_tokens']} prompt tokens, {d['output_len']} output tokens each",
        f"  prefill          {d['prefill_ms']:10.3f} ms ({'GPU' if d['prefill_bound'] == 'gpu' else 'host'}-bound,"
        f" {'piecewise CUDA graphs' if d['prefill_execution'] == 'piecewise' else 'eager'}:"
        f" the host issues its kernels in {d['prefill_host_issue_ms']:.3f} ms)",
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
