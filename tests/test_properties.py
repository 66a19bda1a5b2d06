"""Property tests over every kernel family, library and phase on six GPUs (docs/reliability.md).

For any case Hypothesis draws, ``parse_case`` + ``predict`` either give a prediction, or raise
InputError / SpecError (an invalid combination: FP8 without FP8 tensor cores, fa3 off Hopper, a
Triton config that does not fit in shared memory...); any other exception fails. A prediction is
finite and positive, its ceiling is a lower bound of the estimate and its interval, and it is
bit-identical when asked again, also after the cache is cleared. Neighbouring shapes (one more
row, column, token or kv position) never move the ceiling by more than 2x unless the
decomposition changed (tile config, split-K, number of tasks, waves, occupancy).
"""

from __future__ import annotations

import copy
import math
import os

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from synperf import predict as predict_module
from synperf.cases import parse_case
from synperf.demand import PIPES
from synperf.errors import InputError, SpecError
from synperf.gpu import resolve_gpu
from synperf.kernels.gemm import choose_config
from synperf.predict import demand_for, predict

GPUS = ("h100-sxm", "h200", "a100-sxm4-80gb", "l40s", "b200", "rtx-4090")
_SPECS = {name: resolve_gpu(name) for name in GPUS}
EXPECTED = (InputError, SpecError)
# SYNPERF_HYPOTHESIS_SCALE=10 runs ten times the examples (a deeper local or nightly run).
SCALE = max(1, int(os.environ.get("SYNPERF_HYPOTHESIS_SCALE", "1")))
FAST = settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

gpus = st.sampled_from(GPUS).map(_SPECS.__getitem__)
caches = st.sampled_from(["cold", "warm"])


# ---------------------------------------------------------------------------------- strategies
@st.composite
def gemm_cases(draw, max_m=8192):
    library = draw(st.sampled_from(["cublas", "cublaslt_scaled_mm", "fp8_block"]))
    dtype = draw(st.sampled_from(["bf16", "fp16"])) if library == "cublas" else "fp8_e4m3"
    m = draw(st.integers(1, max_m))
    if library == "cublaslt_scaled_mm":
        n, k = 16 * draw(st.integers(1, 1024)), 16 * draw(st.integers(1, 1024))
    elif library == "fp8_block":
        n, k = draw(st.integers(1, 16384)), 128 * draw(st.integers(1, 128))
    else:
        n, k = draw(st.integers(1, 16384)), draw(st.integers(1, 16384))
    return {"family": "gemm", "library": library, "dtype": dtype, "m": m, "n": n, "k": k, "cache": draw(caches)}


@st.composite
def attention_cases(draw):
    library = draw(st.sampled_from(["flash_attn2_torch_sdpa", "flashinfer", "fa3", "flash_attn3"]))
    phase = draw(st.sampled_from(["prefill", "decode"]))
    kv_heads = draw(st.sampled_from([1, 2, 4, 8]))
    group = draw(st.sampled_from([1, 2, 4, 5, 8]))
    head_dim = draw(st.sampled_from([64, 80, 96, 128, 192, 256] if library not in ("fa3", "flash_attn3")
                                    else [64, 128, 256]))
    dtype = draw(st.sampled_from(["bf16", "fp16"]))
    case = {"family": "attention", "library": library, "dtype": dtype, "phase": phase, "num_heads": kv_heads * group,
            "num_kv_heads": kv_heads, "head_dim": head_dim, "cache": draw(caches)}
    batch = draw(st.integers(1, 6))
    per_request = library != "flash_attn2_torch_sdpa" and draw(st.booleans())
    if per_request:
        kv = draw(st.lists(st.integers(1, 4096), min_size=batch, max_size=batch))
        case["kv_lens"] = kv
        if phase == "prefill" or draw(st.booleans()):
            case["q_lens"] = [draw(st.integers(1, min(x, 1024))) if phase == "decode" else draw(st.integers(1, x))
                              for x in kv]
    else:
        kv = draw(st.integers(1, 4096))
        case.update(batch=batch, kv_len=kv)
        if phase == "prefill":
            case["q_len"] = draw(st.integers(1, kv))
    if phase == "prefill":
        case["causal"] = draw(st.booleans())
        if library != "flash_attn2_torch_sdpa" and draw(st.booleans()):
            case["page_size"] = draw(st.sampled_from([1, 16, 64]))
    elif library == "flashinfer":
        case["page_size"] = draw(st.sampled_from([1, 16, 64]))
        if draw(st.booleans()):
            case["kv_cache_dtype"] = "fp8_e4m3"
    return case


