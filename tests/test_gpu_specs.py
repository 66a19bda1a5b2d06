import copy

import pytest
import yaml

from synperf.errors import SpecError, UnknownGpuError
from synperf.gpu.registry import USER_DIR_ENV, default_registry, load_spec_file
from synperf.gpu.spec import GpuSpec

REQUIRED_IDS = [
    "a100-sxm4-80gb", "a100-pcie-40gb", "a10", "a40", "rtx-a6000", "l4", "l20", "l40", "l40s",
    "rtx-6000-ada", "rtx-4090", "h20", "h100-sxm", "h100-pcie", "h800", "h200", "b200", "gb200",
    "b300", "gb300", "rtx-pro-6000-blackwell-server", "rtx-5090", "v100-sxm2-32gb", "t4",
]
CUDA_NAMES = {
    "NVIDIA H100 80GB HBM3": "h100-sxm",
    "NVIDIA H200": "h200",
    "NVIDIA B300 SXM6 AC": "b300",
    "NVIDIA GB300": "gb300",
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": "rtx-pro-6000-blackwell-server",
    "NVIDIA RTX 6000 Ada Generation": "rtx-6000-ada",
    "NVIDIA A100-SXM4-80GB": "a100-sxm4-80gb",
}


@pytest.fixture(scope="module")
def registry():
    return default_registry()


def test_every_required_gpu_is_bundled(registry):
    ids = {spec.id for spec in registry}
    assert set(REQUIRED_IDS) <= ids


@pytest.mark.parametrize("cuda_name,gpu_id", sorted(CUDA_NAMES.items()))
def test_cuda_names_resolve(registry, cuda_name, gpu_id):
    assert registry.get(cuda_name).id == gpu_id
    assert registry.get(cuda_name.lower()).id == gpu_id


def test_every_number_has_a_source(registry):
    for spec in registry:
        assert "sm_count" in spec.sources and "dram_bandwidth_gb_s" in spec.sources
        for path, rates in spec.tensor_flops_per_clk_per_sm.items():
            for dtype in rates:
                assert spec.sources[f"tensor_flops_per_clk_per_sm.{path}.{dtype}"].strip()


def test_same_silicon_ids_exist(registry):
    ids = {spec.id for spec in registry}
    for spec in registry:
        assert set(spec.same_silicon_as) <= ids, spec.id


def test_h100_bf16_peak_matches_datasheet(registry):
    spec = registry.get("h100-sxm")
    tflops_at_datasheet_clock = spec.tensor_rate("bf16", "wgmma") * spec.sm_count * 1830e6 / 1e12
    assert tflops_at_datasheet_clock == pytest.approx(989.4, rel=0.01)


def test_unknown_gpu_names_the_request(registry):
    with pytest.raises(UnknownGpuError, match="unknown GPU 'NVIDIA Z9000'"):
        registry.get("NVIDIA Z9000")


def _h100_data():
    return yaml.safe_load(open(default_registry().get("h100-sxm").origin))


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("sm_count"), "missing required field 'sm_count'"),
    (lambda d: d.__setitem__("sm_count", {"value": -1, "source": "x"}), "'sm_count' value must be a positive"),
    (lambda d: d.__setitem__("sm_count", {"value": 132.5, "source": "x"}), "'sm_count' value must be an integer"),
    (lambda d: d.__setitem__("sm_count", 132), "'sm_count' must be {value"),
    (lambda d: d.__setitem__("sm_count", {"value": 132, "source": ""}), "'sm_count' needs a non-empty source"),
    (lambda d: d.__setitem__("dram_bandwidth_gb_s", {"value": float("nan"), "source": "x"}), "positive finite"),
    (lambda d: d.__setitem__("shared_memory_per_block_kb", {"value": 300, "source": "x"}), "exceeds shared_memory_per_sm_kb"),
    (lambda d: d.__setitem__("architecture", "pascal"), "'architecture' must be one of"),
    (lambda d: d.__setitem__("colour", "green"), "unknown field(s) colour"),
    (lambda d: d["tensor_flops_per_clk_per_sm"].pop("mma"), "must include the 'mma' path"),
    (lambda d: d["tensor_flops_per_clk_per_sm"]["mma"].__setitem__("fp6", {"value": 1, "source": "x"}), "dtype 'fp6'"),
])
def test_bad_specs_are_rejected_with_the_field(mutate, message):
    data = copy.deepcopy(_h100_data())
    mutate(data)
    with pytest.raises(SpecError) as err:
        GpuSpec.from_mapping(data, origin="test.yaml")
    assert message in str(err.value)
    assert "test.yaml" in str(err.value)


def test_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec_file(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SpecError, match="cannot read"):
        load_spec_file(bad)
    bad.write_text("")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec_file(bad)


def test_user_spec_directory_adds_a_gpu(tmp_path, monkeypatch):
    data = _h100_data()
    data.update(id="my-h100-variant", name="My H100 variant", cuda_names=["NVIDIA H100 Custom"])
    data["sm_count"] = {"value": 114, "source": "my measurement"}
    data["same_silicon_as"] = []
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv(USER_DIR_ENV, str(tmp_path))
    spec = default_registry().get("NVIDIA H100 Custom")
    assert spec.id == "my-h100-variant" and spec.sm_count == 114


def test_the_h200_dram_stream_follows_littles_law_with_the_specs_latency_as_a_floor(registry):
    """data/h200-system/memory_parallelism.parquet: a read with a fixed number of bytes in flight per
    SM. Below the knee bandwidth = SMs x bytes in flight / latency, one latency for every split of
    those bytes into CTAs; the spec's DRAM latency (the ceilings' first-load term) must not exceed
    it, and the roof is reached only with several times the spec's bytes in flight."""
    pd = pytest.importorskip("pandas")
    from pathlib import Path
    rows = pd.read_parquet(Path(__file__).resolve().parents[1] / "data" / "h200-system" / "memory_parallelism.parquet")
    h200 = registry.get("h200")
    assert (rows.bytes_in_flight_per_sm == rows.ctas_per_sm * rows.block_elements * 2).all()
    latency_ns = rows.sm_count * rows.bytes_in_flight_per_sm / rows.gb_s
    light = latency_ns[rows.bytes_in_flight_per_sm <= 2048]
    assert len(light) >= 8 and light.max() / light.min() < 1.1
    assert h200.dram_latency_ns <= light.min()
    need = h200.dram_bandwidth_gb_s * h200.dram_latency_ns / h200.sm_count      # bytes per SM (Little's law)
    short = rows[rows.bytes_in_flight_per_sm <= need / 2]
    ample = rows[rows.bytes_in_flight_per_sm >= 3 * need]
    assert (short.gb_s < 0.5 * h200.dram_bandwidth_gb_s).all()
    assert (ample.gb_s > 0.8 * h200.dram_bandwidth_gb_s).all() and len(ample) >= 3
