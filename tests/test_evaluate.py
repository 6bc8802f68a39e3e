"""Evaluation: each metric against answers worked out by hand, then the command end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from sempair.cli import main
from sempair.config import load_config
from sempair.dataset import ClipDataset
from sempair.evaluate import EvaluationError, evaluate, gate, score
from sempair.evaluate.anomaly import AnomalyScorer, anomaly_metrics, fit_scorer
from sempair.evaluate.embeddings import Embeddings, encode, handcrafted, load_encoders
from sempair.evaluate.pairs import agreement, relation_quality
from sempair.evaluate.probe import (
    Probe,
    c_grid,
    fit_probe,
    localization,
    probe_features,
    release_c,
)
from sempair.evaluate.release import make_release
from sempair.evaluate.search import event_search, rank
from sempair.pairing import Partners
from sempair.serving.bundle import _write_modality_probes
from tests.conftest import TRAIN_SMALL

METRICS = {"localization_accuracy", "localization_macro_f1", "anomaly_knn_auc",
           "anomaly_knn_ap", "anomaly_disagreement_auc", "anomaly_combined_auc",
           "anomaly_combined_ap", "search_a2v_map", "search_v2a_map", "search_v2v_map",
           "search_v2v_r1", "search_v2v_r10", "pairs_temporal_precision",
           "pairs_epg_precision", "pairs_epg_recall", "pairs_epg_fn_rate",
           "pairs_mined_precision", "pairs_base_rate", "clips_train", "clips_test"}


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(per_class=12, noise=0.05, seed=0, anomalies=0):
    """Two recordings per split; each label is a direction, audio and video agree."""
    rng = np.random.default_rng(seed)
    labels = ["background", "car", "siren"] * per_class
    centres = {name: unit(rng.standard_normal((1, 16)))[0] for name in sorted(set(labels))}
    base = np.stack([centres[name] for name in labels])
    n = len(labels)
    clips = pd.DataFrame({
        "recording": [f"r{i % 4}.mp4" for i in range(n)], "clip": np.arange(n) // 4,
        "split": ["train" if i % 4 < 2 else "test" for i in range(n)],
        "label": labels, "anomaly": np.zeros(n, np.int8)})
    audio = unit(base + noise * rng.standard_normal(base.shape))
    video = unit(base + noise * rng.standard_normal(base.shape))
    test = np.flatnonzero(clips["split"] == "test")[:anomalies]
    for i in test:   # anomalies: far from everything, and audio disagrees with video
        audio[i], video[i] = unit(rng.standard_normal((2, 16)))
        clips.loc[i, "anomaly"] = 1
    return Embeddings(audio, video, clips, cross_modal=True)


def test_average_precision_matches_a_ranking_worked_by_hand():
    # gallery along one axis: cosine to the query falls with the index
    angles = np.linspace(0, np.pi / 2, 5)
    gallery = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    query = np.array([[1.0, 0.0]], np.float32)
    labels = np.array(["a", "b", "a", "b", "a"])       # relevant at ranks 1, 3, 5
    ap, top, scores = rank(query, np.array(["a"]), gallery, labels)
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert top[0, :5].tolist() == [0, 1, 2, 3, 4]
    assert np.all(np.diff(scores[0, :5]) <= 0)


def test_clean_clusters_score_perfectly_and_planted_anomalies_are_found():
    emb = clustered()
    located = localization(emb, c=1.0)
    assert located.accuracy > 0.9 and located.macro_f1 > 0.9
    assert located.confusion.sum() == len(emb.rows("test"))
    metrics, _ = event_search(emb)
    for direction in ("a2v", "v2a", "v2v"):
        assert metrics[f"search_{direction}_map"] > 0.9
        assert metrics[f"search_{direction}_r1"] > 0.9
    emb = clustered(anomalies=3)
    anomaly, scores = anomaly_metrics(emb, fit_scorer(emb, k=3))
    for name in ("knn", "disagreement", "combined"):
        assert anomaly[f"anomaly_{name}_auc"] == pytest.approx(1.0)
        assert len(scores[name]) == len(emb.rows("test"))


def test_random_embeddings_score_at_chance():
    emb = clustered(per_class=60, noise=100.0, anomalies=6)   # noise swamps the classes
    metrics, _ = event_search(emb)
    # chance mAP is about the share of relevant items (1/3 per event label)
    assert 0.2 < metrics["search_v2v_map"] < 0.5
    anomaly, _ = anomaly_metrics(emb, fit_scorer(emb, k=3))
    assert anomaly["anomaly_knn_auc"] < 0.8


def test_pair_quality_counts_match_the_definitions():
    labels = np.array(["car", "car", "car", "background", "siren"])
    # pairs (0,1) same event, (1,3) different, (3,4) different
    partners = Partners.from_edges(5, np.array([0, 1, 3]), np.array([1, 3, 4]))
    precision, recall = relation_quality(partners, labels)
    assert precision == pytest.approx(2 / 6)       # 6 directed edges, 2 with the same label
    assert recall == pytest.approx(2 / 6)          # car: 3·2 = 6 ordered same-event pairs
    recording = np.array([0, 0, 1, 1, 1])
    assert agreement(partners, recording) == pytest.approx(4 / 6)   # (1,3) crosses


def test_hand_made_features_have_no_cross_modal_tasks(synth_dataset, cfg):
    emb = handcrafted(ClipDataset(synth_dataset), batch_size=64)
    assert not emb.cross_modal
    assert np.allclose(np.linalg.norm(emb.audio, axis=1), 1, atol=1e-5)
    metrics = score(emb, cfg).metrics
    assert math.isnan(metrics["search_a2v_map"]) and math.isnan(metrics["pairs_epg_precision"])
    assert math.isnan(metrics["anomaly_disagreement_auc"])
    assert np.isfinite(metrics["search_v2v_map"]) and np.isfinite(metrics["localization_macro_f1"])


def test_unlabelled_data_is_refused_with_the_fix(cfg):
    emb = clustered()
    bare = Embeddings(emb.audio, emb.video, emb.clips.drop(columns=["label", "anomaly"]), True)
    with pytest.raises(EvaluationError, match=r"events\.csv"):
        score(bare, cfg)


def test_gate_fails_on_a_missing_metric_and_on_a_low_one(cfg):
    checks = gate({"localization_macro_f1": 0.9, "search_v2v_map": 0.01,
                   "anomaly_combined_auc": math.nan}, cfg.evaluate)
    assert [c.passed for c in checks] == [True, False, False]
    assert "FAIL" in str(checks[1])


def test_evaluate_command_writes_metrics_report_and_a_usable_probe(tmp_path, small_model,
                                                                     synth_dataset):
    out = tmp_path / "eval"
    assert main(["evaluate", str(small_model), str(synth_dataset), str(out), "-q",
                 "--set", "evaluate.map_method=pca"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())   # strict JSON: nan is null
    assert metrics.keys() >= METRICS
    assert 0 <= metrics["localization_accuracy"] <= 1
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["dataset"] == evaluation["trained_on"]
    assert len(evaluation["gate"]["checks"]) == 3
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "localization_macro_f1" in html
    # the saved probe is plain arrays and gives the evaluation's own predictions
    probe = Probe.load(out / "probe.npz")
    summary = evaluate(small_model, synth_dataset, tmp_path / "again",
                       load_config(None, TRAIN_SMALL), report=False)
    assert summary.metrics["localization_accuracy"] == pytest.approx(
        metrics["localization_accuracy"])
    assert set(probe.classes) >= set(summary.localization.predicted)
    # ... and so is the anomaly scorer: reloaded, it scores the test clips the same way
    scorer = AnomalyScorer.load(out / "anomaly.npz")
    emb = encode(load_encoders(small_model)[0], ClipDataset(synth_dataset), 64)
    test = emb.rows("test")
    reloaded = scorer.scores(emb.audio[test], emb.video[test])["combined"]
    _, original = anomaly_metrics(emb, fit_scorer(emb, scorer.k))
    assert np.allclose(reloaded, original["combined"], atol=1e-4)


def test_evaluate_refuses_a_model_trained_on_other_features(tmp_path, small_model,
                                                            synth_dataset):
    saved = small_model.parent / "other-features"
    saved.mkdir(exist_ok=True)
    import torch

    weights = torch.load(small_model / "model.pt", weights_only=False)
    weights["features"] = weights["features"] | {"n_mels": 32}
    torch.save(weights, saved / "model.pt")
    with pytest.raises(EvaluationError, match="ingest the recordings again"):
        evaluate(saved, synth_dataset, tmp_path / "eval", load_config())


def test_release_bundles_a_passed_model_and_refuses_a_failed_one(tmp_path, small_model,
                                                                 synth_dataset):
    lenient = ["evaluate.gate_macro_f1=0", "evaluate.gate_search_map=0",
               "evaluate.gate_anomaly_auc=-1", "evaluate.map_method=pca"]
    strict = ["evaluate.gate_macro_f1=1.01", "evaluate.map_method=pca"]
    passed = evaluate(small_model, synth_dataset, tmp_path / "ok", load_config(None, lenient))
    failed = evaluate(small_model, synth_dataset, tmp_path / "no", load_config(None, strict))
    assert not failed.passed
    with pytest.raises(EvaluationError, match="gate failed"):
        make_release(small_model, tmp_path / "no", tmp_path / "release-no")
    if not passed.passed:     # anomaly AUC is nan when the test split has no anomaly
        pytest.skip(f"the tiny test split cannot pass any gate: {passed.gate}")
    card = make_release(small_model, tmp_path / "ok", tmp_path / "release")
    assert card["gate"]["passed"] and card["dataset_id"] == card["evaluated_on"]
    assert set(card["files"]) == {p.name for p in (tmp_path / "release").iterdir()} - {
        "release.json"}


def test_probe_features_are_audio_then_video():
    emb = clustered()
    x = probe_features(emb)
    assert x.shape == (len(emb.clips), emb.audio.shape[1] + emb.video.shape[1])
    assert np.array_equal(x[:, :16], emb.audio)


def test_an_evaluation_without_report_can_be_released(tmp_path, small_model, synth_dataset):
    out = tmp_path / "eval"
    lenient = ["evaluate.gate_macro_f1=0", "evaluate.gate_search_map=0",
               "evaluate.gate_anomaly_auc=-1", "evaluate.map_method=pca"]
    assert main(["evaluate", str(small_model), str(synth_dataset), str(out), "-q",
                 "--no-report", *[arg for item in lenient for arg in ("--set", item)]]) == 0
    assert not (out / "report.html").exists()
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["report"] is False
    if not evaluation["gate"]["passed"]:   # anomaly AUC is nan when the test split has none
        pytest.skip(f"the tiny test split cannot pass any gate: {evaluation['gate']}")
    card = make_release(small_model, out, tmp_path / "release")
    assert "report.html" not in card["files"] and "probe.npz" in card["files"]
    assert set(card["files"]) == {p.name for p in (tmp_path / "release").iterdir()} - {
        "release.json"}


# -- the probe: C chosen on val, class-balanced, the same fit in serving --------------------

BACKBONE_METRICS = {"backbone_localization_accuracy", "backbone_localization_macro_f1",
                    "backbone_localization_c", "backbone_search_v2v_map",
                    "backbone_anomaly_knn_auc"}


def diagonal_bands(seed=0):
    """2-D train clips in two parallel diagonal bands: the class means differ along the
    bands, the gap between them runs across, so a strongly regularised probe (small C,
    weights ~ the mean difference) and a weak one (large C, the max margin) disagree."""
    rng = np.random.default_rng(seed)
    t0, t1 = rng.uniform(-3, 3, 40), rng.uniform(0, 6, 40)
    x = np.concatenate([np.stack([t0, t0 + 0.5], 1), np.stack([t1, t1 - 0.5], 1)])
    return x, np.array(["car"] * 40 + ["siren"] * 40)


def held_out_embeddings(x_train, y_train, x_held, val_labels, test_labels):
    """Train clips, then the same held-out clips twice: once as val, once as test."""
    x = np.concatenate([x_train, x_held, x_held]).astype(np.float32)
    n, m = len(x_train), len(x_held)
    clips = pd.DataFrame({"recording": ["r.mp4"] * (n + 2 * m),
                          "split": ["train"] * n + ["val"] * m + ["test"] * m,
                          "label": [*y_train, *val_labels, *test_labels],
                          "anomaly": np.zeros(n + 2 * m, np.int8)})
    return Embeddings(x, np.zeros((len(x), 1), np.float32), clips, cross_modal=False)


def test_the_probe_c_is_chosen_on_val_never_on_test():
    x, y = diagonal_bands()
    strong, weak = fit_probe(x, y, 0.01), fit_probe(x, y, 10.0)
    grid = np.stack(np.meshgrid(np.linspace(-4, 8, 25), np.linspace(-4, 8, 25)), -1)
    grid = grid.reshape(-1, 2)                                              # [625, 2]
    held = grid[strong.predict(grid) != weak.predict(grid)]     # where the two Cs disagree
    assert len(set(strong.predict(held))) == 2
    # val agrees with the strong probe, test with the weak one: val must win
    located = localization(held_out_embeddings(x, y, held, strong.predict(held),
                                               weak.predict(held)), c=1.0)
    assert located.c == pytest.approx(0.01)
    assert sorted(located.c_scores) == pytest.approx(list(c_grid(1.0)))
    assert located.c_scores[located.c] == pytest.approx(1.0)
    assert located.macro_f1 == pytest.approx(0.0)     # test disagrees everywhere: unseen
    # the same clips with val and test swapped: the choice follows val
    swapped = localization(held_out_embeddings(x, y, held, weak.predict(held),
                                               strong.predict(held)), c=1.0)
    assert swapped.c == pytest.approx(10.0) and swapped.macro_f1 == pytest.approx(0.0)


def test_ties_on_val_go_to_the_stronger_regularisation_and_no_val_falls_back():
    x, y = diagonal_bands()
    far = np.array([[-3.0, 3.0], [6.0, 0.0]])         # every C gets these right
    located = localization(held_out_embeddings(x, y, far, ["car", "siren"],
                                               ["car", "siren"]), c=2.0)
    assert set(located.c_scores.values()) == {1.0} and located.c == pytest.approx(0.02)
    emb = clustered()                                 # train and test only
    located = localization(emb, c=3.0)
    assert located.c == 3.0 and located.c_scores == {}


def test_class_balance_gives_the_minority_class_its_share():
    # 60 background clips over [-2, 2], 6 siren clips over [1, 3]: at 2.0 the sirens are
    # the better explanation per class, background only by headcount
    x = np.concatenate([np.linspace(-2, 2, 60), np.linspace(1, 3, 6)])[:, None]
    y = np.array(["background"] * 60 + ["siren"] * 6)
    query = np.array([[2.0]])
    standardise = lambda v: (v - x.mean(0)) / x.std(0)   # noqa: E731
    unweighted = LogisticRegression(C=1.0, max_iter=2000).fit(standardise(x), y)
    assert unweighted.predict(standardise(query)).tolist() == ["background"]
    assert fit_probe(x, y, 1.0).predict(query).tolist() == ["siren"]


def test_a_two_class_probe_gives_scikit_learns_probabilities():
    x, y = diagonal_bands()
    probe = fit_probe(x, y, 1.0)
    assert probe.weight.shape == (2, 2)
    fitted = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(
        (x - probe.mean) / probe.scale, y)
    assert np.allclose(probe.probabilities(x),
                       fitted.predict_proba((x - probe.mean) / probe.scale), atol=1e-5)
    assert set(probe.predict(x)) == {"car", "siren"}


def test_the_release_c_is_the_chosen_one_and_older_evaluations_keep_probe_c():
    assert release_c({"probe": {"c": 0.1}, "evaluate": {"probe_c": 1.0}}) == 0.1
    assert release_c({"evaluate": {"probe_c": 1.0}}) == 1.0


def test_backbone_metrics_and_the_chosen_c_are_written_and_serving_fits_the_same_probe(
        tmp_path, small_model, synth_dataset):
    out = tmp_path / "eval"
    cfg = load_config(None, ["evaluate.map_method=pca"])
    summary = evaluate(small_model, synth_dataset, out, cfg, report=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics.keys() >= BACKBONE_METRICS | {"localization_c"}
    assert "backbone_search_a2v_map" not in metrics     # two spaces: no cross-modal task
    assert 0 <= metrics["backbone_localization_macro_f1"] <= 1
    assert "backbone_localization_macro_f1" in str(summary)
    evaluation = json.loads((out / "evaluation.json").read_text())
    probe = evaluation["probe"]
    assert probe["c"] == metrics["localization_c"] and probe["class_weight"] == "balanced"
    assert evaluation["backbone_probe"]["c"] == metrics["backbone_localization_c"]
    assert probe["c"] in probe["grid"] or probe["c"] == cfg.evaluate.probe_c
    # the released probe is the class-balanced fit on train with the recorded C
    data = ClipDataset(synth_dataset)
    emb = encode(load_encoders(small_model)[0], data, 64)
    labels, train = emb.clips["label"].to_numpy().astype(str), emb.rows("train")
    saved, refit = Probe.load(out / "probe.npz"), fit_probe(probe_features(emb)[train],
                                                            labels[train], probe["c"])
    assert np.array_equal(saved.classes, refit.classes)
    assert np.allclose(saved.weight, refit.weight, atol=1e-3)
    # the bundle's one-modality probes use the evaluation's chosen C, not evaluate.probe_c
    evaluation["probe"]["c"] = 0.01
    (out / "evaluation.json").write_text(json.dumps(evaluation))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    scorer = AnomalyScorer.load(out / "anomaly.npz")
    _write_modality_probes(bundle, out, data, train, scorer)
    served = Probe.load(bundle / "probe_audio.npz")
    chosen, default = (fit_probe(emb.audio[train], labels[train], c) for c in (0.01, 1.0))
    assert np.allclose(served.weight, chosen.weight, atol=1e-3)
    assert not np.allclose(served.weight, default.weight, atol=1e-3)
