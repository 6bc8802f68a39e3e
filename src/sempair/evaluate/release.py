"""A release: the model folder and its evaluation, bundled once the gate has passed.

    RELEASE/
      model.pt config.json dataset.json summary.json      (from `sempair train`)
      metrics.json evaluation.json probe.npz anomaly.npz   (`sempair evaluate`)
      report.html     when the evaluation wrote one (not with --no-report)
      model_card.json the training card plus the evaluation's metrics and gate (lineage)
      release.json    lineage (dataset id and checksum), the gate's checks, every file's sha256

Serving loads everything from this one folder; nothing is released that failed the gate.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sempair import __version__
from sempair.evaluate.embeddings import EvaluationError
from sempair.lineage import CARD, read_card, with_evaluation, write_card
from sempair.storage import sha256_path

FROM_MODEL = ("model.pt", "config.json", "dataset.json", "summary.json", CARD)
FROM_EVALUATION = ("metrics.json", "evaluation.json", "probe.npz", "anomaly.npz")
REPORT = "report.html"      # released when the evaluation wrote it; serving never reads it


def make_release(model_dir: str | Path, evaluation_dir: str | Path, out: str | Path) -> dict:
    """Bundle a model with its passed evaluation into OUT; returns release.json's content."""
    model_dir, evaluation_dir, out = Path(model_dir), Path(evaluation_dir), Path(out)
    from_evaluation = evaluation_files(evaluation_dir)
    missing = [str(d / f) for d, names in ((model_dir, FROM_MODEL),
                                           (evaluation_dir, from_evaluation))
               for f in names if not (d / f).is_file()]
    if missing:
        raise EvaluationError(f"cannot release: {', '.join(missing)} missing; run "
                              "`sempair train` and `sempair evaluate` into these folders first")
    evaluation = json.loads((evaluation_dir / "evaluation.json").read_text())
    lineage = json.loads((model_dir / "dataset.json").read_text())
    if not evaluation["gate"]["passed"]:
        failed = [c["metric"] for c in evaluation["gate"]["checks"] if not c["passed"]]
        raise EvaluationError(f"cannot release: the evaluation gate failed on {failed}; "
                              "improve the model or change the evaluate.gate_* thresholds")
    if evaluation["model"] != str(model_dir.absolute()):
        raise EvaluationError(f"{evaluation_dir} evaluated {evaluation['model']}, not "
                              f"{model_dir.absolute()}; evaluate this model first")
    out.mkdir(parents=True, exist_ok=True)
    for source in [model_dir / f for f in FROM_MODEL] + [evaluation_dir / f
                                                         for f in from_evaluation]:
        shutil.copyfile(source, out / source.name)
    metrics = json.loads((evaluation_dir / "metrics.json").read_text())
    write_card(out, with_evaluation(read_card(model_dir), evaluation, metrics))
    card = {"dataset_id": lineage["dataset_id"], "dataset_checksum": lineage["checksum"],
            "source": lineage["source"], "evaluated_on": evaluation["dataset"],
            "gate": evaluation["gate"], "sempair_version": __version__,
            "files": {name: sha256_path(out / name) for name in (*FROM_MODEL, *from_evaluation)}}
    (out / "release.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def evaluation_files(evaluation_dir: Path) -> tuple[str, ...]:
    """The evaluation's files to release: report.html only if this evaluation wrote one
    (evaluation.json says so; an older one without the flag: if the file is there)."""
    path = evaluation_dir / "evaluation.json"
    wrote = json.loads(path.read_text()).get("report") if path.is_file() else None
    if wrote is None:
        wrote = (evaluation_dir / REPORT).is_file()
    return FROM_EVALUATION + ((REPORT,) if wrote else ())

