"""Per-pass engine overhead, fitted on end-to-end measurements of the reference engine.

The kernel predictions price what the families model. A real pass also pays what they do not: the
host issuing kernels (eager prefill launches one kernel at a time from Python), kernels no family
models (embedding, KV-cache writes, top-k routing, copies, argmax), and per-step host work (the
attention planner, input preparation). ``EngineOverhead`` turns the modelled kernel time ``K``
(kernels + collectives, in us) of a pass into its wall time:

- prefill / mixed (eager):  ``max(K * (1 + (kernel_scale - 1) * share) + U * us_per_unmodelled_kernel
  + tokens * layers * us_per_token_layer,  issue)``: the GPU's work or the host's issue time,
  whichever is slower. ``issue = calls * cpu_us_per_launch + inside * cpu_us_per_launch_in_call``,
  times ``tp_host_slowdown`` when the pass is one of several TP ranks: a launch the
  engine's Python issues with a call of its own (a torch op, a Triton kernel, a library call) costs
  the host far more than one a library issues inside such a call (cub's radix-sort passes, cuBLAS's
  workspace memset, FA3's main kernel after its prepare: ``Launch.within_call``). ``share``
  (``scaled_share``): the part of ``K`` in kernel calls short enough to have been profiled at the
  boost clock; the scale is mostly the power cap's toll on them, which calls lasting tens of
  milliseconds paid while they were profiled, and collectives, measured bandwidth, never pay;
- piecewise (vLLM V1's prefill / mixed steps of up to 512 tokens: CUDA graphs split at each
  attention call, attention eager between them): ``max(K * piecewise.kernel_scale + U *
  us_per_unmodelled_kernel + N * us_per_graph_node,  layers * cpu_us_per_launch + N *
  us_per_graph_node)``, N = launches + U graph nodes; the host issues the eager attention calls
  (one a layer, two in a step that prefills and decodes with separate calls) and the graph
  launches. Only the scale is fitted, on the reference engine's piecewise prefills
  (``data/h200-system/e2e_piecewise.parquet``); the rest are the eager and graph terms;
- decode (one CUDA graph a step): ``K * kernel_scale + U * us_per_unmodelled_kernel
  + seqs * us_per_seq + us_fixed + (launches + U) * us_per_graph_node``: replaying a graph costs
  the host and the GPU per node (the measured host time of a step with 750 nodes is about twice
  that of one with 130).

``launches`` counts the modelled kernels' launches; ``U = layers * extra_launches_per_layer`` the
engine's unmodelled kernels per phase and layer kind (dense, qk_norm, moe), counted with CUPTI:
a property of the engine's code, not of the timings. The reference engine aligns each MoE layer's
routing twice (``MoEWorkspace`` aligns when built and again in ``full()``), and only the first align
is modelled. Its argsort is one kernel up to 4,096 routed pairs and CUB's radix sort beyond
(``kernels.moe.argsort_launches``), so the ``moe`` count is the one at a small sort, and a pass
routing more pairs adds the radix sort's extra launches (17 a layer; measured: 17-18 on both MoE
models).

The launch inside a call is priced at its measured host cost (``launch_in_call_us``: the align
timed on its own at a small and at a radix sort, ``data/h200-system/host_cost.parquet``). The rate
per call is fitted on the measured host time (the pass's call returning after issuing every kernel)
of the TP=1 prefills the host bounds, and the TP slowdown on that of the TP>1 ones: there
each rank's host issued its launches about twice as slowly.

The coefficients are fitted (non-negative least squares on relative error) on
``data/h200-system/e2e_reference.parquet``; ``python -m synperf.workloads.calibration`` refits
them, writes ``engine_overhead.json`` and reports the leave-one-model-out error.

A pass's interval: the kernels' own interval run through the same formulas, widened to at least the
10th-90th percentile of ``log(measured / predicted)`` that leave-one-model-out showed on the fitted
models (``interval``). That spread is mostly not the kernels': the host's issue rate and the GPU's
power state move a pass by 5-20 % between runs of the same batch (docs/reference-engine.md).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from synperf.errors import InputError, SynperfError

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "data" / "h200-system" / "e2e_reference.parquet"
# moe: the reference engine's own MoE layers; moe_fused: MoE layers run as vLLM does (fused routing,
# one CUDA align), measured with ``profile.engine --moe-engine vllm``.
LAYER_KINDS = ("dense", "qk_norm", "moe", "moe_fused")


def second_align_excess(layer_kind: str, routed_pairs: int) -> int:
    """Launches the reference engine's second align of an MoE layer adds beyond those it launches at
    a small sort (where the ``moe`` count is taken): its argsort's, by the sort's size."""
    if layer_kind != "moe":
        return 0
    from synperf.kernels.moe import SMALL_SORT_MAX_KEYS, argsort_launches
    return argsort_launches(routed_pairs) - argsort_launches(SMALL_SORT_MAX_KEYS)


@dataclass(frozen=True)
class EngineOverhead:
    prefill: dict
    decode: dict
    extra_launches_per_layer: dict
    source: str = ""
    # phase -> [10th, 90th percentile] of log(measured / predicted), held-out models' passes
    interval: dict = field(default_factory=dict)
    piecewise: dict = field(default_factory=dict)   # piecewise CUDA-graph passes: their kernel scale

    def widen(self, phase: str, latency_us: float, low_us: float, high_us: float) -> tuple[float, float]:
        """The pass interval: the kernels' (``low_us``, ``high_us``), at least as wide as the spread
        leave-one-model-out measured around ``latency_us``."""
        lo, hi = self.interval.get("decode" if phase == "decode" else "prefill", (0.0, 0.0))
        return min(low_us, latency_us * math.exp(lo)), max(high_us, latency_us * math.exp(hi))

    def unmodelled(self, phase: str, layers: int, layer_kind: str, routed_pairs: int = 0) -> float:
        per_layer = self.extra_launches_per_layer[phase].get(layer_kind, 0.0)
        return layers * max(0.0, per_layer + second_align_excess(layer_kind, routed_pairs))

    def unmodelled_in_call(self, phase: str, layers: int, layer_kind: str, routed_pairs: int = 0) -> float:
        """Of the unmodelled launches, those issued inside another's host call: the second align's
        cumsum scans and argsort passes (the same code as the modelled first align)."""
        if layer_kind != "moe":
            return 0.0
        from synperf.kernels.moe import align_launches_in_call
        return min(layers * align_launches_in_call(routed_pairs), self.unmodelled(phase, layers, layer_kind, routed_pairs))

    def scaled_share(self, call_us: tuple[tuple[float, int], ...], modelled_us: float) -> float:
        """Of an eager pass's modelled time ``modelled_us`` (kernels and collectives), the share the
        prefill kernel scale applies to. The scale is mostly the power cap's toll on kernels that
        were profiled alone, after an idle L2 flush, at the boost clock; a collective's time is
        measured bandwidth and is not scaled. A kernel call that runs long enough reached the cap
        while it was profiled, so its time already holds the toll: a call of ``t`` us counts
        ``settle / (settle + t)`` of itself (``power_settle_us``, fitted; absent: every call counts
        whole). ``call_us``: the pass's kernel calls as (time, count); none given: all is scaled."""
        if not call_us or modelled_us <= 0:
            return 1.0
        settle = self.prefill.get("power_settle_us", math.inf)
        return min(1.0, sum(t * n * (1.0 if settle == math.inf else settle / (settle + t))
                            for t, n in call_us) / modelled_us)

    def gpu_us(self, phase: str, kernels_us: float, tokens: int, layers: int, layer_kind: str,
               attention: str | None = None, routed_pairs: int = 0,
               call_us: tuple[tuple[float, int], ...] = (), graph_launches: int | None = None) -> float:
        """The GPU's share of a pass: the modelled kernels scaled, plus the unmodelled ones
        (``call_us``: the modelled calls' times and counts, ``scaled_share``). ``graph_launches``:
        a piecewise CUDA-graph pass, with that many modelled launches (module docstring)."""
        phase = "decode" if phase == "decode" else "prefill"
        extra = self.unmodelled(phase, layers, layer_kind, routed_pairs)
        if graph_launches is not None:
            return kernels_us * self.piecewise["kernel_scale"] + extra * self.prefill["us_per_unmodelled_kernel"] \
                + (graph_launches + extra) * self.decode["us_per_graph_node"]
        if phase == "decode":
            d = self.decode
            scale = d.get(f"kernel_scale_{attention}", d["kernel_scale"])
            return kernels_us * scale + extra * d["us_per_unmodelled_kernel"]
        p = self.prefill
        scale = 1.0 + (p["kernel_scale"] - 1.0) * self.scaled_share(call_us, kernels_us)
        return kernels_us * scale + extra * p["us_per_unmodelled_kernel"] + tokens * layers * p["us_per_token_layer"]

    def pass_us(self, phase: str, kernels_us: float, launches: int, tokens: int, seqs: int, layers: int,
                layer_kind: str, attention: str | None = None, tp: int = 1, routed_pairs: int = 0,
                host_calls: int | None = None, call_us: tuple[tuple[float, int], ...] = (),
                piecewise: bool = False, attention_calls: int | None = None) -> float:
        """Wall time of a pass: a decode step's host work (per sequence and fixed) comes before its
        graph replays; an eager prefill is bound by the GPU or by the host issuing its kernels. The
        decode step's kernel scale and per-sequence work are the decode attention's: FlashInfer plans
        each step on the host, FlashAttention-3 only refreshes its lengths (``kernel_scale_<library>``,
        ``us_per_seq_<library>`` where fitted). ``launches``: the modelled kernels' launches, of which
        ``host_calls`` (default all) the host issues with calls of its own. ``piecewise``: a
        prefill or mixed pass replayed as piecewise CUDA graphs (module docstring), split at its
        ``attention_calls`` (default one a layer)."""
        if piecewise:
            return max(self.gpu_us(phase, kernels_us, tokens, layers, layer_kind, attention, routed_pairs,
                                   graph_launches=launches),
                       self.piecewise_issue_us(launches, layers, layer_kind, tp, routed_pairs, attention_calls))
        gpu = self.gpu_us(phase, kernels_us, tokens, layers, layer_kind, attention, routed_pairs, call_us)
        if phase == "decode":
            per_seq = self.decode.get(f"us_per_seq_{attention}", self.decode["us_per_seq"])
            nodes = launches + self.unmodelled(phase, layers, layer_kind, routed_pairs)
            return gpu + seqs * per_seq + self.decode["us_fixed"] + nodes * self.decode["us_per_graph_node"]
        return max(gpu, self.issue_us(launches, layers, layer_kind, tp, routed_pairs, host_calls))

    def with_host_rate(self, us_per_launch: float) -> "EngineOverhead":
        """The same overhead on a host that issues an eager pass's kernels at ``us_per_launch`` a host
        call (TP=1; a launch inside a call and TP ranks keep their fitted ratios to it). The
        measured rate ranged 16-43 us between hosts and runs, the largest uncertainty of a small prefill."""
        p = self.prefill
        ratio = p["cpu_us_per_launch_in_call"] / p["cpu_us_per_launch"]
        return replace(self, prefill={**p, "cpu_us_per_launch": us_per_launch,
                                      "cpu_us_per_launch_in_call": us_per_launch * ratio})

    def at_duty(self, duty: float) -> "EngineOverhead":
        """The same overhead for a GPU that computes only ``duty`` of each eager pass and idles the
        rest (a pipeline stage: 1 / PP). The prefill kernel scale is mostly the power cap's toll on a
        GPU computing the whole pass (TP=1 dense prefills ran at 1,450-1,670 MHz, PP=2 stages at
        1,740-1,980 MHz, measured on two hosts), so its excess over 1 is scaled by the duty."""
        p = self.prefill
        return replace(self, prefill={**p, "kernel_scale": 1.0 + (p["kernel_scale"] - 1.0) * duty})

    def piecewise_issue_us(self, launches: int, layers: int, layer_kind: str, tp: int = 1,
                           routed_pairs: int = 0, attention_calls: int | None = None) -> float:
        """The host's time to issue a piecewise CUDA-graph pass: its eager attention calls (default
        one a layer) and every graph node's launch."""
        p = self.prefill
        nodes = launches + self.unmodelled("prefill", layers, layer_kind, routed_pairs)
        slowdown = p["tp_host_slowdown"] if tp > 1 else 1.0
        calls = layers if attention_calls is None else attention_calls
        return calls * p["cpu_us_per_launch"] * slowdown + nodes * self.decode["us_per_graph_node"]

    def issue_us(self, launches: int, layers: int, layer_kind: str, tp: int = 1, routed_pairs: int = 0,
                 host_calls: int | None = None) -> float:
        """The host's time to issue an eager pass's kernels, modelled and unmodelled: a rate per
        launch the engine issues with a call of its own, another per launch issued inside a call."""
        p = self.prefill
        calls, inside = self.issued(launches, layers, layer_kind, routed_pairs, host_calls)
        slowdown = p["tp_host_slowdown"] if tp > 1 else 1.0
        return (calls * p["cpu_us_per_launch"] + inside * p["cpu_us_per_launch_in_call"]) * slowdown

    def issued(self, launches: int, layers: int, layer_kind: str, routed_pairs: int = 0,
               host_calls: int | None = None) -> tuple[float, float]:
        """(launches issued with host calls of their own, launches issued inside a call) of an eager
        pass, modelled and unmodelled."""
        extra = self.unmodelled("prefill", layers, layer_kind, routed_pairs)
        extra_inside = self.unmodelled_in_call("prefill", layers, layer_kind, routed_pairs)
        calls = launches if host_calls is None else host_calls
        return calls + extra - extra_inside, launches - calls + extra_inside


