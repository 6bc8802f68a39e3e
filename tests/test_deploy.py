"""The deploy step's pieces: the Kubernetes rollout (against a fake API server on
127.0.0.1 that records what it is sent), the pods' config, the smoke-test media."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from sempair.serving.archive import read_properties
from sempair.serving.deploy import (
    MODEL_SHA_ANNOTATION,
    MODEL_URI_ANNOTATION,
    DeployError,
    KubeAPI,
    check_target,
    pod_config,
    rollout,
    smoke_media,
)


class FakeKubeAPI:
    """Answers PATCH on one Deployment; anything else is 404. Records each request."""

    def __init__(self, namespace: str, deployment: str, status: int = 200):
        self.requests: list[dict] = []
        self.known = f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}"
        self.status = status
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_PATCH(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": json.loads(body)})
                status = fake.status if self.path == fake.known else 404
                answer = json.dumps({"kind": "Deployment", "patched": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler


def test_rollout_patches_the_pod_template_with_the_archive():
    with FakeKubeAPI("serving", "sempair-torchserve") as api:
        kube = KubeAPI(api.url, "sa-token", "serving")
        answer = rollout(kube, "sempair-torchserve", "s3://b/models/m/v1/serving", "ab" * 32)
    assert answer["patched"] is True
    [request] = api.requests
    assert request["path"] == "/apis/apps/v1/namespaces/serving/deployments/sempair-torchserve"
    assert request["headers"]["Authorization"] == "Bearer sa-token"
    assert request["headers"]["Content-Type"] == "application/strategic-merge-patch+json"
    annotations = request["body"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {MODEL_URI_ANNOTATION: "s3://b/models/m/v1/serving",
                           MODEL_SHA_ANNOTATION: "ab" * 32}


def test_rollout_errors_name_the_fix():
    missing = pytest.raises(DeployError, match="not found in namespace 'serving'; apply")
    with FakeKubeAPI("serving", "sempair-torchserve") as api, missing:
        rollout(KubeAPI(api.url, "t", "serving"), "other", "s3://b/x", "0" * 64)
    refused = pytest.raises(DeployError, match="grant the pipeline's service account 'patch'")
    with FakeKubeAPI("serving", "sempair-torchserve", status=403) as api, refused:
        rollout(KubeAPI(api.url, "t", "serving"), "sempair-torchserve", "s3://b/x", "0")
    with pytest.raises(DeployError, match="cannot reach the Kubernetes API"):
        rollout(KubeAPI("http://127.0.0.1:9", "t", "serving"), "d", "s3://b/x", "0",
                timeout=2)


def test_in_cluster_settings_are_required_for_the_kubernetes_target(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(DeployError, match="use target 'local' or 'none' outside a cluster"):
        KubeAPI.in_cluster()
    with pytest.raises(DeployError, match="needs a store"):
        check_target("kubernetes", store="")
    with pytest.raises(DeployError, match="unknown deploy target"):
        check_target("docker", store="s3://b")
    assert check_target("local", store="") == "local"


def test_the_pods_config_keeps_management_private_and_tokens_on(tmp_path, cfg):
    path = pod_config(tmp_path, cfg.serve, name="sempair-av", mar_file="sempair-av.mar")
    props = read_properties(path)
    assert props["inference_address"] == f"http://0.0.0.0:{cfg.serve.inference_port}"
    assert props["management_address"].startswith("http://127.0.0.1:")
    assert props["metrics_address"].startswith("http://127.0.0.1:")
    assert props["enable_model_api"] == "false"
    assert props["disable_token_authorization"] == "false"
    assert props["model_store"] == "/home/model-server/model-store"
    assert props["load_models"] == "sempair-av=sempair-av.mar"


def test_the_smoke_test_uses_a_recording_the_model_never_trained_on(synth_dataset,
                                                                   synth_source, tmp_path):
    media = smoke_media(synth_dataset, str(synth_source), tmp_path)
    table = pd.read_parquet(synth_dataset / "recordings.parquet").set_index("recording")
    recording = media.relative_to(tmp_path).as_posix()
    assert table.loc[recording, "split"] in ("test", "val")
    assert media.read_bytes() == (synth_source / recording).read_bytes()
