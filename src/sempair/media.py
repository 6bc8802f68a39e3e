"""Decoding recordings into fixed-length clips, streamed (PyAV).

`ClipReader` demuxes a file packet by packet and yields batches of clips: mono audio
resampled to `features.sample_rate` and RGB frames sampled at `features.fps` and resized
to `features.height × features.width`. Memory is bounded by one batch whatever the
recording's length. Anything wrong with a file is a `MediaError` whose message says what
is wrong and how to fix it; a file that breaks mid-way keeps its decodable prefix and
says so in `ClipReader.problems`.

Ingest needs both streams, so by default (`streams="both"`) a file without audio or
without video is a `MediaError`. `streams="any"` also reads one-stream media (a .wav, a
camera without a microphone): its clips are cut on the same timeline, `reader.audio` or
`reader.video` is None, the missing stream's fields of `reader.info` are None, and every
batch carries None for the missing modality (`ClipBatch.audio` or `ClipBatch.frames`).

Timeline: clip k covers [k·hop, k·hop + clip) seconds from `origin`, the instant the video
starts (the audio's start for audio-only media; the file's start for almost every file,
what a player shows as 0:00). Audio is placed by its timestamps, so audio that starts late
(common in surveillance: the microphone wakes after the camera) or has a gap becomes
silence there (and is reported) instead of shifting everything after it; audio before the
video starts is dropped; encoder priming (AAC) is removed by FFmpeg's edit-list handling.

Poisoned input: decoded float audio values that are NaN, infinite or beyond ±MAX_SAMPLE
are set to 0 before resampling can spread them, and reported in `problems` with their
count and times; when more than MAX_BAD_SHARE of the audio is such, the track is broken
and reading ends with a `CorruptAudioError` instead (raised after the last batch, so a
caller that keeps clips must drop them).

Orientation: a display matrix (phone and body-cam recordings) or an old-style `rotate` tag
on the video stream is applied, so frames come out upright and `features.width × height`
is the upright size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from sempair import SempairError
from sempair.config import FeatureConfig
from sempair.features import MAX_SAMPLE

MAX_BAD_PACKETS = 50  # consecutive undecodable packets before the rest is given up
FRAME_EPS = 1e-6      # seconds; a frame due at t is shown if its pts <= t + FRAME_EPS
AUDIO_SLACK = 0.01    # seconds of timestamp jitter ignored when placing audio frames
REPORT_GAP = 0.1      # seconds; audio gaps at least this long are reported
MAX_BAD_SHARE = 0.01  # share of NaN/inf/out-of-range audio samples repaired; more: corrupt
FLOAT_AUDIO = {"flt": np.float32, "fltp": np.float32, "dbl": np.float64, "dblp": np.float64}


class MediaError(SempairError):
    """A file that cannot be ingested; str(error) is the reason shown to the user."""


class CorruptAudioError(MediaError):
    """Decodable audio whose samples are mostly NaN, infinite or out of range."""


@dataclass(frozen=True)
class MediaInfo:
    """A stream's fields are None when the file lacks it (only with streams="any")."""
    container: str
    duration: float | None       # declared by the container, seconds
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None     # average frame rate
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass
class ClipBatch:
    """One batch of clips; a modality the file lacks is None (only with streams="any")."""
    starts: np.ndarray           # [B] float64, seconds in the recording
    audio: np.ndarray | None     # [B, samples] float32 mono
    frames: np.ndarray | None    # [B, T, 3, H, W] uint8 RGB


