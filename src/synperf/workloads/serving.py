"""Continuous-batching serving, in the style of vLLM's V1 scheduler, priced with synperf's kernels.

Requests ``(arrival_s, prompt_tokens, output_tokens)`` come from a seeded Poisson process or a
trace file. Each iteration the scheduler (``simulate_serving``):

1. walks the running requests in admission order; each gets its remaining tokens (one for a
   decoding request, the rest of its prompt for a partial prefill), capped by the token budget
   ``max_num_batched_tokens``. If its KV blocks (16 tokens each) cannot grow, the most recently
   admitted running request is preempted (recompute: it loses its KV and goes to the front of the
   waiting queue), repeatedly, until the blocks fit or the request preempts itself;
2. if nothing was preempted this iteration, admits waiting requests FCFS while ``max_num_seqs``,
   the token budget (chunked prefill: a long prompt is split across iterations) and free blocks
   allow.

The iteration is priced as one forward pass of the mixed batch (``engines.mixed_pass`` +
``static_batch.price_pass``): decode-only iterations get the CUDA-graph overhead; with vLLM,
iterations of up to 512 tokens replay piecewise CUDA graphs; others get the eager per-launch
overhead. Step times are cached on a bucketed key (``step_key``). A request whose
scheduled tokens reach its known length emits a token at the end of the iteration.
See docs/end-to-end.md (``simulate serve``).
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synperf.errors import InputError
from synperf.workloads.engines import mixed_pass
from synperf.workloads.model import ModelConfig
from synperf.workloads.static_batch import price_pass

BLOCK_TOKENS = 16
BYTES = 2                       # bf16 weights and KV cache
CTX_STEP = 1.1                  # context lengths are bucketed in geometric 10 % steps
TOKEN_ROUND = 16                # prefill tokens of an iteration are rounded up to a multiple of this
MAX_TIMELINE = 2000
MAX_REQUESTS = 1_000_000
MAX_PROMPT = 1_048_576
MAX_OUTPUT = 65_536


@dataclass(frozen=True)
class Request:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


# ------------------------------------------------------------------------------------ requests
def poisson_requests(num: int, rate: float, prompt: tuple[int, int], output: tuple[int, int],
                     seed: int = 0) -> list[Request]:
    """``num`` requests with exponential inter-arrival times of mean 1/rate; lengths uniform in the
    inclusive ranges ``prompt`` and ``output`` (a fixed length is the range (n, n))."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, num))
    prompts = rng.integers(prompt[0], prompt[1] + 1, num)
    outputs = rng.integers(output[0], output[1] + 1, num)
    return [Request(float(a), int(p), int(o)) for a, p, o in zip(arrivals, prompts, outputs)]


def _record_field(rec: dict, key: str, where: str, *, integer: bool, hi: float) -> float:
    if key not in rec:
        raise InputError(f"{where}: field '{key}': missing")
    v = rec[key]
    # Range first: a huge JSON integer overflows math.isfinite.
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and -1 < v <= hi and math.isfinite(v)
    if integer:
        ok = ok and float(v) == int(v) and 1 <= v <= hi
    else:
        ok = ok and 0 <= v <= hi
    if not ok:
        what = f"an integer between 1 and {hi}" if integer else f"a number of seconds between 0 and {hi:g}"
        raise InputError(f"{where}: field '{key}': must be {what}, got {str(v)[:40]!r}")
    return v


