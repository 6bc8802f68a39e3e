"""sempair.synth: the plan, the rendered media matching events.csv, the writer, bad files."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from sempair.config import load_config
from sempair.synth import (
    SynthSummary,
    draw,
    generate,
    scene,
    sounds,
    write_bad_files,
    write_recording,
)
from sempair.synth.render import Mixer, render_recording
from sempair.synth.scene import AUDIO, AV, VISUAL, Event, Recording

HEADER = ["recording", "start", "end", "label", "modality", "anomaly"]
REQUIRED_AV = {"car_pass", "truck_pass", "motorcycle_pass", "emergency_vehicle", "pedestrian",
               "dog_bark", "door", "bicycle", "people_talking"}
ANOMALIES = {"glass_break", "crash", "scream"}
ROOT = Path(__file__).resolve().parents[1]
MOTION_LEVEL = 30          # a pixel "moved" if a channel changed by more than this (0..255)


def small_cfg(**changes):
    base = dict(recordings=3, seconds=30.0, width=96, height=72, fps=15, sample_rate=16000,
                channels=1, seed=3)
    return dataclasses.replace(load_config().synth, **{**base, **changes})


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[SynthSummary, Path]:
    out = tmp_path_factory.mktemp("synth")
    return generate(out, small_cfg()), out


def decode(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """-> frames uint8 [n, H, W, 3], audio float32 [C, samples], stream facts."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {"vcodec": v.codec_context.name, "acodec": a.codec_context.name,
                "size": (v.width, v.height), "fps": v.average_rate, "rate": a.rate,
                "channels": a.channels, "pix_fmt": v.codec_context.pix_fmt}
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(v)])
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    return frames, audio, info


def motion(frames: np.ndarray) -> np.ndarray:
    """Share of pixels that changed between consecutive frames, per frame [n] (0 first)."""
    diff = np.abs(np.diff(frames.astype(np.int16), axis=0)).max(-1) > MOTION_LEVEL
    return np.concatenate([[0.0], diff.mean((1, 2))])


def span(x: np.ndarray, rate: float, start: float, end: float) -> np.ndarray:
    return x[..., int(start * rate):int(end * rate)]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def band_power(x: np.ndarray, sr: int, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x.mean(0))) ** 2
    f = np.fft.rfftfreq(x.shape[-1], 1 / sr)
    return float(spec[(f >= lo) & (f < hi)].sum() / x.shape[-1])


