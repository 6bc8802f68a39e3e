"""Known answers for the contrastive losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from sempair.losses import LOSSES, av_loss, directional_loss


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("kind", ["multipos_mean", "multipos_logsum"])
def test_identity_mask_equals_infonce(kind):
    video, audio = unit(16, 8, seed=1), unit(16, 8, seed=2)
    eye = torch.eye(16, dtype=torch.bool)
    expected = av_loss(video, audio, eye, 0.1, "infonce")
    assert av_loss(video, audio, eye, 0.1, kind).item() == pytest.approx(expected.item(),
                                                                         rel=1e-6)


def test_infonce_matches_cross_entropy():
    video, audio = unit(8, 4, seed=3), unit(8, 4, seed=4)
    logits = video @ audio.T / 0.07
    target = torch.arange(8)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    got = av_loss(video, audio, torch.eye(8, dtype=torch.bool), 0.07, "infonce")
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_hand_computed_two_by_two():
    # one anchor, candidates with similarities 1 (own) and 0 (other); tau = 1
    anchors = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    own = torch.tensor([0])
    lse = math.log(math.e + 1.0)
    one = torch.tensor([[True, False]])
    both = torch.tensor([[True, True]])
    assert directional_loss(anchors, candidates, one, own, 1.0, "infonce").item() == \
        pytest.approx(lse - 1.0)
    # both positive: mean of -log p = -((1 - lse) + (0 - lse)) / 2
    assert directional_loss(anchors, candidates, both, own, 1.0, "multipos_mean").item() == \
        pytest.approx(lse - 0.5)
    # both positive: -log (p1 + p2) = 0
    assert directional_loss(anchors, candidates, both, own, 1.0, "multipos_logsum").item() == \
        pytest.approx(0.0, abs=1e-7)


def test_own_partner_counts_even_if_the_mask_forgets_it():
    video, audio = unit(6, 4, seed=5), unit(6, 4, seed=6)
    empty = torch.zeros(6, 6, dtype=torch.bool)
    for kind in LOSSES:
        assert av_loss(video, audio, empty, 0.1, kind).item() == pytest.approx(
            av_loss(video, audio, torch.eye(6, dtype=torch.bool), 0.1, kind).item())


def test_a_false_negative_costs_only_without_its_positive_label():
    # clips 0-1 and 2-3 are the same event with identical embeddings: with exact-time
    # labels each anchor's softmax splits between its twin and itself (a false negative)
    base = unit(2, 4, seed=7)
    video = audio = base.repeat_interleave(2, dim=0)
    pairs = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]).bool()
    eye = torch.eye(4, dtype=torch.bool)
    exact = av_loss(video, audio, eye, 0.1, "infonce").item()
    assert exact > math.log(2) - 1e-3                        # the twin steals half
    assert av_loss(video, audio, pairs, 0.1, "multipos_logsum").item() < 1e-3
    # the mean over positives is already at its optimum, log 2, when twins are equal
    assert av_loss(video, audio, pairs, 0.1, "multipos_mean").item() == pytest.approx(
        exact, abs=1e-3)


@pytest.mark.parametrize("kind", LOSSES)
def test_gradients_finite_at_extreme_similarities(kind):
    video = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    audio = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = av_loss(video, audio, torch.eye(3, dtype=torch.bool), 0.001, kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(video.grad).all()
    assert torch.isfinite(audio.grad).all()


def test_gathered_candidates_with_offset_match_the_full_batch():
    video, audio = unit(8, 4, seed=8), unit(8, 4, seed=9)
    positives = torch.rand(8, 8, generator=torch.Generator().manual_seed(0)) > 0.7
    positives = positives | positives.T
    full = av_loss(video, audio, positives, 0.1, "multipos_mean")
    halves = [av_loss(video[s], audio[s], positives[s], 0.1, "multipos_mean",
                      video_all=video, audio_all=audio, offset=s.start)
              for s in (slice(0, 4), slice(4, 8))]
    assert (halves[0] + halves[1]).item() / 2 == pytest.approx(full.item(), rel=1e-6)
