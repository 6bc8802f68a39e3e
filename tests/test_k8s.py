"""k8s/ checked without a cluster: every overlay renders, every object validates against the
Kubernetes (or vendored CRD) schema, the security and network policies hold, and the
manifests agree with the code (names, ports, images, annotations, the CLI, RBAC).

Needs `kubectl` (it bundles kustomize); renders are cached per directory for the module.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from sempair.cli import build_parser
from sempair.config import load_config
from sempair.serving.archive import read_properties
from sempair.serving.deploy import MODEL_SHA_ANNOTATION, MODEL_URI_ANNOTATION, pod_config
from tests import k8s_policy as policy
from tests.conftest import ROOT
from tests.k8s_policy import Peer

K8S = ROOT / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# The oldest Kubernetes the manifests support and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CONFIG_PROPERTIES = K8S / "base" / "torchserve" / "config.properties"
MODEL_NAME = "sempair-av"
REGENERATE = ('.venv/bin/python -c "from sempair.config import load_config; from '
              "sempair.serving.deploy import pod_config; pod_config('k8s/base/torchserve', "
              "load_config().serve, name='sempair-av', mar_file='sempair-av.mar')\"")
SCHEMAS = {("kubeflow.org/v1", "PyTorchJob"): "pytorchjob-kubeflow.org-v1.json",
           ("serving.kserve.io/v1beta1", "InferenceService"):
               "inferenceservice-serving.kserve.io-v1beta1.json"}
SETTINGS_KEYS = {"AWS_ENDPOINT_URL", "AWS_REGION", "SEMPAIR_STORE", "SEMPAIR_SOURCE", "KFP_HOST"}
# Secrets created out of band in prod (k8s/secrets/*.example.yaml), with their keys.
SECRET_KEYS = {"sempair-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
               "sempair-minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}}
DEV_CREDENTIALS_ALLOWED = {"dev", "kserve"}        # kserve is dev + the KServe component
ON_TOP_OF_AN_ENVIRONMENT = {"train-ddp"}            # uses base's settings, SA and Secrets
SERVING_CONTAINERS = {"torchserve"}
PROXY_CONTAINERS = {"proxy", "kserve-container"}     # nginx in front (KServe's name for it)
PROXY_CONF = K8S / "base" / "torchserve" / "proxy.conf"
EXPECTED_KINDS = {
    "dev": {"Namespace", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding",
            "NetworkPolicy", "Deployment", "Service", "CronJob", "StatefulSet", "Job"},
    "prod": {"Namespace", "ConfigMap", "ServiceAccount", "Role", "RoleBinding",
             "NetworkPolicy", "Deployment", "Service", "CronJob", "StatefulSet", "Job",
             "PodDisruptionBudget"},
    "external-s3": {"Namespace", "ConfigMap", "ServiceAccount", "Role", "RoleBinding",
                    "NetworkPolicy", "Deployment", "Service", "CronJob"},
    "kserve": {"Namespace", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding",
               "NetworkPolicy", "InferenceService", "Service", "CronJob", "StatefulSet",
               "Job"},
    "train-ddp": {"ConfigMap", "NetworkPolicy", "PyTorchJob"},
}
# What the pipeline's service account may do besides the rollout's PATCH: the documented
# minimum that Kubeflow Pipelines' own executor needs (k8s/base/pipeline/rbac.yaml).
KFP_EXECUTOR_RULES = {("argoproj.io", "workflowtaskresults", ""): {"create", "patch"},
                      ("", "configmaps", "kfp-launcher"): {"get"},
                      ("", "secrets", "mlpipeline-minio-artifact"): {"get"}}
VARIABLE = re.compile(r"\$\((\w+)\)")


# -- rendering -------------------------------------------------------------------------------

KUBECTL_MISSING = ("kubectl is not on PATH, and these tests render k8s/ with `kubectl "
                   "kustomize`: install kubectl >= 1.27 (it bundles kustomize v5), see "
                   "https://kubernetes.io/docs/tasks/tools/")


@pytest.fixture(scope="module")
def render() -> Callable[[str], list[dict]]:
    """render("overlays/dev") -> the objects `kubectl kustomize k8s/overlays/dev` prints
    (cached; do not mutate them). Without kubectl every test using it FAILS (no skip)."""
    @functools.cache
    def rendered(directory: str) -> list[dict]:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.fail(KUBECTL_MISSING, pytrace=False)
        done = subprocess.run([kubectl, "kustomize", str(K8S / directory)],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            pytest.fail(f"kubectl kustomize k8s/{directory} failed:\n{done.stderr}",
                        pytrace=False)
        return [obj for obj in yaml.safe_load_all(done.stdout) if obj]
    return rendered


def overlay_objects(render, overlay: str) -> list[dict]:
    return render(f"overlays/{overlay}")


def known_objects(render, overlay: str) -> list[dict]:
    """The overlay's objects plus, for an overlay applied on top of an environment, the
    base's (whose ConfigMap, ServiceAccounts and Secrets it uses)."""
    extra = render("base") if overlay in ON_TOP_OF_AN_ENVIRONMENT else []
    return overlay_objects(render, overlay) + extra


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str) -> dict:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def settings(objects: list[dict]) -> dict[str, str]:
    return one(objects, "ConfigMap", "sempair-settings")["data"]


def serving_container(objects: list[dict]) -> dict:
    found = [c for pod in policy.all_pods(objects) for c in pod.spec.get("containers", [])
             if c["name"] in SERVING_CONTAINERS]
    assert len(found) == 1, f"expected one serving container, found {len(found)}"
    return found[0]


def proxy_container(objects: list[dict]) -> dict:
    found = [c for pod in policy.all_pods(objects) for c in pod.spec.get("containers", [])
             if c["name"] in PROXY_CONTAINERS]
    assert len(found) == 1, f"expected one proxy container, found {len(found)}"
    return found[0]


def serving_overlays() -> list[str]:
    return [o for o in OVERLAYS if o not in ON_TOP_OF_AN_ENVIRONMENT]


def deployment_name() -> str:
    """The Deployment the deploy step rolls by default (serve.kube_workload)."""
    kind, _, name = load_config().serve.kube_workload.partition("/")
    assert kind.lower() == "deployment", "params.yaml rolls something else than k8s/base"
    return name


def rolled_workload(objects: list[dict]) -> str:
    """What the pipeline's deploy step rolls in this overlay: serve.kube_workload, as the
    retrain CronJob overrides it for its runs (`--set serve.kube_workload=...`)."""
    command = one(objects, "CronJob", "sempair-retrain")["spec"]["jobTemplate"]["spec"][
        "template"]["spec"]["containers"][0]["command"]
    overrides = [command[i + 1] for i, arg in enumerate(command[:-1]) if arg == "--set"]
    return load_config(None, overrides).serve.kube_workload


