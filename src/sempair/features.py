"""Clip features: log-mel spectrograms (pure torch) and per-clip statistics.

Ingest and serving both call `log_mel` and `clip_stats`, so a clip means the same thing
in training and in production. `log_mel` of finite audio is always finite (and within
float16, as the dataset stores it); NaN or infinite audio is refused, not turned into NaN
features (`sempair.media` repairs or refuses such audio at decode).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from sempair.config import FeatureConfig

LOG_FLOOR = 1e-10  # power floor before the log: silence maps to log(1e-10) ≈ -23
MAX_SAMPLE = 1e3   # |sample| limit (60 dB over full scale): beyond it is corrupt, not sound


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float,
                   f_max: float) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, [n_fft // 2 + 1, n_mels] float32."""
    fft_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2,
                               dtype=torch.float64)
    hz_edges = mel_to_hz(mel_edges)                                  # [n_mels + 2]
    lower, center, upper = hz_edges[:-2], hz_edges[1:-1], hz_edges[2:]
    f = fft_hz[:, None]                                              # [F, 1]
    rising = (f - lower) / (center - lower)
    falling = (upper - f) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()  # [F, n_mels]


def mel_center_hz(cfg: FeatureConfig) -> np.ndarray:
    """Center frequency of each mel band, [n_mels]."""
    edges = torch.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2,
                           dtype=torch.float64)
    return mel_to_hz(edges[1:-1]).numpy()


@functools.lru_cache(maxsize=8)
def _window(win_length: int) -> torch.Tensor:
    return torch.hann_window(win_length)


def log_mel(waveform: torch.Tensor | np.ndarray, cfg: FeatureConfig) -> torch.Tensor:
    """Mono waveforms [B, samples] at cfg.sample_rate -> log-mel [B, n_mels, samples // hop].

    Centered STFT (reflect padding) with the last frame dropped, so a 1 s clip at 16 kHz
    with a 10 ms hop gives exactly 100 frames, each describing its own 10 ms. Samples are
    clamped to ±MAX_SAMPLE, so that the power cannot overflow; NaN or infinite samples are
    a ValueError.
    """
    x = torch.as_tensor(waveform, dtype=torch.float32)
    if x.ndim == 1:
        x = x[None]
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"waveform has {bad} NaN or infinite samples, which would make NaN "
                         "features; repair the audio first (sempair.media.ClipReader sets "
                         "them to 0 at decode, or refuses a broken track)")
    x = x.clamp(-MAX_SAMPLE, MAX_SAMPLE)
    n_frames = x.shape[-1] // cfg.hop_length
    spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                      win_length=cfg.win_length, window=_window(cfg.win_length),
                      center=True, pad_mode="reflect", return_complex=True)  # [B, F, n+1]
    power = spec.real.square() + spec.imag.square()
    fb = mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max)
    mel = torch.einsum("bft,fm->bmt", power[..., :n_frames], fb)    # [B, n_mels, n_frames]
    return torch.log(torch.clamp(mel, min=LOG_FLOOR))


def clip_stats(waveform: np.ndarray, logmel: np.ndarray, frames: np.ndarray) -> dict:
    """Per-clip statistics for validation and drift checks, each [B] float32.

    waveform [B, samples] float, logmel [B, n_mels, T_a], frames [B, T, 3, H, W] uint8.
    """
    rms = np.sqrt(np.mean(np.square(waveform, dtype=np.float64), axis=1))
    luma = frames.mean(axis=2, dtype=np.float32) / 255.0            # [B, T, H, W]
    motion = np.abs(np.diff(luma, axis=1)).mean(axis=(1, 2, 3)) if luma.shape[1] > 1 \
        else np.zeros(len(luma))
    return {
        "audio_rms_dbfs": (20 * np.log10(np.maximum(rms, 10 ** (-120 / 20)))).astype(np.float32),
        "audio_logmel_mean": logmel.mean(axis=(1, 2)).astype(np.float32),
        "video_brightness": luma.mean(axis=(1, 2, 3)).astype(np.float32),
        "video_contrast": luma.std(axis=(2, 3)).mean(axis=1).astype(np.float32),
        "video_motion": motion.astype(np.float32),
    }
