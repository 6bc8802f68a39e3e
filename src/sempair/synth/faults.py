"""Broken and partial media files, for ingest's quarantine tests and the demo.

    kinds = write_bad_files(Path("data/raw/bad"))   # {"empty.mp4": "empty", ...}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .writer import write_recording

SIZE, FPS, SAMPLE_RATE = (64, 48), 10, 16000     # small: these files only need to exist
SHORT, LONG = 2.0, 10.0                          # seconds
KEEP = 0.6                                       # share of bytes a truncated file keeps


def write_bad_files(out_dir: Path, seed: int = 0) -> dict[str, str]:
    """Write one file of each bad kind into out_dir; return {file name: kind}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (out_dir / "empty.mp4").write_bytes(b"")
    (out_dir / "garbage.mp4").write_bytes(rng.integers(0, 256, 64 * 1024, np.uint8).tobytes())
    (out_dir / "not_a_video.mp4").write_text("This is a text file with a video's name.\n" * 20)
    write_recording(out_dir / "no_audio.mp4", _frames(rng, SHORT), None, fps=FPS,
                    sample_rate=SAMPLE_RATE)
    write_recording(out_dir / "no_video.m4a", None, _audio(rng, SHORT), fps=FPS,
                    sample_rate=SAMPLE_RATE)
    for name, faststart in (("truncated.mp4", True), ("truncated_noindex.mp4", False)):
        path = out_dir / name
        write_recording(path, _frames(rng, LONG), _audio(rng, LONG), fps=FPS,
                        sample_rate=SAMPLE_RATE, faststart=faststart)
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * KEEP)])
    return {"empty.mp4": "empty", "garbage.mp4": "garbage", "not_a_video.mp4": "not_a_video",
            "no_audio.mp4": "no_audio", "no_video.m4a": "no_video",
            "truncated.mp4": "truncated", "truncated_noindex.mp4": "truncated_noindex"}


def _frames(rng: np.random.Generator, seconds: float):
    """A square sliding over noise: uint8 [H, W, 3] per frame."""
    w, h = SIZE
    for i in range(round(seconds * FPS)):
        img = rng.integers(40, 90, (h, w, 3), np.uint8)
        x = i * 3 % (w - 12)
        img[16:28, x:x + 12] = (220, 60, 40)
        yield img


def _audio(rng: np.random.Generator, seconds: float):
    """A 440 Hz tone in hiss, one second per chunk: float32 [1, SAMPLE_RATE]."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    for _ in range(round(seconds)):
        yield (0.2 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(SAMPLE_RATE))[None]
