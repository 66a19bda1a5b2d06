"""CLI hook: ``synperf profile ...`` (add_profile_parser) or
``python -m synperf.profile ...`` (main)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from synperf.demand import CACHE_STATES
from synperf.validate import int_at_least

from .cases import FAMILIES


def _families(values: Optional[List[str]]) -> List[str]:
    fams: List[str] = []
    for v in values or []:
        fams.extend(x.strip() for x in v.split(",") if x.strip())
    return fams


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--family", action="append", help=f"family to plan (repeatable or comma list): {', '.join(FAMILIES)}; "
                   "rmsnorm_qk plans RMSNorm calls of the per-head q/k-norm shape")
    p.add_argument("--n", type=int, default=100, help="cases per family (plans)")
    p.add_argument("--seed", type=int, default=0, help="plan seed")
    p.add_argument("--library", default=None, help="restrict plans to one library")
    p.add_argument("--dtype", default=None, help="restrict plans to one dtype")
    p.add_argument("--input", default=None, help="cases.jsonl (one case per line) instead of plans")
    p.add_argument("--out", default=None, help="output parquet path")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--time-budget-s", type=float, default=None)
    p.add_argument("--chunk-size", type=int, default=32, help="cases per profiler session / parquet write")
    p.add_argument("--mem-cap-gb", type=float, default=40.0, help="skip cases whose inputs exceed this")
    p.add_argument("--no-resume", action="store_true", help="measure ids already in --out again (rows replaced)")
    p.add_argument("--cache", choices=CACHE_STATES, default=None,
                   help="L2 state for planned cases and for input lines without one: cold (default; operands "
                        "evicted by a read-only flush), cold_dirty (a writing flush leaves dirty lines), warm")
    p.add_argument("--retry-errors", action="store_true", help="retry ids recorded as unsupported / over the cap")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--compile-workers", type=int_at_least(0), default=0,
                   help="processes that run each block of cases once, untimed, before it is timed, so Triton/JIT "
                        "kernels compile in parallel (nothing else runs on the GPU while cases are timed)")
    p.add_argument("--floor", action="store_true", help="print measure_device_floor() JSON and exit")
    p.add_argument("--counters", action="store_true",
                   help="read hardware counters with Nsight Compute (ncu) instead of timing; --out gets one row per kernel")
    p.add_argument("--dry-run", action="store_true", help="print the cases as JSON lines, measure nothing")
    return p


def add_profile_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("profile", help="measure kernel latencies on this machine's NVIDIA GPU")
    _configure(p)
    p.set_defaults(func=run_profile)
    return p


def _err(msg: str) -> int:
    print(f"synperf profile: error: {msg}", file=sys.stderr)
    return 2


def _load_cases(args):
    if args.input:
        cases = []
        with open(args.input, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    case = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{args.input}:{i}: not JSON ({e})")
                if args.cache and isinstance(case, dict):
                    case.setdefault("cache", args.cache)
                cases.append(case)
        return cases
    fams = _families(args.family)
    if not fams:
        raise ValueError("give --family (one or more) or --input cases.jsonl")
    from .plans import GENERATORS, plan_many

    bad = [f for f in fams if f not in GENERATORS]
    if bad:
        raise ValueError(f"unknown family {bad[0]!r}; expected one of {', '.join(GENERATORS)}")

    cases = plan_many(fams, args.n, args.seed, library=args.library, dtype=args.dtype)
    return [dict(case, cache=args.cache) for case in cases] if args.cache else cases


def _check_gpu():
    try:
        import torch
    except Exception as e:
        return f"torch is not importable ({type(e).__name__}: {e}); install torch with CUDA support"
    try:
        import triton  # noqa: F401
    except Exception as e:
        return f"triton is not importable ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (torch.cuda.is_available() is False); run on an NVIDIA GPU machine"
    return None


def run_profile(args) -> int:
    try:
        if not args.floor:
            cases = _load_cases(args)
        if args.dry_run and not args.floor:
            for c in cases:
                print(json.dumps(c, sort_keys=True))
            return 0
        problem = _check_gpu()
        if problem:
            return _err(problem)
        if args.floor:
            from .harness import measure_device_floor

            print(json.dumps(measure_device_floor(), indent=2))
            return 0
        if not args.out:
            return _err("--out PATH.parquet is required")
        if args.counters:
            from .counters import run_counters

            print(json.dumps(run_counters(cases, args.out, args.time_budget_s)))
            return 0
        try:
            import pyarrow  # noqa: F401
        except Exception:
            return _err("pyarrow is not importable; install pyarrow to write parquet")
        from .harness import profile_cases

        summary = profile_cases(
            cases,
            args.out,
            reps=args.reps,
            warmup=args.warmup,
            time_budget_s=args.time_budget_s,
            resume=not args.no_resume,
            progress=not args.quiet,
            chunk_size=args.chunk_size,
            mem_cap_gb=args.mem_cap_gb,
            retry_errors=args.retry_errors,
            compile_workers=args.compile_workers,
        )
        print(json.dumps(summary))
        return 0
    except KeyboardInterrupt:
        return _err("interrupted (completed chunks are saved; rerun to resume)")
    except (OSError, ValueError, RuntimeError) as e:
        return _err(f"{type(e).__name__}: {e}")


def main(argv=None) -> int:
    p = _configure(argparse.ArgumentParser(prog="python -m synperf.profile", description="synperf GPU profiling harness"))
    return run_profile(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
