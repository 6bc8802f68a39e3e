"""Shared fixtures: small synthetic recordings and their ingested dataset, made once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sempair.config import Config, load_config

pytest_plugins = ["tests.s3_server"]

ROOT = Path(__file__).resolve().parents[1]

# a tiny model and schedule: the trainer's real code paths in seconds
TRAIN_SMALL = ["model.audio_widths=[8, 16]", "model.video_widths=[8, 16]", "model.dim=32",
               "train.batch_size=8", "train.epochs=3", "train.steps=0", "train.warmup_epochs=1",
               "train.k=3", "train.lr_warmup_steps=2", "train.threads=1"]


@pytest.fixture(scope="session")
def cfg() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def small_synth(cfg: Config):
    """5 short, low-resolution recordings (3 of them train): fast, every kind of content."""
    return dataclasses.replace(cfg.synth, recordings=5, seconds=12.0, width=96, height=72,
                               fps=10, sample_rate=16000, seed=7)


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory, small_synth) -> Path:
    from sempair.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, small_synth)
    return out


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory, synth_source: Path, cfg: Config) -> Path:
    from sempair.ingest import ingest

    out = tmp_path_factory.mktemp("datasets") / "synth"
    ingest(synth_source, out, cfg, workers=1)
    return out


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, synth_dataset: Path) -> Path:
    """A tiny EPG model trained on `synth_dataset` (seconds)."""
    from sempair.train import train

    out = tmp_path_factory.mktemp("models") / "epg"
    train(synth_dataset, out, load_config(None, [*TRAIN_SMALL, "train.pairing=epg"]))
    return out
