"""The trainer end to end on a small synthetic dataset: modes, outputs, resume, DDP."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sempair import weights
from sempair.config import load_config
from sempair.dataset import read_meta
from sempair.train import TrainingError, train
from tests.conftest import ROOT
from tests.conftest import TRAIN_SMALL as SMALL


def small(*extra):
    return load_config(None, [*SMALL, *extra])


def steps(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [
    ("train.pairing=temporal", "train.loss=infonce", "train.temporal_tolerance=0"),
    ("train.pairing=epg", "train.candidates=dataset"),
    ("train.pairing=epg", "train.candidates=dataset", "train.bank=recompute",
     "train.rule=threshold", "train.threshold=-1.0", "train.refresh_every=2"),
    ("train.pairing=epg", "train.candidates=batch", "train.rule=mutual_knn",
     "train.loss=multipos_logsum", "train.cross_recording_only=true"),
])
def test_each_mode_trains_and_writes_a_model_folder(tmp_path, synth_dataset, extra):
    cfg = small(*extra)
    summary = train(synth_dataset, tmp_path / "model", cfg)
    out = tmp_path / "model"
    assert {"model.pt", "config.json", "dataset.json", "log.jsonl", "checkpoint.pt",
            "summary.json"} <= {p.name for p in out.iterdir()}
    lineage = json.loads((out / "dataset.json").read_text())
    meta = read_meta(synth_dataset)
    assert (lineage["dataset_id"], lineage["checksum"]) == (meta["dataset_id"], meta["checksum"])
    assert json.loads((out / "config.json").read_text()) == cfg.to_dict()
    log = steps(out)
    step_lines = [r for r in log if r["kind"] == "step"]
    assert len(step_lines) == summary.steps > 0
    for key in ("loss", "lr", "positives_per_anchor", "mined_per_anchor", "mined_precision",
                "base_rate", "false_negative_rate"):
        assert key in step_lines[0], key
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in step_lines)
    epochs = [r for r in log if r["kind"] == "epoch"]
    assert [r["epg"] for r in epochs] == [False] + [cfg.train.pairing == "epg"] * 2
    if cfg.train.pairing == "epg":
        assert any(r["mined_per_anchor"] > 0 for r in step_lines if r["epoch"] >= 1)
    else:
        assert all(r["mined_per_anchor"] == 0 for r in step_lines)
    if cfg.train.candidates == "dataset" and cfg.train.pairing == "epg":
        refreshes = [1, 2] if cfg.train.refresh_every == 1 else [1]
        assert [r["epoch"] for r in log if r["kind"] == "mining"] == refreshes
    assert weights.load(out / "model.pt")["features"] == meta["features"]


def test_kill_9_then_resume_gives_the_uninterrupted_losses(tmp_path, synth_dataset):
    epg = ["train.epochs=4", "train.pairing=epg"]     # mined partners and the bank resume too
    args = [f"--set={s}" for s in [*SMALL, *epg]]
    whole = tmp_path / "whole"
    train(synth_dataset, whole, small(*epg))
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "sempair.cli", "train", str(synth_dataset),
                             str(cut), "-q", *args], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not (cut / "log.jsonl").exists() or not any(
            r["kind"] == "step" and r["epoch"] == 2 for r in steps(cut)):
        assert proc.poll() is None and time.monotonic() < deadline, "never reached epoch 3"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert weights.load(cut / "checkpoint.pt")["epoch"] == 2  # lost < 1 epoch
    train(synth_dataset, cut, small(*epg), resume=True)
    losses = lambda out: [(r["step"], r["loss"]) for r in steps(out) if r["kind"] == "step"]  # noqa: E731
    assert losses(cut) == losses(whole)


def test_resume_refuses_another_config_and_fresh_run_refuses_old_output(tmp_path,
                                                                        synth_dataset):
    train(synth_dataset, tmp_path / "m", small("train.epochs=1"))
    with pytest.raises(TrainingError, match=r"config differs \(train.lr\)"):
        train(synth_dataset, tmp_path / "m", small("train.epochs=1", "train.lr=0.1"),
              resume=True)
    with pytest.raises(TrainingError, match="--resume"):
        train(synth_dataset, tmp_path / "m", small("train.epochs=1"))
    # sections that do not shape training (here the evaluation gate) may change
    train(synth_dataset, tmp_path / "m", small("train.epochs=1", "evaluate.gate_macro_f1=0.9"),
          resume=True)


def test_non_finite_loss_stops_with_advice(tmp_path, synth_dataset, monkeypatch):
    import sempair.train as module

    monkeypatch.setattr(module, "av_loss", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(TrainingError, match=r"lower train\.lr"):
        train(synth_dataset, tmp_path / "m", small())


def test_two_process_ddp_with_gloo(tmp_path, synth_dataset):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "sempair.cli", "train", str(synth_dataset), str(out), "-q",
         *[f"--set={s}" for s in [*SMALL, "train.epochs=2"]]],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = steps(out)
    assert log[0]["kind"] == "config" and log[0]["world"] == 2
    step_lines = [r for r in log if r["kind"] == "step"]
    assert [r["step"] for r in step_lines] == list(range(1, len(step_lines) + 1))  # rank 0 only
    assert (out / "model.pt").exists()
    single = train(synth_dataset, tmp_path / "single", small("train.epochs=2"))
    assert len(step_lines) == single.steps          # same global batches


def test_log_is_strict_json_with_the_rate_each_step_used(tmp_path, synth_dataset):
    cfg = small("train.epochs=1")
    train(synth_dataset, tmp_path / "m", cfg)

    def no_nan(name):
        raise AssertionError(f"{name} in log.jsonl is not strict JSON")

    lines = (tmp_path / "m" / "log.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=no_nan) for line in lines]
    first = next(r for r in records if r["kind"] == "step")
    assert first["lr"] == pytest.approx(cfg.train.lr / cfg.train.lr_warmup_steps)
    json.loads((tmp_path / "m" / "summary.json").read_text(), parse_constant=no_nan)


def test_resume_tolerates_a_cut_log_line_and_a_finished_run(tmp_path, synth_dataset):
    cfg = small("train.epochs=2")
    first = train(synth_dataset, tmp_path / "m", cfg)
    summary_file = tmp_path / "m" / "summary.json"
    before = summary_file.read_text()
    with open(tmp_path / "m" / "log.jsonl", "a") as log:
        log.write('{"epoch": 1, "step": 9, "kind": "st')          # killed mid-write
    again = train(synth_dataset, tmp_path / "m", cfg, resume=True)
    assert again.final_loss == pytest.approx(first.final_loss)
    assert summary_file.read_text() == before                    # nothing re-run


def test_supervised_upper_bound_trains_and_refuses_the_one_positive_loss(tmp_path, synth_dataset):
    summary = train(synth_dataset, tmp_path / "sup", small("train.pairing=supervised"))
    assert summary.steps > 0 and math.isfinite(summary.final_loss)
    with pytest.raises(Exception, match="infonce"):
        small("train.pairing=supervised", "train.loss=infonce")
