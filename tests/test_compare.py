import json

import pytest

from synperf.cli import main
from synperf.errors import InputError
from synperf.gpu.registry import resolve_gpu
from synperf.workloads.compare import Slo, at_load, compare_gpus
from synperf.workloads.model import load_model
from synperf.workloads.serving import Request, poisson_requests, simulate_serving

SMALL = load_model("llama-3.2-1b")
GPUS = [resolve_gpu(g) for g in ("h100-sxm", "h200", "l40s")]
# every request at once: more than any GPU serves, so each runs at its own best rate
AT_ONCE = [Request(0.0, 400 + 37 * i, 40) for i in range(48)]


def test_each_gpu_serves_what_simulate_serve_says_and_the_cost_follows_its_price():
    prices = {"h100-sxm": 2.0, "h200": 3.0, "l40s": 0.9}
    offers = compare_gpus(SMALL, [(g, 1) for g in GPUS], "vllm", AT_ONCE, prices)
    by_gpu = {o.gpu: o.as_dict() for o in offers}
    for gpu in GPUS:
        alone = simulate_serving(SMALL, gpu, 1, "vllm", AT_ONCE).as_dict(timeline=False)
        d = by_gpu[gpu.id]
        assert d["output_throughput_tok_s"] == alone["output_throughput_tok_s"]
        assert d["ttft_ms"] == alone["ttft_ms"] and d["saturated"]
        assert d["usd_per_million_output_tokens"] == pytest.approx(
            prices[gpu.id] / 3600 / d["output_throughput_tok_s"] * 1e6, rel=1e-3)
    costs = [o.as_dict()["usd_per_million_output_tokens"] for o in offers]
    assert costs == sorted(costs)
    # the die the models were trained on (GH100) against one they never saw
    assert by_gpu["h200"]["trained_on_die"] and not by_gpu["l40s"]["trained_on_die"]


def test_without_prices_the_gpus_rank_by_throughput_per_gpu_and_a_replica_pays_for_each_gpu():
    offers = compare_gpus(SMALL, [(g, 2) for g in GPUS[:2]], "sglang", AT_ONCE, {"h100-sxm": 2.0})
    rows = [o.as_dict() for o in offers]
    assert [r["output_tok_s_per_gpu"] for r in rows] == sorted((r["output_tok_s_per_gpu"] for r in rows), reverse=True)
    h100 = next(r for r in rows if r["gpu"] == "h100-sxm")
    assert h100["gpus"] == 2 and h100["output_tok_s_per_gpu"] == pytest.approx(h100["output_throughput_tok_s"] / 2, abs=0.01)
    assert h100["usd_per_million_output_tokens"] == pytest.approx(2 * 2.0 / 3600 / h100["output_throughput_tok_s"] * 1e6,
                                                                  rel=1e-3)
    assert next(r for r in rows if r["gpu"] == "h200")["usd_per_million_output_tokens"] is None


def test_a_gpu_the_model_does_not_fit_is_kept_with_the_reason_and_ranked_last():
    big = load_model("llama-3.1-70b")
    offers = compare_gpus(big, [(resolve_gpu("l40s"), 2), (resolve_gpu("h200"), 2)], "vllm", AT_ONCE[:4])
    assert [o.gpu for o in offers] == ["h200", "l40s"]
    l40s = offers[1].as_dict()
    assert not l40s["serves"] and "GiB of weights per GPU" in l40s["refused"]


def test_a_light_load_is_kept_up_with_and_said_so():
    light = poisson_requests(30, 0.5, (200, 400), (20, 40), seed=3)
    offer = compare_gpus(SMALL, [(GPUS[0], 1)], "vllm", light)[0].as_dict()
    assert not offer["saturated"]


def _cli(capsys, *extra):
    argv = ["simulate", "compare", "--model", "llama-3.2-1b", "--gpus", "h100-sxm,l40s", "--framework", "vllm",
            "--rate", "50", "--num-requests", "40", "--prompt-len-range", "100,300", "--output-len", "20"]
    code = main(argv + list(extra))
    return code, capsys.readouterr()


def test_cli_compare_text_and_json(capsys):
    code, out = _cli(capsys, "--price-per-hour", "h100-sxm=2.99,l40s=1.1")
    assert code == 0 and "$/Mtok" in out.out and "h100-sxm" in out.out and "l40s" in out.out
    code, out = _cli(capsys, "--json")
    d = json.loads(out.out)
    assert code == 0 and d["requests"] == 40 and {g["gpu"] for g in d["replicas"]} == {"h100-sxm", "l40s"}


def test_one_gpu_at_several_tps_and_several_gpus_at_their_own(capsys):
    code, out = _cli(capsys, "--gpus", "h100-sxm:1,h100-sxm:2,l40s:4", "--json")
    rows = json.loads(out.out)["replicas"]
    assert code == 0 and sorted((r["gpu"], r["gpus"]) for r in rows) == [("h100-sxm", 1), ("h100-sxm", 2), ("l40s", 4)]
    # two GPUs serve more tokens a second than one, but not twice as many per GPU
    one, two = (next(r for r in rows if r["gpu"] == "h100-sxm" and r["gpus"] == n) for n in (1, 2))
    assert two["output_throughput_tok_s"] >= one["output_throughput_tok_s"]
    assert two["output_tok_s_per_gpu"] < one["output_tok_s_per_gpu"]


