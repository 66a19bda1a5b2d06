"""Sampling plans, case ids, memory estimates and MoE default configs (no torch)."""

import json

import pytest

from synperf.cases import families
from synperf.profile.cases import FAMILIES, case_id, case_to_row, estimate_bytes, normalize_case
from synperf.profile.moe_configs import resolve_config, resolve_default_config
from synperf.profile.plans import MAX_CASE_BYTES, MODELS, plan, plan_many

REQUIRED = {
    "gemm": {"m", "n", "k"},
    "attention": {"phase", "batch", "q_len", "kv_len", "num_heads", "num_kv_heads", "head_dim", "causal"},
    "moe": {"tokens", "hidden", "intermediate", "num_experts", "topk", "stage", "config"},
    "rmsnorm": {"tokens", "hidden", "residual"},
    "silu_and_mul": {"tokens", "intermediate"},
    "rope": {"tokens", "num_heads", "num_kv_heads", "head_dim"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_plan_is_deterministic_and_well_formed(family):
    a = plan(family, 60, seed=3)
    b = plan(family, 60, seed=3)
    assert a == b
    assert len(a) == 60
    assert plan(family, 60, seed=4) != a
    keys = {json.dumps(c, sort_keys=True) for c in a}
    assert len(keys) == 60  # distinct
    for c in a:
        assert c["family"] == family
        assert REQUIRED[family] <= set(c)
        assert c["dtype"] in ("bf16", "fp16", "fp8_e4m3")
        assert estimate_bytes(c) <= MAX_CASE_BYTES
        json.dumps(c)


def test_gemm_plan_dtypes_and_fp8_alignment():
    cases = plan("gemm", 300, seed=0)
    dts = {c["dtype"] for c in cases}
    assert {"bf16", "fp16", "fp8_e4m3"} <= dts
    for c in cases:
        assert 1 <= c["m"] <= 32768
        if c["dtype"] == "fp8_e4m3":
            assert c["library"] == "cublaslt_scaled_mm"
            assert c["m"] % 16 == 0 and c["n"] % 16 == 0 and c["k"] % 16 == 0
        else:
            assert c["library"] == "cublas"


def test_plan_library_and_dtype_filters():
    cases = plan("rmsnorm", 20, seed=1, library="triton", dtype="fp16")
    assert all(c["library"] == "triton" and c["dtype"] == "fp16" for c in cases)
    cases = plan("gemm", 20, seed=1, dtype="fp8_e4m3")
    assert all(c["library"] == "cublaslt_scaled_mm" for c in cases)


def test_attention_plan_ranges():
    cases = plan("attention", 300, seed=2)
    phases = {c["phase"] for c in cases}
    assert phases == {"prefill", "decode"}
    for c in cases:
        assert c["num_heads"] % c["num_kv_heads"] == 0
        assert c["head_dim"] <= 256
        if c["phase"] == "decode":
            assert c["q_len"] == 1 and c["causal"] is False
            kv_bytes = 2 * c["batch"] * c["num_kv_heads"] * c["kv_len"] * c["head_dim"] * 2
            assert kv_bytes <= 40e9
        else:
            assert c["kv_len"] >= c["q_len"] and c["causal"] is True


def test_moe_plan_uses_real_and_default_configs():
    cases = plan("moe", 200, seed=5)
    cfgs = [c["config"] for c in cases]
    assert "vllm_default" in cfgs and "sglang_default" in cfgs
    assert any(isinstance(x, dict) for x in cfgs)
    assert {c["stage"] for c in cases} == {"w13", "w2", "all"}
    for c in cases:
        assert 1 <= c["topk"] <= c["num_experts"]
        cfg, src = resolve_config(c)
        assert set(cfg) == {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages"}


def test_plan_many_and_unknown_family():
    cases = plan_many(["gemm", "rope"], 5, seed=0)
    assert [c["family"] for c in cases] == ["gemm"] * 5 + ["rope"] * 5
    with pytest.raises(ValueError):
        plan("conv2d", 3, seed=0)


def test_models_table_is_consistent():
    for name, (hidden, heads, kv, hd, inter, vocab, moe) in MODELS.items():
        assert heads % kv == 0, name
        if moe:
            e, topk, mi, shared = moe
            assert 1 <= topk <= e


def test_resolve_default_config_rule():
    small = resolve_default_config("vllm_legacy_default", tokens=8, num_experts=64, hidden=2048, intermediate=1408,
                                   topk=6)
    assert small == {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}
    big = resolve_default_config("sglang_default", tokens=65, num_experts=64, hidden=2048, intermediate=1408, topk=6)
    assert big["BLOCK_SIZE_M"] == 64 and big["GROUP_SIZE_M"] == 8
    assert resolve_default_config("vllm_legacy_default", 64, 64, 1, 1, 1)["BLOCK_SIZE_M"] == 16  # M <= E
    assert resolve_default_config("vllm_default", 64, 64, 1, 1, 1)["BLOCK_SIZE_M"] == 32      # vLLM 0.17+
    with pytest.raises(ValueError):
        resolve_default_config("trtllm_default", 1, 8, 1, 1, 1)


def test_case_id_is_stable_and_respects_explicit_id():
    c = {"family": "gemm", "dtype": "bf16", "library": "cublas", "m": 1, "n": 2, "k": 3}
    same = {"k": 3, "n": 2, "m": 1, "library": "cublas", "dtype": "bf16", "family": "gemm", "cache": "cold"}
    assert case_id(c) == case_id(same)
    assert case_id(c).startswith("gemm-")
    assert case_id(dict(c, m=2)) != case_id(c)
    assert case_id(dict(c, id="mine")) == "mine"


def test_case_to_row_serialises_nested_fields():
    c = {"family": "moe", "tokens": 4, "hidden": 8, "intermediate": 8, "num_experts": 4, "topk": 2,
         "config": {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 1}, "q_lens": [1, 2]}
    row = case_to_row(c)
    assert json.loads(row["config"])["BLOCK_SIZE_M"] == 16
    assert row["q_lens"] == "[1,2]"
    assert row["cache"] == "cold" and row["library"] == "triton_fused_moe"
    assert row["id"] == case_id(c)
    with pytest.raises(ValueError):
        normalize_case({"family": "nope"})


def test_cache_state_decides_the_flush_and_the_id():
    c = {"family": "gemm", "m": 16, "n": 4096, "k": 4096}
    ids = {case_id(dict(c, cache=state)) for state in ("cold", "cold_dirty", "warm")}
    assert len(ids) == 3      # a shape timed after a clean and after a dirtying flush: two rows
    with pytest.raises(ValueError, match="cache must be one of"):
        normalize_case(dict(c, cache="hot"))


def test_profile_cli_sets_the_cache_state_of_planned_cases(capsys):
    from synperf.profile.cli import main
    assert main(["--family", "rope", "--n", "3", "--cache", "cold_dirty", "--dry-run"]) == 0
    cases = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(cases) == 3 and {c["cache"] for c in cases} == {"cold_dirty"}


def test_profile_cli_refuses_a_negative_number_of_compile_workers(capsys):
    from synperf.profile.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["--family", "moe", "--n", "3", "--compile-workers", "-2", "--dry-run"])
    assert exit_.value.code != 0
    assert "--compile-workers: must be an integer >= 0, got -2" in capsys.readouterr().err


MEASURED = [(family, library) for family, module in sorted(families().items())
            for library in module.LIBRARIES if (family, library) != ("gemm", "fp8_block")]   # fp8_block: public data only


@pytest.mark.parametrize("family,library", MEASURED)
def test_planned_cases_pass_the_case_checks(family, library):
    """A plan for one library holds only calls that library accepts: FlashInfer's RoPE, for one,
    refuses head dims 80 and 96, which the planner draws for the others."""
    from synperf.cases import parse_case
    for case in plan(family, 150, seed=5, library=library):
        parse_case(case)


@pytest.mark.parametrize("library", families()["rmsnorm"].LIBRARIES)
def test_qk_norm_plan_draws_per_head_rows(library):
    """Qwen3's q/k norm normalises each head of each token on its own: RMSNorm rows head_dim wide,
    as many as tokens x the rank's query or key heads, never with a residual; the rmsnorm plans of
    earlier seeds are not changed by it."""
    from synperf.cases import parse_case
    cases = plan("rmsnorm_qk", 200, seed=2, library=library)
    head_dims = {MODELS[m][3] for m in ("qwen3-8b", "gemma-3-1b")}
    assert {c["hidden"] for c in cases} == head_dims
    assert all(c["family"] == "rmsnorm" and not c["residual"] and c["library"] == library for c in cases)
    assert max(c["tokens"] for c in cases) > 32768          # more rows than any token count drawn
    for case in cases:
        parse_case(case)


def test_committed_rows_are_the_plans_they_name():
    """data/README.md names the plan seeds of its rows: the Triton RMSNorm plan of seed 9201, the
    q/k-norm plan of seed 9501 and the FlashInfer attention plan of seed 2811 (page sizes 1-64, BF16
    and FP8 KV caches) are still drawn as they were measured."""
    pq = pytest.importorskip("pyarrow.parquet")
    from pathlib import Path
    from synperf.cases import parse_case
    data = Path(__file__).resolve().parents[1] / "data" / "h200"
    plans = {"rmsnorm": (("rmsnorm", 9201, "triton"), ("rmsnorm_qk", 9501, "flashinfer")),
             "attention": (("attention", 2811, "flashinfer"),)}
    for file, seeds in plans.items():
        rows = pq.read_table(data / f"{file}.parquet", columns=["case_json"]).column("case_json").to_pylist()
        # The harness records each case with its defaults filled in; compare the calls they parse to.
        measured = {parse_case({k: v for k, v in json.loads(c).items() if k not in ("cache", "id")}) for c in rows}
        for kind, seed, library in seeds:
            planned = plan(kind, 100, seed, library=library)
            assert all(parse_case(c) in measured for c in planned), (kind, seed)
