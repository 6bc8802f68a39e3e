"""Running the suites: every table through one ephemeral Great Expectations context, the
Data Docs site built from the results, and each GX result turned into a `Check`."""

from __future__ import annotations

import shutil
import string
from pathlib import Path

import numpy as np

from sempair.validation.result import Check
from sempair.validation.suites import REINGEST, Table

DATA_DOCS_SITE = "sempair"


def run_suites(tables: list[Table], docs: Path, run_name: str) -> list[Check]:
    """Validate every table in one ephemeral context, then build the Data Docs into `docs`."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(docs)
    source = context.data_sources.add_pandas("dataset")
    run_id = RunIdentifier(run_name=run_name)
    checks = []
    for table in tables:
        batch = source.add_dataframe_asset(table.name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=table.name,
                                                       expectations=table.expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=table.name, data=batch, suite=suite))
        result = definition.run(
            batch_parameters={"dataframe": table.frame}, run_id=run_id,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20,
                           "unexpected_index_column_names": [table.key]})
        order = [e.meta["check"] for e in table.expectations]   # GX reorders its results
        for r in sorted(result.results, key=lambda r: order.index(r.expectation_config.meta
                                                                   ["check"])):
            checks.append(_check(table, r))
    context.build_data_docs(site_names=[DATA_DOCS_SITE])
    return checks


def _context(docs: Path):
    """An ephemeral GX context: no progress bars, one filesystem Data Docs site at `docs`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    shutil.rmtree(docs, ignore_errors=True)    # no stale pages from an earlier run
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(DATA_DOCS_SITE, {
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs.absolute())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    return context


def _check(table: Table, r) -> Check:
    config = r.expectation_config
    values = _observations(r.result, table.key) | {"column": config.kwargs.get("column", "")}
    error = _exception(r)
    observed = f"error: {error}" if error else values["observed"]
    if r.success:
        problem = ""
    elif error:
        problem = (f"{config.meta['check']} could not be checked ({error}); a column is "
                   "probably missing or mistyped: see the schema checks; " + REINGEST)
    else:
        problem = string.Template(config.meta["problem"]).safe_substitute(values)
    return Check(table.suite, config.meta["check"], config.severity.value, bool(r.success),
                 observed, config.description or "", problem)


def _observations(result: dict, key: str) -> dict[str, str]:
    """GX's result dict -> the strings the problem templates use."""
    count, total = result.get("unexpected_count"), result.get("element_count")
    pct = result.get("unexpected_percent") or 0.0
    missing = ((result.get("details") or {}).get("mismatched") or {}).get("missing") or []
    keys = [row.get(key) for row in result.get("partial_unexpected_index_list") or []
            if isinstance(row, dict)]
    values = {
        "count": str(count), "total": str(total), "pct": f"{pct:.3g}%",
        "examples": ", ".join(map(str, _unique(keys)[:3])) or "none shown",
        "values": ", ".join(map(_fmt, _unique(result.get("partial_unexpected_list") or [])[:5])),
        "missing": ", ".join(missing)}
    if "observed_value" in result and not isinstance(result["observed_value"], list):
        values["observed"] = _fmt(result["observed_value"])
    elif "mismatched" in (result.get("details") or {}):
        values["observed"] = f"missing {values['missing']}" if missing else "all present"
    elif count is not None:
        values["observed"] = (f"{count} of {total} rows ({pct:.3g}%)"
                              + (f", e.g. {values['examples']}" if count else ""))
    else:
        values["observed"] = _fmt(result.get("observed_value", ""))
    return values


def _exception(r) -> str:
    """The first exception GX caught while computing this result's metrics, or ""."""
    info = r.exception_info or {}
    for item in [info] if "raised_exception" in info else info.values():
        if isinstance(item, dict) and item.get("raised_exception"):
            return str(item.get("exception_message") or "unknown error").splitlines()[0]
    return ""


def _fmt(value) -> str:
    if value is None:
        return "inf"     # GX reports an infinite KL divergence as None
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))
