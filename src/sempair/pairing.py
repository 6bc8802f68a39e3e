"""Which audio-video pairs count as positives: temporal labels, embedding-based mining,
and a batch sampler that brings partners together.

Positives are a relation between clips: clips i and j are partners when the video of
one and the audio of the other should be pulled together. The relation is symmetric,
so one [B, B] mask serves both directions of the loss.

- temporal  y^t(i, j): same recording and at most `temporal_tolerance` windows apart.
- mined     cross-modal proximity, by rule: `topk` (j among i's k nearest in either
            direction), `mutual_knn` (each among the other's k nearest), `threshold`
            (cosine >= s). Candidates are the batch, or a dataset-wide bank of every
            training clip's embeddings, refreshed every few epochs.
- labels    (`pairing=supervised`, the upper bound in evaluation only): same event label.
- y^e = y^t OR mined. Mined partners of a dataset bank only reach the loss if they share
  a batch, which `PartnerBatchSampler` arranges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sempair.knn import topk_inner_product

# -- temporal ----------------------------------------------------------------------------

def temporal_positives(recording: torch.Tensor, clip: torch.Tensor,
                       tolerance: int) -> torch.Tensor:
    """recording [B], clip [B] (ordinal within its recording) -> [B, B] bool."""
    same = recording[:, None] == recording[None, :]
    return same & ((clip[:, None] - clip[None, :]).abs() <= tolerance)


@dataclass(frozen=True)
class Partners:
    """A symmetric relation over N clips in CSR form: partners of i are
    indices[indptr[i]:indptr[i + 1]] (sorted, no self)."""

    indptr: np.ndarray    # [N + 1] int64
    indices: np.ndarray   # [E] int64

    @classmethod
    def from_edges(cls, n: int, src: np.ndarray, dst: np.ndarray) -> Partners:
        keep = src != dst
        src, dst = np.concatenate([src[keep], dst[keep]]), np.concatenate([dst[keep], src[keep]])
        key = np.unique(src.astype(np.int64) * n + dst)          # dedupe, sorted by (src, dst)
        src, dst = key // n, key % n
        return cls(np.searchsorted(src, np.arange(n + 1)).astype(np.int64), dst)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def of(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i]:self.indptr[i + 1]]

    def mask(self, ids: np.ndarray) -> torch.Tensor:
        """[B] dataset indices -> [B, B] bool: which pairs in this batch are partners."""
        position = {int(x): p for p, x in enumerate(ids)}
        mask = torch.zeros(len(ids), len(ids), dtype=torch.bool)
        for p, i in enumerate(ids):
            for j in self.of(int(i)):
                q = position.get(int(j))
                if q is not None:
                    mask[p, q] = True
        return mask

    def mean_degree(self) -> float:
        return len(self.indices) / max(len(self), 1)


def temporal_partners(recording: np.ndarray, clip: np.ndarray, tolerance: int) -> Partners:
    """Neighbours within ±tolerance windows of the same recording, for every clip."""
    n = len(recording)
    order = np.lexsort((clip, recording))
    src, dst = [], []
    for shift in range(1, tolerance + 1):
        a, b = order[:-shift], order[shift:]
        near = (recording[a] == recording[b]) & (np.abs(clip[a] - clip[b]) <= tolerance)
        src.append(a[near])
        dst.append(b[near])
    if not src:
        return Partners(np.zeros(n + 1, np.int64), np.zeros(0, np.int64))
    return Partners.from_edges(n, np.concatenate(src), np.concatenate(dst))


def label_partners(labels: np.ndarray, per_clip: int, seed: int) -> Partners:
    """Up to `per_clip` random clips with the same label, for every clip (the supervised
    upper bound's sampler: a full same-label graph would be O(N²/classes) edges)."""
    rng = np.random.default_rng(seed)
    src, dst = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        for i in members:
            others = members[members != i]
            src.append(np.full(min(per_clip, len(others)), i))
            dst.append(rng.choice(others, size=min(per_clip, len(others)), replace=False))
    if not src:
        return Partners(np.zeros(len(labels) + 1, np.int64), np.zeros(0, np.int64))
    return Partners.from_edges(len(labels), np.concatenate(src), np.concatenate(dst))


# -- mining ------------------------------------------------------------------------------

def _rule_edges(scores: torch.Tensor, index: torch.Tensor, scores_rev: torch.Tensor,
                index_rev: torch.Tensor, rule: str, threshold: float):
    """Neighbour lists in both directions -> (src, dst) edges of the mined relation.

    scores/index [N, k]: audio neighbours of each clip's video; *_rev: video neighbours of
    each clip's audio. Padding (index -1) is dropped."""
    n, k = index.shape
    rows = torch.arange(n)[:, None].expand(n, k)
    forward = torch.stack([rows.reshape(-1), index.reshape(-1)], 1)        # video i -> audio j
    backward = torch.stack([index_rev.reshape(-1), rows.reshape(-1)], 1)   # video j <- audio i
    valid_f, valid_b = index.reshape(-1) >= 0, index_rev.reshape(-1) >= 0
    if rule == "threshold":
        valid_f &= scores.reshape(-1) >= threshold
        valid_b &= scores_rev.reshape(-1) >= threshold
    forward, backward = forward[valid_f].numpy(), backward[valid_b].numpy()
    if rule == "mutual_knn":   # (v_i, a_j) kept only when each is among the other's k nearest
        forward = forward[np.isin(forward[:, 0] * n + forward[:, 1],
                                  backward[:, 0] * n + backward[:, 1])]
        edges = forward
    else:
        edges = np.concatenate([forward, backward])
    return edges[:, 0], edges[:, 1]


def mine_dataset(video: torch.Tensor, audio: torch.Tensor, rule: str, k: int,
                 threshold: float, groups: np.ndarray | None = None) -> Partners:
    """Dataset-wide mining over every clip's embeddings, video [N, d] and audio [N, d].

    Exact inner-product search (sempair.knn), memory O(N·k). `groups` [N]: if given, a
    clip's partners come only from other groups (recordings)."""
    g = None if groups is None else torch.as_tensor(groups)
    kk = min(k + 1, len(video))   # +1: a clip's own other modality is usually its nearest
    scores, index = topk_inner_product(video, audio, kk, query_groups=g, key_groups=g)
    scores_rev, index_rev = topk_inner_product(audio, video, kk, query_groups=g, key_groups=g)
    scores, index = _drop_self(scores, index, k)
    scores_rev, index_rev = _drop_self(scores_rev, index_rev, k)
    src, dst = _rule_edges(scores, index, scores_rev, index_rev, rule, threshold)
    return Partners.from_edges(len(video), src, dst)


def _drop_self(scores: torch.Tensor, index: torch.Tensor, k: int):
    """Remove each row's own index and keep k neighbours (padded with -1 if short)."""
    own = index == torch.arange(len(index))[:, None]
    order = torch.argsort(own.to(torch.int8), dim=1, stable=True)   # others first, self last
    scores, index, own = (t.gather(1, order) for t in (scores, index, own))
    return scores[:, :k], index.masked_fill(own, -1)[:, :k]


def mine_batch(video: torch.Tensor, audio: torch.Tensor, rule: str, k: int,
               threshold: float, exclude: torch.Tensor) -> torch.Tensor:
    """In-batch mining on (detached) embeddings video [B, d], audio [B, d] -> [B, B] bool.
    `exclude` [B, B] bool: pairs that may not be mined (self, temporal, same recording)."""
    sim = (video @ audio.T).float().masked_fill(exclude, float("-inf"))   # [B, B] v_i · a_j
    kk = min(k, len(sim) - 1)
    if rule == "threshold":
        near = sim >= threshold
        return near | near.T
    v2a = torch.zeros_like(exclude)
    v2a.scatter_(1, sim.topk(kk, dim=1).indices, True)          # a_j among v_i's k nearest
    a2v = torch.zeros_like(exclude)
    a2v.scatter_(0, sim.topk(kk, dim=0).indices, True)          # v_i among a_j's k nearest
    near = (v2a & a2v) if rule == "mutual_knn" else (v2a | a2v)
    near &= torch.isfinite(sim)
    return near | near.T


# -- batches -----------------------------------------------------------------------------

class PartnerBatchSampler:
    """Batches in which each anchor brings `partners_per_anchor` of its partners along.

    An epoch shows N clips in N // batch_size batches (same cost as plain shuffling);
    anchors are taken in a seeded random order, partners drawn at random among theirs.
    Deterministic from (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, n: int, batch_size: int, partners_per_anchor: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_anchor = partners_per_anchor

    def batches(self, epoch: int, partners: Partners | None) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.n)
        n_batches = max(self.n // self.batch_size, 1)
        if partners is None or self.per_anchor == 0:
            return [order[b * self.batch_size:(b + 1) * self.batch_size]
                    for b in range(n_batches)]
        batches, used, cursor = [], np.zeros(self.n, bool), 0
        for _ in range(n_batches):
            batch: list[int] = []
            in_batch: set[int] = set()
            while len(batch) < min(self.batch_size, self.n):
                while cursor < self.n and used[order[cursor]]:
                    cursor += 1
                if cursor >= self.n:           # every clip has been used: start over
                    used[:] = False
                    cursor = 0
                    order = rng.permutation(self.n)
                    continue
                anchor = int(order[cursor])
                used[anchor] = True
                if anchor in in_batch:
                    continue
                batch.append(anchor)
                in_batch.add(anchor)
                candidates = [j for j in partners.of(anchor) if int(j) not in in_batch]
                take = min(self.per_anchor, len(candidates),
                           min(self.batch_size, self.n) - len(batch))
                for j in rng.choice(candidates, size=take, replace=False) if take else ():
                    batch.append(int(j))
                    in_batch.add(int(j))
                    used[int(j)] = True
            batches.append(np.array(batch, dtype=np.int64))
        return batches


# -- diagnostics (labels are never used for training) ------------------------------------

def pair_quality(positives: torch.Tensor, temporal: torch.Tensor,
                 labels: np.ndarray, background: str = "background") -> dict[str, float]:
    """How good are this batch's positives, judged by the labels?

    mined_precision: share of mined (non-temporal) positive pairs with the same label;
    base_rate: the same share over all pairs (what random mining would get);
    false_negative_rate: share of negative pairs that are the same (non-background) event.
    """
    same = torch.as_tensor(labels[:, None] == labels[None, :])
    event = torch.as_tensor(labels != background)
    off_diag = ~torch.eye(len(labels), dtype=torch.bool)
    mined = positives & ~temporal & off_diag
    negatives = ~positives & off_diag
    nan = float("nan")
    return {
        "mined_precision": same[mined].float().mean().item() if mined.any() else nan,
        "base_rate": same[off_diag].float().mean().item(),
        "false_negative_rate": (same & event[:, None])[negatives].float().mean().item()
        if negatives.any() else nan,
    }
