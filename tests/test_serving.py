"""Serving: TorchScript export, the bundle, and the predictor on real media and clips."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from sempair.config import load_config
from sempair.dataset import ClipDataset
from sempair.evaluate import evaluate
from sempair.evaluate.anomaly import AnomalyScorer
from sempair.evaluate.embeddings import encode, load_encoders
from sempair.evaluate.probe import Probe
from sempair.evaluate.release import make_release
from sempair.serving import (
    BUNDLE_FILE,
    BundleError,
    Predictor,
    RequestError,
    build_bundle,
    check_export,
    export_encoders,
)
from sempair.serving.bundle import split_reference
from sempair.synth import write_bad_files, write_recording

LENIENT = ["evaluate.gate_macro_f1=0", "evaluate.gate_search_map=0",
           "evaluate.gate_anomaly_auc=-1", "evaluate.map_method=pca"]


@pytest.fixture(scope="module")
def release(tmp_path_factory, small_model, synth_dataset):
    root = tmp_path_factory.mktemp("serving")
    summary = evaluate(small_model, synth_dataset, root / "eval", load_config(None, LENIENT))
    if not summary.passed:    # anomaly AUC is nan when the test split has no anomaly
        pytest.skip(f"the tiny test split cannot pass any gate: {summary.gate}")
    make_release(small_model, root / "eval", root / "release")
    return root / "release"


@pytest.fixture(scope="module")
def bundle(release, synth_dataset, cfg):
    out = release.parent / "bundle"
    build_bundle(release, synth_dataset, out, cfg.serve)
    return out


@pytest.fixture(scope="module")
def predictor(bundle):
    threads = torch.get_num_threads()
    yield Predictor.load(bundle, threads=1)
    torch.set_num_threads(threads)       # the rest of the suite keeps its threads


@pytest.fixture(scope="module")
def embedded(small_model, synth_dataset):
    """The dataset's clips as evaluation embeds them."""
    return encode(load_encoders(small_model)[0], ClipDataset(synth_dataset), 64)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad")
    write_bad_files(out)
    return out


def a_test_recording(synth_dataset) -> str:
    manifest = ClipDataset(synth_dataset).manifest
    return sorted(manifest.loc[manifest["split"] == "test", "recording"].unique())[0]


