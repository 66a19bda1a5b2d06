import json
from pathlib import Path

import numpy as np
import pytest

from synperf.cases import parse_case
from synperf.efficiency import QUANTILES, EfficiencyModel
from synperf.errors import SynperfError
from synperf.features import family_feature_names, family_features
from synperf.predict import demand_for, family_models, interval_margin, predict


def synthetic(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = 0.3 + 0.5 * np.abs(X[:, 0]) + 0.1 * rng.normal(size=n)
    return X, y


def test_quantile_heads_are_calibrated_on_held_out_rows():
    X, y = synthetic()
    model = EfficiencyModel(epochs=60, seed=1).fit(X[:2000], y[:2000], ("a", "b", "c", "d"))
    q = model.predict(X[2000:])
    below = [(y[2000:] < q[:, i]).mean() for i in range(3)]
    assert below == pytest.approx(QUANTILES.tolist(), abs=0.06)
    assert (q[:, 0] <= q[:, 1]).all() and (q[:, 1] <= q[:, 2]).all() and (q >= 0).all()


def test_ensemble_members_train_as_lone_networks_would():
    """The members are fitted together (stacked arrays) but each is exactly the network its own seed
    gives alone: member k of seed s is the lone network of seed s + k, bit for bit."""
    X, y = synthetic(n=700)
    names = ("a", "b", "c", "d")
    ensemble = EfficiencyModel(epochs=4, seed=5, members=3, weight_decay=1e-4).fit(X, y, names)
    for k in range(3):
        alone = EfficiencyModel(epochs=4, seed=5 + k, members=1, weight_decay=1e-4).fit(X, y, names)
        for stacked, single in zip(ensemble.weights_ + ensemble.biases_, alone.weights_ + alone.biases_):
            assert np.array_equal(stacked[k], single[0])
    assert not np.array_equal(ensemble.weights_[0][0], ensemble.weights_[0][1])


def test_interval_widening_and_the_margin_each_row_needs():
    """A wider interval keeps the median; a row falls inside the widened interval exactly when the
    margin it needs is at most the margin applied."""
    X, y = synthetic()
    model = EfficiencyModel(epochs=30, seed=1).fit(X[:2000], y[:2000], ("a", "b", "c", "d"))
    q, wide = model.predict(X[2000:]), model.predict(X[2000:], interval_margin=0.1)
    assert np.allclose(wide[:, 1], q[:, 1])
    assert np.allclose(wide[:, 2], np.minimum(q[:, 2] + 0.1, model.target_max_[0]))
    assert (wide[:, 0] <= q[:, 0]).all() and (wide >= 0).all()
    shifted = y[2000:] + 0.15                     # a die the model never saw: everything slower
    needed = model.interval_margin_needed(X[2000:], shifted)
    inside = (wide[:, 0] <= shifted) & (shifted <= wide[:, 2])
    assert np.array_equal(inside, needed <= 0.1)
    assert np.mean(needed <= 0.0) < 0.8 < np.mean(needed <= 0.3)


def test_unseen_dies_get_the_calibrated_interval():
    """The shipped cards carry the margin that other GPUs' measurements required, with each GPU's
    coverage when the margin is fitted on the others; on the die trained on (H200, H100) the margin
    that a held-back fifth of the training rows needed, a smaller one."""
    from synperf.gpu import resolve_gpu
    from synperf.predict import interval_margin
    hopper, ampere = resolve_gpu("h200").silicon_family, resolve_gpu("a100-sxm4-80gb").silicon_family
    for family in ("gemm", "moe", "attention"):
        card = family_models()[family][1]
        interval = card["unseen_silicon_interval"]
        assert interval["margin"] > 0.0 and len(interval["gpus"]) >= 3
        assert interval_margin(card, ampere) == interval["margin"]
        assert interval_margin(card, hopper) == card["seen_silicon_interval"]["margin"] < interval["margin"]
        assert interval["coverage_80_without"] < 0.8
        assert np.mean(list(interval["coverage_80_each_gpu_held_out"].values())) > interval["coverage_80_without"]
    a100 = resolve_gpu("a100-sxm4-80gb")
    wide = predict(parse_case({"family": "gemm", "m": 512, "n": 4096, "k": 4096}), a100)
    plain = predict(parse_case({"family": "gemm", "m": 512, "n": 4096, "k": 4096}), resolve_gpu("h100-sxm"))
    assert wide.latency_high_us / wide.latency_us > plain.latency_high_us / plain.latency_us


def test_save_load_round_trip_is_exact_and_needs_no_pickle(tmp_path):
    X, y = synthetic(500)
    model = EfficiencyModel(epochs=5).fit(X, y, ("a", "b", "c", "d"))
    model.save(tmp_path / "m", {"family": "test", "rows": 500, "gpus": ["h200"]})
    loaded, card = EfficiencyModel.load(tmp_path / "m")
    assert card["feature_names"] == ["a", "b", "c", "d"]
    assert np.array_equal(loaded.predict(X), model.predict(X))
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:   # plain arrays only
        assert all(data[key].dtype != object for key in data.files)


def test_tampered_or_truncated_weights_fail_loudly(tmp_path):
    X, y = synthetic(300)
    EfficiencyModel(epochs=2).fit(X, y, ("a", "b", "c", "d")).save(tmp_path / "m", {"rows": 300, "gpus": []})
    raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "m.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SynperfError, match="unreadable or damaged"):
        EfficiencyModel.load(tmp_path / "m")
    EfficiencyModel(epochs=2).fit(X, y, ("a", "b", "c", "d")).save(tmp_path / "m", {"rows": 300, "gpus": []})
    card = json.loads((tmp_path / "m.json").read_text())
    card["feature_names"] = ["a", "b"]
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(SynperfError, match="inconsistent shapes"):
        EfficiencyModel.load(tmp_path / "m")


def test_shipped_models_cover_every_family_and_match_the_features():
    models = family_models()
    assert set(models) == {"gemm", "attention", "moe", "rmsnorm", "silu_and_mul", "rope"}
    for family, (model, card) in models.items():
        assert model.feature_names_in_ == family_feature_names(family)
        assert card["rows"] > 100


def test_predictions_use_the_model_and_flag_inputs_outside_training(h100):
    cold = parse_case({"family": "gemm", "m": 512, "n": 4096, "k": 4096})
    warm = parse_case({"family": "gemm", "m": 512, "n": 4096, "k": 4096, "cache": "warm"})
    p = predict(cold, h100)
    assert p.model.startswith("mlp:gemm") and not p.ood
    assert p.ceiling_us <= p.latency_low_us <= p.latency_us <= p.latency_high_us
    # cuBLAS was also timed with warm operands: a warm call is in range, and faster than a cold one
    assert not predict(warm, h100).ood and predict(warm, h100).latency_us < p.latency_us
    fp8 = {"family": "gemm", "dtype": "fp8_e4m3", "library": "cublaslt_scaled_mm", "m": 512, "n": 4096, "k": 4096}
    fp8_cold, fp8_warm = (predict(parse_case({**fp8, "cache": c}), h100) for c in ("cold", "warm"))
    assert not fp8_warm.ood and fp8_warm.latency_us < fp8_cold.latency_us    # FP8 timed warm too since 2026-11-30
    # DeepSeek-style block-scaled FP8 GEMMs are in public data only: the shipped model never saw the library
    assert predict(parse_case({**fp8, "library": "fp8_block"}), h100).ood
    x = family_features(cold, demand_for(cold, h100))
    assert x.shape == (len(family_feature_names("gemm")),) and np.isfinite(x).all()


def test_evaluation_reports_the_model_beside_its_baselines():
    """On held-out H200 rows the learned model beats the roofline and the NeuSight-style baseline."""
    import hashlib
    pq = pytest.importorskip("pyarrow.parquet")
    from synperf.gpu.registry import default_registry
    from synperf.train import evaluate
    rows = pq.read_table(Path(__file__).resolve().parents[1] / "data" / "h200" / "rmsnorm.parquet").to_pylist()
    held = [r for r in rows if int(hashlib.sha1(r["id"].encode()).hexdigest(), 16) % 5 == 0]
    train = [r for r in rows if int(hashlib.sha1(r["id"].encode()).hexdigest(), 16) % 5 != 0]
    report = evaluate(held, default_registry(), family_models(), baseline_records=train, epochs=40)
    assert {r["library"] for r in report} == {"flashinfer", "torch", "triton"}
    for r in report:
        assert np.isfinite([r["mlp_mape"], r["neusight_mape"], r["roofline_mape"], r["analytical_mape"]]).all()
        assert r["mlp_mape"] < r["roofline_mape"]


def test_untrained_variant_is_flagged_out_of_range():
    """FlashInfer decode was profiled at page sizes 1 (SGLang's default, every token its own page),
    16 and 64, over BF16 and FP8 KV caches: a page size of 32 is another code path the model never
    saw, so its prediction says it is out of range."""
    from synperf.cases import parse_case
    from synperf.gpu.registry import resolve_gpu
    from synperf.predict import predict

    h200 = resolve_gpu("h200")
    case = {"family": "attention", "library": "flashinfer", "phase": "decode", "dtype": "bf16", "batch": 8,
            "kv_len": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128}
    for trained in ({"page_size": 16}, {"page_size": 1}, {"page_size": 1, "cuda_graph": True}, {"page_size": 64},
                    {"page_size": 16, "kv_cache_dtype": "fp8_e4m3"}, {"page_size": 1, "kv_cache_dtype": "fp8_e4m3"}):
        assert not predict(parse_case({**case, **trained}), h200).ood
    assert predict(parse_case({**case, "page_size": 32}), h200).ood
    assert predict(parse_case({**case, "page_size": 32, "kv_cache_dtype": "fp8_e4m3"}), h200).ood


def test_a_dirty_l2_costs_what_the_measured_twins_say():
    """Shapes timed after both flushes (data/h200): the shipped GEMM model prices the dirty L2 as
    slower, by about what the twins measured, for the short kernels where it matters."""
    pq = pytest.importorskip("pyarrow.parquet")
    from synperf.gpu import resolve_gpu
    h200 = resolve_gpu("h200")
    rows = pq.read_table(Path(__file__).resolve().parents[1] / "data" / "h200" / "gemm.parquet",
                         columns=["case_json", "cache", "latency_us", "library"]).to_pylist()
    by_shape = {}
    for r in rows:
        case = json.loads(r["case_json"])
        case.pop("cache")
        by_shape.setdefault(json.dumps(case, sort_keys=True), {})[r["cache"]] = r["latency_us"]
    twins = [(json.loads(k), v) for k, v in by_shape.items() if len(v) == 2 and v["cold"] < 20]
    assert len(twins) > 500
    measured, predicted = [], []
    for case, lat in twins[:300]:
        clean = predict(parse_case(dict(case, cache="cold")), h200).latency_us
        dirty = predict(parse_case(dict(case, cache="cold_dirty")), h200).latency_us
        measured.append(lat["cold_dirty"] / lat["cold"])
        predicted.append(dirty / clean)
    assert np.median(measured) > 1.05                       # the effect is real in the data
    assert np.median(predicted) == pytest.approx(np.median(measured), abs=0.05)


def test_dirty_l2_awareness_follows_the_twins(monkeypatch):
    """A library counts as measured both ways only where a shape was timed after both flushes.
    FlashInfer and FA3 have such twins since 2026-11-29, so their dirty-L2 predictions are in
    range; a library without twins gets its dirty-L2 predictions flagged."""
    from synperf import predict as predict_module
    from synperf.gpu import resolve_gpu
    from synperf.train import dirty_aware_libraries
    h200 = resolve_gpu("h200")
    models = family_models()
    model, card = models["attention"]
    assert {"flash_attn2_torch_sdpa", "flashinfer", "fa3"} <= set(card["dirty_aware_libraries"])
    case = {"family": "attention", "library": "flashinfer", "phase": "decode", "batch": 8, "kv_len": 2048,
            "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "page_size": 16}
    assert not predict(parse_case(dict(case, cache="cold_dirty")), h200).ood

    norm = {"family": "rmsnorm", "tokens": 64, "hidden": 4096}
    cases = [parse_case(dict(norm, library="torch")), parse_case(dict(norm, library="torch", cache="cold_dirty")),
             parse_case(dict(norm, library="triton", cache="cold_dirty"))]
    group = {"latency": [1.0] * 3, "case": cases, "gpu": ["h200"] * 3}
    assert dirty_aware_libraries(group) == {"torch"}

    blind_card = dict(card, dirty_aware_libraries=["flash_attn2_torch_sdpa"])
    monkeypatch.setattr(predict_module, "family_models", lambda: dict(models, attention=(model, blind_card)))
    predict.cache_clear()
    try:
        assert not predict(parse_case(case), h200).ood
        assert predict(parse_case(dict(case, cache="cold_dirty")), h200).ood
    finally:
        predict.cache_clear()


def test_unaligned_triton_rows_are_slower_and_the_model_knows_why():
    """Triton vectorises a row kernel only when the row length is a multiple of 16 elements. On
    the committed H200 Triton RMSNorm / SiLU-and-mul rows the unaligned ones run further from their
    ceiling; the decomposition says so (narrower accesses) and the shipped models follow."""
    pq = pytest.importorskip("pyarrow.parquet")
    from synperf.dataset import case_of
    from synperf.gpu import resolve_gpu
    h200 = resolve_gpu("h200")
    root = Path(__file__).resolve().parents[1] / "data" / "h200"
    for family, dim in (("rmsnorm", "hidden"), ("silu_and_mul", "intermediate")):
        rows = [r for r in pq.read_table(root / f"{family}.parquet").to_pylist() if r["library"] == "triton"]
        slowness = {True: [], False: []}
        for row in rows:
            case = parse_case(case_of(row))
            demand = demand_for(case, h200)
            aligned = row[dim] % 16 == 0
            assert demand.launches[0].launch.access_bytes == (16 if aligned else 2)
            if demand.ceiling_us > 5:     # past the launch floor
                slowness[aligned].append((row["latency_us"] / demand.ceiling_us,
                                          predict(case, h200).latency_us / row["latency_us"]))
        unaligned, aligned = np.asarray(slowness[False]), np.asarray(slowness[True])
        assert len(unaligned) > 20
        assert np.median(unaligned[:, 0]) > 1.3 * np.median(aligned[:, 0])
        assert np.median(unaligned[:, 1]) == pytest.approx(1.0, abs=0.1)


def test_epochs_are_chosen_on_held_back_rows(monkeypatch):
    """Too short a training underfits the held-back fifth; the walk along the ladder goes on while
    the held-back error falls, stops at the first length that does not improve, and reports each
    probed length's error."""
    from synperf import train as training
    X, y = synthetic(n=1500)
    fold = training.held_back_fold([str(i) for i in range(len(y))], seed=0)
    monkeypatch.setattr(training, "EPOCH_LADDER", (1, 40))
    chosen, scores = training.select_epochs(X, y, ("a", "b", "c", "d"), fold, seed=0)
    assert set(scores) == {1, 40} and scores[40] < scores[1] and chosen == 40
    monkeypatch.setattr(training, "EPOCH_LADDER", (40, 1, 80))
    chosen, scores = training.select_epochs(X, y, ("a", "b", "c", "d"), fold, seed=0)
    assert set(scores) == {40, 1} and chosen == 40          # 1 is worse: 80 is never probed


def test_weight_decay_is_chosen_on_held_back_rows(monkeypatch):
    """Few noisy rows and many inputs overfit without decay: the walk along the decay ladder keeps
    a stronger decay only while the held-back error falls, reuses the first decay's error measured
    by the epoch walk, and stops before a decay that drives the network to a constant."""
    from synperf import train as training
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 12))
    y = 0.3 * np.tanh(X[:, 0]) + 0.15 * rng.normal(size=400)        # one input matters, the rest is noise
    y = y - y.min()
    names = tuple(f"x{i}" for i in range(12))
    fold = training.held_back_fold([str(i) for i in range(len(y))], seed=0)
    monkeypatch.setattr(training, "WEIGHT_DECAY_LADDER", (1e-5, 3e-2, 1e2))
    decay, scores = training.select_weight_decay(X, y, names, fold, seed=0, epochs=300)
    assert scores[3e-2] < scores[1e-5] * (1 - training.LADDER_GAIN) and decay == 3e-2
    assert scores[1e2] > scores[3e-2]                                    # too strong: probed, not kept
    decay, scores = training.select_weight_decay(X, y, names, fold, seed=0, epochs=300, first_mape=0.0)
    assert decay == 1e-5 and set(scores) == {1e-5, 3e-2}                 # nothing beats a perfect first


