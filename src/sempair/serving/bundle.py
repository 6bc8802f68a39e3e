"""A serving bundle: one self-contained folder with everything a prediction needs.

    build_bundle("runs/release", "runs/clips", "runs/bundle", cfg.serve)

    BUNDLE/
      audio_encoder.pt video_encoder.pt   TorchScript encoders (sempair.serving.export)
      probe.npz                           the release's audio-visual event probe
      probe_audio.npz probe_video.npz     one-modality probes for audio-only / video-only
                                          media (only when the dataset has labels)
      anomaly.npz                         the release's anomaly reference and calibration
      archive.npz                         the reference rows' clips: clip_id, recording,
                                          start, end (row i <-> anomaly reference row i)
      archive.faiss                       faiss IndexFlatIP over the joint reference
      features.json                       features config, clip_seconds, hop_seconds
      serving.json                        top_k, request limits, anomaly threshold, threads
      model_card.json                     the release's card
      bundle.json                         written last: model, dataset, sha256 of every file

The anomaly reference is the train split of the evaluated dataset in manifest order
(`fit_scorer`); the archive is read from that dataset's manifest and checked against it:
same dataset id, same row count, and a sample of clips re-embedded to the same vectors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import faiss
import numpy as np
import torch

from sempair import SempairError, __version__, json_safe, weights
from sempair.config import ServeConfig
from sempair.dataset import ClipDataset
from sempair.evaluate.anomaly import AnomalyScorer
from sempair.evaluate.embeddings import check_features, load_encoders
from sempair.evaluate.probe import fit_probe, release_c
from sempair.serving.export import ENCODERS, check_export, export_encoders, load_exported
from sempair.storage import mismatched, sha256_path

BUNDLE_FILE = "bundle.json"
FORMAT, FORMAT_VERSION = "sempair-bundle", 1
FROM_RELEASE = ("probe.npz", "anomaly.npz", "model_card.json")
NEEDED = ("model.pt", "dataset.json", "evaluation.json", "release.json", *FROM_RELEASE)
SPOT_CHECKS = 8         # archive clips re-embedded to prove the row alignment
SPOT_ATOL = 1e-4        # batch composition moves embeddings by ~1e-6, misalignment by ~1


class BundleError(SempairError):
    """A bundle that cannot be built or trusted; the message says what to do."""


def build_bundle(release_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path,
                 serve_cfg: ServeConfig) -> dict:
    """Build the serving bundle of a release at out_dir; returns bundle.json's content."""
    release, out = Path(release_dir), Path(out_dir)
    release_json = _check_release(release)
    data = ClipDataset(dataset_dir)
    scorer = AnomalyScorer.load(release / "anomaly.npz")
    archive = _archive_rows(release, data, scorer)
    tmp = _fresh(out)
    try:
        export_encoders(release, tmp)
        check_export(release, tmp)
        _check_alignment(tmp, data, archive, scorer)
        for name in FROM_RELEASE:
            shutil.copyfile(release / name, tmp / name)
        _write_archive(tmp, data, archive, scorer)
        _write_modality_probes(tmp, release, data, archive, scorer)
        _write_json(tmp / "features.json", _features(release, data))
        _write_json(tmp / "serving.json", _serving(serve_cfg, scorer))
        content = _write_manifest(tmp, release, release_json)
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return content


# -- what goes in ----------------------------------------------------------------------------

def _check_release(release: Path) -> dict:
    """A complete, untampered release folder; returns release.json."""
    missing = [name for name in NEEDED if not (release / name).is_file()]
    if missing:
        raise BundleError(f"{release} is not a release ({', '.join(missing)} missing); pass "
                          "the folder `sempair release` (make_release) wrote")
    release_json = json.loads((release / "release.json").read_text())
    changed = mismatched(release, release_json["files"])
    if changed:
        raise BundleError(f"{release}: {', '.join(changed)} changed since the release was "
                          "made (sha256 differs from release.json); release the model again")
    return release_json


def _archive_rows(release: Path, data: ClipDataset, scorer: AnomalyScorer) -> np.ndarray:
    """Manifest positions of the anomaly reference's rows: the train split, in order."""
    evaluated = json.loads((release / "evaluation.json").read_text())["dataset"]
    trained = json.loads((release / "dataset.json").read_text())["dataset_id"]
    ours = data.meta["dataset_id"]
    if ours != evaluated:
        raise BundleError(f"{data.root} is dataset {ours}, but the release's anomaly reference "
                          f"holds the train clips of dataset {evaluated} (trained on "
                          f"{trained}); pass that dataset (dvc pull / sempair ingest again)")
    _, saved = load_encoders(release)
    check_features(saved, data)
    rows = np.flatnonzero(data.manifest["split"].to_numpy() == "train")
    if len(rows) != len(scorer.reference):
        raise BundleError(f"{data.root} has {len(rows)} train clips but anomaly.npz holds "
                          f"{len(scorer.reference)} reference rows; the dataset changed since "
                          "the evaluation: evaluate and release again")
    return rows


