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


LENIENT_GATE = ["evaluate.gate_macro_f1=0", "evaluate.gate_search_map=0",
                "evaluate.gate_anomaly_auc=-1", "evaluate.map_method=pca"]


def test_local_kfp_run_ingests_trains_evaluates_and_releases(tmp_path, synth_source):
    tmpdir_before = os.environ.get("TMPDIR")
    outputs = run_local(synth_source, tmp_path / "run",
                        ["ingest.workers=1", *TRAIN_SMALL, *LENIENT_GATE])
    meta = read_meta(outputs["dataset"].path)
    assert outputs["clips"] == meta["counts"]["clips"] > 0
    assert outputs["quarantined"] == 0
    assert outputs["dataset"].metadata["dataset_id"] == meta["dataset_id"]
    assert os.environ.get("TMPDIR") == tmpdir_before      # restored after the run
    model = outputs["model"]
    lineage = json.loads((Path(model.path) / "dataset.json").read_text())
    assert lineage["dataset_id"] == meta["dataset_id"] == model.metadata["dataset_id"]
    assert (Path(model.path) / "model.pt").exists()
    evaluation = Path(outputs["evaluation"].path)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert outputs["passed"] is True
    assert "localization_macro_f1" in outputs["evaluation"].metadata["gate"]
    assert 0 <= metrics["localization_accuracy"] <= 1
    released = list((tmp_path / "run" / "kfp").glob("**/release.json"))
    assert len(released) == 1, "the gate passed, so the release step must have run"
    card = json.loads(released[0].read_text())
    assert card["dataset_id"] == meta["dataset_id"] and card["gate"]["passed"]


def test_a_failed_gate_holds_the_release_back(tmp_path, synth_source):
    outputs = run_local(synth_source, tmp_path / "run",
                        ["ingest.workers=1", *TRAIN_SMALL, "evaluate.gate_macro_f1=1.01",
                         "evaluate.map_method=pca"])
    assert outputs["passed"] is False
    assert "FAIL  localization_macro_f1" in outputs["evaluation"].metadata["gate"]
    assert not list((tmp_path / "run" / "kfp").glob("**/release.json"))


def test_compiled_pipeline_gates_the_release_on_the_evaluation(tmp_path):
    spec = yaml.safe_load(COMPILED.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    gate = next(t for name, t in tasks.items() if name.startswith("condition"))
    assert gate["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    assert "evaluate" in gate["dependentTasks"]
    inside = spec["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inside) == {"release"}, "release must run only behind the gate"