moe_configs = st.one_of(
    st.sampled_from(["vllm_default", "sglang_default"]),
    st.fixed_dictionaries({
        "BLOCK_SIZE_M": st.sampled_from([16, 32, 64, 128]), "BLOCK_SIZE_N": st.sampled_from([32, 64, 128, 256]),
        "BLOCK_SIZE_K": st.sampled_from([32, 64, 128]), "GROUP_SIZE_M": st.sampled_from([1, 8, 16]),
        "num_warps": st.sampled_from([2, 4, 8]), "num_stages": st.integers(1, 5)}),
)


@st.composite
def moe_cases(draw):
    experts = draw(st.sampled_from([1, 8, 16, 64, 128]))
    return {"family": "moe", "library": "triton_fused_moe", "dtype": draw(st.sampled_from(["bf16", "fp16"])),
            "tokens": draw(st.integers(1, 2048)), "hidden": 64 * draw(st.integers(1, 64)),
            "intermediate": 64 * draw(st.integers(1, 32)), "num_experts": experts,
            "topk": draw(st.integers(1, min(8, experts))), "stage": draw(st.sampled_from(["w13", "w2", "all"])),
            "config": draw(moe_configs), "cache": draw(caches)}


elementwise_libs = st.sampled_from(["torch", "flashinfer", "triton"])


@st.composite
def rmsnorm_cases(draw, max_tokens=8192):
    return {"family": "rmsnorm", "library": draw(elementwise_libs), "dtype": draw(st.sampled_from(["bf16", "fp16"])),
            "tokens": draw(st.integers(1, max_tokens)), "hidden": draw(st.integers(1, 16384)),
            "residual": draw(st.booleans()), "cache": draw(caches)}


@st.composite
def silu_cases(draw):
    return {"family": "silu_and_mul", "library": draw(elementwise_libs), "dtype": draw(st.sampled_from(["bf16", "fp16"])),
            "tokens": draw(st.integers(1, 8192)), "intermediate": draw(st.integers(1, 32768)), "cache": draw(caches)}


@st.composite
def rope_cases(draw):
    kv = draw(st.sampled_from([1, 2, 4, 8]))
    return {"family": "rope", "library": draw(elementwise_libs), "dtype": draw(st.sampled_from(["bf16", "fp16"])),
            "tokens": draw(st.integers(1, 8192)), "num_heads": kv * draw(st.sampled_from([1, 4, 8])),
            "num_kv_heads": kv, "head_dim": draw(st.sampled_from([32, 64, 96, 128, 256])), "cache": draw(caches)}


FAMILIES = {"gemm": gemm_cases(), "attention": attention_cases(), "moe": moe_cases(), "rmsnorm": rmsnorm_cases(),
            "silu_and_mul": silu_cases(), "rope": rope_cases()}


# ------------------------------------------------------------------------------------- helpers
def attempt(obj: dict, gpu):
    """(case, prediction), or None when the input is rejected with an InputError / SpecError."""
    note(f"{gpu.id}: {obj}")
    try:
        case = parse_case(obj)
        return case, predict(case, gpu)
    except EXPECTED:
        return None


def bits(pred) -> tuple:
    return tuple(float(getattr(pred, f)).hex() for f in ("latency_us", "latency_low_us", "latency_high_us",
                                                          "ceiling_us")) + (pred.bound, pred.model)


