"""cuBLASLt heuristic query: the GPU-free parts (enum decoding, shape readers, comparison with
measured kernel names, CLI --compare). No GPU, torch or libcublasLt needed."""

import ctypes
import json

import pandas as pd
import pytest

from synperf.profile import cublaslt_query as q


def test_tile_table_matches_header_ids():
    # ids from cublasLt.h (cuBLAS 13.1.1)
    assert len(q.TILE_NAMES) == 635
    known = {0: "UNDEFINED", 1: "8x8", 10: "64x8", 18: "128x64", 20: "128x128", 23: "128x256", 24: "256x128",
             31: "192x128", 165: "112x128", 248: "320x128", 312: "64x16", 393: "128x8", 634: "512x1024"}
    assert {i: q.TILE_NAMES[i] for i in known} == known


def test_stage_cluster_inner_tables():
    assert q.STAGES_NAMES[16] == "64x4" and q.STAGES_NAMES[17] == "64x5" and q.STAGES_NAMES[25] == "32x10"
    assert q.STAGES_NAMES[31] == "8x3" and q.STAGES_NAMES[35] == "64xAUTO" and 29 not in q.STAGES_NAMES
    assert q.CLUSTER_NAMES[0] == "AUTO" and 1 not in q.CLUSTER_NAMES
    assert q.CLUSTER_NAMES[2] == "1x1x1" and q.CLUSTER_NAMES[3] == "2x1x1" and q.CLUSTER_NAMES[5] == "1x2x1"
    assert q.CLUSTER_NAMES[51] == "1x15x1"
    assert q.INNER_SHAPE_NAMES[4] == "MMA16816"


def test_decode_config():
    raw = {"algo_id": 66, "tile_id": 24, "stages_id": 16, "splitk": 1, "reduction_id": 2, "swizzle": 0,
           "custom": 3, "cluster_id": 5, "inner_shape_id": 0}
    out = q.decode_config(raw)
    assert out["tile"] == "256x128" and out["stages"] == "64x4" and out["cluster"] == "1x2x1"
    assert out["reduction"] == "compute_type" and out["inner_shape"] == "UNDEFINED"
    assert (out["algo_id"], out["splitk"], out["custom"], out["tile_id"], out["cluster_id"]) == (66, 1, 3, 24, 5)


def test_decode_unknown_and_missing_ids():
    out = q.decode_config({"tile_id": 9999, "stages_id": 29, "cluster_id": 1, "reduction_id": 3})
    assert (out["tile"], out["stages"], out["cluster"], out["reduction"]) == ("id9999", "id29", "id1", "id3")
    assert out["inner_shape"] is None and out["algo_id"] is None


def test_tile_of_turns_cublas_orientation_round():
    assert q.tile_of({"tile": "256x128"}) == (128, 256)     # cuBLAS M (our n) x N (our m)
    assert q.tile_of({"tile": "64x8"}) == (8, 64)
    assert q.tile_of({"tile": None, "tile_id": 24}) == (128, 256)
    assert q.tile_of(pd.Series({"tile": float("nan"), "tile_id": 10})) == (8, 64)
    assert q.tile_of({"tile": "UNDEFINED"}) is None
    assert q.tile_of({"tile": "id700"}) is None
    assert q.tile_of({}) is None


def test_result_struct_layout():
    # cublasLtMatmulAlgo_t: 8 x uint64; heuristic result: algo, size_t, int, float, int[4]
    assert ctypes.sizeof(q._Algo) == 64
    assert ctypes.sizeof(q._HeuristicResult) == 96
    assert q._HeuristicResult.workspaceSize.offset == 64 and q._HeuristicResult.wavesCount.offset == 76


def test_shapes_from_parquet(tmp_path):
    path = tmp_path / "gemm.parquet"
    pd.DataFrame({
        "family": ["gemm", "gemm", "gemm", "attention", "gemm"],
        "library": ["cublas", "cublas", "cublaslt_scaled_mm", "flash_attn2_torch_sdpa", "fp8_block"],
        "m": [16, 16, 32, 1, 64], "n": [4096, 4096, 7520, 1, 128], "k": [4096, 4096, 112, 1, 128],
        "dtype": ["bf16", "bf16", "fp8_e4m3", "bf16", "fp8_e4m3"],
    }).to_parquet(path)
    assert q.shapes_from_parquet(str(path)) == [(16, 4096, 4096, "bf16"), (32, 7520, 112, "fp8_e4m3")]


