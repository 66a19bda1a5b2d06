"""Flag checks and output of ``synperf simulate batch`` (kept out of cli.py, which only wires it).
Every bad flag is one SynperfError naming the flag; the CLI prints it on one line."""

from __future__ import annotations

import json

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


def run_simulate_batch(args, registry) -> int:
    from synperf.workloads.engines import FRAMEWORKS
    from synperf.workloads.model import load_model
    from synperf.workloads.static_batch import format_result, simulate_batch

    if _int_flag(args.pp, "--pp", MAX_TP) != 1:
        raise SynperfError(f"--pp: only 1 is supported for now (pipeline parallelism is not modelled), got {args.pp}")
    tp = _int_flag(args.tp, "--tp", MAX_TP)
    if args.framework not in FRAMEWORKS:
        raise SynperfError(f"--framework: must be one of {', '.join(FRAMEWORKS)}, got {args.framework!r}")
    prompts = parse_lens(args.prompt_lens)
    output_len = _int_flag(args.output_len, "--output-len", MAX_OUTPUT)
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
    result = simulate_batch(model, gpu, tp, args.framework, prompts, output_len)
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
    else:
        print(format_result(result))
    return 0
