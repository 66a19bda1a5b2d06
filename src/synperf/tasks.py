"""What a kernel decomposer produces: launches made of task classes (plain data, no I/O).

A *task* is one CTA, or one tile that a persistent kernel's CTA fetches. Tasks with identical
demand form a *task class*; a launch lists its classes with counts, which keeps a 100k-CTA grid
as cheap to carry as a 1-CTA one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Additive per-task demands, in this column order everywhere.
TASK_PIPES = ("tensor", "fma", "xu", "l2", "shared")
TENSOR, FMA, XU, L2, SHARED = range(len(TASK_PIPES))


def task_demand(tensor_flops: float = 0.0, fma_ops: float = 0.0, xu_ops: float = 0.0,
                l2_bytes: float = 0.0, shared_bytes: float = 0.0) -> np.ndarray:
    """One task's demand vector: tensor-core FLOP, FP32 pipe ops, special-function ops, bytes moved
    between L2 and the SM (loads and stores), and bytes read from shared memory."""
    return np.array([tensor_flops, fma_ops, xu_ops, l2_bytes, shared_bytes], dtype=np.float64)


@dataclass(frozen=True)
class Resources:
    """Per-CTA resources that decide how many CTAs fit on one SM."""
    threads: int
    registers_per_thread: int
    shared_bytes: int


@dataclass(frozen=True, eq=False)
class Launch:
    """One GPU kernel launch.

    ``demand[c]`` is the demand of one task of class ``c`` and ``counts[c]`` how many there are.
    ``order`` (optional) gives the class of each task in launch (blockIdx) order; by default the
    classes are launched one after another. Persistent kernels set ``persistent_ctas``; their own
    tile scheduler may pin tasks to CTAs through ``task_cta`` (default: tile i goes to CTA i mod ctas).
    """
    name: str
    demand: np.ndarray
    counts: np.ndarray
    resources: Resources
    dram_read_bytes: float
    dram_write_bytes: float
    tensor_dtype: str | None = None
    tensor_path: str = "mma"
    order: np.ndarray | None = None
    persistent_ctas: int | None = None
    task_cta: np.ndarray | None = None
    # Widest load/store a thread issues, in bytes: kernels that cannot prove 16-byte alignment
    # (e.g. Triton when a row stride is not a multiple of 16 elements) move the same bytes with
    # more, narrower instructions.
    access_bytes: int = 16
    # Main-loop iterations of one task (the K steps of a tiled GEMM): each also costs a barrier and
    # its address and pipeline bookkeeping, whatever its bytes and FLOP. 0 where there is no such loop.
    loop_trips: int = 0
    # Registers per thread the code needs beyond the 255 a thread can hold: the compiler spills
    # them to local memory (per-thread stack traffic through L1/L2 that no operand count shows).
    spilled_registers: int = 0
    # Issued by the library inside the host call that issued the launch before it (cuBLAS's workspace
    # memset and GEMM, the passes of cub's radix sort, FA3's prepare and main kernel): the host pays
    # a launch for it, not another call from the engine's Python.
    within_call: bool = False
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        demand = np.atleast_2d(np.asarray(self.demand, dtype=np.float64))
        counts = np.atleast_1d(np.asarray(self.counts, dtype=np.int64))
        object.__setattr__(self, "demand", demand)
        object.__setattr__(self, "counts", counts)
        if demand.shape != (counts.size, len(TASK_PIPES)):
            raise ValueError(f"{self.name}: demand shape {demand.shape} does not match {counts.size} classes")
        if (counts < 0).any() or counts.sum() == 0:
            raise ValueError(f"{self.name}: a launch needs at least one task and no negative counts")

    @property
    def num_tasks(self) -> int:
        return int(self.counts.sum())

    def task_classes(self) -> np.ndarray:
        """Class index of every task in launch order."""
        if self.order is not None:
            return np.asarray(self.order, dtype=np.int64)
        return np.repeat(np.arange(self.counts.size), self.counts)

    @property
    def total_demand(self) -> np.ndarray:
        return self.counts @ self.demand
