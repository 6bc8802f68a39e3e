"""`sempair pipeline` for a cluster, checked without one: the compiled DAG is a valid
PipelineSpec with its Kubernetes config, and `submit` / `schedule` send a fake KFP API
server on 127.0.0.1 the requests a real one expects."""

import functools
import json
import os
import time
import uuid

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.cluster import ClusterError, last_submitted, validate_cron
from pipelines.compile import COMPILED
from sempair.cli import main
from sempair.storage import S3Store, source_version
from tests.fake_apis import FakeKFP


@pytest.fixture(autouse=True)
def _no_user_kfp_config(tmp_path, monkeypatch):
    """kfp.Client reads ~/.config/kfp/context.json: keep the tests' HOME empty."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for name in ("2026-11-01T08-00.mp4", "2026-11-01T09-00.mp4", "events.csv"):
        (folder / name).write_bytes(name.encode())
    return folder


@functools.cache
def _compiled() -> tuple[dict, dict]:
    """The checked-in YAML's two documents: the PipelineSpec and its PlatformSpec."""
    spec, platform = yaml.safe_load_all(COMPILED.read_text())
    return spec, platform


def _platform(executor: str) -> dict:
    """One executor's Kubernetes config (kfp-kubernetes)."""
    return _compiled()[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]


def test_compiled_pipeline_parses_as_a_pipeline_spec_and_asks_for_a_gpu(cfg):
    spec, platform = _compiled()
    pipeline = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    assert pipeline.pipeline_info.name == cfg.pipeline.name
    train = pipeline.deployment_spec["executors"]["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert set(pipeline.root.input_definitions.parameters) >= {
        "source", "store", "deploy_target", "data_version", "overrides"}
    gpu = _platform("exec-train")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        gpu["tolerations"]
    assert gpu["emptyDirMounts"][0]["mountPath"] == "/dev/shm"


