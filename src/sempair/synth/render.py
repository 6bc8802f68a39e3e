"""One recording, rendered and encoded one chunk (CHUNK_SECONDS) at a time.

Video chunk k draws its frames with pixel noise from RNG (recording seed, k, 0); audio
chunk k is the ambient bed from RNG (recording seed, k, 1) plus the slices of every event
sound that overlap it. Event sounds are computed whole, once, from their own seeds, so the
result does not depend on where chunks fall, and memory holds only the events in play.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import draw, sounds
from .scene import Event, Recording
from .writer import write_recording

CHUNK_SECONDS = 1


def render_recording(path: Path, rec: Recording, cfg) -> None:
    """Write `rec` as H.264 + AAC to `path` (via a temporary name, then renamed)."""
    path = Path(path)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    write_recording(tmp, video_chunks(rec, cfg), audio_chunks(rec, cfg), fps=cfg.fps,
                    sample_rate=cfg.sample_rate)
    os.replace(tmp, path)


def video_chunks(rec: Recording, cfg) -> Iterator[np.ndarray]:
    """uint8 [fps·CHUNK_SECONDS, H, W, 3] per chunk (the last one may be shorter)."""
    total, step = round(rec.seconds * cfg.fps), cfg.fps * CHUNK_SECONDS
    for k, first in enumerate(range(0, total, step)):
        t = np.arange(first, min(first + step, total)) / cfg.fps
        yield draw.render(rec, t, cfg.width, cfg.height, np.random.default_rng([rec.seed, k, 0]))


def audio_chunks(rec: Recording, cfg) -> Iterator[np.ndarray]:
    """float32 [channels, sample_rate·CHUNK_SECONDS] per chunk, peak below sounds.CEILING."""
    sr, total = cfg.sample_rate, round(rec.seconds * cfg.sample_rate)
    ambient = sounds.Ambient(rec, sr, cfg.channels)
    mixer = Mixer(rec.events, sr, cfg.channels, rec.camera)
    for k, first in enumerate(range(0, total, sr * CHUNK_SECONDS)):
        n = min(sr * CHUNK_SECONDS, total - first)
        yield sounds.limit(ambient.chunk(k, first / sr, n) + mixer.chunk(first, n))


class Mixer:
    """Adds event sounds into chunks; each is made when first heard and dropped when over."""

    def __init__(self, events: tuple[Event, ...], sr: int, channels: int, camera: int = 0):
        self.sr, self.channels, self.camera = sr, channels, camera
        self.todo = sorted((e for e in events if e.audio_span), key=lambda e: e.audio_span[0])
        self.live: list[tuple[int, np.ndarray]] = []     # (first sample, sound [C, n])

    def chunk(self, first: int, n: int) -> np.ndarray:
        """Samples [first, first + n) of all event sounds together -> [C, n]."""
        while self.todo and round(self.todo[0].audio_span[0] * self.sr) < first + n:
            ev = self.todo.pop(0)
            self.live.append((round(ev.audio_span[0] * self.sr),
                              sounds.event_audio(ev, self.sr, self.channels,
                                                 draw.fixed_x(ev, self.camera))))
        out = np.zeros((self.channels, n))
        for start, sound in self.live:
            a, b = max(first, start), min(first + n, start + sound.shape[1])
            if a < b:
                out[:, a - first:b - first] += sound[:, a - start:b - start]
        self.live = [(s, x) for s, x in self.live if s + x.shape[1] > first + n]
        return out
