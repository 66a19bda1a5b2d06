"""End-to-end workloads: model configs, kernel sequences, the comm model, static batches, CLI."""

import json

import pytest

from synperf.cases import parse_case
from synperf.cli import main
from synperf.errors import InputError
from synperf.gpu.registry import resolve_gpu
from synperf.workloads import comm
from synperf.kernels.moe import engine_table, default_config
from synperf.workloads.engines import forward_pass, mixed_pass
from synperf.workloads.model import bundled_models, load_model, model_from_dict
from synperf.workloads.static_batch import simulate_batch

H100 = resolve_gpu("h100-sxm")
A100 = resolve_gpu("a100-sxm4-80gb")


def test_bundled_configs_load_and_derive():
    assert len(bundled_models()) >= 12
    for name in bundled_models():
        load_model(name)
    llama = load_model("llama-3.1-8b")
    assert (llama.head_dim, llama.num_heads, llama.num_kv_heads, llama.gqa_group) == (128, 32, 8, 4)
    assert not llama.qk_norm and not llama.is_moe and not llama.tie_word_embeddings
    assert load_model("meta-llama/Llama-3.2-1B").head_dim == 64
    assert load_model("llama-3.2-1b").tie_word_embeddings
    assert load_model("qwen3-8b").qk_norm and not load_model("qwen2.5-7b").qk_norm
    moe = load_model("qwen3-30b-a3b")
    assert (moe.num_experts, moe.topk, moe.expert_intermediate, moe.num_moe_layers) == (128, 8, 768, 48)
    assert moe.qk_norm
    ds = load_model("deepseek-v2-lite")
    assert ds.mla and ds.num_moe_layers == 26 and ds.shared_expert_intermediate == 2 * 1408
    assert load_model("mixtral-8x7b").expert_intermediate == 14336
    assert load_model("gemma-2-9b").norms_per_layer == 4
    v3 = load_model("deepseek-v3")
    assert v3.mla and v3.q_lora_rank == 1536 and v3.num_moe_layers == 61 - 3 and v3.shared_expert_intermediate == 2048


def test_gemma3_reads_the_text_model_with_its_config_defaults():
    """Released Gemma 3 configs nest the text model in text_config and leave out what
    Gemma3TextConfig defaults (vocab 262,208, head_dim 256, tied embeddings)."""
    g = load_model("google/gemma-3-27b-it")
    assert (g.hidden_size, g.num_layers, g.num_heads, g.num_kv_heads, g.head_dim) == (5376, 62, 32, 16, 128)
    assert g.qk_norm and g.norms_per_layer == 4 and g.tie_word_embeddings and g.vocab_size == 262_208
    assert g.sliding_window == 1024
    text = {"hidden_size": 1152, "intermediate_size": 6912, "num_hidden_layers": 26, "num_attention_heads": 4,
            "num_key_value_heads": 1, "vocab_size": 262_144, "sliding_window": 512}
    small = model_from_dict({"architectures": ["Gemma3ForCausalLM"], **text}, "gemma-3-1b.json")
    assert small.head_dim == 256 and small.qk_norm and small.vocab_size == 262_144
    nested = {"architectures": ["Gemma3ForConditionalGeneration"], "text_config": dict(text, hidden_size=-1)}
    with pytest.raises(InputError, match=r"gemma.json: field 'text_config.hidden_size': must be between"):
        model_from_dict(nested, "gemma.json")
    with pytest.raises(InputError, match=r"field 'text_config': missing or not an object"):
        model_from_dict({"architectures": ["Gemma3ForConditionalGeneration"]}, "gemma.json")


def test_bad_configs_name_file_and_field(tmp_path):
    raw = {
        "architectures": ["LlamaForCausalLM"], "intermediate_size": 1024, "num_hidden_layers": 2,
        "num_attention_heads": 8, "vocab_size": 1000}
    path = tmp_path / "llama.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"llama.json: field 'hidden_size': missing"):
        load_model(path)
    with pytest.raises(InputError, match="field 'architectures'.*not supported"):
        model_from_dict({**raw, "hidden_size": 512, "architectures": ["FooForCausalLM"]}, "foo.json")
    with pytest.raises(InputError, match="field 'hidden_size'"):
        model_from_dict({**raw, "hidden_size": "big"}, "x.json")
    with pytest.raises(InputError, match="unknown model"):
        load_model("no-such-model")


def _all_parse(fp):
    for case, count, tag in fp.kernels:
        parse_case(case)
        assert count >= 1 and tag


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen3-30b-a3b", "deepseek-v2-lite", "gemma-2-9b", "gpt-oss-20b",
                                  "gemma-3-27b", "deepseek-v3"])
