"""GPU profiling harness: measure kernel latencies of cases, at the L2 state each
case's ``cache`` names, with CUPTI (torch.profiler) and stream the results to parquet.

Per chunk of cases one profiler session records, for each case::

    build inputs, warm-up x `warmup`        (ignored: before the first flush)
    (synperf_l2_flush*, op) x `reps`        (one trace segment per rep)
    synperf_case_end                        (closes the last segment)

The chrome trace is then cut at the flush / marker kernels (see trace.py);
a rep's latency is the sum of the durations of its GPU kernels (plus any
memset / memcpy activity).
"""

from __future__ import annotations

import datetime as _dt
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, Iterable, List, Optional

import torch
import triton
import triton.language as tl

from . import trace as _trace
from .cases import case_id, case_to_row, estimate_bytes, median, normalize_case
from .ops import UnsupportedCase, build_op, case_seed
from .tables import append_jsonl, append_rows, read_error_ids, read_ids

MIN_FLUSH_BYTES = 256 << 20

# ---------------------------------------------------------------- kernels


@triton.jit
def synperf_l2_flush(buf_ptr, n, value, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    vals = tl.full([BLOCK], 0, tl.int32) + value
    tl.store(buf_ptr + offs, vals, mask=offs < n)


@triton.jit
def synperf_l2_flush_read(buf_ptr, n, out_ptr, BLOCK: tl.constexpr):
    # Reads only: the L2 is left holding clean lines, so the timed kernel pays no write-back of
    # the flush's data (one int per block is stored so the loads are not optimised away).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    vals = tl.load(buf_ptr + offs, mask=offs < n, other=0)
    tl.store(out_ptr + tl.program_id(0), tl.sum(vals, axis=0))


@triton.jit
def synperf_l2_flush_none(buf_ptr):
    # Warm cases: only the rep boundary the trace splitter needs; the previous rep's operands stay in L2.
    pass


@triton.jit
def synperf_case_end(buf_ptr, value):
    tl.store(buf_ptr, value)


@triton.jit
def synperf_empty_kernel(buf_ptr):
    pass


@triton.jit
def synperf_pointer_chase(next_ptr, start_ptr, out_ptr, steps):
    idx = tl.load(start_ptr)
    for _ in range(steps):
        idx = tl.load(next_ptr + idx)
    tl.store(out_ptr, idx)


# What runs between reps for each cache state of a case (synperf.demand.CACHE_STATES).
FLUSH_OF_CACHE = {"cold": "read", "cold_dirty": "write", "warm": "none"}


class L2Flusher:
    """Sets the L2 state before every rep, as the case's ``cache`` asks. ``read`` (cold) loads 4x
    the L2 and leaves it holding clean lines, the state a layer's weights meet in a real forward
    pass; ``write`` (cold_dirty) stores 4x the L2 instead, leaving it full of dirty lines the timed
    kernel must write back as it evicts them (what a benchmark flushing by ``zero_()`` measures);
    ``none`` (warm) launches only an empty delimiter kernel."""
    BLOCK = 4096

    def __init__(self, device):
        props = torch.cuda.get_device_properties(device)
        l2 = int(getattr(props, "L2_cache_size", 0) or 0) or (50 << 20)
        self.nbytes = max(MIN_FLUSH_BYTES, 4 * l2)
        self.n = self.nbytes // 4
        self.buf = torch.empty(self.n, dtype=torch.int32, device=device)
        self.marker_buf = torch.zeros(1, dtype=torch.int32, device=device)
        self.grid = (triton.cdiv(self.n, self.BLOCK),)
        self.sums = torch.empty(self.grid[0], dtype=torch.int32, device=device)
        self.count = 0

    def flush(self, cache: str = "cold"):
        self.count += 1
        mode = FLUSH_OF_CACHE[cache]
        if mode == "read":
            synperf_l2_flush_read[self.grid](self.buf, self.n, self.sums, BLOCK=self.BLOCK, num_warps=8)
        elif mode == "write":
            synperf_l2_flush[self.grid](self.buf, self.n, self.count & 0x7FFFFFFF, BLOCK=self.BLOCK, num_warps=8)
        else:
            synperf_l2_flush_none[(1,)](self.marker_buf, num_warps=1)

    def marker(self):
        synperf_case_end[(1,)](self.marker_buf, 1, num_warps=1)


# ------------------------------------------------------------ environment


class ClockReader:
    """Current SM / memory clocks via NVML (pynvml / nvidia-ml-py), else
    nvidia-smi, else None."""

    def __init__(self, device_index: int):
        self.nvml = None
        self.handle = None
        self.smi = shutil.which("nvidia-smi")
        self.index = device_index
        self.driver_version = None
        try:
            import pynvml  # provided by nvidia-ml-py

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = self._nvml_handle(pynvml, device_index)
            dv = pynvml.nvmlSystemGetDriverVersion()
            self.driver_version = dv.decode() if isinstance(dv, bytes) else str(dv)
        except Exception:
            self.nvml = None
        if self.driver_version is None and self.smi:
            out = self._smi("driver_version")
            self.driver_version = out[0] if out else None

    @staticmethod
    def _nvml_handle(pynvml, device_index):
        try:
            uuid = str(torch.cuda.get_device_properties(device_index).uuid)
            if uuid:
                return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
        except Exception:
            pass
        idx = device_index
        vis = os.environ.get("CUDA_VISIBLE_DEVICES")
        if vis:
            parts = [p.strip() for p in vis.split(",") if p.strip()]
            if device_index < len(parts) and parts[device_index].isdigit():
                idx = int(parts[device_index])
        return pynvml.nvmlDeviceGetHandleByIndex(idx)

    def _smi_index(self) -> str:
        vis = os.environ.get("CUDA_VISIBLE_DEVICES")
        if vis:
            parts = [p.strip() for p in vis.split(",") if p.strip()]
            if self.index < len(parts):
                return parts[self.index]
        return str(self.index)

    def _smi(self, query: str) -> Optional[List[str]]:
        try:
            r = subprocess.run(
                [self.smi, f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i", self._smi_index()],
                capture_output=True, text=True, timeout=10,
            )
            if r.returncode != 0:
                return None
            return [x.strip() for x in r.stdout.strip().splitlines()[0].split(",")]
        except Exception:
            return None

    @property
    def cheap(self) -> bool:
        return self.nvml is not None

    def sample(self):
        if self.nvml is not None:
            try:
                sm = self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)
                mem = self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_MEM)
                return float(sm), float(mem)
            except Exception:
                pass
        if self.smi:
            out = self._smi("clocks.sm,clocks.mem")
            if out and len(out) == 2:
                try:
                    return float(out[0]), float(out[1])
                except ValueError:
                    pass
        return None, None


