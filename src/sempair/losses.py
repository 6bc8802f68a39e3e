"""Contrastive losses for audio-visual pairs, with one or many positives per anchor.

Every loss is symmetric: video anchors against audio candidates and audio anchors
against video candidates, averaged. With s_ij = <anchor_i, candidate_j> / τ and P(i)
the positives of anchor i (always including its own exact-time partner):

    infonce          -log softmax(s_i)[own(i)]                         one positive
    multipos_mean    -mean_{p in P(i)} log softmax(s_i)[p]             SupCon-style
    multipos_logsum  -log sum_{p in P(i)} softmax(s_i)[p]               MIL-NCE-style

All three are computed with log-sum-exp, so they stay finite at any similarity.
"""

from __future__ import annotations

import torch

LOSSES = ("infonce", "multipos_mean", "multipos_logsum")


def directional_loss(anchors: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
                     own: torch.Tensor, temperature: float, kind: str) -> torch.Tensor:
    """anchors [B, d], candidates [M, d], positives [B, M] bool, own [B] (index into M)
    -> mean loss over anchors."""
    logits = anchors.float() @ candidates.float().T / temperature    # [B, M]
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # [B, M]
    if kind == "infonce":
        return -log_prob.gather(1, own[:, None]).mean()
    positives = positives.clone()
    positives[torch.arange(len(own), device=own.device), own] = True   # own is always positive
    if kind == "multipos_mean":
        per_anchor = (log_prob * positives).sum(1) / positives.sum(1)
    elif kind == "multipos_logsum":
        per_anchor = torch.logsumexp(log_prob.masked_fill(~positives, float("-inf")), dim=1)
    else:
        raise ValueError(f"unknown loss {kind!r}: choose one of {', '.join(LOSSES)}")
    return -per_anchor.mean()


def av_loss(video: torch.Tensor, audio: torch.Tensor, positives: torch.Tensor,
            temperature: float, kind: str, *, video_all: torch.Tensor | None = None,
            audio_all: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
    """Symmetric audio-visual loss.

    video, audio [B, d]: this process's clips; positives [B, M] bool: video clip i and
    audio clip j are a positive pair (the same matrix serves audio anchor i against video
    candidate j: positive labels are symmetric in the two modalities). video_all, audio_all
    [M, d]: every process's clips under DDP (default: the local ones, M = B); `offset` is
    where the local clips start in them.
    """
    video_all = video if video_all is None else video_all
    audio_all = audio if audio_all is None else audio_all
    own = torch.arange(offset, offset + len(video), device=video.device)    # [B]
    v2a = directional_loss(video, audio_all, positives, own, temperature, kind)
    a2v = directional_loss(audio, video_all, positives, own, temperature, kind)
    return 0.5 * (v2a + a2v)