@pytest.mark.parametrize("framework", ["vllm", "sglang"])
@pytest.mark.parametrize("gpu", [H100, A100])
def test_every_case_parses(name, framework, gpu):
    model = load_model(name)
    _all_parse(forward_pass(model, gpu, 1, framework, "prefill", [300, 700]))
    _all_parse(forward_pass(model, gpu, 2, framework, "decode", [301, 701]))


def test_llama_sequence_counts_and_tp():
    m = load_model("llama-3.1-8b")
    fp = forward_pass(m, H100, 1, "sglang", "prefill", [1024, 512])
    gemms = [(c, n, t) for c, n, t in fp.kernels if c["family"] == "gemm"]
    assert sum(n for c, n, t in gemms if t != "lm_head") == 4 * 32
    head = next(c for c, n, t in gemms if t == "lm_head")
    assert head["m"] == 2 and head["n"] == 128256             # one row per sequence
    assert fp.allreduces == []
    attn = next(c for c, n, t in fp.kernels if c["family"] == "attention")
    assert attn["library"] == "flash_attn3" and attn["q_lens"] == [1024, 512]
    fp2 = forward_pass(m, H100, 2, "sglang", "prefill", [1024, 512])
    assert sum(a.count for a in fp2.allreduces if a.tag != "embedding") == 2 * 32
    qkv1 = next(c for c, n, t in fp.kernels if t == "qkv_proj")
    qkv2 = next(c for c, n, t in fp2.kernels if t == "qkv_proj")
    assert qkv1["n"] == (32 + 16) * 128 and qkv2["n"] == qkv1["n"] // 2
    # kv heads are replicated when tp exceeds them
    qkv16 = next(c for c, n, t in forward_pass(m, H100, 16, "vllm", "decode", [9]).kernels if t == "qkv_proj")
    assert qkv16["n"] == (2 + 2 * 1) * 128


def test_attention_library_mapping():
    m = load_model("llama-3.1-8b")
    vllm_a100 = next(c for c, n, t in forward_pass(m, A100, 1, "vllm", "prefill", [100, 300]).kernels
                     if t == "attention")
    assert vllm_a100["library"] == "flash_attn2_torch_sdpa" and vllm_a100["kv_len"] == 300   # padded
    sgl_dec = next(c for c, n, t in forward_pass(m, A100, 1, "sglang", "decode", [100, 300]).kernels
                   if t == "attention")
    assert sgl_dec["library"] == "flashinfer" and sgl_dec["kv_lens"] == [100, 300] and sgl_dec["page_size"] == 1
    sgl_hopper = next(c for c, n, t in forward_pass(m, H100, 1, "sglang", "decode", [100, 300]).kernels
                      if t == "attention")
    assert (sgl_hopper["library"], sgl_hopper["engine"], sgl_hopper["page_size"]) == ("flash_attn3", "sglang", 1)
    vllm_dec = next(c for c, n, t in forward_pass(m, H100, 1, "vllm", "decode", [100, 300]).kernels
                    if t == "attention")
    assert vllm_dec["library"] == "flash_attn3" and vllm_dec["page_size"] == 16


def test_fa3_on_hopper_runs_a_mixed_step_as_one_attention_call():
    """FlashAttention-3 takes a continuous batch's prefill chunks and decode tokens in one varlen
    call, as each engine calls it; FlashInfer (SGLang off Hopper, the reference engine) prices the
    two parts apart."""
    m = load_model("llama-3.1-8b")
    for framework, page in (("vllm", 16), ("sglang", 1)):
        (attn,) = [c for c, n, t in mixed_pass(m, H100, 1, framework, [(256, 1280)], [700, 900]).kernels
                   if c["family"] == "attention"]
        assert attn["q_lens"] == [256, 1, 1] and attn["kv_lens"] == [1280, 700, 900]
        assert (attn["library"], attn["engine"], attn["page_size"]) == ("flash_attn3", framework, page)
        parse_case(attn)
    for framework, gpu in (("sglang", A100), ("reference", H100)):
        parts = [(c["library"], t) for c, n, t in mixed_pass(m, gpu, 1, framework, [(256, 1280)], [700, 900]).kernels
                 if c["family"] == "attention"]
        assert [t for _, t in parts] == ["attention_prefill", "attention_decode"]
    with pytest.raises(InputError):
        forward_pass(m, H100, 1, "trtllm", "decode", [9])


