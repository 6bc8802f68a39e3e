"""`sempair evaluate MODEL DATASET OUT`: every task on one embedding, then the gate.

    embeddings (frozen encoders, or a baseline), at the projection and the backbone
      -> localization probe (C chosen on val, fit on train, scored on test)
      -> anomaly scores (test vs train) -> event search (test queries, train archive)
      -> pair quality (train)
      -> metrics.json, evaluation.json, probe.npz, anomaly.npz, report.html (unless
         report=False: `sempair evaluate --no-report`; a release works without it)

`score` does the tasks for any `Embeddings`, so the experiment grid scores baselines
with exactly the code that scores trained models. The metric names without a prefix are
the projection's (the gate reads them); given the backbone's `Embeddings` too, `score`
adds `backbone_` metrics: the probe, video→video search and the kNN anomaly score
(cross-modal tasks are undefined there: the audio and video backbones are two spaces).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from sempair import __version__, json_safe
from sempair.config import Config, EvaluateConfig
from sempair.dataset import ClipDataset
from sempair.evaluate.anomaly import AnomalyScorer, anomaly_metrics, fit_scorer
from sempair.evaluate.embeddings import (
    Embeddings,
    EvaluationError,
    check_features,
    encode_layers,
    load_encoders,
)
from sempair.evaluate.pairs import pair_metrics
from sempair.evaluate.probe import Localization, c_grid, localization
from sempair.evaluate.search import Ranking, event_search

# the gate: (metric, EvaluateConfig field with its threshold)
GATE = (("localization_macro_f1", "gate_macro_f1"),
        ("search_v2v_map", "gate_search_map"),
        ("anomaly_combined_auc", "gate_anomaly_auc"))
HEADLINE = ("localization_accuracy", "localization_macro_f1", "anomaly_combined_auc",
            "anomaly_combined_ap", "search_a2v_map", "search_v2v_map", "search_v2v_r1",
            "pairs_temporal_precision", "pairs_epg_precision", "pairs_base_rate",
            "backbone_localization_macro_f1", "backbone_search_v2v_map")
# the backbone's metrics, each written with a `backbone_` prefix
BACKBONE = ("localization_accuracy", "localization_macro_f1", "localization_c",
            "search_v2v_map", "search_v2v_r1", "search_v2v_r10", "anomaly_knn_auc",
            "anomaly_knn_ap")


@dataclass(frozen=True)
class Scores:
    """Every task's result on one embedding."""
    metrics: dict[str, float]
    localization: Localization
    scorer: AnomalyScorer
    anomaly_scores: dict        # name -> [n_test]
    rankings: dict[str, Ranking]
    backbone: Localization | None = None    # the backbone's probe, when it was scored


@dataclass(frozen=True)
class GateCheck:
    metric: str
    value: float
    threshold: float

    @property
    def passed(self) -> bool:
        return not math.isnan(self.value) and self.value >= self.threshold

    def __str__(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return f"{verdict}  {self.metric} = {self.value:.3f} (needs >= {self.threshold})"


@dataclass(frozen=True)
class EvalSummary:
    out: Path
    metrics: dict[str, float]
    gate: list[GateCheck]
    localization: Localization      # classes and confusion matrix, for KFP's viewer

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.gate)

    def __str__(self) -> str:
        lines = [f"evaluation -> {self.out}"]
        lines += [f"  {name:<32} {self.metrics[name]:.3f}" for name in HEADLINE
                  if name in self.metrics]
        lines.append(f"gate: {'passed' if self.passed else 'failed'}")
        lines += [f"  {check}" for check in self.gate]
        return "\n".join(lines)


def check_labels(emb: Embeddings) -> None:
    """Evaluation needs labelled train and test clips; say how to get them."""
    if "label" not in emb.clips or "anomaly" not in emb.clips:
        raise EvaluationError("the dataset has no labels: evaluation needs annotations; put "
                              "an events.csv at the recordings' root and ingest again "
                              "(docs/data-format.md)")
    for split in ("train", "test"):
        if not len(emb.rows(split)):
            raise EvaluationError(f"the dataset has no {split} clips: add recordings or "
                                  "change ingest.test_fraction and ingest again")