def read_events(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- the plan --------------------------------------------------------------------------

def test_plan_has_every_class_recurring_with_background_and_rare_anomalies():
    cfg = dataclasses.replace(load_config().synth, recordings=24, seconds=120.0)
    recs = scene.plan(cfg)
    rows = [r for rec in recs for r in scene.rows(rec)]
    labels = Counter(r[3] for r in rows if r[4] == scene.CLASS[r[3]].modality)
    av_classes = {c.name for c in scene.CLASSES if c.modality == AV and not c.anomaly}
    assert av_classes >= REQUIRED_AV and len(av_classes) >= 8
    for name in REQUIRED_AV:                               # recurring: several per recording set
        assert labels[name] >= 10, (name, labels[name])
    assert {r[3] for r in rows if r[4] == AUDIO and not scene.CLASS[r[3]].lead[1]} >= {
        "horn_offscreen", "birds", "aircraft"}
    assert {r[3] for r in rows if r[4] == VISUAL} >= {"silent_passerby", "bird_flyby",
                                                      "cloud_shadow"}
    anomalous = {r[0] for r in rows if r[5]}
    assert {r[3] for r in rows if r[5]} == ANOMALIES
    assert 0 < len(anomalous) < len(recs)
    assert abs(len(anomalous) / len(recs) - cfg.anomaly_share) <= 0.1
    gaps = np.diff([e.start for e in recs[0].events if e.label == "car_pass"])
    assert gaps.std() > 0.3 * gaps.mean()                  # irregular (Poisson), not periodic
    overlaps = sum(a.end > b.start for rec in recs
                   for a, b in zip(rec.events, rec.events[1:], strict=False))
    assert overlaps > 0


def test_default_config_keeps_enough_background():
    cfg = load_config().synth
    recs = scene.plan(cfg)
    share = sum(scene.background_seconds(r) for r in recs) / sum(r.seconds for r in recs)
    assert 0.30 <= share <= 0.7


def test_audio_leads_video_with_an_honest_lead_in_row():
    cfg = dataclasses.replace(load_config().synth, recordings=24, seconds=120.0)
    rows = [r for rec in scene.plan(cfg) for r in scene.rows(rec)]
    for label, (lo, hi) in (("emergency_vehicle", (2.0, 4.0)), ("motorcycle_pass", (0.8, 1.2))):
        leads = [r for r in rows if r[3] == label and r[4] == AUDIO]
        assert leads
        starts = {(r[0], r[1]) for r in rows if r[3] == label and r[4] == AV}
        for rec_id, start, end, *_ in leads:
            if start > 0 and end < cfg.seconds:            # not cut by the recording's ends
                assert lo - 0.01 <= end - start <= hi + 0.01
                assert (rec_id, end) in starts             # the seen part starts as it ends


# --- what generate writes ----------------------------------------------------------------

def test_events_csv_and_scenes_json(small):
    summary, out = small
    text = (out / "events.csv").read_text()
    assert text.splitlines()[0] == ",".join(HEADER)
    events = read_events(out / "events.csv")
    scenes = json.loads((out / "scenes.json").read_text())["recordings"]
    assert sorted(scenes) == sorted(summary.recordings) == sorted({e["recording"] for e in events})
    keys = [(e["recording"], float(e["start"])) for e in events]
    assert keys == sorted(keys)
    for e in events:
        assert re.fullmatch(r"\d+\.\d\d", e["start"]) and re.fullmatch(r"\d+\.\d\d", e["end"])
        assert 0 <= float(e["start"]) < float(e["end"]) <= 30.0
        assert e["modality"] in (AUDIO, VISUAL, AV) and e["anomaly"] in ("0", "1")
        assert e["label"] in scene.CLASS                   # drift is never an event
    for rid, s in scenes.items():
        m = re.fullmatch(r"(cam\d\d)/\d{4}-\d\d-\d\dT(\d\d)-(\d\d)\.mp4", rid)
        assert m and m.group(1) == s["camera"] and (out / rid).is_file()
        assert s["start_hour"] == pytest.approx(int(m.group(2)) + int(m.group(3)) / 60)
        assert all(0 <= r["start"] < r["end"] <= 30.0 for r in s["rain"])
    assert len({s["camera"] for s in scenes.values()}) == 2
    assert summary.seconds_total == 90.0 and summary.anomalies >= 1
    assert "background" in str(summary)


def test_container_properties(small):
    summary, out = small
    frames, audio, info = decode(out / summary.recordings[0])
    assert info["vcodec"] == "h264" and info["acodec"] == "aac"
    assert info["pix_fmt"] == "yuv420p" and info["size"] == (96, 72) and info["fps"] == 15
    assert info["rate"] == 16000 and info["channels"] == 1 and audio.shape[0] == 1
    assert len(frames) == 30 * 15
    assert abs(audio.shape[1] - 30 * 16000) < 0.02 * 16000
    assert 0.01 < np.abs(audio).max() <= 0.9                # audible, never clipped
    with open(out / summary.recordings[0], "rb") as f:      # faststart: index before media
        head = f.read(4096)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or
                                         head.find(b"moov") < head.find(b"mdat"))


def test_generated_events_move_and_sound_above_background(small):
    """Across the generated set, audiovisual events show motion and sound louder than the
    same recording's background, away from rain."""
    summary, out = small
    events = read_events(out / "events.csv")
    scenes = json.loads((out / "scenes.json").read_text())["recordings"]
    moved, louder, checked = 0, 0, 0
    for rid in summary.recordings:
        frames, audio, _ = decode(out / rid)
        m, sr = motion(frames), 16000
        rows = [e for e in events if e["recording"] == rid]
        heard, seen = np.zeros(300, bool), np.zeros(300, bool)   # 0.1 s steps over 30 s
        for e in rows:
            a, b = max(0, int(float(e["start"]) * 10) - 3), int(float(e["end"]) * 10) + 3
            heard[a:b] |= e["modality"] != VISUAL
            seen[a:b] |= e["modality"] != AUDIO
        for r in scenes[rid]["rain"]:
            seen[int(r["start"] * 10):int(r["end"] * 10) + 1] = True
        quiet, still = np.flatnonzero(~heard), np.flatnonzero(~seen)
        if len(quiet) < 20 or len(still) < 20:
            continue                                     # too busy to have a baseline
        bg_audio = np.median([rms(span(audio, sr, i / 10, i / 10 + 0.1)) for i in quiet])
        bg_motion = np.mean([m[int(i * 1.5)] for i in still])
        for e in rows:
            s, t = float(e["start"]), float(e["end"])
            rainy = any(r["start"] - 1 < t and s < r["end"] + 1 for r in scenes[rid]["rain"])
            if e["modality"] != AV or rainy or t - s < 1:
                continue
            checked += 1
            moved += span(m, 15, s, t).mean() > bg_motion + 0.001
            louder += rms(span(audio, sr, s, t)) > 1.5 * bg_audio
    assert checked >= 8
    assert moved / checked >= 0.9 and louder / checked >= 0.9, (moved, louder, checked)


