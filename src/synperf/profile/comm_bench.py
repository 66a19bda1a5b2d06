"""Collective-communication benchmark: one process per GPU (``torchrun --nproc-per-node N``).

Measures, per message size (1 KiB to 1 GiB, powers of two, bf16):

- ``nccl``: ``all_reduce``, ``all_gather`` (size = the gathered output) and ``reduce_scatter``
  (size = the input) through torch.distributed/NCCL, eager and replayed from a CUDA graph
  (``nccl_graph``, what a decode step under CUDA graphs pays);
- ``send_recv``: rank 0 sends to rank 1 (one direction, NCCL);
- the custom all-reduce that vLLM and SGLang use for small messages: one-shot (every GPU reads
  all peers' buffers over NVLink and reduces) and two-shot (reduce-scatter + all-gather through
  peer buffers), here PyTorch's symmetric-memory kernels ``symm_mem.one_shot_all_reduce`` and
  ``two_shot_all_reduce_`` (same algorithms, peer-to-peer through IPC buffers), up to 256 MiB.

NVLink multicast stays off (``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``, ``NCCL_NVLS_ENABLE=0`` are set
here unless already set): no multimem operation is called.

Time per call = CUDA-event time of ``iters`` back-to-back calls / iters, after warm-up; the
median over ranks' maxima is not needed because every call synchronises the ranks; rank 0's
number is recorded. Rank 0 appends JSON lines to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
os.environ.setdefault("NVSHMEM_DISABLE_NVLS", "1")

MIN_BYTES, MAX_BYTES = 1 << 10, 1 << 30
MAX_CUSTOM_BYTES = 256 << 20


def sizes(lo: int = MIN_BYTES, hi: int = MAX_BYTES) -> list[int]:
    out, s = [], lo
    while s <= hi:
        out.append(s)
        s *= 2
    return out


def iterations(nbytes: int) -> int:
    """More repetitions for short calls, so each timed loop lasts at least ~1 ms."""
    return max(5, min(200, (256 << 20) // max(nbytes, 1)))


def _time_loop(torch, fn, iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / iters


def _time_graph(torch, fn, iters: int) -> float:
    fn()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            fn()
    return _time_loop(torch, graph.replay, 3, warmup=1) / iters


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m synperf.profile.comm_bench", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    p.add_argument("--ops", default="all_reduce,all_gather,reduce_scatter,send_recv,custom")
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph NCCL all-reduce")
    args = p.parse_args(argv)

    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dev = torch.device("cuda", torch.cuda.current_device())
    dist.init_process_group("nccl", device_id=dev)
    ops = set(args.ops.split(","))
    meta = {"world": world, "gpu_name": torch.cuda.get_device_name(), "torch": torch.__version__,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())), "dtype": "bf16", "cache": "n/a"}
    rows: list[dict] = []

    def record(op, impl, nbytes, us, iters, **extra):
        if rank == 0:
            rows.append({"op": op, "impl": impl, "bytes": nbytes, "us": round(us, 3), "iters": iters, **meta, **extra})
            print(f"{op:15s} {impl:14s} {nbytes:>12d} B {us:10.2f} us", flush=True)

    all_sizes = sizes(hi=args.max_bytes)
    t0 = time.time()
    for nbytes in all_sizes:
        n = nbytes // 2
        iters = iterations(nbytes)
        x = torch.randn(n, dtype=torch.bfloat16, device=dev)
        if "all_reduce" in ops:
            record("all_reduce", "nccl", nbytes, _time_loop(torch, lambda: dist.all_reduce(x), iters), iters)
            if not args.no_graph and nbytes <= (64 << 20):
                try:
                    record("all_reduce", "nccl_graph", nbytes, _time_graph(torch, lambda: dist.all_reduce(x), min(iters, 50)),
                           min(iters, 50))
                except RuntimeError as exc:
                    print(f"graph all_reduce refused: {exc}", file=sys.stderr)
        if "all_gather" in ops and n % world == 0:
            part = torch.randn(n // world, dtype=torch.bfloat16, device=dev)
            full = torch.empty(n, dtype=torch.bfloat16, device=dev)
            record("all_gather", "nccl", nbytes,
                   _time_loop(torch, lambda: dist.all_gather_into_tensor(full, part), iters), iters)
        if "reduce_scatter" in ops and n % world == 0:
            out = torch.empty(n // world, dtype=torch.bfloat16, device=dev)
            record("reduce_scatter", "nccl", nbytes,
                   _time_loop(torch, lambda: dist.reduce_scatter_tensor(out, x), iters), iters)
        if "send_recv" in ops and world >= 2:
            def send_recv():
                if rank == 0:
                    dist.send(x, 1)
                elif rank == 1:
                    dist.recv(x, 0)
            record("send_recv", "nccl", nbytes, _time_loop(torch, send_recv, iters), iters)
    if "custom" in ops:
        _custom_all_reduce(torch, dist, dev, [s for s in all_sizes if s <= min(MAX_CUSTOM_BYTES, args.max_bytes)],
                           record)
    if rank == 0:
        with open(args.out, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"{len(rows)} rows in {time.time() - t0:.1f} s -> {args.out}")
    dist.destroy_process_group()
    return 0


def _custom_all_reduce(torch, dist, dev, sizes_, record) -> None:
    """One-shot and two-shot all-reduce through symmetric (peer-mapped) memory."""
    try:
        import torch.distributed._symmetric_memory as symm_mem
    except ImportError as exc:
        print(f"symmetric memory unavailable: {exc}", file=sys.stderr)
        return
    group = dist.group.WORLD.group_name
    largest = max(sizes_) // 2
    try:
        buf = symm_mem.empty(largest, dtype=torch.bfloat16, device=dev)
        symm_mem.rendezvous(buf, group)
    except Exception as exc:                  # noqa: BLE001 - reported, the NCCL rows stand
        print(f"symmetric memory rendezvous failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return
    buf.normal_()
    for nbytes in sizes_:
        view = buf[: nbytes // 2]
        iters = iterations(nbytes)
        for impl, fn in (("one_shot", lambda: torch.ops.symm_mem.one_shot_all_reduce(view, "sum", group)),
                         ("two_shot", lambda: torch.ops.symm_mem.two_shot_all_reduce_(view, "sum", group))):
            try:
                record("all_reduce", impl, nbytes, _time_loop(torch, fn, iters), iters)
            except Exception as exc:          # noqa: BLE001 - one size may be refused (alignment)
                print(f"{impl} {nbytes} B refused: {type(exc).__name__}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
