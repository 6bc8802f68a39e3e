"""The training pipeline DAG: ingest -> (validate -> train -> evaluate -> deploy, next).

Compile with `python -m pipelines.compile`; run locally with `python -m pipelines.local`.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset

from components import BASE_IMAGE
from components.ingest import ingest
from sempair.config import load_config

PIPELINE = load_config().pipeline


class PipelineOutputs(NamedTuple):
    dataset: Dataset
    clips: int
    quarantined: int


@dsl.pipeline(name=PIPELINE.name,
              description="Self-supervised audio-visual training on surveillance recordings "
              f"with embedding-based pair generation. Components run in {BASE_IMAGE}.")
def training_pipeline(
    source: str,
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
) -> PipelineOutputs:
    """source: folder (or, on a cluster, object-store URI) of recordings.
    overrides: params.yaml overrides, e.g. ["ingest.clip_seconds=2.0"]."""
    ingested = ingest(source=source, overrides=overrides)
    ingested.set_display_name("ingest recordings")
    ingested.set_cpu_request("2").set_memory_request("4G").set_memory_limit("8G")
    return PipelineOutputs(dataset=ingested.outputs["dataset"],
                           clips=ingested.outputs["clips"],
                           quarantined=ingested.outputs["quarantined"])
