"""Fuzz synperf's input parsers: anything other than a SynperfError escaping a parser is a crash.

    python3 benchmarks/fuzz_parsers.py --seconds 600            # split evenly over the parsers
    python3 benchmarks/fuzz_parsers.py --seconds 300 --only jsonl-mutated

Targets (docs/reliability.md lists what each covers):

- ``jsonl-bytes``: random bytes, cut into lines, through ``synperf.cases.read_cases``.
- ``jsonl-mutated``: valid case lines of every family, mutated at the JSON level (a field's value
  swapped for a boundary or hostile value, fields dropped or added, family/library/dtype swapped)
  and at the byte level (flips, inserts, deletes, splices), through ``read_cases``; each line
  that parses is also predicted on a few GPUs (a case the parser accepts must predict or raise a
  SynperfError).
- ``gpu-spec-mapping``: bundled GPU specs mutated as mappings through ``GpuSpec.from_mapping``;
  a spec that loads is also used to predict a few cases.
- ``gpu-spec-yaml``: bundled spec files mutated as text/bytes through ``load_spec_file``.

Inputs are drawn by Hypothesis (generation phase only, no shrinking: each crash is recorded with
its input as a reproducer and the run goes on). Each input runs under a watchdog (``--timeout``,
default 10 s) and an address-space limit (``--memory-gb``, default 6) so that a case that asks for
absurd work is reported rather than hanging or swapping the machine. HF config and trace parsers
do not exist yet (End-to-end issue); add a target here when they land.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st

from synperf.cases import read_cases
from synperf.errors import SynperfError
from synperf.gpu import resolve_gpu
from synperf.gpu.registry import load_spec_file
from synperf.gpu.spec import GpuSpec
from synperf.predict import predict

ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = ROOT / "src" / "synperf" / "gpu" / "specs"
PREDICT_GPUS = ("h100-sxm", "a100-sxm4-80gb", "l40s", "b200")

SEED_CASES = [
    {"family": "gemm", "dtype": "bf16", "library": "cublas", "m": 128, "n": 4096, "k": 4096},
    {"family": "gemm", "dtype": "fp16", "library": "cublas", "m": 3, "n": 1000, "k": 77},
    {"family": "gemm", "dtype": "fp8_e4m3", "library": "cublaslt_scaled_mm", "m": 512, "n": 2048, "k": 1024},
    {"family": "gemm", "dtype": "fp8_e4m3", "library": "fp8_block", "m": 100, "n": 7168, "k": 2048},
    {"family": "attention", "library": "flash_attn2_torch_sdpa", "phase": "prefill", "batch": 2, "q_len": 512,
     "kv_len": 512, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "causal": True},
    {"family": "attention", "library": "flash_attn2_torch_sdpa", "phase": "decode", "batch": 8, "kv_len": 1000,
     "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
    {"family": "attention", "library": "flashinfer", "phase": "prefill", "q_lens": [100, 3], "kv_lens": [300, 3],
     "num_heads": 16, "num_kv_heads": 4, "head_dim": 64, "causal": True, "page_size": 16},
    {"family": "attention", "library": "flashinfer", "phase": "decode", "batch": 4, "kv_lens": [10, 2000, 7, 64],
     "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "kv_cache_dtype": "fp8_e4m3"},
    {"family": "attention", "library": "fa3", "phase": "prefill", "batch": 2, "q_len": 300, "kv_len": 900,
     "num_heads": 8, "num_kv_heads": 8, "head_dim": 128, "causal": True},
    {"family": "moe", "tokens": 64, "hidden": 2048, "intermediate": 768, "num_experts": 64, "topk": 8,
     "stage": "all", "config": "vllm_default"},
    {"family": "moe", "tokens": 300, "hidden": 1024, "intermediate": 512, "num_experts": 8, "topk": 2, "stage": "w13",
     "config": {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128, "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 8, "num_warps": 4,
                "num_stages": 3}},
    {"family": "rmsnorm", "library": "flashinfer", "tokens": 64, "hidden": 4096, "residual": True},
    {"family": "rmsnorm", "library": "torch", "tokens": 7, "hidden": 1000, "residual": False},
    {"family": "silu_and_mul", "library": "triton", "tokens": 33, "intermediate": 14336},
    {"family": "rope", "library": "torch", "tokens": 9, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
    {"family": "rope", "library": "flashinfer", "tokens": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128},
]

INTERESTING = [
    0, -1, 1, 2, 3, 7, 15, 16, 17, 31, 64, 127, 128, 129, 255, 256, 257, 1023, 1024, 4096, 65535, 65536, 65537,
    1_048_576, 1_048_577, 10_000_000, 10_000_001, 2 ** 31, 2 ** 63, 10 ** 12, 10 ** 30, 10 ** 400,
    0.0, -0.0, 0.5, 1.0, 1.5, 64.0, 1e308, -1e308, 1e-300, True, False, None, "", "8", "64", "bf16", "fp8_e4m3",
    "decode", "prefill", "all", "vllm_default", "\u0000", "\udcff", "\u202e", [], [1], [0], [-1], [1, 2, 3],
    [10_000_000, 1], [None], ["a"], [[1]], {}, {"a": 1}, {"BLOCK_SIZE_M": 16},
]
CHOICES = {
    "family": ["gemm", "attention", "moe", "rmsnorm", "silu_and_mul", "rope", "conv"],
    "library": ["cublas", "cublaslt_scaled_mm", "fp8_block", "flash_attn2_torch_sdpa", "flashinfer", "fa3",
                "triton_fused_moe", "triton", "torch", "nope"],
    "dtype": ["bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "fp32", "int8"],
    "phase": ["prefill", "decode", "train"],
    "stage": ["w13", "w2", "all", "w3"],
    "cache": ["cold", "warm", "hot"],
    "config": ["vllm_default", "sglang_default", "tuned"],
}
EXTRA_FIELDS = ["m", "n", "k", "batch", "q_len", "kv_len", "q_lens", "kv_lens", "num_heads", "num_kv_heads",
                "head_dim", "causal", "page_size", "kv_cache_dtype", "tokens", "hidden", "intermediate",
                "num_experts", "topk", "residual", "id", "cache", "zzz"]


class Timeout(Exception):
    pass


class _Done(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


# -- mutations ------------------------------------------------------------------------------------

def mutate_value(rng: random.Random, value):
    """A hostile replacement for one JSON value (keeps the key)."""
    roll = rng.random()
    if roll < 0.5:
        return copy.deepcopy(rng.choice(INTERESTING))
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([value + 1, value - 1, value * 2, value // 2, -value, value * 1000,
                           float(value) if abs(value) < 1e300 else value, str(value)])
    if isinstance(value, list) and value:
        choice = rng.randrange(4)
        if choice == 0:
            return value[:-1]
        if choice == 1:
            return value + [rng.choice(value)]
        if choice == 2:
            return [mutate_value(rng, v) for v in value]
        return value * rng.choice([2, 100])
    if isinstance(value, dict) and value:
        out = dict(value)
        key = rng.choice(sorted(out))
        if rng.random() < 0.3:
            del out[key]
        else:
            out[key] = mutate_value(rng, out[key])
        return out
    return copy.deepcopy(rng.choice(INTERESTING))


def mutate_obj(rng: random.Random, obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        keys = sorted(obj)
        if op == 0 and keys:
            key = rng.choice(keys)
            obj[key] = mutate_value(rng, obj[key])
        elif op == 1 and keys:
            del obj[rng.choice(keys)]
        elif op == 2:
            obj[rng.choice(EXTRA_FIELDS)] = copy.deepcopy(rng.choice(INTERESTING))
        elif op == 3:
            key = rng.choice(sorted(CHOICES))
            obj[key] = rng.choice(CHOICES[key])
        else:   # move a valid value to another numeric field (shapes that parse but are odd)
            ints = [k for k in keys if isinstance(obj[k], int) and not isinstance(obj[k], bool)]
            if len(ints) >= 2:
                a, b = rng.sample(ints, 2)
                obj[a], obj[b] = obj[b], obj[a]
    return obj


def mutate_bytes(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and buf:
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 3:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            buf[pos:pos] = other[start:start + rng.randint(1, 64)]
        elif op == 4:
            buf[pos:pos] = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"[" * 50, b"{", b"}", b'"',
                                       b"\\u0000", b"\\ud800", b"\n", b"\r", b"\xff", b"\xc3", b"9" * 30, b"null",
                                       b"true", b",", b":", b"-0", b"0x10"])
        else:
            buf[pos:pos] = str(rng.choice([v for v in INTERESTING if isinstance(v, int)])).encode()
    return bytes(buf)


# -- targets ---------------------------------------------------------------------------------------

class Targets:
    def __init__(self):
        self.gpus = [resolve_gpu(g) for g in PREDICT_GPUS]
        self.lines = [json.dumps(c).encode() for c in SEED_CASES]
        example = ROOT / "examples" / "llama-3.1-8b-h100.jsonl"
        if example.is_file():
            self.lines += [line for line in example.read_bytes().splitlines() if line.strip()]
        self.spec_texts = {p.name: p.read_bytes() for p in sorted(SPEC_DIR.glob("*.yaml"))}
        self.spec_maps = {name: yaml.safe_load(text) for name, text in self.spec_texts.items()}
        self.tmp = Path(tempfile.mkdtemp(prefix="synperf-fuzz-"))
        self.predicted = 0

    def _predict_all(self, case, gpus) -> None:
        for gpu in gpus:
            try:
                pred = predict(case, gpu)
            except SynperfError:
                continue
            self.predicted += 1
            values = (pred.latency_us, pred.latency_low_us, pred.latency_high_us, pred.ceiling_us)
            if not all(v == v and 0 < v < float("inf") for v in values):
                raise AssertionError(f"non-finite or non-positive prediction {values} on {gpu.id}")
            if not pred.ceiling_us <= pred.latency_low_us <= pred.latency_us <= pred.latency_high_us:
                raise AssertionError(f"interval out of order {values} on {gpu.id}")

    def _read(self, lines, gpus=()) -> bool:
        """True when some line parsed into a case (the input was accepted)."""
        accepted = False
        for _, _, case in read_cases(lines):
            if not isinstance(case, SynperfError):
                accepted = True
                if gpus:
                    self._predict_all(case, gpus)
        return accepted

    # each target: (strategy, run(input), reproducer(input) -> str)
    def jsonl_bytes(self):
        def run(data: bytes):
            accepted = self._read(data.splitlines(keepends=True))
            return self._read(data.decode("utf-8", "replace").splitlines()) or accepted
        return st.binary(max_size=512), run, lambda d: f"list(read_cases({d!r}.splitlines(keepends=True)))"

    def jsonl_mutated(self):
        def build(seed: int):
            rng = random.Random(seed)
            base = json.loads(rng.choice(self.lines))
            if rng.random() < 0.75:
                obj = mutate_obj(rng, base)
                try:
                    line = json.dumps(obj).encode()
                except (ValueError, TypeError):
                    line = json.dumps(base).encode()
                if rng.random() < 0.25:
                    line = mutate_bytes(rng, line, self.lines)
            else:
                line = mutate_bytes(rng, json.dumps(base).encode(), self.lines)
            return line

        def run(seed: int):
            line = build(seed)
            return self._read([line], self.gpus[: 1 + seed % len(self.gpus)])
        return (st.integers(0, 2 ** 63), run,
                lambda s: f"line = {build(s)!r}  # read_cases([line]) then predict on {PREDICT_GPUS}")

    def gpu_spec_mapping(self):
        names = sorted(self.spec_maps)

        def build(seed: int):
            rng = random.Random(seed)
            spec = copy.deepcopy(self.spec_maps[rng.choice(names)])
            for _ in range(rng.randint(1, 3)):
                op = rng.randrange(5)
                keys = sorted(spec)
                key = rng.choice(keys) if keys else "id"
                if op == 0:
                    spec.pop(key, None)
                elif op == 1 and isinstance(spec.get(key), dict) and "value" in spec[key]:
                    spec[key]["value"] = mutate_value(rng, spec[key]["value"])
                elif op == 2 and isinstance(spec.get(key), dict) and spec[key]:
                    sub = rng.choice(sorted(spec[key]))
                    spec[key][sub] = mutate_value(rng, spec[key][sub])
                elif op == 3:
                    spec[key] = copy.deepcopy(rng.choice(INTERESTING))
                else:
                    spec[rng.choice(["sm_count", "registers_per_sm", "max_threads_per_sm", "max_ctas_per_sm",
                                     "shared_memory_per_sm_kb", "boost_clock_mhz", "dram_latency_ns",
                                     "kernel_launch_floor_us", "l2_size_mb"])] = {
                        "value": rng.choice([1, 2, 3, 0.001, 1e-9, 1e20, 7, 33, 4096]), "source": "fuzz"}
            if rng.random() < 0.1:
                spec = rng.choice([[spec], "spec", 3, None, [], {1: 2, "x": 3}, {None: 1}])
            return spec

        cases = [c for _, _, c in read_cases(self.lines[:16]) if not isinstance(c, SynperfError)]

        def run(seed: int):
            spec = GpuSpec.from_mapping(build(seed), origin="fuzz")
            # A spec that loads must predict or fail with a SynperfError, never crash.
            for case in cases[seed % 4:: 4]:
                try:
                    pred = predict(case, spec)
                except SynperfError:
                    continue
                if not (0 < pred.ceiling_us < float("inf")):
                    raise AssertionError(f"ceiling {pred.ceiling_us} for {case.family}/{case.library}")
        def reproducer(seed: int) -> str:
            spec = build(seed)
            if not isinstance(spec, dict) or not isinstance(spec.get("id"), str) or spec["id"] + ".yaml" not in self.spec_maps:
                return f"GpuSpec.from_mapping({spec!r})"
            base = self.spec_maps[spec["id"] + ".yaml"]
            changed = {k: v for k, v in spec.items() if base.get(k) != v}
            dropped = sorted(str(k) for k in base if k not in spec)
            return f"GpuSpec.from_mapping({{**specs/{spec['id']}.yaml, **{changed!r}}} minus {dropped})"
        return st.integers(0, 2 ** 63), run, reproducer

    def gpu_spec_yaml(self):
        names = sorted(self.spec_texts)
        pool = list(self.spec_texts.values())

        def build(seed: int) -> bytes:
            rng = random.Random(seed)
            text = self.spec_texts[rng.choice(names)]
            roll = rng.random()
            if roll < 0.1:
                return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
            if roll < 0.4:   # swap one scalar line for a hostile YAML scalar
                lines = text.decode("utf-8").splitlines()
                i = rng.randrange(len(lines))
                head = lines[i].split(":", 1)[0]
                lines[i] = head + ": " + rng.choice([
                    "2001-13-45", "9" * 5000, "1e999", ".nan", ".inf", "-.inf", "0x" + "f" * 80, "!!binary zz",
                    "&a [*a]", "[" * 500, "{value: 1e400, source: x}", "{value: " + "9" * 400 + ", source: x}",
                    "{value: 1:2:3, source: x}", "{value: 0b1010, source: x}", "{value: 1_000, source: x}",
                    "{value: '12', source: x}", "{value: null, source: x}", "{value: 1, source: null}",
                    "~", "[]", "{}", "yes", "!!python/object:os.system x", "- a", "'\\xff'"])
                return "\n".join(lines).encode()
            return mutate_bytes(rng, text, pool)

        path = self.tmp / "spec.yaml"

        def run(seed: int):
            path.write_bytes(build(seed))
            load_spec_file(path)
        return (st.integers(0, 2 ** 63), run,
                lambda s: f"open('spec.yaml','wb').write({build(s)[:4000]!r}); load_spec_file('spec.yaml')")


    def hf_config(self):
        """Mutated bundled HF config.json objects: model_from_dict must load or raise a SynperfError,
        and a loaded model's forward pass must build (every case parsing) or refuse cleanly."""
        from synperf.workloads.engines import forward_pass
        from synperf.workloads.model import model_from_dict
        config_dir = ROOT / "src" / "synperf" / "workloads" / "configs"
        bases = [json.loads(p.read_text()) for p in sorted(config_dir.glob("*.json"))]
        gpu = resolve_gpu("h100-sxm")

        def build(seed: int):
            rng = random.Random(seed)
            raw = json.loads(json.dumps(rng.choice(bases)))
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.3 and raw:
                    raw.pop(rng.choice(sorted(raw)))
                else:
                    raw = mutate_obj(rng, raw) if rng.random() < 0.5 else raw
                    key = rng.choice(sorted(raw) or ["hidden_size"])
                    raw[key] = mutate_value(rng, raw.get(key))
            if rng.random() < 0.05:
                raw = rng.choice([[raw], "config", 3, None, [], {1: 2}])
            return raw

        def run(seed: int):
            model = model_from_dict(build(seed), "fuzz.json")
            rng = random.Random(seed)
            for phase, lens in (("prefill", [rng.randint(1, 4096)]), ("decode", [rng.randint(1, 4096)] * 2)):
                try:
                    forward_pass(model, gpu, rng.choice([1, 2, 4]), rng.choice(["vllm", "sglang"]), phase, lens)
                except SynperfError:
                    pass
        return st.integers(0, 2 ** 63), run, lambda s: f"model_from_dict({build(s)!r})"


    def trace(self):
        """Request traces (JSONL or a JSON list) for `simulate serve`: valid traces mutated at the JSON
        and byte level through `serving.parse_trace`; what parses must be non-empty, sorted, positive."""
        from synperf.workloads.serving import parse_trace
        base = [{"arrival_time": 0.1 * i, "prompt_tokens": 100 + 37 * i, "output_tokens": 8 + i} for i in range(6)]
        texts = [("\n".join(json.dumps(r) for r in base)).encode(), json.dumps(base).encode()]

        def build(seed: int) -> bytes:
            rng = random.Random(seed)
            roll = rng.random()
            if roll < 0.5:
                records = [mutate_obj(rng, dict(r)) if rng.random() < 0.3 else dict(r) for r in base]
                if rng.random() < 0.2:
                    records[rng.randrange(len(records))] = mutate_value(rng, None)
                if rng.random() < 0.5:
                    return json.dumps(records, default=str).encode()
                return "\n".join(json.dumps(r, default=str) for r in records).encode()
            return mutate_bytes(rng, rng.choice(texts), texts)

        def run(seed: int):
            raw = build(seed)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return   # the CLI reads the file as UTF-8 and reports the decode error itself
            requests = parse_trace(text, "fuzz.jsonl")
            times = [r.arrival_s for r in requests]
            if not requests or times != sorted(times) or any(r.prompt_tokens < 1 or r.output_tokens < 1 for r in requests):
                raise AssertionError(f"parse_trace accepted a bad trace: {requests[:3]}")
        return st.integers(0, 2 ** 63), run, lambda s: f"parse_trace({build(s)[:4000]!r})"


    def e2e_rows(self):
        """Reference-engine rows for `simulate validate` (data/h200-system/e2e_reference.parquet),
        fields mutated: check_rows must accept or raise an InputError, and accepted rows must price."""
        import pandas as pd

        from synperf.workloads.calibration import (DEFAULT_DATA, _pipeline_prediction, bundled_overhead, check_rows,
                                                   samples_from_rows)
        base = pd.read_parquet(DEFAULT_DATA).groupby("pp").head(3).to_dict("records")   # TP and PP rows
        gpu = resolve_gpu("h200")

        def build(seed: int) -> list[dict]:
            rng = random.Random(seed)
            rows = [dict(r) for r in base[: rng.randint(1, len(base))]]
            for _ in range(rng.randint(1, 3)):
                row = rows[rng.randrange(len(rows))]
                key = rng.choice(sorted(row))
                if rng.random() < 0.2:
                    row.pop(key)
                elif key in ("prompt_lens", "prefill_kernels", "decode_kernels") and isinstance(row[key], str) \
                        and row[key].startswith(("[", "{")) and rng.random() < 0.6:
                    row[key] = json.dumps(mutate_value(rng, json.loads(row[key])), default=str)
                else:
                    row[key] = mutate_value(rng, row[key])
            return rows

        def run(seed: int):
            rows = check_rows(build(seed))
            samples_from_rows(rows, gpu)
            for row in rows:
                if row["pp"] > 1:
                    _pipeline_prediction(row, gpu, bundled_overhead())
        return st.integers(0, 2 ** 63), run, lambda s: f"check_rows({build(s)!r})"[:4000]


