"""Chrome-trace parsing and rep splitting on a synthetic trace (no torch)."""

import json

import pytest

from synperf.profile import trace as tr


def _k(name, ts, dur, cat="kernel", **args):
    a = {"device": 0, "stream": 7, "grid": [4, 1, 1], "block": [128, 1, 1],
         "registers per thread": 32, "shared memory": 1024}
    a.update(args)
    return {"ph": "X", "cat": cat, "name": name, "pid": 0, "tid": 7, "ts": ts, "dur": dur, "args": a}


def synthetic_trace():
    ev = []
    t = 1000.0
    # case 0: warm-up kernels (ignored), 3 reps of two kernels, marker
    ev.append(_k("warmup_gemm", t, 5.0)); t += 10
    for rep in range(3):
        ev.append(_k("synperf_l2_flush", t, 50.0, grid=[65536, 1, 1])); t += 60
        ev.append(_k("gemm_kernel", t, 10.0 + rep, grid=[2, 66, 1], **{"shared memory": 213188})); t += 15
        ev.append(_k("Memset (Device)", t, 1.0, cat="gpu_memset")); t += 2
    ev.append(_k("synperf_case_end", t, 1.0)); t += 5
    # noise between cases: input creation, warm-up, a CPU op and another device
    ev.append(_k("randn_kernel", t, 30.0)); t += 40
    ev.append({"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": t, "dur": 3})
    ev.append(_k("other_device_kernel", t + 1, 3.0, device=1))
    # case 1: 2 reps of one kernel
    for rep in range(2):
        ev.append(_k("synperf_l2_flush", t, 50.0)); t += 60
        ev.append(_k("rms_kernel", t, 4.0)); t += 5
    ev.append(_k("synperf_case_end", t, 1.0)); t += 5
    # case 2 failed after its first flush: empty segment
    ev.append(_k("synperf_l2_flush", t, 50.0)); t += 60
    ev.append(_k("synperf_case_end", t, 1.0))
    return {"traceEvents": ev[::-1]}  # unsorted on purpose


def test_load_sort_and_filter(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps(synthetic_trace()))
    evs = tr.load_gpu_events(str(p), device=0)
    assert [e["ts"] for e in evs] == sorted(e["ts"] for e in evs)
    names = [e["name"] for e in evs]
    assert "aten::mm" not in names and "other_device_kernel" not in names
    assert "Memset (Device)" in names
    g = next(e for e in evs if e["name"] == "gemm_kernel")
    assert g["grid"] == [2, 66, 1] and g["block"] == [128, 1, 1]
    assert g["registers"] == 32 and g["shared_mem"] == 213188


def test_split_assign_and_summarize():
    evs = tr.load_gpu_events(synthetic_trace(), device=0)
    segs = tr.split_reps(evs)
    assert len(segs) == 6
    grouped = tr.assign_segments(segs, [0, 0, 0, 1, 1, 2])
    s0 = tr.summarize_reps(grouped[0])
    assert s0["n_reps"] == 3
    assert s0["latency_us"] == pytest.approx(12.0)  # median of 11, 12, 13 (kernel + memset)
    assert s0["min_us"] == pytest.approx(11.0) and s0["max_us"] == pytest.approx(13.0)
    assert s0["kernel_names"] == ["gemm_kernel", "[gpu_memset] Memset (Device)"]
    assert s0["grids"][0] == [2, 66, 1] and s0["shared_mem"][0] == 213188
    assert s0["kernels_consistent"] is True
    assert "warmup_gemm" not in s0["kernel_names"]
    s1 = tr.summarize_reps(grouped[1])
    assert s1["latency_us"] == pytest.approx(4.0) and s1["kernel_names"] == ["rms_kernel"]
    assert "randn_kernel" not in s1["kernel_names"]
    with pytest.raises(ValueError):
        tr.summarize_reps(grouped[2])


def test_assign_rejects_count_mismatch():
    segs = tr.split_reps(tr.load_gpu_events(synthetic_trace()))
    with pytest.raises(ValueError):
        tr.assign_segments(segs, [0, 0, 0])
