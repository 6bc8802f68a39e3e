"""Audio and video encoders into one shared, L2-normalised embedding space.

    audio  log-mel [B, n_mels, T_a] float  -> AudioEncoder -> [B, dim]
    video  frames  [B, T, 3, H, W] uint8   -> VideoEncoder -> [B, dim]

Built for fixed surveillance cameras, where an event is a small moving object (or a short
sound) on a large static scene whose light, colour and noise floor drift all day:

- **The static scene is taken out first, per clip.** Video: each clip is normalised by its
  own brightness and contrast, and two motion channels join the colours: the distance of
  each frame from the clip's temporal median (a background model that needs no state, so
  serving computes it from the request alone) and from the previous frame. Audio: each
  band's median over the clip (its stationary noise floor) is subtracted in a second
  channel.
- **The readout keeps layout.** Video features are pooled over time but kept on a
  `grid × grid` spatial layout; audio features are pooled over time but kept in `bands`
  frequency bands. A global mean pool threw away *where* and *which band* — exactly what
  separates a car in the near lane from one in the far lane, or a siren from an engine.

`backbone(...)` gives the readout features (the layout, flattened) before the projection
head; evaluation probes both. Widths come from the `model` section of params.yaml.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sempair.config import ModelConfig

HEAD_WIDTH = 512   # the projection heads' hidden width (at most the readout's size)


def _projection(features: int, dim: int) -> nn.Module:
    hidden = min(features, HEAD_WIDTH)
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AudioEncoder(nn.Module):
    """2D CNN over log-mel and its noise-floor-subtracted copy; pooled over time, kept in
    `bands` frequency bands."""

    def __init__(self, widths: tuple[int, ...], dim: int, bands: int):
        super().__init__()
        self.bands = bands
        self.input_norm = nn.BatchNorm2d(2)   # learns the log-mel scale: no fixed constants
        blocks, channels = [], 2
        for width in widths:
            blocks += [*_conv_bn(channels, width, 3, stride=2, padding=1),
                       *_conv_bn(width, width, 3, padding=1)]
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.features = channels * bands
        self.head = _projection(self.features, dim)

    def backbone(self, logmel: torch.Tensor) -> torch.Tensor:
        x = logmel.float().unsqueeze(1)                              # [B, 1, n_mels, T_a]
        floor = x.median(dim=3, keepdim=True).values                 # [B, 1, n_mels, 1]
        x = self.input_norm(torch.cat([x, x - floor], dim=1))        # [B, 2, n_mels, T_a]
        x = self.blocks(x)                                           # [B, C, F', T']
        x = F.adaptive_avg_pool2d(x, (self.bands, 1))                # [B, C, bands, 1]
        return x.flatten(1)                                          # [B, C * bands]

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(logmel)), dim=-1)   # [B, dim]


SNAPSHOTS = 4    # the clip's foreground is kept at this many moments (direction of motion)


def scene_channels(frames: torch.Tensor, snapshots: int = SNAPSHOTS) -> torch.Tensor:
    """uint8 frames [B, T, 3, H, W] -> [B, 3 + SNAPSHOTS + 1, H, W], the static scene taken
    out: the clip's mean colour normalised by its own brightness and contrast; where the
    clip's luma differs from its temporal median (a background model that needs no state)
    in SNAPSHOTS consecutive stretches of the clip, so the direction of motion survives;
    and how much each pixel's luma changes from frame to frame."""
    x = frames.float() / 255.0                                             # [B, T, 3, H, W]
    mean = x.mean(dim=(1, 3, 4), keepdim=True)                             # [B, 1, 3, 1, 1]
    std = x.std(dim=(1, 3, 4), keepdim=True)
    x = (x - mean) / (std + 0.02)                # + 0.02: a dark, flat clip is not blown up
    luma = x.mean(2)                                                       # [B, T, H, W]
    _, t, h, w = luma.shape
    foreground = (luma - luma.median(dim=1, keepdim=True).values).abs()    # [B, T, H, W]
    stretches = F.adaptive_max_pool3d(foreground.unsqueeze(1), (snapshots, h, w))[:, 0]
    motion = (luma[:, 1:] - luma[:, :-1]).abs().mean(1) if t > 1 else foreground[:, 0]
    return torch.cat([x.mean(1), stretches, motion.unsqueeze(1)], dim=1)   # [B, 8, H, W]


class VideoEncoder(nn.Module):
    """2D CNN over the scene channels (time folded into them); kept on a `grid × grid`
    layout."""

    def __init__(self, widths: tuple[int, ...], dim: int, grid: int):
        super().__init__()
        self.grid = grid
        self.input_norm = nn.BatchNorm2d(3 + SNAPSHOTS + 1)
        blocks, channels = [], 3 + SNAPSHOTS + 1
        for width in widths:
            blocks += [*_conv_bn(channels, width, 3, stride=2, padding=1),
                       *_conv_bn(width, width, 3, padding=1)]
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.features = channels * grid * grid
        self.head = _projection(self.features, dim)

    def backbone(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(scene_channels(frames))                  # [B, 8, H, W]
        x = self.blocks(x)                                           # [B, C, H', W']
        x = F.adaptive_avg_pool2d(x, (self.grid, self.grid))         # [B, C, g, g]
        return x.flatten(1)                                          # [B, C * g * g]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(frames)), dim=-1)   # [B, dim]


class AVEncoders(nn.Module):
    """The encoder pair, trained together: (log-mel, frames) -> (audio, video) embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.audio = AudioEncoder(cfg.audio_widths, cfg.dim, cfg.bands)
        self.video = VideoEncoder(cfg.video_widths, cfg.dim, cfg.grid)

    def forward(self, logmel: torch.Tensor,
                frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.audio(logmel), self.video(frames)      # [B, dim], [B, dim]

    def backbone(self, logmel: torch.Tensor,
                 frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The readout features before the projection heads: [B, C_a·bands], [B, C_v·g²]."""
        return self.audio.backbone(logmel), self.video.backbone(frames)

    def layers(self, logmel: torch.Tensor, frames: torch.Tensor) -> dict[str, tuple]:
        """Both layers from one pass: {"projection": (audio, video), "backbone": (...)}."""
        features = self.backbone(logmel, frames)
        heads = (self.audio.head, self.video.head)
        return {"projection": tuple(F.normalize(head(x), dim=-1)
                                    for head, x in zip(heads, features, strict=True)),
                "backbone": features}
