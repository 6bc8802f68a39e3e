"""Evaluate step: frozen encoders -> metrics, confusion matrix, HTML report, gate decision.

It returns the gate's decision as its return value (`Output`): kfp.local resolves a `dsl.If`
on a task's `Output` but not on a named output of a NamedTuple (kfp 2.17). The checks behind the
decision are in the evaluation artifact's metadata and evaluation.json.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
    report: Output[HTML],
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
) -> bool:
    """Localization, anomaly, search and pair quality on the test split; see
    `sempair evaluate --help`. Returns the deploy gate (thresholds: evaluate.gate_*)."""
    import math
    import shutil
    from pathlib import Path

    from sempair.config import load_config
    from sempair.evaluate import evaluate as run_evaluate

    summary = run_evaluate(model.path, dataset.path, evaluation.path, load_config(None, overrides))
    print(summary)
    for name, value in summary.metrics.items():
        if isinstance(value, int | float) and math.isfinite(value):   # nan: undefined
            metrics.log_metric(name, round(value, 4))
    located = summary.localization
    confusion.log_confusion_matrix(located.classes, located.confusion.tolist())
    shutil.copyfile(Path(evaluation.path) / "report.html", report.path)
    evaluation.metadata.update({"passed": summary.passed,
                                "gate": "; ".join(str(check) for check in summary.gate),
                                "dataset_id": dataset.metadata.get("dataset_id", "")})
    return summary.passed
