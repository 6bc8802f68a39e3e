"""The data-validation gate after ingest: Great Expectations Core 1.x suites, written as code.

    result = validate_dataset("data/clips", "runs/validate", cfg.validate, reference=None)
    result.raise_for_failures()      # the caller decides; validation itself never raises on data

One function per suite (suites.py) turns `ValidateConfig` into GX expectations, each with a
severity (`critical` stops the pipeline, `warning` is reported) and a human description.
Every suite runs on a pandas frame in one ephemeral GX context per call: the clip dataset's
tables, plus small frames derived from them (a recording's splits, an event's recording
duration). File integrity is plain Python, reported in the same list of checks.

Outputs in `out`: validation.json, validation.md, validation.html (one self-contained page)
and data_docs/ (the GX Data Docs site). See docs/validation.md.

The package, in reading order: suites.py (loading the dataset, the suites as code), gx.py
(running them, Data Docs, GX results -> checks), integrity.py (file checks), result.py
(`Check`, `ValidationResult`, the Markdown summary) and report.py (the HTML page).
"""

from __future__ import annotations

import json
from pathlib import Path

from sempair import json_safe
from sempair.config import ValidateConfig
from sempair.validation import suites
from sempair.validation.gx import run_suites
from sempair.validation.integrity import integrity_checks
from sempair.validation.result import Check, ValidationFailed, ValidationResult

__all__ = ["Check", "ValidationFailed", "ValidationResult", "validate_dataset"]


def validate_dataset(dataset: str | Path, out: str | Path, cfg: ValidateConfig,
                     reference: str | Path | None = None) -> ValidationResult:
    """Validate the clip dataset at `dataset` (drift against `reference` if given); write the
    reports into `out`. Never raises on bad data: see `ValidationResult.raise_for_failures`."""
    import great_expectations as gx

    data = suites.load(Path(dataset))
    ref = suites.load(Path(reference)) if reference is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = [*suites.recordings_suite(data, cfg), *suites.clips_suite(data, cfg),
              *suites.annotations_suite(data, cfg), *suites.drift_suite(data, ref, cfg)]
    checks = integrity_checks(data) + run_suites(tables, out / "data_docs",
                                                 run_name=data.meta["dataset_id"])
    result = ValidationResult(
        dataset_id=data.meta["dataset_id"], checksum=data.meta["checksum"],
        reference_id=ref.meta["dataset_id"] if ref else None, checks=tuple(checks),
        gx_version=gx.__version__)
    (out / "validation.md").write_text(result.summary_markdown())
    (out / "validation.html").write_text(result.summary_html())
    # last: its presence marks a complete report (the marker when published to a store)
    (out / "validation.json").write_text(json.dumps(json_safe(result.to_dict()), indent=2) + "\n")
    return result