def test_epoch_walk_resumes_at_a_stronger_decay(monkeypatch):
    """A decay that moved off the ladder's first value can carry a longer training: the epoch walk
    resumes from the chosen length at that decay, reuses the decay walk's error there, and stops at
    the first longer length that gains less than LADDER_GAIN."""
    from synperf import train as training
    held_back = {300: 0.080, 600: 0.0795, 1200: 0.05}
    probed = []

    def probe(X, y, names, fold, seed, epochs, weight_decay):
        probed.append((epochs, weight_decay))
        return held_back[epochs]

    monkeypatch.setattr(training, "_probe_mape", probe)
    chosen, scores = training.resume_epochs_at_decay(None, None, (), None, 0, 150, 1e-3, 0.100)
    assert chosen == 300 and probed == [(300, 1e-3), (600, 1e-3)]       # 600 gains 0.6 %: 1200 never probed
    assert scores == {150: 0.100, 300: 0.080, 600: 0.0795}


def test_held_back_fold_keeps_a_shapes_rows_together():
    """Twins (clean and dirty L2) and repeats of one shape land on the same side of the held-back
    split, as they do in the train/test split; about a fifth of the shapes are held back."""
    pq = pytest.importorskip("pyarrow.parquet")
    from pathlib import Path

    from synperf import train as training
    from synperf.dataset import shape_key
    rows = pq.read_table(Path(__file__).resolve().parents[1] / "data" / "h200" / "rmsnorm.parquet").to_pylist()
    keys = [shape_key(r) for r in rows]
    fold = training.held_back_fold(keys, seed=0)
    sides: dict = {}
    for key, held in zip(keys, fold):
        sides.setdefault(key, set()).add(bool(held))
    assert len(sides) < len(keys)                        # the file has twins and repeats
    assert all(len(s) == 1 for s in sides.values())
    share = np.mean([next(iter(s)) for s in sides.values()])
    assert 0.15 < share < 0.25
    assert not np.array_equal(fold, training.held_back_fold(keys, seed=1))