def test_every_task_reads_the_store_settings_from_the_cluster_and_runs_non_root(cfg):
    for name in _compiled()[0]["deploymentSpec"]["executors"]:
        config = _platform(name)
        [secret] = config["secretAsEnv"]
        assert secret["secretName"] == cfg.pipeline.s3_secret, name
        assert {k["envVar"] for k in secret["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, name
        [settings] = config["configMapAsEnv"]
        assert settings["configMapName"] == cfg.pipeline.settings_config_map, name
        assert {k["envVar"] for k in settings["keyToEnv"]} == {"AWS_ENDPOINT_URL",
                                                                "AWS_REGION"}, name
        assert config["securityContext"]["runAsNonRoot"] is True, name
        assert int(config["securityContext"]["runAsUser"]) == cfg.pipeline.run_as_user, name


def test_submit_sends_the_dag_the_data_version_and_the_parameters(recordings, tmp_path,
                                                                   capsys):
    with FakeKFP() as kfp:
        code = main(["pipeline", "submit", "--host", kfp.url, "--source", str(recordings),
                     "--store", str(tmp_path / "store"), "--set", "train.epochs=3",
                     "--experiment", "retraining"])
        assert code == 0
        [experiment] = kfp.posted("/experiments")
        [run] = kfp.posted("/runs")
    assert experiment["display_name"] == "retraining"
    version = source_version(recordings)
    assert run["runtime_config"]["parameters"] == {
        "source": str(recordings), "store": str(tmp_path / "store"), "reference": "",
        "deploy_target": "kubernetes", "data_version": version,
        "overrides": ["train.epochs=3"]}
    assert run["service_account"] == "sempair-pipeline"
    spec = run["pipeline_spec"]   # the DAG and its Kubernetes config, as compiled
    assert "exec-train" in spec["pipeline_spec"]["deploymentSpec"]["executors"]
    assert "kubernetes" in spec["platform_spec"]["platforms"]
    recorded = last_submitted(str(tmp_path / "store"))
    assert recorded["data_version"] == version
    link = f"{kfp.url}/#/runs/details/{recorded['run_id']}"
    assert recorded["link"] == link
    printed = capsys.readouterr().out
    assert f"data version {version}" in printed
    assert f"submitted run {recorded['run_id']}: {link}" in printed


def test_if_changed_submits_only_when_the_data_changed(s3_env, tmp_path, capsys):
    """The CronJob's path: the source and the record of the last submission on S3."""
    source, store = f"s3://{s3_env}/recordings/", f"s3://{s3_env}"
    bucket = S3Store(s3_env)
    bucket.write_text("recordings/2026-11-01T08-00.mp4", "first")
    command = ["pipeline", "submit", "--source", source, "--store", store, "--if-changed"]
    with FakeKFP() as kfp:
        assert main([*command, "--host", kfp.url]) == 0
        assert main([*command, "--host", kfp.url]) == 0        # nothing new
        assert len(kfp.posted("/runs")) == 1
        assert "nothing submitted: the data is unchanged" in capsys.readouterr().out
        bucket.write_text("recordings/2026-11-02T08-00.mp4", "second")
        assert main([*command, "--host", kfp.url]) == 0
        runs = kfp.posted("/runs")
    assert len(runs) == 2
    versions = [r["runtime_config"]["parameters"]["data_version"] for r in runs]
    assert versions[0] != versions[1] == source_version(source)
    assert last_submitted(store)["run_id"] in capsys.readouterr().out


def test_if_changed_needs_a_store(recordings, capsys):
    with FakeKFP() as kfp:
        code = main(["pipeline", "submit", "--host", kfp.url, "--source", str(recordings),
                     "--if-changed"])
        assert code == 1 and not kfp.requests
    assert "--if-changed needs --store" in capsys.readouterr().err


def test_schedule_creates_the_recurring_run_a_kfp_server_expects(capsys):
    with FakeKFP() as kfp:
        code = main(["pipeline", "schedule", "--host", kfp.url, "--cron", "0 0 3 * * *",
                     "--source", "s3://sempair-recordings/", "--store", "s3://sempair",
                     "--name", "nightly"])
        assert code == 0
        [job] = kfp.posted("/recurringruns")
        [experiment] = kfp.posted("/experiments")
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert job["display_name"] == "nightly" and job["mode"] == "ENABLE"
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True
    assert job["experiment_id"] == experiment.get("experiment_id", job["experiment_id"])
    assert job["service_account"] == "sempair-pipeline"
    assert job["runtime_config"]["parameters"]["source"] == "s3://sempair-recordings/"
    assert job["runtime_config"]["parameters"]["data_version"] == "", \
        "each scheduled run records the data version it ingests"
    assert "nvidia.com/gpu" in json.dumps(job["pipeline_spec"])
    assert f"{kfp.url}/#/recurringrun/details/" in capsys.readouterr().out


@pytest.mark.parametrize("cron", ["0 0 3 * * *", "*/30 * * * * ?", "0 30 */6 * * MON-FRI",
                                  "0 0 0 1,15 JAN-jun ?", "15 5-45/10 1 * 12 0"])
def test_six_field_cron_expressions_are_accepted(cron):
    assert validate_cron(f" {cron} ") == cron


@pytest.mark.parametrize(("cron", "says"), [
    ("0 3 * * *", "5 fields, like crontab.*Prepend the seconds: '0 0 3 \\* \\* \\*'"),
    ("0 0 3 * *  * 2026", "7 fields"),
    ("0 60 * * * *", "minutes field '60'.*outside 0-59"),
    ("0 0 24 * * *", "hours field '24'"),
    ("0 0 3 0 * *", "day of month field '0'.*outside 1-31"),
    ("0 0 3 * 13 *", "outside 1-12 or JAN-DEC"),
    ("0 0 3 * * FUN", "outside 0-6 or SUN-SAT"),
    ("0 */0 * * * *", "step '0'"),
    ("0 45-15 * * * *", "backwards"),
    ("? 0 3 * * *", "seconds field"),
    ("0 1--2 3 * * *", "a range A-B"),
])
def test_bad_cron_expressions_say_what_is_wrong_and_how_to_write_one(cron, says):
    with pytest.raises(ClusterError, match=says) as error:
        validate_cron(cron)
    assert "six fields, seconds first" in str(error.value)


def test_schedule_sends_nothing_for_a_bad_cron_or_host(capsys):
    with FakeKFP() as kfp:
        assert main(["pipeline", "schedule", "--host", kfp.url, "--cron", "0 3 * * *",
                     "--source", "s3://r/"]) == 1
        assert not kfp.requests
    assert "Prepend the seconds" in capsys.readouterr().err
    assert main(["pipeline", "schedule", "--host", "ml-pipeline:8888", "--cron",
                 "0 0 3 * * *", "--source", "s3://r/"]) == 1
    assert "is not a URL" in capsys.readouterr().err


def test_kfp_failures_say_what_to_check(recordings, capsys):
    command = ["pipeline", "submit", "--source", str(recordings), "--host"]
    assert main([*command, "http://127.0.0.1:9"]) == 1
    assert "cannot reach the KFP API at http://127.0.0.1:9" in capsys.readouterr().err
    with FakeKFP(refuse=403) as kfp:
        assert main([*command, kfp.url]) == 1
    assert "answered 403" in (err := capsys.readouterr().err) and "--namespace" in err


def test_data_version_follows_the_source_listing(recordings):
    first = source_version(recordings)
    assert source_version(recordings) == first, "no change, same version"
    path = recordings / "2026-11-01T08-00.mp4"
    path.write_bytes(b"re-encoded")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))
    second = source_version(recordings)
    assert second != first
    (recordings / "2026-11-03T08-00.mp4").write_bytes(b"new")
    assert source_version(recordings) not in (first, second)


def test_buckets_create_is_idempotent(s3_env, capsys):
    name = f"sempair-{uuid.uuid4().hex[:8]}"
    assert main(["buckets", "create", name, s3_env]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == [f"created s3://{name}",
                                                      f"exists  s3://{s3_env}"]
    assert main(["buckets", "create", name]) == 0
    assert f"exists  s3://{name}" in capsys.readouterr().out


def test_pipeline_compile_writes_the_checked_in_yaml(tmp_path, capsys):
    assert main(["pipeline", "compile", "--out", str(tmp_path / "p.yaml")]) == 0
    assert (tmp_path / "p.yaml").read_text() == COMPILED.read_text()


def test_pipeline_run_is_local_only(capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "run", "--synth"])
    assert "add --local" in capsys.readouterr().err
