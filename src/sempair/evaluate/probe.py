"""Audio-visual event localization: a linear probe on frozen [audio ; video] embeddings.

Each clip's class is its audio-visual event, or `background`. The probe (multinomial
logistic regression on standardised features) is fitted on the train split and scored
on the test split: accuracy (the AVE convention) and macro-F1 (accuracy flatters a model
when ~40% of clips are background). The fitted probe is plain arrays, so serving can run
it without scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from sempair.evaluate.embeddings import Embeddings, EvaluationError


@dataclass(frozen=True)
class Probe:
    classes: np.ndarray     # [C] str
    mean: np.ndarray        # [D] feature standardisation
    scale: np.ndarray       # [D]
    weight: np.ndarray      # [C, D]
    bias: np.ndarray        # [C]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """[N, D] features -> [N, C] class probabilities."""
        logits = ((x - self.mean) / self.scale) @ self.weight.T + self.bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[self.probabilities(x).argmax(1)]

    def save(self, path) -> None:
        np.savez(path, classes=self.classes.astype(str), mean=self.mean, scale=self.scale,
                 weight=self.weight, bias=self.bias)

    @classmethod
    def load(cls, path) -> Probe:
        with np.load(path) as f:
            return cls(**{k: f[k] for k in ("classes", "mean", "scale", "weight", "bias")})


@dataclass(frozen=True)
class Localization:
    accuracy: float
    macro_f1: float
    classes: list[str]          # rows and columns of `confusion`
    confusion: np.ndarray       # [C, C] test clips: true class (row) -> predicted (column)
    predicted: np.ndarray       # [n_test] str
    probe: Probe


def probe_features(emb: Embeddings) -> np.ndarray:
    """[N, d_a + d_v]: the probe's input, audio and video side by side."""
    return np.concatenate([emb.audio, emb.video], axis=1)


def fit_probe(x: np.ndarray, y: np.ndarray, c: float) -> Probe:
    """Multinomial logistic regression on standardised x [N, D] with labels y [N]."""
    classes = np.unique(y)
    if len(classes) < 2:
        raise EvaluationError(f"the train split has only the class {classes.tolist()}; a probe "
                              "needs at least two: add recordings with annotated events")
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    fitted = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / scale, y)
    return Probe(fitted.classes_.astype(str), mean, scale, fitted.coef_.astype(np.float32),
                 fitted.intercept_.astype(np.float32))


def localization(emb: Embeddings, c: float) -> Localization:
    """Fit on train, score on test."""
    labels = emb.clips["label"].to_numpy().astype(str)
    train, test = emb.rows("train"), emb.rows("test")
    x = probe_features(emb)
    probe = fit_probe(x[train], labels[train], c)
    predicted = probe.predict(x[test])
    truth = labels[test]
    classes = sorted(set(truth) | set(predicted))
    return Localization(accuracy=float(accuracy_score(truth, predicted)),
                        macro_f1=float(f1_score(truth, predicted, average="macro",
                                                zero_division=0)),
                        classes=classes,
                        confusion=confusion_matrix(truth, predicted, labels=classes),
                        predicted=predicted, probe=probe)
