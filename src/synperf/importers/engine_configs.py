"""The tuned fused-MoE Triton configs that vLLM and SGLang ship, as one table synperf bundles.

Both engines look up ``E={E},N={N},device_name={device}.json`` (N = the intermediate size of one
rank) before falling back to their default rule; the file maps batch sizes M to a config and the
one nearest the call's token count wins. Only unquantised (bf16/fp16) files are read: their names
carry no ``dtype=`` part. ``device`` is the name PyTorch reports with spaces as underscores; a GPU
of the registry matches on the first of its ``cuda_names`` (what the device itself reports), and
vLLM maps every H200 variant to ``NVIDIA_H200``.

SGLang keeps one folder per Triton version (``configs/triton_3_5_1/...``): the folder of the Triton
it runs with wins, then the newest other folder that has the file. ``read_tuned_configs`` resolves
that for the Triton version given, so the table holds one config set per (engine, GPU, E, N).

``synperf data moe-configs --vllm <vllm package dir> --sglang <sglang package dir>`` writes the
table (``src/synperf/kernels/tiles/moe_engine_configs.json``): numbers from the engines' files,
Apache-2.0, credited in docs/kernels-moe.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from synperf.errors import InputError
from synperf.kernels.moe import CONFIG_KEYS, TRITON_DEFAULT_NUM_STAGES, TRITON_DEFAULT_NUM_WARPS

_NAME = re.compile(r"^E=(\d+),N=(\d+),device_name=(.+)\.json$")
_KEY_DEFAULTS = {"num_warps": TRITON_DEFAULT_NUM_WARPS, "num_stages": TRITON_DEFAULT_NUM_STAGES}


def _device_names(registry) -> dict[str, str]:
    """File device name -> registry GPU id."""
    return {spec.cuda_names[0].replace(" ", "_"): spec.id for spec in registry}


def _read_file(path: Path) -> dict[str, list[int]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable JSON config file ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected an object of batch size -> config")
    table = {}
    for m, cfg in raw.items():
        if m == "triton_version":
            continue
        if not (isinstance(m, str) and m.isdigit() and isinstance(cfg, dict)):
            raise InputError(f"{path}: entry {m!r} is not batch size -> config object")
        values = []
        for key in CONFIG_KEYS:
            v = cfg.get(key, _KEY_DEFAULTS.get(key))
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise InputError(f"{path}: batch size {m}: {key} must be a positive integer, got {v!r}")
            values.append(v)
        table[m] = values
    if not table:
        raise InputError(f"{path}: no batch sizes")
    return table


def _matching(folder: Path, devices: dict[str, str]):
    """(gpu id, 'E=..,N=..', path) of the bf16 config files of registry GPUs in ``folder``."""
    for path in sorted(folder.glob("E=*.json")):
        match = _NAME.match(path.name)
        if not match:
            continue
        e, n, device = match.groups()
        if "dtype=" in device or "block_shape=" in device or device.endswith("_down"):
            continue
        gpu = devices.get(device)
        if gpu:
            yield gpu, f"E={e},N={n}", path


def read_vllm(package: Path, devices: dict[str, str]) -> dict:
    folder = package / "model_executor" / "layers" / "fused_moe" / "configs"
    if not folder.is_dir():
        raise InputError(f"{package}: no vLLM fused-MoE config folder at {folder}", "--vllm")
    out: dict = {}
    for gpu, key, path in _matching(folder, devices):
        out.setdefault(gpu, {})[key] = _read_file(path)
    return out


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in name.removeprefix("triton_").split("_"))


def read_sglang(package: Path, devices: dict[str, str], triton_version: str) -> dict:
    roots = sorted({p.parent for p in package.rglob("triton_*") if p.is_dir() and p.parent.name == "configs"
                    and "moe" in str(p.parent)})
    if not roots:
        raise InputError(f"{package}: no SGLang fused-MoE config folders (configs/triton_*)", "--sglang")
    wanted = "triton_" + triton_version.replace(".", "_")
    out: dict = {}
    for root in roots:
        folders = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("triton_")),
                         key=lambda p: (p.name != wanted, tuple(-x for x in _version(p.name))))
        for folder in folders:     # the engine's own Triton first, then newest first
            for gpu, key, path in _matching(folder, devices):
                out.setdefault(gpu, {}).setdefault(key, _read_file(path))
    return out


def package_version(package: Path) -> str:
    """The version a package's ``_version.py`` records (setuptools-scm writes one), or 'unknown'."""
    path = package / "_version.py"
    match = re.search(r"""version\s*=\s*['"]([^'"]+)['"]""", path.read_text()) if path.is_file() else None
    return match.group(1) if match else "unknown"


def build_table(vllm: Path | None, sglang: Path | None, sglang_triton: str, registry) -> dict:
    devices = _device_names(registry)
    table: dict = {"format_version": 1, "config_keys": list(CONFIG_KEYS), "sources": {}, "engines": {}}
    if vllm is not None:
        table["engines"]["vllm"] = read_vllm(vllm, devices)
        table["sources"]["vllm"] = f"vLLM {package_version(vllm)}"
    if sglang is not None:
        table["engines"]["sglang"] = read_sglang(sglang, devices, sglang_triton)
        table["sources"]["sglang"] = f"SGLang {package_version(sglang)}, Triton {sglang_triton} folder first"
    return table
