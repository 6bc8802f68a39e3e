"""Decoding: every container and rate lands on the same clip timeline, in sync."""

import dataclasses
import re

import numpy as np
import pytest

from sempair.features import log_mel
from sempair.media import ClipReader, CorruptAudioError, MediaError
from sempair.synth import write_recording
from tests.media_helpers import flash_and_click, marked_frames, write_av

FORMATS = [  # (file, video codec, audio codec, fps, sample rate, channels, size)
    ("cam.mp4", "libx264", "aac", 15, 32000, 1, (160, 120)),
    ("cam.mkv", "libx264", "aac", 30, 48000, 2, (320, 180)),
    ("cam.webm", "libvpx-vp9", "libopus", 25, 48000, 2, (128, 96)),
    ("cam.avi", "mpeg4", "pcm_s16le", 10, 44100, 2, (176, 144)),
    ("cam.mov", "libx264", "aac", 12, 22050, 1, (640, 360)),
]
EVENTS = (1.5, 2.75)


def read_all(path, cfg):
    with ClipReader(str(path), cfg.features, cfg.ingest.clip_seconds,
                    cfg.ingest.hop_seconds) as reader:
        batches = list(reader)
        info, problems = reader.info, reader.problems
    starts = np.concatenate([b.starts for b in batches])
    audio = np.concatenate([b.audio for b in batches])
    frames = np.concatenate([b.frames for b in batches])
    return info, problems, starts, audio, frames


@pytest.mark.parametrize("name, vcodec, acodec, fps, rate, channels, size", FORMATS)
def test_any_container_rate_and_size_gives_synced_clips(tmp_path, cfg, name, vcodec, acodec,
                                                        fps, rate, channels, size):
    f = cfg.features
    path = flash_and_click(tmp_path / name, seconds=4.0, fps=fps, sample_rate=rate,
                           channels=channels, size=size, events=EVENTS,
                           video_codec=vcodec, audio_codec=acodec)
    info, problems, starts, audio, frames = read_all(path, cfg)
    assert problems == []
    assert (info.width, info.height, info.sample_rate, info.channels) == (*size, rate, channels)
    np.testing.assert_array_equal(starts, [0.0, 1.0, 2.0, 3.0])
    assert audio.shape == (4, f.sample_rate) and audio.dtype == np.float32
    assert frames.shape == (4, f.fps, 3, f.height, f.width) and frames.dtype == np.uint8

    # the clicks and the flashes sit where they were written, in both modalities
    wave = np.abs(audio.reshape(-1))
    brightness = frames.reshape(-1, 3 * f.height * f.width).mean(axis=1)   # per 1/fps
    for t in EVENTS:
        window = wave[round((t - 0.2) * f.sample_rate): round((t + 0.2) * f.sample_rate)]
        onset = (t - 0.2) + np.argmax(window > 0.3) / f.sample_rate
        assert abs(onset - t) < 0.010, f"audio click at {onset:.4f} s, written at {t}"
        assert brightness[int(t * f.fps)] > 200, f"flash at {t} s missing"
    assert (brightness > 200).sum() == len(EVENTS)


def test_recording_shorter_than_a_clip_yields_nothing(tmp_path, cfg):
    path = flash_and_click(tmp_path / "short.mp4", seconds=0.6, fps=15, sample_rate=16000,
                           channels=1, events=())
    with ClipReader(str(path), cfg.features, 1.0, 1.0) as reader:
        assert list(reader) == []
        assert reader.info.duration == pytest.approx(0.6, abs=0.1)


@pytest.mark.parametrize("with_audio, with_video, message", [
    (False, True, "no audio stream"),
    (True, False, "no video stream"),
])
def test_missing_stream_is_a_clear_error(tmp_path, cfg, with_audio, with_video, message):
    name = "one.mp4" if with_video else "one.m4a"
    path = flash_and_click(tmp_path / name, seconds=2.0, fps=10, sample_rate=16000,
                           channels=1, with_audio=with_audio, with_video=with_video)
    with pytest.raises(MediaError, match=message):
        ClipReader(str(path), cfg.features, 1.0, 1.0)


def test_overlapping_clips_with_a_shorter_hop(tmp_path, cfg):
    path = flash_and_click(tmp_path / "cam.mp4", seconds=4.0, fps=15, sample_rate=16000,
                           channels=1)
    with ClipReader(str(path), cfg.features, clip_seconds=1.0, hop_seconds=0.5) as reader:
        starts = np.concatenate([b.starts for b in reader])
    np.testing.assert_array_equal(starts, np.arange(7) * 0.5)


