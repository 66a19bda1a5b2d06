"""Find GPU specs by short id, by the exact name CUDA reports, or from a user's spec file."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

import yaml

from synperf.errors import SpecError, UnknownGpuError
from synperf.gpu.spec import GpuSpec

USER_DIR_ENV = "SYNPERF_GPU_DIR"


def _normalise(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def load_spec_file(path: str | os.PathLike) -> GpuSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec file ({exc.__class__.__name__}: {exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (ValueError, RecursionError) as exc:
        # PyYAML's constructors raise plain errors for scalars it resolves but cannot build
        # (date 2001-13-45, a 5000-digit integer) and for very deep nesting.
        raise SpecError(f"{path}: not valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None
    return GpuSpec.from_mapping(data, origin=str(path))


class GpuRegistry:
    """An immutable set of specs indexed by id and by every CUDA name."""

    def __init__(self, specs: Iterable[GpuSpec]):
        self._by_id: dict[str, GpuSpec] = {}
        self._by_name: dict[str, GpuSpec] = {}
        for spec in specs:
            self._add(spec)

    def _add(self, spec: GpuSpec) -> None:
        # A later spec (user file) overrides a bundled one with the same id.
        old = self._by_id.get(spec.id)
        if old is not None:
            self._by_name = {k: v for k, v in self._by_name.items() if v is not old}
        self._by_id[spec.id] = spec
        for name in (spec.id, spec.name, *spec.cuda_names):
            self._by_name[_normalise(name)] = spec

    def with_specs(self, specs: Iterable[GpuSpec]) -> "GpuRegistry":
        return GpuRegistry([*self._by_id.values(), *specs])

    def __iter__(self):
        return iter(sorted(self._by_id.values(), key=lambda s: s.id))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, name: str) -> GpuSpec:
        """Resolve ``name``: a short id, a CUDA device name, or a path to a spec YAML file."""
        if not isinstance(name, str) or not name.strip():
            raise UnknownGpuError("GPU name must be a non-empty string")
        found = self._by_name.get(_normalise(name))
        if found is not None:
            return found
        if name.endswith((".yaml", ".yml")) and Path(name).is_file():
            return load_spec_file(name)
        close = [s.id for s in self if _normalise(name) in _normalise(s.name) or s.id in _normalise(name)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownGpuError(f"unknown GPU '{name}'{hint}; `synperf gpus` lists known ones,"
                              f" or give a spec file with --gpu-spec")


def _bundled_specs() -> list[GpuSpec]:
    folder = resources.files("synperf.gpu") / "specs"
    specs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            with resources.as_file(entry) as path:
                specs.append(load_spec_file(path))
    return specs


def _user_specs() -> list[GpuSpec]:
    folder = os.environ.get(USER_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".config", "synperf", "gpus")
    path = Path(folder)
    if not path.is_dir():
        return []
    return [load_spec_file(p) for p in sorted(path.glob("*.yaml"))]


@lru_cache(maxsize=1)
def _bundled_registry() -> GpuRegistry:
    return GpuRegistry(_bundled_specs())


def default_registry(extra_spec_files: Iterable[str] = ()) -> GpuRegistry:
    """Bundled specs, then the user's spec directory, then explicit files (later ones win)."""
    extra = [load_spec_file(f) for f in extra_spec_files]
    return _bundled_registry().with_specs([*_user_specs(), *extra])


def resolve_gpu(name: str, extra_spec_files: Iterable[str] = ()) -> GpuSpec:
    return default_registry(extra_spec_files).get(name)
