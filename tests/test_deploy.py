"""The deploy step's pieces: the Kubernetes rollout (against a fake API server on
127.0.0.1 that records what it is sent), the pods' config, the smoke-test media."""

import dataclasses
import hashlib
import json

import pandas as pd
import pytest

from sempair.cli import main
from sempair.serving.archive import config_lines, read_properties, resolve_ports
from sempair.serving.deploy import (
    MODEL_SHA_ANNOTATION,
    MODEL_URI_ANNOTATION,
    DeployError,
    KubeAPI,
    check_target,
    pod_config,
    pull_archive,
    rollout,
    smoke_media,
)
from sempair.storage import publish
from tests.fake_apis import FakeJSONAPI


class FakeKubeAPI(FakeJSONAPI):
    """Answers PATCH on one object (a Deployment unless `collection` says otherwise);
    anything else is 404."""

    def __init__(self, namespace: str, name: str, status: int = 200,
                 collection: str = "apis/apps/v1/namespaces/{ns}/deployments"):
        super().__init__()
        self.known = "/" + collection.format(ns=namespace) + f"/{name}"
        self.status = status

    def answer(self, method, path, query, body):
        status = self.status if (method, path) == ("PATCH", self.known) else 404
        return status, {"kind": "Patched", "patched": status == 200}


def test_rollout_patches_the_pod_template_with_the_archive():
    with FakeKubeAPI("serving", "sempair-torchserve") as api:
        kube = KubeAPI(api.url, "sa-token", "serving")
        answer = rollout(kube, "deployment/sempair-torchserve", "s3://b/models/m/v1/serving",
                         "ab" * 32)
    assert answer["patched"] is True
    [request] = api.requests
    assert request.path == "/apis/apps/v1/namespaces/serving/deployments/sempair-torchserve"
    assert request.headers["Authorization"] == "Bearer sa-token"
    assert request.headers["Content-Type"] == "application/strategic-merge-patch+json"
    annotations = request.body["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {MODEL_URI_ANNOTATION: "s3://b/models/m/v1/serving",
                           MODEL_SHA_ANNOTATION: "ab" * 32}


def test_rollout_errors_name_the_fix():
    missing = pytest.raises(DeployError, match="not found in namespace 'serving'; apply")
    with FakeKubeAPI("serving", "sempair-torchserve") as api, missing:
        rollout(KubeAPI(api.url, "t", "serving"), "deployment/other", "s3://b/x", "0" * 64)
    refused = pytest.raises(DeployError, match="grant the pipeline's service account 'patch'")
    with FakeKubeAPI("serving", "sempair-torchserve", status=403) as api, refused:
        rollout(KubeAPI(api.url, "t", "serving"), "deployment/sempair-torchserve", "s3://b/x",
                "0")
    with pytest.raises(DeployError, match="cannot reach the Kubernetes API"):
        rollout(KubeAPI("http://127.0.0.1:9", "t", "serving"), "deployment/d", "s3://b/x", "0",
                timeout=2)
    with pytest.raises(DeployError, match="write deployment/NAME"):
        rollout(KubeAPI("http://127.0.0.1:9", "t", "serving"), "sempair-torchserve", "s", "0")


def test_rollout_of_a_kserve_inference_service_merges_the_predictor_annotations():
    collection = "apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
    with FakeKubeAPI("sempair", "sempair-av", collection=collection) as api:
        rollout(KubeAPI(api.url, "t", "sempair"), "inferenceservice/sempair-av",
                "s3://b/models/m/v2/serving", "cd" * 32)
    [request] = api.requests
    assert request.path == \
        "/apis/serving.kserve.io/v1beta1/namespaces/sempair/inferenceservices/sempair-av"
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert request.body == {"spec": {"predictor": {"annotations": {
        MODEL_URI_ANNOTATION: "s3://b/models/m/v2/serving", MODEL_SHA_ANNOTATION: "cd" * 32}}}}


