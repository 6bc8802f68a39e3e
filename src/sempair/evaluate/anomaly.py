"""Anomaly detection: unsupervised per-clip scores, judged against the anomaly labels.

- `knn`           mean cosine distance of a clip's joint embedding to its k nearest
                  training clips (rare content is far from everything seen before);
- `disagreement`  1 − cos(audio, video) of the clip itself (a sound its picture does not
                  explain, or the reverse); needs both modalities in one space;
- `combined`      the sum of both, each standardised by its spread over the train split.

Scores are higher for more anomalous clips. The reference set is the train split, which
may itself hold some anomalies: nothing here uses labels but the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from sempair.evaluate.embeddings import Embeddings
from sempair.knn import topk_inner_product


@dataclass(frozen=True)
class AnomalyScorer:
    """What serving needs to score a new clip: reference embeddings and calibration."""
    reference: np.ndarray     # [M, d_a + d_v] joint embeddings of the training clips
    k: int
    cross_modal: bool         # audio and video share a space: disagreement is defined
    calibration: dict         # score name -> (mean, std) over the train split; {} = none yet

    def scores(self, audio: np.ndarray, video: np.ndarray, exclude_self: bool = False) -> dict:
        """audio [N, d_a], video [N, d_v] (unit rows) -> {name: [N] score}."""
        joint = np.concatenate([audio, video], 1) / np.sqrt(2)
        out = {"knn": _knn_distance(joint, self.reference, self.k, exclude_self)}
        if self.cross_modal:
            out["disagreement"] = 1 - (audio * video).sum(1)
        if self.calibration:
            out["combined"] = sum((out[name] - mean) / std
                                  for name, (mean, std) in self.calibration.items())
        return out

    def save(self, path) -> None:
        names = sorted(self.calibration)
        np.savez(path, reference=self.reference, k=self.k, cross_modal=self.cross_modal,
                 names=np.array(names),
                 calibration=np.array([self.calibration[n] for n in names]))

    @classmethod
    def load(cls, path) -> AnomalyScorer:
        with np.load(path) as f:
            calibration = {str(name): (float(mean), float(std))
                           for name, (mean, std) in zip(f["names"], f["calibration"],
                                                        strict=True)}
            return cls(f["reference"], int(f["k"]), bool(f["cross_modal"]), calibration)


def fit_scorer(emb: Embeddings, k: int) -> AnomalyScorer:
    """Reference = the train split; calibration from its leave-one-out scores."""
    train = emb.rows("train")
    reference = emb.joint()[train]
    uncalibrated = AnomalyScorer(reference, k, emb.cross_modal, {})
    raw = uncalibrated.scores(emb.audio[train], emb.video[train], exclude_self=True)
    calibration = {name: (float(s.mean()), float(max(s.std(), 1e-8)))
                   for name, s in raw.items()}
    return AnomalyScorer(reference, k, emb.cross_modal, calibration)


def anomaly_metrics(emb: Embeddings, scorer: AnomalyScorer) -> tuple[dict, dict]:
    """-> ({anomaly_<score>_auc, anomaly_<score>_ap}, {score name: [n_test] scores})."""
    test = emb.rows("test")
    truth = emb.clips["anomaly"].to_numpy()[test].astype(int)
    scores = scorer.scores(emb.audio[test], emb.video[test])
    metrics = {}
    for name in ("knn", "disagreement", "combined"):
        defined = name in scores and 0 < truth.sum() < len(truth)   # both classes present
        metrics[f"anomaly_{name}_auc"] = float(roc_auc_score(truth, scores[name])) \
            if defined else float("nan")
        metrics[f"anomaly_{name}_ap"] = float(average_precision_score(truth, scores[name])) \
            if defined else float("nan")
    return metrics, scores


def _knn_distance(queries: np.ndarray, reference: np.ndarray, k: int,
                  exclude_self: bool) -> np.ndarray:
    """Mean cosine distance to the k nearest rows of `reference` ([N, D] -> [N])."""
    k = min(k, len(reference) - int(exclude_self))
    groups = {"query_groups": np.arange(len(queries)), "key_groups": np.arange(len(reference))} \
        if exclude_self else {}
    scores, _ = topk_inner_product(queries.astype(np.float32), reference.astype(np.float32), k,
                                   **groups)
    return (1 - scores.numpy()).mean(1)