def test_sparse_clips_with_hop_longer_than_clip_stay_in_sync(tmp_path, cfg):
    events = tuple(0.5 + 2 * k for k in range(6))           # one in every sparse clip
    path = flash_and_click(tmp_path / "cam.mp4", seconds=12.0, fps=15, sample_rate=16000,
                           channels=1, events=events)
    with ClipReader(str(path), cfg.features, clip_seconds=1.0, hop_seconds=2.0) as reader:
        batches = list(reader)
    starts = np.concatenate([b.starts for b in batches])
    audio = np.concatenate([b.audio for b in batches])
    frames = np.concatenate([b.frames for b in batches])
    np.testing.assert_array_equal(starts, np.arange(6) * 2.0)
    for clip in range(6):
        click = np.argmax(np.abs(audio[clip]) > 0.3) / cfg.features.sample_rate
        assert abs(click - 0.5) < 0.01, (clip, click)
        assert frames[clip, 4].mean() > 200                  # frame at +0.5 s is the flash


def test_a_gap_in_the_audio_track_becomes_reported_silence(tmp_path, cfg):
    """Audio missing from 4 to 5 s must not pull the later audio early."""
    import av

    path, rate, fps = tmp_path / "gap.mkv", 16000, 10
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        for i in range(10 * fps):
            image = np.full((48, 64, 3), 250 if i == 75 else 30, np.uint8)   # flash at 7.5 s
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for start in range(0, 10 * rate, rate // 10):
            if 4 * rate <= start < 5 * rate:
                continue                                    # the camera dropped this second
            block = np.full((1, rate // 10), 0.001, np.float32)
            if start == int(7.5 * rate):
                block[:, :160] = 0.8                        # click at 7.5 s
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in audio.encode(frame):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)
    with ClipReader(str(path), cfg.features, 1.0, 1.0) as reader:
        batches = list(reader)
        problems = reader.problems
    audio_clips = np.concatenate([b.audio for b in batches])
    frames = np.concatenate([b.frames for b in batches])
    assert len(audio_clips) == 10
    assert np.abs(audio_clips[4]).max() < 1e-6                  # the gap is silence
    click = np.argmax(np.abs(audio_clips.reshape(-1)) > 0.3) / cfg.features.sample_rate
    assert abs(click - 7.5) < 0.01, click
    assert frames[7, 4].mean() > 200                             # the flash, same clip
    assert any("audio missing for 1.0 s at 4.0 s" in p for p in problems), problems


# -- one-stream media (streams="any") ---------------------------------------------------------

def write_scene(path, *, with_audio=True, with_video=True, seconds=5.0, fps=15, rate=16000):
    """The same noisy scene (flash and click at 1.5 s) every call, with the streams asked
    for, so that an audio-only or video-only file holds exactly that stream of the other."""
    rng = np.random.default_rng(1)
    frames = np.full((round(seconds * fps), 96, 128, 3), 40, np.uint8)
    frames += rng.integers(0, 8, frames.shape, dtype=np.uint8)
    frames[round(1.5 * fps)] = 250
    audio = rng.normal(0, 0.005, (1, round(seconds * rate))).astype(np.float32)
    audio[:, round(1.5 * rate): round(1.51 * rate)] = 0.8
    chunks = np.array_split(audio, round(seconds * 4), axis=1)               # 0.25 s each
    write_recording(path, list(frames) if with_video else None,
                    chunks if with_audio else None, fps=fps, sample_rate=rate)
    return path


def read_any(path, cfg, hop_seconds=1.0):
    """Every clip, in batches of 3, with streams="any": (reader, starts, audio, frames),
    audio or frames None where the batches carry None."""
    with ClipReader(str(path), cfg.features, 1.0, hop_seconds, batch_clips=3,
                    streams="any") as reader:
        batches = list(reader)
    starts = np.concatenate([b.starts for b in batches])
    joined = {}
    for kind in ("audio", "frames"):
        parts = [getattr(b, kind) for b in batches]
        assert all(p is None for p in parts) or all(p is not None for p in parts), kind
        joined[kind] = None if parts[0] is None else np.concatenate(parts)
    return reader, starts, joined["audio"], joined["frames"]


@pytest.mark.parametrize("hop_seconds", [1.0, 0.5])
@pytest.mark.parametrize("name, with_audio, with_video", [
    ("audio.m4a", True, False),
    ("video.mp4", False, True),
])
def test_one_stream_media_is_cut_like_that_stream_of_an_audiovisual_file(
        tmp_path, cfg, hop_seconds, name, with_audio, with_video):
    both = write_scene(tmp_path / "both.mp4")
    one = write_scene(tmp_path / name, with_audio=with_audio, with_video=with_video)
    with ClipReader(str(both), cfg.features, 1.0, hop_seconds) as reader:   # strict default
        batches = list(reader)
    starts = np.concatenate([b.starts for b in batches])
    audio = np.concatenate([b.audio for b in batches])
    frames = np.concatenate([b.frames for b in batches])

    reader, one_starts, one_audio, one_frames = read_any(one, cfg, hop_seconds)
    assert reader.problems == []
    assert len(starts) == (9 if hop_seconds == 0.5 else 5)
    np.testing.assert_array_equal(one_starts, starts)
    if with_audio:
        assert reader.video is None and one_frames is None
        np.testing.assert_array_equal(one_audio, audio)
        assert (reader.info.audio_codec, reader.info.sample_rate) == ("aac", 16000)
        assert (reader.info.video_codec, reader.info.width, reader.info.fps) == (None,) * 3
    else:
        assert reader.audio is None and one_audio is None
        np.testing.assert_array_equal(one_frames, frames)
        assert (reader.info.video_codec, reader.info.width, reader.info.fps) == ("h264", 128, 15)
        assert (reader.info.audio_codec, reader.info.sample_rate) == (None, None)
    assert reader.info.duration == pytest.approx(5.0, abs=0.1)
    assert reader.decoded_seconds == pytest.approx(starts[-1] + 1.0)


def test_streams_any_reads_an_audiovisual_file_as_the_default_does(tmp_path, cfg):
    path = write_scene(tmp_path / "both.mp4")
    with ClipReader(str(path), cfg.features, 1.0, 1.0, batch_clips=3) as reader:
        batches = list(reader)
        info = reader.info
    any_reader, starts, audio, frames = read_any(path, cfg)
    assert any_reader.info == info
    np.testing.assert_array_equal(starts, np.concatenate([b.starts for b in batches]))
    np.testing.assert_array_equal(audio, np.concatenate([b.audio for b in batches]))
    np.testing.assert_array_equal(frames, np.concatenate([b.frames for b in batches]))


@pytest.mark.parametrize("name, with_audio, with_video, message", [
    ("audio.m4a", True, False, "no video stream (audio only): ingest needs both"),
    ("video.mp4", False, True, "no audio stream (video only): ingest needs both"),
])
def test_the_strict_default_still_refuses_one_stream_media(tmp_path, cfg, name, with_audio,
                                                           with_video, message):
    path = write_scene(tmp_path / name, with_audio=with_audio, with_video=with_video)
    for streams in ({}, {"streams": "both"}):
        with pytest.raises(MediaError, match=re.escape(message)):
            ClipReader(str(path), cfg.features, 1.0, 1.0, **streams)
    with pytest.raises(ValueError, match="streams must be"):
        ClipReader(str(path), cfg.features, 1.0, 1.0, streams="audio")


# -- audio that starts late, poisoned samples, rotated video ---------------------------------

def read_clips(path, features, **options):
    """(reader, audio clips, frames) of every clip, 1 s clips and hop."""
    with ClipReader(str(path), features, 1.0, 1.0, **options) as reader:
        batches = list(reader)
    audio = [b.audio for b in batches if b.audio is not None]
    frames = [b.frames for b in batches if b.frames is not None]
    return (reader, np.concatenate(audio) if audio else None,
            np.concatenate(frames) if frames else None)


@pytest.mark.parametrize("name, codec", [("late.mkv", "pcm_s16le"), ("late.mp4", "aac")])
def test_audio_that_starts_late_is_aligned_by_timestamps_and_said(tmp_path, cfg, name, codec):
    """A microphone that wakes 2 s after the camera: not a cut file, and in sync."""
    rate, fps = 16000, 10
    frames = marked_frames(8 * fps)
    frames[55] = 250                                          # flash at 5.5 s
    audio = np.full((1, 6 * rate), 0.01, np.float32)          # from 2 s to 8 s
    audio[:, round(3.5 * rate): round(3.51 * rate)] = 0.8     # click at 5.5 s in the file
    path = write_av(tmp_path / name, frames, audio, fps=fps, sample_rate=rate,
                    audio_codec=codec, audio_start=2.0)
    reader, clips, video = read_clips(path, cfg.features)
    assert len(clips) == len(video) == 8                      # none of the 8 s is lost
    assert not any("truncated" in p for p in reader.problems), reader.problems
    assert len(reader.problems) == 1
    assert re.fullmatch(r"audio starts (1\.9|2\.0) s after the video: its first (1\.9|2\.0) s "
                        r"are filled with silence", reader.problems[0]), reader.problems
    assert np.abs(clips[0]).max() == 0                        # the head is silence
    click = np.argmax(np.abs(clips.reshape(-1)) > 0.3) / cfg.features.sample_rate
    assert abs(click - 5.5) < 0.01, click
    assert video[5, cfg.features.fps // 2].mean() > 200       # the flash, same clip


def poisoned_audio(seconds: float, rate: int, bad: dict[tuple[int, float], float]):
    """Stereo low noise with `bad` {(channel, seconds): value} written over it."""
    audio = np.random.default_rng(0).normal(0, 0.01, (2, round(seconds * rate)))
    audio = audio.astype(np.float32)
    for (channel, at), value in bad.items():
        audio[channel, round(at * rate)] = value
    return audio


def test_a_few_nan_or_infinite_samples_are_set_to_silence_and_said(tmp_path, cfg):
    rate, fps = 16000, 10
    audio = poisoned_audio(3.0, rate, {(0, 1.0): np.nan, (1, 1.5): np.inf,
                                       (0, 2.5): -np.inf, (1, 2.75): 1e30})
    path = write_av(tmp_path / "nan.mkv", marked_frames(3 * fps), audio, fps=fps,
                    sample_rate=rate, audio_codec="pcm_f32le")
    reader, clips, _ = read_clips(path, cfg.features)
    assert len(clips) == 3 and np.isfinite(clips).all()
    assert np.abs(clips).max() < 0.1                          # nothing huge got through
    assert reader.problems == [
        "4 of 96000 audio samples (all channels) were NaN, infinite or beyond ±1000, from "
        "1.00 s to 2.75 s: set to 0 (silence)"]
    assert np.isfinite(log_mel(clips, cfg.features).numpy()).all()


def test_audio_that_is_mostly_nan_is_refused_as_corrupt(tmp_path, cfg):
    rate, fps = 16000, 10
    audio = poisoned_audio(2.0, rate, {})
    audio[:, rate:] = np.nan                                  # the second half
    path = write_av(tmp_path / "nan.mkv", marked_frames(2 * fps), audio, fps=fps,
                    sample_rate=rate, audio_codec="pcm_f32le")
    with pytest.raises(CorruptAudioError, match=re.escape(
            "corrupt audio: 32000 of 64000 audio samples (all channels) were NaN, infinite or "
            "beyond ±1000, from 1.00 s to 2.00 s (50.0%; at most 1% is repaired as silence): "
            "the audio track is broken; export it again")) as caught:
        read_clips(path, cfg.features)
    assert isinstance(caught.value, MediaError)               # ingest quarantines it


# upright, the marker block is in the top-left corner; stored, it is turned
CORNERS = {"top-left": (0, 0), "top-right": (0, -1), "bottom-left": (-1, 0),
           "bottom-right": (-1, -1)}


def marker_corner(frames: np.ndarray) -> str:
    """Which corner of [n, T, 3, H, W] frames is bright in every frame."""
    bright = [name for name, (row, col) in CORNERS.items()
              if (frames[..., row, col] > 200).all()]
    assert len(bright) == 1, bright
    return bright[0]


@pytest.mark.parametrize("rotation, corner", [
    (90, "bottom-left"), (-90, "top-right"), (180, "bottom-right"), (0, "top-left")])
@pytest.mark.parametrize("name", ["rot.mp4", "rot.mov", "rot.mkv"])
def test_the_display_matrix_turns_frames_as_a_player_shows_them(tmp_path, cfg, name,
                                                                rotation, corner):
    """Stored 64×48 and shown rotated `rotation`° counterclockwise: the frames are the
    picture shown, at the configured (here portrait) size."""
    features = dataclasses.replace(cfg.features, width=24, height=32)
    stored = marked_frames(10)                                # block top-left, as stored
    path = write_av(tmp_path / name, stored, None, fps=10, sample_rate=16000,
                    display_rotation=rotation)
    reader, _, frames = read_clips(path, features, streams="any")
    assert frames.shape == (1, features.fps, 3, 32, 24)
    assert marker_corner(frames) == corner
    assert reader.problems == []


@pytest.mark.parametrize("tag, corner", [("90", "top-right"), ("270", "bottom-left"),
                                         ("180", "bottom-right")])
def test_an_old_rotate_tag_turns_frames_clockwise(tmp_path, cfg, tag, corner):
    path = write_av(tmp_path / "tag.mkv", marked_frames(10), None, fps=10,
                    sample_rate=16000, rotate_tag=tag)
    reader, _, frames = read_clips(path, cfg.features, streams="any")
    assert marker_corner(frames) == corner
    assert reader.problems == []


def test_a_rotation_that_is_not_a_right_angle_is_said(tmp_path, cfg):
    path = write_av(tmp_path / "tag.mkv", marked_frames(10), None, fps=10,
                    sample_rate=16000, rotate_tag="45")
    reader, _, frames = read_clips(path, cfg.features, streams="any")
    assert marker_corner(frames) == "top-left"                # left as stored
    assert reader.problems == [
        "video rotation of -45° (counterclockwise) is not a multiple of 90°: frames left as "
        "stored; rotate the file upright first (ffmpeg does when transcoding)"]