def test_qk_norm_and_moe_cases():
    q = load_model("qwen3-30b-a3b")
    fp = forward_pass(q, H100, 2, "vllm", "decode", [50] * 4)
    tags = {t for _, _, t in fp.kernels}
    assert {"q_norm", "k_norm", "router", "experts"} <= tags and "gate_up_proj" not in tags
    experts = next(c for c, n, t in fp.kernels if t == "experts")
    assert experts["intermediate"] == 384 and experts["topk"] == 8 and experts["engine"] == "vllm"
    # vLLM ships a tuned bf16 config for E=128, N=384 on the H100 but not on the A100 (default rule)
    tuned = engine_table()["engines"]["vllm"]
    assert "E=128,N=384" in tuned["h100-sxm"] and "E=128,N=384" not in tuned["a100-sxm4-80gb"]
    assert list(experts["config"].values()) in tuned["h100-sxm"]["E=128,N=384"].values()
    a100 = next(c for c, n, t in forward_pass(q, A100, 2, "vllm", "decode", [50] * 4).kernels if t == "experts")
    assert a100["config"] == default_config("vllm_default", 4, 128, 2048, 384, 8)
    # The engines' MoE layers have their own unmodelled launches (fused routing), the reference engine's others.
    assert fp.layer_kind == "moe_fused"
    ref = forward_pass(q, H100, 2, "vllm", "decode", [50] * 4, moe_engine="reference")
    ref_experts = next(c for c, n, t in ref.kernels if t == "experts")
    assert ref.layer_kind == "moe" and ref_experts["config"] == "vllm_default" and ref_experts["engine"] == "reference"


def test_comm_fit_and_fallback():
    t_small, how = comm.allreduce_us(8192 * 2, 2, H100, "vllm_graph")
    assert how == "fit:vllm_graph" and 2 < t_small < 20
    t_big, how = comm.allreduce_us(256 << 20, 8, H100)
    assert how == "fit:nccl" and t_big > t_small
    l4 = resolve_gpu("l4")
    t, how = comm.allreduce_us(1 << 20, 2, l4)
    assert how == "analytical ring" and t > comm.ANALYTICAL_LATENCY_US
    assert comm.allreduce_us(1 << 20, 1, H100)[0] == 0.0


def test_simulate_batch_totals_and_growth():
    m = load_model("llama-3.2-1b")
    # 400 steps: the contexts grow by 40-80 %, an attention cost the models resolve (over 40
    # steps the two short decode calls stay at their launch floor, within the model's wiggle)
    r = simulate_batch(m, H100, 1, "sglang", [512, 1024], 400)
    assert len(r.decode_steps_us) == 399
    assert r.total_ms == pytest.approx(r.prefill_ms + sum(r.decode_steps_us) / 1e3)
    assert r.decode_steps_us[-1] > r.decode_steps_us[0]
    d = r.as_dict()
    assert d["total_low_ms"] <= d["total_ms"] <= d["total_high_ms"]
    assert set(d["breakdown_ms"]["prefill"]) >= {"gemm", "attention", "rmsnorm", "overhead"}
    one = simulate_batch(m, H100, 1, "vllm", [128], 1)
    assert one.decode_steps_us == [] and one.total_ms == pytest.approx(one.prefill_ms)


def test_simulate_batch_says_whether_the_host_or_the_gpu_sets_the_prefill():
    """An eager prefill takes the longer of the GPU's work and the host's issuing of its kernels; the
    result names which, with the host's time (a short prompt on a small model waits on the host, a
    long batch on an 8B model on the GPU)."""
    from synperf.workloads.model import with_layers
    from synperf.workloads.static_batch import format_result

    short = simulate_batch(load_model("llama-3.2-1b"), H100, 1, "sglang", [16], 2)
    long = simulate_batch(load_model("llama-3.1-8b"), H100, 1, "sglang", [4096] * 4, 2)
    s, l = short.as_dict(), long.as_dict()
    assert s["prefill_bound"] == "host" and s["prefill_host_issue_ms"] == pytest.approx(s["prefill_ms"], rel=1e-3)
    assert l["prefill_bound"] == "gpu" and 0 < l["prefill_host_issue_ms"] < 0.5 * l["prefill_ms"]
    # the issue time follows the launches (the layers), not the tokens
    base = load_model("llama-3.1-8b")
    eight, sixteen = (simulate_batch(with_layers(base, n), H100, 1, "sglang", [16], 2).prefill.issue_us for n in (8, 16))
    assert 1.8 < sixteen / eight <= 2.0
    more_tokens = simulate_batch(with_layers(base, 8), H100, 1, "sglang", [2048], 2).prefill.issue_us
    assert more_tokens == pytest.approx(eight, rel=0.05)
    assert "host-bound" in format_result(short) and "GPU-bound" in format_result(long)