def score(emb: Embeddings, cfg: Config, backbone: Embeddings | None = None) -> Scores:
    """Localization, anomaly, search and pair quality for one embedding (the projection),
    and the `backbone_` metrics of `backbone` when given."""
    check_labels(emb)
    e = cfg.evaluate
    located = localization(emb, e.probe_c)
    scorer = fit_scorer(emb, e.anomaly_k)
    anomaly, anomaly_scores = anomaly_metrics(emb, scorer)
    search, rankings = event_search(emb)
    metrics = {"localization_accuracy": located.accuracy,
               "localization_macro_f1": located.macro_f1, "localization_c": located.c,
               **anomaly, **search,
               **pair_metrics(emb, cfg.train, e.pair_batches, e.pair_batch_size),
               "clips_train": len(emb.rows("train")), "clips_test": len(emb.rows("test")),
               "test_anomalies": int(emb.clips["anomaly"].to_numpy()[emb.rows("test")].sum())}
    if backbone is None:
        return Scores(metrics, located, scorer, anomaly_scores, rankings)
    extra, backbone_located = backbone_metrics(backbone, cfg)
    return Scores(metrics | extra, located, scorer, anomaly_scores, rankings,
                  backbone_located)


def backbone_metrics(emb: Embeddings, cfg: Config) -> tuple[dict[str, float], Localization]:
    """The backbone's probe, video→video search and kNN anomaly score (BACKBONE, with a
    `backbone_` prefix) -> (metrics, its localization)."""
    check_labels(emb)
    e = cfg.evaluate
    located = localization(emb, e.probe_c)
    anomaly, _ = anomaly_metrics(emb, fit_scorer(emb, e.anomaly_k))
    search, _ = event_search(emb)
    found = {"localization_accuracy": located.accuracy,
             "localization_macro_f1": located.macro_f1, "localization_c": located.c,
             **anomaly, **search}
    return {f"backbone_{name}": found[name] for name in BACKBONE}, located


def probe_record(located: Localization, centre: float) -> dict:
    """How the probe was fitted, for evaluation.json (serving refits with its C)."""
    return {"c": located.c, "chosen_on": "val" if located.c_scores else
            "fallback: evaluate.probe_c (no val split with two classes or more)",
            "grid": list(c_grid(centre)),
            "val_macro_f1": {f"{c:g}": f1 for c, f1 in located.c_scores.items()},
            "class_weight": "balanced", "fitted_on": "train"}


def gate(metrics: dict[str, float], e: EvaluateConfig) -> list[GateCheck]:
    return [GateCheck(metric, metrics.get(metric, math.nan), getattr(e, threshold))
            for metric, threshold in GATE]


def evaluate(model_dir: str | Path, dataset: str | Path, out: str | Path, cfg: Config, *,
             report: bool = True) -> EvalSummary:
    """Evaluate the frozen encoders in MODEL_DIR on DATASET; write the results to OUT."""
    started = time.perf_counter()
    out = Path(out)
    model, saved = load_encoders(model_dir)
    data = ClipDataset(dataset)
    check_features(saved, data)
    layers = encode_layers(model, data, cfg.evaluate.batch_size)
    emb = layers["projection"]
    scores = score(emb, cfg, layers["backbone"])
    metrics = scores.metrics | {"seconds": time.perf_counter() - started}
    checks = gate(metrics, cfg.evaluate)

    out.mkdir(parents=True, exist_ok=True)
    scores.localization.probe.save(out / "probe.npz")
    scores.scorer.save(out / "anomaly.npz")
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    trained_on = Path(model_dir) / "dataset.json"
    (out / "evaluation.json").write_text(json.dumps(json_safe({
        "model": str(Path(model_dir).absolute()),
        "trained_on": json.loads(trained_on.read_text())["dataset_id"]
        if trained_on.is_file() else None,
        "dataset": data.meta["dataset_id"], "dataset_checksum": data.meta["checksum"],
        "gate": {"passed": all(c.passed for c in checks),
                 "checks": [{"metric": c.metric, "value": c.value, "threshold": c.threshold,
                             "passed": c.passed} for c in checks]},
        "report": report,       # report.html written (a release carries it when it is)
        "probe": probe_record(scores.localization, cfg.evaluate.probe_c),
        "backbone_probe": probe_record(scores.backbone, cfg.evaluate.probe_c),
        "evaluate": cfg.to_dict()["evaluate"], "sempair_version": __version__}),
        indent=2) + "\n")
    if report:
        from sempair.evaluate.report import write_report

        write_report(out, emb, scores.localization, scores.anomaly_scores, scores.rankings,
                     metrics, data, cfg.evaluate.map_method,
                     title=f"sempair evaluation: {Path(model_dir).name} on "
                           f"{data.meta['dataset_id']}")
    return EvalSummary(out, metrics, checks, scores.localization)

