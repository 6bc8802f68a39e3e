"""Ingest: bad files quarantined with reasons, nothing lost, atomic, reproducible, bounded."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from sempair.annotations import read_events
from sempair.dataset import DatasetError, read_meta
from sempair.ingest import IngestError, _run_workers, assign_splits, ingest
from sempair.storage import SourceFile, StorageError, check_destination
from sempair.synth import write_bad_files
from tests.conftest import ROOT
from tests.media_helpers import flash_and_click

REASONS = {  # bad-file kind -> (status, words the reason must contain)
    "empty": ("quarantined", "empty file"),
    "garbage": ("quarantined", "not a media file"),
    "not_a_video": ("quarantined", "a text file"),
    "no_audio": ("quarantined", "no audio stream"),
    "no_video": ("quarantined", "no video stream"),
    "truncated_noindex": ("quarantined", "moov"),
    "truncated": ("partial", "truncated"),
}


@pytest.fixture(scope="module")
def mixed_source(tmp_path_factory, synth_source):
    """Synthetic recordings + one broken file of every kind + other rates and containers."""
    src = tmp_path_factory.mktemp("mixed")
    shutil.copytree(synth_source, src, dirs_exist_ok=True)
    kinds = write_bad_files(src / "bad", seed=1)
    flash_and_click(src / "other" / "wide.mkv", seconds=5.0, fps=30, sample_rate=48000,
                    channels=2, size=(320, 180))
    flash_and_click(src / "other" / "tiny.avi", seconds=3.0, fps=10, sample_rate=11025,
                    channels=1, size=(64, 48), video_codec="mpeg4", audio_codec="pcm_s16le")
    (src / "notes.txt").write_text("not a recording\n")
    return src, {f"bad/{name}": kind for name, kind in kinds.items()}


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory, mixed_source, cfg):
    src, _ = mixed_source
    out = tmp_path_factory.mktemp("out") / "mixed"
    summary = ingest(src, out, cfg, workers=2)
    return out, summary


def test_every_bad_file_is_quarantined_with_its_reason(mixed_source, mixed_dataset):
    _, kinds = mixed_source
    out, summary = mixed_dataset
    recordings = pd.read_parquet(out / "recordings.parquet").set_index("recording")
    for name, kind in kinds.items():
        status, words = REASONS[kind]
        assert recordings.loc[name, "status"] == status, (name, recordings.loc[name, "error"])
        assert words in recordings.loc[name, "error"], recordings.loc[name, "error"]
    (truncated,) = [name for name, kind in kinds.items() if kind == "truncated"]
    assert recordings.loc[truncated, "clips"] > 0      # the decodable prefix is kept
    assert {rec for rec, _ in summary.quarantined} == {
        name for name, kind in kinds.items() if REASONS[kind][0] == "quarantined"}
    assert summary.ignored == ["notes.txt", "scenes.json"]   # named, not dropped
    assert "quarantined" in str(summary) and "no audio stream" in str(summary)


def test_nothing_is_lost(mixed_source, mixed_dataset):
    src, _ = mixed_source
    out, _ = mixed_dataset
    recordings = pd.read_parquet(out / "recordings.parquet")
    media = sorted(p.relative_to(src).as_posix() for p in src.rglob("*")
                   if p.is_file() and p.suffix in {".mp4", ".mkv", ".avi", ".m4a", ".wav"})
    assert sorted(recordings["recording"]) == media
    manifest = pd.read_parquet(out / "manifest.parquet")
    good = recordings[recordings["status"] == "ok"]
    for row in good.itertuples():   # a whole recording gives floor(duration / clip) clips
        assert row.clips == int(row.duration + 1e-6), row
        assert (manifest["recording"] == row.recording).sum() == row.clips
    assert recordings.set_index("recording").loc["other/wide.mkv", "channels"] == 2
    assert manifest["index"].tolist() == list(range(len(manifest)))
    assert manifest["clip_id"].is_unique


def test_splits_are_by_recording(mixed_dataset):
    out, _ = mixed_dataset
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert (manifest.groupby("recording")["split"].nunique() == 1).all()
    assert set(manifest["split"]) == {"train", "val", "test"}
    meta = read_meta(out)
    assert sum(meta["counts"]["splits"].values()) == len(manifest)


def test_split_assignment_is_deterministic_and_complete(cfg):
    names = [f"cam{i:02d}.mp4" for i in range(20)]
    first = assign_splits(names, cfg.ingest)
    assert first == assign_splits(list(reversed(names)), cfg.ingest)
    counts = pd.Series(first).value_counts()
    assert counts["test"] == 4 and counts["val"] == 3 and counts["train"] == 13
    assert set(assign_splits(names[:3], cfg.ingest).values()) == {"train", "val", "test"}
    assert assign_splits(names[:1], cfg.ingest) == {"cam00.mp4": "train"}


def test_labels_come_from_events_csv(synth_source, synth_dataset):
    manifest = pd.read_parquet(synth_dataset / "manifest.parquet")
    events = read_events(synth_source / "events.csv")
    av = set(events.loc[events["modality"] == "audiovisual", "label"])
    assert set(manifest["label"]) <= av | {"background"}
    assert 0.05 < (manifest["label"] != "background").mean() < 0.95
    assert read_meta(synth_dataset)["labels"] == sorted(manifest["label"].unique())


def test_reingest_gives_identical_dataset(tmp_path, synth_source, synth_dataset, cfg):
    again = ingest(synth_source, tmp_path / "again", cfg, workers=2)
    assert again.dataset_id == read_meta(synth_dataset)["dataset_id"]
    for name in ["manifest.parquet", "recordings.parquet", "meta.json"]:
        a, b = (synth_dataset / name).read_bytes(), (tmp_path / "again" / name).read_bytes()
        if name == "meta.json":    # the same but for the source path
            a, b = a.replace(str(synth_source).encode(), b""), b
            b = b.replace(str(synth_source).encode(), b"")
        assert a == b, name
    for shard in (synth_dataset / "shards").iterdir():
        assert shard.read_bytes() == (tmp_path / "again" / "shards" / shard.name).read_bytes()


def test_existing_output_needs_overwrite(tmp_path, synth_source, cfg):
    (tmp_path / "out").mkdir()
    with pytest.raises(IngestError, match="--overwrite"):
        ingest(synth_source, tmp_path / "out", cfg, workers=1)


def test_nothing_ingestible_fails_listing_each_file(tmp_path, cfg):
    write_bad_files(tmp_path / "src", seed=0)
    truncated = [p for p in (tmp_path / "src").iterdir() if p.name.startswith("truncated.")]
    for path in truncated:
        path.unlink()      # its prefix would be ingestible
    with pytest.raises(IngestError, match=r"nothing in .* could be ingested") as error:
        ingest(tmp_path / "src", tmp_path / "out", cfg, workers=1)
    assert "empty file" in str(error.value) and "no audio stream" in str(error.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_failure_midway_leaves_no_dataset(tmp_path, synth_source, cfg, monkeypatch):
    import sempair.ingest as module

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "_write_tables", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(synth_source, tmp_path / "out", cfg, workers=1)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_kill_9_midway_leaves_no_dataset_and_is_cleaned_next_time(tmp_path, cfg):
    src = tmp_path / "src"
    for i in range(4):
        flash_and_click(src / f"cam{i}.mp4", seconds=20.0, fps=15, sample_rate=16000,
                        channels=1)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "sempair.cli", "ingest", str(src), str(out),
                             "--workers", "1", "-q"], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*/shards/*.npy")):
        assert proc.poll() is None and time.monotonic() < deadline, "ingest never started"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    (partial,) = tmp_path.glob(".out.partial-*")
    with pytest.raises(DatasetError, match="unfinished ingest"):
        read_meta(partial)
    ingest(src, out, cfg, workers=1)
    assert read_meta(out)["counts"]["clips"] == 80
    assert not list(tmp_path.glob(".out.partial-*"))


def _peak_rss_mb(path) -> float:
    code = ("import resource, sys\n"
            "from sempair.config import load_config\n"
            "from sempair.ingest import ingest\n"
            f"ingest({str(path)!r}, {str(path)!r} + '.ds', load_config(), workers=1)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return int(out.stdout.split()[-1]) / 1024


def test_memory_is_bounded_whatever_the_length(tmp_path):
    def recording(folder, seconds):
        return flash_and_click(tmp_path / folder / "cam.mp4", seconds=seconds, fps=10,
                               sample_rate=16000, channels=1, size=(96, 72))

    # both past the allocator's warm-up (a few batches of 16 clips), so both reach the steady state
    short_mb = _peak_rss_mb(recording("short", 80).parent)
    long_mb = _peak_rss_mb(recording("long", 400).parent)
    # 5× the media and 5× the output (32 MB more), none of which may be held in memory
    print(f"peak RSS: 80 s -> {short_mb:.0f} MB, 400 s -> {long_mb:.0f} MB")
    assert long_mb < short_mb + 10, (short_mb, long_mb)


def test_clip_statistics_are_finite(synth_dataset):
    manifest = pd.read_parquet(synth_dataset / "manifest.parquet")
    stats = [c for c in manifest.columns if c.startswith(("audio_", "video_"))]
    assert len(stats) == 5
    assert np.isfinite(manifest[stats].to_numpy()).all()


def test_identical_copies_share_a_split(tmp_path, synth_source, cfg):
    src = tmp_path / "src"
    shutil.copytree(synth_source, src)
    for original in sorted(src.rglob("*.mp4")):
        shutil.copy(original, src / f"backup-{original.name}")   # same bytes, other path
    ingest(src, tmp_path / "out", cfg, workers=1)
    recordings = pd.read_parquet(tmp_path / "out" / "recordings.parquet")
    assert (recordings.groupby("sha256")["split"].nunique() == 1).all()
    assert set(recordings["split"]) == {"train", "val", "test"}


# -- hostile runs: kill -9, a lost store, a missing destination (issue 13) -----------------

def _descendants_alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waiting for its reaper counts as gone)."""
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow
def test_kill_9_of_a_parallel_ingest_leaves_no_process_behind(tmp_path):
    """Its workers, the forkserver and the resource tracker (about 890 MB) used to live on
    forever, workers waiting for jobs from a dead parent."""
    src = tmp_path / "src"
    for i in range(4):
        flash_and_click(src / f"cam{i}.mp4", seconds=20.0, fps=15, sample_rate=16000,
                        channels=1)
    proc = subprocess.Popen([sys.executable, "-m", "sempair.cli", "ingest", str(src),
                             str(tmp_path / "out"), "--workers", "2", "-q"], cwd=ROOT)
    parent, deadline = psutil.Process(proc.pid), time.monotonic() + 60
    while len(family := parent.children(recursive=True)) < 4:   # server, tracker, 2 workers
        assert proc.poll() is None and time.monotonic() < deadline, "workers never started"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20   # a bound, not a measurement: they go in well under 1 s
    while (alive := _descendants_alive(family)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [f"{p.pid}: {p.name()}" for p in alive]
    for process in alive:              # clean up before failing
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    assert not survivors


def _store_lost_on_first(job):
    """A stand-in job for `_run_workers`: the first one loses the object store at once, the
    others take a while and leave a mark when they finish."""
    if job.index == 0:
        raise StorageError("cannot reach the object store at http://127.0.0.1:9 (test)")
    time.sleep(5)
    (Path(job.shard_dir) / f"finished-{job.index}").touch()


def test_the_first_store_failure_stops_every_worker(tmp_path, cfg):
    """With 2 workers, losing the store used to take 112 s: every queued job ran (and
    retried) before the failure was raised. Now the rest are cancelled or killed."""
    media = [SourceFile(f"cam{i}.mp4", 1) for i in range(6)]
    with pytest.raises(StorageError, match="cannot reach the object store"):
        _run_workers(str(tmp_path), media, tmp_path / "shards", cfg, 2, False,
                     task=_store_lost_on_first)
    time.sleep(0.5)    # a killed job could not write its mark anyway; a live one might
    assert not list((tmp_path / "shards").glob("finished-*"))


def test_check_destination_names_a_missing_bucket(tmp_path, s3_env):
    """Every command's s3:// output is checked before its work (tests/test_s3_cli.py
    shows ingest failing before any decoding)."""
    with pytest.raises(StorageError, match="does not exist"):
        check_destination(f"s3://{s3_env}-missing/datasets/a")
    check_destination(f"s3://{s3_env}/datasets/a")     # an existing bucket passes
    check_destination(str(tmp_path / "local"))          # a local folder needs no check
