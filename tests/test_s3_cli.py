"""The CLI on s3:// paths: recordings from a bucket, dataset, report and model into buckets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sempair.cli import main as sempair
from sempair.storage import publish, upload_dir
from tests.conftest import TRAIN_SMALL

SMALL_VALIDATION = ["--set", "validate.min_train_clips=8", "--set", "validate.min_test_clips=4"]


@pytest.mark.slow
def test_ingest_validate_train_and_audit_through_a_bucket(synth_source, s3_server, s3_env,
                                                          capsys):
    bucket = f"s3://{s3_env}"
    upload_dir(synth_source, f"{bucket}/recordings", marker=None)

    assert sempair(["ingest", f"{bucket}/recordings", f"{bucket}/datasets/a", "-q",
                    "--workers", "1"]) == 0
    assert sempair(["validate", f"{bucket}/datasets/a", f"{bucket}/validation/a", "-q",
                    *SMALL_VALIDATION]) == 0
    overrides = [arg for item in TRAIN_SMALL for arg in ("--set", item)]
    assert sempair(["train", f"{bucket}/datasets/a", f"{bucket}/models/m/1", "-q",
                    "--validation", f"{bucket}/validation/a", *overrides]) == 0
    capsys.readouterr()

    client = s3_server.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_env)["Contents"]}
    assert {"datasets/a/meta.json", "datasets/a/events.csv",
            "validation/a/validation.json", "validation/a/data_docs/index.html",
            "models/m/1/model.pt", "models/m/1/model_card.json"} <= keys
    card = json.loads(client.get_object(Bucket=s3_env, Key="models/m/1/model_card.json")
                      ["Body"].read())
    assert card["data"]["uri"] == f"{bucket}/datasets/a"
    assert card["data"]["source"] == f"{bucket}/recordings"
    assert card["validation"]["status"] == "passed"
    # recordings were downloaded one at a time for decoding and deleted afterwards
    cache = os.environ["XDG_CACHE_HOME"]
    assert not [f for _, _, files in os.walk(cache) for f in files if f.endswith(".mp4")]

    assert sempair(["audit", "--store", f"{bucket}/models"]) == 0
    out = capsys.readouterr().out
    assert card["data"]["dataset_id"] in out and "passed" in out
    assert "failed or skipped" not in out


def test_a_missing_bucket_is_a_clear_cli_error(s3_env, tmp_path, capsys):
    assert sempair(["validate", "s3://no-such-bucket-here/datasets/a", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no-such-bucket-here" in err and "does not exist" in err


@pytest.mark.slow
def test_torchrun_trains_from_a_bucket_and_rank_0_alone_publishes(synth_dataset, s3_env,
                                                                  s3_server):
    """The PyTorchJob's command (k8s/overlays/train-ddp): two processes fetch the dataset
    into one cache (taking turns) and only rank 0 publishes the model."""
    bucket = f"s3://{s3_env}"
    publish(synth_dataset, f"{bucket}/datasets/d", marker="meta.json")
    overrides = [f"--set={s}" for s in [*TRAIN_SMALL, "train.epochs=1"]]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "sempair.cli", "train", f"{bucket}/datasets/d", f"{bucket}/models/ddp", "-q",
         *overrides], cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"published {bucket}/models/ddp") == 1, result.stdout
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket=s3_env, Prefix="models/ddp/")["Contents"]}
    assert {"models/ddp/model.pt", "models/ddp/model_card.json"} <= keys
    config = json.loads(s3_server.client().get_object(
        Bucket=s3_env, Key="models/ddp/log.jsonl")["Body"].read().splitlines()[0])
    assert config["world"] == 2


def test_every_command_checks_an_s3_destination_before_working(synth_source, s3_env,
                                                               monkeypatch, capsys):
    """A missing output bucket is named before any decoding (not after hours of it)."""
    from sempair import ingest

    def decode(*args, **kwargs):
        raise AssertionError("decoding started before the destination was checked")

    monkeypatch.setattr(ingest, "_run_workers", decode)
    assert sempair(["ingest", str(synth_source), f"s3://{s3_env}-missing/datasets/a",
                    "-q", "--workers", "1"]) == 1
    assert f"bucket '{s3_env}-missing' does not exist" in capsys.readouterr().err
