"""GpuSpec: a validated, unit-carrying description of one GPU model.

Every number in a spec file is ``{value, source}`` so that each figure can be traced to a
datasheet, a whitepaper or a measurement. Field names carry their units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from synperf.errors import SpecError, UnsupportedDtypeError

ARCHITECTURES = ("volta", "turing", "ampere", "ada", "hopper", "blackwell", "blackwell_consumer")
TENSOR_PATHS = ("mma", "wgmma", "tcgen05")
TENSOR_DTYPES = ("fp16", "bf16", "tf32", "fp8", "int8", "fp4")

# name -> (python type, required). Units are in the names.
_NUMERIC_FIELDS: dict[str, tuple[type, bool]] = {
    "sm_count": (int, True),
    "boost_clock_mhz": (float, True),
    "sustained_clock_mhz": (float, False),
    "memory_gb": (float, True),
    "dram_bandwidth_gb_s": (float, True),
    "dram_latency_ns": (float, True),
    "l2_size_mb": (float, True),
    "l2_bandwidth_gb_s": (float, True),
    "l2_load_bytes_per_clk_per_sm": (float, True),
    "shared_memory_per_sm_kb": (float, True),
    "shared_memory_per_block_kb": (float, True),
    "shared_bandwidth_bytes_per_clk_per_sm": (float, True),
    "registers_per_sm": (int, True),
    "max_registers_per_thread": (int, True),
    "max_ctas_per_sm": (int, True),
    "max_warps_per_sm": (int, True),
    "max_threads_per_sm": (int, True),
    "fp32_ops_per_clk_per_sm": (float, True),
    "xu_ops_per_clk_per_sm": (float, True),
    "alu_ops_per_clk_per_sm": (float, True),
    "list_price_usd": (float, False),
    "kernel_launch_floor_us": (float, False),
}
_INTERCONNECT_FIELDS = ("nvlink_gb_s", "pcie_gb_s")
_MAX_NUMBER = 1e30   # no GPU quantity comes near; larger values are typos or garbage
_MIN_NUMBER = 1e-6   # nor this small (a rate of 1e-300 per clock made ceilings infinite)
# Counts that size arrays (per-SM schedules) or loops get a physical upper bound, generous enough
# for any GPU to come: a typo such as sm_count 1e20 must fail here, not as a MemoryError later.
_MAX_COUNT = {"sm_count": 4096, "max_ctas_per_sm": 1024, "max_warps_per_sm": 1024,
              "max_threads_per_sm": 32768, "registers_per_sm": 1 << 22, "max_registers_per_thread": 4096}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class GpuSpec:
    id: str
    name: str
    cuda_names: tuple[str, ...]
    architecture: str
    compute_capability: str
    same_silicon_as: tuple[str, ...]
    sm_count: int
    boost_clock_mhz: float
    memory_gb: float
    dram_bandwidth_gb_s: float
    dram_latency_ns: float
    l2_size_mb: float
    l2_bandwidth_gb_s: float
    l2_load_bytes_per_clk_per_sm: float
    shared_memory_per_sm_kb: float
    shared_memory_per_block_kb: float
    shared_bandwidth_bytes_per_clk_per_sm: float
    registers_per_sm: int
    max_registers_per_thread: int
    max_ctas_per_sm: int
    max_warps_per_sm: int
    max_threads_per_sm: int
    fp32_ops_per_clk_per_sm: float
    xu_ops_per_clk_per_sm: float
    alu_ops_per_clk_per_sm: float
    tensor_flops_per_clk_per_sm: Mapping[str, Mapping[str, float]]
    sustained_clock_mhz: float | None = None
    kernel_launch_floor_us: float | None = None   # shortest possible kernel (empty kernel, CUPTI)
    list_price_usd: float | None = None
    nvlink_gb_s: float | None = None
    pcie_gb_s: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    origin: str = field(default="", compare=False, repr=False)

    def __hash__(self) -> int:
        # Specs hold dicts, so the generated hash would fail; id + origin identify a spec.
        return hash((self.id, self.origin))

    # -- derived quantities (pure) -------------------------------------------------------
    @property
    def clock_hz(self) -> float:
        """Clock used for ceilings: the maximum boost clock, so ideal times stay lower bounds."""
        return self.boost_clock_mhz * 1e6

    @property
    def cc_major(self) -> int:
        return int(self.compute_capability.split(".")[0])

    @property
    def silicon_family(self) -> str:
        """A stable key shared by GPUs of one die (for leave-one-GPU-out grouping)."""
        return min((self.id, *self.same_silicon_as))

    def tensor_rate(self, dtype: str, path: str) -> float:
        """Dense tensor FLOP per clock per SM for ``dtype`` on MMA ``path``.

        A kernel written for an MMA path the chip lacks (e.g. wgmma on Ampere) runs on ``mma``.
        """
        paths = self.tensor_flops_per_clk_per_sm
        chosen = path if path in paths else "mma"
        rates = paths.get(chosen, {})
        if dtype not in rates:
            raise UnsupportedDtypeError(f"{self.id} has no tensor-core rate for '{dtype}' on its '{chosen}' path"
                                        f" (its spec lists {', '.join(sorted(rates))})")
        return rates[dtype]

    def supports_tensor_dtype(self, dtype: str) -> bool:
        return any(dtype in rates for rates in self.tensor_flops_per_clk_per_sm.values())

    # -- construction from a spec mapping ------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Any, origin: str = "<mapping>") -> "GpuSpec":
        if not isinstance(data, Mapping):
            raise SpecError(f"{origin}: a GPU spec must be a mapping of fields, got {type(data).__name__}")
        sources: dict[str, str] = {}

        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not value.strip():
                raise SpecError(f"{origin}: field '{key}' must be a non-empty string")
            return value.strip()

        def text_list(key: str, required: bool) -> tuple[str, ...]:
            value = data.get(key, None)
            if value is None and not required:
                return ()
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise SpecError(f"{origin}: field '{key}' must be a list of strings")
            return tuple(v.strip() for v in value)

        def number(key: str, node: Any, kind: type) -> float:
            if not isinstance(node, Mapping) or "value" not in node or "source" not in node:
                raise SpecError(f"{origin}: field '{key}' must be {{value: <number>, source: <text>}}")
            value, source = node["value"], node["source"]
            # (a 400-digit YAML integer is an int that math.isfinite cannot convert: bound it first)
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not _MIN_NUMBER <= value <= _MAX_NUMBER
                    or not math.isfinite(value)):
                raise SpecError(f"{origin}: field '{key}' value must be a positive finite number between"
                                f" {_MIN_NUMBER:g} and {_MAX_NUMBER:g}, got {_short(value)}")
            if kind is int and float(value) != int(value):
                raise SpecError(f"{origin}: field '{key}' value must be an integer, got {value!r}")
            if key in _MAX_COUNT and value > _MAX_COUNT[key]:
                raise SpecError(f"{origin}: field '{key}' value must be at most {_MAX_COUNT[key]}, got {_short(value)}")
            if not isinstance(source, str) or not source.strip():
                raise SpecError(f"{origin}: field '{key}' needs a non-empty source")
            sources[key] = source.strip()
            return int(value) if kind is int else float(value)

        known = set(_NUMERIC_FIELDS) | {"id", "name", "cuda_names", "architecture", "compute_capability",
                                        "same_silicon_as", "tensor_flops_per_clk_per_sm", "interconnect"}
        unknown = sorted(str(key) for key in set(data) - known)   # YAML keys may be ints, None...
        if unknown:
            raise SpecError(f"{origin}: unknown field(s) {', '.join(unknown)}")

        values: dict[str, Any] = {
            "id": text("id"),
            "name": text("name"),
            "cuda_names": text_list("cuda_names", True),
            "architecture": text("architecture"),
            "compute_capability": text("compute_capability"),
            "same_silicon_as": text_list("same_silicon_as", False),
        }
        if values["architecture"] not in ARCHITECTURES:
            raise SpecError(f"{origin}: field 'architecture' must be one of {', '.join(ARCHITECTURES)}")
        cc = values["compute_capability"]
        if not all(part.isascii() and part.isdigit() for part in cc.split(".")) or cc.count(".") != 1:
            raise SpecError(f"{origin}: field 'compute_capability' must look like '9.0', got {cc!r}")
        for key, (kind, required) in _NUMERIC_FIELDS.items():
            if key in data:
                values[key] = number(key, data[key], kind)
            elif required:
                raise SpecError(f"{origin}: missing required field '{key}'")

        tensor = data.get("tensor_flops_per_clk_per_sm")
        if not isinstance(tensor, Mapping) or not tensor:
            raise SpecError(f"{origin}: field 'tensor_flops_per_clk_per_sm' must map MMA paths to dtype rates")
        rates: dict[str, dict[str, float]] = {}
        for path, by_dtype in tensor.items():
            if path not in TENSOR_PATHS:
                raise SpecError(f"{origin}: tensor path '{path}' is not one of {', '.join(TENSOR_PATHS)}")
            if not isinstance(by_dtype, Mapping) or not by_dtype:
                raise SpecError(f"{origin}: field 'tensor_flops_per_clk_per_sm.{path}' must map dtypes to rates")
            rates[path] = {}
            for dtype, node in by_dtype.items():
                if dtype not in TENSOR_DTYPES:
                    raise SpecError(f"{origin}: tensor dtype '{dtype}' is not one of {', '.join(TENSOR_DTYPES)}")
                rates[path][dtype] = number(f"tensor_flops_per_clk_per_sm.{path}.{dtype}", node, float)
        if "mma" not in rates:
            raise SpecError(f"{origin}: field 'tensor_flops_per_clk_per_sm' must include the 'mma' path")
        values["tensor_flops_per_clk_per_sm"] = rates

        link = data.get("interconnect", {})
        if not isinstance(link, Mapping):
            raise SpecError(f"{origin}: field 'interconnect' must be a mapping")
        for key in link:
            if key not in _INTERCONNECT_FIELDS:
                raise SpecError(f"{origin}: unknown interconnect field '{key}'")
            values[key] = number(f"interconnect.{key}", link[key], float)

        spec = cls(**values, sources=sources, origin=origin)
        spec._check_consistency()
        return spec

    def _check_consistency(self) -> None:
        where = self.origin or self.id
        if self.shared_memory_per_block_kb > self.shared_memory_per_sm_kb:
            raise SpecError(f"{where}: shared_memory_per_block_kb exceeds shared_memory_per_sm_kb")
        if self.max_threads_per_sm > self.max_warps_per_sm * 32:
            raise SpecError(f"{where}: max_threads_per_sm exceeds max_warps_per_sm x 32")
        if self.sustained_clock_mhz is not None and self.sustained_clock_mhz > self.boost_clock_mhz:
            raise SpecError(f"{where}: sustained_clock_mhz exceeds boost_clock_mhz")
        if self.id in self.same_silicon_as:
            raise SpecError(f"{where}: same_silicon_as must not list the GPU itself")
