import json
import time

import pytest

from synperf.cli import main
from synperf.errors import InputError
from synperf.gpu.registry import resolve_gpu
from synperf.workloads.engines import forward_pass, mixed_pass
from synperf.workloads.model import load_model
from synperf.workloads.serving import (Request, kv_capacity_blocks, parse_trace, poisson_requests,
                                       simulate_serving, weight_params)
from synperf.workloads.static_batch import simulate_batch

H100 = resolve_gpu("h100-sxm")
M = load_model("llama-3.2-1b")


def test_mixed_pass_matches_pure_phases_and_splits_attention():
    pre = forward_pass(M, H100, 1, "vllm", "prefill", [300])
    assert mixed_pass(M, H100, 1, "vllm", [(300, 300)], []).kernels == pre.kernels
    mix = mixed_pass(M, H100, 1, "vllm", [(256, 1000)], [500, 700])
    # 258 tokens: vLLM replays the step's graphs at its capture size 272
    assert mix.phase == "mixed" and mix.piecewise and mix.num_tokens == 272 and mix.num_seqs == 3
    assert mixed_pass(M, H100, 1, "sglang", [(256, 1000)], [500, 700]).num_tokens == 258
    att = {t: c for c, _, t in mix.kernels if t.startswith("attention")}
    assert att["attention_mixed"]["q_lens"] == [256, 1, 1] and att["attention_mixed"]["kv_lens"] == [1000, 500, 700]
    # FlashInfer (the reference engine's kernels) takes the two parts in two calls
    split = {t: c for c, _, t in mixed_pass(M, H100, 1, "reference", [(256, 1000)], [500, 700]).kernels
             if t.startswith("attention")}
    assert split["attention_prefill"]["q_lens"] == [256] and split["attention_prefill"]["kv_lens"] == [1000]
    assert split["attention_decode"]["kv_lens"] == [500, 700]
    ds = load_model("deepseek-v2-lite")
    tags = {t for _, _, t in mixed_pass(ds, H100, 1, "sglang", [(64, 64)], [100]).kernels}
    assert {"kv_b_proj", "w_uk_absorbed", "attention_prefill", "attention_decode"} <= tags


def test_weights_and_capacity():
    assert weight_params(load_model("llama-3.1-8b")) == pytest.approx(8.03e9, rel=0.01)
    assert kv_capacity_blocks(load_model("llama-3.1-8b"), H100, 1, 0.9) * 16 == pytest.approx(467_000, rel=0.01)
    with pytest.raises(InputError, match="weights"):
        kv_capacity_blocks(load_model("llama-3.1-70b"), H100, 1, 0.9)


def test_single_request_reproduces_static_batch():
    prompt, out = 1024, 40
    r = simulate_serving(M, H100, 1, "sglang", [Request(0.0, prompt, out)])
    b = simulate_batch(M, H100, 1, "sglang", [prompt], out)
    assert r.ttft_s[0] * 1e3 == pytest.approx(b.prefill_ms, rel=1e-9)   # whole prompt: exact key
    tpot_ms = (r.e2e_s[0] - r.ttft_s[0]) * 1e3 / (out - 1)
    assert tpot_ms == pytest.approx(b.decode_total_ms / (out - 1), rel=0.03)   # 10 % context buckets
    assert r.iterations == out and r.preemptions == 0


def test_higher_rate_gives_higher_ttft():
    reqs = lambda rate: poisson_requests(200, rate, (512, 2048), (32, 64), seed=1)
    lo = simulate_serving(M, H100, 1, "vllm", reqs(2.0))
    hi = simulate_serving(M, H100, 1, "vllm", reqs(200.0))
    assert hi.ttft_s.mean() > lo.ttft_s.mean() and hi.as_dict()["mean_batch_size"] > lo.as_dict()["mean_batch_size"]


def test_tiny_kv_cache_preempts_but_finishes():
    reqs = [Request(0.0, 200, 100) for _ in range(12)]
    r = simulate_serving(M, H100, 1, "vllm", reqs, kv_blocks=60)      # 960 tokens: ~3 requests at a time
    assert r.preemptions > 0 and r.num_requests == 12 and len(r.e2e_s) == 12
    assert all(x > 0 for x in r.e2e_s) and r.output_tokens == 1200
    with pytest.raises(InputError, match="request 1"):
        simulate_serving(M, H100, 1, "vllm", [Request(0.0, 2000, 10)], kv_blocks=60)


def test_chunked_prefill_splits_long_prompt():
    r = simulate_serving(M, H100, 1, "vllm", [Request(0.0, 5000, 2)], max_num_batched_tokens=2048)
    assert r.iterations == 3 + 1 and [p["scheduled_tokens"] for p in r.timeline] == [2048, 2048, 904, 1]


@pytest.mark.parametrize("text, where", [
    ('{"arrival_time": 0, "prompt_tokens": 5, "output_tokens": 3}\n{"arrival_time": 1, "prompt_tokens": 0, "output_tokens": 3}',
     "record 2: field 'prompt_tokens'"),
    ('[{"arrival_time": -1, "prompt_tokens": 5, "output_tokens": 3}]', "record 1: field 'arrival_time'"),
    ('[{"arrival_time": 0, "prompt_tokens": 5}]', "record 1: field 'output_tokens': missing"),
    ('[{"arrival_time": 0, "prompt_tokens": 5, "output_tokens": 2.5}]', "record 1: field 'output_tokens'"),
    ('{"arrival_time": 0, "prompt_tokens": 5, "output_tokens": 3}\n[1]', "record 2: must be a JSON object"),
    ('{"arrival_time": 0, "prompt_tokens": 5, "output_tokens": 3}\n{oops', "record 2"),
])
def test_trace_errors_name_record_and_field(text, where):
    with pytest.raises(InputError, match=where.replace("[", r"\[")):
        parse_trace(text, "t.jsonl")


