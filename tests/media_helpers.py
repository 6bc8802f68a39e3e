"""Recordings with known content, for tests: flashes and clicks at chosen times."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
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


def marked_frames(count: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """[count, H, W, 3] dim frames with a white block in the top-left corner, so that a
    reader's orientation shows: upright, the block stays top-left."""
    width, height = size
    frames = np.full((count, height, width, 3), 40, np.uint8)
    frames[:, : height // 3, : width // 4] = 250
    return frames


def write_av(path: Path, frames: np.ndarray | None, audio: np.ndarray | None, *, fps: int,
             sample_rate: int, video_codec: str = "libx264", audio_codec: str = "pcm_f32le",
             audio_start: float = 0.0, display_rotation: int | None = None,
             rotate_tag: str | None = None) -> Path:
    """What `write_recording` cannot make: float audio written as given (NaN and inf
    kept), audio that starts `audio_start` seconds after the video, and rotation metadata
    (a display matrix rotating `display_rotation` degrees counterclockwise, or an old-style
    `rotate` tag). frames [n, H, W, 3] uint8 RGB; audio [channels, samples] float32."""
    with av.open(str(path), "w") as out:
        video = sound = None
        if frames is not None:
            video = out.add_stream(video_codec, rate=fps)
            video.height, video.width = frames.shape[1:3]
            video.pix_fmt = "yuv420p"
            if display_rotation is not None:
                video.set_display_rotation(display_rotation)
            if rotate_tag is not None:
                video.metadata["rotate"] = rotate_tag
        if audio is not None:
            layout = {1: "mono", 2: "stereo"}[len(audio)]
            sound = out.add_stream(audio_codec, rate=sample_rate, layout=layout)
        for i, image in enumerate(() if video is None else frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        offset, chunk = round(audio_start * sample_rate), sample_rate // 10
        for start in range(0, 0 if sound is None else audio.shape[1], chunk):
            block = np.ascontiguousarray(audio[:, start:start + chunk], np.float32)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = sample_rate
            frame.pts, frame.time_base = offset + start, Fraction(1, sample_rate)
            out.mux(sound.encode(frame))
        for stream in (video, sound):
            if stream is not None:
                out.mux(stream.encode(None))
    return path
