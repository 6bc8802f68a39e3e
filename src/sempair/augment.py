"""Augmentation of a training batch, on the batch tensors (CPU or GPU alike).

    audio  log-mel [B, n_mels, T_a] float -> SpecAugment masks, random gain, a small shift
    video  frames  [B, T, 3, H, W] uint8  -> a small translation, a horizontal flip

Each clip draws its own parameters from a generator seeded by (train.seed, step), so a run
is reproducible and a resumed run augments exactly as the uninterrupted one. No
photometric jitter: the video encoder normalises each clip's brightness and contrast away
(sempair.models.scene_channels), so jitter would be undone before the first conv.
The audio shift moves sound against picture by a few mel frames: real microphones lead or
lag the camera, and a model should not hang on the exact frame.
"""

from __future__ import annotations

import math

import torch

from sempair.config import AugmentConfig


def generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The random stream for one step of one DDP rank: a pure function of the three."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step + (rank << 40))


def augment(audio: torch.Tensor, video: torch.Tensor, cfg: AugmentConfig,
            rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A randomly varied copy of the batch (the inputs are not changed)."""
    if not cfg.enabled:
        return audio, video
    return _audio(audio, cfg, rng), _video(video, cfg, rng)


def _audio(logmel: torch.Tensor, cfg: AugmentConfig, rng: torch.Generator) -> torch.Tensor:
    b, bands, frames = logmel.shape
    x = logmel.float()
    gain = (torch.rand(b, generator=rng) * 2 - 1) * cfg.gain_db * math.log(10) / 10
    x = x + gain.to(x.device)[:, None, None]                 # dB of power -> natural-log power
    shift = torch.randint(-cfg.audio_shift, cfg.audio_shift + 1, (b,), generator=rng)
    x = torch.stack([torch.roll(x[i], int(s), dims=1) for i, s in enumerate(shift)]) \
        if cfg.audio_shift else x
    fill = x.mean(dim=(1, 2), keepdim=True)                  # [B, 1, 1] each clip's level
    x = torch.where(_band_mask(b, bands, cfg.freq_mask, rng).to(x.device)[:, :, None], fill, x)
    x = torch.where(_band_mask(b, frames, cfg.time_mask, rng).to(x.device)[:, None, :], fill, x)
    return x                                                 # [B, n_mels, T_a]


def _band_mask(b: int, size: int, widest: int, rng: torch.Generator) -> torch.Tensor:
    """[B, size] bool: one masked stretch per clip, 0..widest long, anywhere."""
    width = torch.randint(0, widest + 1, (b, 1), generator=rng)
    start = (torch.rand(b, 1, generator=rng) * (size - width + 1)).long()
    where = torch.arange(size)[None, :]
    return (where >= start) & (where < start + width)


def _video(frames: torch.Tensor, cfg: AugmentConfig, rng: torch.Generator) -> torch.Tensor:
    b, _, _, h, w = frames.shape
    flip = torch.rand(b, generator=rng) < cfg.flip
    s = cfg.shift_pixels
    dy, dx = (torch.randint(-s, s + 1, (b,), generator=rng) for _ in range(2))
    out = torch.empty_like(frames)
    for i in range(b):       # shifted by (dy, dx): edge pixels repeat, nothing wraps around
        rows = (torch.arange(h) - dy[i]).clamp(0, h - 1).to(frames.device)
        cols = (torch.arange(w) - dx[i]).clamp(0, w - 1).to(frames.device)
        cols = cols.flip(0) if flip[i] else cols
        out[i] = frames[i][:, :, rows][:, :, :, cols]
    return out                                               # [B, T, 3, H, W] uint8