# --- rendered media match the plan, on a hand-made scene ------------------------------

HAND_MADE = Recording(
    id="cam01/hand.mp4", index=0, camera=0, seconds=30.0, start_hour=12.0, seed=11,
    events=(Event("car_pass", 2.0, 6.0, direction=1, seed=1),
            Event("emergency_vehicle", 12.0, 17.0, lead=3.0, direction=-1, seed=2),
            Event("silent_passerby", 21.0, 27.0, direction=1, seed=3)))
BACKGROUND = ((6.6, 8.6), (17.6, 20.6))


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    cfg = small_cfg(channels=2, sample_rate=22050)
    path = tmp_path_factory.mktemp("hand") / "hand.mp4"
    render_recording(path, HAND_MADE, cfg)
    return decode(path)


def test_hand_made_scene_is_stereo_at_the_asked_rate(hand_made):
    frames, audio, info = hand_made
    assert info["channels"] == 2 and info["rate"] == 22050 and audio.shape[0] == 2
    assert frames.shape == (450, 72, 96, 3)


def test_events_move_and_sound_where_the_plan_says(hand_made):
    frames, audio, _ = hand_made
    m, sr = motion(frames), 22050
    bg_motion = max(span(m, 15, a, b).mean() for a, b in BACKGROUND)
    bg_rms = max(rms(span(audio, sr, a, b)) for a, b in BACKGROUND)
    assert bg_motion < 0.001                                       # the camera is fixed
    car = (2.3, 5.7)
    assert span(m, 15, *car).mean() > 0.003
    assert rms(span(audio, sr, *car)) > 3 * bg_rms
    left, right = (span(audio[i], sr, 2.3, 3.3) for i in (0, 1))  # it drives left -> right
    assert rms(left) > rms(right)
    left, right = (span(audio[i], sr, 4.7, 5.7) for i in (0, 1))
    assert rms(right) > rms(left)


def test_siren_is_heard_before_the_emergency_vehicle_is_seen(hand_made):
    frames, audio, _ = hand_made
    m, sr = motion(frames), 22050
    lead, seen = (9.3, 11.9), (12.3, 16.7)
    siren = band_power(span(audio, sr, *lead), sr, 700, 1400)
    quiet = max(band_power(span(audio, sr, a, a + 2.6), sr, 700, 1400) for a, _ in BACKGROUND)
    assert siren > 10 * quiet                                      # heard ...
    assert span(m, 15, *lead).mean() < 0.001                      # ... but nothing in view
    assert span(m, 15, *seen).mean() > 0.003
    rgb = span(frames.transpose(1, 2, 3, 0), 15, *seen).astype(int)   # [H, W, 3, n]
    red = (rgb[..., 0, :] > 180) & (rgb[..., 1, :] < 90) & (rgb[..., 2, :] < 90)
    blue = (rgb[..., 2, :] > 180) & (rgb[..., 0, :] < 110)
    assert red.any() and blue.any()                                # flashing lights


def test_visual_distractor_moves_but_adds_no_sound(hand_made):
    frames, audio, _ = hand_made
    m, sr = motion(frames), 22050
    walk = (21.5, 26.5)
    bg_rms = np.mean([rms(span(audio, sr, a, b)) for a, b in BACKGROUND])
    assert span(m, 15, *walk).mean() > 0.001
    assert rms(span(audio, sr, *walk)) < 1.3 * bg_rms


