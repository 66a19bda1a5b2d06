"""Flag checks and output of ``synperf simulate batch`` (kept out of cli.py, which only wires it).
Every bad flag is one SynperfError naming the flag; the CLI prints it on one line."""

from __future__ import annotations

import json
from dataclasses import asdict

from synperf.errors import InputError, SynperfError

MAX_BATCH = 4096
MAX_PROMPT = 1_048_576
MAX_OUTPUT = 65_536
MAX_TP = 64
MAX_TOTAL_TOKENS = 10_000_000


def _int_flag(text: str, flag: str, hi: int) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise SynperfError(f"{flag}: must be a positive integer, got {text!r}") from None
    if not 1 <= value <= hi:
        raise SynperfError(f"{flag}: must be between 1 and {hi}, got {value}")
    return value


def parse_lens(text: str, flag: str = "--prompt-lens") -> list[int]:
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise SynperfError(f"{flag}: must be a comma-separated list of positive integers, got {text!r}")
    if len(parts) > MAX_BATCH:
        raise SynperfError(f"{flag}: {len(parts)} prompts, at most {MAX_BATCH}")
    lens = [_int_flag(p, flag, MAX_PROMPT) for p in parts]
    if sum(lens) > MAX_TOTAL_TOKENS:
        raise SynperfError(f"{flag}: {sum(lens)} prompt tokens in all, at most {MAX_TOTAL_TOKENS}")
    return lens


def _model_and_gpu(args, registry, tp: int):
    """The --model and --gpu a simulation runs on, with TP checked against the model's heads."""
    from synperf.workloads.model import load_model
    try:
        model = load_model(args.model)
    except InputError as exc:
        raise SynperfError(f"--model: {exc}") from None
    try:
        gpu = registry(args).get(args.gpu)
    except SynperfError as exc:
        raise SynperfError(f"--gpu: {exc}") from None
    try:
        model.check_tp(tp, "--tp")
    except InputError as exc:
        raise SynperfError(str(exc)) from None
    return model, gpu


def run_simulate_batch(args, registry) -> int:
    from synperf.workloads.engines import FRAMEWORKS
    from synperf.workloads.static_batch import format_result, simulate_batch

    pp = _int_flag(args.pp, "--pp", MAX_TP)
    tp = _int_flag(args.tp, "--tp", MAX_TP)
    if args.framework not in FRAMEWORKS:
        raise SynperfError(f"--framework: must be one of {', '.join(FRAMEWORKS)}, got {args.framework!r}")
    prompts = parse_lens(args.prompt_lens)
    output_len = _int_flag(args.output_len, "--output-len", MAX_OUTPUT)
    model, gpu = _model_and_gpu(args, registry, tp)
    if model.num_layers % pp:
        raise SynperfError(f"--pp: {pp} does not divide {model.name}'s {model.num_layers} layers")
    result = simulate_batch(model, gpu, tp, args.framework, prompts, output_len, pp=pp,
                            overhead=_overhead(args.host_us_per_launch))
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
    else:
        print(format_result(result))
    return 0


def _overhead(host_us_per_launch):
    """The bundled engine overhead, at the host issue rate given by ``--host-us-per-launch``."""
    from synperf.workloads.calibration import bundled_overhead

    overhead = bundled_overhead()
    if host_us_per_launch is None:
        return overhead
    return overhead.with_host_rate(_float_flag(host_us_per_launch, "--host-us-per-launch", 0.0, 10_000.0))


def run_simulate_validate(args, registry) -> int:
    """synperf against the reference engine's measured batches (leave-one-model-out overhead)."""
    from synperf.workloads import calibration

    try:
        import pandas as pd
    except ImportError:
        raise SynperfError("simulate validate reads parquet: pip install 'synperf[data]'") from None
    path = args.data or str(calibration.DEFAULT_DATA)
    try:
        rows = pd.read_parquet(path).to_dict("records")
    except (OSError, ValueError) as exc:
        raise SynperfError(f"--data: cannot read {path} ({exc.__class__.__name__})") from None
    missing = {"model", "num_layers", "tp", "prompt_lens", "output_len", "prefill_ms", "decode_step_median_ms",
               "total_ms", "prefill_kernels", "decode_kernels", "gpu_name"} - set(rows[0] if rows else {})
    if missing:
        raise SynperfError(f"--data: {path} is not reference-engine output (missing {', '.join(sorted(missing))})")
    try:
        rows = calibration.check_rows(rows)
        gpu = registry(args).get(str(rows[0]["gpu_name"]))
        # the bundled repeats widen the interval of the bundled batches only
        repeats = calibration.bundled_repeat_rows() if args.data is None else []
        piecewise = calibration.bundled_piecewise_rows() if args.data is None else []
        mixed = calibration.bundled_mixed_rows() if args.data is None else []
        new_models = calibration.bundled_new_model_rows() if args.data is None else []
        report = calibration.validate(rows, gpu, repeats, piecewise, mixed, new_models)
    except SynperfError as exc:
        raise SynperfError(f"--data {path}: {exc}") from None
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "per_row"} | {"per_row": report["per_row"]}, indent=1))
    else:
        print(calibration.format_validation(report))
    return 0