def open_media(file: str | BinaryIO) -> av.container.InputContainer:
    try:
        return av.open(file, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as error:
        raise MediaError(_unreadable_reason(file, error)) from None


def _unreadable_reason(file: str | BinaryIO, error: Exception) -> str:
    with open(file, "rb") if isinstance(file, str) else contextlib.nullcontext(file) as handle:
        handle.seek(0)
        head = handle.read(64)
        if head[4:8] == b"ftyp" and not _has_mp4_box(handle, b"moov"):
            return ("truncated or unfinished MP4: its index ('moov' atom) is missing, so "
                    "nothing in it can be decoded; re-encode with `-movflags +faststart` "
                    "(or fragmented MP4) so that a cut file keeps a decodable prefix, or "
                    "copy the file again")
    kind = "a text file, not a media file" if head and _looks_like_text(head) else \
        "not a media file"
    return (f"{kind} FFmpeg can read ({_ffmpeg_message(error)}); expected a video with audio "
            "in a container such as mp4, mkv, mov, avi or webm")


def _ffmpeg_message(error: Exception) -> str:
    """FFmpeg's own words, without the errno number PyAV puts in front."""
    return getattr(error, "strerror", None) or str(error)


def _looks_like_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 32 or b in b"\n\r\t" for b in data)


def _has_mp4_box(handle: BinaryIO, box: bytes) -> bool:
    """Walk the top-level MP4 boxes (size, type) looking for a complete `box`."""
    end, offset = handle.seek(0, 2), 0
    while offset + 8 <= end:
        handle.seek(offset)
        header = handle.read(16)
        size, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if size == 1:
            size = int.from_bytes(header[8:16], "big")
        elif size == 0:                 # box runs to the end of the file
            size = end - offset
        if kind == box:
            return offset + size <= end
        if size < 8:
            return False
        offset += size
    return False


def recording_streams(container: av.container.InputContainer):
    """(first video stream, first audio stream), None for a kind the file lacks; a cover
    picture (an attached picture) is not video."""
    video = [s for s in container.streams.video
             if not (s.disposition & av.stream.Disposition.attached_pic)]
    audio = list(container.streams.audio)
    return (video[0] if video else None), (audio[0] if audio else None)


def _streams(container: av.container.InputContainer, streams: str):
    video, audio = recording_streams(container)
    if video is None and audio is None:
        raise MediaError("no video and no audio stream: not a recording")
    if streams == "both" and video is None:
        raise MediaError("no video stream (audio only): ingest needs both; pair it with "
                         "its camera's video or leave it out of the source")
    if streams == "both" and audio is None:
        raise MediaError("no audio stream (video only): ingest needs both; use a camera "
                         "with a microphone, or mux its audio track into the file")
    return video, audio