def test_day_night_and_rain_drift_in_both_modalities(tmp_path):
    cfg = small_cfg()
    night = Recording(id="n", index=0, camera=1, seconds=8.0, start_hour=1.0, seed=21)
    day = Recording(id="d", index=1, camera=1, seconds=8.0, start_hour=12.0, seed=22,
                    rain=((4.0, 8.0, 1.0),))
    (fn, an, _), (fd, ad, _) = (decode(render_one(tmp_path, r, cfg)) for r in (night, day))
    dry, wet = (0.5, 3.5), (6.0, 7.9)
    assert span(fn.transpose(1, 2, 3, 0), 15, *dry).mean() + 40 < \
        span(fd.transpose(1, 2, 3, 0), 15, *dry).mean()          # night is darker
    assert rms(span(an, 16000, *dry)) < 0.6 * rms(span(ad, 16000, *dry))   # and quieter
    frames_day = fd.transpose(1, 2, 3, 0)
    assert span(frames_day, 15, *wet).mean() < span(frames_day, 15, *dry).mean() - 10
    md = motion(fd)
    assert span(md, 15, *wet).mean() > 0.005 > span(md, 15, *dry).mean()  # streaks
    assert band_power(span(ad, 16000, *wet), 16000, 2000, 8000) > \
        20 * band_power(span(ad, 16000, *dry), 16000, 2000, 8000)          # broadband hiss


def render_one(folder: Path, rec: Recording, cfg) -> Path:
    path = folder / f"{rec.id}.mp4"
    render_recording(path, rec, cfg)
    return path


# --- every class looks and sounds like itself ----------------------------------------

AV_CLASSES = sorted(c.name for c in scene.CLASSES if c.modality == AV)


def test_classes_sound_different():
    """Each event's spectrum (log power in 40 bands) is nearest to its own class."""
    sr, feats, labels = 16000, [], []
    edges = np.geomspace(60, 7900, 41)
    for label in [*AV_CLASSES, "horn_offscreen", "birds", "aircraft"]:
        lo, hi = scene.CLASS[label].duration
        for k in range(3):
            ev = Event(label, 0.0, (lo + hi) / 2, seed=100 * k + 7)
            x = sounds.event_audio(ev, sr, 1)[0].astype(np.float64)
            spec = np.abs(np.fft.rfft(x)) ** 2
            f = np.fft.rfftfreq(len(x), 1 / sr)
            bands = np.log([spec[(f >= a) & (f < b)].mean() + 1e-12 for a, b in
                            itertools.pairwise(edges)])
            feats.append(bands - bands.mean())
            labels.append(label)
    feats = np.array(feats)
    dist = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    nearest = [labels[j] for j in dist.argmin(1)]
    accuracy = np.mean([a == b for a, b in zip(nearest, labels, strict=True)])
    assert accuracy >= 0.85, list(zip(labels, nearest, strict=True))


def sprite_pixels(label: str, seed: int, direction: int = 1, camera: int = 0):
    """Pixels an event changes in rendered frames [n, H, W] (same noise with and without)."""
    ev = Event(label, 0.5, 4.5, direction=direction, seed=seed)
    rec = Recording(id="x", index=0, camera=camera, seconds=5.0, start_hour=12.0, seed=1)
    t = np.arange(0.6, 4.4, 0.2)
    with_it = draw.render(dataclasses.replace(rec, events=(ev,)), t, 96, 72,
                          np.random.default_rng(0))
    without = draw.render(rec, t, 96, 72, np.random.default_rng(0))
    return np.abs(with_it.astype(int) - without).max(-1) > 20


def test_classes_look_different():
    """Where and how big each sprite is, and how it moves, match its class."""
    stats = {}
    for label in [*AV_CLASSES, "silent_passerby", "bird_flyby"]:
        changed = sprite_pixels(label, seed=5)
        ys = np.nonzero(changed.any(0))[0]
        assert len(ys), f"{label} drew nothing"
        centre_x = [np.nonzero(c)[1].mean() / 96 for c in changed if c.any()]
        stats[label] = {"area": changed.mean(), "y": ys.mean() / 72,
                        "travel": max(centre_x) - min(centre_x)}
    for label in ("car_pass", "truck_pass", "motorcycle_pass", "emergency_vehicle", "bicycle"):
        assert 0.55 < stats[label]["y"] < 0.95 and stats[label]["travel"] > 0.4, label
    for label in ("pedestrian", "silent_passerby", "dog_bark", "scream"):
        assert stats[label]["travel"] > 0.4, label
    for label in ("door", "glass_break", "people_talking"):
        assert stats[label]["travel"] < 0.15 and stats[label]["y"] < 0.65, label
    assert stats["bird_flyby"]["y"] < 0.4
    assert stats["truck_pass"]["area"] > stats["car_pass"]["area"] > \
        stats["motorcycle_pass"]["area"]
    assert stats["glass_break"]["area"] > 0 and stats["crash"]["area"] > stats["car_pass"]["area"]


