"""Pair quality: how right are the positives each labelling gives, judged by the labels?

At the trained model's embeddings of the train split, two relations over clips:
- temporal y^t: same recording, within ±`train.temporal_tolerance` windows;
- EPG y^e:      y^t OR mined cross-modal neighbours (`train.rule`, `train.k`, dataset-wide,
                as the trainer mines them).
For each: precision (share of positive pairs with the same label), recall (share of
same-event pairs — same label, not background — that are positives), and the per-batch
false-negative rate (share of a random batch's negative pairs that are the same event).
`pairs_mined_precision` is the precision of the mined pairs alone (what DESIGN §1 found
predicts whether EPG helps), `pairs_base_rate` the precision random pairing would get.
`pairs_mined_same_recording` is the share of mined pairs whose clips come from one
recording, against `pairs_same_recording_base` for random pairs: far above the base, the
mining follows what a recording shares (light, weather, ambient level) — the drift
shortcut — rather than the event.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from sempair.annotations import BACKGROUND
from sempair.config import TrainConfig
from sempair.evaluate.embeddings import Embeddings
from sempair.pairing import Partners, mine_dataset, pair_quality, temporal_partners


def agreement(partners: Partners, values: np.ndarray) -> float:
    """Share of a relation's pairs whose two clips have the same value (label, recording)."""
    src = np.repeat(np.arange(len(partners)), np.diff(partners.indptr))
    return float((values[src] == values[partners.indices]).mean()) if len(src) else math.nan


def relation_quality(partners: Partners, labels: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of a relation against same-label / same-event pairs."""
    src = np.repeat(np.arange(len(partners)), np.diff(partners.indptr))
    same_event = (labels[src] == labels[partners.indices]) & (labels[src] != BACKGROUND)
    _, counts = np.unique(labels[labels != BACKGROUND], return_counts=True)
    event_pairs = (counts * (counts - 1)).sum()             # ordered, like the CSR edges
    recall = float(same_event.sum() / event_pairs) if event_pairs else math.nan
    return agreement(partners, labels), recall


def batch_false_negatives(partners: Partners, labels: np.ndarray, batches: int,
                          batch_size: int, seed: int) -> float:
    """Mean share of same-event pairs among a random batch's negatives."""
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(batches):
        ids = rng.choice(len(labels), size=min(batch_size, len(labels)), replace=False)
        positives = partners.mask(ids)
        rates.append(pair_quality(positives, positives, labels[ids])["false_negative_rate"])
    return float(np.nanmean(rates)) if np.isfinite(rates).any() else float("nan")


def pair_metrics(emb: Embeddings, t: TrainConfig, batches: int, batch_size: int) -> dict:
    """-> pairs_{temporal,epg}_{precision,recall,fn_rate}, pairs_mined_precision,
    pairs_base_rate, pairs_mined_same_recording, pairs_same_recording_base (train split)."""
    train = emb.rows("train")
    clips = emb.clips.iloc[train]
    labels = clips["label"].to_numpy().astype(str)
    recording = pd.factorize(clips["recording"])[0]
    temporal = temporal_partners(recording, clips["clip"].to_numpy(np.int64),
                                 t.temporal_tolerance)
    relations, mined_precision, mined_same_recording = {"temporal": temporal}, math.nan, math.nan
    if emb.cross_modal:
        mined = mine_dataset(torch.from_numpy(emb.video[train]),
                             torch.from_numpy(emb.audio[train]), t.rule,
                             t.k, t.threshold, recording if t.cross_recording_only else None)
        relations["epg"] = _union(temporal, mined)
        mined_precision = agreement(mined, labels)
        mined_same_recording = agreement(mined, recording)
    _, counts = np.unique(labels, return_counts=True)
    _, lengths = np.unique(recording, return_counts=True)
    metrics = {"pairs_base_rate": float(((counts / counts.sum()) ** 2).sum()),
               "pairs_mined_precision": mined_precision,
               "pairs_mined_same_recording": mined_same_recording,
               "pairs_same_recording_base": float(((lengths / lengths.sum()) ** 2).sum())}
    for name in ("temporal", "epg"):
        if name not in relations:
            metrics |= {f"pairs_{name}_{m}": float("nan")
                        for m in ("precision", "recall", "fn_rate")}
            continue
        precision, recall = relation_quality(relations[name], labels)
        metrics |= {f"pairs_{name}_precision": precision, f"pairs_{name}_recall": recall,
                    f"pairs_{name}_fn_rate": batch_false_negatives(
                        relations[name], labels, batches, batch_size, seed=t.seed)}
    return metrics


def _union(a: Partners, b: Partners) -> Partners:
    src = np.concatenate([np.repeat(np.arange(len(p)), np.diff(p.indptr)) for p in (a, b)])
    return Partners.from_edges(len(a), src, np.concatenate([a.indices, b.indices]))