def test_training_rows_choose_their_gemm_kernel_as_new_shapes_do():
    """The tile table holds every training shape: looked up as such, a training row gets the kernel
    cuBLAS ran for it, while a new shape gets its neighbours' choice. ``as_new_shape`` leaves the
    row's own shape out, so training features are those the model meets on new shapes."""
    pq = pytest.importorskip("pyarrow.parquet")
    import json
    from pathlib import Path

    from synperf.dataset import holdout_split
    from synperf.gpu import resolve_gpu
    from synperf.kernels import gemm
    h200 = resolve_gpu("h200")
    rows = pq.read_table(Path(__file__).resolve().parents[1] / "data" / "h200" / "gemm.parquet",
                         filters=[("library", "=", "cublas")]).to_pylist()
    train, test = holdout_split(rows, 0.2)      # the split the shipped tile table was built from
    rng = np.random.default_rng(0)

    def exact_share(sample, new_shape):
        hits = []
        for i in rng.choice(len(sample), 300, replace=False):
            r = sample[int(i)]
            call = gemm.GemmCall(int(r["m"]), int(r["n"]), int(r["k"]), r["dtype"], "cublas")
            ran = gemm.config_from_profile(call, *(json.loads(r[f]) for f in ("kernel_names", "grids", "blocks",
                                                                              "shared_mem")))
            hits.append(gemm.choose_config(gemm.as_new_shape(call) if new_shape else call, h200) == ran)
        return float(np.mean(hits))

    seen, unseen, new = exact_share(train, False), exact_share(train, True), exact_share(test, False)
    assert seen > 0.7 and new < 0.35
    assert abs(unseen - new) < 0.15


