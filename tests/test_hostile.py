"""Ingest against hostile sources: file-system oddities and malformed media.

Every odd entry ends `quarantined` (or `partial`/`ok`) with a reason that names the
problem, never a traceback, and every good recording is still ingested.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import sempair.ingest as ingest_module
from sempair.dataset import read_meta
from sempair.ingest import ingest
from sempair.storage import listing_version, open_source
from tests.conftest import ROOT
from tests.media_helpers import flash_and_click


def _latin1(src, good, outside):
    with open(os.path.join(os.fsencode(src), b"caf\xe9.mp4"), "wb") as handle:   # not UTF-8
        handle.write(good.read_bytes())


ODDITIES = {   # id -> (how to make it in (src, good mp4, outside folder), status, reason words)
    "loop.mp4": (lambda s, g, o: (s / "loop.mp4").symlink_to("loop.mp4"),
                 "quarantined", "symlink loop"),
    "dangling.mp4": (lambda s, g, o: (s / "dangling.mp4").symlink_to("nowhere.mp4"),
                     "quarantined", "dangling symlink to nowhere.mp4"),
    "escape.mp4": (lambda s, g, o: (s / "escape.mp4").symlink_to(o / "secret.mp4"),
                   "quarantined", "outside the source"),
    "elsewhere/": (lambda s, g, o: (s / "elsewhere").symlink_to(o, target_is_directory=True),
                   "quarantined", "outside the source"),
    "pipe.mp4": (lambda s, g, o: os.mkfifo(s / "pipe.mp4"), "quarantined", "named pipe (FIFO)"),
    "caf\\xe9.mp4": (_latin1, "quarantined", "not valid UTF-8"),
    "empty.mp4": (lambda s, g, o: (s / "empty.mp4").write_bytes(b""),
                  "quarantined", "empty file"),
    "garbage.mp4": (lambda s, g, o: (s / "garbage.mp4").write_bytes(
        np.random.default_rng(0).bytes(20_000)), "quarantined", "not a media file"),
    "half.mp4": (lambda s, g, o: (s / "half.mp4").write_bytes(
        g.read_bytes()[:g.stat().st_size // 2]), "partial", "truncated"),   # prefix kept
    "vanishing.mp4": (lambda s, g, o: shutil.copy(g, s / "vanishing.mp4"),   # see _vanish
                      "quarantined", "vanished from the source after it was listed"),
}
GOOD = ["cam0.mp4", "cam1.mp4", "folder.mp4/inside.mp4"]   # the last: a folder named .mp4


def _recording(path, seconds=3.0):
    return flash_and_click(path, seconds=seconds, fps=10, sample_rate=16000, channels=1,
                           size=(96, 72))


@pytest.fixture(scope="module")
def good_mp4(tmp_path_factory):
    return _recording(tmp_path_factory.mktemp("good") / "good.mp4")


def _source(folder, good_mp4, oddities):
    """Good recordings among the `oddities` (names of ODDITIES) in `folder`/src."""
    src, outside = folder / "src", folder / "outside"
    for name in GOOD:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(good_mp4, src / name)
    (src / "cam1.mp4").write_bytes(good_mp4.read_bytes() + b"\0")   # another sha256
    outside.mkdir()
    shutil.copy(good_mp4, outside / "secret.mp4")
    for name in oddities:
        ODDITIES[name][0](src, good_mp4, outside)
    (src / "empty-folder.mkv").mkdir()          # a folder named like a video: walked into
    (src / "notes.txt").symlink_to("gone.txt")  # a broken non-media entry: named, ignored
    return src


def _vanish(monkeypatch, path):
    """Delete `path` between ingest's listing and its decoding, deterministically."""
    run_workers = ingest_module._run_workers

    def vanish_after_listing(*args, **kwargs):
        path.unlink()
        return run_workers(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "_run_workers", vanish_after_listing)


def test_listing_names_each_oddity_and_opens_none(tmp_path, good_mp4):
    files = {f.id: f for f in open_source(_source(tmp_path, good_mp4, ODDITIES)).list()}
    for name, (_, _, words) in ODDITIES.items():
        if name in ("empty.mp4", "garbage.mp4", "half.mp4", "vanishing.mp4"):
            assert not files[name].problem      # the decoder's business, not the listing's
        else:
            assert words in files[name].problem, (name, files[name].problem)
    for name in GOOD:
        assert not files[name].problem
    assert "secret.mp4" not in "".join(files)                 # never followed out
    assert listing_version(list(files.values())).startswith("sha256:")   # storable ids


@pytest.mark.parametrize("oddity", list(ODDITIES))
def test_an_oddity_is_quarantined_with_its_reason_and_the_rest_ingested(
        tmp_path, good_mp4, cfg, monkeypatch, oddity):
    src = _source(tmp_path, good_mp4, [oddity])
    if oddity == "vanishing.mp4":
        _vanish(monkeypatch, src / oddity)
    summary = ingest(src, tmp_path / "out", cfg, workers=1)
    recordings = pd.read_parquet(tmp_path / "out" / "recordings.parquet").set_index("recording")
    _, status, words = ODDITIES[oddity]
    assert recordings.loc[oddity, "status"] == status, recordings.loc[oddity, "error"]
    assert words in recordings.loc[oddity, "error"], recordings.loc[oddity, "error"]
    assert "unexpected failure" not in recordings.loc[oddity, "error"]
    assert (recordings.loc[GOOD, "status"] == "ok").all()
    assert set(recordings.index) == {oddity, *GOOD}
    assert "notes.txt" in summary.ignored
    assert str(summary) and summary.markdown()   # printable: no surrogate left in any name


