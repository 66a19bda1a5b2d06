"""Importers of public measured kernel data (shared/data next to the repository, read-only).

Each importer runs on a small slice of the real data; the filters are checked on synthetic rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import synperf
from synperf.cases import parse_case
from synperf.gpu import resolve_gpu
from synperf.importers import Report, import_source

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"public data not found at {path}")
    return path


def _check(records, report, source):
    assert report["read"] == report["kept"] + sum(report["dropped"].values())
    assert report["kept"] == len(records) > 0
    for rec in records:
        assert rec["source"] == source
        assert 0.5 <= rec["latency_us"] <= 5e6, rec          # µs, not ms or s
        assert rec["cache"] in ("warm", "cold")
        assert resolve_gpu(rec["gpu"]).id == rec["gpu"]
        case = json.loads(rec["case_json"])
        assert set(case) <= {"family", "dtype", "library"} | set(rec)
        assert all(rec[k] == v for k, v in case.items())     # record fields mirror the case
        assert "gpu" not in case and "latency_us" not in case and "cache" not in case
        parsed = parse_case(case)
        assert (parsed.family, parsed.dtype, parsed.library) == (rec["family"], rec["dtype"], rec["library"])


def test_aiconfigurator_slice():
    path = _need(DATA / "aiconfigurator" / "data" / "a100_sxm")
    records, report = import_source("aiconfigurator", str(path), limit=40_000)
    _check(records, report, "aiconfigurator")
    assert report["read"] <= 40_000
    assert {r["gpu"] for r in records} == {"a100-sxm4-80gb"}
    assert all(r["framework"] in ("vllm", "sglang", "trtllm") and r["framework_version"] for r in records)
    assert report["dropped"]                                    # e.g. kernels not modelled on sm_80


def _frame(rows: list[dict], defaults: dict):
    return pd.DataFrame([{**defaults, **row} for row in rows])


ATTN = dict(framework="VLLM", version="0.19.0", device="NVIDIA H100 80GB HBM3", op_name="generation_attention",
            kernel_source="vllm_flash_attn_fa3", batch_size=4, isl=1, num_heads=32, num_key_value_heads=8,
            head_dim=128, beam_width=1, attn_dtype="bfloat16", kv_cache_dtype="bfloat16", step=1023,
            window_size=0, latency=0.05)


def test_aiconfigurator_attention_filters():
    from synperf.importers.aiconfigurator import records_of_frame

    df = _frame([
        {},                                                            # kept: decode, kv_len 1024
        {"latency": 0.0},                                              # latency 0
        {"window_size": 128},                                          # sliding window
        {"framework": "TRTLLM", "version": "1.2.0rc5", "kernel_source": "torch_flow_flashinfer"},
        {"framework": "TRTLLM", "version": "1.3.0rc20", "kernel_source": "torch_flow_flashinfer"},  # kept
        {"device": "NVIDIA A100-SXM4-80GB"},                           # FA3 only on Hopper
        {"kv_cache_dtype": "fp8"},                                     # fp8 KV only for flashinfer decode
        {"kernel_source": "trtllm_mha"},                               # not modelled
        {"device": "Some Unknown GPU"},                                # no spec: dropped by device
        {"head_dim": 100},                                             # parse_case rejects head_dim
    ], ATTN)
    report = Report()
    records = list(records_of_frame(df, "decode", report))
    rep = report.as_dict()
    assert rep["read"] == 10 and rep["kept"] == 2 == len(records)
    assert rep["read"] == rep["kept"] + sum(rep["dropped"].values())
    d = rep["dropped"]
    assert d["latency <= 0 or missing"] == 1
    assert d["attention window_size > 0 (sliding window)"] == 1
    assert d["TensorRT-LLM decode attention older than 1.3.0rc20 (KV-length convention)"] == 1
    assert d["attention kernel_source vllm_flash_attn_fa3 not mapped on cc 8.x"] == 1
    assert d["attention fp8 KV cache (modelled for flashinfer decode only)"] == 1
    assert d["attention kernel_source trtllm_mha not modelled"] == 1
    assert d["device 'Some Unknown GPU' has no synperf GPU spec"] == 1
    assert d["rejected by parse_case (head_dim)"] == 1
    fa3, fi = records
    assert (fa3["library"], fa3["phase"], fa3["q_len"], fa3["kv_len"], fa3["causal"]) == ("flash_attn3", "decode", 1, 1024, False)
    assert fa3["latency_us"] == pytest.approx(50.0) and fa3["gpu"] == "h100-sxm" and fa3["cache"] == "warm"
    assert fa3["engine"] == "vllm" and json.loads(fa3["case_json"])["engine"] == "vllm"
    assert fi["library"] == "flashinfer" and fi["framework"] == "trtllm" and fi["engine"] is None


def test_aiconfigurator_drops_a_version_far_off_the_others_of_its_framework(tmp_path):
    """vLLM 0.19's H200 prefill tables hold calls 40-80x faster than other vLLM versions time the
    same shape (and than the GPU's peak allows): read together, the versions outvote such rows."""
    from synperf.importers.aiconfigurator import iter_records, records_of_frame

    shape = dict(ATTN, device="NVIDIA H200", kernel_source="vllm_flash_attn")
    rows = {("VLLM", v): lat for v, lat in (("0.18.0", 0.050), ("0.22.0", 0.052), ("0.24.0", 0.049),
                                            ("0.19.0", 0.001))}
    rows[("SGLang", "0.5.9")] = 0.2        # another framework's kernel: not pooled with vLLM's
    rows[("SGLang", "0.5.10")] = 0.4       # two SGLang versions: too few to outvote either
    for (framework, version), latency in rows.items():
        folder = tmp_path / "h200_sxm" / "attention" / framework.lower() / version
        folder.mkdir(parents=True)
        _frame([{"framework": framework, "version": version, "latency": latency}], shape).to_parquet(
            folder / "generation_attention_perf.parquet")
    report = Report()
    records = list(iter_records(str(tmp_path), report))
    assert sorted((r["framework"], r["framework_version"]) for r in records) == [
        ("sglang", "0.5.10"), ("sglang", "0.5.9"), ("vllm", "0.18.0"), ("vllm", "0.22.0"), ("vllm", "0.24.0")]
    assert report.dropped == {"more than 2x off the median of 3+ versions of its framework for the same GPU and case": 1}
    assert report.read == 6 and report.kept == 5

    # A different shape is its own group: one fast version there is not an outlier.
    report = Report()
    other = dict(shape, framework="VLLM", version="0.19.0", batch_size=64, latency=0.001)
    df = pd.concat([_frame([{"framework": "VLLM", "version": v, "latency": 0.05}
                            for v in ("0.18.0", "0.22.0", "0.24.0")], shape), _frame([other], {})])
    kept = list(records_of_frame(df.reset_index(drop=True), "decode", report))
    assert len(kept) == 4 and not report.dropped


def test_aiconfigurator_gemm_and_moe_mapping():
    from synperf.importers.aiconfigurator import records_of_frame

    gemm = _frame([{"gemm_dtype": d} for d in ("bfloat16", "fp8", "fp8_block", "nvfp4", "int4_wo")],
                  dict(framework="SGLang", version="0.5.9", device="NVIDIA H200", op_name="gemm",
                       kernel_source="sglang", m=128, n=4096, k=4096, latency=0.02))
    report = Report()
    libs = [(r["library"], r["dtype"]) for r in records_of_frame(gemm, "gemm", report)]
    assert libs == [("cublas", "bf16"), ("cublaslt_scaled_mm", "fp8_e4m3"), ("fp8_block", "fp8_e4m3")]
    assert report.dropped == {"gemm_dtype nvfp4 not modelled": 1, "gemm_dtype int4_wo not modelled": 1}

    moe = _frame([
        {}, {"kernel_source": "sglang_fused_moe_triton"}, {"kernel_source": "moe_torch_flow_cutlass"},
        {"distribution": "power_law_1.2"}, {"moe_ep_size": 4}, {"moe_dtype": "fp8"},
    ], dict(framework="VLLM", version="0.19.0", device="NVIDIA H100 80GB HBM3", op_name="moe",
            kernel_source="vllm_fused_moe", moe_dtype="bfloat16", num_tokens=256, hidden_size=4096,
            inter_size=1536, topk=8, num_experts=128, moe_tp_size=2, moe_ep_size=1, distribution="balanced",
            latency=0.1))
    report = Report()
    recs = list(records_of_frame(moe, "moe", report))
    # vLLM ships no bf16 config for E=128, N=768 on an H100 and falls back to its default rule;
    # SGLang ships one, and a 256-token call takes the entry of the nearest batch size.
    tuned = json.loads((Path(synperf.__file__).parent / "kernels/tiles/moe_engine_configs.json").read_text())
    assert "E=128,N=768" not in tuned["engines"]["vllm"]["h100-sxm"]
    sglang = tuned["engines"]["sglang"]["h100-sxm"]["E=128,N=768"]
    nearest = sglang[min(sglang, key=lambda m: abs(int(m) - 256))]
    assert [(r["engine"], r["intermediate"], r["stage"]) for r in recs] == [("vllm", 768, "all"), ("sglang", 768, "all")]
    assert recs[0]["config"] == "vllm_default"
    assert list(recs[1]["config"].values()) == nearest
    assert report.kept == 2 and report.read == 6 and sum(report.dropped.values()) == 4


def test_vidur_slice():
    path = _need(DATA / "vidur")
    records, report = import_source("vidur", str(path), limit=3000)
    _check(records, report, "vidur")
    assert report["read"] == 3000
    fams = {r["family"] for r in records}
    assert {"gemm", "rmsnorm", "silu_and_mul", "rope"} <= fams
    for r in records:
        assert r["dtype"] == "fp16"
        assert r["cache"] == ("cold" if r["family"] == "gemm" else "warm")
    # QKV projection of a TP-1 row: n = (heads + 2 kv heads) * head_dim, k = hidden
    qkv = [r for r in records if r["kernel_source"].startswith("sarathi attn_pre_proj") and r["tp"] == 1]
    assert qkv and all(r["k"] * 3 == r["n"] for r in qkv if r["model"].endswith("Llama-2-7b-hf"))


def test_pipeweave_slice():
    path = _need(DATA / "pipeweave")
    records, report = import_source("pipeweave", str(path), limit=2500)
    _check(records, report, "pipeweave")
    for r in records:
        assert r["family"] == "moe" and r["stage"] == "w13" and isinstance(r["config"], dict)
        assert set(r["config"]) == {"BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M",
                                    "num_warps", "num_stages"}


def test_pipeweave_fp8_gemm():
    from synperf.importers import CaseValidator
    from synperf.importers.pipeweave import _gemm_file

    file = _need(DATA / "pipeweave" / "gemm_fp8_train.csv")
    report = Report()
    records = list(_gemm_file(str(file), report, CaseValidator(), 2000))
    rep = report.as_dict()
    _check(records, rep, "pipeweave")
    assert rep["read"] == 2000
    assert {r["gpu"] for r in records} <= {"h20", "h800"}
    assert all(r["library"] == "fp8_block" and r["dtype"] == "fp8_e4m3" for r in records)


def test_unknown_source():
    from synperf.errors import SynperfError

    with pytest.raises(SynperfError):
        import_source("nope", ".")


def _config_file(path: Path, entries: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))


