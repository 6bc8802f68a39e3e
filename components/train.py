"""Train step: validated clip dataset -> encoder pair (temporal or EPG) with its model card."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    validation: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    store: str = "",
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
) -> NamedTuple("TrainOutputs", final_loss=float, steps=int, version=str):
    """Self-supervised training on the dataset's train split; see `sempair train --help`.
    The model card records the data, its validation, config and code; with a `store` the
    model is published to STORE/models/<pipeline.model_name>/<version>/."""
    import math
    from collections import namedtuple

    from sempair.config import load_config
    from sempair.lineage import model_uri, read_card
    from sempair.storage import publish
    from sempair.train import train as run_train

    cfg = load_config(None, overrides)
    summary = run_train(dataset.path, model.path, cfg, progress=True,
                        validation=validation.path,
                        dataset_uri=dataset.metadata.get("uri") or dataset.uri)
    print(summary)
    card = read_card(model.path)
    version = card["model"]["version"]
    model.metadata.update({"dataset_id": summary.dataset_id, "pairing": cfg.train.pairing,
                           "loss": cfg.train.loss, "framework": "pytorch",
                           "version": version, "validation": card["validation"]["status"]})
    if store:
        uri = model_uri(store, cfg.pipeline.model_name, version)
        publish(model.path, uri, marker="model_card.json")
        model.metadata["uri"] = uri
        print(f"published the model to {uri}")
    for name in ("final_loss", "mined_precision", "base_rate", "clips_per_second"):
        value = getattr(summary, name)
        if not math.isnan(value):   # no labels -> no precision: leave it out, not NaN
            metrics.log_metric(name, round(value, 4))
    outputs = namedtuple("TrainOutputs", "final_loss steps version")
    return outputs(summary.final_loss, summary.steps, version)