def environment_info(device) -> Dict[str, Any]:
    idx = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(idx)
    clocks = ClockReader(idx)
    return {
        "gpu_name": torch.cuda.get_device_name(idx),
        "sm_count": int(props.multi_processor_count),
        "driver_version": clocks.driver_version,
        "cuda_version": torch.version.cuda,
        "torch_version": torch.__version__,
        "triton_version": triton.__version__,
        "source": "synperf-profile",
        "_clocks": clocks,
    }


# ---------------------------------------------------------------- helpers


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _error_record(case: Dict[str, Any], cid: str, kind: str, exc_or_msg: Any) -> Dict[str, Any]:
    if isinstance(exc_or_msg, BaseException):
        msg = f"{type(exc_or_msg).__name__}: {exc_or_msg}"
    else:
        msg = str(exc_or_msg)
    return {
        "id": cid,
        "family": case.get("family") if isinstance(case, dict) else None,
        "error_type": kind,
        "message": msg[:2000],
        "case": case,
        "timestamp": _now(),
    }


def _classify(e: BaseException) -> str:
    if isinstance(e, UnsupportedCase):
        return "unsupported"
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return "oom"
    return "error"


def _fmt_eta(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


# ------------------------------------------------------------------- main


def profile_cases(
    cases: Iterable[Dict[str, Any]],
    out_path: str,
    *,
    reps: int = 10,
    warmup: int = 3,
    time_budget_s: Optional[float] = None,
    resume: bool = True,
    progress: bool = True,
    chunk_size: int = 32,
    mem_cap_gb: float = 40.0,
    device: Optional[str] = None,
    retry_errors: bool = False,
    compile_workers: int = 0,
) -> Dict[str, Any]:
    """Measure every case and append one row per case to ``out_path``
    (parquet).  Failed cases go to ``out_path + '.errors.jsonl'``.

    compile_workers > 0: before each block of cases is timed, that many
    processes run every case of the block once (``_compile_cases``), so the
    Triton and JIT kernels it needs are compiled in parallel into the shared
    on-disk caches; the timed run then loads them instead of compiling one
    after another. Nothing else runs on the GPU while cases are timed.

    resume=True skips ids already in out_path (and ids recorded there as
    unsupported / over the memory cap, unless retry_errors).  resume=False
    measures everything again, replacing rows with the same id.
    Returns a summary dict."""
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available to torch: the profiling harness needs an NVIDIA GPU")
    if reps < 1:
        raise ValueError("reps must be >= 1")
    if compile_workers < 0:
        raise ValueError("compile_workers must be >= 0")
    dev = torch.device(device or f"cuda:{torch.cuda.current_device()}")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(dev)
    err_path = out_path + ".errors.jsonl"
    t_start = time.time()

    # ids + validation
    all_cases: List[tuple] = []
    invalid: List[Dict[str, Any]] = []
    for raw in cases:
        try:
            c = normalize_case(raw)
            cid = case_id(raw)
            c["id"] = cid
            all_cases.append((cid, c))
        except Exception as e:
            invalid.append(_error_record(raw, raw.get("id") if isinstance(raw, dict) else None, "invalid", e))
    append_jsonl(err_path, invalid)

    done: set = set()
    if resume:
        done |= read_ids(out_path)
        if not retry_errors:
            done |= read_error_ids(err_path)
    seen: set = set()
    pending = []
    for cid, c in all_cases:
        if cid in done or cid in seen:
            continue
        seen.add(cid)
        pending.append((cid, c))

    env = environment_info(dev)
    clocks: ClockReader = env.pop("_clocks")
    flusher = L2Flusher(dev)
    free, total_mem = torch.cuda.mem_get_info(dev)
    cap = min(mem_cap_gb * (1 << 30), 0.85 * free)

    n_total = len(pending)
    n_done = n_err = 0
    stopped = False
    tmpdir = tempfile.mkdtemp(prefix="synperf_trace_")
    last_print = 0.0
    compile_pool = (ProcessPoolExecutor(compile_workers, mp_context=multiprocessing.get_context("spawn"))
                    if compile_workers > 0 else None)
    compile_block = chunk_size * COMPILE_BLOCK_CHUNKS

    def over_budget() -> bool:
        return time_budget_s is not None and time.time() - t_start > time_budget_s

    def report(force=False):
        nonlocal last_print
        if not progress:
            return
        now = time.time()
        if not force and now - last_print < 2.0:
            return
        last_print = now
        el = now - t_start
        finished = n_done + n_err
        rate = finished / el if el > 0 else 0.0
        eta = (n_total - finished) / rate if rate > 0 else float("inf")
        print(
            f"[synperf profile] {finished}/{n_total} cases ({n_err} errors) "
            f"{rate:.2f} cases/s elapsed {_fmt_eta(el)} ETA {_fmt_eta(eta)}",
            file=sys.stderr, flush=True,
        )

    try:
        for start in range(0, n_total, chunk_size):
            if over_budget():
                stopped = True
                break
            if compile_pool is not None and start % compile_block == 0:
                t_compile = time.time()
                compiled = _compile_in_parallel(compile_pool, compile_workers, pending[start : start + compile_block],
                                                dev.index, min(cap, 0.8 * free / compile_workers))
                if progress:
                    print(f"[synperf profile] ran {compiled} cases untimed in {time.time() - t_compile:.1f} s "
                          f"({compile_workers} workers)", file=sys.stderr, flush=True)
                if over_budget():
                    stopped = True
                    break
            chunk = pending[start : start + chunk_size]
            rows, errs, hit_budget = _run_chunk(
                chunk, dev, flusher, clocks, env, reps, warmup, cap, over_budget, tmpdir
            )
            append_rows(out_path, rows)
            append_jsonl(err_path, errs)
            n_done += len(rows)
            n_err += len(errs)
            report(force=True)
            if hit_budget:
                stopped = True
                break
    finally:
        if compile_pool is not None:
            compile_pool.shutdown(cancel_futures=True)
        shutil.rmtree(tmpdir, ignore_errors=True)
        del flusher
        torch.cuda.empty_cache()

    summary = {
        "out_path": out_path,
        "errors_path": err_path,
        "requested": len(all_cases) + len(invalid),
        "invalid": len(invalid),
        "skipped_existing": len(all_cases) - n_total,
        "pending": n_total,
        "measured": n_done,
        "errors": n_err,
        "stopped_early": stopped,
        "elapsed_s": round(time.time() - t_start, 2),
    }
    if progress:
        print(f"[synperf profile] done: {json.dumps(summary)}", file=sys.stderr, flush=True)
    return summary


# Cases compiled ahead at a time (in chunks): a time budget then stops the run soon after its
# deadline instead of after compiling the whole plan.
COMPILE_BLOCK_CHUNKS = 16


def _compile_cases(cases: List[Dict[str, Any]], device_index: int, cap_bytes: float) -> int:
    """Worker process: run each case once, untimed, so that its kernels are compiled into the
    on-disk caches (Triton's, FlashInfer's JIT) the timing process reads. Cases above
    ``cap_bytes`` and failures are left to the timed run, which records them."""
    dev = torch.device("cuda", device_index)
    torch.cuda.set_device(dev)
    compiled = 0
    for case in cases:
        if estimate_bytes(case) > cap_bytes:
            continue
        try:
            torch.manual_seed(case_seed(case["id"]))
            build_op(case, dev).fn()
            torch.cuda.synchronize(dev)
            compiled += 1
        except Exception:  # noqa: BLE001 - the timed run meets the same failure and records it
            pass
    torch.cuda.empty_cache()
    return compiled


def _compile_in_parallel(pool: ProcessPoolExecutor, workers: int, block: List[tuple], device_index: int,
                         cap_bytes: float) -> int:
    """Spread a block of (id, case) over the pool, cases of the same config and shape next to each
    other so one worker compiles each kernel once; wait for all of them."""
    cases = sorted((c for _, c in block), key=lambda c: json.dumps({k: v for k, v in c.items() if k != "id"},
                                                                  sort_keys=True, default=str))
    size = -(-len(cases) // (4 * workers))   # about four slices a worker: the slow ones even out
    slices = [cases[i:i + size] for i in range(0, len(cases), size)]
    return sum(pool.map(_compile_cases, slices, [device_index] * len(slices), [cap_bytes] * len(slices)))


def _run_chunk(chunk, dev, flusher, clocks, env, reps, warmup, cap, over_budget, tmpdir):
    import warnings

    from torch.profiler import ProfilerActivity, profile

    warnings.filterwarnings("ignore", message=".*Profiler clears events.*")

    launch_log: List[int] = []
    ok: Dict[int, Dict[str, Any]] = {}
    errs: List[Dict[str, Any]] = []
    hit_budget = False
    chunk_clocks: List[tuple] = []

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for idx, (cid, case) in enumerate(chunk):
            if over_budget():
                hit_budget = True
                break
            est = estimate_bytes(case)
            if est > cap:
                errs.append(_error_record(case, cid, "memory_cap", f"estimated {est / 2**30:.1f} GiB > cap {cap / 2**30:.1f} GiB"))
                continue
            op = None
            try:
                torch.manual_seed(case_seed(cid))
                op = build_op(case, dev)
                for _ in range(warmup):
                    op.fn()
                torch.cuda.synchronize(dev)
                for _ in range(reps):
                    flusher.flush(case["cache"])
                    launch_log.append(idx)
                    op.fn()
                flusher.marker()
                if clocks.cheap or not chunk_clocks:
                    chunk_clocks.append(clocks.sample())  # sampled while the reps run
                torch.cuda.synchronize(dev)
                ok[idx] = dict(op.meta)
                ok[idx]["_clock"] = chunk_clocks[-1]
            except Exception as e:  # noqa: BLE001 - any failure is recorded, the run goes on
                errs.append(_error_record(case, cid, _classify(e), e))
                try:
                    flusher.marker()
                    torch.cuda.synchronize(dev)
                except Exception:
                    pass
            finally:
                op = None
                if est > (1 << 30) or (errs and errs[-1]["id"] == cid):
                    torch.cuda.empty_cache()
        torch.cuda.synchronize(dev)

    if not ok:
        return [], errs, hit_budget

    path = os.path.join(tmpdir, "trace.json")
    try:
        prof.export_chrome_trace(path)
        events = _trace.load_gpu_events(path, device=dev.index)
        grouped = _trace.assign_segments(_trace.split_reps(events), launch_log)
    except Exception as e:
        for idx in ok:
            cid, case = chunk[idx]
            errs.append(_error_record(case, cid, "trace", e))
        return [], errs, hit_budget
    finally:
        try:
            os.remove(path)
        except OSError:
            pass

    rows = []
    ts = _now()
    for idx, meta in ok.items():
        cid, case = chunk[idx]
        try:
            stats = _trace.summarize_reps(grouped.get(idx, []))
        except Exception as e:
            errs.append(_error_record(case, cid, "trace", e))
            continue
        row = case_to_row(case)
        sm, mem = meta.pop("_clock", (None, None))
        row.update(stats)
        row.update(meta)
        row.update({k: v for k, v in env.items()})
        row.update({"sm_clock_mhz": sm, "mem_clock_mhz": mem, "timestamp": ts,
                    "l2_flush": FLUSH_OF_CACHE[case["cache"]]})
        rows.append(row)
    return rows, errs, hit_budget


# ------------------------------------------------------------ device floor


def measure_device_floor(device: Optional[str] = None, copy_gib: float = 4.0, chase_mib: int = 256, chase_steps: int = 20000) -> Dict[str, Any]:
    """Device floor numbers: empty Triton kernel duration (CUPTI median, us),
    device-to-device copy bandwidth (GB/s, bytes read + written), and a
    pointer-chase DRAM latency estimate (ns per dependent load)."""
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available to torch")
    dev = torch.device(device or f"cuda:{torch.cuda.current_device()}")
    torch.cuda.set_device(dev)
    result: Dict[str, Any] = {"gpu_name": torch.cuda.get_device_name(dev)}

    # 1. empty kernel
    buf = torch.zeros(16, dtype=torch.int32, device=dev)
    for _ in range(10):
        synperf_empty_kernel[(1,)](buf, num_warps=1)
    torch.cuda.synchronize(dev)
    tmp = tempfile.mkdtemp(prefix="synperf_floor_")
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(200):
                synperf_empty_kernel[(1,)](buf, num_warps=1)
            torch.cuda.synchronize(dev)
        path = os.path.join(tmp, "floor.json")
        prof.export_chrome_trace(path)
        durs = [e["dur"] for e in _trace.load_gpu_events(path, device=dev.index) if "synperf_empty_kernel" in e["name"]]
        result["empty_kernel_us"] = median(durs) if durs else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # 2. copy bandwidth (CUDA events)
    nbytes = int(copy_gib * (1 << 30))
    free, _ = torch.cuda.mem_get_info(dev)
    while nbytes > (64 << 20) and 2 * nbytes > 0.9 * free:
        nbytes //= 2
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    src.fill_(7)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    result["copy_bw_gb_s"] = 2 * nbytes / median(times) / 1e9
    result["copy_bytes"] = nbytes
    del src, dst
    torch.cuda.empty_cache()

    # 3. pointer chase (one thread, dependent loads over a random cycle)
    try:
        n = (chase_mib << 20) // 8
        perm = torch.randperm(n, device=dev)
        nxt = torch.empty(n, dtype=torch.int64, device=dev)
        nxt[perm] = torch.roll(perm, -1)
        start = perm[:1].clone()
        out = torch.zeros(1, dtype=torch.int64, device=dev)
        synperf_pointer_chase[(1,)](nxt, start, out, chase_steps, num_warps=1)  # compile + warm
        torch.cuda.synchronize(dev)
        flusher = L2Flusher(dev)
        trials = []
        for t in range(3):
            start = perm[(t + 1) * (n // 4) : (t + 1) * (n // 4) + 1].clone()  # fresh part of the cycle
            flusher.flush()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            synperf_pointer_chase[(1,)](nxt, start, out, chase_steps, num_warps=1)
            b.record()
            b.synchronize()
            trials.append(a.elapsed_time(b) * 1e6 / chase_steps)
        result["dram_latency_ns"] = median(trials)
        result["dram_latency_trials_ns"] = [round(x, 1) for x in trials]
        result["dram_latency_note"] = f"single-thread pointer chase over {chase_mib} MiB, includes TLB misses"
        del perm, nxt, flusher
    except Exception as e:  # noqa: BLE001
        result["dram_latency_ns"] = None
        result["dram_latency_note"] = f"pointer chase failed: {type(e).__name__}: {e}"
    torch.cuda.empty_cache()
    return result