def test_host_issue_rate_can_be_set_for_another_host(capsys):
    """--host-us-per-launch prices the eager prefill's kernel issue at the given rate: a host-bound
    prefill scales with it, a GPU-bound one and the CUDA-graph decode steps do not move; a launch
    inside a call keeps its measured ratio to a call, and TP ranks their fitted slowdown."""
    from synperf.workloads.calibration import bundled_overhead

    base = bundled_overhead()
    slow = base.with_host_rate(2 * base.prefill["cpu_us_per_launch"])
    assert slow.prefill["cpu_us_per_launch_in_call"] == pytest.approx(2 * base.prefill["cpu_us_per_launch_in_call"])
    assert slow.prefill["tp_host_slowdown"] == base.prefill["tp_host_slowdown"]
    m = load_model("llama-3.2-1b")
    fast_r, slow_r = (simulate_batch(m, H100, 1, "sglang", [16], 3, overhead=o) for o in (base, slow))
    assert slow_r.prefill_ms == pytest.approx(2 * fast_r.prefill_ms, rel=1e-6)
    assert slow_r.decode_steps_us == fast_r.decode_steps_us
    big = [simulate_batch(load_model("llama-3.1-8b"), H100, 1, "sglang", [4096] * 4, 2, overhead=o).prefill_ms
           for o in (base, slow)]
    assert big[0] == big[1]
    code, out = _cli(capsys, "--json", "--host-us-per-launch", "50")
    assert code == 0 and json.loads(out.out)["host_us_per_launch"] == 50.0


def test_simulate_batch_tp2_adds_comm():
    r = simulate_batch(load_model("llama-3.1-8b"), H100, 2, "vllm", [256] * 2, 3)
    assert r.prefill.comm_us > 0 and "all_reduce" in r.median_decode.by_family


def _cli(capsys, *extra):
    argv = ["simulate", "batch", "--model", "llama-3.2-1b", "--gpu", "h100-sxm", "--framework", "sglang",
            "--prompt-lens", "128,256", "--output-len", "4"]
    code = main(argv + list(extra))
    return code, capsys.readouterr()


def test_cli_simulate_batch_json(capsys):
    code, out = _cli(capsys, "--json")
    assert code == 0
    d = json.loads(out.out)
    assert {"prefill_ms", "decode_step_median_ms", "total_ms", "breakdown_ms"} <= set(d)


@pytest.mark.parametrize("flags, flag", [
    (["--tp", "3"], "--tp"), (["--tp", "0"], "--tp"), (["--pp", "3"], "--pp"), (["--pp", "0"], "--pp"),
    (["--prompt-lens", "1,,2"], "--prompt-lens"), (["--prompt-lens", "0"], "--prompt-lens"),
    (["--prompt-lens", "99999999"], "--prompt-lens"), (["--output-len", "-1"], "--output-len"),
    (["--model", "nope"], "--model"), (["--gpu", "nope"], "--gpu"), (["--framework", "trt"], "--framework"),
    (["--host-us-per-launch", "0"], "--host-us-per-launch"), (["--host-us-per-launch", "nan"], "--host-us-per-launch"),
    (["--host-us-per-launch", "fast"], "--host-us-per-launch"),
])
def test_cli_bad_flags_one_line(capsys, flags, flag):
    code, out = _cli(capsys, *flags)
    assert code != 0
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in out.err


def test_huge_numbers_in_a_model_config_are_refused_by_field():
    import json as _json
    from synperf.errors import InputError
    from synperf.workloads.model import model_from_dict
    from pathlib import Path
    raw = _json.loads((Path(__file__).resolve().parents[1] / "src/synperf/workloads/configs/mixtral-8x7b.json").read_text())
    raw["rms_norm_eps"] = 10 ** 400   # found by the fuzzer: overflowed math.isfinite
    with pytest.raises(InputError, match="rms_norm_eps"):
        model_from_dict(raw, "mixtral.json")


def test_a_library_call_is_one_host_call_whatever_it_launches():
    """cuBLAS's workspace memset and GEMM, FA3's prepare and main kernel, vLLM's align kernels: one
    call from the engine's Python each, however many kernels it launches; the engine's MoE layer is
    several calls (align, two Triton launches, SiLU, sum)."""
    from synperf.predict import predict

    seen = set()
    for model, moe_engine in (("llama-3.1-8b", None), ("qwen3-30b-a3b", "vllm")):
        fp = forward_pass(load_model(model), resolve_gpu("h200"), 1, "sglang", "prefill", [2048, 2048],
                          moe_engine=moe_engine)
        for case, _count, _tag in fp.kernels:
            p = predict(parse_case(case), resolve_gpu("h200"))
            if case["family"] == "moe":
                assert p.host_calls == p.launches - 1 == 5    # the align's two kernels: one call
            else:
                assert p.host_calls == 1
            if p.launches > 1:
                seen.add(case["family"])
    assert {"gemm", "attention", "moe"} <= seen