def assert_close(a, b, atol=2e-4):
    """Two results alike: same structure and strings, floats within atol."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_close(a[key], b[key], atol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close(x, y, atol)
    elif isinstance(a, float):
        assert b == pytest.approx(a, abs=atol)
    else:
        assert a == b


# -- export ----------------------------------------------------------------------------------

def test_exported_encoders_match_eager_on_dataset_clips(tmp_path, small_model, synth_dataset):
    paths = export_encoders(small_model, tmp_path)
    assert {p.name for p in paths.values()} == {"audio_encoder.pt", "video_encoder.pt"}
    logmel, frames = ClipDataset(synth_dataset).batch(np.arange(24))
    diffs = check_export(small_model, tmp_path, atol=1e-5,
                         inputs={"audio": logmel, "video": frames})
    assert max(diffs.values()) <= 1e-5
    # TorchScript alone runs them: sempair cannot even be imported here
    code = ("import sys, torch; sys.modules['sempair'] = None; "
            f"a = torch.jit.load({str(paths['audio'])!r}); "
            f"v = torch.jit.load({str(paths['video'])!r}); "
            f"print(a(torch.zeros(2, {logmel.shape[1]}, {logmel.shape[2]})).shape[0], "
            f"v(torch.zeros(2, {', '.join(map(str, frames.shape[1:]))}, "
            "dtype=torch.uint8)).shape[0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2"]


# -- the bundle ------------------------------------------------------------------------------

def test_bundle_holds_every_file_with_its_checksum_and_the_train_archive(
        bundle, release, synth_dataset, cfg):
    manifest = json.loads((bundle / BUNDLE_FILE).read_text())
    on_disk = {p.name for p in bundle.iterdir()} - {BUNDLE_FILE}
    assert set(manifest["files"]) == on_disk >= {
        "audio_encoder.pt", "video_encoder.pt", "probe.npz", "probe_audio.npz",
        "probe_video.npz", "anomaly.npz", "archive.npz", "archive.faiss", "features.json",
        "serving.json", "model_card.json"}
    card = json.loads((release / "model_card.json").read_text())
    assert manifest["model"] == {"name": card["model"]["name"],
                                 "version": card["model"]["version"]}
    data = ClipDataset(synth_dataset)
    assert manifest["dataset_id"] == data.meta["dataset_id"]
    # archive row i is reference row i: the train split in manifest order
    train = data.manifest[data.manifest["split"] == "train"]
    with np.load(bundle / "archive.npz") as archive:
        assert archive["clip_id"].tolist() == train["clip_id"].tolist()
        assert np.array_equal(archive["start"], train["start"].to_numpy())
    # the threshold: the quantile of the training clips' own leave-one-out scores
    scorer = AnomalyScorer.load(bundle / "anomaly.npz")
    own = scorer.scores(*split_reference(scorer.reference), exclude_self=True)["combined"]
    serving = json.loads((bundle / "serving.json").read_text())
    assert serving["anomaly_threshold"] == pytest.approx(
        np.quantile(own, cfg.serve.anomaly_quantile))
    assert serving["max_bytes"] == cfg.serve.max_request_mb * 2**20


def test_a_tampered_bundle_is_refused_on_load(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with open(copy / "probe.npz", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"changed since it was built.*probe\.npz"):
        Predictor.load(copy)
    (copy / BUNDLE_FILE).unlink()
    with pytest.raises(BundleError, match="not a serving bundle"):
        Predictor.load(copy)


def test_a_reference_that_does_not_fit_the_dataset_is_refused(release, synth_dataset, cfg,
                                                               tmp_path):
    copy = tmp_path / "release"
    shutil.copytree(release, copy)
    scorer = AnomalyScorer.load(copy / "anomaly.npz")
    AnomalyScorer(scorer.reference[:-1], scorer.k, scorer.cross_modal,
                  scorer.calibration).save(copy / "anomaly.npz")
    with pytest.raises(BundleError, match="changed since the release was made"):
        build_bundle(copy, synth_dataset, tmp_path / "b1", cfg.serve)
    card = json.loads((copy / "release.json").read_text())
    card["files"]["anomaly.npz"] = _sha256(copy / "anomaly.npz")
    (copy / "release.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match=r"train clips but anomaly\.npz holds"):
        build_bundle(copy, synth_dataset, tmp_path / "b2", cfg.serve)
    assert not (tmp_path / "b2").exists()


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the predictor ---------------------------------------------------------------------------

def test_media_is_decoded_as_ingest_did_and_scored_against_the_train_archive(
        predictor, synth_source, synth_dataset, embedded):
    recording = a_test_recording(synth_dataset)
    result = predictor.predict_media((synth_source / recording).read_bytes(), embeddings=True)
    json.dumps(result, allow_nan=False)                               # strict JSON
    rows = np.flatnonzero(embedded.clips["recording"].to_numpy() == recording)
    clips = result["clips"]
    assert result["mode"] == "audiovisual" and len(clips) == len(rows)
    assert [c["start"] for c in clips] == pytest.approx(embedded.clips["start"][rows].tolist())
    # same decoding as ingest: the embeddings evaluation gave these clips
    audio = np.array([c["embedding"]["audio"] for c in clips])
    video = np.array([c["embedding"]["video"] for c in clips])
    assert np.abs(audio - embedded.audio[rows]).max() <= 1e-5
    assert np.abs(video - embedded.video[rows]).max() <= 1e-5
    classes = set(Probe.load(predictor.bundle / "probe.npz").classes)
    train = embedded.clips[embedded.clips["split"] == "train"]
    train_clips = set(zip(train["recording"], train["start"], strict=True))
    for clip in clips:
        assert clip["event"] in classes and clip["event"] == clip["top_events"][0]["event"]
        assert [e["probability"] for e in clip["top_events"]] == sorted(
            [e["probability"] for e in clip["top_events"]], reverse=True)
        assert len(clip["similar"]) == predictor.top_k
        assert all((s["recording"], s["start"]) in train_clips for s in clip["similar"])
        assert clip["anomalous"] == (clip["anomaly_score"] > predictor.threshold)
    expected = predictor.scorer.scores(embedded.audio[rows], embedded.video[rows])["combined"]
    assert [c["anomaly_score"] for c in clips] == pytest.approx(expected, abs=1e-3)
    assert result["summary"]["clips"] == len(clips)
    assert result["summary"]["anomalies"] == sum(c["anomalous"] for c in clips)
    assert result["model"] == {"name": predictor.name, "version": predictor.version}


def test_a_precomputed_clip_gives_the_media_clip_and_bad_shapes_are_named(
        predictor, synth_source, synth_dataset):
    recording = a_test_recording(synth_dataset)
    data = ClipDataset(synth_dataset)
    row = int(np.flatnonzero(data.manifest["recording"].to_numpy() == recording)[2])
    logmel, frames = (x[0].numpy() for x in data.batch(np.array([row])))
    clip = predictor.predict_clip(logmel, frames, embeddings=True)["clips"][0]
    media = predictor.predict_media((synth_source / recording).read_bytes(), embeddings=True)
    expected = media["clips"][2] | {"start": 0.0, "end": predictor.clip_seconds}
    assert_close(clip, expected, atol=1e-5)
    with pytest.raises(RequestError, match=r"audio must be .*\[64, 100\], got \[64, 99\]") as bad:
        predictor.predict_clip(logmel[:, :99], frames)
    assert bad.value.status == 400
    with pytest.raises(RequestError, match="uint8") as bad:
        predictor.predict_clip(logmel, frames.astype(np.float32))
    assert bad.value.status == 400


def test_a_batch_answers_each_item_and_a_bad_one_spoils_nothing(predictor, synth_source,
                                                               synth_dataset):
    recording = a_test_recording(synth_dataset)
    good = (synth_source / recording).read_bytes()
    other = next(p for p in sorted(synth_source.rglob("*.mp4"))
                 if p.relative_to(synth_source).as_posix() != recording).read_bytes()
    results = predictor.predict_many([good, b"\x00garbage" * 100, other])
    assert isinstance(results[1], RequestError) and results[1].status == 415
    assert_close(results[0], predictor.predict_media(good))
    assert_close(results[2], predictor.predict_media(other))


def test_limits_and_bad_media_get_a_status_and_the_fix(predictor, synth_source, synth_dataset,
                                                      bad_files, monkeypatch):
    media = (synth_source / a_test_recording(synth_dataset)).read_bytes()
    cases = {"empty": (b"", 400, "empty"),
             "garbage": ((bad_files / "garbage.mp4").read_bytes(), 415, "not a media file"),
             "text": ((bad_files / "not_a_video.mp4").read_bytes(), 415, "text file"),
             "no index": ((bad_files / "truncated_noindex.mp4").read_bytes(), 415, "moov")}
    for name, (data, status, words) in cases.items():
        with pytest.raises(RequestError, match=words) as error:
            predictor.predict_media(data)
        assert error.value.status == status, name
        assert "send" in str(error.value), name
    with pytest.raises(RequestError, match="top_k") as error:
        predictor.predict_media(media, top_k=-1)
    assert error.value.status == 400
    for limit in (5.0, 11.5):        # declared too long; found too long while decoding
        monkeypatch.setattr(predictor, "max_media_seconds", limit)
        with pytest.raises(RequestError, match=f"{limit:g} s limit") as error:
            predictor.predict_media(media)
        assert error.value.status == 413
    monkeypatch.setattr(predictor, "max_bytes", len(media) - 1)
    with pytest.raises(RequestError, match="MB limit") as error:
        predictor.predict_media(media)
    assert error.value.status == 413


def test_a_clip_too_short_is_a_422(predictor, tmp_path):
    path = tmp_path / "short.mp4"
    frames = (np.full((48, 64, 3), 80, np.uint8) for _ in range(5))
    audio = [np.zeros((1, 8000), np.float32)]
    write_recording(path, frames, audio, fps=10, sample_rate=16000)
    with pytest.raises(RequestError, match="shorter than one clip") as error:
        predictor.predict_media(path.read_bytes())
    assert error.value.status == 422


@pytest.mark.parametrize(("name", "mode"), [("no_audio.mp4", "video"), ("no_video.m4a", "audio")])
def test_one_stream_media_uses_the_modality_probe_without_an_anomaly_score(
        predictor, bad_files, name, mode):
    result = predictor.predict_media((bad_files / name).read_bytes(), top_k=3,
                                     embeddings=True)
    json.dumps(result, allow_nan=False)
    assert result["mode"] == mode and len(result["clips"]) == 2        # 2 s of media
    assert [c["start"] for c in result["clips"]] == [0.0, 1.0]
    assert any(f"{mode} only" in problem for problem in result["media"]["problems"])
    for clip in result["clips"]:
        assert clip["anomaly_score"] is None and clip["anomalous"] is None
        assert len(clip["similar"]) == 3 and clip["event"] in predictor.probes[mode].classes
        missing = "audio" if mode == "video" else "video"
        assert clip["embedding"][missing] is None and len(clip["embedding"][mode]) > 0
    assert result["summary"]["anomalies"] == 0
