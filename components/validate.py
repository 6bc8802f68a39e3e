"""Validate step: the Great Expectations gate between ingest and training.

A critical failure fails the task, so nothing trains on bad data; the log lists what
failed and by how much. With a `store`, the report is published there first, so it
outlives the failed task (a failed task's output artifacts are not kept on a cluster).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate(
    dataset: Input[Dataset],
    validation: Output[Artifact],
    data_docs: Output[HTML],
    summary: Output[Markdown],
    reference: str = "",
    store: str = "",
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
) -> NamedTuple("ValidateOutputs", passed=bool, critical=int, warnings=int):
    """Suites on recordings, clips and annotations, plus drift against `reference` (a
    dataset folder or URI); see `sempair validate --help`."""
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from sempair.config import load_config
    from sempair.lineage import validation_uri
    from sempair.storage import fetch, publish
    from sempair.validation import validate_dataset

    cfg = load_config(None, overrides)
    result = validate_dataset(dataset.path, validation.path, cfg.validate,
                              reference=fetch(reference, marker="meta.json") if reference
                              else None)
    out = Path(validation.path)
    shutil.copyfile(out / "validation.html", data_docs.path)
    shutil.copyfile(out / "validation.md", summary.path)
    validation.metadata.update({"dataset_id": result.dataset_id, "passed": result.passed,
                                "critical": len(result.failures),
                                "warnings": len(result.warnings)})
    if store:
        uri = validation_uri(store, result.dataset_id)
        publish(out, uri, marker="validation.json")
        validation.metadata["uri"] = uri
        print(f"validation report: {uri}")
    print(result.summary_markdown())
    result.raise_for_failures()
    outputs = namedtuple("ValidateOutputs", "passed critical warnings")
    return outputs(result.passed, len(result.failures), len(result.warnings))
