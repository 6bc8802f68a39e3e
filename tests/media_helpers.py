"""Recordings with known content, for tests: flashes and clicks at chosen times."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sempair.synth import write_recording


def flash_and_click(path: Path, *, seconds: float, fps: int, sample_rate: int, channels: int,
                    size: tuple[int, int] = (160, 120), events: tuple[float, ...] = (1.5,),
                    video_codec: str = "libx264", audio_codec: str = "aac",
                    with_audio: bool = True, with_video: bool = True) -> Path:
    """A dim, noisy scene; at each time in `events` one white frame and a 10 ms click."""
    width, height = size
    rng = np.random.default_rng(0)

    def frames():
        for i in range(round(seconds * fps)):
            frame = np.full((height, width, 3), 40, np.uint8)
            frame += rng.integers(0, 8, frame.shape, dtype=np.uint8)
            if any(i / fps <= t < (i + 1) / fps for t in events):
                frame[:] = 250
            yield frame

    def audio():
        total, chunk = round(seconds * sample_rate), sample_rate // 4
        for start in range(0, total, chunk):
            block = rng.normal(0, 0.005, (channels, min(chunk, total - start)))
            block = block.astype(np.float32)
            for t in events:
                at = round(t * sample_rate) - start
                if 0 <= at < chunk:
                    block[:, at:at + sample_rate // 100] = 0.8
            yield block

    write_recording(path, frames() if with_video else None, audio() if with_audio else None,
                    fps=fps, sample_rate=sample_rate, video_codec=video_codec,
                    audio_codec=audio_codec)
    return path