def check_prediction(case, pred, gpu) -> None:
    values = (pred.latency_us, pred.latency_low_us, pred.latency_high_us, pred.ceiling_us)
    assert all(math.isfinite(v) and v > 0 for v in values), values
    assert pred.latency_us >= pred.ceiling_us
    assert pred.ceiling_us <= pred.latency_low_us <= pred.latency_us <= pred.latency_high_us
    assert pred.bound in PIPES
    demand = demand_for(case, gpu)
    assert demand.ceiling_us == pred.ceiling_us
    for ld in demand.launches:
        assert ld.launch.num_tasks >= 1 and ld.schedule.waves >= 1
        for row in ld.rows:
            for v in (row.gpu_demand, row.sm_demand, row.gpu_us, row.sm_us):
                assert math.isfinite(v) and v >= 0, (ld.launch.name, row)


# ------------------------------------------------------------------------- per-case invariants
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_prediction_is_finite_bounded_and_deterministic(family):
    @FAST
    @given(obj=FAMILIES[family], gpu=gpus)
    def check(obj, gpu):
        original = copy.deepcopy(obj)
        got = attempt(obj, gpu)
        assert obj == original, "parse_case/predict must not modify the input object"
        if got is None:
            return
        case, pred = got
        check_prediction(case, pred, gpu)
        assert parse_case(copy.deepcopy(obj)) == case
        assert bits(predict(case, gpu)) == bits(pred)
        predict_module.predict.cache_clear()
        assert bits(predict(parse_case(copy.deepcopy(obj)), gpu)) == bits(pred)

    check()


