"""Audio and video encoders into one shared, L2-normalised embedding space.

    audio  log-mel [B, n_mels, T_a] float  -> AudioEncoder -> [B, dim]
    video  frames  [B, T, 3, H, W] uint8   -> VideoEncoder -> [B, dim]

Small by default (the demo trains in minutes on 2 CPU cores); widths come from the
`model` section of params.yaml, so a GPU preset only changes numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sempair.config import ModelConfig


def _projection(width: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))


class AudioEncoder(nn.Module):
    """2D CNN over log-mel: conv-BN-ReLU blocks, each halving both axes, then mean-pool."""

    def __init__(self, widths: tuple[int, ...], dim: int):
        super().__init__()
        self.input_norm = nn.BatchNorm2d(1)   # learns the log-mel scale: no fixed constants
        blocks, channels = [], 1
        for width in widths:
            blocks += [nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = _projection(channels, dim)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(logmel.float().unsqueeze(1))   # [B, 1, n_mels, T_a]
        x = self.blocks(x)                                 # [B, C, n_mels/2^L, T_a/2^L]
        x = x.mean(dim=(2, 3))                             # [B, C]
        return F.normalize(self.head(x), dim=-1)           # [B, dim]


class Conv2Plus1D(nn.Sequential):
    """A (2+1)D block: spatial 1×3×3 conv (stride 2 in H, W), then temporal 3×1×1 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class VideoEncoder(nn.Module):
    """(2+1)D CNN over a clip's frames, then mean-pool over time and space."""

    def __init__(self, widths: tuple[int, ...], dim: int):
        super().__init__()
        self.input_norm = nn.BatchNorm3d(3)
        blocks, channels = [], 3
        for width in widths:
            blocks.append(Conv2Plus1D(channels, width))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.head = _projection(channels, dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 2, 1, 3, 4).float() / 255.0  # [B, 3, T, H, W]
        x = self.blocks(self.input_norm(x))                # [B, C, T, H/2^L, W/2^L]
        x = x.mean(dim=(2, 3, 4))                          # [B, C]
        return F.normalize(self.head(x), dim=-1)           # [B, dim]


class AVEncoders(nn.Module):
    """The encoder pair, trained together: (log-mel, frames) -> (audio, video) embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.audio = AudioEncoder(cfg.audio_widths, cfg.dim)
        self.video = VideoEncoder(cfg.video_widths, cfg.dim)

    def forward(self, logmel: torch.Tensor,
                frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.audio(logmel), self.video(frames)      # [B, dim], [B, dim]