def parse_trace(text: str, name: str = "trace") -> list[Request]:
    """JSONL (one object a line) or a JSON list of objects with ``arrival_time`` (s),
    ``prompt_tokens`` and ``output_tokens``; every record is checked; sorted by arrival."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}: not valid JSON ({exc})") from None
        records = list(enumerate(raw, 1))
    else:
        records = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((len(records) + 1, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InputError(f"{name}: record {len(records) + 1} (line {i}): not valid JSON ({exc.msg})") from None
    if not records:
        raise InputError(f"{name}: no records")
    if len(records) > MAX_REQUESTS:
        raise InputError(f"{name}: {len(records)} records, at most {MAX_REQUESTS}")
    out = []
    for n, rec in records:
        where = f"{name}: record {n}"
        if not isinstance(rec, dict):
            raise InputError(f"{where}: must be a JSON object, got {type(rec).__name__}")
        out.append(Request(float(_record_field(rec, "arrival_time", where, integer=False, hi=1e9)),
                           int(_record_field(rec, "prompt_tokens", where, integer=True, hi=MAX_PROMPT)),
                           int(_record_field(rec, "output_tokens", where, integer=True, hi=MAX_OUTPUT))))
    return sorted(out, key=lambda r: r.arrival_s)


def load_trace(path: str | Path) -> list[Request]:
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p.name}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_trace(text, p.name)


# ------------------------------------------------------------------------------ memory and KV
def weight_params(m: ModelConfig) -> int:
    """Parameters from the config: embeddings (+ lm_head unless tied), attention, MLP / MoE, norms."""
    h, L = m.hidden_size, m.num_layers
    n = m.vocab_size * h * (1 if m.tie_word_embeddings else 2) + h          # + final norm
    if m.mla:
        nope, rope, v, r = m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim, m.kv_lora_rank
        q = (h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * m.num_heads * (nope + rope)) if m.q_lora_rank \
            else h * m.num_heads * (nope + rope)
        attn = q + h * (r + rope) + r + r * m.num_heads * (nope + v) + m.num_heads * v * h
    else:
        d = m.head_dim
        attn = h * (m.num_heads + 2 * m.num_kv_heads) * d + m.num_heads * d * h + (2 * d if m.qk_norm else 0)
    n += L * (attn + m.norms_per_layer * h)
    n += m.num_dense_layers * 3 * h * m.intermediate_size
    n += m.num_moe_layers * (h * m.num_experts + m.num_experts * 3 * h * m.expert_intermediate
                             + 3 * h * m.shared_expert_intermediate)
    return n


def kv_bytes_per_token(m: ModelConfig, tp: int) -> int:
    """Per GPU: K and V of every layer for this GPU's kv heads (replicated below one a GPU);
    MLA caches the shared latent (kv_lora_rank + rope dims), replicated on every GPU."""
    if m.mla:
        return m.num_layers * (m.kv_lora_rank + m.qk_rope_head_dim) * BYTES
    return 2 * m.num_layers * max(1, m.num_kv_heads // tp) * m.head_dim * BYTES


def _memory_budget(m: ModelConfig, gpu, tp: int, utilization: float) -> tuple[float, float]:
    """(bytes the engine may use on one GPU, bytes of weights each GPU holds)."""
    return gpu.memory_gb * 2 ** 30 * utilization, weight_params(m) * BYTES / tp


def weights_fit(m: ModelConfig, gpu, tp: int, utilization: float) -> bool:
    """Whether the weights leave room for a KV cache on ``gpu`` at ``tp`` (``kv_capacity_blocks``)."""
    budget, weights = _memory_budget(m, gpu, tp, utilization)
    return weights < budget


def kv_capacity_blocks(m: ModelConfig, gpu, tp: int, utilization: float) -> int:
    """(GPU memory (GiB) x utilization - weights / tp) / KV bytes a token, in 16-token blocks."""
    budget, weights = _memory_budget(m, gpu, tp, utilization)
    if weights >= budget:
        raise InputError(f"{m.name.removesuffix('.json')} needs {weights / 2**30:.1f} GiB of weights per GPU at TP {tp};"
                         f" {gpu.id} offers {budget / 2**30:.1f} GiB at --gpu-memory-utilization {utilization:g}")
    blocks = int((budget - weights) // (kv_bytes_per_token(m, tp) * BLOCK_TOKENS))
    if blocks < 1:
        raise InputError(f"no room for a single KV block on {gpu.id} after the weights")
    return blocks


# ------------------------------------------------------------------------------- step pricing
def _ctx_bucket(x: float) -> int:
    return 0 if x <= 0 else round(math.log(x) / math.log(CTX_STEP))


def _ctx_rep(b: int, exact_zero: bool = False) -> int:
    return 0 if exact_zero else max(1, round(CTX_STEP ** b))


def step_key(chunks: list[tuple[int, int]], decode_lens: list[int]) -> tuple:
    """Bucketed key of an iteration: (prefill tokens rounded up to 16, prefill chunks, bucket of
    the chunks' mean past context, decoding sequences, bucket of their mean kv length); context
    buckets are geometric 10 % steps (a representative within about 5 %); a past context of 0
    (whole prompts) stays exact."""
    if chunks:
        q = sum(c[0] for c in chunks)
        past = sum(kv - qq for qq, kv in chunks) / len(chunks)
        pre = (-(-q // TOKEN_ROUND) * TOKEN_ROUND, len(chunks), -1 if past == 0 else _ctx_bucket(past))
    else:
        pre = (0, 0, -1)
    dec = (len(decode_lens), _ctx_bucket(sum(decode_lens) / len(decode_lens)) if decode_lens else 0)
    return pre + dec


def representative(key: tuple) -> tuple[list[tuple[int, int]], list[int]]:
    """The uniform batch a key is priced as: equal chunks, equal decode contexts."""
    q_tot, n_pre, past_b, n_dec, dec_b = key
    chunks = []
    if n_pre:
        past = 0 if past_b < 0 else _ctx_rep(past_b)
        base, extra = divmod(q_tot, n_pre)
        chunks = [(base + (i < extra), base + (i < extra) + past) for i in range(n_pre) if base + (i < extra) > 0]
    return chunks, [_ctx_rep(dec_b)] * n_dec


class StepPricer:
    def __init__(self, model: ModelConfig, gpu, tp: int, framework: str, overhead=None):
        self.model, self.gpu, self.tp, self.framework, self.overhead = model, gpu, tp, framework, overhead
        self.cache: dict[tuple, float] = {}
        self.execution: dict[tuple, str] = {}     # key -> how the engine runs the step (StepCost.execution)
        self.ood = 0

    def __call__(self, chunks, decode_lens) -> tuple[float, str]:
        """(step time in us, how the engine runs it)."""
        key = step_key(chunks, decode_lens)
        us = self.cache.get(key)
        if us is None:
            c, d = representative(key)
            cost = price_pass(mixed_pass(self.model, self.gpu, self.tp, self.framework, c, d), self.gpu,
                              overhead=self.overhead)
            us = self.cache[key] = cost.latency_us
            self.execution[key] = cost.execution
            self.ood += cost.ood_cases
        return us, self.execution[key]


# --------------------------------------------------------------------------------- simulation
@dataclass
class _Req:
    idx: int
    req: Request
    computed: int = 0
    generated: int = 0
    blocks: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None

    @property
    def num_tokens(self) -> int:
        return self.req.prompt_tokens + self.generated


@dataclass
class ServeResult:
    model: str
    gpu: str
    tp: int
    framework: str
    config: dict
    num_requests: int
    span_s: float
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    output_tokens: int
    preemptions: int
    iterations: int
    iterations_by_execution: dict[str, int]
    mean_batch: float
    kv_blocks: int
    step_keys: int
    ood_kernels: int
    timeline: list[dict] = field(default_factory=list)
    timeline_stride: int = 1

    def as_dict(self, timeline: bool = True) -> dict:
        def stats(a):
            if not len(a):
                return None
            return {"mean": round(float(a.mean()) * 1e3, 3),
                    **{f"p{q}": round(float(np.percentile(a, q)) * 1e3, 3) for q in (50, 90, 99)}}
        d = {"model": self.model, "gpu": self.gpu, "tp": self.tp, "framework": self.framework, **self.config,
             "num_requests": self.num_requests, "span_s": round(self.span_s, 4),
             "ttft_ms": stats(self.ttft_s), "tpot_ms": stats(self.tpot_s), "e2e_latency_ms": stats(self.e2e_s),
             "output_throughput_tok_s": round(self.output_tokens / self.span_s, 2) if self.span_s else 0.0,
             "request_throughput_req_s": round(self.num_requests / self.span_s, 4) if self.span_s else 0.0,
             "preemptions": self.preemptions, "iterations": self.iterations,
             "iterations_by_execution": self.iterations_by_execution,
             "mean_batch_size": round(self.mean_batch, 2), "kv_cache_blocks": self.kv_blocks,
             "kv_cache_tokens": self.kv_blocks * BLOCK_TOKENS, "step_keys_priced": self.step_keys,
             "ood_kernels": self.ood_kernels}
        if timeline:
            d["timeline_stride"] = self.timeline_stride
            d["timeline"] = self.timeline
        return d


def simulate_serving(model: ModelConfig, gpu, tp: int, framework: str, requests: list[Request], *,
                     max_num_seqs: int = 256, max_num_batched_tokens: int = 8192,
                     gpu_memory_utilization: float = 0.9, kv_blocks: int | None = None,
                     overhead=None) -> ServeResult:
    """``kv_blocks`` overrides the capacity computed from the GPU memory (tests); ``overhead`` the
    bundled engine overhead (``calibration.EngineOverhead``)."""
    if gpu.cc_major < 8:
        raise InputError(f"{gpu.id} (sm{gpu.compute_capability.replace('.', '')}) has no bf16 tensor cores;"
                         " end-to-end simulation is bf16 only")
    if not requests:
        raise InputError("no requests to simulate")
    model.check_tp(tp)
    capacity = kv_blocks if kv_blocks is not None else kv_capacity_blocks(model, gpu, tp, gpu_memory_utilization)
    for i, r in enumerate(requests):
        need = -(-(r.prompt_tokens + r.output_tokens) // BLOCK_TOKENS)
        if need > capacity:
            raise InputError(f"request {i + 1}: {r.prompt_tokens} + {r.output_tokens} tokens need {need} KV blocks;"
                             f" the cache holds {capacity} ({capacity * BLOCK_TOKENS} tokens)")
    requests = sorted(requests, key=lambda r: r.arrival_s)
    price = StepPricer(model, gpu, tp, framework, overhead)
    reqs = [_Req(i, r) for i, r in enumerate(requests)]
    waiting: deque[_Req] = deque()
    running: list[_Req] = []
    free = capacity
    now = 0.0
    nxt = 0                          # next request not yet arrived
    done = preempts = iters = 0
    batch_sum = 0
    by_execution: dict[str, int] = {}
    timeline: list[tuple] = []
    n = len(reqs)
    while done < n:
        while nxt < n and reqs[nxt].req.arrival_s <= now:
            waiting.append(reqs[nxt])
            nxt += 1
        if not running and not waiting:
            now = reqs[nxt].req.arrival_s
            continue
        budget = max_num_batched_tokens
        scheduled: list[tuple[_Req, int]] = []
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            n_new = min(r.num_tokens - r.computed, budget)
            need = -(-(r.computed + n_new) // BLOCK_TOKENS) - r.blocks
            self_preempted = False
            while need > free:
                victim = running.pop()
                free += victim.blocks
                victim.blocks = victim.computed = 0
                waiting.appendleft(victim)
                preempts += 1
                preempted = True
                if victim is r:
                    self_preempted = True
                    break
            if self_preempted:
                break
            free -= need
            r.blocks += need
            scheduled.append((r, n_new))
            budget -= n_new
            i += 1
        if not preempted:
            while waiting and budget > 0 and len(running) < max_num_seqs:
                r = waiting[0]
                n_new = min(r.num_tokens - r.computed, budget)
                need = -(-(r.computed + n_new) // BLOCK_TOKENS) - r.blocks
                if need > free:
                    break
                waiting.popleft()
                running.append(r)
                free -= need
                r.blocks += need
                scheduled.append((r, n_new))
                budget -= n_new
        if not scheduled:                        # cannot happen with a positive budget; guard anyway
            raise InputError("scheduler made no progress (internal error)")
        chunks, decodes = [], []
        for r, k in scheduled:
            if k == 1 and r.generated >= 1 and r.computed == r.num_tokens - 1:
                decodes.append(r.computed + 1)
            else:
                chunks.append((k, r.computed + k))
        us, execution = price(chunks, decodes)
        dur = us / 1e6
        by_execution[execution] = by_execution.get(execution, 0) + 1
        timeline.append((now, dur, len(running), len(waiting), sum(k for _, k in scheduled)))
        now += dur
        iters += 1
        batch_sum += len(scheduled)
        finished = []
        for r, k in scheduled:
            r.computed += k
            if r.computed == r.num_tokens:
                r.generated += 1
                if r.first_token_s is None:
                    r.first_token_s = now
                if r.generated == r.req.output_tokens:
                    r.finish_s = now
                    finished.append(r)
        for r in finished:
            running.remove(r)
            free += r.blocks
            r.blocks = 0
            done += 1
    arr = np.array([r.req.arrival_s for r in reqs])
    first = np.array([r.first_token_s for r in reqs])
    fin = np.array([r.finish_s for r in reqs])
    outs = np.array([r.req.output_tokens for r in reqs])
    multi = outs > 1
    stride = max(1, -(-len(timeline) // MAX_TIMELINE))
    tl = [{"start_s": round(s, 6), "duration_ms": round(d * 1e3, 4), "running": ru, "waiting": w,
           "scheduled_tokens": t} for s, d, ru, w, t in timeline[::stride]]
    return ServeResult(
        model.name.removesuffix(".json"), gpu.id, tp, framework,
        {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
         "gpu_memory_utilization": gpu_memory_utilization},
        n, float(fin.max() - arr.min()), first - arr, (fin[multi] - first[multi]) / (outs[multi] - 1), fin - arr,
        int(outs.sum()), preempts, iters, dict(sorted(by_execution.items())), batch_sum / iters, capacity, len(price.cache), price.ood, tl, stride)


def format_serve(r: ServeResult) -> str:
    d = r.as_dict(timeline=False)
    lines = [f"{d['model']} on {d['gpu']} x{d['tp']} (TP), {d['framework']}: {d['num_requests']} requests over "
             f"{d['span_s']:.2f} s (max_num_seqs {d['max_num_seqs']}, max_num_batched_tokens "
             f"{d['max_num_batched_tokens']}, KV cache {d['kv_cache_tokens']} tokens)",
             "  metric (ms)          mean        p50        p90        p99"]
    for name, key in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("end-to-end", "e2e_latency_ms")):
        s = d[key]
        if s:
            lines.append(f"  {name:<14} {s['mean']:10.2f} {s['p50']:10.2f} {s['p90']:10.2f} {s['p99']:10.2f}")
    lines += [f"  output throughput   {d['output_throughput_tok_s']:.1f} tok/s, "
              f"request throughput {d['request_throughput_req_s']:.3f} req/s",
              f"  iterations {d['iterations']} ("
              + ", ".join(f"{name} {count}" for name, count in d["iterations_by_execution"].items())
              + f"), mean batch {d['mean_batch_size']}, preemptions {d['preemptions']}, "
              f"step shapes priced {d['step_keys_priced']} (kernel cases out of training range: {d['ood_kernels']})"]
    return "\n".join(lines)
