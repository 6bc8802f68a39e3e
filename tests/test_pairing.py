"""Temporal labels, mining rules, the dataset bank and the partner sampler."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sempair.pairing import (
    PartnerBatchSampler,
    Partners,
    mine_batch,
    mine_dataset,
    pair_quality,
    temporal_partners,
    temporal_positives,
)


def test_temporal_tolerance_stays_inside_a_recording():
    recording = torch.tensor([0, 0, 0, 0, 1, 1])
    clip = torch.tensor([0, 1, 2, 4, 0, 1])
    pos = temporal_positives(recording, clip, tolerance=1)
    assert pos[0].tolist() == [True, True, False, False, False, False]
    assert pos[2].tolist() == [False, True, True, False, False, False]
    assert not pos[3, 2] and pos[4, 5] and not pos[1, 4]
    assert torch.equal(temporal_positives(recording, clip, 0), torch.eye(6, dtype=torch.bool))
    table = temporal_partners(recording.numpy(), clip.numpy(), 1)
    for i in range(6):
        expected = [j for j in range(6) if pos[i, j] and j != i]
        assert table.of(i).tolist() == expected


def clustered(n_per=6, n_clusters=4, dim=16, noise=0.05, seed=0):
    """Video and audio embeddings of clips from `n_clusters` events: same event = close."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_clusters, dim, generator=g), dim=1)
    label = torch.arange(n_clusters).repeat_interleave(n_per)
    video = F.normalize(centres[label] + noise * torch.randn(len(label), dim, generator=g), dim=1)
    audio = F.normalize(centres[label] + noise * torch.randn(len(label), dim, generator=g), dim=1)
    return video, audio, label.numpy()


@pytest.mark.parametrize("rule", ["topk", "mutual_knn", "threshold"])
def test_dataset_mining_finds_the_same_event(rule):
    video, audio, label = clustered()
    mined = mine_dataset(video, audio, rule, k=5, threshold=0.8)
    src = np.repeat(np.arange(len(mined)), np.diff(mined.indptr))
    assert len(mined.indices) > 0
    assert (label[src] == label[mined.indices]).all()          # clusters are well separated
    assert not (src == mined.indices).any()                     # no self pairs
    assert set(zip(src.tolist(), mined.indices.tolist(), strict=True)) == set(
        zip(mined.indices.tolist(), src.tolist(), strict=True))  # symmetric
    if rule != "threshold":   # every clip finds its 5 event-mates
        assert (np.diff(mined.indptr) == 5).all()


def test_mutual_knn_is_a_subset_of_topk_and_groups_exclude():
    video, audio, _ = clustered(noise=0.5, seed=1)
    topk = mine_dataset(video, audio, "topk", 3, 0.0)
    mutual = mine_dataset(video, audio, "mutual_knn", 3, 0.0)
    edges = lambda p: set(zip(np.repeat(np.arange(len(p)), np.diff(p.indptr)).tolist(),  # noqa: E731
                              p.indices.tolist(), strict=True))
    assert edges(mutual) < edges(topk)
    groups = np.arange(len(video)) // 3
    across = mine_dataset(video, audio, "topk", 3, 0.0, groups=groups)
    assert all(groups[i] != groups[j] for i, j in edges(across))


def test_batch_mining_respects_exclusions_and_rules():
    video, audio, label = clustered(n_per=4, n_clusters=3)
    exclude = torch.eye(12, dtype=torch.bool)
    for rule in ("topk", "mutual_knn", "threshold"):
        near = mine_batch(video, audio, rule, 3, 0.8, exclude)
        assert torch.equal(near, near.T) and not near.diagonal().any()
        i, j = near.nonzero().T
        assert (label[i] == label[j]).all() and len(i) > 0
    blocked = exclude | torch.ones(12, 12, dtype=torch.bool).triu(1)
    assert not (mine_batch(video, audio, "topk", 3, 0.8, blocked | blocked.T)).any()


def test_partner_mask_in_a_batch():
    partners = Partners.from_edges(6, np.array([0, 2, 4]), np.array([1, 3, 5]))
    mask = partners.mask(np.array([1, 0, 3, 5]))
    assert mask.tolist() == [[False, True, False, False], [True, False, False, False],
                             [False, False, False, False], [False, False, False, False]]


def test_sampler_brings_partners_along_and_is_deterministic():
    n = 200
    partners = Partners.from_edges(n, np.arange(0, n, 2), np.arange(1, n, 2))   # pairs
    sampler = PartnerBatchSampler(n, 20, partners_per_anchor=1, seed=3)
    batches = sampler.batches(epoch=0, partners=partners)
    assert len(batches) == 10 and all(len(b) == 20 and len(set(b)) == 20 for b in batches)
    together = sum(int(i ^ 1 in set(b.tolist())) for b in batches for i in b)
    assert together == 200                    # every clip's partner is in its batch
    assert [b.tolist() for b in sampler.batches(0, partners)] == [b.tolist() for b in batches]
    assert sampler.batches(1, partners)[0].tolist() != batches[0].tolist()
    plain = sampler.batches(0, None)
    assert sorted(np.concatenate(plain).tolist()) == list(range(n))


def test_pair_quality_counts_against_labels():
    labels = np.array(["car", "car", "dog", "background"])
    positives = torch.eye(4, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True           # mined, correct
    positives[2, 3] = positives[3, 2] = True           # mined, wrong
    quality = pair_quality(positives, torch.eye(4, dtype=torch.bool), labels)
    assert quality["mined_precision"] == 0.5
    assert quality["base_rate"] == pytest.approx(2 / 12)
    assert quality["false_negative_rate"] == 0.0
    quality = pair_quality(torch.eye(4, dtype=torch.bool), torch.eye(4, dtype=torch.bool),
                           labels)
    assert np.isnan(quality["mined_precision"])
    assert quality["false_negative_rate"] == pytest.approx(2 / 12)

