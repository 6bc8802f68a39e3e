"""The training pipeline DAG: ingest -> validate -> train -> evaluate -> [gate] -> release
-> deploy.

Validation fails the run on a critical data problem, so nothing trains on bad data. The
release and deploy steps run only when the evaluation's gate passed (evaluate.gate_*
thresholds in params.yaml). With a `store` (s3:// or a folder), the dataset, the
validation report, the model, the release and the TorchServe archive are published there.
On a cluster every task reads the object store's keys from a Secret and its endpoint from a
ConfigMap (kfp-kubernetes; k8s/ creates both) and runs as the images' non-root user; the
train task asks for a GPU, tolerates GPU nodes' taint and gets a memory-backed /dev/shm.
Compile with `sempair pipeline compile`; run with `sempair pipeline run --local`, or on a
cluster with `sempair pipeline submit|schedule --host URL`."""

from typing import NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Model
from kfp.dsl.pipeline_task import PipelineTask

from components import BASE_IMAGE
from components.deploy import deploy
from components.evaluate import evaluate
from components.ingest import ingest
from components.release import release
from components.train import train
from components.validate import validate
from sempair.config import load_config

PIPELINE = load_config().pipeline
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")   # Secret pipeline.s3_secret
S3_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_REGION")          # ConfigMap pipeline.settings_config_map


def on_cluster(task: PipelineTask, *, gpu: bool = False) -> PipelineTask:
    """What a task needs on Kubernetes (ignored by local runs): the object store's settings
    as AWS_* variables, the images' non-root user and, for GPU work, the GPU nodes'
    toleration and a /dev/shm for DataLoader workers and NCCL (a container's is 64 MB)."""
    kubernetes.use_secret_as_env(task, PIPELINE.s3_secret, {k: k for k in S3_KEYS})
    kubernetes.use_config_map_as_env(task, PIPELINE.settings_config_map,
                                     {k: k for k in S3_SETTINGS})
    kubernetes.set_security_context(task, run_as_user=PIPELINE.run_as_user,
                                    run_as_group=PIPELINE.run_as_user, run_as_non_root=True)
    if gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists",
                                  effect="NoSchedule")
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm",
                                   medium="Memory", size_limit="8Gi")
    return task


class PipelineOutputs(NamedTuple):
    dataset: Dataset
    validation: Artifact
    model: Model
    evaluation: Artifact
    version: str        # the model's version: STORE/models/<name>/<version>/
    clips: int
    quarantined: int
    passed: bool        # the evaluation gate's decision; its checks: evaluation.json


@dsl.pipeline(name=PIPELINE.name,
              description="Self-supervised audio-visual training on surveillance recordings "
              f"with embedding-based pair generation. Components run in {BASE_IMAGE}.")
def training_pipeline(
    source: str,
    store: str = "",
    reference: str = "",
    deploy_target: str = "local",
    serve_dir: str = "",
    data_version: str = "",
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
) -> PipelineOutputs:
    """source: folder or s3:// URI of recordings.
    store: where datasets, validation reports and models are published (s3://bucket or a
      folder; empty: only the pipeline's own artifacts).
    reference: a dataset (folder or URI) to check drift against; empty: no drift check.
    deploy_target: "kubernetes" rolls the serving workload (serve.kube_workload) to the new
      archive (needs a store), "local" starts TorchServe in serve_dir and smoke-tests it,
      "none" stops after publishing the archive.
    data_version: the source's version at submission (`sempair pipeline submit` passes it);
      the dataset records the version ingest actually read.
    overrides: params.yaml overrides, e.g. ["ingest.clip_seconds=2.0"]."""
    ingested = ingest(source=source, store=store, data_version=data_version,
                      overrides=overrides)
    ingested.set_display_name("ingest recordings")
    on_cluster(ingested)
    ingested.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")

    validated = validate(dataset=ingested.outputs["dataset"], reference=reference, store=store,
                         overrides=overrides)
    validated.set_display_name("validate data")
    on_cluster(validated)
    validated.set_cpu_request("1").set_memory_request("2G").set_memory_limit("4G")

    trained = train(dataset=ingested.outputs["dataset"],
                    validation=validated.outputs["validation"], store=store,
                    overrides=overrides)
    trained.set_display_name("train encoders")
    on_cluster(trained, gpu=True)
    trained.set_cpu_request("4").set_memory_request("16G").set_memory_limit("32G")

    evaluated = evaluate(dataset=ingested.outputs["dataset"], model=trained.outputs["model"],
                         overrides=overrides)
    evaluated.set_display_name("evaluate encoders")
    on_cluster(evaluated)
    evaluated.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")

    with dsl.If(evaluated.outputs["Output"] == True, name="evaluation-gate"):  # noqa: E712
        released = release(model=trained.outputs["model"],
                           evaluation=evaluated.outputs["evaluation"],
                           dataset=ingested.outputs["dataset"], store=store,
                           version=trained.outputs["version"], overrides=overrides)
        released.set_display_name("release model")
        on_cluster(released)
        released.set_cpu_request("1").set_memory_request("2G").set_memory_limit("4G")

        deployed = deploy(release=released.outputs["bundle"],
                          dataset=ingested.outputs["dataset"], source=source,
                          version=trained.outputs["version"], store=store,
                          target=deploy_target, serve_dir=serve_dir, overrides=overrides)
        deployed.set_display_name("deploy to TorchServe")
        on_cluster(deployed)
        deployed.set_cpu_request("1").set_memory_request("2G").set_memory_limit("4G")

    return PipelineOutputs(dataset=ingested.outputs["dataset"],
                           validation=validated.outputs["validation"],
                           model=trained.outputs["model"],
                           version=trained.outputs["version"],
                           evaluation=evaluated.outputs["evaluation"],
                           clips=ingested.outputs["clips"],
                           quarantined=ingested.outputs["quarantined"],
                           passed=evaluated.outputs["Output"])
