"""Policy checks over rendered Kubernetes objects (the output of `kubectl kustomize`).

Each check takes the list of objects and returns a list of violations, one readable line
each ("Deployment/x container y: ..."); an empty list means the policy holds. They know
the kinds sempair renders: Deployment, StatefulSet, Job, CronJob, Pod, PyTorchJob and
InferenceService carry pods; Service, NetworkPolicy, RBAC and Secret objects are checked
as themselves.

A small NetworkPolicy evaluator (`ingress_allowed`, `egress_allowed`) answers "may this pod
reach that peer on that port", the way the Kubernetes NetworkPolicy API defines it, for
the tests that check the policies let the right traffic through.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

NAMESPACE = "sempair"
# TorchServe's listeners that must stay inside the pod (docs/serving.md).
PRIVATE_PORTS = {8081: "management", 8082: "metrics", 7070: "gRPC inference",
                 7071: "gRPC management"}
PRIVATE_PORT_NAME = re.compile(r"management|metrics|grpc", re.IGNORECASE)
REQUIRED_RESOURCES = ("cpu", "memory", "ephemeral-storage")
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component",
                      "app.kubernetes.io/part-of")
DEV_ONLY_ANNOTATION = "sempair.dev/dev-only"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PersistentVolume", "StorageClass",
                  "PriorityClass"}
DANGEROUS_VERBS = {"escalate", "bind", "impersonate"}

Violations = list[str]


# -- where the pods are ----------------------------------------------------------------------

@dataclass(frozen=True)
class PodTemplate:
    """A pod an object will create: where it sits, its metadata and its PodSpec."""
    where: str                 # "Deployment/sempair-torchserve" or ".../Worker"
    metadata: dict
    spec: dict


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_templates(obj: dict) -> list[PodTemplate]:
    """The pods an object describes, from the kinds sempair uses."""
    kind, spec, where = obj.get("kind"), obj.get("spec") or {}, name_of(obj)
    if kind == "Pod":
        return [PodTemplate(where, obj.get("metadata", {}), spec)]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        template = spec.get("template", {})
        return [PodTemplate(where, template.get("metadata", {}), template.get("spec", {}))]
    if kind == "CronJob":
        template = spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
        return [PodTemplate(where, template.get("metadata", {}), template.get("spec", {}))]
    if kind == "PyTorchJob":
        return [PodTemplate(f"{where}/{role}", replica.get("template", {}).get("metadata", {}),
                            replica.get("template", {}).get("spec", {}))
                for role, replica in sorted(spec.get("pytorchReplicaSpecs", {}).items())]
    if kind == "InferenceService":
        predictor = spec.get("predictor", {})
        metadata = {"labels": predictor.get("labels", {}),
                    "annotations": predictor.get("annotations", {})}
        return [PodTemplate(f"{where}/predictor", metadata, predictor)]
    return []


def containers(pod_spec: dict) -> Iterator[dict]:
    """Every container of a pod: init, regular and ephemeral."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(key) or []


def all_pods(objects: list[dict]) -> Iterator[PodTemplate]:
    for obj in objects:
        yield from pod_templates(obj)


def _for_each_container(objects: list[dict],
                        check: Callable[[PodTemplate, dict], list[str]]) -> Violations:
    return [f"{pod.where} container {c.get('name')}: {problem}"
            for pod in all_pods(objects) for c in containers(pod.spec)
            for problem in check(pod, c)]


# -- pod security ----------------------------------------------------------------------------

