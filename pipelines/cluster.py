"""Run the training DAG on a Kubeflow Pipelines server: one run now, or a recurring run.

    sempair pipeline submit   --host URL --source s3://recordings --store s3://sempair
    sempair pipeline submit   ... --if-changed       # only if the data changed (k8s CronJob)
    sempair pipeline schedule --host URL --cron "0 0 3 * * *" --source ... --store ...

Both compile the same DAG as `sempair pipeline compile` (kfp-kubernetes config included)
and talk to the KFP API with `kfp.Client`. A run gets the data version: one checksum over
the source's listing (`sempair.storage.source_version`); `--if-changed` compares it with the
version last submitted from this store (STORE/pipeline/<name>/last-submitted.json) and
submits nothing when they are equal. KFP's cron has six fields, seconds first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sempair import SempairError
from sempair.config import load_config
from sempair.storage import NotFoundError, read_text, source_version, write_text

PIPELINE = load_config().pipeline


class ClusterError(SempairError):
    """A submission that cannot go ahead; the message names the fix."""


@dataclass(frozen=True)
class RunRequest:
    """The pipeline's parameters for a cluster run, and where the run goes."""
    source: str                         # s3:// URI of the recordings
    store: str = ""                     # s3:// bucket for datasets, reports, models
    reference: str = ""                 # dataset to measure drift against
    deploy_target: str = "kubernetes"
    overrides: tuple[str, ...] = ()     # params.yaml overrides, SECTION.KEY=VALUE
    experiment: str = "sempair"
    service_account: str = ""           # the run's pods' (k8s/: sempair-pipeline)
    namespace: str | None = None        # multi-user Kubeflow: the profile namespace

    def arguments(self, data_version: str) -> dict:
        return {"source": self.source, "store": self.store, "reference": self.reference,
                "deploy_target": self.deploy_target, "data_version": data_version,
                "overrides": list(self.overrides)}


@dataclass(frozen=True)
class Submitted:
    data_version: str
    run_id: str = ""        # "" when nothing was submitted
    link: str = ""
    reason: str = ""        # why nothing was submitted


@dataclass(frozen=True)
class Scheduled:
    recurring_run_id: str
    cron: str
    link: str


# -- cron -----------------------------------------------------------------------------------

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
CRON_FIELDS = (  # name, lowest, highest, names (value = index + lowest)
    ("seconds", 0, 59, ()), ("minutes", 0, 59, ()), ("hours", 0, 23, ()),
    ("day of month", 1, 31, ()), ("month", 1, 12, MONTHS), ("day of week", 0, 6, WEEKDAYS))
CRON_HELP = ("Kubeflow Pipelines' cron has six fields, seconds first: SECONDS MINUTES HOURS "
             "DAY-OF-MONTH MONTH DAY-OF-WEEK; e.g. '0 0 3 * * *' is every day at 03:00:00 "
             "and '0 30 */6 * * MON-FRI' every 6 hours at :30 on weekdays")


def validate_cron(expression: str) -> str:
    """The expression, normalised, if KFP's six-field cron accepts it; else ClusterError."""
    fields = expression.split()
    if len(fields) == 5:
        raise ClusterError(f"cron {expression!r} has 5 fields, like crontab; {CRON_HELP}. "
                           f"Prepend the seconds: '0 {' '.join(fields)}'")
    if len(fields) != 6:
        raise ClusterError(f"cron {expression!r} has {len(fields)} fields; {CRON_HELP}")
    for text, (name, low, high, names) in zip(fields, CRON_FIELDS, strict=True):
        problem = _cron_field_problem(text, name, low, high, names)
        if problem:
            raise ClusterError(f"cron {expression!r}: the {name} field {text!r} {problem}; "
                               f"{CRON_HELP}")
    return " ".join(fields)


def _cron_field_problem(text: str, name: str, low: int, high: int,
                        names: tuple[str, ...]) -> str:
    if text == "?" and name in ("day of month", "day of week"):
        return ""
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            return f"has step {step!r}: a step is a positive number"
        if base == "*":
            continue
        ends = base.split("-")
        if len(ends) > 2 or "" in ends:
            return f"has {part!r}: write a value, a range A-B, a step A/N or * (lists: A,B)"
        values = [_cron_value(end, low, names) for end in ends]
        if any(v is None or not low <= v <= high for v in values):
            hint = f" or {names[0]}-{names[-1]}" if names else ""
            return f"has {part!r} outside {low}-{high}{hint}"
        if len(values) == 2 and values[0] > values[1]:
            return f"has the range {base!r} backwards"
    return ""


def _cron_value(text: str, low: int, names: tuple[str, ...]) -> int | None:
    if text.isdigit():
        return int(text)
    return names.index(text.upper()) + low if text.upper() in names else None


# -- data version and what was submitted ------------------------------------------------------

