"""The Kubeflow pipeline: the checked-in YAML is fresh, and the DAG runs locally."""

import os

import yaml

from pipelines.compile import COMPILED, compile_pipeline
from pipelines.local import run_local
from sempair.dataset import read_meta


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
        assert container["image"] == cfg.pipeline.base_image, name
        assert "pip install" not in " ".join(container["command"]), name


def test_local_kfp_run_ingests(tmp_path, synth_source):
    tmpdir_before = os.environ.get("TMPDIR")
    outputs = run_local(synth_source, tmp_path / "run", ["ingest.workers=1"])
    meta = read_meta(outputs["dataset"].path)
    assert outputs["clips"] == meta["counts"]["clips"] > 0
    assert outputs["quarantined"] == 0
    assert outputs["dataset"].metadata["dataset_id"] == meta["dataset_id"]
    assert os.environ.get("TMPDIR") == tmpdir_before      # restored after the run