def root_containers(objects: list[dict]) -> Violations:
    """Every container runs as a non-root user: runAsNonRoot and a non-zero runAsUser,
    from the pod's or the container's securityContext."""
    def check(pod: PodTemplate, c: dict) -> list[str]:
        pod_ctx, ctx = pod.spec.get("securityContext") or {}, c.get("securityContext") or {}
        problems = []
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            problems.append("runAsNonRoot is not true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) in (0, None):
            problems.append("runAsUser is 0 or unset (the image's user might be root)")
        return problems
    return _for_each_container(objects, check)


def privilege_escalation(objects: list[dict]) -> Violations:
    """No privileged containers, allowPrivilegeEscalation explicitly false, all
    capabilities dropped and none added."""
    def check(_pod: PodTemplate, c: dict) -> list[str]:
        ctx = c.get("securityContext") or {}
        caps = ctx.get("capabilities") or {}
        problems = []
        if ctx.get("privileged"):
            problems.append("privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append("allowPrivilegeEscalation is not false")
        if "ALL" not in (caps.get("drop") or []):
            problems.append("capabilities.drop lacks ALL")
        if caps.get("add"):
            problems.append(f"capabilities.add {caps['add']}")
        return problems
    return _for_each_container(objects, check)


def writable_root_filesystem(objects: list[dict]) -> Violations:
    """Every container has readOnlyRootFilesystem: true (writes go to emptyDirs)."""
    def check(_pod: PodTemplate, c: dict) -> list[str]:
        ctx = c.get("securityContext") or {}
        return [] if ctx.get("readOnlyRootFilesystem") is True else [
            "readOnlyRootFilesystem is not true"]
    return _for_each_container(objects, check)


SCRATCH_ENV = ("TMPDIR", "XDG_CACHE_HOME")   # temp files; sempair's S3 download cache


def unwritable_scratch(objects: list[dict]) -> Violations:
    """A sempair process on a read-only root filesystem (command sempair, torchrun or
    torchserve) has TMPDIR and XDG_CACHE_HOME under one of its volume mounts: HOME is part
    of the image, so the defaults (/tmp, ~/.cache) would fail at the first write."""
    def check(_pod: PodTemplate, c: dict) -> list[str]:
        command = (c.get("command") or [""])[0]
        if command not in ("sempair", "torchrun", "torchserve") or not (
                c.get("securityContext") or {}).get("readOnlyRootFilesystem"):
            return []
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts") or []
                  if not m.get("readOnly")]
        return [f"{name} is {env.get(name)!r}, not under a writable volume mount"
                for name in SCRATCH_ENV
                if not any((env.get(name) or "").rstrip("/") + "/" == m
                           or (env.get(name) or "").startswith(m) for m in mounts)]
    return _for_each_container(objects, check)


def seccomp(objects: list[dict]) -> Violations:
    """Every pod (or each of its containers) uses the RuntimeDefault or a Localhost
    seccomp profile, never Unconfined."""
    def check(pod: PodTemplate, c: dict) -> list[str]:
        profile = ((c.get("securityContext") or {}).get("seccompProfile")
                   or (pod.spec.get("securityContext") or {}).get("seccompProfile") or {})
        return [] if profile.get("type") in ("RuntimeDefault", "Localhost") else [
            f"seccompProfile is {profile.get('type') or 'unset'}"]
    return _for_each_container(objects, check)


def missing_resources(objects: list[dict]) -> Violations:
    """Every container requests and limits cpu, memory and ephemeral-storage."""
    def check(_pod: PodTemplate, c: dict) -> list[str]:
        resources = c.get("resources") or {}
        return [f"no {part}.{resource}" for part in ("requests", "limits")
                for resource in REQUIRED_RESOURCES
                if resource not in (resources.get(part) or {})]
    return _for_each_container(objects, check)


def host_access(objects: list[dict]) -> Violations:
    """No host namespaces, hostPath volumes or host ports."""
    problems = []
    for pod in all_pods(objects):
        problems += [f"{pod.where}: {key}" for key in ("hostNetwork", "hostPID", "hostIPC")
                     if pod.spec.get(key)]
        problems += [f"{pod.where}: hostPath volume {v.get('name')}"
                     for v in pod.spec.get("volumes") or [] if "hostPath" in v]
        problems += [f"{pod.where} container {c.get('name')}: hostPort {p['hostPort']}"
                     for c in containers(pod.spec) for p in c.get("ports") or []
                     if p.get("hostPort")]
    return problems


def unpinned_images(objects: list[dict]) -> Violations:
    """Every image names a tag other than `latest`, or a digest."""
    def check(_pod: PodTemplate, c: dict) -> list[str]:
        image = c.get("image") or ""
        if "@sha256:" in image:
            return []
        tag = image.rsplit("/", 1)[-1].partition(":")[2]   # a registry port is no tag
        if not tag:
            return [f"image {image!r} has no tag"]
        return [f"image {image!r} uses :latest"] if tag == "latest" else []
    return _for_each_container(objects, check)


def service_account_tokens(objects: list[dict]) -> Violations:
    """Pods do not mount a Kubernetes API token (none of sempair's own pods call the API;
    the pipeline's deploy step runs in Kubeflow's pods), and ServiceAccounts that no
    RoleBinding grants anything do not hand one out by default."""
    problems = [f"{pod.where}: automountServiceAccountToken is not false"
                for pod in all_pods(objects)
                if pod.spec.get("automountServiceAccountToken") is not False]
    bound = {s.get("name") for o in objects if o.get("kind") == "RoleBinding"
             for s in o.get("subjects") or [] if s.get("kind") == "ServiceAccount"}
    problems += [f"{name_of(o)}: no RoleBinding uses it, but automountServiceAccountToken "
                 "is not false" for o in objects if o.get("kind") == "ServiceAccount"
                 and o["metadata"]["name"] not in bound
                 and o.get("automountServiceAccountToken") is not False]
    return problems


def empty_dir_budget(objects: list[dict]) -> Violations:
    """Every emptyDir has a sizeLimit, and the disk-backed ones fit in the ephemeral-storage
    limit of the pod's containers (the kubelet evicts a pod beyond it)."""
    problems = []
    for pod in all_pods(objects):
        on_disk = 0
        for volume in pod.spec.get("volumes") or []:
            empty_dir = volume.get("emptyDir")
            if empty_dir is None:
                continue
            if "sizeLimit" not in empty_dir:
                problems.append(f"{pod.where}: emptyDir {volume['name']} has no sizeLimit")
            elif empty_dir.get("medium") != "Memory":
                on_disk += quantity(empty_dir["sizeLimit"])
        limit = sum(quantity(((c.get("resources") or {}).get("limits") or {}).get(
            "ephemeral-storage", "0")) for c in pod.spec.get("containers") or [])
        if on_disk > limit:
            problems.append(f"{pod.where}: emptyDirs may hold {on_disk / 2**30:.1f}Gi, more "
                            f"than the containers' ephemeral-storage limits "
                            f"({limit / 2**30:.1f}Gi)")
    return problems


# -- exposure, RBAC, secrets, metadata -------------------------------------------------------

def private_ports_exposed(objects: list[dict]) -> Violations:
    """No Service, NetworkPolicy or KServe predictor exposes TorchServe's management,
    metrics or gRPC ports (by number or by name)."""
    def bad(port, name=None) -> str | None:
        if port in PRIVATE_PORTS:
            return f"port {port} ({PRIVATE_PORTS[port]})"
        for value in (name, port):
            if isinstance(value, str) and PRIVATE_PORT_NAME.search(value):
                return f"port named {value!r}"
        return None

    problems = []
    for obj in objects:
        kind, where = obj.get("kind"), name_of(obj)
        if kind == "Service":
            for p in obj.get("spec", {}).get("ports") or []:
                for found in (bad(p.get("port"), p.get("name")), bad(p.get("targetPort"))):
                    if found:
                        problems.append(f"{where} exposes {found}")
        elif kind == "NetworkPolicy":
            for rule in obj.get("spec", {}).get("ingress") or []:
                for p in rule.get("ports") or []:
                    if found := bad(p.get("port")):
                        problems.append(f"{where} admits {found}")
        elif kind == "InferenceService":    # KServe makes a Service of the container ports
            for pod in pod_templates(obj):
                for c in pod.spec.get("containers") or []:
                    for p in c.get("ports") or []:
                        if found := bad(p.get("containerPort"), p.get("name")):
                            problems.append(f"{where} container {c.get('name')} declares "
                                            f"{found}")
    return problems


def broad_rbac(objects: list[dict]) -> Violations:
    """Namespaced RBAC only: no ClusterRole(Binding), no wildcard in apiGroups, resources or
    verbs, no escalate/bind/impersonate, and Secrets only by resourceNames."""
    problems = [f"{name_of(o)}: cluster-wide RBAC" for o in objects
                if o.get("kind") in ("ClusterRole", "ClusterRoleBinding")]
    problems += [f"{name_of(o)} binds a ClusterRole" for o in objects
                 if o.get("kind") == "RoleBinding"
                 and o.get("roleRef", {}).get("kind") == "ClusterRole"]
    for role in (o for o in objects if o.get("kind") == "Role"):
        for rule in role.get("rules") or []:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                if "*" in (rule.get(key) or []):
                    problems.append(f"{name_of(role)}: '*' in {key}")
            if dangerous := DANGEROUS_VERBS & set(rule.get("verbs") or []):
                problems.append(f"{name_of(role)}: verbs {sorted(dangerous)}")
            if "secrets" in (rule.get("resources") or []) and not rule.get("resourceNames"):
                problems.append(f"{name_of(role)}: secrets without resourceNames")
    return problems


def secrets_with_data(objects: list[dict], *, dev_allowed: bool) -> Violations:
    """Secrets in git: none at all outside dev; in dev only ones annotated as dev-only."""
    problems = []
    for obj in (o for o in objects if o.get("kind") == "Secret"):
        if not (obj.get("data") or obj.get("stringData")):
            continue
        annotated = (obj["metadata"].get("annotations") or {}).get(DEV_ONLY_ANNOTATION)
        if not dev_allowed:
            problems.append(f"{name_of(obj)} carries credentials; create it out of band "
                            "(k8s/secrets/)")
        elif annotated != "true":
            problems.append(f"{name_of(obj)} carries credentials without the "
                            f"{DEV_ONLY_ANNOTATION}: \"true\" annotation")
    return problems


def missing_labels(objects: list[dict]) -> Violations:
    """Every object carries the recommended app.kubernetes.io labels with part-of sempair;
    the Namespace must not (Kubeflow profile namespaces are part-of kubeflow-profile)."""
    problems = []
    for obj in objects:
        labels = obj.get("metadata", {}).get("labels") or {}
        if obj.get("kind") == "Namespace":
            if "app.kubernetes.io/part-of" in labels:
                problems.append(f"{name_of(obj)}: must not set app.kubernetes.io/part-of")
            continue
        problems += [f"{name_of(obj)}: no label {key}" for key in RECOMMENDED_LABELS
                     if key not in labels]
        if labels.get("app.kubernetes.io/part-of", "sempair") != "sempair":
            problems.append(f"{name_of(obj)}: part-of is not sempair")
    return problems


def wrong_namespace(objects: list[dict], namespace: str = NAMESPACE) -> Violations:
    """Every namespaced object lands in sempair's namespace."""
    return [f"{name_of(o)}: namespace {o['metadata'].get('namespace')!r}" for o in objects
            if o.get("kind") not in CLUSTER_SCOPED
            and o["metadata"].get("namespace") != namespace]


def all_checks(objects: list[dict], *, dev_allowed: bool) -> Violations:
    """Every policy above, for one rendered overlay."""
    checks = (root_containers, privilege_escalation, writable_root_filesystem,
              unwritable_scratch, seccomp,
              missing_resources, host_access, unpinned_images, service_account_tokens,
              empty_dir_budget, private_ports_exposed, broad_rbac, missing_labels,
              wrong_namespace)
    problems = [p for check in checks for p in check(objects)]
    return problems + secrets_with_data(objects, dev_allowed=dev_allowed)


# -- quantities ------------------------------------------------------------------------------

_SUFFIX = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20,
           "Gi": 2**30, "Ti": 2**40, "m": 1e-3}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("512Mi", "2", "250m") as a plain number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