def test_trace_sorted_by_arrival():
    reqs = parse_trace('[{"arrival_time": 2, "prompt_tokens": 5, "output_tokens": 3},'
                       ' {"arrival_time": 0.5, "prompt_tokens": 7, "output_tokens": 1}]')
    assert [r.arrival_s for r in reqs] == [0.5, 2.0]


def test_2000_requests_are_fast():
    t = time.perf_counter()
    r = simulate_serving(load_model("llama-3.1-8b"), H100, 1, "vllm",
                         poisson_requests(2000, 8.0, (512, 2048), (64, 256), seed=0))
    assert time.perf_counter() - t < 30
    d = r.as_dict()
    assert d["num_requests"] == 2000 and len(d["timeline"]) <= 2000 and d["output_throughput_tok_s"] > 0


def _cli(capsys, *extra):
    argv = ["simulate", "serve", "--model", "llama-3.2-1b", "--gpu", "h100-sxm", "--framework", "vllm",
            "--rate", "5", "--num-requests", "20", "--prompt-len", "256", "--output-len-range", "4,16"]
    code = main(argv + list(extra))
    return code, capsys.readouterr()


def test_cli_serve_json_and_text(capsys, tmp_path):
    code, out = _cli(capsys, "--json")
    d = json.loads(out.out)
    assert code == 0 and {"ttft_ms", "tpot_ms", "e2e_latency_ms", "timeline", "preemptions"} <= set(d)
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps([{"arrival_time": 0, "prompt_tokens": 100, "output_tokens": 5}]))
    code = main(["simulate", "serve", "--model", "llama-3.2-1b", "--gpu", "h100-sxm", "--framework", "sglang",
                 "--trace", str(trace)])
    assert code == 0 and "TTFT" in capsys.readouterr().out
    # a slower host lengthens the eager (prefill) steps, so the first token comes later
    ttft = [json.loads(_cli(capsys, "--json", "--host-us-per-launch", rate)[1].out)["ttft_ms"]["mean"]
            for rate in ("10", "80")]
    assert ttft[1] > ttft[0]


@pytest.mark.parametrize("flags, flag", [
    (["--rate", "0"], "--rate"), (["--rate", "x"], "--rate"), (["--num-requests", "0"], "--num-requests"),
    (["--prompt-len-range", "5,2"], "--prompt-len-range"), (["--prompt-len-range", "5"], "--prompt-len-range"),
    (["--output-len", "3"], "--output-len"), (["--max-num-seqs", "0"], "--max-num-seqs"),
    (["--max-num-batched-tokens", "-3"], "--max-num-batched-tokens"),
    (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"), (["--seed", "a"], "--seed"),
    (["--trace", "x.jsonl"], "--trace"), (["--tp", "3"], "--tp"), (["--framework", "trt"], "--framework"),
    (["--model", "nope"], "--model"), (["--gpu", "nope"], "--gpu"),
    (["--host-us-per-launch", "-1"], "--host-us-per-launch"),
])
def test_cli_serve_bad_flags_one_line(capsys, flags, flag):
    code, out = _cli(capsys, *flags)
    assert code != 0
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in out.err


def test_cli_serve_missing_trace_file(capsys, tmp_path):
    code = main(["simulate", "serve", "--model", "llama-3.2-1b", "--gpu", "h100-sxm", "--framework", "vllm",
                 "--trace", str(tmp_path / "none.jsonl")])
    err = capsys.readouterr().err
    assert code != 0 and "--trace" in err and len(err.strip().splitlines()) == 1


def test_a_huge_integer_in_a_trace_names_record_and_field():
    from synperf.errors import InputError
    from synperf.workloads.serving import parse_trace
    text = '{"arrival_time": 0, "prompt_tokens": 7, "output_tokens": 8}\n' \
           '{"arrival_time": 0.1, "prompt_tokens": ' + "9" * 400 + ', "output_tokens": 9}\n'
    with pytest.raises(InputError, match="record 2: field 'prompt_tokens'"):   # found by the fuzzer
        parse_trace(text, "t.jsonl")


def test_vllm_replays_small_steps_as_piecewise_graphs_and_sglang_does_not():
    """vLLM runs steps of up to 512 tokens with prefill work as piecewise CUDA graphs: they are
    priced GPU-bound and counted apart; SGLang runs them eagerly. Decode-only steps are CUDA graphs
    in both."""
    reqs = [Request(0.02 * i, 64 + 37 * i, 24) for i in range(20)]
    runs = {fw: simulate_serving(M, H100, 1, fw, reqs) for fw in ("vllm", "sglang")}
    for r in runs.values():
        assert sum(r.iterations_by_execution.values()) == r.iterations
        assert r.iterations_by_execution["graph"] > 0
    assert runs["vllm"].iterations_by_execution.get("piecewise", 0) > 0
    assert "piecewise" not in runs["sglang"].iterations_by_execution
    # the same schedule's prefill-bearing steps cost vLLM less: the host issues far fewer calls
    assert runs["vllm"].ttft_s.mean() < runs["sglang"].ttft_s.mean()
