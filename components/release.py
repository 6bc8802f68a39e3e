"""Release step (behind the evaluation gate): one bundle with everything serving needs."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def release(
    model: Input[Model],
    evaluation: Input[Artifact],
    bundle: Output[Model],
):
    """Copy the encoders and the evaluation's probe, anomaly reference and metrics into
    one folder with release.json (data lineage + gate); deploy steps take it from here."""
    from sempair.evaluate.release import make_release

    card = make_release(model.path, evaluation.path, bundle.path)
    bundle.metadata.update({"dataset_id": card["dataset_id"], "released": True})
    print(f"released {bundle.path}: trained on {card['dataset_id']}, gate passed")
