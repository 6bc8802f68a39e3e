"""Write a media file with PyAV, encoding video and audio chunk by chunk, interleaved.

    write_recording("x.mp4", frames, audio, fps=15, sample_rate=32000)          # H.264 + AAC
    write_recording("x.webm", frames, audio, fps=15, sample_rate=32000)         # VP9 + Opus
    write_recording("x.wav", None, audio, fps=15, sample_rate=16000)            # audio only

Memory stays at one chunk: whichever stream is behind in time is fed next, so a long
recording is never held whole and the muxer gets packets in time order.

The bytes are a function of the inputs alone: every encoder runs on one thread (PyAV's
default is one per core, and mpeg4, for one, then cuts a slice per thread, so its bytes
follow the machine's core count), and the muxer is bit-exact (Matroska/WebM and Ogg
otherwise stamp each file with random segment, track and serial numbers).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# codecs a container can't hold are swapped for its usual ones (only when left as default)
CONTAINER_CODECS = {".webm": ("libvpx-vp9", "libopus"), ".avi": ("mpeg4", "pcm_s16le"),
                    ".wav": (None, "pcm_s16le"), ".ogg": (None, "libopus"),
                    ".opus": (None, "libopus"), ".flac": (None, "flac")}
MOV_FAMILY = {".mp4", ".m4a", ".m4v", ".mov"}           # where +faststart means something
OPUS_RATES = (48000, 24000, 16000, 12000, 8000)         # libopus takes only these
LAYOUTS = {1: "mono", 2: "stereo"}
CODEC_OPTIONS = {  # speed over size: these files are for training, not for archiving
    "libx264": {"preset": "veryfast"},
    "aac": {"aac_coder": "fast"},                          # 2x faster than twoloop
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
}


def write_recording(path: str | Path, frames: Iterable[np.ndarray] | None,
                    audio: Iterable[np.ndarray] | None, *, fps: int, sample_rate: int,
                    video_codec: str = "libx264", audio_codec: str = "aac",
                    pix_fmt: str = "yuv420p", faststart: bool = True) -> None:
    """Encode frames (uint8 [H, W, 3] RGB, or batches [n, H, W, 3]) and audio (float32
    [channels, samples] chunks in [-1, 1], or [samples] for mono) into `path`.

    Either source may be None or empty for a video-only or audio-only file. Opus is
    resampled to 48 kHz when the rate is not one it takes; other rates are kept.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    vcodec, acodec = video_codec, audio_codec
    if suffix in CONTAINER_CODECS:
        vcodec = CONTAINER_CODECS[suffix][0] if video_codec == "libx264" else video_codec
        acodec = CONTAINER_CODECS[suffix][1] if audio_codec == "aac" else audio_codec
    video, sound = _batches(frames), _chunks(audio)
    next_v, next_a = next(video, None), next(sound, None)
    if next_v is None and next_a is None:
        raise ValueError(f"{path}: nothing to write (no frames and no audio)")
    if next_v is not None and vcodec is None:
        raise ValueError(f"{path}: a {suffix} file holds no video; pass frames=None")
    options = {"movflags": "+faststart"} if faststart and suffix in MOV_FAMILY else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=options) as out:
        out.flags |= av.container.Flags.bitexact.value  # no random ids: same input, same bytes
        v = a = None
        if next_v is not None:
            height, width = next_v.shape[1:3]
            if pix_fmt == "yuv420p" and (width % 2 or height % 2):
                raise ValueError(f"{path}: frame size {width}x{height} must be even for "
                                 "yuv420p; crop or pad frames to even width and height")
            v = out.add_stream(vcodec, rate=fps)
            v.width, v.height, v.pix_fmt = width, height, pix_fmt
            v.options = CODEC_OPTIONS.get(vcodec, {})
            v.codec_context.thread_count = 1              # threads change the bytes
        if next_a is not None:
            channels = next_a.shape[0]
            if channels not in LAYOUTS:
                raise ValueError(f"{path}: {channels} audio channels; use 1 or 2")
            rate = sample_rate
            if "opus" in acodec and rate not in OPUS_RATES:
                rate = 48000                       # PyAV's encoder resamples on the way in
            a = out.add_stream(acodec, rate=rate, layout=LAYOUTS[channels])
            a.options = CODEC_OPTIONS.get(acodec, {})
            a.codec_context.thread_count = 1
        n_frames = n_samples = 0
        while next_v is not None or next_a is not None:
            video_first = next_a is None or (
                next_v is not None and n_frames / fps <= n_samples / sample_rate)
            if video_first:
                for img in next_v:
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    frame.pts, frame.time_base = n_frames, Fraction(1, fps)
                    out.mux(v.encode(frame))
                    n_frames += 1
                next_v = next(video, None)
            else:
                frame = av.AudioFrame.from_ndarray(next_a, format="fltp",
                                                   layout=LAYOUTS[next_a.shape[0]])
                frame.sample_rate = sample_rate
                frame.pts, frame.time_base = n_samples, Fraction(1, sample_rate)
                out.mux(a.encode(frame))
                n_samples += next_a.shape[1]
                next_a = next(sound, None)
        for stream in (v, a):
            if stream is not None:
                out.mux(stream.encode(None))


def _batches(frames: Iterable[np.ndarray] | None) -> Iterator[np.ndarray]:
    """Yield uint8 [n, H, W, 3] batches from single frames or batches."""
    for item in frames or ():
        item = np.asarray(item)
        if item.dtype != np.uint8 or item.shape[-1] != 3 or item.ndim not in (3, 4):
            raise ValueError(f"frames must be uint8 [H, W, 3] or [n, H, W, 3] RGB, got "
                             f"{item.dtype} {item.shape}")
        batch = item[None] if item.ndim == 3 else item
        if len(batch):
            yield np.ascontiguousarray(batch)


def _chunks(audio: Iterable[np.ndarray] | None) -> Iterator[np.ndarray]:
    """Yield float32 [channels, n] chunks in [-1, 1] (mono [n] becomes [1, n])."""
    for item in audio or ():
        item = np.asarray(item, np.float32)
        item = item[None] if item.ndim == 1 else item
        if item.ndim != 2:
            raise ValueError(f"audio chunks must be [channels, samples], got {item.shape}")
        if item.shape[1]:
            yield np.ascontiguousarray(np.clip(item, -1, 1))