def test_engine_configs_read_bf16_files_of_known_gpus_and_sglang_triton_order(tmp_path):
    from synperf.gpu.registry import default_registry
    from synperf.importers.engine_configs import build_table

    cfg = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "num_warps": 4,
           "num_stages": 3}
    vllm = tmp_path / "vllm" / "model_executor" / "layers" / "fused_moe" / "configs"
    _config_file(vllm / "E=8,N=7168,device_name=NVIDIA_H200.json", {"triton_version": "3.4.0", "1": cfg,
                                                                     "64": {**cfg, "BLOCK_SIZE_M": 64}})
    _config_file(vllm / "E=8,N=7168,device_name=NVIDIA_H200,dtype=fp8_w8a8.json", {"1": cfg})      # quantised
    _config_file(vllm / "E=8,N=7168,device_name=AMD_Instinct_MI300X.json", {"1": cfg})           # no spec
    (tmp_path / "vllm" / "_version.py").write_text("__version__ = version = '9.9.9'\n")
    sglang = tmp_path / "sglang" / "srt" / "moe" / "configs"
    _config_file(sglang / "triton_3_7_1" / "E=8,N=7168,device_name=NVIDIA_H200.json", {"1": {**cfg, "num_warps": 8}})
    _config_file(sglang / "triton_3_5_1" / "E=8,N=7168,device_name=NVIDIA_H200.json", {"1": cfg})
    _config_file(sglang / "triton_3_7_1" / "E=16,N=512,device_name=NVIDIA_H200.json", {"2": {**cfg, "num_stages": 5}})
    _config_file(sglang / "triton_3_1_0" / "E=16,N=512,device_name=NVIDIA_H200.json", {"2": cfg})
    _config_file(sglang / "triton_3_5_1" / "E=16,N=512,device_name=NVIDIA_H200_down.json", {"2": cfg})

    table = build_table(tmp_path / "vllm", tmp_path / "sglang", "3.5.1", default_registry())
    assert table["sources"]["vllm"] == "vLLM 9.9.9"
    assert table["engines"]["vllm"] == {"h200": {"E=8,N=7168": {"1": [16, 64, 128, 1, 4, 3], "64": [64, 64, 128, 1, 4, 3]}}}
    sgl = table["engines"]["sglang"]["h200"]
    assert sgl["E=8,N=7168"]["1"][4] == 4            # the engine's own Triton folder wins ...
    assert sgl["E=16,N=512"]["2"][5] == 5            # ... then the newest folder holding the file


