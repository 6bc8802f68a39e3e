"""Deploy a release: its TorchServe archive into the model store, then live.

    archive   build_archive(RELEASE/serving) -> <name>.mar + <name>.card.json (sha256)
    store     STORE/models/<name>/<version>/serving/  (the .mar, its card, config.properties)
    target    "kubernetes": roll the TorchServe Deployment to the new archive
              "local":      start TorchServe here and send it one real request
              "none":       stop after the store

On a cluster the rollout is one strategic-merge PATCH of the Deployment's pod template
annotations (`sempair.dev/model-uri`, `sempair.dev/model-sha256`). The serving pods read
the URI through the downward API and pull the archive before TorchServe starts (k8s/), and
the changed template makes Kubernetes replace them one by one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sempair import SempairError
from sempair.config import ServeConfig
from sempair.lineage import model_uri
from sempair.serving.archive import config_lines, resolve_ports
from sempair.storage import open_source, publish

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MODEL_URI_ANNOTATION = "sempair.dev/model-uri"
MODEL_SHA_ANNOTATION = "sempair.dev/model-sha256"
TARGETS = ("local", "kubernetes", "none")
POD_HOME = Path("/home/model-server")          # the serving image's TorchServe folder (k8s/)
POD_MODEL_STORE = POD_HOME / "model-store"


class DeployError(SempairError):
    """A deployment that could not happen; the message names the fix."""


@dataclass(frozen=True)
class KubeAPI:
    """Where and how to reach the Kubernetes API: in a pod, from its service account."""
    url: str                  # https://10.0.0.1:443
    token: str
    namespace: str
    ca_file: str | None = None

    @classmethod
    def in_cluster(cls, namespace: str = "") -> KubeAPI:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
            "KUBERNETES_SERVICE_PORT", "443")
        token = SERVICE_ACCOUNT / "token"
        if not host or not token.is_file():
            raise DeployError("deploy target 'kubernetes' needs to run in a pod with a service "
                              "account (KUBERNETES_SERVICE_HOST and its token are missing); "
                              "use target 'local' or 'none' outside a cluster")
        own = SERVICE_ACCOUNT / "namespace"
        return cls(f"https://{host}:{port}", token.read_text().strip(),
                   namespace or (own.read_text().strip() if own.is_file() else "default"),
                   str(SERVICE_ACCOUNT / "ca.crt"))


def publish_archive(archive_dir: str | Path, store: str, name: str, version: str) -> str:
    """Copy the archive folder (.mar, card, config) to STORE/models/<name>/<version>/serving;
    the card goes last, so a reader never sees an archive without its checksum."""
    uri = model_uri(store, name, version, "serving")
    return publish(archive_dir, uri, marker=f"{name}.card.json")


def rollout(api: KubeAPI, deployment: str, model_uri: str, sha256: str,
            timeout: float = 30.0) -> dict:
    """Point the Deployment's pods at the archive at `model_uri`; returns the patched object."""
    path = f"/apis/apps/v1/namespaces/{api.namespace}/deployments/{deployment}"
    patch = {"spec": {"template": {"metadata": {"annotations": {
        MODEL_URI_ANNOTATION: model_uri, MODEL_SHA_ANNOTATION: sha256}}}}}
    request = urllib.request.Request(
        api.url + path, data=json.dumps(patch).encode(), method="PATCH",
        headers={"Authorization": f"Bearer {api.token}", "Accept": "application/json",
                 "Content-Type": "application/strategic-merge-patch+json"})
    context = ssl.create_default_context(cafile=api.ca_file) if api.url.startswith(
        "https") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise DeployError(_explain(error, deployment, api.namespace)) from None
    except urllib.error.URLError as error:
        raise DeployError(f"cannot reach the Kubernetes API at {api.url}: {error.reason}; "
                          "check the cluster's network policy for the API server") from None


def _explain(error: urllib.error.HTTPError, deployment: str, namespace: str) -> str:
    detail = error.read().decode(errors="replace")[:300]
    if error.code == 404:
        return (f"Deployment {deployment!r} not found in namespace {namespace!r}; apply the "
                "serving manifests (k8s/) first or set serve.kube_deployment")
    if error.code in (401, 403):
        return (f"the Kubernetes API refused to patch deployments/{deployment} in "
                f"{namespace!r} ({error.code}); grant the pipeline's service account "
                f"'patch' on deployments there (k8s/ RBAC). {detail}")
    return f"patching deployments/{deployment} failed ({error.code}): {detail}"


def smoke_test(url: str, token: str, model: str, media: Path) -> dict:
    """One real prediction request; raises DeployError unless it answers with clips."""
    from sempair.serving.client import predict_file

    try:
        result = predict_file(media, url, token, model)
    except SempairError as error:
        raise DeployError(f"the served model failed its smoke test on {media.name}: "
                          f"{error}") from None
    if not result.get("clips"):
        raise DeployError(f"the served model answered {media.name} without clips: {result}")
    return result


def check_target(target: str, store: str) -> str:
    if target not in TARGETS:
        raise DeployError(f"unknown deploy target {target!r}; choose one of {TARGETS}")
    if target == "kubernetes" and not store:
        raise DeployError("deploy target 'kubernetes' needs a store (s3://bucket) the serving "
                          "pods can pull the archive from; pass the pipeline's `store`")
    return target


def pod_config(folder: str | Path, cfg: ServeConfig, *, name: str, mar_file: str) -> Path:
    """folder/config.properties for the serving pods: the hardened config with the pod's
    paths. Inference listens on all of the pod's interfaces (the Service reaches the pod IP;
    a NetworkPolicy admits only the inference port); management and metrics stay on
    127.0.0.1, token auth stays on."""
    pod = dataclasses.replace(cfg, host="0.0.0.0")
    lines = config_lines(POD_HOME, POD_MODEL_STORE, pod, model_name=name, mar_file=mar_file,
                         ports=resolve_ports(pod))
    path = Path(folder) / "config.properties"
    path.write_text("# the serving pods' TorchServe config (sempair.serving.deploy.pod_config)\n"
                    + "\n".join(lines) + "\n")
    return path


def smoke_media(dataset: str | Path, source: str, out_dir: str | Path) -> Path:
    """A copy of one recording the model never trained on (the dataset's test split, else
    val), taken from the source, for the smoke test."""
    table = pd.read_parquet(Path(dataset) / "recordings.parquet")
    for split in ("test", "val"):
        rows = table[(table["split"] == split) & (table["status"] == "ok")]
        if len(rows):
            break
    else:
        raise DeployError(f"{dataset} has no test or val recording to smoke-test with")
    recording = sorted(rows["recording"])[0]
    out = Path(out_dir) / recording          # keeps the recording id: OUT/<id>
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_source(source).local_copy(recording) as path:
        shutil.copyfile(path, out)
    return out