# -- NetworkPolicy evaluation ----------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    """The other end of a connection: a pod (namespace + labels) or an address outside."""
    namespace: str | None = None
    pod_labels: dict = field(default_factory=dict)
    namespace_labels: dict = field(default_factory=dict)
    ip: str | None = None          # set for addresses that are not pods

    @classmethod
    def pod(cls, namespace: str, labels: dict | None = None) -> Peer:
        return cls(namespace, labels or {}, {"kubernetes.io/metadata.name": namespace})


def selects(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels; {} selects all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _policy_types(policy: dict) -> list[str]:
    spec = policy.get("spec", {})
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def _peer_matches(rule_peer: dict, peer: Peer, own_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        if peer.ip is None:
            return False
        block, address = rule_peer["ipBlock"], ipaddress.ip_address(peer.ip)
        network = ipaddress.ip_network(block["cidr"])
        return (address.version == network.version and address in network
                and not any(address in ipaddress.ip_network(e)
                            for e in block.get("except") or []))
    if peer.ip is not None:
        return False
    if "namespaceSelector" in rule_peer:
        if not selects(rule_peer["namespaceSelector"], peer.namespace_labels):
            return False
    elif peer.namespace != own_namespace:
        return False
    return selects(rule_peer.get("podSelector"), peer.pod_labels)


def _port_matches(rule_ports: list | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and
               (p.get("port") is None or p.get("port") == port
                or (p.get("endPort") and p["port"] <= port <= p["endPort"]))
               for p in rule_ports)


def _allowed(direction: str, pod_labels: dict, policies: list[dict], peer: Peer, port: int,
             protocol: str, namespace: str) -> bool:
    kind, key, side = ("Ingress", "ingress", "from") if direction == "in" else (
        "Egress", "egress", "to")
    selecting = [p for p in policies if p.get("kind") == "NetworkPolicy"
                 and p["metadata"].get("namespace", namespace) == namespace
                 and kind in _policy_types(p) and selects(p["spec"].get("podSelector"),
                                                          pod_labels)]
    if not selecting:
        return True                    # not isolated in this direction
    return any(_port_matches(rule.get("ports"), port, protocol)
               and (not rule.get(side) or any(_peer_matches(r, peer, namespace)
                                              for r in rule[side]))
               for policy in selecting for rule in policy["spec"].get(key) or [])


def ingress_allowed(pod_labels: dict, policies: list[dict], peer: Peer, port: int,
                    protocol: str = "TCP", namespace: str = NAMESPACE) -> bool:
    """May `peer` open a connection to a pod with `pod_labels` (in `namespace`) on port?"""
    return _allowed("in", pod_labels, policies, peer, port, protocol, namespace)


def egress_allowed(pod_labels: dict, policies: list[dict], peer: Peer, port: int,
                   protocol: str = "TCP", namespace: str = NAMESPACE) -> bool:
    """May a pod with `pod_labels` (in `namespace`) open a connection to `peer` on port?"""
    return _allowed("out", pod_labels, policies, peer, port, protocol, namespace)
