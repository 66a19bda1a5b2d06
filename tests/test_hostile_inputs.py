"""Hostile inputs at the CLI: every bad input gives a one-line message naming the line and the field
(or the file), a non-zero exit, never a traceback, and the valid lines of the same file are still
answered (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synperf.cli import main

GOOD = '{"family": "gemm", "m": 64, "n": 64, "k": 64}'
SPECS = Path(__file__).resolve().parents[1] / "src" / "synperf" / "gpu" / "specs"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *words: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synperf"), err
    for word in words:
        assert word in lines[0], (word, lines[0])


# ------------------------------------------------------------------------ bad lines of a JSONL file
BAD_LINES = [
    # wrong types
    ('{"family": "gemm", "m": "64", "n": 64, "k": 64}', "m"),
    ('{"family": "gemm", "m": [64], "n": 64, "k": 64}', "m"),
    ('{"family": "gemm", "m": {"v": 1}, "n": 64, "k": 64}', "m"),
    ('{"family": "gemm", "m": true, "n": 64, "k": 64}', "m"),
    ('{"family": "gemm", "m": 64.5, "n": 64, "k": 64}', "m"),
    ('{"family": "rmsnorm", "tokens": 8, "hidden": 64, "residual": "yes"}', "residual"),
    ('{"family": 7, "m": 64}', "family"),
    ('{"family": "gemm", "m": 64, "n": 64, "k": 64, "id": [1]}', "id"),
    ('{"family": "attention", "batch": 2, "kv_lens": "12", "num_heads": 8, "head_dim": 128}', "kv_lens"),
    ('{"family": "moe", "tokens": 8, "hidden": 64, "intermediate": 64, "num_experts": 8, "topk": 2, "config": 3}',
     "config"),
    # negative / zero dims
    ('{"family": "gemm", "m": 0, "n": 64, "k": 64}', "m"),
    ('{"family": "gemm", "m": 64, "n": -64, "k": 64}', "n"),
    ('{"family": "rope", "tokens": 0, "num_heads": 8, "num_kv_heads": 8, "head_dim": 128}', "tokens"),
    ('{"family": "attention", "batch": 1, "q_len": 4, "kv_len": 0, "num_heads": 8, "head_dim": 128}', "kv_len"),
    ('{"family": "attention", "q_lens": [1, -1], "kv_lens": [4, 4], "num_heads": 8, "head_dim": 128}', "q_lens"),
    # absurd sizes
    ('{"family": "gemm", "m": 1000000000000, "n": 64, "k": 64}', "m"),
    ('{"family": "gemm", "m": 64, "n": 64, "k": 1e300}', "k"),
    ('{"family": "silu_and_mul", "tokens": 8, "intermediate": 99999999999999999999999}', "intermediate"),
    ('{"family": "moe", "tokens": 8, "hidden": 64, "intermediate": 64, "num_experts": 100000, "topk": 2}',
     "num_experts"),
    ('{"family": "gemm", "m": ' + "9" * 5000 + ', "n": 64, "k": 64}', None),   # past Python's int-digit limit
    # every field in range, the batch total not (was a MemoryError traceback)
    ('{"family": "attention", "batch": 65536, "q_len": 10000000, "kv_len": 10000000, "num_heads": 1024,'
     ' "head_dim": 64}', "q_len"),
    ('{"family": "attention", "phase": "decode", "batch": 65536, "kv_len": 10000000, "num_heads": 8,'
     ' "head_dim": 64}', "kv_len"),
    # unknown family / library / dtype / fields / choices
    ('{"family": "conv2d", "m": 64}', "family"),
    ('{"family": "gemm", "library": "cutlass9", "m": 64, "n": 64, "k": 64}', "library"),
    ('{"family": "gemm", "dtype": "fp4", "m": 64, "n": 64, "k": 64}', "dtype"),
    ('{"family": "gemm", "dtype": "fp8_e4m3", "m": 64, "n": 64, "k": 64}', "dtype"),   # fp8 is not cublas
    ('{"family": "gemm", "m": 64, "n": 64, "k": 64, "cache": "hot"}', "cache"),
    ('{"family": "gemm", "m": 64, "n": 64, "k": 64, "batch": 2}', "batch"),
    ('{"family": "attention", "phase": "train", "batch": 1, "kv_len": 8, "num_heads": 8, "head_dim": 128}', "phase"),
    ('{"family": "moe", "tokens": 8, "hidden": 64, "intermediate": 64, "num_experts": 8, "topk": 2, "stage": "w3"}',
     "stage"),
    # NaN / Infinity (JSON constants Python would otherwise accept)
    ('{"family": "gemm", "m": NaN, "n": 64, "k": 64}', None),
    ('{"family": "gemm", "m": Infinity, "n": 64, "k": 64}', None),
    ('{"family": "gemm", "m": -Infinity, "n": 64, "k": 64}', None),
    ('{"family": "gemm", "m": 1e999, "n": 64, "k": 64}', "m"),
    # missing fields
    ('{"m": 64, "n": 64, "k": 64}', "family"),
    ('{"family": "gemm", "m": 64, "n": 64}', "k"),
    ('{"family": "attention", "batch": 1, "q_len": 4, "kv_len": 8, "head_dim": 128}', "num_heads"),
    ('{"family": "moe", "tokens": 8, "hidden": 64, "intermediate": 64, "topk": 2}', "num_experts"),
    # malformed JSON
    ('{"family": "gemm", "m": 64,', None),
    ("{'family': 'gemm'}", None),
    ('[1, 2, 3]', None),
    ('"gemm"', None),
    ('null', None),
    ("[" * 100_000, None),                                # deep nesting (was a RecursionError traceback)
    ('{"family": "gemm", "m": 64, "n": 64, "k": 64} trailing', None),
    # contradictions between fields
    ('{"family": "attention", "batch": 1, "q_len": 9, "kv_len": 8, "num_heads": 8, "head_dim": 128}', "q_len"),
    ('{"family": "attention", "batch": 2, "kv_lens": [8], "num_heads": 8, "head_dim": 128}', "kv_lens"),
    ('{"family": "attention", "batch": 1, "q_len": 4, "kv_len": 8, "num_heads": 8, "num_kv_heads": 3, "head_dim": 128}',
     "num_kv_heads"),
    ('{"family": "gemm", "library": "fp8_block", "dtype": "fp8_e4m3", "m": 64, "n": 64, "k": 100}', "k"),
    ('{"family": "moe", "tokens": 8, "hidden": 64, "intermediate": 64, "num_experts": 4, "topk": 8}', "topk"),
]


@pytest.mark.parametrize("line,field", BAD_LINES, ids=[f"bad{i}" for i in range(len(BAD_LINES))])
def test_bad_line_is_named_and_the_others_still_run(tmp_path, capsys, line, field):
    path = tmp_path / "cases.jsonl"
    path.write_text(GOOD + "\n" + line + "\n" + GOOD + "\n", encoding="utf-8")
    code, out, err = run(capsys, "predict-kernels", "--gpu", "h100-sxm", "--input", path)
    assert code == 1 and "Traceback" not in err
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == 3
    assert "latency_us" in rows[0] and "latency_us" in rows[2]
    assert rows[1]["error"].startswith("line 2")
    if field:
        assert f"field '{field}'" in rows[1]["error"]
    messages = err.strip().splitlines()
    assert messages[0].startswith("synperf: line 2") and len(messages) == 2   # the line, then the count
    assert len(messages[0]) < 600


def test_bad_line_invalid_on_this_gpu_only(tmp_path, capsys):
    """fp8 on a GPU without FP8 tensor cores and fa3 off Hopper fail at predict time: still one
    line naming the line, and the other lines run."""
    fp8 = '{"family": "gemm", "library": "cublaslt_scaled_mm", "dtype": "fp8_e4m3", "m": 64, "n": 64, "k": 64}'
    fa3 = ('{"family": "attention", "library": "fa3", "batch": 1, "q_len": 64, "kv_len": 64, "num_heads": 8,'
           ' "head_dim": 128}')
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join([GOOD, fp8, fa3, GOOD]) + "\n")
    code, out, err = run(capsys, "predict-kernels", "--gpu", "a100-sxm4-80gb", "--input", path)
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and "Traceback" not in err
    assert rows[1]["error"].startswith("line 2") and rows[2]["error"].startswith("line 3")
    assert "field 'library'" in rows[2]["error"]
    assert "latency_us" in rows[0] and "latency_us" in rows[3]


def test_bad_utf8_lines(tmp_path, capsys):
    path = tmp_path / "cases.jsonl"
    path.write_bytes(GOOD.encode() + b"\n\xff\xfe\xfd\n" + b'{"family": "gemm\xc3", "m": 1}\n' + GOOD.encode() + b"\n")
    code, out, err = run(capsys, "predict-kernels", "--gpu", "h100-sxm", "--input", path)
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and "Traceback" not in err
    assert "line 2: not valid UTF-8" in err and "line 3: not valid UTF-8" in err
    assert "latency_us" in rows[0] and "latency_us" in rows[3]


@pytest.mark.parametrize("content", [b"", b"\n", b"\n\n   \n\t\n", b"\r\n" * 50])
def test_empty_and_blank_files_predict_nothing(tmp_path, capsys, content):
    path = tmp_path / "cases.jsonl"
    path.write_bytes(content)
    code, out, err = run(capsys, "predict-kernels", "--gpu", "h100-sxm", "--input", path)
    assert code == 0 and out == "" and err == ""


def test_line_numbers_count_blank_lines(tmp_path, capsys):
    path = tmp_path / "cases.jsonl"
    path.write_text(GOOD + "\n\n\n" + '{"family": "gemm"}' + "\n")
    code, out, err = run(capsys, "predict-kernels", "--gpu", "h100-sxm", "--input", path)
    assert code == 1 and "line 4: field 'm'" in err


def test_overlong_line(tmp_path, capsys):
    path = tmp_path / "cases.jsonl"
    path.write_text(GOOD + "\n" + '{"family": "gemm", "x": "' + "a" * 1_100_000 + '"}\n' + GOOD + "\n")
    code, out, err = run(capsys, "predict-kernels", "--gpu", "h100-sxm", "--input", path)
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and "line 2: line longer than" in err and len(rows) == 3


# ------------------------------------------------------------------------------- whole-run errors
def test_unknown_gpu(tmp_path, capsys):
    path = tmp_path / "cases.jsonl"
    path.write_text(GOOD + "\n")
    for name in ("z9000", "", "   ", "../../etc/passwd", "h100-sxm.yaml"):
        code, out, err = run(capsys, "predict-kernels", "--gpu", name, "--input", path)
        one_line_error(code, err)
        assert out == ""


def test_missing_input_and_unwritable_output(tmp_path, capsys):
    code, _, err = run(capsys, "predict-kernels", "--gpu", "h100-sxm", "--input", tmp_path / "none.jsonl")
    one_line_error(code, err, "--input")
    code, _, err = run(capsys, "predict-kernels", "--gpu", "h100-sxm", "--input", tmp_path)
    one_line_error(code, err, "--input")
    path = tmp_path / "cases.jsonl"
    path.write_text(GOOD + "\n")
    code, _, err = run(capsys, "predict-kernels", "--gpu", "h100-sxm", "--input", path,
                       "--output", tmp_path / "no" / "such" / "dir.jsonl")
    one_line_error(code, err, "--output")


@pytest.mark.parametrize("kernel,words", [
    ("{nope", ["not valid JSON"]),
    ("", ["not valid JSON"]),
    ('{"family": "gemm", "m": NaN, "n": 1, "k": 1}', ["not valid JSON"]),
    ("[1]", ["JSON object"]),
    ('{"family": "gemm", "m": 64}', ["field 'n'"]),
    ('{"family": "gemm", "m": -1, "n": 1, "k": 1}', ["field 'm'"]),
    ("[" * 50_000, ["nested too deeply"]),
    ('{"family": "attention", "library": "fa3", "batch": 1, "q_len": 8, "kv_len": 8, "num_heads": 8,'
     ' "head_dim": 128}', ["Hopper"]),
    ('{"family": "attention", "library": "flash_attn3", "batch": 1, "q_len": 8, "kv_len": 8, "num_heads": 8,'
     ' "head_dim": 128, "engine": "trtllm"}', ["field 'engine'", "vllm, sglang"]),
    ('{"family": "attention", "library": "flashinfer", "batch": 1, "q_len": 8, "kv_len": 8, "num_heads": 8,'
     ' "head_dim": 128, "engine": "vllm"}', ["field 'engine'", "only flash_attn3"]),
    ('{"family": "attention", "library": "flash_attn3", "batch": 1, "q_len": 8, "kv_len": 8, "num_heads": 8,'
     ' "head_dim": 128, "page_size": 256}', ["field 'page_size'", "64"]),
])
def test_explain_bad_json(capsys, kernel, words):
    code, out, err = run(capsys, "explain", "--gpu", "a100-sxm4-80gb", kernel)
    one_line_error(code, err, *words)


def test_bench_rejects_non_positive_lines(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--lines", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--lines: must be an integer >= 1, got 0" in err and "Traceback" not in err


# ------------------------------------------------------------------------------- GPU spec files
def _spec_text(**replace) -> str:
    """The bundled H100 spec with some top-level lines replaced (value None: line dropped)."""
    lines = []
    for line in (SPECS / "h100-sxm.yaml").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in replace:
            if replace[key] is not None:
                lines.append(f"{key}: {replace[key]}")
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


SPEC_CASES = [
    ("missing", _spec_text(id="my-gpu", dram_bandwidth_gb_s=None), ["dram_bandwidth_gb_s"]),
    ("missing-source", _spec_text(id="my-gpu", sm_count="{value: 132}"), ["sm_count"]),
    ("contradictory-shared", _spec_text(id="my-gpu", shared_memory_per_block_kb="{value: 999, source: x}"),
     ["shared_memory_per_block_kb"]),
    ("contradictory-threads", _spec_text(id="my-gpu", max_threads_per_sm="{value: 99999, source: x}"),
     ["max_threads_per_sm"]),
    ("contradictory-clock", _spec_text(id="my-gpu", sustained_clock_mhz="{value: 5000, source: x}"),
     ["sustained_clock_mhz"]),
    ("negative", _spec_text(id="my-gpu", sm_count="{value: -1, source: x}"), ["sm_count"]),
    ("zero", _spec_text(id="my-gpu", dram_latency_ns="{value: 0, source: x}"), ["dram_latency_ns"]),
    ("fraction-count", _spec_text(id="my-gpu", sm_count="{value: 1.5, source: x}"), ["sm_count"]),
    ("wrong-type", _spec_text(id="my-gpu", sm_count="{value: lots, source: x}"), ["sm_count"]),
    ("huge-float", _spec_text(id="my-gpu", boost_clock_mhz="{value: 1.0e400, source: x}"), ["boost_clock_mhz"]),
    ("huge-int", _spec_text(id="my-gpu", sm_count="{value: " + "9" * 400 + ", source: x}"), ["sm_count"]),
    ("huge-int-digits", _spec_text(id="my-gpu", sm_count="{value: " + "9" * 5000 + ", source: x}"), ["not valid YAML"]),
    ("absurd-sm-count", _spec_text(id="my-gpu", sm_count="{value: 100000000000000000000, source: x}"), ["sm_count"]),
    ("nan", _spec_text(id="my-gpu", l2_size_mb="{value: .nan, source: x}"), ["l2_size_mb"]),
    ("bad-date", _spec_text(id="my-gpu", name="2001-13-45"), ["not valid YAML"]),
    ("bad-arch", _spec_text(id="my-gpu", architecture="pascal"), ["architecture"]),
    ("bad-cc", _spec_text(id="my-gpu", compute_capability="'².0'"), ["compute_capability"]),
    ("unknown-field", _spec_text(id="my-gpu") + "warp_drive: {value: 9, source: x}\n", ["warp_drive"]),
    ("mixed-keys", _spec_text(id="my-gpu") + "1: 2\nnull: 3\n", ["unknown field"]),
    ("list", "- id: my-gpu\n- name: x\n", ["mapping"]),
    ("scalar", "42\n", ["mapping"]),
    ("empty", "", ["mapping"]),
    ("not-yaml", "id: [unclosed\n", ["not valid YAML"]),
    ("deep", "[" * 5000 + "\n", ["not valid YAML"]),
    ("tabs", "id:\tx\n\tname: y\n", ["not valid YAML"]),
]


@pytest.mark.parametrize("name,text,words", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_bad_gpu_spec_files(tmp_path, capsys, name, text, words):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text, encoding="utf-8")
    code, out, err = run(capsys, "gpus", "--gpu-spec", spec)
    one_line_error(code, err, str(spec), *words)
    cases = tmp_path / "cases.jsonl"
    cases.write_text(GOOD + "\n")
    code, out, err = run(capsys, "predict-kernels", "--gpu", spec, "--input", cases)
    one_line_error(code, err, str(spec))


def test_binary_and_missing_gpu_spec_files(tmp_path, capsys):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(range(256)) * 4)
    for path in (garbage, tmp_path / "none.yaml", tmp_path):
        code, out, err = run(capsys, "gpus", "--gpu-spec", path)
        one_line_error(code, err, str(path))


def test_good_spec_file_still_works(tmp_path, capsys):
    spec = tmp_path / "mine.yaml"
    spec.write_text(_spec_text(id="my-gpu", name="My GPU", cuda_names="['My GPU 80GB']"))
    cases = tmp_path / "cases.jsonl"
    cases.write_text(GOOD + "\n")
    code, out, err = run(capsys, "predict-kernels", "--gpu", "my-gpu", "--gpu-spec", spec, "--input", cases)
    assert code == 0 and "latency_us" in out and err == ""


# ------------------------------------------------------------------------------------ data commands
def test_data_summary_on_non_parquet(tmp_path, capsys):
    fake = tmp_path / "fake.parquet"
    fake.write_text(GOOD + "\n")
    for args in (["data", "summary", fake], ["data", "summary", tmp_path / "none"],
                 ["data", "ceiling-check", fake], ["data", "repeatability", fake],
                 ["data", "repeatability", tmp_path / "none"], ["eval", fake]):
        code, out, err = run(capsys, *args)
        one_line_error(code, err)


def test_rows_without_a_gpu_are_named_not_a_trace(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"family": ["gemm"], "dtype": ["bf16"], "library": ["cublas"], "m": [8], "n": [64],
                             "k": [64], "latency_us": [5.0]}), path)
    for args in (["data", "summary", path], ["data", "repeatability", path], ["eval", "--leave-one-gpu-out", path]):
        code, out, err = run(capsys, *args)
        one_line_error(code, err)
        assert "names no GPU" in err


def test_data_import_wrong_paths(tmp_path, capsys):
    out_file = tmp_path / "out.parquet"
    for source in ("aiconfigurator", "vidur", "pipeweave"):
        code, out, err = run(capsys, "data", "import", source, tmp_path / "nope", "--output", out_file)
        one_line_error(code, err, "nope")
    # a folder that holds damaged files
    (tmp_path / "ai").mkdir()
    (tmp_path / "ai" / "gemm_perf.parquet").write_bytes(b"PAR1 not really")
    code, out, err = run(capsys, "data", "import", "aiconfigurator", tmp_path / "ai", "--output", out_file)
    one_line_error(code, err, "gemm_perf.parquet")
    csv_dir = tmp_path / "vidur" / "compute" / "a100" / "org" / "model"
    csv_dir.mkdir(parents=True)
    (csv_dir / "mlp.csv").write_bytes(b"num_tokens,time_stats.x.median\n\xff\xfe,1\n")
    code, out, err = run(capsys, "data", "import", "vidur", tmp_path / "vidur", "--output", out_file)
    one_line_error(code, err, "mlp.csv")
    (tmp_path / "pw").mkdir()
    (tmp_path / "pw" / "gemm_fp8_train.csv").write_bytes(b"\xff\xfe\x00garbage\n")
    code, out, err = run(capsys, "data", "import", "pipeweave", tmp_path / "pw", "--output", out_file)
    one_line_error(code, err, "gemm_fp8_train.csv")
    code, out, err = run(capsys, "data", "import", "vidur", tmp_path / "vidur", "--output",
                         tmp_path / "no" / "dir" / "out.parquet")
    one_line_error(code, err)


def test_in_range_but_too_large_case_is_one_line(tmp_path):
    """Each field in range, together more tasks than memory holds: one line for that case (not a
    MemoryError traceback), the others answered. Run under a 2 GiB address-space limit."""
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join([GOOD, '{"family": "moe", "tokens": 10000000, "hidden": 64, "intermediate": 64,'
                                      ' "num_experts": 4096, "topk": 4096, "stage": "w13"}', GOOD]) + "\n")
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
    proc = subprocess.run([sys.executable, "-c", limit + "import sys; from synperf.cli import main; sys.exit(main())",
                           "predict-kernels", "--gpu", "h100-sxm", "--input", str(path)],
                          capture_output=True, text=True, timeout=60)
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "line 2: too large to model" in rows[1]["error"]
    assert "latency_us" in rows[0] and "latency_us" in rows[2]


# ------------------------------------------------------------------------------- a very large file
def test_large_file_streams_in_bounded_memory(tmp_path):
    """200k lines (many ids over a few hundred shapes, and some bad lines) through the CLI in a
    subprocess: every line answered, peak RSS well under 500 MB."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the child's peak memory from /proc (Linux)")
    path = tmp_path / "big.jsonl"

    def lines():
        for i in range(200_000):
            if i % 5 == 0:
                yield json.dumps({"id": i, "family": "gemm", "m": 1 + i % 97, "n": 4096, "k": 4096})
            elif i % 5 == 1:
                yield json.dumps({"id": i, "family": "rmsnorm", "tokens": 1 + i % 89, "hidden": 4096,
                                  "residual": True})
            elif i % 5 == 2:
                yield json.dumps({"id": i, "family": "attention", "library": "flashinfer", "phase": "decode",
                                  "batch": 1 + i % 13, "kv_len": 512 + i % 7, "num_heads": 32, "num_kv_heads": 8,
                                  "head_dim": 128})
            elif i % 5 == 3:
                yield json.dumps({"id": i, "family": "silu_and_mul", "tokens": 1 + i % 61, "intermediate": 14336})
            elif i % 1000 == 4:
                yield '{"family": "gemm", "m": -1}'
            else:
                yield GOOD

    with path.open("w") as f:
        for line in lines():
            f.write(line + "\n")
    out, peak = tmp_path / "out.jsonl", tmp_path / "peak_kb"
    # The child reports its own peak: VmHWM belongs to its address space since exec, whereas
    # ru_maxrss would also count the forked copy of this (large) test process.
    run = ("import sys\nfrom synperf.cli import main\ncode = main(sys.argv[2:])\n"
           "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
           "open(sys.argv[1], 'w').write(hwm)\nsys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", run, str(peak), "predict-kernels", "--gpu", "h100-sxm",
                           "--input", str(path), "--output", str(out)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    peak_kb = int(peak.read_text())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 201          # 200 bad lines and the summary
    n = 0
    with out.open() as f:
        for n, _ in enumerate(f, start=1):
            pass
    assert n == 200_000
    assert peak_kb < 500 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