def test_engine_configs_name_the_bad_file(tmp_path):
    from synperf.errors import InputError
    from synperf.gpu.registry import default_registry
    from synperf.importers.engine_configs import build_table

    folder = tmp_path / "vllm" / "model_executor" / "layers" / "fused_moe" / "configs"
    _config_file(folder / "E=8,N=64,device_name=NVIDIA_H200.json", {"1": {"BLOCK_SIZE_M": 16}})
    with pytest.raises(InputError, match=r"E=8,N=64,device_name=NVIDIA_H200.json: batch size 1: BLOCK_SIZE_N"):
        build_table(tmp_path / "vllm", None, "3.5.1", default_registry())
    with pytest.raises(InputError, match="no vLLM fused-MoE config folder"):
        build_table(tmp_path, None, "3.5.1", default_registry())


def test_engine_config_takes_the_nearest_tuned_batch_else_the_default_rule():
    from synperf.kernels.moe import default_config, engine_config, engine_table

    h200 = resolve_gpu("h200")
    tuned = engine_table()["engines"]["vllm"]["h200"]["E=128,N=768"]
    sizes = sorted(int(m) for m in tuned)
    between = (sizes[-2] + sizes[-1]) // 2 - 1            # nearer the second largest
    cfg, source = engine_config("vllm", h200, between, 128, 2048, 768, 8)
    assert source == "vllm_tuned" and list(cfg.values()) == tuned[str(sizes[-2])]
    cfg, source = engine_config("vllm", h200, 10 ** 6, 128, 2048, 768, 8)
    assert list(cfg.values()) == tuned[str(sizes[-1])]
    cfg, source = engine_config("vllm", resolve_gpu("l4"), 64, 128, 2048, 768, 8)
    assert source == "vllm_default" and cfg == default_config("vllm_default", 64, 128, 2048, 768, 8)
