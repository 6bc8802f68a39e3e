"""Audio-visual event localization: a linear probe on frozen [audio ; video] embeddings.

Each clip's class is its audio-visual event, or `background`. The probe (multinomial
logistic regression on standardised features, class-balanced: every class weighs the
same in the loss, however many clips it has) is fitted on the train split and scored on
the test split: accuracy (the AVE convention) and macro-F1 (accuracy flatters a model
when ~40% of clips are background).

Its L2 strength C is chosen on the val split, never on test: one probe per C of
`c_grid(evaluate.probe_c)` is fitted on train and scored on val by macro-F1; the best
wins, ties going to the smaller C (stronger regularisation). The winner is that fit
itself (on train only: the serving bundle refits its one-modality probes on the same
train rows with the same C). Without a val split of two classes or more, C is
`evaluate.probe_c`. The fitted probe is plain arrays, so serving can run it without
scikit-learn.
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


C_FACTORS = (0.01, 0.1, 1.0, 10.0)   # the C grid: evaluate.probe_c times each


@dataclass(frozen=True)
class Localization:
    accuracy: float
    macro_f1: float
    c: float                    # the probe's C: chosen on val, or the fallback
    c_scores: dict[float, float]    # C -> val macro-F1 of the grid; {} = fallback used
    classes: list[str]          # rows and columns of `confusion`
    confusion: np.ndarray       # [C, C] test clips: true class (row) -> predicted (column)
    predicted: np.ndarray       # [n_test] str
    probe: Probe


def probe_features(emb: Embeddings) -> np.ndarray:
    """[N, d_a + d_v]: the probe's input, audio and video side by side."""
    return np.concatenate([emb.audio, emb.video], axis=1)


def fit_probe(x: np.ndarray, y: np.ndarray, c: float) -> Probe:
    """Class-balanced multinomial logistic regression on standardised x [N, D], labels
    y [N]. Evaluation and serving both fit with this, so their probes are one fit."""
    classes = np.unique(y)
    if len(classes) < 2:
        raise EvaluationError(f"the train split has only the class {classes.tolist()}; a probe "
                              "needs at least two: add recordings with annotated events")
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    fitted = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(
        (x - mean) / scale, y)
    weight, bias = fitted.coef_, fitted.intercept_          # [C, D], [C]; [1, D] for 2
    if len(fitted.classes_) == 2:     # one logit z for class 1: softmax([-z/2, z/2]) = σ(z)
        weight, bias = np.concatenate([-weight, weight]) / 2, np.concatenate([-bias, bias]) / 2
    return Probe(fitted.classes_.astype(str), mean, scale, weight.astype(np.float32),
                 bias.astype(np.float32))


def c_grid(centre: float) -> tuple[float, ...]:
    """The Cs tried on val: `centre` (evaluate.probe_c) times C_FACTORS, ascending."""
    return tuple(centre * factor for factor in C_FACTORS)


def choose_probe(x: np.ndarray, labels: np.ndarray, train: np.ndarray, val: np.ndarray,
                 centre: float) -> tuple[Probe, float, dict[float, float]]:
    """Fit on train rows for each C of the grid, keep the best val macro-F1 (ties: smaller
    C) -> (probe, C, {C: val macro-F1}). Fewer than 2 val classes: C = centre, scores {}."""
    if len(np.unique(labels[val])) < 2:
        return fit_probe(x[train], labels[train], centre), centre, {}
    best, scores = None, {}
    for c in c_grid(centre):                    # ascending: a tie keeps the smaller C
        probe = fit_probe(x[train], labels[train], c)
        scores[c] = float(f1_score(labels[val], probe.predict(x[val]), average="macro",
                                   zero_division=0))
        if best is None or scores[c] > scores[best[1]]:
            best = probe, c
    return best[0], best[1], scores


def localization(emb: Embeddings, c: float) -> Localization:
    """Choose C on val (`c` is the grid's centre and the fallback), fit on train, score
    on test."""
    labels = emb.clips["label"].to_numpy().astype(str)
    train, test = emb.rows("train"), emb.rows("test")
    x = probe_features(emb)
    probe, chosen, scores = choose_probe(x, labels, train, emb.rows("val"), c)
    predicted = probe.predict(x[test])
    truth = labels[test]
    classes = sorted(set(truth) | set(predicted))
    return Localization(accuracy=float(accuracy_score(truth, predicted)),
                        macro_f1=float(f1_score(truth, predicted, average="macro",
                                                zero_division=0)),
                        c=chosen, c_scores=scores,
                        classes=classes,
                        confusion=confusion_matrix(truth, predicted, labels=classes),
                        predicted=predicted, probe=probe)


def release_c(evaluation: dict) -> float:
    """The probe C an evaluation.json settled on (an older one without it: probe_c)."""
    chosen = evaluation.get("probe", {}).get("c")
    return float(chosen if chosen is not None else evaluation["evaluate"]["probe_c"])