# -- 1. every overlay renders ----------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_expected_kinds(render, overlay):
    assert overlay in EXPECTED_KINDS, (f"new overlay k8s/overlays/{overlay}: add the kinds it "
                                       "must render to EXPECTED_KINDS in tests/test_k8s.py")
    kinds = {obj["kind"] for obj in overlay_objects(render, overlay)}
    assert kinds == EXPECTED_KINDS[overlay]


def test_the_readme_maps_every_overlay():
    readme = (K8S / "README.md").read_text()
    missing = [o for o in OVERLAYS if f"overlays/{o}" not in readme]
    assert not missing, f"k8s/README.md does not describe {missing}"


# -- 2. every object validates ---------------------------------------------------------------

@functools.cache
def _schema_errors(serialized: str, version: str) -> tuple[str, ...]:
    try:
        kubernetes_validate.validate(json.loads(serialized), version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return (f"{'.'.join(map(str, error.path))}: {error.message[:300]}",)
    except kubernetes_validate.SchemaNotFoundError as error:
        return (error.message,)
    return ()


def builtin_errors(obj: dict) -> list[str]:
    """Errors of a built-in object against the strict Kubernetes schemas (each version)."""
    return [f"{policy.name_of(obj)} (Kubernetes {version}) {problem}"
            for version in KUBERNETES_VERSIONS
            for problem in _schema_errors(json.dumps(obj, sort_keys=True), version)]


@functools.cache
def _crd_validator(file: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((K8S / "schemas" / file).read_text()))


@functools.cache
def pod_spec_fields() -> frozenset[str]:
    schema = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" /
              f"v{KUBERNETES_VERSIONS[0]}.0-local-strict" / "podspec-v1.json")
    return frozenset(json.loads(schema.read_text())["properties"])


def embedded_pods(obj: dict) -> list[dict]:
    """The built-in objects a custom resource's controller makes of its pods, to validate
    them with the real Kubernetes schemas: a PodTemplate per PyTorchJob replica, the
    Deployment KServe's RawDeployment mode creates for the predictor."""
    meta = {"name": obj["metadata"]["name"], "namespace": obj["metadata"].get("namespace")}
    if obj["kind"] == "PyTorchJob":
        return [{"apiVersion": "v1", "kind": "PodTemplate",
                 "metadata": {**meta, "name": f"{meta['name']}-{role.lower()}"},
                 "template": replica.get("template", {})}
                for role, replica in obj["spec"].get("pytorchReplicaSpecs", {}).items()]
    predictor = obj["spec"].get("predictor", {})
    selector = {"app": f"isvc.{meta['name']}-predictor"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {**meta, "name": f"{meta['name']}-predictor"},
        "spec": {"selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": predictor.get("labels", {}) | selector,
                                           "annotations": predictor.get("annotations", {})},
                              "spec": {k: v for k, v in predictor.items()
                                       if k in pod_spec_fields()}}}}
    if "deploymentStrategy" in predictor:
        deployment["spec"]["strategy"] = predictor["deploymentStrategy"]
    return [deployment]


def object_errors(obj: dict) -> list[str]:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in SCHEMAS:
        return builtin_errors(obj)
    errors = [f"{policy.name_of(obj)} ({SCHEMAS[key]}) {'.'.join(map(str, e.path))}: "
              f"{e.message[:300]}" for e in _crd_validator(SCHEMAS[key]).iter_errors(obj)]
    for pod in embedded_pods(obj):
        errors += [f"{policy.name_of(obj)}'s pod: {e}" for e in builtin_errors(pod)]
    return errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(render, overlay):
    errors = [e for obj in overlay_objects(render, overlay) for e in object_errors(obj)]
    assert not errors, "\n".join(errors)


def test_the_secret_templates_validate():
    for template in sorted((K8S / "secrets").glob("*.example.yaml")):
        assert builtin_errors(yaml.safe_load(template.read_text())) == [], template.name