@pytest.mark.slow
def test_cli_with_workers_survives_a_hostile_source(tmp_path, good_mp4):
    """The real command, 2 worker processes, every oddity at once: exit 0, no traceback,
    the FIFO never opened (opening it would block the run forever)."""
    src = _source(tmp_path, good_mp4, [name for name in ODDITIES if name != "vanishing.mp4"])
    run = subprocess.run([sys.executable, "-m", "sempair.cli", "ingest", str(src),
                          str(tmp_path / "out"), "--workers", "2", "-q"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert "named pipe (FIFO)" in run.stdout and "outside the source" in run.stdout
    assert read_meta(tmp_path / "out")["counts"]["ok"] == len(GOOD)


# -- malformed media: a bounded, seeded fuzz ----------------------------------------------

FUZZ_CASES = 30


def _mutations(data: bytes, seed: int, cases: int) -> list[tuple[str, bytes]]:
    """(name, bytes): seeded flips, cuts, overwritten runs, zeroed and shuffled blocks."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(cases):
        damaged = bytearray(data)
        kind = ("flip", "cut", "overwrite", "zero", "swap")[i % 5]
        if kind == "flip":
            for at in rng.integers(0, len(damaged), 40):
                damaged[at] ^= 1 << int(rng.integers(0, 8))
        elif kind == "cut":
            damaged = damaged[:int(rng.integers(1, len(damaged)))]
        elif kind in ("overwrite", "zero"):
            at, length = int(rng.integers(0, len(damaged))), int(rng.integers(16, 4096))
            length = min(length, len(damaged) - at)
            damaged[at:at + length] = (rng.bytes(length) if kind == "overwrite"
                                       else bytes(length))
        else:
            a, b = sorted(int(x) for x in rng.integers(0, len(damaged) - 512, 2))
            damaged[a:a + 512], damaged[b:b + 512] = damaged[b:b + 512], damaged[a:a + 512]
        out.append((f"fuzz-{i:02d}-{kind}.mp4", bytes(damaged)))
    return out


def test_fuzzed_media_is_quarantined_or_kept_never_a_crash(tmp_path, good_mp4, cfg):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(good_mp4, src / "good.mp4")
    cases = _mutations(good_mp4.read_bytes(), seed=13, cases=FUZZ_CASES)
    for name, data in cases:
        (src / name).write_bytes(data)
    summary = ingest(src, tmp_path / "out", cfg, workers=1)
    recordings = pd.read_parquet(tmp_path / "out" / "recordings.parquet").set_index("recording")
    assert len(recordings) == FUZZ_CASES + 1
    assert recordings.loc["good.mp4", "status"] == "ok"
    assert set(recordings["status"]) <= {"ok", "partial", "quarantined"}
    bad = recordings[recordings["status"] != "ok"]
    assert (bad["error"].str.len() > 20).all(), bad["error"]
    assert not bad["error"].str.contains("unexpected failure|Traceback").any(), bad["error"]
    assert (recordings.loc[recordings["status"] == "quarantined", "clips"] == 0).all()
    assert summary.clips == recordings["clips"].sum()


@pytest.mark.slow
def test_damaged_media_gives_the_same_dataset_whatever_the_workers(tmp_path, good_mp4, cfg):
    """Issue 13 item 14: frame-threaded decoding (1 worker) reported damage differently
    from single-threaded decoding (2+ workers), so the dataset id changed with --workers."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(good_mp4, src / "good.mp4")
    for name, data in _mutations(good_mp4.read_bytes(), seed=5, cases=10):
        if "overwrite" in name or "zero" in name:     # damage inside: decoding copes
            (src / name).write_bytes(data)
    one = ingest(src, tmp_path / "one", cfg, workers=1)
    two = ingest(src, tmp_path / "two", cfg, workers=2)
    a = pd.read_parquet(tmp_path / "one" / "recordings.parquet")
    b = pd.read_parquet(tmp_path / "two" / "recordings.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert one.dataset_id == two.dataset_id


def test_hostile_object_keys_in_an_s3_source_are_quarantined_never_read(
        tmp_path, good_mp4, cfg, s3_env, s3_server):
    """Keys are chosen by whoever writes to the bucket: one that names no clean relative
    path is reported with its reason and never downloaded; the good recording is ingested."""
    client = s3_server.client()
    client.put_object(Bucket=s3_env, Key="raw/cam0.mp4", Body=good_mp4.read_bytes())
    hostile = {"/abs.mp4", "a//b.mp4", "../up.mp4", "sub/./dot.mp4", "back\\slash.mp4"}
    for key in hostile:
        client.put_object(Bucket=s3_env, Key=f"raw/{key}", Body=good_mp4.read_bytes())
    assert {f.id for f in open_source(f"s3://{s3_env}/raw").list() if f.problem} == hostile

    ingest(f"s3://{s3_env}/raw", tmp_path / "ds", cfg, workers=1)
    rows = pd.read_parquet(tmp_path / "ds" / "recordings.parquet").set_index("recording")
    assert rows.loc["cam0.mp4", "status"] == "ok"
    assert set(rows.index) == hostile | {"cam0.mp4"}
    for key in hostile:
        assert rows.loc[key, "status"] == "quarantined"
        assert "not a clean relative path" in rows.loc[key, "error"]
    assert not list(tmp_path.rglob("*up.mp4")) and not os.path.exists("/abs.mp4")
