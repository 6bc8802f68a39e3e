"""Weights files are read without running code: a tampered model.pt from a bucket cannot
execute anything, and a damaged one is named."""

import shutil

import pytest
import torch

from sempair import weights
from sempair.cli import main
from sempair.evaluate.embeddings import load_encoders
from sempair.storage import publish


class RunsCode:
    """Unpickling this calls exec(): what a crafted weights file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def tampered_model(small_model, folder, marker):
    """A copy of a real model folder whose model.pt also carries a code-running object."""
    shutil.copytree(small_model, folder)
    saved = torch.load(small_model / "model.pt", weights_only=True)
    torch.save(saved | {"extra": RunsCode(marker)}, folder / "model.pt")
    return folder


def test_a_model_file_that_runs_code_is_refused(small_model, tmp_path):
    marker = tmp_path / "ran"
    folder = tampered_model(small_model, tmp_path / "model", marker)
    with pytest.raises(weights.WeightsError, match="was not loaded"):
        load_encoders(folder)
    assert not marker.exists()
    _, saved = load_encoders(small_model)      # the genuine file still loads
    assert set(saved) >= {"model", "model_config", "features"}


def test_evaluate_from_a_bucket_does_not_run_a_tampered_model(small_model, synth_dataset,
                                                             s3_env, tmp_path, capsys):
    """The reproduction: someone who can write to the bucket publishes a model folder
    (with valid checksums) whose model.pt runs code; `sempair evaluate s3://…` ran it."""
    marker = tmp_path / "ran"
    uri = f"s3://{s3_env}/models/evil"
    publish(tampered_model(small_model, tmp_path / "model", marker), uri,
            marker="model_card.json")
    assert main(["evaluate", uri, str(synth_dataset), str(tmp_path / "eval")]) == 1
    assert "was not loaded" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "eval" / "evaluation.json").exists()


def test_a_truncated_weights_file_is_named(small_model, tmp_path):
    cut = tmp_path / "model.pt"
    cut.write_bytes((small_model / "model.pt").read_bytes()[:500])
    with pytest.raises(weights.WeightsError, match="truncated or corrupt") as error:
        weights.load(cut)
    assert str(cut) in str(error.value)
    with pytest.raises(FileNotFoundError):
        weights.load(tmp_path / "missing.pt")


def test_a_checkpoint_round_trips_through_the_safe_loader(small_model):
    """Resume reads the checkpoint weights-only too: its numpy state is stored as tensors."""
    state = weights.load(small_model / "checkpoint.pt")
    assert state["fresh"].dtype == torch.bool and state["step"] > 0
    assert state["mined"] is None or all(x.dtype == torch.int64 for x in state["mined"])
