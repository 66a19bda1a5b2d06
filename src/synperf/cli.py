"""The `synperf` command line. Parses arguments, calls the library, prints; no modelling here."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from typing import Sequence

from synperf import __version__
from synperf.errors import InputError, SynperfError
from synperf.validate import int_at_least


def _add_gpu_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--gpu", required=required, help="short id (h100-sxm), CUDA device name, or a spec YAML path")
    parser.add_argument("--gpu-spec", action="append", default=[], metavar="FILE",
                        help="extra GPU spec YAML file(s); see docs/gpu-specs.md")


def _registry(args):
    from synperf.gpu.registry import default_registry
    return default_registry(args.gpu_spec)


def cmd_gpus(args) -> int:
    from synperf.gpu.spec import TENSOR_PATHS
    rows = []
    for spec in _registry(args):
        best = {}
        for path in TENSOR_PATHS:
            for dtype, rate in spec.tensor_flops_per_clk_per_sm.get(path, {}).items():
                best[dtype] = max(best.get(dtype, 0.0), rate)
        tflops = {d: round(r * spec.sm_count * spec.clock_hz / 1e12, 1) for d, r in best.items()}
        rows.append({
            "id": spec.id, "name": spec.name, "architecture": spec.architecture,
            "compute_capability": spec.compute_capability, "sm_count": spec.sm_count,
            "boost_clock_mhz": spec.boost_clock_mhz, "memory_gb": spec.memory_gb,
            "dram_bandwidth_gb_s": spec.dram_bandwidth_gb_s, "l2_size_mb": spec.l2_size_mb,
            "dense_tflops_at_boost": tflops, "nvlink_gb_s": spec.nvlink_gb_s,
            "list_price_usd": spec.list_price_usd, "cuda_names": list(spec.cuda_names),
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    header = f"{'id':<32}{'arch':<20}{'SMs':>5}{'MHz':>6}{'GB':>6}{'GB/s':>7}{'bf16 TF':>9}{'fp8 TF':>8}  name"
    print(header)
    for r in rows:
        t = r["dense_tflops_at_boost"]
        print(f"{r['id']:<32}{r['architecture'] + ' ' + r['compute_capability']:<20}{r['sm_count']:>5}"
              f"{r['boost_clock_mhz']:>6.0f}{r['memory_gb']:>6.0f}{r['dram_bandwidth_gb_s']:>7.0f}"
              f"{t.get('bf16', t.get('fp16', 0)):>9.0f}{t.get('fp8', 0):>8.0f}  {r['name']}")
    return 0


def _open_input(path: str):
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise SynperfError(f"cannot open --input {path}: {exc.strerror}") from None


def cmd_predict_kernels(args) -> int:
    from synperf.cases import read_cases
    from synperf.predict import predict
    gpu = _registry(args).get(args.gpu)
    source = _open_input(args.input)
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    except OSError as exc:
        if source is not sys.stdin.buffer:
            source.close()
        raise SynperfError(f"cannot write --output {args.output}: {exc.strerror}") from None
    errors = 0
    try:
        for number, raw, case in read_cases(source):
            if isinstance(case, InputError):
                errors += 1
                record = dict(raw) if isinstance(raw, dict) else {}
                record["error"] = str(case)
                print(f"synperf: {case}", file=sys.stderr)
            else:
                record = dict(raw)
                try:
                    record.update(predict(case, gpu).as_dict())
                except SynperfError as exc:
                    errors += 1
                    record["error"] = f"line {number}: {exc}"
                    print(f"synperf: line {number}: {exc}", file=sys.stderr)
            out.write(json.dumps(record) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
        if source is not sys.stdin.buffer:
            source.close()
    if errors:
        print(f"synperf: {errors} invalid line(s); the others were predicted", file=sys.stderr)
    return 1 if errors else 0


def cmd_explain(args) -> int:
    from synperf.cases import parse_case, parse_json_text
    from synperf.explain import explain_dict, explain_text
    from synperf.predict import demand_for
    gpu = _registry(args).get(args.gpu)
    case = parse_case(parse_json_text(args.kernel))
    demand = demand_for(case, gpu)
    if args.json:
        print(json.dumps(explain_dict(demand), indent=1))
    else:
        print(explain_text(demand, gpu.id))
    return 0


def _print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """Rows as an aligned text table; ``columns`` are (key, format spec) pairs, e.g. ("mape", ">8.1%")."""
    def header(spec: str) -> str:
        align, width = re.match(r"([<>^]?)(\d*)", spec).groups()
        return (align or "<") + width

    def cell(value, spec: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return format("-", header(spec))
        return format(value, spec) if spec[-1] in "%fd" and isinstance(value, (int, float)) else format(str(value), header(spec))

    print("".join(format(key, header(spec)) for key, spec in columns))
    for row in rows:
        print("".join(cell(row[key], spec) for key, spec in columns))


def cmd_data_summary(args) -> int:
    from synperf.dataset import iter_records, summary
    rows = summary(iter_records(args.paths))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    _print_table(rows, [("gpu", "<30"), ("family", "<14"), ("dtype", "<10"), ("library", "<24"), ("source", "<18"), ("rows", ">8")])
    return 0


def cmd_data_ceiling(args) -> int:
    from synperf.dataset import ceiling_check, iter_records
    report = ceiling_check(iter_records(args.paths), _registry(args))
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    _print_table(report["groups"], [("gpu", "<30"), ("family", "<14"), ("library", "<24"), ("rows", ">7d"),
                                    ("below_fraction", ">16.1%"), ("median_ratio", ">14.3f"), ("p10_ratio", ">11.3f"),
                                    ("max_ratio", ">11.2f")])
    o = report["overall"]
    print(f"overall: {o['rows']} rows, ceiling <= measured for {o['below_fraction']:.1%}, median ratio {o['median_ratio']:.3f}")
    if report["skipped"]:
        print(f"skipped: {report['skipped']}")
    return 0


def cmd_data_repeatability(args) -> int:
    from synperf.dataset import iter_records, repeatability
    rows = repeatability(iter_records(args.paths))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no case was measured more than once in the given data")
        return 0
    _print_table(rows, [("gpu", "<14"), ("family", "<14"), ("library", "<24"), ("repeats", ">8d"),
                        ("median_ratio", ">13.3f"), ("mean_abs_diff", ">14.1%"), ("median_abs_diff", ">16.1%"),
                        ("p90_abs_diff", ">13.1%"), ("floor_mape", ">11.1%")])
    return 0


def _heuristic_rows(path: str) -> list[dict]:
    """Rank-0 answers of a ``synperf.profile.cublaslt_query`` run (parquet). Answers for shapes
    marked ``profiled`` (measured in the kernel datasets, held-out ones included) are left out:
    those shapes enter the table from their profiles, and only from the training split."""
    import pyarrow.parquet as pq
    needed = ["m", "n", "k", "dtype", "rank", "status", "tile", "cluster", "splitk", "stages", "workspace_bytes"]
    try:
        table = pq.read_table(path)
        rows = table.select(needed + (["profiled"] if "profiled" in table.column_names else [])).to_pylist()
    except (OSError, KeyError, ValueError) as exc:
        raise SynperfError(f"--heuristic {path}: not a cublaslt_query parquet ({exc})") from None
    return [r for r in rows if r["rank"] == 0 and r["status"] == "ok" and not r.get("profiled")]


def cmd_data_gemm_tiles(args) -> int:
    from synperf.dataset import iter_records
    from synperf.kernels.gemm import build_tile_table, write_tile_table
    records = []
    for rec in iter_records(args.paths):
        if rec.get("family") == "gemm" and rec.get("library") in ("cublas", "cublaslt_scaled_mm") and rec.get("kernel_names"):
            records.append({**rec, **{k: json.loads(rec[k]) for k in ("kernel_names", "grids", "blocks", "shared_mem")}})
    if not records:
        raise SynperfError("no profiled cuBLAS GEMM rows with kernel names in the given data")
    heuristic = []
    for path in args.heuristic or ():
        heuristic += _heuristic_rows(path)
    table = build_tile_table(records, heuristic)
    rows_path = write_tile_table(table, args.output)
    print(f"{len(table['rows'])} shapes, {len(table['configs'])} kernel configurations -> {args.output}, {rows_path}")
    return 0


def cmd_data_split(args) -> int:
    from synperf.dataset import holdout_split, iter_records, write_records
    train, test = holdout_split(iter_records(args.paths), args.test_fraction)
    write_records(train, args.train)
    write_records(test, args.test)
    print(f"{len(train)} training rows -> {args.train}, {len(test)} held-out rows -> {args.test}")
    return 0


def cmd_data_fit_priors(args) -> int:
    from synperf.dataset import fit_efficiency_priors, iter_records
    priors = fit_efficiency_priors(iter_records(args.paths), _registry(args))
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(priors, f, indent=1)
    print(f"{len(priors)} family/library priors -> {args.output}")
    return 0


def cmd_data_moe_configs(args) -> int:
    from pathlib import Path
    from synperf.importers.engine_configs import build_table
    if not (args.vllm or args.sglang):
        raise InputError("give --vllm and/or --sglang (an installed package's folder or an unpacked wheel's)")
    folders = {}
    for flag, value in (("--vllm", args.vllm), ("--sglang", args.sglang)):
        if value is not None:
            if not Path(value).is_dir():
                raise InputError(f"{value}: not a folder", flag)
            folders[flag] = Path(value)
    table = build_table(folders.get("--vllm"), folders.get("--sglang"), args.sglang_triton, _registry(args))
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(table, f, separators=(",", ":"))
    for engine, gpus in table["engines"].items():
        counts = ", ".join(f"{gpu} {len(shapes)}" for gpu, shapes in sorted(gpus.items()))
        print(f"{table['sources'][engine]}: tuned (E, N) shapes per GPU: {counts or 'none'}")
    print(f"-> {args.output}")
    return 0


def cmd_data_register_table(args) -> int:
    import pyarrow.parquet as pq
    from synperf.kernels import families
    from synperf.kernels._common import build_register_table
    try:
        rows = pq.read_table(args.path).to_pylist()
    except (OSError, ValueError) as exc:
        raise InputError(f"{args.path}: not a readable parquet file ({exc})", "path") from None
    kernels = {row.get("kernel") for row in rows}
    if len(kernels) != 1 or not {"moe", "rope"} >= kernels:
        raise InputError(f"{args.path}: one census of moe or rope expected, got kernels {sorted(map(str, kernels))}",
                         "kernel")
    kernel = kernels.pop()
    table = build_register_table(rows, families()[kernel].REGISTER_KEY)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(table, f, separators=(",", ":"))
    print(f"{kernel}: {len(table['builds'])} sm{table['cc_major']}x builds (Triton {table['triton_version']}) "
          f"-> {args.output}")
    return 0


def cmd_data_import(args) -> int:
    from synperf.dataset import write_records_streaming
    from synperf.importers import Report, iter_source
    report = Report()
    options = {"limit": args.limit} if args.limit else {}
    rows = write_records_streaming(iter_source(args.source, args.path, report=report, **options), args.output)
    summary = report.as_dict()
    print(f"{args.source}: read {summary['read']}, kept {summary['kept']} -> {args.output} ({rows} rows)")
    for reason, count in summary["dropped"].items():
        print(f"  dropped {count}: {reason}")
    return 0


def cmd_bench(args) -> int:
    from synperf.bench import run_bench
    result = run_bench(_registry(args).get(args.gpu), args.lines, args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:<40}{value}")
    return 0


def cmd_train(args) -> int:
    from pathlib import Path

    from synperf.dataset import iter_records
    from synperf.predict import model_dir
    from synperf.train import train
    out = Path(args.output) if args.output else model_dir()
    calibration = iter_records(args.interval_calibration) if args.interval_calibration else None
    for card in train(iter_records(args.paths), _registry(args), out, seed=args.seed, epochs=args.epochs,
                      calibration_records=calibration, jobs=args.jobs):
        print(f"{card['family']:<14}{card['rows']:>7} rows from {', '.join(card['gpus'])}, {card['train_seconds']} s -> {out / card['family']}.npz")
        if "epochs_held_back_mape" in card:
            tried = ", ".join(f"{e}: {m:.1%}" for e, m in card["epochs_held_back_mape"].items())
            print(f"{'':<14}{card['epochs']} epochs (held-back MAPE {tried})")
            tried = ", ".join(f"{d}: {m:.1%}" for d, m in card["weight_decay_held_back_mape"].items())
            print(f"{'':<14}weight decay {card['weight_decay']:g} (held-back MAPE {tried})")
            if "epochs_held_back_mape_at_weight_decay" in card:
                tried = ", ".join(f"{e}: {m:.1%}" for e, m in card["epochs_held_back_mape_at_weight_decay"].items())
                print(f"{'':<14}{card['epochs']} epochs at that decay (held-back MAPE {tried})")
        if "unseen_silicon_interval" in card:
            c = card["unseen_silicon_interval"]
            each = ", ".join(f"{g} {v:.0%}" for g, v in c["coverage_80_each_gpu_held_out"].items())
            print(f"{'':<14}interval widened x/{math.exp(c['margin']):.2f} on unseen dies ({c['rows']} rows of {len(c['gpus'])} GPUs; "
                  f"80 % interval covered {c['coverage_80_without']:.0%} unwidened; widened, each GPU held out: {each})")
    return 0


def cmd_eval(args) -> int:
    from synperf.dataset import iter_records
    from synperf.predict import family_models
    from synperf.train import evaluate, leave_one_gpu_out
    import time
    start = time.perf_counter()
    points: dict | None = {} if args.report else None

    def records_of_interest():
        return (r for r in iter_records(args.paths) if not args.family or r.get("family") in args.family)

    if args.leave_one_gpu_out:
        rows = leave_one_gpu_out(records_of_interest(), _registry(args), seed=args.seed, points=points)
        columns = [("gpu", "<32"), ("family", "<14"), ("rows", ">7d"), ("mlp_mape", ">10.1%"), ("mlp_coverage_80", ">17.1%"),
                   ("ood_fraction", ">14.1%"), ("roofline_mape", ">15.1%"), ("neusight_mape", ">15.1%")]
    else:
        from synperf.dataset import repeatability
        registry = _registry(args)
        baseline = iter_records(args.baseline_train) if args.baseline_train else None
        records = list(records_of_interest())
        rows = evaluate(records, registry, family_models(), baseline, seed=args.seed, points=points)
        # Where the data measured a case more than once, the error no model can beat on it.
        floors = {}
        for r in repeatability(records):
            try:
                floors[(registry.get(r["gpu"]).id, r["family"], r["library"])] = r
            except SynperfError:     # a GPU without a spec: evaluate skipped its rows too
                continue
        for row in rows:
            floor = floors.get((row["gpu"], row["family"], row["library"]))
            row["repeats"] = floor["repeats"] if floor else 0
            row["floor_mape"] = floor["floor_mape"] if floor else None
        columns = [("gpu", "<10"), ("family", "<14"), ("library", "<24"), ("rows", ">7d"), ("mlp_mape", ">10.1%"),
                   ("mlp_coverage_80", ">17.1%"), ("analytical_mape", ">17.1%"), ("roofline_mape", ">15.1%"),
                   ("neusight_mape", ">15.1%"), ("repeats", ">8d"), ("floor_mape", ">11.1%")]
    elapsed = time.perf_counter() - start
    if args.report:
        from synperf.report import write_report

        kind = "leave-one-GPU-out" if args.leave_one_gpu_out else "held-out rows, shipped models"
        notes = [f"Data: {', '.join(args.paths)}."]
        if args.baseline_train:
            notes.append(f"NeuSight-style baseline trained on: {', '.join(args.baseline_train)}.")
        files = write_report(args.report, f"synperf eval ({kind})", rows, columns, points, elapsed, notes)
        print(f"report: {', '.join(str(f) for f in files)}", file=sys.stderr)
    if args.json:
        print(json.dumps({"rows": rows, "seconds": round(elapsed, 1)}, indent=1))
        return 0
    _print_table(rows, columns)
    print(f"{sum(r['rows'] for r in rows)} rows in {elapsed:.1f} s")
    return 0


HOST_RATE_HELP = ("microseconds the host takes to issue one kernel of an eager pass with a call of its own, one "
                  "rank (default: the reference engine's fit, engine_overhead.json; measured 16-43 us a launch "
                  "between hosts); launches inside a call and several ranks keep their ratios to it")


def cmd_simulate_batch(args) -> int:
    from synperf.workloads.cli_support import run_simulate_batch
    return run_simulate_batch(args, _registry)


def cmd_simulate_validate(args) -> int:
    from synperf.workloads.cli_support import run_simulate_validate
    return run_simulate_validate(args, _registry)


def cmd_simulate_serve(args) -> int:
    from synperf.workloads.cli_support import run_simulate_serve
    return run_simulate_serve(args, _registry)


def cmd_simulate_compare(args) -> int:
    from synperf.workloads.cli_support import run_simulate_compare
    return run_simulate_compare(args, _registry)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synperf", description=__doc__)
    parser.add_argument("--version", action="version", version=f"synperf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gpus", help="list known GPUs")
    _add_gpu_args(p, required=False)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_gpus)

    p = sub.add_parser("predict-kernels", help="predict kernel latencies for JSONL cases")
    _add_gpu_args(p)
    p.add_argument("--input", required=True, help="JSONL file of kernel cases ('-' for stdin)")
    p.add_argument("--output", help="write JSONL here instead of stdout")
    p.set_defaults(func=cmd_predict_kernels)

    p = sub.add_parser("explain", help="tasks, waves, imbalance and per-pipe demand of one kernel")
    _add_gpu_args(p)
    p.add_argument("kernel", help="one kernel case as a JSON object")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("bench", help="prediction speed: cases per second and single-call latency")
    _add_gpu_args(p, required=False)
    p.set_defaults(gpu="h100-sxm")
    p.add_argument("--lines", type=int_at_least(1), default=100_000, help="cases per measured stream")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("train", help="fit the per-family efficiency models on measured rows")
    _add_gpu_args(p, required=False)
    p.add_argument("paths", nargs="*", default=["data"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int_at_least(1),
                   help="training passes for every family, at weight decay 1e-5 (default: both chosen per family on "
                        "held-back rows: passes doubling from 150, then the decay rising from 1e-5, while the error falls)")
    p.add_argument("--output", help="folder for the weights (default: the package's models/)")
    p.add_argument("--jobs", type=int_at_least(1), default=min(2, os.cpu_count() or 1),
                   help="families fitted at once, one process and one thread each (default: 2, or 1 on one core); "
                        "the weights do not depend on it")
    p.add_argument("--interval-calibration", nargs="+", metavar="PATH",
                   help="other GPUs' measurements (not trained on) that set how much wider the interval is on a "
                        "die the models never saw")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="latency error of the learned model and the baselines on measured rows")
    _add_gpu_args(p, required=False)
    p.add_argument("paths", nargs="+")
    p.add_argument("--baseline-train", nargs="+", metavar="PATH",
                   help="rows to train the NeuSight-style baseline on (the shipped models' training rows)")
    p.add_argument("--leave-one-gpu-out", action="store_true",
                   help="train without each die in turn and test on it (instead of using the shipped models)")
    from synperf.kernels import families
    p.add_argument("--family", action="append", choices=sorted(families()),
                   help="only rows of this kernel family (repeatable; default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", metavar="DIR", help="also write DIR/report.md, report.json and a plot per family")
    p.set_defaults(func=cmd_eval)

    data = sub.add_parser("data", help="measured datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("summary", help="rows per (gpu, family, dtype, library, source)")
    p.add_argument("paths", nargs="*", default=["data"], help="parquet files or folders (default: data/)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_summary)
    p = data.add_parser("ceiling-check", help="ceiling vs measured latency per GPU and family")
    _add_gpu_args(p, required=False)
    p.add_argument("paths", nargs="*", default=["data"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_ceiling)

    p = data.add_parser("repeatability", help="how far repeated measurements of the same case land apart")
    p.add_argument("paths", nargs="*", default=["data"], help="parquet files or folders (default: data/)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_repeatability)

    p = data.add_parser("import", help="read public measurements (aiconfigurator, vidur, pipeweave) into parquet")
    p.add_argument("source", choices=("aiconfigurator", "vidur", "pipeweave"))
    p.add_argument("path", help="the source's folder, e.g. ../shared/data/aiconfigurator")
    p.add_argument("--output", required=True, help="parquet file to write")
    p.add_argument("--limit", type=int_at_least(1), help="read at most this many source rows")
    p.set_defaults(func=cmd_data_import)
    p = data.add_parser("split", help="hash-split rows into training and held-out parquet files")
    p.add_argument("paths", nargs="+")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.set_defaults(func=cmd_data_split)
    p = data.add_parser("fit-priors", help="fit the analytical estimator's efficiency priors")
    _add_gpu_args(p, required=False)
    p.add_argument("paths", nargs="+")
    p.add_argument("--output", required=True, help="e.g. src/synperf/kernels/efficiency_priors.json")
    p.set_defaults(func=cmd_data_fit_priors)
    p = data.add_parser("gemm-tiles", help="build a cuBLAS tile table from profiled GEMM rows")
    p.add_argument("paths", nargs="+")
    p.add_argument("--output", required=True, help="e.g. src/synperf/kernels/tiles/gemm_hopper.json")
    p.add_argument("--heuristic", action="append",
                   help="cuBLASLt heuristic answers (python -m synperf.profile.cublaslt_query) for more shapes")
    p.set_defaults(func=cmd_data_gemm_tiles)

    p = data.add_parser("moe-configs", help="bundle the tuned fused-MoE configs vLLM and SGLang ship")
    _add_gpu_args(p, required=False)
    p.add_argument("--vllm", help="vLLM's package folder (site-packages/vllm or an unpacked wheel's vllm/)")
    p.add_argument("--sglang", help="SGLang's package folder (site-packages/sglang or an unpacked wheel's sglang/)")
    p.add_argument("--sglang-triton", default="3.5.1",
                   help="the Triton version SGLang runs with: its config folder is searched first (default 3.5.1)")
    p.add_argument("--output", required=True, help="e.g. src/synperf/kernels/tiles/moe_engine_configs.json")
    p.set_defaults(func=cmd_data_moe_configs)

    p = data.add_parser("register-table", help="bundle a Triton register census (python -m synperf.profile.register_census)")
    p.add_argument("path", help="the census parquet, e.g. data/h200-system/moe_registers.parquet")
    p.add_argument("--output", required=True, help="e.g. src/synperf/kernels/tiles/moe_registers.json")
    p.set_defaults(func=cmd_data_register_table)

    sim = sub.add_parser("simulate", help="end-to-end latency of a model (docs/end-to-end.md)")
    sim_sub = sim.add_subparsers(dest="simulate_command", required=True)
    p = sim_sub.add_parser("batch", help="one static batch: prefill, then decode steps (bench_one_batch semantics)")
    _add_gpu_args(p)
    p.add_argument("--model", required=True, help="bundled model id (llama-3.1-8b, ...) or a config.json path")
    p.add_argument("--tp", default="1", help="tensor-parallel size (default 1)")
    p.add_argument("--pp", default="1", help="pipeline-parallel size (stages run one after another)")
    p.add_argument("--framework", required=True, help="sglang or vllm")
    p.add_argument("--prompt-lens", required=True, help="comma-separated prompt lengths, e.g. 2648,3740")
    p.add_argument("--output-len", required=True, help="output tokens per request")
    p.add_argument("--host-us-per-launch", help=HOST_RATE_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_simulate_batch)
    p = sim_sub.add_parser("validate", help="synperf against measured reference-engine batches (docs/end-to-end.md)")
    _add_gpu_args(p, required=False)
    p.add_argument("--data", help="reference-engine parquet (default data/h200-system/e2e_reference.parquet)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_simulate_validate)
    p = sim_sub.add_parser("serve", help="continuous batching (vLLM V1-style scheduler): TTFT, TPOT, throughput")
    _add_gpu_args(p)
    _add_serve_workload_args(p)
    p.set_defaults(func=cmd_simulate_serve)
    p = sim_sub.add_parser("compare", help="the same serving workload on several GPUs: throughput, latency,"
                                           " cost per million tokens")
    p.add_argument("--gpus", required=True, help="comma-separated replicas, GPU, GPU:TP or GPU:auto (every TP of 1,"
                                                 " 2, 4, 8 the model fits at); short ids, CUDA names or spec YAML"
                                                 " paths; TP default --tp. E.g. h100-sxm:auto,h200:2,l40s:8")
    p.add_argument("--gpu-spec", action="append", default=[], metavar="FILE",
                   help="extra GPU spec YAML file(s); see docs/gpu-specs.md")
    p.add_argument("--price-per-hour", help="USD per GPU-hour, e.g. h100-sxm=2.99,h200=3.79: adds the cost of a"
                                            " million output tokens and ranks by it")
    p.add_argument("--slo-ttft-p99-ms", help="with --slo-tpot-p99-ms or alone: run each replica at the heaviest"
                                             " multiple of the workload's arrival rate that keeps p99 TTFT within it")
    p.add_argument("--slo-tpot-p99-ms", help="the same for p99 TPOT (time per output token)")
    _add_serve_workload_args(p)
    p.set_defaults(func=cmd_simulate_compare)

    try:
        from synperf.profile.cli import add_profile_parser
    except ImportError:
        pass
    else:
        add_profile_parser(sub)
    return parser


def _add_serve_workload_args(p: argparse.ArgumentParser) -> None:
    """The model, engine and requests of ``simulate serve`` and ``simulate compare``."""
    p.add_argument("--model", required=True, help="bundled model id (llama-3.1-8b, ...) or a config.json path")
    p.add_argument("--tp", default="1", help="tensor-parallel size (default 1)")
    p.add_argument("--framework", required=True, help="vllm or sglang (kernel choices; the scheduler is vLLM's)")
    p.add_argument("--rate", help="Poisson arrival rate, requests per second")
    p.add_argument("--num-requests", help="number of Poisson requests")
    for what in ("prompt", "output"):
        p.add_argument(f"--{what}-len", help=f"fixed {what} length")
        p.add_argument(f"--{what}-len-range", help=f"{what} lengths uniform in A,B (inclusive)")
    p.add_argument("--trace", help="JSONL or JSON list of {arrival_time, prompt_tokens, output_tokens}")
    p.add_argument("--max-num-seqs", default="256")
    p.add_argument("--max-num-batched-tokens", default="8192")
    p.add_argument("--gpu-memory-utilization", default="0.9")
    p.add_argument("--seed", default="0")
    p.add_argument("--host-us-per-launch", help=HOST_RATE_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON object (serve: with the timeline)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SynperfError as exc:
        print(f"synperf: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # An output path that cannot be written (missing folder, permissions, disk full): the
        # user's environment, never a bug, so one line like any other input error.
        print(f"synperf: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