def state_uri(store: str) -> str:
    return f"{store.rstrip('/')}/pipeline/{PIPELINE.name}/last-submitted.json"


def last_submitted(store: str) -> dict | None:
    """What `submit` last sent from this store (data version, run, host, time), or None."""
    try:
        return json.loads(read_text(state_uri(store)))
    except NotFoundError:
        return None


# -- the KFP API ------------------------------------------------------------------------------

def submit(host: str, request: RunRequest, *, data_version: str = "", if_changed: bool = False,
           run_name: str = "") -> Submitted:
    """Start one run of the DAG on the KFP server at `host`. data_version defaults to the
    source's current version; with if_changed, nothing is submitted when it equals the
    version last submitted from request.store."""
    version = data_version or source_version(request.source)
    if if_changed:
        if not request.store:
            raise ClusterError("--if-changed needs --store: the version last submitted is "
                               f"recorded there ({state_uri('STORE')})")
        last = last_submitted(request.store)
        if last and last["data_version"] == version:
            return Submitted(version, reason=f"the data is unchanged since run "
                             f"{last['run_id']} ({last['submitted_at']})")
    name = run_name or f"{PIPELINE.name} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}"
    with _kfp_errors(host), _compiled() as package:
        client = connect(host, request.namespace)
        result = client.create_run_from_pipeline_package(
            str(package), arguments=request.arguments(version), run_name=name,
            experiment_name=request.experiment, namespace=request.namespace,
            service_account=request.service_account or None)
    link = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    submitted = Submitted(version, result.run_id, link)
    if request.store:
        write_text(state_uri(request.store), json.dumps({
            "data_version": version, "run_id": submitted.run_id, "link": submitted.link,
            "source": request.source, "host": host,
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "request": dataclasses.asdict(request)}, indent=2) + "\n")
    return submitted


def schedule(host: str, cron: str, request: RunRequest, *, name: str = "",
             max_concurrency: int = 1, catchup: bool = False) -> Scheduled:
    """Create a KFP recurring run of the DAG. Each run ingests the source as it is then and
    records that data version; a run never overlaps the previous one (max_concurrency 1)
    and missed runs are not made up (catchup False)."""
    cron = validate_cron(cron)
    with _kfp_errors(host), _compiled() as package:
        client = connect(host, request.namespace)
        experiment = client.create_experiment(request.experiment, namespace=request.namespace)
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=name or f"{PIPELINE.name} {cron}",
            description=f"retrain on {request.source} at cron '{cron}'", cron_expression=cron,
            max_concurrency=max_concurrency, no_catchup=not catchup,
            params=request.arguments(""), pipeline_package_path=str(package),
            service_account=request.service_account or None)
    return Scheduled(job.recurring_run_id, cron,
                     f"{host.rstrip('/')}/#/recurringrun/details/{job.recurring_run_id}")


def connect(host: str, namespace: str | None = None):
    """A kfp.Client for `host` (in a pod with KF_PIPELINES_SA_TOKEN_PATH it authenticates
    with that projected token, as kfp does)."""
    import kfp

    if not re.match(r"^https?://[^/]", host):
        raise ClusterError(f"--host {host!r} is not a URL; give the KFP API's, e.g. "
                           "http://ml-pipeline.kubeflow.svc.cluster.local:8888 in the cluster "
                           "or http://localhost:8080 through `kubectl port-forward`")
    with warnings.catch_warnings():   # "only works with KFP v2.0.0-beta.2 and later"
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host.rstrip("/"), namespace=namespace or "kubeflow")


@contextlib.contextmanager
def _kfp_errors(host: str) -> Iterator[None]:
    """The KFP client's failures as a ClusterError that says what to check."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as error:
        hint = {401: "the caller is not authenticated: in a pod, mount a service account "
                "token for audience pipelines.kubeflow.org (KF_PIPELINES_SA_TOKEN_PATH)",
                403: "the caller may not do this in that namespace: check --namespace and "
                "the RBAC for pipelines.kubeflow.org (k8s/base/retrain)",
                404: "is --host the KFP API (ml-pipeline:8888), not another service?"}
        raise ClusterError(f"the KFP API at {host} answered {error.status} {error.reason}: "
                           f"{hint.get(error.status, (error.body or '')[:300])}") from None
    except (HTTPError, TimeoutError) as error:   # kfp: TimeoutError after 5 bad healthz
        raise ClusterError(f"cannot reach the KFP API at {host} ({error}); check --host, or "
                           "`kubectl -n kubeflow port-forward svc/ml-pipeline 8888:8888` and "
                           "--host http://localhost:8888") from None


@contextlib.contextmanager
def _compiled() -> Iterator[Path]:
    """The DAG compiled to a temporary YAML file (the same as `sempair pipeline compile`)."""
    from pipelines.compile import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="sempair-pipeline-") as folder:
        yield compile_pipeline(Path(folder) / f"{PIPELINE.name}.yaml")