@lru_cache(maxsize=1)
def bundled_overhead() -> EngineOverhead:
    raw = json.loads((resources.files("synperf.workloads") / "engine_overhead.json").read_text())
    return EngineOverhead(raw["prefill"], raw["decode"], raw["extra_launches_per_layer"], raw["source"], raw["interval"],
                          raw["piecewise"])


# ------------------------------------------------------------------------------ fitting
def _nnls(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares by active-set elimination (a handful of columns)."""
    active = list(range(A.shape[1]))
    while True:
        coef = np.zeros(A.shape[1])
        sol, *_ = np.linalg.lstsq(A[:, active], y, rcond=None)
        coef[active] = sol
        negative = [i for i in active if coef[i] < 0]
        if not negative:
            return coef
        active.remove(min(negative, key=lambda i: coef[i]))


@dataclass
class PassSample:
    phase: str
    measured_us: float
    kernels_us: float
    modelled_launches: int
    measured_launches: int
    tokens: int
    seqs: int
    layers: int
    layer_kind: str
    group: str          # model name: the unit held out in leave-one-model-out
    batch_id: int       # the measured batch (row) it belongs to
    tp: int = 1
    other_kernels: int = 0      # CUPTI: kernels of no modelled family, and their time
    other_us: float = 0.0
    attention: str | None = None    # the pass's attention library (ForwardPass.attention_library)
    routed_pairs: int = 0           # (token, expert) pairs an MoE layer routes (ForwardPass.routed_pairs)
    modelled_host_calls: int | None = None  # of the modelled launches, those the host issues with calls of their own
    host_us: float = 0.0            # measured: the host's time to issue the pass (its call returning)
    call_us: tuple[tuple[float, int], ...] = ()   # modelled calls: (time, count) (ModelledPass.call_us)
    piecewise: bool = False         # a prefill replayed as piecewise CUDA graphs
    attention_calls: int = 0        # the pass's attention calls (ForwardPass.attention_calls)


_BREAKDOWN_FIELDS = ("prefill_kernels", "decode_kernels")


def check_rows(rows: list[dict], passes: tuple[str, ...] = ()) -> list[dict]:
    """Reference-engine rows as ``samples_from_rows`` needs them, numbers converted; the first bad
    row raises an InputError naming it (1-based) and its field. ``passes``: more passes each row
    must carry, by column prefix: ``piecewise_prefill`` (``profile.engine --piecewise``), ``mixed``
    and ``piecewise_mixed`` (``--mixed-decode``; the decoding sequences' count and context too):
    their time, host time and kernels."""
    from synperf.workloads.model import load_model

    def positive(value, field, i, kind=float):
        try:
            number = kind(value)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"not a number: {str(value)[:40]!r}", field, i) from None
        if not (0 < number < 1e12) or (kind is int and number != value):
            raise InputError(f"must be a positive {'integer' if kind is int else 'number'}, got {str(value)[:40]}",
                             field, i)
        return number

    if not rows:
        raise InputError("no rows")
    clean = []
    for i, r in enumerate(rows, 1):
        try:
            model = load_model(str(r["model"]))
        except KeyError:
            raise InputError("missing", "model", i) from None
        except InputError as exc:
            raise InputError(exc.message, "model", i) from None
        layers = positive(r.get("num_layers"), "num_layers", i, int)
        if layers > model.num_layers:
            raise InputError(f"{layers} is more than the model's {model.num_layers} layers", "num_layers", i)
        pp = r.get("pp")
        pp = 1 if pp is None or (isinstance(pp, float) and np.isnan(pp)) else positive(pp, "pp", i, int)
        if layers % pp:
            raise InputError(f"{pp} stages do not divide {layers} layers", "pp", i)
        moe_engine = r.get("moe_engine")
        if moe_engine is not None and not isinstance(moe_engine, str) and np.isnan(moe_engine):
            moe_engine = None
        if moe_engine not in (None, "reference", "vllm"):
            raise InputError(f"must be reference or vllm, got {str(moe_engine)[:40]!r}", "moe_engine", i)
        attention = r.get("attention")
        if attention is not None and not isinstance(attention, str) and np.isnan(attention):
            attention = None
        if attention not in (None, "flashinfer", "flash_attn3"):
            raise InputError(f"must be flashinfer or flash_attn3, got {str(attention)[:40]!r}", "attention", i)
        row = {"model": str(r["model"]), "num_layers": layers, "pp": pp, "tp": positive(r.get("tp"), "tp", i, int),
               "moe_engine": moe_engine or "reference", "attention": attention or "flashinfer",
               "output_len": positive(r.get("output_len"), "output_len", i, int),
               "batch": positive(r.get("batch"), "batch", i, int),
               "prompt_tokens": positive(r.get("prompt_tokens"), "prompt_tokens", i, int)}
        for field in ("prefill_ms", "decode_step_median_ms", "total_ms"):
            row[field] = positive(r.get(field), field, i)
        for field in [f"{name}{end}" for name in passes for end in ("_ms", "_host_ms")]:
            row[field] = positive(r.get(field), field, i)
        if "mixed" in passes:
            for field in ("mixed_decode_seqs", "mixed_decode_ctx"):
                row[field] = positive(r.get(field), field, i, int)
        for field in ("prefill_host_ms", "decode_step_host_ms"):     # optional: rows before they were timed
            value = r.get(field)
            if value is not None and not (isinstance(value, float) and np.isnan(value)):
                row[field] = positive(value, field, i)
        breakdown_fields = _BREAKDOWN_FIELDS + tuple(f"{name}_kernels" for name in passes)
        try:
            prompts = json.loads(r["prompt_lens"])
            breakdowns = [json.loads(r[f]) for f in breakdown_fields]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a JSON field ({exc.__class__.__name__})", "prompt_lens/kernels", i) from None
        if not isinstance(prompts, list) or not prompts:
            raise InputError("must be a non-empty JSON list", "prompt_lens", i)
        for p in prompts:
            positive(p, "prompt_lens", i, int)
        for field, b in zip(breakdown_fields, breakdowns):
            if not isinstance(b, dict) or not all(isinstance(v, dict) and isinstance(v.get("kernels"), int)
                                                  and isinstance(v.get("us"), (int, float)) for v in b.values()):
                raise InputError("must map family -> {kernels, us}", field, i)
        row.update(prompt_lens=r["prompt_lens"], gpu_name=r.get("gpu_name"),
                   **{field: r[field] for field in breakdown_fields})
        clean.append(row)
    return clean


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def moe_engine_of(row: dict) -> str:
    """How the measured engine ran its MoE layers (rows before ``--moe-engine`` existed: reference)."""
    engine = row.get("moe_engine")
    return engine if isinstance(engine, str) and engine else "reference"


def kernels_of(row: dict) -> str:
    """Whose kernel choices a measured batch ran: the reference engine's (``engines.REFERENCE``), or,
    with ``--attention flash_attn3``, SGLang's on Hopper (FA3 attention, the rest alike)."""
    from synperf.workloads.engines import REFERENCE
    return "sglang" if row.get("attention") == "flash_attn3" else REFERENCE


def samples_from_rows(rows: list[dict], gpu, piecewise: bool = False) -> list[PassSample]:
    """The prefill pass and the median decode step of each measured batch, with synperf's kernel
    time for them (``static_batch.model_pass``); ``piecewise``: only the prefill, timed through
    piecewise CUDA graphs (the ``piecewise_*`` columns of ``profile.engine --piecewise``)."""
    from synperf.workloads.engines import forward_pass
    from synperf.workloads.model import load_model, with_layers
    from synperf.workloads.static_batch import model_pass

    out = []
    for row_id, r in enumerate(rows):
        if int(r.get("pp") or 1) > 1:          # pipeline rows check the fit; they are not fitted on
            continue
        model = with_layers(load_model(r["model"]), int(r["num_layers"]))
        prompts = json.loads(r["prompt_lens"])
        mid = (int(r["output_len"]) - 2) // 2
        passes = ((("prefill", prompts, r["piecewise_prefill_ms"], r["piecewise_prefill_kernels"]),) if piecewise else
                  (("prefill", prompts, r["prefill_ms"], r["prefill_kernels"]),
                   ("decode", [p + 1 + mid for p in prompts], r["decode_step_median_ms"], r["decode_kernels"])))
        for phase, lens, measured, kernels in passes:
            fp = forward_pass(model, gpu, int(r["tp"]), kernels_of(r), phase, lens, moe_engine=moe_engine_of(r),
                              piecewise=piecewise or None)
            cost = model_pass(fp, gpu, allreduce_impl="nccl")
            breakdown = json.loads(kernels)
            counted = sum(v["kernels"] for k, v in breakdown.items() if k != "all_reduce")
            other = breakdown.get("other", {"kernels": 0, "us": 0.0})
            host_ms = r.get(f"{'piecewise_' if piecewise else ''}{'prefill' if phase == 'prefill' else 'decode_step'}_host_ms")
            out.append(PassSample(phase, measured * 1e3, cost.kernels_us + cost.comm_us, cost.launches, counted,
                                  fp.num_tokens, fp.num_seqs, fp.num_layers, fp.layer_kind, r["model"], row_id,
                                  int(r["tp"]), other["kernels"], other["us"], fp.attention_library, fp.routed_pairs,
                                  cost.host_calls, float(host_ms) * 1e3 if _is_number(host_ms) else 0.0,
                                  cost.call_us, piecewise, fp.attention_calls))
    return out


def launch_counts(samples: list[PassSample]) -> dict:
    """Unmodelled kernels per layer, per phase and layer kind: median CUPTI count beyond the
    modelled launches, the second align's sort counted as a small one (``second_align_excess``)."""
    extra: dict = {}
    for phase in ("prefill", "decode"):
        for kind in LAYER_KINDS:
            per = [(s.measured_launches - s.modelled_launches) / s.layers - second_align_excess(kind, s.routed_pairs)
                   for s in samples if s.layer_kind == kind and s.phase == phase]
            if per:
                extra.setdefault(phase, {})[kind] = round(max(0.0, float(np.median(per))), 2)
    return extra


# Passes whose measured host time is at least this share of their wall time fit the issue rate:
# there the host sets, or nearly sets, the pass. In long GPU-bound passes the host's time also holds
# waits (a full launch queue) and overstates the rate (30 us a call fitted on every TP=1 pass, 27 on these).
HOST_BOUND_SHARE = 0.5
# Candidate times (us) for a kernel call profiled alone to reach the power cap; None: never. The
# kernel profiles bound it from below: in sessions that began cool, calls of up to 30 ms were still
# sampled at the boost clock (median 1,965 MHz) and only longer ones at 1,500 MHz.
POWER_SETTLE_CANDIDATES_US = (None, 1e4, 2e4, 5e4, 1e5)
HOST_COST_DATA = DEFAULT_DATA.with_name("host_cost.parquet")
REPEAT_DATA = DEFAULT_DATA.with_name("e2e_host_check.parquet")
PIECEWISE_DATA = DEFAULT_DATA.with_name("e2e_piecewise.parquet")
MIXED_DATA = DEFAULT_DATA.with_name("e2e_mixed.parquet")
NEW_MODEL_DATA = DEFAULT_DATA.with_name("e2e_new_models.parquet")


def bundled_repeat_rows(path: Path = REPEAT_DATA) -> list[dict]:
    """The validation batches measured again on other hosts and runs with the validation protocol
    (10 timed prefills, ranks started together: ``interval_repeat``), checked like the validation rows."""
    import pandas as pd

    frame = pd.read_parquet(path)
    return check_rows(frame[frame["interval_repeat"]].to_dict("records"))


@lru_cache(maxsize=1)
def launch_in_call_us(path: Path = HOST_COST_DATA) -> float:
    """The host time of a launch a library issues inside a call, measured: the reference align
    (``profile.host_cost``, timed on its own) at a small sort and at cub's radix sort differ only by
    the sort's launches inside the one argsort call."""
    import pandas as pd

    align = pd.read_parquet(path).query("kind == 'moe_align_block_size'").sort_values("shape_tokens")
    if len(align) < 2:
        raise ValueError(f"{path}: needs the align timed at two token counts")
    from synperf.kernels.moe import argsort_launches
    small, big = align.iloc[0], align.iloc[-1]
    launches = [argsort_launches(int(r.shape_tokens * r.shape_topk)) for r in (small, big)]
    if launches[1] <= launches[0]:
        raise ValueError(f"{path}: the align's two token counts sort alike; no launches to divide by")
    return float((big.host_us - small.host_us) / (launches[1] - launches[0]))


def fit(samples: list[PassSample], extra: dict, in_call_us: float | None = None) -> EngineOverhead:
    """Coefficients from ``samples``; ``extra``: the engine's unmodelled kernel counts;
    ``in_call_us``: the host time of a launch issued inside a call (default ``launch_in_call_us()``).
    The unmodelled kernels' GPU time comes from their CUPTI durations (decode: a constant per kernel;
    prefill: per kernel plus per token and layer); the rest from the pass wall times."""
    in_call_us = launch_in_call_us() if in_call_us is None else in_call_us
    counted = EngineOverhead({}, {}, extra)

    def unmodelled(s):
        return counted.unmodelled(s.phase, s.layers, s.layer_kind, s.routed_pairs)

    dec = [s for s in samples if s.phase == "decode"]
    if len(dec) < 6:
        raise SynperfError(f"{len(dec)} decode steps: too few to fit the engine overhead's six decode terms")
    per_kernel = sum(s.other_us for s in dec) / max(1, sum(s.other_kernels for s in dec))
    y = np.array([s.measured_us - unmodelled(s) * per_kernel for s in dec])
    w = 1.0 / np.array([s.measured_us for s in dec])
    # The kernel scale and the per-sequence host work have their own coefficients for each decode
    # attention library measured (FlashAttention-3), the FlashInfer ones for every other library:
    # FlashInfer plans each step on the host and launches more unmodelled kernels as the batch grows.
    fa3 = np.array([s.attention == "flash_attn3" for s in dec])
    A = np.array([[s.kernels_us * (not f), s.kernels_us * f, s.seqs * (not f), s.seqs * f, 1.0,
                   s.modelled_launches + unmodelled(s)]
                  for s, f in zip(dec, fa3)]) * w[:, None]
    scale, scale_fa3, per_seq, per_seq_fa3, fixed, per_launch = _nnls(A, y * w)
    decode = {"kernel_scale": round(float(scale), 6), "us_per_unmodelled_kernel": round(per_kernel, 4),
              "us_per_seq": round(float(per_seq), 4), "us_fixed": round(float(fixed), 4),
              "us_per_graph_node": round(float(per_launch), 4)}
    if fa3.any():
        decode.update(kernel_scale_flash_attn3=round(float(scale_fa3), 6),
                      us_per_seq_flash_attn3=round(float(per_seq_fa3), 4))

    pre = [s for s in samples if s.phase == "prefill"]
    other = np.array([s.other_us for s in pre])
    w = 1.0 / np.maximum(other, 1.0)
    B = np.array([[s.other_kernels, s.tokens * s.layers] for s in pre]) * w[:, None]
    per_kernel, per_token_layer = _nnls(B, other * w)
    y = np.array([s.measured_us for s in pre])
    offset = np.array([unmodelled(s) * per_kernel + s.tokens * s.layers * per_token_layer for s in pre])
    K = np.array([s.kernels_us for s in pre])
    # The issue rate from the measured host time of the passes the host bounds (the call returning
    # after issuing every kernel), less what the launches inside calls cost (measured apart); fitted
    # on the single-process passes, and under TP a slowdown of its own.
    issued = np.array([counted.issued(s.modelled_launches, s.layers, s.layer_kind, s.routed_pairs,
                                      s.modelled_host_calls) for s in pre])
    host = np.array([s.host_us for s in pre])
    timed = (host > 0) & (host >= HOST_BOUND_SHARE * y)
    single = np.array([s.tp == 1 for s in pre]) & timed
    if single.sum() < 4:
        raise SynperfError(f"{int(single.sum())} TP=1 prefills bound by the host (measured host time at least"
                           f" {HOST_BOUND_SHARE:.0%} of the pass): at least four are needed to fit the issue rate")
    w = 1.0 / host[single]
    calls, inside = issued[single, 0] * w, issued[single, 1] * w
    rate_call = float(np.dot(calls, host[single] * w - inside * in_call_us) / np.dot(calls, calls))
    one_rank = issued @ np.array([rate_call, in_call_us])
    multi = np.array([s.tp > 1 for s in pre]) & timed
    slowdown = float(np.median(host[multi] / one_rank[multi])) if multi.any() else 1.0
    issue = one_rank * np.where([s.tp > 1 for s in pre], slowdown, 1.0)
    # The kernel scale on the single-process passes the GPU bounds (a TP>1 pass also waits on the
    # other ranks in its collectives: skew no kernel explains).
    gpu_bound = (issue < y * 0.98) & np.array([s.tp == 1 for s in pre])
    # With it, the time a call takes to reach the power cap when profiled alone (``scaled_share``):
    # the candidate that fits those passes best, every call scaled whole among them.
    best = None
    for settle in POWER_SETTLE_CANDIDATES_US:
        probe = EngineOverhead({"power_settle_us": settle} if settle else {}, {}, extra)
        share = np.array([probe.scaled_share(s.call_us, s.kernels_us) for s in pre])[gpu_bound]
        r = (y[gpu_bound] - offset[gpu_bound] - K[gpu_bound] * (1.0 - share)) / y[gpu_bound]
        k = K[gpu_bound] * share / y[gpu_bound]
        scale = max(0.0, float(np.dot(k, r) / np.dot(k, k)))
        misfit = float(np.sum((k * scale - r) ** 2))
        if best is None or misfit < best[0]:
            best = (misfit, settle, scale)
    _, settle, scale = best
    prefill = {"kernel_scale": round(scale, 6), "us_per_unmodelled_kernel": round(float(per_kernel), 4),
               "us_per_token_layer": round(float(per_token_layer), 6), "cpu_us_per_launch": round(float(rate_call), 3),
               "cpu_us_per_launch_in_call": round(float(in_call_us), 3),
               "tp_host_slowdown": round(max(1.0, slowdown), 4)}
    if settle:
        prefill["power_settle_us"] = settle
    return EngineOverhead(prefill, decode, extra)


def sum_interval(*parts: tuple[float, float, float]) -> tuple[float, float]:
    """The interval of a sum of parts given as (point, low, high), the parts off independently: each
    end lies from the summed point by the parts' distances added in quadrature. Adding the ends
    themselves would assume every part off in the same direction at once: the prefill's and the
    decode steps' errors correlate at 0.27 (the validation batches), and summed ends held 95 % of
    the measured totals for a nominal 80 %."""
    point = sum(p for p, _, _ in parts)
    below = math.sqrt(sum((p - lo) ** 2 for p, lo, _ in parts))
    above = math.sqrt(sum((hi - p) ** 2 for p, _, hi in parts))
    return point - below, point + above


def bundled_piecewise_rows(path: Path = PIECEWISE_DATA) -> list[dict]:
    """The reference engine's prefills timed through piecewise CUDA graphs (checked rows)."""
    import pandas as pd

    return check_rows(pd.read_parquet(path).to_dict("records"), ("piecewise_prefill",))


def bundled_mixed_rows(path: Path = MIXED_DATA) -> list[dict]:
    """The reference engine's continuous-batching steps (prefill chunks and decoding sequences in one
    pass), eager and, up to 512 tokens, through piecewise CUDA graphs (checked rows)."""
    import pandas as pd

    return _check_by_column(pd.read_parquet(path).to_dict("records"), "piecewise_mixed_ms",
                            ("mixed", "piecewise_mixed"), ("mixed",))


def bundled_new_model_rows(path: Path = NEW_MODEL_DATA) -> list[dict]:
    """Batches of models that no fitted batch ran (never fitted on), the TP=1 ones with their prefill
    timed through piecewise CUDA graphs too (checked rows)."""
    import pandas as pd

    return _check_by_column(pd.read_parquet(path).to_dict("records"), "piecewise_prefill_ms",
                            ("piecewise_prefill",), ())


def _check_by_column(rows: list[dict], column: str, passes_with: tuple[str, ...],
                     passes_without: tuple[str, ...]) -> list[dict]:
    """``check_rows`` of the rows that measured ``column`` (with ``passes_with``), then of the
    others (with ``passes_without``): not every batch of a file ran every pass."""
    has = [r for r in rows if _is_number(r.get(column))]
    lacks = [r for r in rows if not _is_number(r.get(column))]
    return (check_rows(has, passes_with) if has else []) + (check_rows(lacks, passes_without) if lacks else [])


def validate_new_models(rows: list[dict], gpu, overhead: EngineOverhead, fitted_models: set) -> dict:
    """synperf against models none of the fitted batches ran: each batch priced as ``simulate
    batch`` prices it, with ``overhead`` (fitted on every validation batch), and its prefill, where
    vLLM would run it through piecewise CUDA graphs (at most ``VLLM_PIECEWISE_MAX_TOKENS`` tokens)
    and the row has the piecewise time, against that. A row of a model in ``fitted_models`` is
    refused: it is no test."""
    from synperf.workloads.engines import VLLM_PIECEWISE_MAX_TOKENS

    seen = sorted({r["model"] for r in rows} & fitted_models)
    if seen:
        raise SynperfError(f"{', '.join(seen)}: fitted on, so not a new model to validate on")
    report = _summarise([_row_report(r, gpu, overhead) for r in rows])
    small = [r for r in rows
             if "piecewise_prefill_ms" in r and sum(json.loads(r["prompt_lens"])) <= VLLM_PIECEWISE_MAX_TOKENS]
    samples = samples_from_rows(small, gpu, piecewise=True)
    errors: dict = {}
    for s, e in zip(samples, _errors(overhead, samples)):
        errors.setdefault((s.group, s.tp), []).append(e)
    for entry in report["summary"]:
        mine = errors.get((entry["model"], entry["tp"]), []) if entry["pp"] == 1 else []
        entry.update(piecewise_batches=len(mine),
                     piecewise_prefill_ms_mape=round(float(np.mean(np.abs(mine))), 4) if mine else None)
    every = [e for v in errors.values() for e in v]
    report["overall"].update(piecewise_batches=len(every),
                             piecewise_prefill_ms_mape=round(float(np.mean(np.abs(every))), 4) if every else None)
    return report


def validate_mixed(rows: list[dict], gpu, overhead_without) -> dict:
    """synperf against measured continuous-batching steps, never fitted on: each priced as
    ``simulate serve`` prices a step (``engines.mixed_pass``), eagerly and, where measured, as
    piecewise CUDA graphs, with ``overhead_without(model)``: an overhead fitted without the model."""
    from synperf.workloads.engines import mixed_pass
    from synperf.workloads.model import load_model, with_layers
    from synperf.workloads.static_batch import price_pass

    errors: dict = {}
    for r in rows:
        model = with_layers(load_model(r["model"]), int(r["num_layers"]))
        chunks = [(p, p) for p in json.loads(r["prompt_lens"])]
        decoding = [r["mixed_decode_ctx"] + 1] * r["mixed_decode_seqs"]
        for mode, column in (("eager", "mixed_ms"), ("piecewise", "piecewise_mixed_ms")):
            if column not in r:
                continue
            fp = mixed_pass(model, gpu, int(r["tp"]), kernels_of(r), chunks, decoding, moe_engine=moe_engine_of(r),
                            piecewise=mode == "piecewise")
            cost = price_pass(fp, gpu, "nccl", overhead_without(r["model"]))
            bound = "host" if cost.issue_us >= cost.gpu_us[0] else "gpu"
            errors.setdefault((mode, bound), []).append(cost.latency_us / (r[column] * 1e3) - 1.0)
    return {f"{mode}/{bound}": {"steps": len(v), "mape": round(float(np.mean(np.abs(v))), 4),
                                "bias": round(float(np.median(v)), 4)}
            for (mode, bound), v in sorted(errors.items())}


def fit_piecewise(overhead: EngineOverhead, samples: list[PassSample]) -> EngineOverhead:
    """``overhead`` with the kernel scale of piecewise CUDA-graph passes fitted on ``samples``
    (least squares on relative error, over the passes the GPU bounds); every other term is the
    eager prefill's or the CUDA-graph decode's."""
    base = replace(overhead, piecewise={"kernel_scale": 0.0})
    bound = [s for s in samples
             if base.piecewise_issue_us(s.modelled_launches, s.layers, s.layer_kind, s.tp, s.routed_pairs,
                                        s.attention_calls)
             < 0.98 * s.measured_us]
    if len(bound) < 4:
        raise SynperfError(f"{len(bound)} piecewise passes bound by the GPU: at least four are needed to fit their scale")
    y = np.array([s.measured_us for s in bound])
    offset = np.array([base.gpu_us(s.phase, 0.0, s.tokens, s.layers, s.layer_kind, s.attention, s.routed_pairs,
                                   graph_launches=s.modelled_launches) for s in bound])
    k = np.array([s.kernels_us for s in bound]) / y
    r = (y - offset) / y
    return replace(overhead, piecewise={"kernel_scale": round(float(np.dot(k, r) / np.dot(k, k)), 6)})


def validate_piecewise(samples: list[PassSample], overhead: EngineOverhead) -> dict:
    """synperf against the piecewise prefills, the scale fitted without the pass's model
    (leave-one-model-out), the other terms ``overhead``'s; and the same passes priced as eager
    ones, as synperf priced vLLM's small steps before."""
    per_model: dict = {}
    for group in sorted({s.group for s in samples}):
        fitted = fit_piecewise(overhead, [s for s in samples if s.group != group])
        held = [s for s in samples if s.group == group]
        eager = [replace(s, piecewise=False) for s in held]
        for s, e, e_eager in zip(held, _errors(fitted, held), _errors(fitted, eager)):
            per_model.setdefault((group, s.tp), []).append((e, e_eager))
    summary = [{"model": m, "tp": tp, "batches": len(v),
                "prefill_ms_mape": round(float(np.mean([abs(e) for e, _ in v])), 4),
                "prefill_ms_bias": round(float(np.median([e for e, _ in v])), 4),
                "priced_eager_mape": round(float(np.mean([abs(x) for _, x in v])), 4)}
               for (m, tp), v in sorted(per_model.items())]
    every = [x for v in per_model.values() for x in v]
    return {"rows": len(every), "summary": summary,
            "prefill_ms_mape": round(float(np.mean([abs(e) for e, _ in every])), 4),
            "priced_eager_mape": round(float(np.mean([abs(x) for _, x in every])), 4)}


INTERVAL_QUANTILES = (0.1, 0.9)


def _held_out_errors(samples: list[PassSample], extra: dict, repeats: list[PassSample] = ()
                     ) -> tuple[list[tuple[PassSample, float]], list[tuple[PassSample, float]]]:
    """Every pass, and every repeat measurement of a pass, with its relative error (predicted /
    measured - 1) under a fit without its model: (the samples', the repeats')."""
    out: tuple[list, list] = ([], [])
    for group in sorted({s.group for s in samples}):
        others = [s for s in samples if s.group != group]
        if not others:
            continue
        fitted = fit(others, extra)
        for errors, passes in zip(out, (samples, repeats)):
            held = [s for s in passes if s.group == group]
            errors += list(zip(held, _errors(fitted, held)))
    return out


def with_interval(overhead: EngineOverhead, samples: list[PassSample], extra: dict,
                  repeats: list[PassSample] = (),
                  held_out: tuple[list[tuple[PassSample, float]], list[tuple[PassSample, float]]] | None = None
                  ) -> EngineOverhead:
    """``overhead`` with the interval leave-one-model-out needs on ``samples`` and on ``repeats``
    (the same batches measured again on other hosts and runs, which a user's host is one more of;
    ``held_out``: their ``_held_out_errors``, computed if not given): the quantiles of
    log(measured / predicted) per phase."""
    logs: dict = {"prefill": [], "decode": []}
    errors = held_out if held_out is not None else _held_out_errors(samples, extra, repeats)
    for s, e in errors[0] + errors[1]:
        logs[s.phase].append(-math.log1p(e))
    interval = {phase: [round(float(np.quantile(v, q)), 4) for q in INTERVAL_QUANTILES]
                for phase, v in logs.items() if v}
    return replace(overhead, interval=interval)


def _errors(overhead: EngineOverhead, samples: list[PassSample]) -> list[float]:
    return [overhead.pass_us(s.phase, s.kernels_us, s.modelled_launches, s.tokens, s.seqs, s.layers, s.layer_kind,
                             s.attention, s.tp, s.routed_pairs, s.modelled_host_calls, s.call_us, s.piecewise,
                             s.attention_calls)
            / s.measured_us - 1.0 for s in samples]


def validate(rows: list[dict], gpu, repeat_rows: list[dict] = (), piecewise_rows: list[dict] = (),
             mixed_rows: list[dict] = (), new_model_rows: list[dict] = ()) -> dict:
    """synperf against the measured batches, the engine overhead fitted without the batch's model
    (leave-one-model-out). Per (model, tp): MAPE of prefill, median decode step and total
    (prefill + (output_len - 1) x the median step), plus the kernel-only error (no overhead model).
    ``repeat_rows``: the same batches measured again elsewhere, which widen the interval only;
    ``piecewise_rows``: prefills timed through piecewise CUDA graphs (``validate_piecewise``, the
    eager terms fitted on all of ``rows``); ``mixed_rows``: continuous-batching steps
    (``validate_mixed``; the overhead and the piecewise scale fitted without the step's model);
    ``new_model_rows``: batches of models no row of ``rows`` ran (``validate_new_models``, with the
    overhead fitted on every row, as it ships)."""
    samples = samples_from_rows(rows, gpu)
    repeats = samples_from_rows(repeat_rows, gpu)
    if len({s.group for s in samples}) < 2:
        raise SynperfError("leave-one-model-out needs the PP=1 batches of at least two models")
    extra = launch_counts(samples)

    def fold(without: str | None) -> EngineOverhead:
        train = [s for s in samples if s.group != without]
        return with_interval(fit(train, extra), train, extra, [s for s in repeats if s.group != without])

    fits = {g: fold(g) for g in sorted({s.group for s in samples})}
    per_row = []
    for r in rows:
        if r["model"] not in fits:       # a model measured only under PP: no fit has seen it
            fits[r["model"]] = fold(None)
        per_row.append(_row_report(r, gpu, fits[r["model"]]))
    report = {"rows": len(rows), **_summarise(per_row), "per_row": per_row}
    piecewise = samples_from_rows(piecewise_rows, gpu, piecewise=True)
    if piecewise:
        report["piecewise"] = validate_piecewise(piecewise, fit(samples, extra))
    if mixed_rows:
        report["mixed"] = validate_mixed(mixed_rows, gpu, lambda model: fit_piecewise(
            fits.get(model) or fold(None), [s for s in piecewise if s.group != model]))
    if new_model_rows:
        shipped = fold(None)
        if piecewise:
            shipped = fit_piecewise(shipped, piecewise)
        report["new_models"] = validate_new_models(new_model_rows, gpu, shipped, {r["model"] for r in rows})
    return report


def _row_report(r: dict, gpu, overhead: EngineOverhead) -> dict:
    """One measured batch priced with ``overhead``: (predicted, measured) per phase and the total,
    the predicted intervals, and the kernels alone."""
    (p_pre, k_pre, lo_pre, hi_pre), (p_dec, k_dec, lo_dec, hi_dec) = _priced(r, gpu, overhead)
    steps = int(r["output_len"]) - 1
    label = r["model"] + ("" if moe_engine_of(r) == "reference" else f" [{moe_engine_of(r)} MoE]") \
        + (" [FA3]" if r.get("attention") == "flash_attn3" else "")
    return {"model": label, "tp": int(r["tp"]), "pp": int(r.get("pp") or 1), "batch": int(r["batch"]),
            "prompt_tokens": int(r["prompt_tokens"]),
            "prefill_ms": (p_pre, r["prefill_ms"]), "decode_step_ms": (p_dec, r["decode_step_median_ms"]),
            "total_ms": (p_pre + steps * p_dec, r["total_ms"]),
            "interval_ms": {"prefill_ms": (lo_pre, hi_pre), "decode_step_ms": (lo_dec, hi_dec),
                            "total_ms": sum_interval((p_pre, lo_pre, hi_pre),
                                                     (steps * p_dec, steps * lo_dec, steps * hi_dec))},
            "kernels_only_prefill_ms": (k_pre, r["prefill_ms"]),
            "kernels_only_decode_step_ms": (k_dec, r["decode_step_median_ms"]),
            "prefill_host_share": round(r["prefill_host_ms"] / r["prefill_ms"], 4) if "prefill_host_ms" in r else None}


_METRICS = ("prefill_ms", "decode_step_ms", "total_ms", "kernels_only_prefill_ms", "kernels_only_decode_step_ms")


def _summarise(per_row: list[dict]) -> dict:
    """MAPE per metric and interval coverage, per (model, tp, pp) (``summary``) and over all rows
    (``overall``)."""
    groups: dict = {}
    for row in per_row:
        groups.setdefault((row["model"], row["tp"], row["pp"]), []).append(row)
    summary = []
    for (model, tp, pp), rs in sorted(groups.items()):
        entry = {"model": model, "tp": tp, "pp": pp, "batches": len(rs)}
        for m in _METRICS:
            entry[m + "_mape"] = round(float(np.mean([abs(r[m][0] / r[m][1] - 1.0) for r in rs])), 4)
        entry.update(_coverage(rs))
        summary.append(entry)
    overall = {m + "_mape": round(float(np.mean([abs(r[m][0] / r[m][1] - 1.0) for r in per_row])), 4) for m in _METRICS}
    overall.update(_coverage(per_row))
    overall["prefill_ms_mape_by_host_share"] = _by_host_share(per_row)
    return {"summary": summary, "overall": overall}


# What sets an eager prefill, read from the engine's own measurement: the host time of the pass
# (its call returning after issuing every kernel) over the wall time.
HOST_SHARE_CLASSES = (("gpu", 0.0, HOST_BOUND_SHARE), ("mixed", HOST_BOUND_SHARE, 0.9), ("host", 0.9, math.inf))


def _by_host_share(per_row: list[dict]) -> dict:
    """Prefill MAPE of the batches the GPU bounds (measured host time under half the pass), the
    host bounds (90 % or more) and those between: the GPU-bound side tests the kernel models, the
    host-bound side the host's issue rate, which moves with the host's load from run to run."""
    out = {}
    for name, lo, hi in HOST_SHARE_CLASSES:
        rs = [r for r in per_row if r.get("prefill_host_share") is not None and lo <= r["prefill_host_share"] < hi]
        out[name] = {"batches": len(rs), "mape": round(float(np.mean([abs(r["prefill_ms"][0] / r["prefill_ms"][1] - 1.0)
                                                                       for r in rs])), 4) if rs else None}
    return out


def _host_share_line(overall: dict) -> str:
    labels = {"gpu": "GPU-bound", "mixed": "between", "host": "host-bound"}
    parts = [f"{labels[name]} {c['batches']} batches" + (f" {c['mape']:.1%}" if c["mape"] is not None else "")
             for name, c in overall["prefill_ms_mape_by_host_share"].items()]
    return ("prefill by what bounds it (the engine's measured host time: under 50 % of the pass GPU-bound,"
            " 90 % or more host-bound): " + ", ".join(parts))


def _coverage(per_row: list[dict]) -> dict:
    """Share of measured prefills, median decode steps and totals inside their predicted interval."""
    return {f"{m}_in_interval": round(float(np.mean([lo <= r[m][1] <= hi for r in per_row
                                                       for lo, hi in [r["interval_ms"][m]]])), 4)
            for m in ("prefill_ms", "decode_step_ms", "total_ms")}


def _priced(row: dict, gpu, overhead: EngineOverhead) -> tuple[tuple[float, float, float, float], ...]:
    """(wall, kernels + transfers, interval low, interval high) in ms of a row's prefill and median
    decode step, as ``simulate batch`` prices them, with ``overhead`` (fitted without the row's model)."""
    from synperf.workloads.model import load_model, with_layers
    from synperf.workloads.static_batch import price_pipeline

    model = with_layers(load_model(row["model"]), int(row["num_layers"]))
    prompts = json.loads(row["prompt_lens"])
    mid = (int(row["output_len"]) - 2) // 2
    out = []
    for phase, lens in (("prefill", prompts), ("decode", [p + 1 + mid for p in prompts])):
        cost = price_pipeline(model, gpu, int(row["tp"]), int(row["pp"]), kernels_of(row), phase, lens, "nccl", overhead,
                              moe_engine=moe_engine_of(row))
        kernels = sum(v for k, v in cost.by_family.items() if k != "overhead")
        out.append((cost.latency_us / 1e3, kernels / 1e3, cost.low_us / 1e3, cost.high_us / 1e3))
    return tuple(out)


def leave_one_model_out(held_out: list[tuple[PassSample, float]]) -> dict:
    """Per held-out model and phase: mean absolute relative error of the pass time (``held_out``:
    ``_held_out_errors``)."""
    errs: dict = {}
    for s, e in held_out:
        errs.setdefault(f"{s.group}/{s.phase}", []).append(abs(e))
    return {key: round(float(np.mean(v)), 4) for key, v in sorted(errs.items())}


def _coverage_line(overall: dict) -> str:
    return (f"measured inside the predicted 10-90 % interval: prefill {overall['prefill_ms_in_interval']:.0%},"
            f" decode step {overall['decode_step_ms_in_interval']:.0%}, total {overall['total_ms_in_interval']:.0%}")


def format_validation(report: dict) -> str:
    width = max([16] + [len(e["model"]) + 2 for e in report["summary"]])
    lines = [f"synperf vs the reference engine: {report['rows']} batches; engine overhead fitted without the"
             " batch's model (leave-one-model-out)",
             f"{'model':<{width}}{'tp':>3}{'pp':>3}{'batches':>8}{'prefill':>9}{'decode':>9}{'total':>9}"
             "   kernels only: prefill decode"]
    for e in report["summary"]:
        lines.append(f"{e['model']:<{width}}{e['tp']:>3}{e['pp']:>3}{e['batches']:>8}{e['prefill_ms_mape']:>9.1%}"
                     f"{e['decode_step_ms_mape']:>9.1%}{e['total_ms_mape']:>9.1%}"
                     f"   {e['kernels_only_prefill_ms_mape']:>13.1%} {e['kernels_only_decode_step_ms_mape']:>6.1%}")
    o = report["overall"]
    lines.append(f"{'all':<{width}}{'':>6}{report['rows']:>8}{o['prefill_ms_mape']:>9.1%}"
                 f"{o['decode_step_ms_mape']:>9.1%}{o['total_ms_mape']:>9.1%}   {o['kernels_only_prefill_ms_mape']:>13.1%}"
                 f" {o['kernels_only_decode_step_ms_mape']:>6.1%}")
    lines.append(_coverage_line(o))
    lines.append(_host_share_line(o))
    if "piecewise" in report:
        pw = report["piecewise"]
        lines.append(f"prefills through piecewise CUDA graphs (vLLM V1, <= 512 tokens): {pw['rows']} batches,"
                     " their kernel scale fitted without the batch's model")
        for e in pw["summary"]:
            lines.append(f"{e['model']:<{width}}{e['tp']:>3}{1:>3}{e['batches']:>8}{e['prefill_ms_mape']:>9.1%}"
                         f"   priced as eager passes: {e['priced_eager_mape']:.1%}")
        lines.append(f"{'all':<{width}}{'':>6}{pw['rows']:>8}{pw['prefill_ms_mape']:>9.1%}"
                     f"   priced as eager passes: {pw['priced_eager_mape']:.1%}")
    if "mixed" in report:
        lines.append("continuous-batching steps (prefill chunks + decoding sequences), never fitted on:")
        for key, e in report["mixed"].items():
            mode, bound = key.split("/")
            lines.append(f"  {mode}, {bound}-bound: {e['steps']} steps, {e['mape']:.1%} (median {e['bias']:+.1%})")
    if "new_models" in report:
        new = report["new_models"]
        lines.append("models no fitted batch ran, priced with the fit as it ships (every batch above):"
                     "   piecewise prefill (<= 512 tokens)")
        for e in new["summary"] + [{"model": "all", "tp": "", "pp": "", **new["overall"],
                                    "batches": sum(e["batches"] for e in new["summary"])}]:
            pw = e["piecewise_prefill_ms_mape"]
            lines.append(f"{e['model']:<{width}}{e['tp']:>3}{e['pp']:>3}{e['batches']:>8}{e['prefill_ms_mape']:>9.1%}"
                         f"{e['decode_step_ms_mape']:>9.1%}{e['total_ms_mape']:>9.1%}"
                         + (f"   {pw:>13.1%} ({e['piecewise_batches']})" if pw is not None else ""))
        lines.append(_coverage_line(new["overall"]))
        lines.append(_host_share_line(new["overall"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from synperf.gpu.registry import resolve_gpu

    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_DATA
    rows = pd.read_parquet(path).to_dict("records")
    gpu = resolve_gpu("h200")
    samples = samples_from_rows(rows, gpu)
    repeats = samples_from_rows(bundled_repeat_rows() if path == DEFAULT_DATA else [], gpu)
    extra = launch_counts(samples)
    held_out = _held_out_errors(samples, extra, repeats)
    overhead = with_interval(fit(samples, extra), samples, extra, repeats, held_out)
    piecewise = bundled_piecewise_rows()
    overhead = fit_piecewise(overhead, samples_from_rows(piecewise, gpu, piecewise=True))
    result = {**asdict(overhead), "source": f"{path.name}: {len(rows)} batches on {rows[0]['gpu_name']} "
              f"(synperf reference engine); interval also from {len(repeats) // 2} repeats in {REPEAT_DATA.name};"
              f" piecewise scale from {len(piecewise)} prefills in {PIECEWISE_DATA.name}",
              "leave_one_model_out_mape": leave_one_model_out(held_out[0])}
    out = Path(__file__).with_name("engine_overhead.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