def test_validation_rejects_misspelt_fields(render):
    """Strictness: an unknown field fails, in built-in kinds, in the vendored CRD schemas
    and in the pods embedded in custom resources."""
    deployment = copy.deepcopy(one(render("base"), "Deployment", "sempair-torchserve"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert builtin_errors(deployment)

    job = copy.deepcopy(one(render("overlays/train-ddp"), "PyTorchJob", "sempair-train-ddp"))
    for mutate in (lambda j: j["spec"].__setitem__("nprocPerNodes", "4"),
                   lambda j: j["spec"]["runPolicy"].__setitem__("cleanPodPolicies", "All"),
                   lambda j: j["spec"].__setitem__("nprocPerNode", 4),
                   lambda j: j["spec"]["pytorchReplicaSpecs"].__setitem__(
                       "Chief", j["spec"]["pytorchReplicaSpecs"]["Worker"]),
                   lambda j: j["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
                       "containers"][0].__setitem__("name", "trainer"),
                   lambda j: j["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"][
                       "containers"][0].__setitem__("envFrom", "sempair-settings")):
        bad = copy.deepcopy(job)
        mutate(bad)
        assert object_errors(bad), "a broken PyTorchJob passed validation"

    isvc = copy.deepcopy(one(render("overlays/kserve"), "InferenceService", MODEL_NAME))
    for mutate in (lambda i: i["spec"]["predictor"].__setitem__("minReplica", 1),
                   lambda i: i["spec"]["predictor"].__setitem__("scaleMetric", "gpu"),
                   lambda i: i["spec"].__setitem__("predictors", {}),
                   lambda i: i["spec"]["predictor"]["containers"][0].__setitem__("cmd", []),
                   lambda i: i["spec"]["predictor"]["deploymentStrategy"].__setitem__(
                       "rollingUpdate", {"maxUnavailabel": 0})):
        bad = copy.deepcopy(isvc)
        mutate(bad)
        assert object_errors(bad), "a broken InferenceService passed validation"


def test_the_kserve_schema_lists_the_kubernetes_pod_spec_fields():
    schema = json.loads((K8S / "schemas" / SCHEMAS["serving.kserve.io/v1beta1",
                                                   "InferenceService"]).read_text())
    predictor = schema["$defs"]["predictor"]["properties"]
    assert pod_spec_fields() <= set(predictor)


# -- 3. policies -----------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policies_hold(render, overlay):
    problems = policy.all_checks(overlay_objects(render, overlay),
                                 dev_allowed=overlay in DEV_CREDENTIALS_ALLOWED)
    assert not problems, "\n".join(problems)


def good_objects() -> list[dict]:
    """A minimal compliant Deployment, Service, Role and ServiceAccount to break."""
    labels = {"app.kubernetes.io/name": "sempair", "app.kubernetes.io/component": "test",
              "app.kubernetes.io/part-of": "sempair"}
    meta = {"namespace": "sempair", "labels": labels}
    resources = {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    container = {"name": "app", "image": "ghcr.io/sempair/sempair:0.1.0",
                 "command": ["sempair", "serve", "pull"],
                 "env": [{"name": "TMPDIR", "value": "/tmp"},
                         {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"}],
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                 "resources": {"requests": dict(resources), "limits": dict(resources)},
                 "securityContext": {"allowPrivilegeEscalation": False,
                                     "readOnlyRootFilesystem": True,
                                     "capabilities": {"drop": ["ALL"]}}}
    pod = {"automountServiceAccountToken": False, "containers": [container],
           "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                               "seccompProfile": {"type": "RuntimeDefault"}},
           "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}]}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", **meta},
         "spec": {"template": {"metadata": {"labels": labels}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app", **meta},
         "spec": {"ports": [{"name": "inference", "port": 8080, "targetPort": 8080}]}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "app", **meta},
         "rules": [{"apiGroups": ["apps"], "resources": ["deployments"],
                    "resourceNames": ["app"], "verbs": ["get", "patch"]}]},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", **meta},
         "automountServiceAccountToken": False},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "sempair", "labels": {"app.kubernetes.io/name": "sempair"}}},
    ]


def _pod(objects):
    return objects[0]["spec"]["template"]["spec"]


def _container(objects):
    return _pod(objects)["containers"][0]


def _service_port(objects):
    return objects[1]["spec"]["ports"][0]


def _rule(objects):
    return objects[2]["rules"][0]


BREAKAGES = {
    "pod runAsUser 0": (lambda o: _pod(o)["securityContext"].update(runAsUser=0), "runAsUser"),
    "container runAsUser 0": (
        lambda o: _container(o)["securityContext"].update(runAsUser=0), "runAsUser"),
    "runAsNonRoot false": (
        lambda o: _container(o)["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    "no memory limit": (
        lambda o: _container(o)["resources"]["limits"].pop("memory"), "limits.memory"),
    "no ephemeral-storage request": (
        lambda o: _container(o)["resources"]["requests"].pop("ephemeral-storage"),
        "requests.ephemeral-storage"),
    "allowPrivilegeEscalation true": (
        lambda o: _container(o)["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation"),
    "capabilities not dropped": (
        lambda o: _container(o)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        "drop lacks ALL"),
    "capability added": (
        lambda o: _container(o)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        "capabilities.add"),
    "privileged": (lambda o: _container(o)["securityContext"].update(privileged=True),
                   "privileged"),
    "writable root filesystem": (
        lambda o: _container(o)["securityContext"].pop("readOnlyRootFilesystem"),
        "readOnlyRootFilesystem"),
    "no download cache on a volume": (lambda o: _container(o)["env"].pop(), "XDG_CACHE_HOME"),
    "TMPDIR on the image": (
        lambda o: _container(o)["env"][0].update(value="/home/model-server"), "TMPDIR"),
    "seccomp unconfined": (
        lambda o: _pod(o)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "seccompProfile"),
    "hostNetwork": (lambda o: _pod(o).update(hostNetwork=True), "hostNetwork"),
    "hostPID": (lambda o: _pod(o).update(hostPID=True), "hostPID"),
    "hostPath volume": (
        lambda o: _pod(o)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "hostPath"),
    "hostPort": (lambda o: _container(o).update(ports=[{"containerPort": 80, "hostPort": 80}]),
                 "hostPort"),
    "image :latest": (lambda o: _container(o).update(image="ghcr.io/sempair/sempair:latest"),
                      ":latest"),
    "image without tag": (lambda o: _container(o).update(image="ghcr.io/sempair/sempair"),
                          "no tag"),
    "registry port, no tag": (lambda o: _container(o).update(image="registry:5000/sempair"),
                              "no tag"),
    "API token mounted": (lambda o: _pod(o).pop("automountServiceAccountToken"),
                          "automountServiceAccountToken"),
    "unbound SA with token": (lambda o: o[3].update(automountServiceAccountToken=True),
                              "no RoleBinding"),
    "emptyDir without sizeLimit": (lambda o: _pod(o)["volumes"][0]["emptyDir"].clear(),
                                   "sizeLimit"),
    "emptyDir over the ephemeral limit": (
        lambda o: _pod(o)["volumes"][0]["emptyDir"].update(sizeLimit="10Gi"),
        "ephemeral-storage limits"),
    "Service port 8081": (lambda o: _service_port(o).update(port=8081), "8081"),
    "Service port 8082": (lambda o: _service_port(o).update(port=8082), "8082"),
    "Service port 7070": (lambda o: _service_port(o).update(port=7070), "7070"),
    "Service port 7071": (lambda o: _service_port(o).update(port=7071), "7071"),
    "Service targetPort 8082": (lambda o: _service_port(o).update(targetPort=8082), "8082"),
    "port named management": (lambda o: _service_port(o).update(name="management"),
                              "'management'"),
    "port named metrics": (lambda o: _service_port(o).update(name="metrics", port=9090),
                           "'metrics'"),
    "NetworkPolicy admits 8082": (
        lambda o: o.append({"kind": "NetworkPolicy", "metadata": {"name": "np"},
                            "spec": {"ingress": [{"ports": [{"port": 8082}]}]}}), "admits"),
    "ClusterRole": (lambda o: o[2].update(kind="ClusterRole"), "cluster-wide"),
    "ClusterRoleBinding": (
        lambda o: o.append({"kind": "ClusterRoleBinding", "metadata": {"name": "crb"}}),
        "cluster-wide"),
    "RoleBinding to a ClusterRole": (
        lambda o: o.append({"kind": "RoleBinding", "metadata": {"name": "rb"},
                            "roleRef": {"kind": "ClusterRole", "name": "edit"}}),
        "binds a ClusterRole"),
    "verbs *": (lambda o: _rule(o).update(verbs=["*"]), "'*' in verbs"),
    "resources *": (lambda o: _rule(o).update(resources=["*"]), "'*' in resources"),
    "apiGroups *": (lambda o: _rule(o).update(apiGroups=["*"]), "'*' in apiGroups"),
    "escalate": (lambda o: _rule(o).update(verbs=["escalate"]), "escalate"),
    "all secrets": (lambda o: _rule(o).update(apiGroups=[""], resources=["secrets"],
                                              resourceNames=[]), "secrets"),
    "Secret with data in prod": (
        lambda o: o.append({"kind": "Secret", "metadata": {"name": "s", "namespace": "sempair"},
                            "data": {"k": "dg=="}}), "out of band"),
    "Namespace part-of": (
        lambda o: o[4]["metadata"]["labels"].update({"app.kubernetes.io/part-of": "sempair"}),
        "part-of"),
    "no recommended labels": (lambda o: o[1]["metadata"].pop("labels"), "no label"),
    "another namespace": (lambda o: o[1]["metadata"].update(namespace="default"),
                          "namespace 'default'"),
}


def test_the_compliant_objects_pass():
    assert policy.all_checks(good_objects(), dev_allowed=False) == []


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_policy_catches_its_violation(breakage):
    mutate, expected = BREAKAGES[breakage]
    objects = good_objects()
    mutate(objects)
    problems = policy.all_checks(objects, dev_allowed=False)
    assert any(expected in p for p in problems), f"{breakage}: got {problems}"


def test_dev_secrets_must_say_they_are_dev_only():
    secret = {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    assert policy.secrets_with_data([secret], dev_allowed=True)
    secret["metadata"]["annotations"] = {policy.DEV_ONLY_ANNOTATION: "true"}
    assert policy.secrets_with_data([secret], dev_allowed=True) == []
    assert policy.secrets_with_data([secret], dev_allowed=False)


# -- network policies ------------------------------------------------------------------------

def _policies(objects: list[dict]) -> list[dict]:
    return find(objects, "NetworkPolicy")


def object_store_peer(objects: list[dict]) -> tuple[Peer, int]:
    """Where AWS_ENDPOINT_URL leads: a Service of the render (its pods and target port) or,
    otherwise, an address outside the cluster."""
    url = urlsplit(settings(objects)["AWS_ENDPOINT_URL"])
    port = url.port or (443 if url.scheme == "https" else 80)
    service = find(objects, "Service", url.hostname.split(".")[0])
    if not service:
        return Peer(ip="203.0.113.10"), port
    spec = service[0]["spec"]
    target = next(p.get("targetPort", p["port"]) for p in spec["ports"] if p["port"] == port)
    for pod in policy.all_pods(objects):
        if policy.selects({"matchLabels": spec["selector"]}, pod.metadata.get("labels", {})):
            named = {p.get("name"): p["containerPort"] for c in pod.spec["containers"]
                     for p in c.get("ports", [])}
            return (Peer.pod(policy.NAMESPACE, pod.metadata["labels"]),
                    named.get(target, target))
    raise AssertionError(f"Service {service[0]['metadata']['name']} selects no pod")


@pytest.mark.parametrize("overlay", serving_overlays())
def test_restricted_pods_reach_dns_the_object_store_and_kubeflow(render, overlay):
    objects = overlay_objects(render, overlay)
    policies = _policies(objects)
    store, store_port = object_store_peer(objects)
    kfp = urlsplit(settings(objects)["KFP_HOST"])
    kfp_peer = Peer.pod(kfp.hostname.split(".")[1], {"app": "ml-pipeline"})
    dns = Peer.pod("kube-system", {"k8s-app": "kube-dns"})
    problems = []
    for pod in policy.all_pods(objects):
        labels = pod.metadata.get("labels", {})
        if labels.get("sempair.dev/egress") != "restricted":
            continue
        needs = [("DNS", dns, 53, "UDP"), ("DNS over TCP", dns, 53, "TCP")]
        if labels.get("sempair.dev/object-store-client") == "true":
            needs.append(("the object store", store, store_port, "TCP"))
        if labels.get("app.kubernetes.io/component") == "retraining":
            needs.append(("the KFP API", kfp_peer, kfp.port, "TCP"))
        problems += [f"{pod.where} cannot reach {what}" for what, peer, port, proto in needs
                     if not policy.egress_allowed(labels, policies, peer, port, proto)]
        if policy.egress_allowed(labels, policies, Peer(ip="198.51.100.7"), 22):
            problems.append(f"{pod.where}: egress is not restricted after all")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", serving_overlays())
def test_kubeflow_step_pods_are_not_restricted(render, overlay):
    """Kubeflow's pipeline pods (unlabelled by sempair) reach the API server, KFP, MinIO."""
    policies = _policies(overlay_objects(render, overlay))
    step_pod = {"pipelines.kubeflow.org/v2_component": "true"}
    assert policy.egress_allowed(step_pod, policies, Peer(ip="10.96.0.1"), 443)
    assert policy.egress_allowed(step_pod, policies, Peer.pod("kubeflow"), 8888)


@pytest.mark.parametrize("overlay", serving_overlays())
def test_only_labelled_clients_reach_the_inference_port(render, overlay):
    objects = overlay_objects(render, overlay)
    serving = next(pod.metadata["labels"] for pod in policy.all_pods(objects)
                   if any(c["name"] in SERVING_CONTAINERS for c in pod.spec["containers"]))
    policies, port = _policies(objects), proxy_listen()
    client = Peer.pod("sempair", {"sempair.dev/inference-client": "true"})
    ingress_ns = Peer("ingress-nginx", {}, {"kubernetes.io/metadata.name": "ingress-nginx",
                                            "sempair.dev/inference-clients": "true"})
    assert policy.ingress_allowed(serving, policies, client, port)
    assert policy.ingress_allowed(serving, policies, ingress_ns, port)
    assert not policy.ingress_allowed(serving, policies, Peer.pod("sempair"), port)
    assert not policy.ingress_allowed(serving, policies, Peer.pod("default"), port)
    for private in [*policy.PRIVATE_PORTS, ts_inference_port()]:   # TorchServe's own
        assert not policy.ingress_allowed(serving, policies, client, private)


@pytest.mark.parametrize("overlay", [o for o in serving_overlays()
                                     if EXPECTED_KINDS.get(o, set()) >= {"StatefulSet"}])
def test_minio_admits_this_namespace_on_the_s3_port_only(render, overlay):
    objects = overlay_objects(render, overlay)
    store, port = object_store_peer(objects)
    minio, policies = store.pod_labels, _policies(objects)
    assert policy.ingress_allowed(minio, policies, Peer.pod("sempair"), port)
    assert not policy.ingress_allowed(minio, policies, Peer.pod("sempair"), 9001)
    assert not policy.ingress_allowed(minio, policies, Peer.pod("default"), port)


def test_ddp_ranks_reach_each_other(render):
    objects = overlay_objects(render, "train-ddp")
    policies = _policies(objects) + _policies(render("base"))
    pods = list(policy.all_pods(objects))
    for pod in pods:
        for other in pods:
            assert policy.ingress_allowed(pod.metadata["labels"], policies,
                                          Peer.pod("sempair", other.metadata["labels"]), 29500)


# -- 4. consistency with the code ------------------------------------------------------------

def test_config_properties_is_what_pod_config_writes(tmp_path):
    fresh = pod_config(tmp_path, load_config().serve, name=MODEL_NAME,
                       mar_file=f"{MODEL_NAME}.mar").read_text()
    committed = CONFIG_PROPERTIES.read_text()
    if committed != fresh:
        diff = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                             "committed", "pod_config"))
        pytest.fail(f"k8s/base/torchserve/config.properties differs from pod_config's "
                    f"output:\n{diff}\nregenerate with: {REGENERATE}", pytrace=False)
    assert CONFIG_PROPERTIES.read_bytes() == (tmp_path / "config.properties").read_bytes()


@pytest.mark.parametrize("overlay", serving_overlays())
def test_the_config_map_carries_config_properties(render, overlay):
    objects = overlay_objects(render, overlay)
    pod = next(p for p in policy.all_pods(objects)
               if any(c["name"] in SERVING_CONTAINERS for c in p.spec["containers"]))
    name = next(v["configMap"]["name"] for v in pod.spec["volumes"] if v["name"] == "config")
    assert one(objects, "ConfigMap", name)["data"] == {
        "config.properties": CONFIG_PROPERTIES.read_text()}
    mount = next(m for m in serving_container(objects)["volumeMounts"] if m["name"] == "config")
    ts_config = serving_container(objects)["command"]
    assert ts_config[ts_config.index("--ts-config") + 1] == (
        f"{mount['mountPath']}/config.properties")


def test_the_deployment_is_the_one_the_deploy_step_rolls(render):
    objects = render("base")
    serve = load_config().serve
    deployment = one(objects, "Deployment", deployment_name())
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {MODEL_URI_ANNOTATION: "",
                                                   MODEL_SHA_ANNOTATION: ""}
    assert serve.kube_namespace in ("", deployment["metadata"]["namespace"])


@pytest.mark.parametrize("overlay", serving_overlays())
def test_pull_model_reads_the_rollout_annotations(render, overlay):
    pod = next(p for p in policy.all_pods(overlay_objects(render, overlay))
               if any(c["name"] == "pull-model" for c in p.spec.get("initContainers", [])))
    assert set(pod.metadata["annotations"]) == {MODEL_URI_ANNOTATION, MODEL_SHA_ANNOTATION}
    init = next(c for c in pod.spec["initContainers"] if c["name"] == "pull-model")
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in init["env"]
              if "valueFrom" in e}
    assert fields == {"SEMPAIR_MODEL_URI": f"metadata.annotations['{MODEL_URI_ANNOTATION}']",
                      "SEMPAIR_MODEL_SHA256":
                          f"metadata.annotations['{MODEL_SHA_ANNOTATION}']"}
    store = next(m["mountPath"] for m in init["volumeMounts"] if m["name"] == "model-store")
    assert init["command"][init["command"].index("--out") + 1] == store
    serving = next(c for c in pod.spec["containers"] if c["name"] in SERVING_CONTAINERS)
    assert serving["command"][serving["command"].index("--model-store") + 1] == store
    assert read_properties(CONFIG_PROPERTIES)["model_store"] == store


@pytest.mark.parametrize("overlay", serving_overlays())
def test_only_the_proxy_port_is_served(render, overlay):
    """Clients reach the proxy only: the Service's inference port leads to the proxy
    container's one port, the NetworkPolicy admits that port alone, TorchServe declares
    none (its probes run inside it) and the proxy forwards to TorchServe's inference port."""
    objects = overlay_objects(render, overlay)
    port = load_config().serve.inference_port
    proxy, torchserve = proxy_container(objects), serving_container(objects)
    (listen,) = proxy["ports"]
    assert (listen["name"], listen["containerPort"]) == ("inference", proxy_listen())
    assert "ports" not in torchserve
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/ping", "port": "inference"}
    ping = f"http://127.0.0.1:{ts_inference_port()}/ping"
    for probe in ("startupProbe", "livenessProbe"):
        assert ping in " ".join(torchserve[probe]["exec"]["command"]), probe
    for service in find(objects, "Service", deployment_name()):
        assert [(p["port"], p["targetPort"], p["name"]) for p in service["spec"]["ports"]] == [
            (port, "inference", "inference")]
    ingress = one(objects, "NetworkPolicy", "sempair-torchserve-ingress")
    assert [p["port"] for rule in ingress["spec"]["ingress"] for p in rule["ports"]] == [
        proxy_listen()]
    assert proxy_listen() != ts_inference_port()


def test_probes_can_call_ping_without_a_token(render):
    """The kubelet cannot send TorchServe's per-process token: /ping must be open, so token
    authorization is off in the pod (config.properties or --disable-token-auth)."""
    command = serving_container(render("base"))["command"]
    props = read_properties(CONFIG_PROPERTIES)
    assert (props.get("disable_token_authorization") == "true"
            or "--disable-token-auth" in command), (
        "token authorization is on in the serving pods, so the httpGet /ping probes fail "
        "(TorchServe answers 400 without the token)")


def test_startup_probe_outlasts_the_model_load(render):
    serve = load_config().serve
    probe = serving_container(render("base"))["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= serve.startup_timeout + 60, "allow the model load plus the pull"
    deployment = one(render("base"), "Deployment", deployment_name())
    assert deployment["spec"]["progressDeadlineSeconds"] > budget
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", serving_overlays())
def test_the_memory_limit_holds_the_jvm_heap_and_the_workers(render, overlay):
    serve = load_config().serve
    vmargs = read_properties(CONFIG_PROPERTIES)["vmargs"]
    size, unit = re.search(r"-Xmx(\d+)([mMgG])", vmargs).groups()
    heap = int(size) * (2**20 if unit in "mM" else 2**30)
    container = serving_container(overlay_objects(render, overlay))
    limit = policy.quantity(container["resources"]["limits"]["memory"])
    needed = heap + serve.workers * 2**30 + 512 * 2**20
    assert limit >= needed, (f"memory limit {limit / 2**30:.2f}Gi < JVM heap "
                             f"{heap / 2**30:.2f}Gi + {serve.workers} worker(s) + JVM overhead")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SEMPAIR_SERVE_THREADS"] == env["OMP_NUM_THREADS"] == str(serve.threads)


# -- the proxy in front of TorchServe (base/torchserve/proxy.conf) ---------------------------

@dataclass(frozen=True)
class Directive:
    """One nginx directive: its name, its arguments (quotes removed) and its block."""
    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] = ()


NGINX_TOKEN = re.compile(r"#[^\n]*|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|[{};]|[^\s{};]+")


def parse_nginx(text: str) -> tuple[Directive, ...]:
    """nginx.conf as nested directives (enough for proxy.conf: no includes, no lua)."""
    tokens = [t for t in NGINX_TOKEN.findall(text) if not t.startswith("#")]

    def block(i: int) -> tuple[tuple[Directive, ...], int]:
        found, words = [], []
        while i < len(tokens) and tokens[i] != "}":
            token = tokens[i]
            if token in (";", "{"):
                inner, i = block(i + 1) if token == "{" else ((), i)
                found.append(Directive(words[0], tuple(_unquote(w) for w in words[1:]), inner))
                words = []
            else:
                words.append(token)
            i += 1
        assert not words, f"proxy.conf: {' '.join(words)} has no ';'"
        return tuple(found), i

    parsed, end = block(0)
    assert end == len(tokens), "proxy.conf: a '}' closes nothing"
    return parsed


def _unquote(word: str) -> str:
    return word[1:-1] if word[:1] in "'\"" and word[-1:] == word[:1] else word


def directives(block: tuple[Directive, ...], name: str) -> list[Directive]:
    return [d for d in block if d.name == name]


def single(block: tuple[Directive, ...], name: str) -> tuple[str, ...]:
    (found,) = directives(block, name)
    return found.args


@functools.cache
def proxy_conf() -> tuple[Directive, ...]:
    return parse_nginx(PROXY_CONF.read_text())


def http_block() -> tuple[Directive, ...]:
    return directives(proxy_conf(), "http")[0].block


def server_block() -> tuple[Directive, ...]:
    return directives(http_block(), "server")[0].block


def location(path: str) -> tuple[Directive, ...]:
    found = [d.block for d in directives(server_block(), "location")
             if " ".join(d.args) == path]
    assert len(found) == 1, f"proxy.conf has no single location {path}"
    return found[0]


def proxy_listen() -> int:
    return int(single(server_block(), "listen")[0])


def ts_inference_port() -> int:
    return urlsplit(read_properties(CONFIG_PROPERTIES)["inference_address"]).port


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()
    return int(number) * {"ms": 1e-3, "s": 1, "m": 60, None: 1}[unit]


def test_the_proxy_forwards_only_the_predictions_route_and_ping():
    paths = {" ".join(d.args) for d in directives(server_block(), "location")
             if not d.args[0].startswith("@")}
    assert paths == {f"= /predictions/{MODEL_NAME}", "= /ping", "/"}
    assert single(location("/"), "return") == ("404",)
    (upstream,) = [d for d in directives(http_block(), "upstream") if d.args == ("torchserve",)]
    assert single(upstream.block, "server") == (f"127.0.0.1:{ts_inference_port()}",)
    predict, ping = location(f"= /predictions/{MODEL_NAME}"), location("= /ping")
    for block, methods in ((predict, "!= POST"), (ping, "!~ ^(GET|HEAD)$")):
        assert single(block, "proxy_pass") == ("http://torchserve",)
        guard = directives(block, "if")[0]
        assert " ".join(guard.args) == f"($request_method {methods})"
        assert single(guard.block, "return") == ("405",)
    forms = directives(predict, "if")[1]
    assert forms.args == ("($refused_form)",) and single(forms.block, "return") == ("415",)
    assert single(predict, "proxy_request_buffering") == ("on",), "TorchServe gets whole bodies"
    timeout = read_properties(CONFIG_PROPERTIES)["default_response_timeout"]
    assert seconds(single(predict, "proxy_read_timeout")[0]) > int(timeout)


def test_the_proxy_bounds_slow_and_large_requests(render):
    http = http_block()
    assert seconds(single(http, "client_header_timeout")[0]) <= 10
    assert seconds(single(http, "client_body_timeout")[0]) <= 30
    assert seconds(single(http, "send_timeout")[0]) <= 60
    assert single(http, "server_tokens") == ("off",), "the Server header names no version"
    body = int(single(http, "client_max_body_size")[0])
    assert body == int(read_properties(CONFIG_PROPERTIES)["max_request_size"])
    connections = int(single(server_block(), "limit_conn")[1])
    pod = one(render("base"), "Deployment", deployment_name())["spec"]["template"]["spec"]
    tmp = next(v for v in pod["volumes"] if v["name"] == "proxy-tmp")
    assert connections * body <= policy.quantity(tmp["emptyDir"]["sizeLimit"]), (
        "the bodies the proxy may buffer at once must fit its /tmp")


def refused_form(content_type: str) -> bool:
    """proxy.conf's map $content_type $refused_form, evaluated as nginx does: regexes in
    order (`~*`: case-insensitive), the first match wins, else the default."""
    (table,) = [d.block for d in directives(http_block(), "map")
                if d.args == ("$content_type", "$refused_form")]
    for entry in table:
        pattern = _unquote(entry.name)
        if pattern.startswith("~*") and re.search(pattern[2:], content_type, re.IGNORECASE):
            return entry.args[0] == "1"
    return single(table, "default") == ("1",)


def test_the_proxy_refuses_the_forms_torchserve_fails_on():
    """The forms tests/test_hostile_serving.py sees TorchServe's frontend answer 500."""
    for refused in ("multipart/form-data; boundary=", "multipart/form-data",
                    "Multipart/Form-Data; charset=x", "application/x-www-form-urlencoded"):
        assert refused_form(refused), refused
    for allowed in ("video/mp4", "audio/wav", "application/octet-stream", "",
                    "multipart/form-data; boundary=abc", 'multipart/form-data; boundary="b"'):
        assert not refused_form(allowed), allowed


def test_every_refusal_of_the_proxy_is_json():
    named = {d.args[0]: d.block for d in directives(server_block(), "location")
             if d.args[0].startswith("@")}
    pages = directives(server_block(), "error_page")
    assert {code for page in pages for code in page.args[:-1]} >= {
        "400", "404", "405", "408", "413", "415", "429", "502", "503", "504"}
    for page in pages:
        code, text = single(named[page.args[-1]], "return")
        answer = json.loads(text.replace("\\n", ""))
        assert answer["error"]["status"] == int(code) and answer["error"]["message"]
        assert code in page.args[:-1] or code == "503", page


@pytest.mark.parametrize("overlay", serving_overlays())
def test_the_proxy_runs_from_its_config_map_and_writes_to_its_volume(render, overlay):
    objects = overlay_objects(render, overlay)
    proxy = proxy_container(objects)
    pod = next(p for p in policy.all_pods(objects) if proxy in p.spec["containers"])
    mounts = {m["name"]: m for m in proxy["volumeMounts"]}
    volumes = {v["name"]: v for v in pod.spec["volumes"]}
    config = mounts["proxy-config"]
    assert proxy["command"][proxy["command"].index("-c") + 1] == (
        f"{config['mountPath']}/{PROXY_CONF.name}")
    assert one(objects, "ConfigMap", volumes["proxy-config"]["configMap"]["name"])["data"] == {
        PROXY_CONF.name: PROXY_CONF.read_text()}
    writable = [m["mountPath"] + "/" for m in mounts.values() if not m.get("readOnly")]
    http = http_block()
    paths = [single(proxy_conf(), "pid")[0]] + [single(http, name)[0] for name in (
        "client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path",
        "scgi_temp_path")]
    assert all(any(p.startswith(w) for w in writable) for p in paths), (paths, writable)
    assert single(proxy_conf(), "error_log")[0] == "stderr"


def test_torchserve_listens_on_loopback_only_in_the_pod():
    address = urlsplit(read_properties(CONFIG_PROPERTIES)["inference_address"])
    assert address.hostname == "127.0.0.1"


def _sempair_images(objects: list[dict]) -> list[tuple[str, dict]]:
    return [(pod.where, c) for pod in policy.all_pods(objects) for c in policy.containers(pod.spec)
            if c["image"].startswith("ghcr.io/sempair/")]


def test_manifests_use_the_pipeline_images(render):
    """Before any overlay's `images:`, the images are exactly params.yaml's: the CUDA build
    for training (torchrun), the CPU build for everything else."""
    pipeline = load_config().pipeline
    objects = render("base") + render("overlays/dev") + render("overlays/kserve") + render(
        "overlays/train-ddp")
    for where, c in _sempair_images(objects):
        expected = pipeline.train_image if c["command"][0] == "torchrun" else pipeline.base_image
        assert c["image"] == expected, f"{where} container {c['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_keep_the_pipeline_image_repositories(render, overlay):
    pipeline = load_config().pipeline
    repositories = {image.rsplit(":", 1)[0] for image in (pipeline.base_image,
                                                          pipeline.train_image)}
    for where, c in _sempair_images(overlay_objects(render, overlay)):
        assert c["image"].rsplit(":", 1)[0] in repositories, f"{where}: {c['image']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_version_labels_follow_the_image_tags(render, overlay):
    for obj in overlay_objects(render, overlay):
        version = obj["metadata"].get("labels", {}).get("app.kubernetes.io/version")
        for where, c in _sempair_images([obj]):
            assert version == c["image"].rsplit(":", 1)[1], (
                f"{where}: app.kubernetes.io/version {version} but image {c['image']}")


def _source_commands() -> list[tuple[str, list[str]]]:
    """Every container command written in k8s/ (the manifests' source files), by where."""
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or "secrets" in path.parts:
            continue
        for obj in yaml.safe_load_all(path.read_text()):
            for pod in policy.pod_templates(obj or {}):
                for c in policy.containers(pod.spec):
                    if c.get("command"):
                        where = f"{path.relative_to(K8S)}:{c['name']}"
                        found.append((where, c["command"] + c.get("args", [])))
    return found


SOURCE_COMMANDS = _source_commands()


def cli_argv(command: list[str]) -> list[str] | None:
    """The arguments the sempair CLI parses, for a `sempair ...` or `torchrun -m
    sempair.cli ...` command; None for anything else."""
    if command[:1] == ["sempair"]:
        return command[1:]
    if command[:1] == ["torchrun"] and "sempair.cli" in command:
        return command[command.index("sempair.cli") + 1:]
    return None


@pytest.mark.parametrize("where,command",
                         [(w, c) for w, c in SOURCE_COMMANDS if cli_argv(c) is not None],
                         ids=[w for w, c in SOURCE_COMMANDS if cli_argv(c) is not None])
def test_sempair_commands_parse_with_the_cli(where, command, capsys):
    """A manifest cannot drift from the CLI: its command parses with the real parser
    ($(VAR) references replaced by a placeholder value)."""
    argv = [VARIABLE.sub(lambda m: f"placeholder-{m.group(1).lower()}", a)
            for a in cli_argv(command)]
    try:
        build_parser().parse_args(argv)
    except SystemExit as error:
        pytest.fail(f"{where}: `sempair {' '.join(argv)}` is not a valid sempair command "
                    f"(exit {error.code}):\n{capsys.readouterr().err}", pytrace=False)


def test_the_cli_check_covers_the_serving_retraining_bucket_and_training_commands():
    parsed = {" ".join(cli_argv(c)[:2]) for _, c in SOURCE_COMMANDS if cli_argv(c)}
    assert {"serve pull", "pipeline submit", "buckets create"} <= parsed
    assert any(argv.startswith("train ") for argv in parsed)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_commands_parse_with_the_cli(render, overlay, capsys):
    """The same check after the overlays' patches (e.g. components/kserve's --set)."""
    for pod in policy.all_pods(overlay_objects(render, overlay)):
        for c in policy.containers(pod.spec):
            argv = cli_argv(c.get("command", []) + c.get("args", []))
            if argv is not None:
                test_sempair_commands_parse_with_the_cli(f"{pod.where} {c['name']}",
                                                         ["sempair", *argv], capsys)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(render, overlay):
    """Every ConfigMap, Secret, key and ServiceAccount a pod names exists in the render (or,
    for an overlay applied on top of an environment, in the base), or is one of the Secrets
    created out of band; every $(VAR) in a command is defined for its container."""
    objects = known_objects(render, overlay)
    config_maps = {o["metadata"]["name"]: set(o.get("data", {}))
                   for o in find(objects, "ConfigMap")}
    secrets = dict(SECRET_KEYS) | {o["metadata"]["name"]: set(o.get("stringData", {})) | set(
        o.get("data", {})) for o in find(objects, "Secret")}
    accounts = {o["metadata"]["name"] for o in find(objects, "ServiceAccount")}
    problems = []
    for pod in policy.all_pods(overlay_objects(render, overlay)):
        if pod.spec.get("serviceAccountName") not in accounts:
            problems.append(f"{pod.where}: no ServiceAccount {pod.spec.get('serviceAccountName')}")
        for volume in pod.spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problems.append(f"{pod.where}: no ConfigMap {volume['configMap']['name']}")
            if "secret" in volume and volume["secret"]["secretName"] not in secrets:
                problems.append(f"{pod.where}: no Secret {volume['secret']['secretName']}")
        for c in policy.containers(pod.spec):
            defined = {e["name"] for e in c.get("env", [])}
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    defined |= config_maps.get(source["configMapRef"]["name"], set())
                    if source["configMapRef"]["name"] not in config_maps:
                        problems.append(f"{pod.where}: no ConfigMap "
                                        f"{source['configMapRef']['name']}")
                if "secretRef" in source:
                    defined |= secrets.get(source["secretRef"]["name"], set())
                    if source["secretRef"]["name"] not in secrets:
                        problems.append(f"{pod.where}: no Secret {source['secretRef']['name']}")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secrets.get(ref["name"], set()):
                    problems.append(f"{pod.where}: no key {ref['key']} in Secret {ref['name']}")
            for variable in VARIABLE.findall(" ".join(c.get("command", []) + c.get("args", []))):
                if variable not in defined:
                    problems.append(f"{pod.where} {c['name']}: $({variable}) is not defined")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", serving_overlays())
def test_services_select_pods(render, overlay):
    objects = overlay_objects(render, overlay)
    for service in find(objects, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        matched = [p.where for p in policy.all_pods(objects)
                   if policy.selects(selector, p.metadata.get("labels", {}))]
        assert len(matched) == 1, f"{policy.name_of(service)} selects {matched}"


# -- settings, secrets, jobs -----------------------------------------------------------------

@pytest.mark.parametrize("overlay", serving_overlays())
def test_the_settings_config_map_keeps_its_name_and_keys(render, overlay):
    values = settings(overlay_objects(render, overlay))
    assert set(values) == SETTINGS_KEYS
    base = settings(render("base"))
    changed = {k for k in SETTINGS_KEYS if values[k] != base[k]}
    assert changed <= {"AWS_ENDPOINT_URL"}, "one value switches the S3 endpoint"


def test_the_base_settings_point_at_the_in_cluster_minio(render):
    assert settings(render("base")) == {
        "AWS_ENDPOINT_URL": "http://sempair-minio:9000", "AWS_REGION": "us-east-1",
        "SEMPAIR_STORE": "s3://sempair", "SEMPAIR_SOURCE": "s3://sempair-recordings/",
        "KFP_HOST": "http://ml-pipeline.kubeflow.svc.cluster.local:8888"}
    assert find(overlay_objects(render, "dev"), "Service", "sempair-minio")


def test_the_secret_templates_have_the_exact_keys_and_are_not_applied(render):
    templates = {}
    for path in sorted((K8S / "secrets").glob("*.example.yaml")):
        secret = yaml.safe_load(path.read_text())
        templates[secret["metadata"]["name"]] = set(secret["stringData"])
    assert templates == SECRET_KEYS
    dev = {o["metadata"]["name"]: set(o["data"])
           for o in find(overlay_objects(render, "dev"), "Secret")}
    assert dev == SECRET_KEYS
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        paths = spec.get("resources", []) + spec.get("components", []) + [
            p["path"] for p in spec.get("patches", []) if "path" in p]
        for path in paths:
            resolved = (kustomization.parent / path).resolve()
            assert not resolved.is_relative_to(K8S / "secrets"), f"{kustomization} uses {path}"


def test_the_bucket_job_creates_the_configured_buckets(render):
    objects = overlay_objects(render, "dev")
    job = one(objects, "Job", "sempair-minio-buckets")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    values = settings(objects)
    buckets = {urlsplit(values[k]).netloc for k in ("SEMPAIR_STORE", "SEMPAIR_SOURCE")}
    assert command[:3] == ["sempair", "buckets", "create"] and set(command[3:]) == buckets
    assert job["spec"]["backoffLimit"] >= 6 and job["spec"]["ttlSecondsAfterFinished"] > 0


def test_the_retrain_cronjob_submits_as_the_pipeline_account(render):
    objects = render("base")
    cron = one(objects, "CronJob", "sempair-retrain")
    spec, job = cron["spec"], cron["spec"]["jobTemplate"]["spec"]
    assert len(spec["schedule"].split()) == 5 and spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0 and job["activeDeadlineSeconds"] > 0
    assert {"successfulJobsHistoryLimit", "failedJobsHistoryLimit"} <= set(spec)
    assert "backoffLimit" in job
    pod = job["template"]["spec"]
    command = pod["containers"][0]["command"]
    option = {command[i]: command[i + 1] for i in range(len(command) - 1)
              if command[i].startswith("--")}
    assert option["--service-account"] in {o["metadata"]["name"]
                                           for o in find(objects, "ServiceAccount")}
    assert option["--deploy-target"] == "kubernetes" and "--if-changed" in command
    token = next(v["projected"]["sources"][0]["serviceAccountToken"] for v in pod["volumes"]
                 if "projected" in v)
    assert token["audience"] == "pipelines.kubeflow.org"
    mount = next(m["mountPath"] for m in pod["containers"][0]["volumeMounts"]
                 if m["name"] == "kfp-token")
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KF_PIPELINES_SA_TOKEN_PATH"] == f"{mount}/{token['path']}"


def test_the_kserve_predictor_runs_the_deployment_pod(render):
    deployment = one(render("base"), "Deployment", "sempair-torchserve")["spec"]["template"]
    predictor = one(overlay_objects(render, "kserve"), "InferenceService",
                    MODEL_NAME)["spec"]["predictor"]
    pod = copy.deepcopy(deployment["spec"])
    pod["containers"][0]["name"] = "kserve-container"
    assert {k: v for k, v in predictor.items() if k in pod_spec_fields()} == pod
    assert predictor["annotations"] == deployment["metadata"]["annotations"]
    assert predictor["labels"] == deployment["metadata"]["labels"]
    isvc = one(overlay_objects(render, "kserve"), "InferenceService", MODEL_NAME)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == (
        "RawDeployment"), "Knative (Serverless) rejects init containers and fieldRefs"


def test_the_ddp_job_runs_one_pod_shape_with_one_gpu_per_process(render):
    job = one(overlay_objects(render, "train-ddp"), "PyTorchJob", "sempair-train-ddp")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["template"] == replicas["Worker"]["template"]
    assert replicas["Master"]["replicas"] == 1
    container = replicas["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert job["spec"]["nprocPerNode"] == str(gpus)
    assert {"cleanPodPolicy", "backoffLimit", "ttlSecondsAfterFinished"} <= set(
        job["spec"]["runPolicy"])
    shm = next(v for v in replicas["Master"]["template"]["spec"]["volumes"]
               if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"


# -- 5. RBAC ---------------------------------------------------------------------------------

def granted(objects: list[dict], account: str) -> dict[tuple[str, str, str], set[str]]:
    """(apiGroup, resource, resourceName or "") -> verbs, over every Role bound to account."""
    roles = {o["metadata"]["name"]: o for o in find(objects, "Role")}
    rules: dict[tuple[str, str, str], set[str]] = {}
    for binding in find(objects, "RoleBinding"):
        if not any(s.get("kind") == "ServiceAccount" and s["name"] == account
                   for s in binding.get("subjects", [])):
            continue
        for rule in roles[binding["roleRef"]["name"]]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for name in rule.get("resourceNames") or [""]:
                        rules.setdefault((group, resource, name), set()).update(rule["verbs"])
    return rules


@pytest.mark.parametrize("overlay", serving_overlays())
def test_the_pipeline_account_may_roll_out_and_nothing_more(render, overlay):
    """sempair.serving.deploy.rollout PATCHes one workload (GET to read it back): exactly
    that object, by name; the rest is Kubeflow's executor minimum (base/pipeline/rbac.yaml)."""
    from sempair.serving.deploy import Workload

    objects = overlay_objects(render, overlay)
    workload = Workload.parse(rolled_workload(objects))
    group, resource = re.fullmatch(r"/apis/([^/]+)/[^/]+/namespaces/\{ns\}/([a-z]+)",
                                   workload.api_path).groups()
    assert find(objects, workload.kind, workload.name), f"{workload.kind} is not rendered"
    rollout = {(group, resource, workload.name): {"get", "patch"}}
    assert granted(objects, "sempair-pipeline") == rollout | KFP_EXECUTOR_RULES


@pytest.mark.parametrize("overlay", serving_overlays())
def test_the_other_accounts_have_no_kubernetes_permissions(render, overlay):
    objects = overlay_objects(render, overlay)
    retrain = granted(objects, "sempair-retrain")
    assert retrain and {group for group, _, _ in retrain} == {"pipelines.kubeflow.org"}
    assert all(verbs <= {"create", "get", "list"} for verbs in retrain.values())
    for account in ("sempair-torchserve", "sempair-minio", "sempair-trainer"):
        assert granted(objects, account) == {}
