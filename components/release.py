"""Release step (behind the evaluation gate): one bundle with everything serving needs."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def release(
    model: Input[Model],
    evaluation: Input[Artifact],
    bundle: Output[Model],
    store: str = "",
    version: str = "",
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
):
    """Copy the encoders and the evaluation's probe, anomaly reference and metrics into
    one folder with release.json (data lineage + gate) and the model card with its
    evaluation; with a `store` it goes to STORE/models/<name>/<version>/release/."""
    from sempair.config import load_config
    from sempair.evaluate.release import make_release
    from sempair.storage import publish

    card = make_release(model.path, evaluation.path, bundle.path)
    bundle.metadata.update({"dataset_id": card["dataset_id"], "released": True,
                            "version": version})
    print(f"released {bundle.path}: trained on {card['dataset_id']}, gate passed")
    if store:
        name = load_config(None, overrides).pipeline.model_name
        uri = f"{store.rstrip('/')}/models/{name}/{version}/release"
        publish(bundle.path, uri, marker="release.json")
        bundle.metadata["uri"] = uri
        print(f"published the release to {uri}")