# --- chunking, determinism, validation ------------------------------------------------

def test_chunking_does_not_change_the_sound():
    rec = scene.plan(small_cfg(recordings=1, seconds=20.0))[0]
    whole = Mixer(rec.events, 16000, 1).chunk(0, 20 * 16000)
    mixer, parts, first = Mixer(rec.events, 16000, 1), [], 0
    for n in [5923, 16000, 37] * 50:
        n = min(n, 20 * 16000 - first)
        if n:
            parts.append(mixer.chunk(first, n))
            first += n
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-7)
    assert np.abs(whole).max() > 0.05


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = small_cfg(recordings=2, seconds=6.0, width=64, height=48, channels=2,
                    sample_rate=24000, fps=10)
    first, again = generate(tmp_path / "a", cfg), generate(tmp_path / "b", cfg)
    other = generate(tmp_path / "c", dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert first.recordings == again.recordings
    for name in ["events.csv", "scenes.json", *first.recordings]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/events.csv").read_bytes() != (tmp_path / "c/events.csv").read_bytes()
    fa, aa, info = decode(tmp_path / "a" / first.recordings[0])
    fc, _, _ = decode(tmp_path / "c" / other.recordings[0])
    assert info["channels"] == 2 and info["rate"] == 24000 and info["size"] == (64, 48)
    assert fa.shape == fc.shape and not np.array_equal(fa, fc)
    assert not np.allclose(aa[0], aa[1])                      # stereo: the channels differ


def test_bad_config_is_rejected_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="even"):
        generate(tmp_path, small_cfg(width=97))
    with pytest.raises(ValueError, match="channels"):
        generate(tmp_path, small_cfg(channels=3))


# --- the writer -----------------------------------------------------------------------

def flash_and_click(path: Path, fps=10, sr=32000, channels=2, **kw) -> Path:
    """3 s of grey; one white frame and one click at 1.3 s."""
    def frames():
        for k in range(3):
            batch = np.full((fps, 48, 64, 3), 40, np.uint8)
            if k == 1:
                batch[3] = 250
            yield batch

    def audio():
        for k in range(3):
            x = np.zeros((channels, sr), np.float32)
            if k == 1:
                x[:, int(0.3 * sr):int(0.3 * sr) + 64] = 0.8
            yield x

    write_recording(path, frames(), audio(), fps=fps, sample_rate=sr, **kw)
    return path


@pytest.mark.parametrize("name, kw, vcodec, acodec, rate", [
    ("x.mp4", {}, "h264", "aac", 32000),
    ("x.mkv", {}, "h264", "aac", 32000),
    ("o.mkv", {"audio_codec": "libopus"}, "h264", "opus", 48000),
    ("x.webm", {"video_codec": "libvpx-vp9", "audio_codec": "libopus"}, "vp9", "opus", 48000),
    ("x.avi", {"video_codec": "mpeg4", "audio_codec": "pcm_s16le"}, "mpeg4", "pcm_s16le", 32000),
])
def test_write_recording_round_trips_in_sync(tmp_path, name, kw, vcodec, acodec, rate):
    path = flash_and_click(tmp_path / name, **kw)
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name, a.rate) == (vcodec, acodec, rate)
        assert (v.width, v.height, a.channels) == (64, 48, 2)
        seen = [(f.time, f.to_ndarray(format="rgb24").mean()) for f in c.decode(v)]
    with av.open(str(path)) as c:
        chunks = [(f.time, f.to_ndarray().reshape(-1, f.samples)[0]) for f in c.decode(audio=0)]
    assert len(seen) == 30
    flash = max(seen, key=lambda x: x[1])[0]
    sound = np.concatenate([x for _, x in chunks])
    assert abs(len(sound) / rate - 3.0) < 0.1
    click = chunks[0][0] + np.argmax(np.abs(sound)) / rate
    assert flash == pytest.approx(1.3, abs=1e-6) and click == pytest.approx(1.3, abs=0.02)


