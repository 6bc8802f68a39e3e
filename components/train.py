"""Train step: clip dataset -> encoder pair (temporal or EPG, by params/overrides)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
) -> NamedTuple("TrainOutputs", final_loss=float, steps=int):
    """Self-supervised training on the dataset's train split; see `sempair train --help`."""
    import math
    from collections import namedtuple

    from sempair.config import load_config
    from sempair.train import train as run_train

    cfg = load_config(None, overrides)
    summary = run_train(dataset.path, model.path, cfg, progress=True)
    print(summary)
    model.metadata.update({"dataset_id": summary.dataset_id, "pairing": cfg.train.pairing,
                           "loss": cfg.train.loss, "framework": "pytorch"})
    for name in ("final_loss", "mined_precision", "base_rate", "clips_per_second"):
        value = getattr(summary, name)
        if not math.isnan(value):   # no labels -> no precision: leave it out, not NaN
            metrics.log_metric(name, round(value, 4))
    outputs = namedtuple("TrainOutputs", "final_loss steps")
    return outputs(summary.final_loss, summary.steps)