def _seconds(value, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


class ClipReader:
    """Iterate over a recording's clips in batches; see the module docstring."""

    def __init__(self, file: str | BinaryIO, features: FeatureConfig, clip_seconds: float,
                 hop_seconds: float, batch_clips: int = 16, threads: int = 0,
                 streams: str = "both"):
        if streams not in ("both", "any"):
            raise ValueError(f'streams must be "both" or "any", got {streams!r}')
        self.features, self.batch_clips = features, batch_clips
        self.container = open_media(file)
        try:
            self.video, self.audio = _streams(self.container, streams)
        except MediaError:
            self.container.close()
            raise
        self.streams = [s for s in (self.video, self.audio) if s is not None]   # those read
        for stream in self.streams:
            if stream.codec_context is None or stream.codec_context.name is None:
                self.container.close()
                raise MediaError(f"{stream.type} stream has a codec this FFmpeg build cannot "
                                 "decode; re-encode it (e.g. H.264 + AAC)")
        if self.video is not None:
            self.video.thread_type = "AUTO"
            self.video.codec_context.thread_count = threads
        self.info = self._info()
        self.clip_samples = round(clip_seconds * features.sample_rate)
        self.hop_samples = round(hop_seconds * features.sample_rate)
        self.clip_frames = round(clip_seconds * features.fps)
        self.hop_frames = round(hop_seconds * features.fps)
        self.hop_seconds = hop_seconds
        self.problems: list[str] = []   # why a file was only partly read
        self.decoded_seconds = 0.0      # how much of the timeline the streams read covered

    def _info(self) -> MediaInfo:
        c = self.container
        duration = c.duration / av.time_base if c.duration else None
        if duration is None:
            durations = [_seconds(s.duration, s.time_base) for s in self.streams]
            duration = max((d for d in durations if d), default=None)
        video, audio = {}, {}
        if self.video is not None:
            v, rate = self.video.codec_context, self.video.average_rate or self.video.guessed_rate
            video = dict(video_codec=v.name, width=v.width, height=v.height,
                         fps=float(rate) if rate else None)
        if self.audio is not None:
            a = self.audio.codec_context
            audio = dict(audio_codec=a.name, sample_rate=a.sample_rate, channels=a.channels)
        return MediaInfo(container=c.format.name, duration=duration, **video, **audio)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> ClipReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- decoding ---------------------------------------------------------------------

    def _decoded(self) -> Iterator[av.AudioFrame | av.VideoFrame]:
        """Frames of the streams read, in demux order; stops at the first unreadable stretch."""
        bad_in_a_row = 0
        packets = self.container.demux(*self.streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                self.problems.append(f"reading stopped: {_ffmpeg_message(error)}")
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                bad_in_a_row += 1
                if bad_in_a_row == 1:
                    at = _seconds(packet.pts, packet.time_base)
                    where = f" at {at:.1f} s" if at is not None else ""
                    self.problems.append(f"undecodable {packet.stream.type} data{where} "
                                         f"({_ffmpeg_message(error)})")
                if bad_in_a_row >= MAX_BAD_PACKETS:
                    self.problems.append(f"{MAX_BAD_PACKETS} bad packets in a row: "
                                         "gave up on the rest")
                    break
                continue
            bad_in_a_row = 0
            yield from frames

    def _origin(self) -> float:
        """Where the clip timeline starts: the video's start, else the audio's (not < 0)."""
        first = self.video if self.video is not None else self.audio
        return max(0.0, _seconds(first.start_time, first.time_base) or 0.0)

    def __iter__(self) -> Iterator[ClipBatch]:
        f = self.features
        origin = self._origin()
        resampler = av.AudioResampler(format="flt", layout="mono", rate=f.sample_rate)
        audio = _SampleBuffer(f.sample_rate, origin) if self.audio is not None else _Absent()
        frames = _FrameSampler(origin, f, _Upright(self.video)) if self.video is not None \
            else _Absent()
        samples = _SampleCheck(origin)
        next_clip = 0
        pending: list[tuple[float, np.ndarray | None, np.ndarray | None]] = []

        def ready_clips() -> Iterator[tuple[float, np.ndarray | None, np.ndarray | None]]:
            nonlocal next_clip
            while True:
                a0 = next_clip * self.hop_samples
                v0 = next_clip * self.hop_frames
                if audio.end < a0 + self.clip_samples or frames.end < v0 + self.clip_frames:
                    return
                yield (next_clip * self.hop_seconds,
                       audio.take(a0, a0 + self.clip_samples),
                       frames.take(v0, v0 + self.clip_frames))
                next_clip += 1
                audio.drop_before(next_clip * self.hop_samples)
                frames.drop_before(next_clip * self.hop_frames)

        for frame in self._decoded():
            if isinstance(frame, av.AudioFrame):
                samples.repair(frame)
                for out in resampler.resample(frame):
                    audio.place(out.time, out.to_ndarray()[0])
            else:
                frames.add(frame)
            pending.extend(ready_clips())
            if len(pending) >= self.batch_clips:
                yield _batch(pending)
                pending = []
        for out in resampler.resample(None):
            audio.place(out.time, out.to_ndarray()[0])
        frames.flush()
        pending.extend(ready_clips())
        if pending:
            yield _batch(pending)
        clip_seconds = self.clip_samples / f.sample_rate
        self.decoded_seconds = (next_clip - 1) * self.hop_seconds + clip_seconds if next_clip \
            else 0.0
        self.problems += [*self._gap_notes(audio.gaps), *frames.problems]
        self._check_coverage(audio, frames)
        repaired = samples.verdict()      # raises CorruptAudioError for a broken track
        if repaired:
            self.problems.append(repaired)

    def _gap_notes(self, gaps) -> list[str]:
        notes = []
        for at, length in gaps:
            if length < REPORT_GAP:
                continue
            if at == 0 and self.video is not None:
                notes.append(f"audio starts {length:.1f} s after the video: its first "
                             f"{length:.1f} s are filled with silence")
            else:
                notes.append(f"audio missing for {length:.1f} s at {at:.1f} s: filled with "
                             "silence")
        return notes

    def _check_coverage(self, audio: _SampleBuffer | _Absent,
                        frames: _FrameSampler | _Absent) -> None:
        declared = self.info.duration
        audio_end = audio.end / self.features.sample_rate    # seconds from the origin
        video_end = frames.end / self.features.fps
        if declared and min(audio_end, video_end) < declared - self.hop_seconds - 0.5:
            short = "audio" if audio_end < video_end else "video"
            self.problems.insert(0, f"truncated: {short} ends at {min(audio_end, video_end):.1f} s "
                                 f"of the {declared:.1f} s declared, so the rest has no clips "
                                 f"(a cut file, or a shorter {short} track)")


def _batch(items: list[tuple[float, np.ndarray | None, np.ndarray | None]]) -> ClipBatch:
    starts, audio, frames = zip(*items, strict=True)
    return ClipBatch(np.array(starts, dtype=np.float64), _stacked(audio), _stacked(frames))


def _stacked(clips: tuple[np.ndarray | None, ...]) -> np.ndarray | None:
    return None if clips[0] is None else np.stack(clips)


class _Absent:
    """The buffer of a stream the file lacks (streams="any"): it never holds a clip back
    (its end is infinite) and gives None for each clip."""
    end = math.inf
    gaps: tuple = ()
    problems: tuple = ()

    def take(self, start: int, stop: int) -> None:
        return None

    def drop_before(self, index: int) -> None:
        pass

    def flush(self) -> None:
        pass


class _SampleBuffer:
    """Mono samples on the clip timeline (index 0 = the origin), placed by timestamp;
    keeps only what pending clips still need."""

    def __init__(self, sample_rate: int, origin: float):
        self.rate, self.origin = sample_rate, origin
        self.base = 0                 # timeline index of chunks[0][0]
        self.end = 0                  # timeline index one past the last sample received
        self.chunks: list[np.ndarray] = []
        self.gaps: list[tuple[float, float]] = []   # (at seconds, length seconds) filled

    def place(self, time: float | None, samples: np.ndarray) -> None:
        """Samples that start at `time` (seconds; None: right after the last ones)."""
        if time is not None:
            at = round((time - self.origin) * self.rate)
            if at - self.end > AUDIO_SLACK * self.rate:       # a gap: silence, reported
                self.gaps.append((self.end / self.rate, (at - self.end) / self.rate))
                self._append(np.zeros(at - self.end, np.float32))
            elif self.end - at > AUDIO_SLACK * self.rate:     # overlap (or before 0): drop
                samples = samples[self.end - at:]
        self._append(samples)

    def _append(self, samples: np.ndarray) -> None:
        if self.end < self.base:      # the next clip starts later (hop > clip): skip ahead
            cut = min(self.base - self.end, len(samples))
            samples, self.end = samples[cut:], self.end + cut
        if len(samples):
            self.chunks.append(samples)
            self.end += len(samples)

    def take(self, start: int, stop: int) -> np.ndarray:
        joined = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        self.chunks = [joined]
        return joined[start - self.base: stop - self.base].copy()

    def drop_before(self, index: int) -> None:
        if index >= self.end:
            self.chunks, self.base = [], index
        elif self.chunks and index > self.base:
            joined = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
            self.chunks = [joined[index - self.base:]]
            self.base = index


class _SampleCheck:
    """Sets decoded float audio values that are NaN, infinite or beyond ±MAX_SAMPLE to 0,
    in place, before resampling can spread them; counts them and notes where they were."""

    def __init__(self, origin: float):
        self.origin = origin
        self.bad = self.total = 0         # values, all channels
        self.first = self.last = 0.0      # timeline seconds of the first and last bad value
        self.clock = origin               # file seconds where the next frame starts (no pts)

    def repair(self, frame: av.AudioFrame) -> None:
        start = frame.time if frame.time is not None else self.clock
        self.clock = start + frame.samples / max(frame.sample_rate, 1)
        channels = frame.layout.nb_channels
        self.total += frame.samples * channels
        dtype = FLOAT_AUDIO.get(frame.format.name)
        if dtype is None:                 # integer samples are always finite and in range
            return
        per_plane = 1 if frame.format.is_planar else channels
        for plane in frame.planes[:channels // per_plane]:
            values = np.frombuffer(plane, dtype, count=frame.samples * per_plane)
            bad = ~(np.abs(values) <= MAX_SAMPLE)           # NaN compares False
            if bad.any():
                self._note(start, np.flatnonzero(bad) // per_plane, max(frame.sample_rate, 1))
                values[bad] = 0

    def _note(self, start: float, indices: np.ndarray, rate: int) -> None:
        first, last = start - self.origin + indices[[0, -1]] / rate
        self.first = min(self.first, first) if self.bad else first
        self.last = max(self.last, last)
        self.bad += len(indices)

    def verdict(self) -> str | None:
        """None if every value was fine, else what was repaired; CorruptAudioError when
        more than MAX_BAD_SHARE of the values were bad (a broken track, not a glitch)."""
        if not self.bad:
            return None
        when = f"at {self.first:.2f} s" if f"{self.first:.2f}" == f"{self.last:.2f}" else \
            f"from {self.first:.2f} s to {self.last:.2f} s"
        what = (f"{self.bad} of {self.total} audio samples (all channels) were NaN, infinite "
                f"or beyond ±{MAX_SAMPLE:g}, {when}")
        if self.bad > MAX_BAD_SHARE * self.total:
            raise CorruptAudioError(
                f"corrupt audio: {what} ({self.bad / self.total:.1%}; at most "
                f"{MAX_BAD_SHARE:.0%} is repaired as silence): the audio track is broken; "
                "export it again from the source, or mux a good audio track into the file")
        return f"{what}: set to 0 (silence)"


class _Upright:
    """How to turn a video's stored frames upright: its frames' display matrix (phones,
    body cams), else the stream's old-style `rotate` tag (degrees clockwise)."""

    def __init__(self, stream: av.video.stream.VideoStream):
        self.problems: list[str] = []
        tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
        self.tagged = self._turns(*_tag_matrix(tag)) if tag is not None else NO_TURN
        self.known: dict[bytes, tuple[bool, bool, bool]] = {}

    def turns(self, frame: av.VideoFrame) -> tuple[bool, bool, bool]:
        """(transpose, flip rows, flip columns), applied in that order."""
        side = frame.side_data.get(DISPLAY_MATRIX)
        if side is None:
            return self.tagged
        key = bytes(side)
        if key not in self.known:
            m = np.frombuffer(key, np.int32)        # 3×3, row-major; 2×2 part in 16.16
            self.known[key] = self._turns(m[0], m[1], m[3], m[4])
        return self.known[key]

    def _turns(self, a: float, b: float, c: float, d: float) -> tuple[bool, bool, bool]:
        """A display matrix maps a stored pixel (x, y) to (a·x + c·y, b·x + d·y)."""
        scale = max(abs(a), abs(b), abs(c), abs(d)) or 1
        a, b, c, d = (round(float(v) / scale, 3) for v in (a, b, c, d))
        if b == c == 0 and abs(a) == abs(d) == 1:
            return False, d < 0, a < 0
        if a == d == 0 and abs(b) == abs(c) == 1:
            return True, b < 0, c < 0
        self.problems.append(f"video rotation of {math.degrees(math.atan2(c, a)):.0f}° "
                             "(counterclockwise) is not a multiple of 90°: frames left as "
                             "stored; rotate the file upright first (ffmpeg does when "
                             "transcoding)")
        return NO_TURN


NO_TURN = (False, False, False)
DISPLAY_MATRIX = av.sidedata.sidedata.Type.DISPLAYMATRIX


def _tag_matrix(tag: str) -> tuple[float, float, float, float]:
    """The 2×2 display matrix of a `rotate` tag (degrees clockwise; not a number: none)."""
    try:
        radians = -math.radians(float(tag))
    except ValueError:
        radians = math.nan                          # reported as not a multiple of 90°
    return math.cos(radians), -math.sin(radians), math.sin(radians), math.cos(radians)


def _turned(image: np.ndarray, turns: tuple[bool, bool, bool]) -> np.ndarray:
    """[h, w, 3] -> upright [H, W, 3] (a view)."""
    transpose, flip_rows, flip_columns = turns
    if transpose:
        image = image.transpose(1, 0, 2)
    if flip_rows:
        image = image[::-1]
    if flip_columns:
        image = image[:, ::-1]
    return image


class _FrameSampler:
    """Resample video to a fixed fps: target frame j (at origin + j/fps) is the last source
    frame whose time is <= that. Only frames that are used get converted, resized and
    turned upright."""

    def __init__(self, origin: float, features: FeatureConfig, upright: _Upright):
        self.origin, self.fps, self.upright = origin, features.fps, upright
        self.problems = upright.problems
        self.size = (features.width, features.height)
        self.base = 0                 # target index of frames[0]
        self.frames: list[np.ndarray] = []
        self.prev: av.VideoFrame | None = None
        self.prev_rgb: np.ndarray | None = None
        self.prev_time = -math.inf
        self.step = 1.0 / features.fps  # fallback spacing when a frame has no pts
        self.reformatter = VideoReformatter()  # reused: a new scaler per frame costs 15×

    @property
    def end(self) -> int:
        return self.base + len(self.frames)

    def _due(self, j: int) -> float:
        return self.origin + j / self.fps

    def add(self, frame: av.VideoFrame) -> None:
        time = frame.time if frame.time is not None else self.prev_time + self.step
        if self.prev is None:
            self.prev, self.prev_time = frame, time
            while self._due(self.end) + FRAME_EPS < time:   # video starts late: hold first
                self._emit()
            return
        while self._due(self.end) + FRAME_EPS < time:
            self._emit()
        if time > self.prev_time:
            self.step = time - self.prev_time
        self.prev, self.prev_rgb, self.prev_time = frame, None, time

    def flush(self) -> None:
        """After the last frame: it stays on screen for one source frame interval."""
        if self.prev is not None:
            while self._due(self.end) + FRAME_EPS < self.prev_time + self.step:
                self._emit()

    def _emit(self) -> None:
        if self.prev_rgb is None:
            turns = self.upright.turns(self.prev)
            width, height = self.size[::-1] if turns[0] else self.size   # as stored
            rgb = self.reformatter.reformat(self.prev, width=width, height=height,
                                            format="rgb24", interpolation="AREA").to_ndarray()
            self.prev_rgb = _turned(rgb, turns).transpose(2, 0, 1)        # [3, H, W]
        self.frames.append(self.prev_rgb)

    def take(self, start: int, stop: int) -> np.ndarray:
        return np.stack(self.frames[start - self.base: stop - self.base])   # [T, 3, H, W]

    def drop_before(self, index: int) -> None:
        drop = max(0, index - self.base)
        del self.frames[:drop]
        self.base += drop
