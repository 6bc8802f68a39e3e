"""Ingest step: recordings -> clip dataset, with a quarantine report."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(
    source: str,
    dataset: Output[Dataset],
    report: Output[Markdown],
    store: str = "",
    data_version: str = "",
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
) -> NamedTuple("IngestOutputs", clips=int, recordings=int, quarantined=int, dataset_id=str):
    """Cut the recordings under `source` (a folder or s3:// URI) into clips; with a `store`
    (folder or s3:// URI) the dataset is also published to STORE/datasets/<dataset_id>/.
    data_version: the source's version when the run was submitted (`sempair pipeline
    submit`); the dataset records the version it actually read. See `sempair ingest --help`."""
    from collections import namedtuple

    from sempair.config import load_config
    from sempair.ingest import ingest as run_ingest
    from sempair.lineage import dataset_uri
    from sempair.storage import publish

    summary = run_ingest(source, dataset.path, load_config(None, overrides), overwrite=True)
    print(summary)
    if data_version and data_version != summary.source_version:
        print(f"note: the source changed after this run was submitted ({data_version}); "
              f"the dataset records what was read: {summary.source_version}")
    dataset.metadata.update({"dataset_id": summary.dataset_id, "clips": summary.clips,
                             "recordings": summary.recordings, "source": source,
                             "source_version": summary.source_version,
                             "submitted_data_version": data_version, "splits": summary.splits})
    if store:
        uri = dataset_uri(store, summary.dataset_id)
        publish(dataset.path, uri, marker="meta.json")
        dataset.metadata["uri"] = uri
        print(f"published the dataset to {uri}")
    with open(report.path, "w") as handle:
        handle.write(summary.markdown())
    outputs = namedtuple("IngestOutputs", "clips recordings quarantined dataset_id")
    return outputs(summary.clips, summary.recordings, len(summary.quarantined),
                   summary.dataset_id)