def test_families_are_not_vacuous():
    """Every family/library predicts on every GPU that supports it (the properties above are not
    satisfied by rejecting everything)."""
    cases = [
        {"family": "gemm", "m": 100, "n": 4096, "k": 4096},
        {"family": "gemm", "library": "cublaslt_scaled_mm", "dtype": "fp8_e4m3", "m": 100, "n": 4096, "k": 4096},
        {"family": "gemm", "library": "fp8_block", "dtype": "fp8_e4m3", "m": 100, "n": 4096, "k": 4096},
        {"family": "attention", "library": "flash_attn2_torch_sdpa", "batch": 2, "q_len": 300, "kv_len": 300,
         "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
        {"family": "attention", "library": "flashinfer", "phase": "decode", "kv_lens": [5, 900], "num_heads": 32,
         "num_kv_heads": 8, "head_dim": 128},
        {"family": "attention", "library": "flashinfer", "q_lens": [5, 90], "kv_lens": [5, 900], "num_heads": 32,
         "num_kv_heads": 8, "head_dim": 128},
        {"family": "moe", "tokens": 100, "hidden": 2048, "intermediate": 768, "num_experts": 64, "topk": 8},
        {"family": "rmsnorm", "tokens": 100, "hidden": 4096, "residual": True},
        {"family": "silu_and_mul", "library": "triton", "tokens": 100, "intermediate": 14336},
        {"family": "rope", "library": "torch", "tokens": 100, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
    ]
    fp8 = {"h100-sxm", "h200", "l40s", "b200", "rtx-4090"}
    for name, gpu in _SPECS.items():
        for obj in cases:
            if obj.get("dtype") == "fp8_e4m3" and name not in fp8:
                with pytest.raises(EXPECTED):
                    predict(parse_case(obj), gpu)
                continue
            case = parse_case(obj)
            check_prediction(case, predict(case, gpu), gpu)
    fa3 = parse_case({"family": "attention", "library": "fa3", "batch": 2, "q_len": 300, "kv_len": 300,
                      "num_heads": 32, "num_kv_heads": 8, "head_dim": 128})
    for name, gpu in _SPECS.items():
        if gpu.cc_major == 9:
            check_prediction(fa3, predict(fa3, gpu), gpu)
        else:
            with pytest.raises(InputError):
                predict(fa3, gpu)


# -------------------------------------------------------------------- neighbouring shapes
def signature(case, gpu) -> tuple:
    """What explains a ceiling step: per launch its kernel, tile/split notes, tasks, waves,
    resident CTAs per SM and serial rounds; for cuBLAS/FP8 GEMMs also the chosen TileConfig."""
    demand = demand_for(case, gpu)
    sig = tuple((ld.launch.name, ld.launch.notes, ld.launch.num_tasks, ld.schedule.waves,
                 ld.schedule.occupancy.ctas_per_sm, ld.schedule.rounds_on_busiest) for ld in demand.launches)
    if case.family == "gemm":
        sig += (choose_config(case.call, gpu),)
    return sig


def check_neighbours(obj: dict, field: str, gpu) -> None:
    """``obj`` and ``obj`` with ``field`` + 1: a ceiling step above 2x needs a changed decomposition."""
    first = attempt(obj, gpu)
    bigger = dict(obj)
    if isinstance(obj[field], list):
        bigger[field] = [v + 1 for v in obj[field]]
    else:
        bigger[field] = obj[field] + 1
    second = attempt(bigger, gpu)
    if first is None or second is None:
        return
    (case_a, pred_a), (case_b, pred_b) = first, second
    ratio = max(pred_a.ceiling_us, pred_b.ceiling_us) / min(pred_a.ceiling_us, pred_b.ceiling_us)
    if ratio > 2.0:
        sig_a, sig_b = signature(case_a, gpu), signature(case_b, gpu)
        assert sig_a != sig_b, (f"{field} {obj[field]} -> +1 moves the ceiling {pred_a.ceiling_us:.3f} -> "
                                f"{pred_b.ceiling_us:.3f} us with the same decomposition {sig_a}")


NEIGHBOURS = settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@NEIGHBOURS
@given(obj=gemm_cases(max_m=4096), gpu=gpus, field=st.sampled_from(["m", "n"]))
def test_gemm_neighbour_steps_are_explained(obj, gpu, field):
    assume(not (field == "n" and obj["library"] == "cublaslt_scaled_mm"))   # n + 1 breaks n % 16
    check_neighbours(obj, field, gpu)


@NEIGHBOURS
@given(obj=attention_cases(), gpu=gpus, data=st.data())
def test_attention_neighbour_steps_are_explained(obj, gpu, data):
    fields = [f for f in ("q_len", "kv_len", "q_lens", "kv_lens") if f in obj]
    field = data.draw(st.sampled_from(fields))
    if field == "q_len":
        assume(obj["q_len"] < obj["kv_len"])
    if field == "q_lens":
        assume(all(q < kv for q, kv in zip(obj["q_lens"], obj["kv_lens"])))
    check_neighbours(obj, field, gpu)


@NEIGHBOURS
@given(obj=rmsnorm_cases(), gpu=gpus)
def test_rmsnorm_neighbour_steps_are_explained(obj, gpu):
    check_neighbours(obj, "tokens", gpu)


@NEIGHBOURS
@given(obj=st.one_of(silu_cases(), rope_cases()), gpu=gpus)
def test_elementwise_neighbour_steps_are_explained(obj, gpu):
    check_neighbours(obj, "tokens", gpu)


@NEIGHBOURS
@given(obj=moe_cases(), gpu=gpus)
def test_moe_neighbour_steps_are_explained(obj, gpu):
    check_neighbours(obj, "tokens", gpu)


# ---------------------------------------------------------------------------- invalid inputs
@settings(max_examples=200 * SCALE, deadline=None)
@given(obj=st.dictionaries(st.sampled_from(["family", "library", "dtype", "m", "n", "k", "tokens", "hidden",
                                            "phase", "batch", "q_len", "kv_len", "kv_lens", "num_heads",
                                            "head_dim", "config", "stage", "topk", "num_experts", "cache"]),
                           st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 13), st.floats(),
                                     st.text(max_size=8), st.lists(st.integers(-3, 5000), max_size=4),
                                     st.sampled_from(["gemm", "attention", "moe", "rmsnorm", "rope", "decode",
                                                      "flashinfer", "fa3", "bf16", "fp8_e4m3", "all"])),
                           max_size=10),
       gpu=gpus)
def test_arbitrary_objects_predict_or_raise_input_error(obj, gpu):
    got = attempt(obj, gpu)
    if got is not None:
        check_prediction(*got, gpu)