# ------------------------------------------------------------------------------ simulate serve
MAX_REQUESTS = 1_000_000


def _float_flag(text: str, flag: str, lo: float, hi: float, lo_open: bool = True) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise SynperfError(f"{flag}: must be a number, got {text!r}") from None
    if not (value > lo if lo_open else value >= lo) or not value <= hi:
        raise SynperfError(f"{flag}: must be {'above' if lo_open else 'at least'} {lo:g} and at most {hi:g}, got {text}")
    return value


def _len_range(fixed, rng, flag: str, hi: int) -> tuple[int, int]:
    if fixed is not None and rng is not None:
        raise SynperfError(f"{flag}-range: give {flag} or {flag}-range, not both")
    if rng is None:
        if fixed is None:
            raise SynperfError(f"{flag}: give {flag} N or {flag}-range A,B with --rate")
        n = _int_flag(fixed, flag, hi)
        return n, n
    parts = str(rng).split(",")
    if len(parts) != 2:
        raise SynperfError(f"{flag}-range: must be A,B, got {rng!r}")
    a, b = (_int_flag(p, f"{flag}-range", hi) for p in parts)
    if a > b:
        raise SynperfError(f"{flag}-range: A must not exceed B, got {rng!r}")
    return a, b


def _serve_workload(args) -> tuple[list, dict]:
    """The requests and scheduler options of ``simulate serve`` and ``simulate compare``."""
    from synperf.workloads.engines import FRAMEWORKS
    from synperf.workloads.serving import load_trace, poisson_requests

    if args.framework not in FRAMEWORKS:
        raise SynperfError(f"--framework: must be one of {', '.join(FRAMEWORKS)}, got {args.framework!r}")
    options = {"max_num_seqs": _int_flag(args.max_num_seqs, "--max-num-seqs", 65_536),
               "max_num_batched_tokens": _int_flag(args.max_num_batched_tokens, "--max-num-batched-tokens", MAX_PROMPT),
               "gpu_memory_utilization": _float_flag(args.gpu_memory_utilization, "--gpu-memory-utilization", 0.0, 1.0)}
    try:
        seed = int(str(args.seed).strip())
    except ValueError:
        raise SynperfError(f"--seed: must be an integer, got {args.seed!r}") from None
    if not 0 <= seed < 2 ** 63:
        raise SynperfError(f"--seed: must be between 0 and 2^63-1, got {seed}")
    synthetic = (args.rate, args.num_requests, args.prompt_len, args.prompt_len_range, args.output_len,
                 args.output_len_range)
    if args.trace is not None:
        if any(x is not None for x in synthetic):
            raise SynperfError("--trace: give either --trace or --rate/--num-requests/lengths, not both")
        try:
            requests = load_trace(args.trace)
        except InputError as exc:
            raise SynperfError(f"--trace: {exc}") from None
    else:
        if args.rate is None:
            raise SynperfError("--rate: give --rate R --num-requests N (or --trace FILE)")
        rate = _float_flag(args.rate, "--rate", 0.0, 1e6)
        if args.num_requests is None:
            raise SynperfError("--num-requests: required with --rate")
        num = _int_flag(args.num_requests, "--num-requests", MAX_REQUESTS)
        prompt = _len_range(args.prompt_len, args.prompt_len_range, "--prompt-len", MAX_PROMPT)
        output = _len_range(args.output_len, args.output_len_range, "--output-len", MAX_OUTPUT)
        requests = poisson_requests(num, rate, prompt, output, seed)
    options["overhead"] = _overhead(args.host_us_per_launch)
    return requests, options


def run_simulate_serve(args, registry) -> int:
    from synperf.workloads.serving import format_serve, simulate_serving

    tp = _int_flag(args.tp, "--tp", MAX_TP)
    requests, options = _serve_workload(args)
    model, gpu = _model_and_gpu(args, registry, tp)
    result = simulate_serving(model, gpu, tp, args.framework, requests, **options)
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
    else:
        print(format_serve(result))
    return 0


# ------------------------------------------------------------------------------ simulate compare
MAX_COMPARED = 64


AUTO_TPS = (1, 2, 4, 8)