def test_in_cluster_settings_are_required_for_the_kubernetes_target(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(DeployError, match="use target 'local' or 'none' outside a cluster"):
        KubeAPI.in_cluster()
    with pytest.raises(DeployError, match="needs a store"):
        check_target("kubernetes", store="")
    with pytest.raises(DeployError, match="unknown deploy target"):
        check_target("docker", store="s3://b")
    assert check_target("local", store="") == "local"


def test_the_pods_config_keeps_every_port_private(tmp_path, cfg):
    """Even with serve.host set to the pod IP, TorchServe listens on loopback only: the
    pod's nginx proxy is the front door (it times out slow clients, TorchServe does not)."""
    anywhere = dataclasses.replace(cfg.serve, host="10.1.2.3")
    path = pod_config(tmp_path, anywhere, name="sempair-av", mar_file="sempair-av.mar")
    props = read_properties(path)
    assert props["inference_address"] == f"http://127.0.0.1:{cfg.serve.inference_port}"
    assert props["management_address"].startswith("http://127.0.0.1:")
    assert props["metrics_address"].startswith("http://127.0.0.1:")
    assert props["enable_model_api"] == "false"
    # replicas cannot share TorchServe's per-process token: the NetworkPolicy guards them
    assert props["disable_token_authorization"] == "true"
    local = config_lines(tmp_path, tmp_path, cfg.serve, model_name="m", mar_file="m.mar",
                         ports=resolve_ports(cfg.serve), version="1.0")
    assert "disable_token_authorization=false" in local, "a local server keeps its token"
    assert props["model_store"] == "/home/model-server/model-store"
    assert props["load_models"] == "sempair-av=sempair-av.mar"


def test_the_smoke_test_uses_a_recording_the_model_never_trained_on(synth_dataset,
                                                                   synth_source, tmp_path):
    media = smoke_media(synth_dataset, str(synth_source), tmp_path)
    table = pd.read_parquet(synth_dataset / "recordings.parquet").set_index("recording")
    recording = media.relative_to(tmp_path).as_posix()
    assert table.loc[recording, "split"] in ("test", "val")
    assert media.read_bytes() == (synth_source / recording).read_bytes()


def _archive_folder(folder, name="sempair-av", content=b"a model archive"):
    """A published serving/ folder as the deploy step leaves it: the .mar and its card."""
    folder.mkdir(parents=True)
    (folder / f"{name}.mar").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    card = {"model": {"name": name}, "archive": {"file": f"{name}.mar", "sha256": digest}}
    (folder / f"{name}.card.json").write_text(json.dumps(card))
    return digest


def test_pull_places_the_verified_archive_in_the_model_store(tmp_path):
    digest = _archive_folder(tmp_path / "serving")
    path = pull_archive(str(tmp_path / "serving"), digest, tmp_path / "store", name="sempair-av")
    assert path == tmp_path / "store" / "sempair-av.mar"
    assert path.read_bytes() == b"a model archive"
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["sempair-av.mar"]


def test_pull_from_s3_through_the_cli(tmp_path, s3_env, monkeypatch):
    digest = _archive_folder(tmp_path / "serving")
    uri = f"s3://{s3_env}/models/sempair-av/v1/serving"
    publish(tmp_path / "serving", uri, marker="sempair-av.card.json")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SEMPAIR_MODEL_URI", uri)        # as the pod's downward API sets them
    monkeypatch.setenv("SEMPAIR_MODEL_SHA256", digest)
    assert main(["serve", "pull", "--out", str(tmp_path / "model-store")]) == 0
    assert (tmp_path / "model-store" / "sempair-av.mar").read_bytes() == b"a model archive"
    assert [p.name for p in (tmp_path / "model-store").iterdir()] == ["sempair-av.mar"], \
        "the download is moved into place, nothing else stays in the model store"


def test_pull_refuses_a_missing_annotation_a_bad_digest_and_a_changed_archive(tmp_path):
    digest = _archive_folder(tmp_path / "serving")
    store, uri = tmp_path / "store", str(tmp_path / "serving")
    with pytest.raises(DeployError, match=r"annotation is empty.*deploy_target=kubernetes"):
        pull_archive("", digest, store, name="sempair-av")
    with pytest.raises(DeployError, match="not a sha256"):
        pull_archive(uri, "abc", store, name="sempair-av")
    with pytest.raises(DeployError, match="point at another version"):
        pull_archive(uri, "0" * 64, store, name="sempair-av")
    (tmp_path / "serving" / "sempair-av.mar").write_bytes(b"tampered")
    with pytest.raises(DeployError, match="archive was changed"):
        pull_archive(uri, digest, store, name="sempair-av")
    assert not store.exists() or not any(store.iterdir()), "nothing half-pulled is left"