def test_a_cache_state_no_training_row_had_is_blinded_and_flagged():
    """No training row of FlashInfer's FA3 prefill (``fa3``) was measured warm: a warm one is priced
    with the warm flag off (its demand still reads L2-resident operands from L2) and flagged out of
    range, instead of letting the network extrapolate a flag it only ever saw at zero. Both GEMM
    libraries, MoE and every norm and activation library have warm rows (2026-11-30), so their warm
    predictions use the flag."""
    from synperf.features import WARM_COLUMN, blind_unmeasured
    from synperf.gpu import resolve_gpu
    h200 = resolve_gpu("h200")
    model, card = family_models()["attention"]
    assert "fa3" not in card["warm_aware_libraries"] and "flashinfer" in card["warm_aware_libraries"]
    assert {"cublas", "cublaslt_scaled_mm"} <= set(family_models()["gemm"][1]["warm_aware_libraries"])
    assert "triton_fused_moe" in family_models()["moe"][1]["warm_aware_libraries"]
    for family in ("rmsnorm", "silu_and_mul", "rope"):
        assert set(family_models()[family][1]["warm_aware_libraries"]) == {"flashinfer", "torch", "triton"}
    shape = {"family": "attention", "library": "fa3", "phase": "prefill", "batch": 2, "q_len": 2048,
             "kv_len": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 128, "causal": True}
    case = parse_case(dict(shape, cache="warm"))
    x = family_features(case, demand_for(case, h200))[None]
    assert x[0, WARM_COLUMN] == 1.0
    aware = set(card["dirty_aware_libraries"])
    blinded = blind_unmeasured(x, ["fa3"], aware, set(card["warm_aware_libraries"]))
    assert blinded[0, WARM_COLUMN] == 0.0 and (np.delete(blinded, WARM_COLUMN, 1) == np.delete(x, WARM_COLUMN, 1)).all()
    assert (blind_unmeasured(x, ["fa3"], aware, {"fa3"}) == x).all()
    warm = predict(case, h200)
    assert warm.ood and not predict(parse_case(shape), h200).ood
    mid = model.predict(blinded, interval_margin=interval_margin(card, h200.silicon_family))[0][1]
    assert warm.latency_us == pytest.approx(warm.ceiling_us * np.exp(mid))


