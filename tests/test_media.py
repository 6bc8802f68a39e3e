"""Decoding: every container and rate lands on the same clip timeline, in sync."""

import re

import numpy as np
import pytest

from sempair.media import ClipReader, MediaError
from sempair.synth import write_recording
from tests.media_helpers import flash_and_click

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
