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
    other = media["clips"][2]
    assert (clip["start"], clip["end"]) == (0.0, predictor.clip_seconds)
    assert clip.keys() == other.keys()
    # One clip alone and the media's clips in one batch run float32 kernels that sum in
    # another order (about 2 ulp apart in the embedding), so the numbers agree to float32
    # noise, not bit for bit: each is compared at what its formula lets that noise through
    # (the anomaly score divides it by a std of ~5e-4), and a rank or flag only where no
    # near-tie can flip it. Embeddings are given to 6 digits, scores to 4.
    emb = {k: np.array(clip["embedding"][k]) for k in ("audio", "video")}
    diff = {k: emb[k] - np.array(other["embedding"][k]) for k in emb}
    assert max(np.abs(d).max() for d in diff.values()) <= 1e-5
    fp32 = 2.0 ** -24               # float32 unit roundoff; a sum of n terms errs by n * fp32
    quantum = 1e-4
    move = {k: np.linalg.norm(d) + np.sqrt(d.size) * 1e-6 for k, d in diff.items()}  # ||Δ||
    inf = max(np.abs(d).max() for d in diff.values()) + 1e-6                          # max|Δ|
    n = sum(e.size for e in emb.values())
    # a cosine with a fixed unit row moves by <= ||Δ query|| (Cauchy-Schwarz), joint = [a, v]/√2
    cosine = np.hypot(move["audio"], move["video"]) / np.sqrt(2) + 2 * n * fp32
    moved = {"knn": cosine,            # 1 - mean of the k largest such cosines
             "disagreement": move["audio"] + move["video"] + move["audio"] * move["video"]
             + n * fp32}               # 1 - a·v
    anomaly_tol = sum(moved[k] / std for k, (_, std) in predictor.scorer.calibration.items())
    probe = predictor.probes["audiovisual"]
    x = (np.concatenate([emb["audio"], emb["video"]]) - probe.mean) / probe.scale
    logits = (np.abs(probe.weight / probe.scale).sum(1).max() * inf
              + 2 * n * fp32 * np.abs(probe.weight * x).sum(1).max())
    prob_tol = np.expm1(2 * logits)   # a softmax ratio moves by at most e^(2 max|Δ logit|)

    def same_ranking(a, b, key, value, tol):
        """A top list: values within tol rank by rank; names where no neighbour, nor the
        first one left out (at most the last value), is within reach."""
        assert len(a) == len(b)
        got, want = [x[value] for x in a], [x[value] for x in b]
        assert got == pytest.approx(want, abs=tol + quantum)
        margin = 2 * tol + quantum
        for i in range(len(a) - 1):
            if got[i] - got[i + 1] > margin and got[i] - got[-1] > margin and (
                    i == 0 or got[i - 1] - got[i] > margin):
                assert [a[i][k] for k in key] == [b[i][k] for k in key]

    same_ranking(clip["top_events"], other["top_events"], ["event"], "probability", prob_tol)
    assert clip["probability"] == pytest.approx(other["probability"], abs=prob_tol + quantum)
    same_ranking(clip["similar"], other["similar"], ["recording", "start"], "score", cosine)
    assert clip["anomaly_score"] == pytest.approx(other["anomaly_score"],
                                                  abs=anomaly_tol + quantum)
    if abs(clip["anomaly_score"] - predictor.threshold) > anomaly_tol + quantum:
        assert clip["anomalous"] == other["anomalous"]
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


# -- poisoned media and non-finite results (issue 13) -----------------------------------------

def poisoned_media(tmp_path, nan_seconds: tuple[float, float] | None = None,
                   nan_at: tuple[float, ...] = ()) -> bytes:
    """3 s of float-audio mkv (low noise) with NaN over `nan_seconds` and at `nan_at`."""
    from tests.media_helpers import marked_frames, write_av

    rate = 16000
    audio = np.random.default_rng(0).normal(0, 0.01, (1, 3 * rate)).astype(np.float32)
    if nan_seconds:
        audio[:, round(nan_seconds[0] * rate): round(nan_seconds[1] * rate)] = np.nan
    for at in nan_at:
        audio[:, round(at * rate)] = np.inf
    path = write_av(tmp_path / "poisoned.mkv", marked_frames(30), audio, fps=10,
                    sample_rate=rate, audio_codec="pcm_f32le")
    return path.read_bytes()


def test_a_few_nan_audio_samples_are_silenced_and_said_not_served_as_null(predictor,
                                                                           tmp_path):
    result = predictor.predict_media(poisoned_media(tmp_path, nan_at=(0.5, 2.25)))
    json.dumps(result, allow_nan=False)
    assert len(result["clips"]) == 3
    for clip in result["clips"]:
        assert np.isfinite(clip["anomaly_score"]) and isinstance(clip["anomalous"], bool)
        assert np.isfinite(clip["probability"])
    assert result["media"]["problems"] == [
        "2 of 48000 audio samples (all channels) were NaN, infinite or beyond ±1000, from "
        "0.50 s to 2.25 s: set to 0 (silence)"]


def test_mostly_nan_audio_is_a_422_as_ingest_quarantines_it(predictor, tmp_path):
    with pytest.raises(RequestError, match=r"corrupt audio: 16000 of 48000 .*\(33\.3%") \
            as error:
        predictor.predict_media(poisoned_media(tmp_path, nan_seconds=(1.0, 2.0)))
    assert error.value.status == 422


def test_a_non_finite_embedding_is_a_422_for_its_item_alone(predictor, tmp_path,
                                                             synth_source, synth_dataset,
                                                             monkeypatch):
    """A model that gives NaN for silent audio: that item is refused, the other served."""
    encoder = predictor.encoders["audio"]

    def nan_for_silence(logmel):
        out = encoder(logmel).clone()
        out[logmel.flatten(1).amax(1) < -20] = float("nan")    # log-mel of digital silence
        return out

    monkeypatch.setitem(predictor.encoders, "audio", nan_for_silence)
    silent = tmp_path / "silent.mp4"
    write_recording(silent, (np.full((48, 64, 3), 80, np.uint8) for _ in range(20)),
                    [np.zeros((1, 32000), np.float32)], fps=10, sample_rate=16000)
    good = (synth_source / a_test_recording(synth_dataset)).read_bytes()
    refused, served = predictor.predict_many([silent.read_bytes(), good])
    assert isinstance(refused, RequestError) and refused.status == 422
    assert "the model gave a NaN or infinite embedding for 2 of 2 clips (the first at " \
           "0.00 s); the answer is withheld" in str(refused)
    assert all(np.isfinite(c["anomaly_score"]) for c in served["clips"])


def test_a_non_finite_anomaly_score_is_a_422_never_not_anomalous(predictor, synth_source,
                                                                  synth_dataset, monkeypatch):
    """A degenerate calibration (a constant score, std 0) divides by zero."""
    import dataclasses

    degenerate = dataclasses.replace(predictor.scorer, calibration={"knn": (0.0, 0.0)})
    monkeypatch.setattr(predictor, "scorer", degenerate)
    with pytest.raises(RequestError, match="NaN or infinite anomaly score") as error, \
            np.errstate(divide="ignore", invalid="ignore"):
        predictor.predict_media((synth_source / a_test_recording(synth_dataset)).read_bytes())
    assert error.value.status == 422
