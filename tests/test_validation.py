"""The validation gate on a real ingested dataset, with real Great Expectations: good data
passes, and each corruption fails exactly the checks that describe it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sempair.validation import ValidationFailed, ValidationResult, validate_dataset


@pytest.fixture(scope="module")
def vcfg(cfg):
    """The synthetic dataset is small: lower the clip minimums."""
    return dataclasses.replace(cfg.validate, min_train_clips=4, min_test_clips=2)


@pytest.fixture(scope="module")
def good(synth_dataset: Path, vcfg, tmp_path_factory) -> tuple[ValidationResult, Path]:
    out = tmp_path_factory.mktemp("validation") / "good"
    return validate_dataset(synth_dataset, out, vcfg), out


def copy(synth_dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synth_dataset, tmp_path / "dataset"))


def rewrite(folder: Path, name: str, frame: pd.DataFrame) -> None:
    """Write a table back and keep meta.json consistent: only the content checks may fail."""
    path = folder / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"][name] = hashlib.sha256(path.read_bytes()).hexdigest()
    listing = "".join(f"{k} {v}\n" for k, v in meta["files"].items())
    digest = hashlib.sha256(listing.encode()).hexdigest()
    meta["checksum"], meta["dataset_id"] = f"sha256:{digest}", digest[:12]
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def failed(result: ValidationResult) -> set[tuple[str, str]]:
    return {(c.suite, c.name) for c in result.failures}


def test_good_dataset_passes_and_writes_every_report(good, synth_dataset: Path):
    result, out = good
    assert result.passed and not result.failures and not result.warnings
    result.raise_for_failures()
    meta = json.loads((synth_dataset / "meta.json").read_text())
    assert (result.dataset_id, result.checksum) == (meta["dataset_id"], meta["checksum"])
    assert result.reference_id is None
    assert {c.suite for c in result.checks} == {"integrity", "recordings", "clips",
                                                "annotations"}
    assert {c.severity for c in result.checks} <= {"critical", "warning"}
    assert all(c.expected and not c.problem for c in result.checks)

    def strict(constant):
        raise ValueError(f"not strict JSON: {constant}")

    saved = json.loads((out / "validation.json").read_text(), parse_constant=strict)
    assert saved["passed"] is True and len(saved["checks"]) == len(result.checks)
    assert saved["counts"] == {"checks": len(result.checks), "passed": len(result.checks),
                               "failures": 0, "warnings": 0}
    assert "PASSED" in (out / "validation.md").read_text()
    page = (out / "validation.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "silent share" in page
    docs = out / "data_docs"
    assert (docs / "index.html").is_file()
    pages = {p.parent.parent.parent.name for p in docs.glob("validations/**/*.html")}
    assert {"recordings", "clips", "annotations"} <= pages


def _null_statistic(folder: Path):
    clips = pd.read_parquet(folder / "manifest.parquet")
    clips.loc[:4, "audio_logmel_mean"] = float("nan")
    rewrite(folder, "manifest.parquet", clips)


def _recording_in_two_splits(folder: Path):
    clips = pd.read_parquet(folder / "manifest.parquet")
    first = clips["recording"] == clips["recording"].iloc[0]
    other = next(s for s in ("train", "val", "test") if s != clips["split"].iloc[0])
    clips.loc[first & (clips["clip"] % 2 == 1), "split"] = other
    rewrite(folder, "manifest.parquet", clips)


def _silent_audio(folder: Path):
    clips = pd.read_parquet(folder / "manifest.parquet")
    clips.loc[: len(clips) * 3 // 4, "audio_rms_dbfs"] = -120.0
    rewrite(folder, "manifest.parquet", clips)


def _black_video(folder: Path):
    clips = pd.read_parquet(folder / "manifest.parquet")
    clips.loc[: len(clips) * 3 // 4, "video_brightness"] = 0.01
    rewrite(folder, "manifest.parquet", clips)


def _bad_event_label(folder: Path):
    events = pd.read_csv(folder / "events.csv")
    events.loc[0, "label"] = "unicorn"
    rewrite(folder, "events.csv", events)


def _bad_clip_label(folder: Path):
    clips = pd.read_parquet(folder / "manifest.parquet")
    clips.loc[0, "label"] = "unicorn"
    rewrite(folder, "manifest.parquet", clips)


def _event_after_recording(folder: Path):
    events = pd.read_csv(folder / "events.csv")
    events.loc[0, "end"] = 1000.0
    rewrite(folder, "events.csv", events)


def _duplicate_content(folder: Path):
    recordings = pd.read_parquet(folder / "recordings.parquet")
    train = recordings.index[recordings["split"] == "train"]   # same split: no leak, a copy
    recordings.loc[train[1], "sha256"] = recordings.loc[train[0], "sha256"]
    rewrite(folder, "recordings.parquet", recordings)


def _mostly_quarantined(folder: Path):
    recordings = pd.read_parquet(folder / "recordings.parquet")
    recordings.loc[:2, "status"] = "quarantined"
    rewrite(folder, "recordings.parquet", recordings)


def _tampered_shard(folder: Path):
    shard = sorted((folder / "shards").glob("*.video.npy"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))


def _missing_column(folder: Path):
    clips = pd.read_parquet(folder / "manifest.parquet")
    rewrite(folder, "manifest.parquet", clips.drop(columns=["video_motion"]))


CORRUPTIONS = {
    "null statistic": (_null_statistic, {("clips", "audio_logmel_mean not null")},
                       "5 clips have no audio_logmel_mean"),
    "recording in two splits": (_recording_in_two_splits,
                                {("clips", "recording in one split"),
                                 ("clips", "content in one split")},
                                "in more than one split"),
    "silent audio": (_silent_audio, {("clips", "silent share")},
                     "of clips are silent (RMS < -60.0 dBFS), more than 20% allowed"),
    "black video": (_black_video, {("clips", "black share")},
                    "of clips are black (mean brightness < 0.03), more than 20% allowed"),
    "bad event label": (_bad_event_label, {("annotations", "labels known")},
                        "label outside validate.labels (unicorn, line 2)"),
    "bad clip label": (_bad_clip_label, {("clips", "labels known")},
                       "label outside validate.labels (unicorn"),
    "event after recording": (_event_after_recording, {("annotations", "end within recording")},
                              "1 events end after their recording does (line 2)"),
    "duplicate content": (_duplicate_content, {("recordings", "content unique")},
                          "2 ingested recordings have the same content"),
    "too many quarantined": (_mostly_quarantined, {("recordings", "quarantined share")},
                             "60% of recordings are quarantined"),
    "missing column": (_missing_column,
                       {("clips", "columns"), ("clips", "type of video_motion"),
                        ("clips", "video_motion not null"), ("clips", "video_motion finite")},
                       "manifest.parquet lacks columns video_motion"),
    "tampered shard": (_tampered_shard, {("integrity", "files match meta.json")},
                       "000000-000.video.npy (changed)"),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corruption_fails_exactly_its_checks(corruption, synth_dataset: Path, vcfg,
                                             tmp_path: Path):
    corrupt, expected, message = CORRUPTIONS[corruption]
    folder = copy(synth_dataset, tmp_path)
    corrupt(folder)
    result = validate_dataset(folder, tmp_path / "out", vcfg)
    assert not result.passed and not result.warnings
    assert failed(result) == expected
    assert all(c.problem for c in result.failures)
    with pytest.raises(ValidationFailed, match="validation failed for dataset") as error:
        result.raise_for_failures()
    assert message in str(error.value)
    assert "FAILED" in (tmp_path / "out" / "validation.md").read_text()
    assert json.loads((tmp_path / "out" / "validation.json").read_text())["passed"] is False


def test_too_few_clips_fails(synth_dataset: Path, vcfg, tmp_path: Path):
    cfg = dataclasses.replace(vcfg, min_train_clips=10_000, min_test_clips=10_000)
    result = validate_dataset(synth_dataset, tmp_path, cfg)
    assert failed(result) == {("clips", "train clips"), ("clips", "test clips")}
    assert "train clips, at least 10000 needed" in result.failures[0].problem


def test_missing_meta_names_the_fix(synth_dataset: Path, tmp_path: Path, vcfg):
    folder = copy(synth_dataset, tmp_path)
    (folder / "meta.json").unlink()
    with pytest.raises(ValidationFailed, match=r"meta\.json is missing.*re-run `sempair ingest`"):
        validate_dataset(folder, tmp_path / "out", vcfg)


@pytest.mark.slow
def test_drift_warns_by_default_and_fails_when_asked(synth_dataset: Path, vcfg, tmp_path: Path):
    same = validate_dataset(synth_dataset, tmp_path / "same", vcfg, reference=synth_dataset)
    drift = [c for c in same.checks if c.suite == "drift"]
    assert same.passed and not same.warnings and len(drift) == 5
    assert same.reference_id == same.dataset_id
    assert all(c.severity == "warning" and float(c.observed) < vcfg.drift_max_kl for c in drift)

    folder = copy(synth_dataset, tmp_path)
    clips = pd.read_parquet(folder / "manifest.parquet")
    clips["video_brightness"] += 0.3
    rewrite(folder, "manifest.parquet", clips)
    warned = validate_dataset(folder, tmp_path / "warned", vcfg, reference=synth_dataset)
    assert warned.passed
    assert {(c.suite, c.name) for c in warned.warnings} == {("drift", "drift of video_brightness")}
    assert "video_brightness drifted from reference" in warned.warnings[0].problem

    strict = dataclasses.replace(vcfg, drift_fail=True)
    stopped = validate_dataset(folder, tmp_path / "stopped", strict, reference=synth_dataset)
    assert failed(stopped) == {("drift", "drift of video_brightness")}
    assert float(stopped.failures[0].observed) > strict.drift_max_kl