@pytest.mark.parametrize("flags, flag", [
    (["--gpus", "h100-sxm,nope"], "--gpus"), (["--gpus", "h100-sxm,,l40s"], "--gpus"),
    (["--gpus", "h100-sxm,H100-SXM"], "--gpus"), (["--gpus", "h100-sxm:3"], "--gpus h100-sxm:3"),
    (["--gpus", "h100-sxm:0"], "--gpus h100-sxm:0"),
    (["--price-per-hour", "h100-sxm"], "--price-per-hour"), (["--price-per-hour", "h200=3"], "--price-per-hour"),
    (["--price-per-hour", "h100-sxm=-1"], "--price-per-hour"), (["--price-per-hour", "h100-sxm=x"], "--price-per-hour"),
    (["--price-per-hour", "h100-sxm=1,h100-sxm=2"], "--price-per-hour"),
    (["--tp", "3"], "--tp"), (["--model", "nope"], "--model"), (["--rate", "0"], "--rate"),
    (["--slo-ttft-p99-ms", "-5"], "--slo-ttft-p99-ms"), (["--slo-tpot-p99-ms", "fast"], "--slo-tpot-p99-ms"),
])
def test_cli_compare_bad_flags_one_line(capsys, flags, flag):
    code, out = _cli(capsys, *flags)
    assert code != 0
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in out.err


def test_under_an_slo_each_replica_runs_at_the_heaviest_load_that_meets_it():
    slo = Slo(ttft_p99_ms=400.0, tpot_p99_ms=12.0)
    light = poisson_requests(150, 2.0, (300, 1500), (30, 80), seed=5)
    offers = compare_gpus(SMALL, [(GPUS[0], 1), (GPUS[2], 1)], "vllm", light, slo=slo)
    for offer in offers:
        d = offer.as_dict()
        assert d["ttft_ms"]["p99"] <= 400.0 and d["tpot_ms"]["p99"] <= 12.0
        # a tenth more load misses it (the search brackets the edge to about 2 %)
        heavier = simulate_serving(SMALL, resolve_gpu(offer.gpu), 1, "vllm", at_load(light, offer.load_scale * 1.1))
        assert not slo.met_by(heavier)
        assert d["max_request_rate_req_s"] == pytest.approx(150 / light[-1].arrival_s * offer.load_scale, rel=1e-3)
    rates = [o.as_dict()["max_request_rate_req_s_per_gpu"] for o in offers]
    assert rates == sorted(rates, reverse=True) and offers[0].gpu == "h100-sxm"


def test_an_slo_no_load_meets_is_said_and_an_slo_needs_arrivals_in_time():
    light = poisson_requests(20, 2.0, (300, 400), (10, 20), seed=1)
    offer = compare_gpus(SMALL, [(GPUS[0], 1)], "vllm", light, slo=Slo(ttft_p99_ms=0.001))[0]
    assert offer.result is None and "misses the SLO" in offer.refused and "p99 TTFT" in offer.refused
    with pytest.raises(InputError, match="arrivals spread in time"):
        compare_gpus(SMALL, [(GPUS[0], 1)], "vllm", AT_ONCE, slo=Slo(ttft_p99_ms=100.0))


def test_cli_compare_slo_json(capsys):
    code, out = _cli(capsys, "--slo-tpot-p99-ms", "8", "--json")
    d = json.loads(out.out)
    assert code == 0 and d["slo"] == {"ttft_p99_ms": None, "tpot_p99_ms": 8.0}
    assert all(r["tpot_ms"]["p99"] <= 8.0 for r in d["replicas"] if r["serves"])


def test_auto_tp_lists_every_tp_the_model_fits_at(capsys):
    code = main(["simulate", "compare", "--model", "llama-3.1-70b", "--gpus", "h100-sxm:auto,l40s:auto",
                 "--framework", "vllm", "--rate", "5", "--num-requests", "12", "--prompt-len", "300",
                 "--output-len", "8", "--json"])
    rows = json.loads(capsys.readouterr().out)["replicas"]
    # 70B of bf16 weights (141 GB): two 80 GB H100s hold them at 0.9 of their memory, 48 GB L40S need four
    assert code == 0 and sorted((r["gpu"], r["gpus"]) for r in rows) == [
        ("h100-sxm", 2), ("h100-sxm", 4), ("h100-sxm", 8), ("l40s", 4), ("l40s", 8)]


def test_auto_tp_that_never_fits_names_the_item(capsys):
    code = main(["simulate", "compare", "--model", "llama-3.1-70b", "--gpus", "h100-sxm,t4:auto",
                 "--framework", "vllm", "--rate", "5", "--num-requests", "12", "--prompt-len", "300", "--output-len", "8"])
    err = capsys.readouterr().err
    assert code != 0 and "--gpus t4:auto" in err and len(err.strip().splitlines()) == 1