def test_shapes_from_parquet_without_family_or_dtype(tmp_path):
    path = tmp_path / "shapes.parquet"
    pd.DataFrame({"m": [1, 2], "n": [64, 64], "k": [128, 128]}).to_parquet(path)
    assert q.shapes_from_parquet(str(path)) == [(1, 64, 128, "bf16"), (2, 64, 128, "bf16")]


def test_shapes_from_jsonl_skips_bad_lines(tmp_path, capsys):
    path = tmp_path / "shapes.jsonl"
    path.write_text('{"m": 8, "n": 1024, "k": 512, "dtype": "fp16"}\n\n{"m": 3, "n": 64, "k": 64}\n'
                    'not json\n{"m": 1, "n": 2}\n')
    assert q.shapes_from_jsonl(str(path)) == [(8, 1024, 512, "fp16"), (3, 64, 64, "bf16")]
    assert capsys.readouterr().err.count("skipped") == 2


def test_random_shapes():
    shapes = q.random_shapes(2000, seed=3)
    assert shapes == q.random_shapes(2000, seed=3) and shapes != q.random_shapes(2000, seed=4)
    assert len(shapes) == 2000 and {s[3] for s in shapes} == {"bf16"}
    assert all(1 <= m <= 32768 and 64 <= n <= 32768 and 64 <= k <= 32768 for m, n, k, _ in shapes)
    rounded = sum(n % 64 == 0 and k % 64 == 0 for _, n, k, _ in shapes) / len(shapes)
    assert 0.45 < rounded < 0.6
    ms = sorted(s[0] for s in shapes)
    assert ms[len(ms) // 2] < 1000          # log-uniform: the median m is far below the mean of the range
    fp8 = q.random_shapes(2000, seed=3, dtype="fp8_e4m3")
    assert {s[3] for s in fp8} == {"fp8_e4m3"} and all(n % 16 == 0 and k % 16 == 0 for _, n, k, _ in fp8)


def test_spread():
    shapes = [(m, 64, 64, "bf16") for m in range(1, 101)]
    picked = q.spread(shapes, 5)
    assert len(picked) == 5 and picked[0][0] == 1 and picked[-1][0] == 100
    assert q.spread(shapes[:3], 10) == shapes[:3]
    assert q.spread(shapes, 0) == [] and q.spread([], 3) == []


def _query_frame():
    rows = [
        # matches: nvjet 64x8 (cuBLAS M x N) = our tile_m 8, tile_n 64
        {"m": 16, "n": 4096, "k": 4096, "dtype": "bf16", "rank": 0, "tile": "64x8", "stages": "64x16",
         "cluster": "4x1x1", "splitk": 1, "status": "ok"},
        {"m": 16, "n": 4096, "k": 4096, "dtype": "bf16", "rank": 1, "tile": "128x8", "stages": "64x12",
         "cluster": "AUTO", "splitk": 1, "status": "ok"},
        # the measured kernel swapped the operands (TNN): only the either-way-round tile agrees
        {"m": 16, "n": 2048, "k": 4096, "dtype": "fp16", "rank": 0, "tile": "64x8", "stages": "64x16",
         "cluster": "AUTO", "splitk": 1, "status": "ok"},
        # wrong tile, split-K predicted and measured (reduce kernel)
        {"m": 256, "n": 8192, "k": 29568, "dtype": "fp16", "rank": 0, "tile": "128x128", "stages": "64x4",
         "cluster": "1x2x1", "splitk": 4, "status": "ok"},
        # failed or not measured: ignored
        {"m": 7, "n": 64, "k": 64, "dtype": "bf16", "rank": -1, "status": "no_algo"},
        {"m": 9, "n": 64, "k": 64, "dtype": "bf16", "rank": 0, "tile": "64x8", "status": "ok"},
    ]
    return pd.DataFrame(rows)


def _gemm_frame():
    return pd.DataFrame({
        "m": [16, 16, 256, 7], "n": [4096, 2048, 8192, 64], "k": [4096, 4096, 29568, 64],
        "dtype": ["bf16", "fp16", "fp16", "bf16"],
        "kernel_names": [
            json.dumps(["[gpu_memset] Memset", "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT"]),
            json.dumps(["nvjet_sm90_hsh_8x64_64x16_4x1_v_bz_TNN"]),
            json.dumps(["nvjet_sm90_hsh_256x128_64x4_1x2_h_bz_coopA_splitK_TNT",
                        "void cublasLt::splitKreduce_kernel<32, 16, int, float>(...)"]),
            json.dumps(["nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT"]),
        ],
    })


def test_compare_with_kernel_names(capsys):
    out = q.compare_with_kernel_names(_query_frame(), _gemm_frame())
    assert out["shapes_joined"] == 3 and out["shapes_compared"] == 3
    assert out["tile_pct"] == pytest.approx(33.3) and out["tile_any_pct"] == pytest.approx(66.7)
    assert out["tile_k_pct"] == 100.0 and out["tile_k_n"] == 3
    assert out["cluster_n"] == 2 and out["cluster_pct"] == 100.0     # 4x1x1 vs 4x1, 1x2x1 vs 1x2
    assert out["splitk_pct"] == 100.0 and out["splitk_n"] == 3
    assert out["tile_pct_by_dtype"] == {"bf16": 100.0, "fp16": 0.0}
    assert "tile 33.3%" in capsys.readouterr().out


def test_compare_reads_semicolon_joined_check_names():
    query = _query_frame().iloc[:2].copy()
    query["kernel_names"] = "[gpu_memset] Memset;nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT"
    out = q.compare_with_kernel_names(query, query, verbose=False)
    assert out["shapes_compared"] == 1 and out["tile_pct"] == 100.0


def test_compare_without_overlap():
    out = q.compare_with_kernel_names(_query_frame(), _gemm_frame().iloc[3:], verbose=False)
    assert out["shapes_compared"] == 0 and out["tile_pct"] is None


def test_cli_compare_needs_no_gpu(tmp_path, capsys):
    query_path, gemm_path = tmp_path / "query.parquet", tmp_path / "gemm.parquet"
    _query_frame().to_parquet(query_path)
    _gemm_frame().to_parquet(gemm_path)
    assert q.main(["--out", str(query_path), "--compare", str(gemm_path)]) == 0
    assert "3 of 3 joined shapes" in capsys.readouterr().out


def test_cli_without_shapes_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        q.main(["--out", str(tmp_path / "x.parquet")])


def test_query_rows_records_failures():
    class Broken:
        def query(self, m, n, k, dtype):
            if dtype == "fp16":
                raise q.LtError(q.STATUS_NOT_SUPPORTED, "heuristic: CUBLAS_STATUS_NOT_SUPPORTED")
            if m == 2:
                raise q.LtError(7, "heuristic: CUBLAS_STATUS_INVALID_VALUE")
            if m == 3:
                raise ValueError("boom")
            return [] if m == 4 else [{"tile": "64x8", "status": "ok"}, {"tile": "128x8", "status": "ok"}]

    lt = Broken()
    assert q.query_rows(lt, (1, 64, 64, "fp16"))[0]["status"] == "unsupported"
    assert q.query_rows(lt, (2, 64, 64, "bf16"))[0]["status"] == "error:heuristic: CUBLAS_STATUS_INVALID_VALUE"
    assert q.query_rows(lt, (3, 64, 64, "bf16"))[0]["status"] == "error:ValueError: boom"
    assert q.query_rows(lt, (4, 64, 64, "bf16")) == [{"m": 4, "n": 64, "k": 64, "dtype": "bf16", "rank": -1,
                                                    "status": "no_algo"}]
    assert q.query_rows(lt, (5, 64, 64, "int8"))[0]["status"] == "unsupported"
    assert q.query_rows(lt, (0, 64, 64, "bf16"))[0]["status"] == "invalid"
    rows = q.query_rows(lt, (5, 64, 64, "bf16"))
    assert [r["rank"] for r in rows] == [0, 1] and rows[1]["tile"] == "128x8"


def _fake_torch():
    from types import SimpleNamespace

    cuda = SimpleNamespace(get_device_capability=lambda: (9, 0), get_device_name=lambda: "NVIDIA H200",
                           current_device=lambda: 0)
    return SimpleNamespace(float8_e4m3fn=object(), float32="float32", cuda=cuda, __version__="2.11.0+cu130",
                           version=SimpleNamespace(cuda="13.0"), device=lambda *a: a,
                           ones=lambda *a, **kw: SimpleNamespace(data_ptr=lambda: 4096))


class _FakeLt:
    """Stands in for LtQuery: fp16 unsupported, m == 3 has no algorithm, else two results."""

    def __init__(self, lib, top, workspace_bytes, scale_pointers):
        assert workspace_bytes == {"bf16": 32 << 20, "fp16": 32 << 20, "fp8_e4m3": 1 << 20}
        assert scale_pointers == (4096, 4096)
        self.closed = False

    def query(self, m, n, k, dtype):
        if dtype == "fp16":
            raise q.LtError(q.STATUS_NOT_SUPPORTED, "heuristic: CUBLAS_STATUS_NOT_SUPPORTED")
        if m == 3:
            return []
        return [q.decode_config({"tile_id": 10, "stages_id": 16, "cluster_id": 3, "splitk": 1})
                | {"waves": 0.5, "workspace_bytes": 0, "status": "ok"},
                q.decode_config({"tile_id": 393, "stages_id": 16, "cluster_id": 0, "splitk": 1})
                | {"waves": 0.3, "workspace_bytes": 0, "status": "ok"}]

    def close(self):
        self.closed = True


def test_run_orchestration_without_gpu(tmp_path, monkeypatch):
    """run() end to end with torch, libcublasLt and the profiler replaced: rows, check columns,
    metadata, summary."""
    import sys
    from types import SimpleNamespace

    lib = SimpleNamespace(cublasLtGetVersion=lambda: 130101, cublasLtGetCudartVersion=lambda: 13000)
    monkeypatch.setitem(sys.modules, "torch", _fake_torch())
    monkeypatch.setattr(q, "load_cublaslt", lambda: (lib, "/x/libcublasLt.so.13"))
    monkeypatch.setattr(q, "LtQuery", _FakeLt)
    monkeypatch.setattr(q, "check_kernels", lambda shape, device: (
        "[gpu_memset] Memset;nvjet_sm90_tst_64x8_64x16_2x1_v_bz_TNT", "ok"))
    out = tmp_path / "query.parquet"
    shapes = [(1, 64, 64, "bf16"), (2, 4096, 4096, "bf16"), (3, 64, 64, "bf16"), (4, 64, 64, "fp16")]
    summary = q.run(shapes, str(out), 2, 32, 1, check=5, budget_s=None)
    df = pd.read_parquet(out)
    assert summary["queried"] == 4 and summary["rows"] == 6 and summary["checked"] == 2
    assert summary["status"] == {"ok": 2, "no_algo": 1, "unsupported": 1}
    assert summary["top_rank0_tiles"] == {"64x8": 2}
    assert summary["check_agreement"]["tile_pct"] == 100.0 and summary["check_agreement"]["cluster_pct"] == 100.0
    assert list(df.columns[:len(q.COLUMNS)]) == list(q.COLUMNS)
    assert set(df["gpu_name"]) == {"NVIDIA H200"} and set(df["cublaslt_version"]) == {130101}
    ok = df[df["status"] == "ok"]
    assert ok["kernel_names"].notna().all() and (ok["check_status"] == "ok").all()
    assert df[df["status"] != "ok"]["kernel_names"].isna().all()
    assert list(ok["tile"]) == ["64x8", "128x8", "64x8", "128x8"] and list(ok["rank"]) == [0, 1, 0, 1]


def test_run_stops_at_time_budget(tmp_path, monkeypatch):
    import sys
    from types import SimpleNamespace

    lib = SimpleNamespace(cublasLtGetVersion=lambda: 130101, cublasLtGetCudartVersion=lambda: 13000)
    monkeypatch.setitem(sys.modules, "torch", _fake_torch())
    monkeypatch.setattr(q, "load_cublaslt", lambda: (lib, "libcublasLt.so.13"))
    monkeypatch.setattr(q, "LtQuery", _FakeLt)
    summary = q.run([(1, 64, 64, "bf16")] * 3, str(tmp_path / "q.parquet"), 2, 32, 1, check=0, budget_s=1e-9)
    assert summary["stopped"] == "time budget" and summary["queried"] == 0
    assert len(pd.read_parquet(tmp_path / "q.parquet")) == 0


def test_model_shapes_cover_the_bundled_models_gemms():
    from synperf.profile.cublaslt_query import model_m_values, shapes_from_models

    m_values = model_m_values()
    assert m_values[:3] == [1, 2, 3] and m_values[-1] == 32768 and all(a < b for a, b in zip(m_values, m_values[1:]))
    shapes = set(shapes_from_models([1, 512]))
    # Llama-3.1-8B at TP 1: QKV 6144 x 4096, gate/up 28672 x 4096, down 4096 x 14336; at TP 8 its down is 4096 x 1792
    for n, k in ((6144, 4096), (28672, 4096), (4096, 14336), (4096, 1792)):
        assert (512, n, k, "bf16") in shapes and (1, n, k, "bf16") in shapes
