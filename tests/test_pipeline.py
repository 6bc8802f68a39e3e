"""The Kubeflow pipeline: the checked-in YAML is fresh, and the DAG runs locally."""

import json
import os
from pathlib import Path

import yaml

from pipelines.compile import COMPILED, compile_pipeline
from pipelines.local import run_local
from sempair.dataset import read_meta
from tests.conftest import TRAIN_SMALL


def test_checked_in_yaml_is_fresh(tmp_path):
    fresh = compile_pipeline(tmp_path / "pipeline.yaml").read_text()
    assert fresh == COMPILED.read_text(), (
        "pipelines/training_pipeline.yaml is stale: run `make compile` and commit it")


def test_compiled_pipeline_uses_the_project_image_and_no_pip_install(cfg):
    spec = yaml.safe_load(COMPILED.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert executors, "no executors in the compiled pipeline"
    for name, executor in executors.items():
        container = executor["container"]
        expected = cfg.pipeline.train_image if name == "exec-train" else cfg.pipeline.base_image
        assert container["image"] == expected, name
        assert "pip install" not in " ".join(container["command"]), name
    gpu = executors["exec-train"]["container"]["resources"]["accelerator"]
    assert gpu["resourceType"] == "nvidia.com/gpu" and gpu["resourceCount"] == "1"


def test_local_kfp_run_ingests_and_trains(tmp_path, synth_source):
    tmpdir_before = os.environ.get("TMPDIR")
    outputs = run_local(synth_source, tmp_path / "run", ["ingest.workers=1", *TRAIN_SMALL])
    meta = read_meta(outputs["dataset"].path)
    assert outputs["clips"] == meta["counts"]["clips"] > 0
    assert outputs["quarantined"] == 0
    assert outputs["dataset"].metadata["dataset_id"] == meta["dataset_id"]
    assert os.environ.get("TMPDIR") == tmpdir_before      # restored after the run
    model = outputs["model"]
    lineage = json.loads((Path(model.path) / "dataset.json").read_text())
    assert lineage["dataset_id"] == meta["dataset_id"] == model.metadata["dataset_id"]
    assert (Path(model.path) / "model.pt").exists()