@torch.no_grad()
def _check_alignment(bundle: Path, data: ClipDataset, rows: np.ndarray,
                     scorer: AnomalyScorer) -> None:
    """Re-embed a few archive clips: their joint vectors must be the reference's rows."""
    picks = np.unique(np.linspace(0, len(rows) - 1, min(SPOT_CHECKS, len(rows))).astype(int))
    encoders = load_exported(bundle)
    logmel, frames = data.batch(rows[picks])        # [S, n_mels, T_a], [S, T, 3, H, W]
    joint = torch.cat([encoders["audio"](logmel), encoders["video"](frames)], 1) / np.sqrt(2)
    diff = float(np.abs(joint.numpy() - scorer.reference[picks]).max())
    if not diff <= SPOT_ATOL:
        raise BundleError(f"the anomaly reference does not match {data.root}'s train clips "
                          f"(max |diff| {diff:.3g} on {len(picks)} re-embedded clips): the "
                          "dataset or the model is not the one evaluated; evaluate and "
                          "release again")


# -- what comes out --------------------------------------------------------------------------

def _write_archive(bundle: Path, data: ClipDataset, rows: np.ndarray,
                   scorer: AnomalyScorer) -> None:
    clips = data.manifest.iloc[rows]
    np.savez(bundle / "archive.npz", clip_id=clips["clip_id"].to_numpy().astype(str),
             recording=clips["recording"].to_numpy().astype(str),
             start=clips["start"].to_numpy(np.float64), end=clips["end"].to_numpy(np.float64))
    index = faiss.IndexFlatIP(scorer.reference.shape[1])
    index.add(np.ascontiguousarray(scorer.reference, dtype=np.float32))   # [M, 2d]
    faiss.write_index(index, str(bundle / "archive.faiss"))


def split_reference(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint rows concat(audio, video)/√2 [M, 2d] -> unit audio [M, d], unit video [M, d]."""
    d = reference.shape[1] // 2
    audio, video = reference[:, :d], reference[:, d:]
    unit = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            for x in (audio, video)]
    return unit[0].astype(np.float32), unit[1].astype(np.float32)


def _write_modality_probes(bundle: Path, release: Path, data: ClipDataset, rows: np.ndarray,
                           scorer: AnomalyScorer) -> None:
    """Probes on one modality's embeddings, fitted like the release's audio-visual one:
    class-balanced, on the train rows, with the C the evaluation chose on val."""
    if "label" not in data.manifest:
        return      # unlabelled data: one-modality media gets a 422 when served
    labels = data.manifest["label"].to_numpy().astype(str)[rows]
    c = release_c(json.loads((release / "evaluation.json").read_text()))
    for kind, x in zip(("audio", "video"), split_reference(scorer.reference), strict=True):
        fit_probe(x, labels, c).save(bundle / f"probe_{kind}.npz")


def _features(release: Path, data: ClipDataset) -> dict:
    saved = weights.load(release / "model.pt")
    return {"features": saved["features"], "clip_seconds": saved["clip_seconds"],
            "hop_seconds": data.meta["ingest"]["hop_seconds"]}


def _serving(serve: ServeConfig, scorer: AnomalyScorer) -> dict:
    """Request limits and the anomaly threshold: the anomaly_quantile of the training
    clips' own combined scores, each scored against the others (leave-one-out)."""
    audio, video = split_reference(scorer.reference)
    scores = scorer.scores(audio, video, exclude_self=True).get("combined")
    threshold = float(np.quantile(scores, serve.anomaly_quantile)) if scores is not None \
        else None
    return {"top_k": serve.top_k, "max_bytes": serve.max_request_mb * 1024 * 1024,
            "max_media_seconds": serve.max_media_seconds, "anomaly_score": "combined",
            "anomaly_quantile": serve.anomaly_quantile, "anomaly_threshold": threshold,
            "threads": serve.threads, "batch_size": serve.batch_size,
            "max_batch_delay_ms": serve.max_batch_delay_ms, "workers": serve.workers}


def _write_manifest(bundle: Path, release: Path, release_json: dict) -> dict:
    card = json.loads((bundle / "model_card.json").read_text())
    files = {path.name: sha256_path(path) for path in sorted(bundle.iterdir()) if path.is_file()}
    content = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "model": {"name": card["model"]["name"], "version": card["model"]["version"]},
               "dataset_id": release_json["dataset_id"],
               "dataset_checksum": release_json["dataset_checksum"],
               "evaluated_on": release_json["evaluated_on"],
               "release": str(release.absolute()), "encoders": dict(ENCODERS),
               "modality_probes": (bundle / "probe_audio.npz").is_file(),
               "sempair_version": __version__, "files": files}
    _write_json(bundle / BUNDLE_FILE, content)     # last: its presence marks a whole bundle
    return content


# -- files -----------------------------------------------------------------------------------


def _write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(json_safe(content), indent=2, allow_nan=False) + "\n")


def _fresh(out: Path) -> Path:
    """A hidden sibling to build in; out itself must be absent, empty or an old bundle."""
    if out.exists() and any(out.iterdir()) and not (out / BUNDLE_FILE).is_file():
        raise BundleError(f"{out} exists and is not a bundle; choose an empty or new folder")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
