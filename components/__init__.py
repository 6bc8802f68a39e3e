"""Kubeflow Pipelines components: one thin function per step over the sempair library.

Each is a lightweight Python component whose `base_image` is the project's own image
(params.yaml `pipeline.base_image`; `pipeline.train_image`, a CUDA build, for training),
which already holds sempair and kfp, so the same
component runs on a cluster and locally under `kfp.local.SubprocessRunner(use_venv=False)`.
"""

from sempair.config import load_config

BASE_IMAGE = load_config().pipeline.base_image
TRAIN_IMAGE = load_config().pipeline.train_image