def test_write_recording_audio_only_video_only_and_bad_input(tmp_path):
    tone = [np.sin(np.linspace(0, 2000, 16000, dtype=np.float32)) * 0.3] * 2   # mono [n]
    write_recording(tmp_path / "a.wav", None, tone, fps=10, sample_rate=16000,
                    audio_codec="pcm_s16le")
    write_recording(tmp_path / "v.mp4", [np.zeros((48, 64, 3), np.uint8)] * 20, None, fps=10,
                    sample_rate=16000)
    with av.open(str(tmp_path / "a.wav")) as c:
        assert [s.type for s in c.streams] == ["audio"] and c.streams.audio[0].rate == 16000
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert [s.type for s in c.streams] == ["video"]
        assert sum(1 for _ in c.decode(video=0)) == 20
    with pytest.raises(ValueError, match="even"):
        write_recording(tmp_path / "odd.mp4", [np.zeros((47, 64, 3), np.uint8)], None, fps=10,
                        sample_rate=16000)
    with pytest.raises(ValueError, match="uint8"):
        write_recording(tmp_path / "f.mp4", [np.zeros((48, 64, 3))], None, fps=10,
                        sample_rate=16000)


def write_every_kind(out_dir: Path) -> dict[str, bytes]:
    """One small file per container and codec family the writer knows -> {name: bytes}."""
    out_dir = Path(out_dir)
    flash_and_click(out_dir / "x.mp4")
    flash_and_click(out_dir / "x.mkv")
    flash_and_click(out_dir / "x.webm", video_codec="libvpx-vp9", audio_codec="libopus")
    flash_and_click(out_dir / "x.avi", video_codec="mpeg4", audio_codec="pcm_s16le")
    tone = [0.3 * np.sin(np.linspace(0, 2000, 16000, dtype=np.float32))] * 2
    write_recording(out_dir / "x.ogg", None, tone, fps=10, sample_rate=16000)
    write_recording(out_dir / "x.m4a", None, tone, fps=10, sample_rate=16000)
    return {p.name: p.read_bytes() for p in sorted(out_dir.iterdir())}


def test_write_recording_bytes_depend_on_the_input_alone(tmp_path):
    """Twice in one process (Matroska, WebM and Ogg muxers stamp random ids unless
    bit-exact) and in a child pinned to one core (PyAV threads encoders by the core
    count, and mpeg4 then cuts a slice per thread)."""
    first = write_every_kind(tmp_path / "a")
    assert first == write_every_kind(tmp_path / "b")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2:
        return                          # one core already: no other core count to try
    code = ("import os, sys; from pathlib import Path; from tests.test_synth import "
            f"write_every_kind; os.sched_setaffinity(0, {{{cores[0]}}}); "
            "write_every_kind(Path(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pinned = {p.name: p.read_bytes() for p in sorted((tmp_path / "c").iterdir())}
    assert [name for name in first if pinned[name] != first[name]] == []


# --- bad files --------------------------------------------------------------------------

def test_write_bad_files_makes_every_kind(tmp_path):
    kinds = write_bad_files(tmp_path / "bad", seed=1)
    assert sorted(kinds.values()) == sorted(["empty", "garbage", "not_a_video", "no_audio",
                                             "no_video", "truncated", "truncated_noindex"])
    files = {kind: tmp_path / "bad" / name for name, kind in kinds.items()}
    assert all(p.is_file() for p in files.values())
    assert files["empty"].stat().st_size == 0
    for kind in ("empty", "garbage", "not_a_video", "truncated_noindex"):
        with pytest.raises(av.error.FFmpegError):
            av.open(str(files[kind])).close()
    with av.open(str(files["no_audio"])) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 0
        assert sum(1 for _ in c.decode(video=0)) > 0
    with av.open(str(files["no_video"])) as c:
        assert len(c.streams.video) == 0 and len(c.streams.audio) == 1
    decoded = 0
    with av.open(str(files["truncated"])) as c:                  # a decodable prefix remains
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        try:
            for _ in c.decode(video=0):
                decoded += 1
        except av.error.FFmpegError:
            pass
    assert 0 < decoded < 100
    again = write_bad_files(tmp_path / "again", seed=1)
    other = write_bad_files(tmp_path / "other", seed=2)
    for name in kinds:
        same = (tmp_path / "again" / name).read_bytes() == files[kinds[name]].read_bytes()
        assert same and again[name] == kinds[name]
    assert (tmp_path / "other/garbage.mp4").read_bytes() != files["garbage"].read_bytes()
    assert other == kinds
