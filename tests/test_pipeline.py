"""The Kubeflow pipeline: the checked-in YAML is fresh, and the DAG runs locally."""

import json
import os
from pathlib import Path

import pytest
import yaml

from pipelines.compile import COMPILED, compile_pipeline
from pipelines.local import run_local, serve_dir, stop_serving
from sempair.dataset import read_meta
from tests.conftest import TRAIN_SMALL


def test_checked_in_yaml_is_fresh(tmp_path):
    fresh = compile_pipeline(tmp_path / "pipeline.yaml").read_text()
    assert fresh == COMPILED.read_text(), (
        "pipelines/training_pipeline.yaml is stale: run `make compile` and commit it")


def test_compiled_pipeline_uses_the_project_image_and_no_pip_install(cfg):
    spec, _platform = yaml.safe_load_all(COMPILED.read_text())
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


def test_a_local_run_on_s3_reads_a_bucket_and_publishes_data_and_models(
        tmp_path, synth_source, s3_server, s3_env):
    from sempair.lineage import audit_store
    from sempair.serving.client import predict_file, read_token
    from sempair.serving.server import server_status
    from sempair.storage import upload_dir

    bucket = s3_env
    upload_dir(synth_source, f"s3://{bucket}/recordings", marker=None)
    tmpdir_before = os.environ.get("TMPDIR")
    try:
        outputs = run_local(f"s3://{bucket}/recordings", tmp_path / "run",
                            ["ingest.workers=1", *TRAIN_SMALL, *LENIENT_GATE],
                            store=f"s3://{bucket}", deploy="local")
        served = server_status(serve_dir(tmp_path / "run"))
        assert served and served["healthy"], "the deploy step must leave the model serving"
        smoke = next((tmp_path / "run" / "kfp").glob("**/deploy/smoke"))
        media = next(p for p in smoke.rglob("*") if p.is_file())
        answer = predict_file(media, served["inference_url"],
                              read_token(serve_dir(tmp_path / "run")), served["model"])
        assert answer["clips"] and answer["model"]["version"] == outputs["version"]
    finally:
        stop_serving(tmp_path / "run")
    assert server_status(serve_dir(tmp_path / "run")) is None
    assert os.environ.get("TMPDIR") == tmpdir_before      # restored after the run
    meta = read_meta(outputs["dataset"].path)
    assert outputs["clips"] == meta["counts"]["clips"] > 0
    assert outputs["quarantined"] == 0
    assert meta["source"] == f"s3://{bucket}/recordings"
    assert outputs["dataset"].metadata["dataset_id"] == meta["dataset_id"]

    # validation: a passed report, as an artifact and on the store
    validation = outputs["validation"]
    assert validation.metadata["passed"] is True
    assert (Path(validation.path) / "data_docs" / "index.html").is_file()
    html = list((tmp_path / "run" / "kfp").glob("**/validate/data_docs"))
    assert html and "<html" in html[0].read_text().lower()

    # the store: dataset, validation report, model with its card, release
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(
        Bucket=bucket, MaxKeys=1000)["Contents"]}
    dataset_id, version = meta["dataset_id"], outputs["version"]
    assert f"datasets/{dataset_id}/meta.json" in keys
    assert f"datasets/{dataset_id}/manifest.parquet" in keys
    assert f"validation/{dataset_id}/validation.json" in keys
    model_prefix = f"models/sempair-av/{version}"
    assert {f"{model_prefix}/model.pt", f"{model_prefix}/model_card.json",
            f"{model_prefix}/release/release.json",
            f"{model_prefix}/release/model_card.json",
            f"{model_prefix}/release/serving/bundle.json",
            f"{model_prefix}/serving/sempair-av.mar",
            f"{model_prefix}/serving/sempair-av.card.json",
            f"{model_prefix}/serving/config.properties"} <= keys
    assert outputs["passed"] is True

    card = json.loads((Path(outputs["model"].path) / "model_card.json").read_text())
    assert card["data"]["uri"] == f"s3://{bucket}/datasets/{dataset_id}"
    assert card["validation"]["status"] == "passed"
    [entry] = audit_store(f"s3://{bucket}/models")
    assert (entry.dataset_id, entry.validation, entry.released) == (dataset_id, "passed", True)
    assert entry.uri == f"s3://{bucket}/{model_prefix}"


def test_bad_data_stops_the_run_at_validation(tmp_path, synth_source):
    with pytest.raises(RuntimeError, match="validate"):
        run_local(synth_source, tmp_path / "run",
                  ["ingest.workers=1", *TRAIN_SMALL, "validate.min_train_clips=100000"])
    assert not list((tmp_path / "run" / "kfp").glob("**/train/model/model.pt")), \
        "nothing may train on data that failed validation"
    [report] = (tmp_path / "run" / "kfp").glob("**/validate/validation/validation.json")
    failed = [c for c in json.loads(report.read_text())["checks"] if not c["success"]]
    assert [c["severity"] for c in failed] == ["critical"]
    assert "train" in failed[0]["problem"]


def test_a_failed_gate_holds_the_release_back(tmp_path, synth_source):
    outputs = run_local(synth_source, tmp_path / "run",
                        ["ingest.workers=1", *TRAIN_SMALL, "evaluate.gate_macro_f1=1.01",
                         "evaluate.map_method=pca"])
    assert outputs["passed"] is False
    assert "FAIL  localization_macro_f1" in outputs["evaluation"].metadata["gate"]
    assert not list((tmp_path / "run" / "kfp").glob("**/release.json"))


def test_compiled_pipeline_gates_the_release_on_the_evaluation(tmp_path):
    spec, _platform = yaml.safe_load_all(COMPILED.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    gate = next(t for name, t in tasks.items() if name.startswith("condition"))
    assert gate["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    assert "evaluate" in gate["dependentTasks"]
    inside = spec["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    assert set(inside) == {"release", "deploy"}, "release and deploy run only behind the gate"
    assert inside["deploy"]["dependentTasks"] == ["release"]
