"""Shared building blocks for family modules: dtype sizes, the launch shapes of simple
element-wise and row-wise kernels, and the bundled register census of synperf's Triton kernels."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Mapping

from synperf.errors import InputError
from synperf.tasks import Launch, Resources, task_demand

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8_e4m3": 1, "fp8_e5m2": 1}
# dtype names of the JSONL contract -> the spec's tensor-core dtype keys
TENSOR_DTYPE = {"bf16": "bf16", "fp16": "fp16", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8"}


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return ceil_div(a, b) * b


def next_pow2(x: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def triton_num_warps(elements: int) -> int:
    """The warps synperf's Triton element-wise kernels launch: a power of two in [1, 16], about one
    warp per 256 elements of the program's block."""
    warps = 1
    while warps < 16 and warps * 256 < elements:
        warps *= 2
    return warps


def one_call(*launches: Launch) -> tuple[Launch, ...]:
    """Launches a library issues from one host call (a cuBLAS GEMM and its workspace memset, FA3's
    prepare, main and combine kernels): every launch after the first is marked ``within_call``."""
    return launches[:1] + tuple(replace(launch, within_call=True) for launch in launches[1:])


def rowwise_launch(name: str, rows: int, cols: int, *, threads: int, bytes_in_per_col: float,
                   bytes_out_per_col: float, fma_per_col: float, xu_per_col: float,
                   xu_per_row: float = 0.0, registers: int = 32, shared_bytes: int = 0,
                   fixed_bytes_in: float = 0.0, col_blocks: int = 1, access_bytes: int = 16) -> Launch:
    """One CTA per row, or per (row, column block) when ``col_blocks`` > 1 (RMSNorm, SiLU-and-mul
    in FlashInfer/Triton/vLLM style). The last column block may be partial; the demand is spread evenly.

    ``fixed_bytes_in`` is read by every CTA but only once from DRAM (e.g. a norm weight); it is
    left out of the L2 demand because L1 may serve the repeats, and the ceiling must stay a bound."""
    per_task = task_demand(
        fma_ops=fma_per_col * cols / col_blocks,
        xu_ops=(xu_per_col * cols + xu_per_row) / col_blocks,
        l2_bytes=(bytes_in_per_col + bytes_out_per_col) * cols / col_blocks,
    )
    return Launch(
        name=name, demand=per_task, counts=[rows * col_blocks],
        resources=Resources(threads=threads, registers_per_thread=registers, shared_bytes=shared_bytes),
        dram_read_bytes=bytes_in_per_col * cols * rows + fixed_bytes_in,
        dram_write_bytes=bytes_out_per_col * cols * rows, access_bytes=access_bytes,
    )


def triton_access_bytes(row_elements: int, dtype_bytes: int) -> int:
    """Triton specialises integer arguments divisible by 16; a row stride that is not leaves the
    row starts' alignment unknown, and loads fall back to one element per instruction."""
    return 16 if row_elements % 16 == 0 else dtype_bytes


def elementwise_launch(name: str, elements: int, *, bytes_in_per_elem: float, bytes_out_per_elem: float,
                       fma_per_elem: float = 1.0, xu_per_elem: float = 0.0, threads: int = 128,
                       elems_per_thread: int = 4, registers: int = 32, access_bytes: int = 16) -> Launch:
    """PyTorch's element-wise kernel: 128 threads a CTA, a few elements a thread; vectorized (16-byte
    accesses) on contiguous tensors, else the generic strided ``elementwise_kernel`` (one element an
    access: ``access_bytes`` = the element size)."""
    per_cta = threads * elems_per_thread
    ctas = ceil_div(elements, per_cta)
    per_task = task_demand(fma_ops=fma_per_elem * per_cta, xu_ops=xu_per_elem * per_cta,
                           l2_bytes=(bytes_in_per_elem + bytes_out_per_elem) * per_cta)
    return Launch(
        name=name, demand=per_task, counts=[ctas],
        resources=Resources(threads=threads, registers_per_thread=registers, shared_bytes=0),
        dram_read_bytes=bytes_in_per_elem * elements, dram_write_bytes=bytes_out_per_elem * elements,
        access_bytes=access_bytes,
    )


# ptxas's own answer where it has been asked: registers and spilled registers per thread of a
# Triton kernel's specialisations, built for one GPU generation (``python -m
# synperf.profile.register_census``, bundled by ``synperf data register-table`` as
# ``tiles/<kernel>_registers.json``).
def build_register_table(rows: Iterable[Mapping[str, Any]], key_fields: tuple[str, ...]) -> dict:
    """Census rows of one kernel -> {"cc_major", "triton_version", "builds": {"k1,k2,...": [registers,
    spilled registers]}}, keyed by ``key_fields``."""
    builds: dict[str, list[int]] = {}
    generations, versions = set(), set()
    for i, row in enumerate(rows, 1):
        if row.get("error"):
            continue
        for field in ("n_regs", "n_spills", "cc", "triton_version", *key_fields):
            if row.get(field) is None:
                raise InputError(f"row {i}: missing (not a register census of this kernel)", field)
        generations.add(int(str(row["cc"]).split(".")[0]))
        versions.add(str(row["triton_version"]))
        builds[",".join(str(row[k]) for k in key_fields)] = [int(row["n_regs"]), int(row["n_spills"])]
    if len(generations) != 1:
        raise InputError(f"one GPU generation per table, got compute capabilities {sorted(generations) or 'none'}", "cc")
    return {"format_version": 1, "key": list(key_fields), "cc_major": generations.pop(),
            "triton_version": ", ".join(sorted(versions)), "builds": builds}


@lru_cache(maxsize=None)
def _register_table(kernel: str) -> dict:
    return json.loads((resources.files("synperf.kernels") / f"tiles/{kernel}_registers.json").read_text())


def built_registers(kernel: str, gpu, key: tuple) -> tuple[int, int] | None:
    """(registers, spilled registers) ptxas built for this specialisation on this GPU's generation, or
    None where the census has no build (another generation, a shape outside its grid)."""
    table = _register_table(kernel)
    if gpu.cc_major != table["cc_major"]:
        return None
    built = table["builds"].get(",".join(str(v) for v in key))
    return (built[0], built[1]) if built else None