TARGET_NAMES = {"jsonl-bytes": "jsonl_bytes", "jsonl-mutated": "jsonl_mutated",
                "gpu-spec-mapping": "gpu_spec_mapping", "gpu-spec-yaml": "gpu_spec_yaml", "hf-config": "hf_config",
                "trace": "trace", "e2e-rows": "e2e_rows"}


def fuzz(name: str, strategy, run, reproducer, seconds: float, timeout: float) -> dict:
    stats = {"tried": 0, "rejected": 0, "accepted": 0, "crashes": {}, "slow": []}
    stop = time.monotonic() + seconds

    @settings(max_examples=2_000, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(strategy)
    def one(data):
        if time.monotonic() > stop:
            raise _Done()
        stats["tried"] += 1
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            if run(data) is False:   # a reader that reports bad lines instead of raising
                stats["rejected"] += 1
            else:
                stats["accepted"] += 1
        except SynperfError:
            stats["rejected"] += 1
        except Timeout:
            stats["slow"].append(reproducer(data))
        except Exception as exc:   # noqa: BLE001 - the point of a fuzzer
            tb = traceback.extract_tb(exc.__traceback__)
            where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                          if "synperf" in f.filename and "fuzz_parsers" not in f.filename), "?")
            key = f"{type(exc).__name__} at {where}"
            if key not in stats["crashes"]:
                try:
                    repro = reproducer(data)
                except Exception as again:   # noqa: BLE001 - a harness bug must not stop the run
                    repro = f"<input {data!r}: reproducer failed with {again!r}>"
                stats["crashes"][key] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "reproducer": repro,
                                         "count": 0}
            stats["crashes"][key]["count"] += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    while time.monotonic() < stop:
        try:
            one()
        except _Done:
            break
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="total budget, split evenly over the targets")
    parser.add_argument("--only", choices=sorted(TARGET_NAMES), action="append", help="fuzz only these targets")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take (else: slow)")
    parser.add_argument("--memory-gb", type=float, default=6.0, help="address-space limit of this process")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    limit = int(args.memory_gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    names = args.only or list(TARGET_NAMES)
    targets = Targets()
    report = {}
    for name in names:
        strategy, run, reproducer = getattr(targets, TARGET_NAMES[name])()
        t0 = time.monotonic()
        stats = fuzz(name, strategy, run, reproducer, args.seconds / len(names), args.timeout)
        stats["seconds"] = round(time.monotonic() - t0, 1)
        report[name] = stats
        print(f"{name}: {stats['tried']} inputs in {stats['seconds']} s ({stats['accepted']} accepted, "
              f"{stats['rejected']} rejected with a SynperfError or InputError), {len(stats['crashes'])} distinct crash(es), "
              f"{len(stats['slow'])} slow (> {args.timeout} s)", flush=True)
        for key, crash in stats["crashes"].items():
            print(f"  CRASH {key} (x{crash['count']}): {crash['error']}\n    reproducer: {crash['reproducer'][:2000]}")
        for slow in stats["slow"][:5]:
            print(f"  SLOW reproducer: {slow[:2000]}")
    report["predictions_checked"] = targets.predicted
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    crashed = any(s["crashes"] or s["slow"] for k, s in report.items() if isinstance(s, dict))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
