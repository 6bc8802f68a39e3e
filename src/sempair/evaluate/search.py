"""Event search: query by example against an archive of past clips.

Queries are the test clips that show an audio-visual event; the archive (gallery) is
every train clip, background included — recordings the query never came from, as when an
operator asks "when did something like this happen before?". A result is relevant when it
has the query's event label. Directions: audio→video, video→audio (cross-modal, needs one
shared space) and video→video. Metrics: mAP over the whole ranking, Recall@1 and
Recall@10 (a relevant clip among the first 1 / 10). Ranking is exact inner product
(faiss `IndexFlatIP` through `sempair.knn`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sempair.annotations import BACKGROUND
from sempair.evaluate.embeddings import Embeddings
from sempair.knn import topk_inner_product

DIRECTIONS = {"a2v": ("audio", "video"), "v2a": ("video", "audio"), "v2v": ("video", "video")}
QUERY_BLOCK = 256   # queries ranked at once: memory is QUERY_BLOCK × gallery size


@dataclass(frozen=True)
class Ranking:
    queries: np.ndarray     # [Q] rows of the embeddings (test clips with an event)
    gallery: np.ndarray     # [G] rows of the embeddings (train clips)
    top: np.ndarray         # [Q, 10] gallery positions of the best results, best first
    scores: np.ndarray      # [Q, 10] their cosine similarity
    average_precision: np.ndarray   # [Q]


def rank(query_vectors: np.ndarray, query_labels: np.ndarray, gallery_vectors: np.ndarray,
         gallery_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (average precision [Q], top-10 positions [Q, 10], their scores [Q, 10])."""
    ap, top, top_scores = [], [], []
    g = len(gallery_vectors)
    for start in range(0, len(query_vectors), QUERY_BLOCK):
        block = slice(start, start + QUERY_BLOCK)
        scores, order = topk_inner_product(query_vectors[block], gallery_vectors, g)  # [b, G]
        order = order.numpy()
        relevant = gallery_labels[order] == query_labels[block, None]              # [b, G]
        hits = np.cumsum(relevant, 1)
        precision_at_hit = np.where(relevant, hits / np.arange(1, g + 1), 0.0)
        ap.append(precision_at_hit.sum(1) / np.maximum(relevant.sum(1), 1))
        top.append(order[:, :10])
        top_scores.append(scores.numpy()[:, :10])
    return np.concatenate(ap), np.concatenate(top), np.concatenate(top_scores)


def event_search(emb: Embeddings) -> tuple[dict, dict[str, Ranking]]:
    """-> ({search_<dir>_map, _r1, _r10}, {direction: Ranking}); cross-modal directions are
    nan when audio and video do not share a space."""
    labels = emb.clips["label"].to_numpy().astype(str)
    test = emb.rows("test")
    queries, gallery = test[labels[test] != BACKGROUND], emb.rows("train")
    metrics, rankings = {}, {}
    for name, (q_side, g_side) in DIRECTIONS.items():
        if (q_side != g_side and not emb.cross_modal) or not len(queries):
            metrics |= {f"search_{name}_{m}": float("nan") for m in ("map", "r1", "r10")}
            continue
        q, g = getattr(emb, q_side)[queries], getattr(emb, g_side)[gallery]
        ap, top, scores = rank(q, labels[queries], g, labels[gallery])
        hit = labels[gallery][top] == labels[queries][:, None]                     # [Q, 10]
        metrics[f"search_{name}_map"] = float(ap.mean())
        metrics[f"search_{name}_r1"] = float(hit[:, 0].mean())
        metrics[f"search_{name}_r10"] = float(hit.any(1).mean())
        rankings[name] = Ranking(queries, gallery, top, scores, ap)
    return metrics, rankings
