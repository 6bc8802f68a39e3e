"""Lineage: every model's card names its data, validation, config and code; audit reads it."""

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sempair import lineage
from sempair.cli import main as sempair
from sempair.config import load_config
from sempair.dataset import read_meta
from sempair.storage import publish, sha256_file
from sempair.train import train
from sempair.validation import validate_dataset
from tests.conftest import TRAIN_SMALL

ONE_EPOCH = [*TRAIN_SMALL, "train.epochs=1", "train.warmup_epochs=1"]


@pytest.fixture(scope="module")
def validation(tmp_path_factory, synth_dataset, cfg) -> Path:
    out = tmp_path_factory.mktemp("validation")
    small = dataclasses.replace(cfg.validate, min_train_clips=8, min_test_clips=4)
    assert validate_dataset(synth_dataset, out, small).passed
    return out


@pytest.fixture(scope="module")
def validated_model(tmp_path_factory, synth_dataset, validation) -> Path:
    out = tmp_path_factory.mktemp("models") / "validated"
    train(synth_dataset, out, load_config(None, ONE_EPOCH), validation=validation)
    return out


def test_the_card_names_data_validation_config_and_code(validated_model, synth_dataset):
    card = lineage.read_card(validated_model)
    meta = read_meta(synth_dataset)
    assert card["data"]["dataset_id"] == meta["dataset_id"]
    assert card["data"]["checksum"] == meta["checksum"]
    assert card["data"]["source"] == meta["source"]
    assert card["data"]["recordings_digest"] == lineage.recordings_digest(synth_dataset)
    assert card["data"]["dvc"] is None          # the fixture's dataset is not in a DVC project
    assert card["validation"]["status"] == "passed"
    assert card["validation"]["critical_failures"] == []
    assert card["config"] == load_config(None, ONE_EPOCH).to_dict()
    assert card["code"]["sempair"] and card["code"]["git"]["rev"]   # tests run in a checkout
    assert card["metrics"]["train"]["steps"] > 0
    with open(validated_model / "model.pt", "rb") as handle:
        assert card["model"]["sha256"] == sha256_file(handle)
    assert card["model"]["version"].endswith(card["model"]["sha256"][:8])


def test_the_recordings_digest_depends_on_content_only(synth_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(synth_dataset, copy)
    assert lineage.recordings_digest(copy) == lineage.recordings_digest(synth_dataset)
    table = pd.read_parquet(copy / "recordings.parquet")
    ok = table.index[table["status"] != "quarantined"][0]
    table.loc[ok, "sha256"] = "0" * 64
    table.to_parquet(copy / "recordings.parquet", index=False)
    assert lineage.recordings_digest(copy) != lineage.recordings_digest(synth_dataset)


def test_a_validation_of_another_dataset_is_refused_before_training(
        synth_dataset, validation, tmp_path):
    other = tmp_path / "validation.json"
    result = json.loads((validation / "validation.json").read_text())
    other.write_text(json.dumps({**result, "dataset_id": "0123456789ab"}))
    with pytest.raises(lineage.LineageError, match="validated dataset 0123456789ab"):
        train(synth_dataset, tmp_path / "model", load_config(None, ONE_EPOCH),
              validation=other)
    assert not (tmp_path / "model" / "model.pt").exists()


def test_audit_prints_which_data_trained_a_model(validated_model, synth_dataset, capsys):
    assert sempair(["audit", str(validated_model)]) == 0
    out = capsys.readouterr().out
    meta = read_meta(synth_dataset)
    assert f"{meta['dataset_id']} ({meta['checksum']})" in out
    assert "passed (" in out and "not in a DVC project" in out
    assert sempair(["audit", str(validated_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["dataset_id"] == meta["dataset_id"]


def test_audit_of_a_store_flags_models_without_passed_validation(
        validated_model, small_model, tmp_path, capsys):
    store = tmp_path / "store" / "models"
    publish(validated_model, f"{store}/sempair-av/v1", marker=lineage.CARD)
    publish(small_model, f"{store}/sempair-av/v2", marker=lineage.CARD)   # no validation
    entries = lineage.audit_store(str(store))
    assert sorted(e.validation for e in entries) == ["passed", "skipped"]
    assert {e.validation: e.flagged for e in entries} == {"passed": False, "skipped": True}
    assert sempair(["audit", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "SKIPPED" in out and "1 of 2 models were trained on data that failed or skipped" \
        in out


def test_audit_needs_a_model_or_a_store(capsys):
    assert sempair(["audit"]) == 1
    assert "give a MODEL" in capsys.readouterr().err
