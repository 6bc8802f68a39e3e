"""Release step (behind the evaluation gate): one bundle with everything serving needs."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def release(
    model: Input[Model],
    evaluation: Input[Artifact],
    dataset: Input[Dataset],
    bundle: Output[Model],
    store: str = "",
    version: str = "",
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
):
    """Copy the encoders and the evaluation's probe, anomaly reference and metrics into
    one folder with release.json (data lineage + gate) and the model card with its
    evaluation, plus serving/: the TorchScript encoders, the training clips' search index
    and the calibrated anomaly threshold (sempair.serving.build_bundle). With a `store` it
    goes to STORE/models/<name>/<version>/release/."""
    from pathlib import Path

    from sempair.config import load_config
    from sempair.evaluate.release import make_release
    from sempair.lineage import model_uri
    from sempair.serving import build_bundle
    from sempair.storage import publish

    cfg = load_config(None, overrides)
    card = make_release(model.path, evaluation.path, bundle.path)
    build_bundle(bundle.path, dataset.path, Path(bundle.path) / "serving", cfg.serve)
    bundle.metadata.update({"dataset_id": card["dataset_id"], "released": True,
                            "version": version})
    print(f"released {bundle.path}: trained on {card['dataset_id']}, gate passed")
    if store:
        name = cfg.pipeline.model_name
        uri = model_uri(store, name, version, "release")
        publish(bundle.path, uri, marker="release.json")
        bundle.metadata["uri"] = uri
        print(f"published the release to {uri}")
