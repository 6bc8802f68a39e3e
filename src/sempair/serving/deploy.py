"""Deploy a release: its TorchServe archive into the model store, then live.

    archive   build_archive(RELEASE/serving) -> <name>.mar + <name>.card.json (sha256)
    store     STORE/models/<name>/<version>/serving/  (the .mar, its card, config.properties)
    target    "kubernetes": roll the TorchServe Deployment to the new archive
              "local":      start TorchServe here and send it one real request
              "none":       stop after the store

On a cluster the rollout is one PATCH of the pods' annotations (`sempair.dev/model-uri`,
`sempair.dev/model-sha256`): in the TorchServe Deployment's pod template, or in a KServe
InferenceService's predictor (`serve.kube_workload`). The serving pods read the URI through
the downward API and pull the archive before TorchServe starts (`sempair serve pull`,
k8s/), and the changed template makes Kubernetes replace them one by one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
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
from sempair.storage import fetch, open_source, publish, sha256_path

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


@dataclass(frozen=True)
class Workload:
    """What serves the model on the cluster, as `serve.kube_workload` names it: KIND/NAME."""
    api_path: str       # the resource collection, e.g. /apis/apps/v1/namespaces/{ns}/deployments
    patch_type: str
    template: tuple[str, ...]   # where the pods' annotations live in the object
    kind: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Workload:
        kind, _, name = text.partition("/")
        shapes = {
            "deployment": ("/apis/apps/v1/namespaces/{ns}/deployments",
                           "application/strategic-merge-patch+json",
                           ("spec", "template", "metadata", "annotations"), "Deployment"),
            # KServe copies the predictor's annotations onto its pods; a CRD takes no
            # strategic merge, and a JSON merge patch of this map leaves the rest alone
            "inferenceservice": ("/apis/serving.kserve.io/v1beta1/namespaces/{ns}/"
                                 "inferenceservices", "application/merge-patch+json",
                                 ("spec", "predictor", "annotations"), "InferenceService")}
        if kind.lower() not in shapes or not name:
            raise DeployError(f"serve.kube_workload is {text!r}; write deployment/NAME (the "
                              "k8s/ TorchServe Deployment) or inferenceservice/NAME (the "
                              "k8s/overlays/kserve InferenceService)")
        return cls(*shapes[kind.lower()], name)

    def patch(self, annotations: dict[str, str]) -> dict:
        body: dict = annotations
        for key in reversed(self.template):
            body = {key: body}
        return body


def rollout(api: KubeAPI, workload: str, model_uri: str, sha256: str,
            timeout: float = 30.0) -> dict:
    """Point the workload's pods at the archive at `model_uri` (a Deployment's pod template,
    or an InferenceService's predictor); returns the patched object."""
    target = Workload.parse(workload)
    path = target.api_path.format(ns=api.namespace) + f"/{target.name}"
    patch = target.patch({MODEL_URI_ANNOTATION: model_uri, MODEL_SHA_ANNOTATION: sha256})
    request = urllib.request.Request(
        api.url + path, data=json.dumps(patch).encode(), method="PATCH",
        headers={"Authorization": f"Bearer {api.token}", "Accept": "application/json",
                 "Content-Type": target.patch_type})
    context = ssl.create_default_context(cafile=api.ca_file) if api.url.startswith(
        "https") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise DeployError(_explain(error, target, api.namespace)) from None
    except urllib.error.URLError as error:
        raise DeployError(f"cannot reach the Kubernetes API at {api.url}: {error.reason}; "
                          "check the cluster's network policy for the API server") from None


def _explain(error: urllib.error.HTTPError, target: Workload, namespace: str) -> str:
    detail = error.read().decode(errors="replace")[:300]
    if error.code == 404:
        return (f"{target.kind} {target.name!r} not found in namespace {namespace!r}; apply "
                "the serving manifests (k8s/) first or set serve.kube_workload")
    if error.code in (401, 403):
        return (f"the Kubernetes API refused to patch {target.kind} {target.name} in "
                f"{namespace!r} ({error.code}); grant the pipeline's service account "
                f"'patch' on it there (k8s/ RBAC). {detail}")
    return f"patching {target.kind} {target.name} failed ({error.code}): {detail}"


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
    """folder/config.properties for the serving pods (k8s/ ships it as their ConfigMap): the
    hardened config with the pod's paths. Every port listens on 127.0.0.1 only: the pod's
    nginx proxy (k8s/base/torchserve/proxy.conf) is its front door, and the only thing the
    Service reaches; it forwards POST /predictions/<model> and GET /ping, and times out slow
    clients, which TorchServe cannot. Token auth is off: TorchServe makes a random key per
    process, which replicas behind one Service cannot share, so the NetworkPolicy that
    admits only labelled clients to the proxy port is the guard (docs/operations.md)."""
    pod = dataclasses.replace(cfg, host="127.0.0.1")
    lines = config_lines(POD_HOME, POD_MODEL_STORE, pod, model_name=name, mar_file=mar_file,
                         ports=resolve_ports(pod), token_auth=False)
    path = Path(folder) / "config.properties"
    path.write_text("# the serving pods' TorchServe config (sempair.serving.deploy.pod_config)\n"
                    + "\n".join(lines) + "\n")
    return path


def pull_archive(uri: str, sha256: str, model_store: Path, *, name: str) -> Path:
    """The serving pods' init step: fetch STORE/models/<name>/<version>/serving (the URI a
    rollout annotated the pods with), check the .mar against the annotated sha256 and its
    card, and place it as model_store/<name>.mar (renamed into place: never half a file).
    An s3:// archive is downloaded next to it, so the volume holds it once."""
    if not uri:
        raise DeployError(
            f"no model to serve: the pod's {MODEL_URI_ANNOTATION} annotation is empty. Run "
            "the pipeline with deploy_target=kubernetes, or roll back to a published archive "
            "with `kubectl patch` (docs/operations.md, 'Roll back a model')")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise DeployError(f"{MODEL_SHA_ANNOTATION} is {sha256!r}, not a sha256; set it to "
                          f"the archive card's archive.sha256 ({uri}/{name}.card.json)")
    model_store.mkdir(parents=True, exist_ok=True)
    download = model_store / ".download"    # the store's own volume: moved, not copied
    try:
        folder = fetch(uri, cache_dir=download, marker=f"{name}.card.json")
        card = json.loads((folder / f"{name}.card.json").read_text())["archive"]
        actual = sha256_path(folder / card["file"])
        if not actual == card["sha256"] == sha256:
            raise DeployError(f"{uri}/{card['file']} has sha256 {actual}; its card says "
                              f"{card['sha256']} and the rollout {sha256}: the archive was "
                              "changed or the annotations point at another version. Redeploy")
        partial = model_store / f".{name}.mar.partial"
        place = os.replace if folder.is_relative_to(download) else shutil.copyfile
        place(folder / card["file"], partial)
        return partial.replace(model_store / f"{name}.mar")
    finally:
        shutil.rmtree(download, ignore_errors=True)


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
