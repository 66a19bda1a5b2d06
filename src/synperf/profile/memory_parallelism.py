"""DRAM bandwidth against the bytes each SM keeps in flight (GPU only).

Little's law: to sustain bandwidth B with a load latency L, the GPU must keep B x L bytes in
flight, B x L / SMs on each SM. A kernel whose resident CTAs stage fewer bytes than that cannot
reach the DRAM roof, whatever its bytes. This sweep measures that curve on the GPU it runs on
(docs/efficiency-model.md, "Memory parallelism": an efficiency-model input built on it was
measured and not shipped).

A Triton kernel reads a large buffer, each CTA one ``BLOCK``-element tile per loop trip, with
software pipelining off and each trip's addresses waiting on the last trip's data
(``stream_kernel``), so a CTA has exactly one tile in flight; the grid is ``ctas_per_sm`` x
SMs, each CTA striding over the buffer. Bytes in flight per SM = ctas_per_sm x tile bytes (only
configurations whose CTAs can all be resident are kept, from the compiled kernel's registers).
Bandwidth is the buffer's bytes over the median of ``REPEATS`` CUDA-event timings.

    python -m synperf.profile.memory_parallelism --out memory_parallelism.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

BLOCKS = (128, 256, 512, 1024, 2048, 4096, 8192)      # fp16 elements per tile
CTAS_PER_SM = (1, 2, 4, 8, 16)
REPEATS = 7
BUFFER_GIB = 2.0


def stream_kernel(triton, tl):
    """A read-only stream with exactly one tile in flight per CTA: each trip's addresses depend on
    the last trip's data (a NaN test that never fires on random data), so neither Triton nor ptxas
    can issue the next tile's loads early (ptxas unrolls an independent loop 4x and hoists its
    loads; a barrier does not stop it from sinking the adds past it). Rows of 8 elements keep the
    16-byte loads and the test within one thread."""
    @triton.jit
    def stream_read(src, sink, trips, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        rows = tl.arange(0, BLOCK // 8)
        cols = tl.arange(0, 8)
        acc = tl.zeros([BLOCK // 8, 8], dtype=tl.float32)
        skew = tl.zeros([BLOCK // 8], dtype=tl.int64)
        for trip in range(trips):
            tile = (pid + trip * programs).to(tl.int64)
            x = tl.load(src + tile * BLOCK + rows[:, None] * 8 + cols[None, :] + skew[:, None] * 8).to(tl.float32)
            acc += x
            row_sum = tl.sum(x, axis=1)
            skew = (row_sum != row_sum).to(tl.int64)
        tl.store(sink + pid * BLOCK + rows[:, None] * 8 + cols[None, :], acc)

    return stream_read


def warps_for(block: int) -> int:
    return max(1, min(8, block // 256))     # one 16-byte load per thread and trip up to 8 warps


def sweep(torch, triton, tl) -> list[dict]:
    stream_read = stream_kernel(triton, tl)
    props = torch.cuda.get_device_properties(0)
    sms = props.multi_processor_count
    elements = int(BUFFER_GIB * (1 << 30)) // 2
    src = torch.randn(elements, dtype=torch.float16, device="cuda")
    rows = []
    for block in BLOCKS:
        warps = warps_for(block)
        for ctas in CTAS_PER_SM:
            programs = sms * ctas
            trips = elements // (programs * block) - 1      # the last tile stays in bounds were a row skewed
            sink = torch.empty(programs * block, dtype=torch.float32, device="cuda")
            kernel = stream_read[(programs,)](src, sink, trips, BLOCK=block, num_warps=warps, num_stages=1)
            regs = kernel.n_regs
            resident = props.regs_per_multiprocessor // max(1, regs * 32 * warps)
            if resident < ctas or ctas * warps * 32 > props.max_threads_per_multi_processor:
                continue
            times = []
            for _ in range(REPEATS):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                stream_read[(programs,)](src, sink, trips, BLOCK=block, num_warps=warps, num_stages=1)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) * 1e-3)
            seconds = statistics.median(times)
            moved = trips * programs * block * 2
            rows.append({"gpu_name": props.name, "sm_count": sms, "block_elements": block, "num_warps": warps,
                         "ctas_per_sm": ctas, "bytes_in_flight_per_sm": ctas * block * 2, "registers": regs,
                         "bytes_read": moved, "seconds": seconds, "gb_s": moved / seconds / 1e9})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON-lines file to write")
    args = parser.parse_args(argv)
    import torch
    import triton
    import triton.language as tl
    if not torch.cuda.is_available():
        print("memory_parallelism: needs a CUDA GPU", file=sys.stderr)
        return 2
    rows = sweep(torch, triton, tl)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    for row in rows:
        print(f"{row['bytes_in_flight_per_sm']:7d} B/SM  ({row['ctas_per_sm']:2d} x {row['block_elements'] * 2:5d} B)"
              f"  {row['gb_s']:7.0f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