def test_leave_one_gpu_out_chooses_weight_decay_without_the_held_out_die(monkeypatch):
    """Each held-out die is predicted by a model whose weight decay was chosen on the other dies'
    rows alone, as ``synperf train`` chooses it; the chosen decay is reported with the result."""
    pq = pytest.importorskip("pyarrow.parquet")
    from pathlib import Path

    from synperf import train as training
    from synperf.gpu.registry import default_registry
    rows = pq.read_table(Path(__file__).resolve().parents[1] / "data" / "h200" / "rmsnorm.parquet").to_pylist()
    rows = [r for r in rows if r["library"] == "flashinfer" and r["cache"] == "cold"][:600]
    for r in rows[::2]:                        # a second die: the same calls relabelled as measured on an A100
        r["gpu_name"] = "NVIDIA A100-SXM4-80GB"
    seen = []
    real_select = training.select_weight_decay

    def recording_select(X, y, names, fold, seed, epochs, first_mape=None):
        seen.append(len(y))
        return real_select(X, y, names, fold, seed, epochs, first_mape)

    monkeypatch.setattr(training, "select_weight_decay", recording_select)
    monkeypatch.setattr(training, "WEIGHT_DECAY_LADDER", (1e-5, 1e-3))
    out = training.leave_one_gpu_out(rows, default_registry(), epochs=20, members=1)
    assert {r["gpu"] for r in out} == {"h200", "a100-sxm4-80gb"}
    assert sorted(seen) == [300, 300]          # each selection saw the other die's 300 rows only
    assert all(r["weight_decay"] in (1e-5, 1e-3) and np.isfinite(r["mlp_mape"]) for r in out)


def test_families_fitted_in_parallel_get_the_same_weights(tmp_path):
    """`synperf train --jobs 2` fits two families at once, one process each: the weights and cards
    are the ones a single process writes (only the timing differs)."""
    pytest.importorskip("torch")
    pq = pytest.importorskip("pyarrow.parquet")
    from pathlib import Path

    from synperf.gpu.registry import default_registry
    from synperf.train import train
    data = Path(__file__).resolve().parents[1] / "data" / "h200"
    rows = [r for family in ("rmsnorm", "silu_and_mul") for r in pq.read_table(data / f"{family}.parquet").to_pylist()[:300]]
    cards = {}
    for jobs in (1, 2):
        cards[jobs] = train(rows, default_registry(), tmp_path / str(jobs), epochs=3, members=2, jobs=jobs)
    assert [c["family"] for c in cards[2]] == ["rmsnorm", "silu_and_mul"]
    for one, two in zip(cards[1], cards[2]):
        assert {k: v for k, v in one.items() if k != "train_seconds"} == {k: v for k, v in two.items() if k != "train_seconds"}
        a, b = np.load(tmp_path / "1" / f"{one['family']}.npz"), np.load(tmp_path / "2" / f"{two['family']}.npz")
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