def _compared_replicas(text: str, gpus, model, default_tp: int, memory_utilization: float) -> list:
    """``--gpus``: GPU, GPU:TP or GPU:auto items (the TP defaults to ``--tp``), each a replica to
    compare; ``auto`` stands for every TP of 1, 2, 4 and 8 that splits the model's heads and leaves
    room for its weights (``serving.weights_fit``)."""
    from synperf.workloads.serving import weights_fit

    items = [n.strip() for n in str(text).split(",")]
    if not items or any(not n for n in items):
        raise SynperfError(f"--gpus: must be a comma-separated list of GPUs (GPU, GPU:TP or GPU:auto), got {text!r}")
    if len(items) > MAX_COMPARED:
        raise SynperfError(f"--gpus: {len(items)} GPUs, at most {MAX_COMPARED}")
    replicas = []
    for item in items:
        name, sep, tp_text = item.rpartition(":")
        tp_text = tp_text.strip().lower()
        if not sep or not (tp_text.isdigit() or tp_text == "auto"):     # no TP given (a spec path may hold a colon)
            name, tp_text = item, None
        try:
            spec = gpus.get(name.strip())
        except SynperfError as exc:
            raise SynperfError(f"--gpus: {exc}") from None
        if tp_text == "auto":
            tps = [tp for tp in AUTO_TPS if model.splits_at(tp) and weights_fit(model, spec, tp, memory_utilization)]
            if not tps:
                raise SynperfError(f"--gpus {item}: {model.name.removesuffix('.json')} fits {spec.id} at none of"
                                   f" TP {', '.join(map(str, AUTO_TPS))}")
        else:
            tp, tp_flag = ((default_tp, "--tp") if tp_text is None else
                           (_int_flag(tp_text, f"--gpus {item}", MAX_TP), f"--gpus {item}"))
            try:
                model.check_tp(tp, tp_flag)
            except InputError as exc:
                raise SynperfError(str(exc)) from None
            tps = [tp]
        for tp in tps:
            if any(s.id == spec.id and t == tp for s, t in replicas):
                raise SynperfError(f"--gpus: {spec.id} at TP {tp} is listed twice")
            replicas.append((spec, tp))
    return replicas


def _prices(text: str | None, replicas: list, gpus) -> dict[str, float]:
    """``--price-per-hour GPU=USD,...``: USD per GPU-hour for some or all of the compared GPUs."""
    if text is None:
        return {}
    prices = {}
    for item in str(text).split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SynperfError(f"--price-per-hour: each item is GPU=USD (e.g. h100-sxm=2.99), got {item.strip()!r}")
        try:
            spec = gpus.get(name.strip())
        except SynperfError as exc:
            raise SynperfError(f"--price-per-hour: {exc}") from None
        if spec.id not in {s.id for s, _ in replicas}:
            raise SynperfError(f"--price-per-hour: {spec.id} is not one of the --gpus compared")
        if spec.id in prices:
            raise SynperfError(f"--price-per-hour: {spec.id} has two prices")
        prices[spec.id] = _float_flag(value, f"--price-per-hour {spec.id}", 0.0, 1000.0)
    return prices


def run_simulate_compare(args, registry) -> int:
    from synperf.workloads.compare import Slo, compare_gpus, format_compare
    from synperf.workloads.model import load_model

    tp = _int_flag(args.tp, "--tp", MAX_TP)
    requests, options = _serve_workload(args)
    try:
        model = load_model(args.model)
    except InputError as exc:
        raise SynperfError(f"--model: {exc}") from None
    gpus = registry(args)
    replicas = _compared_replicas(args.gpus, gpus, model, tp, options["gpu_memory_utilization"])
    prices = _prices(args.price_per_hour, replicas, gpus)
    slo = None
    if args.slo_ttft_p99_ms is not None or args.slo_tpot_p99_ms is not None:
        slo = Slo(*(None if value is None else _float_flag(value, flag, 0.0, 1e7)
                    for value, flag in ((args.slo_ttft_p99_ms, "--slo-ttft-p99-ms"),
                                        (args.slo_tpot_p99_ms, "--slo-tpot-p99-ms"))))
    try:
        offers = compare_gpus(model, replicas, args.framework, requests, prices, slo, **options)
    except InputError as exc:
        raise SynperfError(f"--slo-ttft-p99-ms/--slo-tpot-p99-ms: {exc}") from None
    if args.json:
        print(json.dumps({"model": model.name.removesuffix(".json"), "framework": args.framework,
                          "requests": len(requests), "slo": asdict(slo) if slo else None,
                          "replicas": [o.as_dict() for o in offers]}, indent=1))
    else:
        source = f"trace {args.trace}" if args.trace else f"Poisson {args.rate}/s"
        target = "" if slo is None else ", each at the heaviest rate within p99 " + " and ".join(
            f"{name} <= {value:g} ms" for name, value in (("TTFT", slo.ttft_p99_ms), ("TPOT", slo.tpot_p99_ms))
            if value is not None)
        print(format_compare(offers, f"{model.name.removesuffix('.json')}, {args.framework}:"
                                     f" {len(requests)} requests ({source}), the same on every replica{target}"))
    return 0
