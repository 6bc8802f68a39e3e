"""validation.html: one self-contained page with every check, grouped by suite."""

from __future__ import annotations

import html

from sempair.validation.result import CRITICAL, Check, ValidationResult, suite_names

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.verdict{font-size:1.4em;font-weight:bold;padding:.5em}
.pass{background:#e6f4e6}.fail{background:#fbe3e3}.warn{background:#fff4d6}
.problems li{margin-bottom:.4em}code{background:#f3f3f3;padding:0 3px}"""


def html_page(result: ValidationResult) -> str:
    """The verdict, every problem with its fix, then one table of checks per suite."""
    esc = html.escape
    counts = result._counts()
    verdict = "PASSED" if result.passed else "FAILED"
    problems = "".join(f"<li><b>{esc(c.suite)}: {esc(c.name)}</b> ({esc(c.severity)}): "
                       f"{esc(c.problem)}</li>"
                       for c in (*result.failures, *result.warnings))
    sections = []
    for suite in suite_names(result.checks):
        rows = "".join(
            f"<tr class='{_row_class(c)}'><td>{'pass' if c.success else 'FAIL'}</td>"
            f"<td>{esc(c.name)}</td><td>{esc(c.severity)}</td><td>{esc(c.observed)}</td>"
            f"<td>{esc(c.expected)}</td></tr>"
            for c in result.checks if c.suite == suite)
        sections.append(f"<h2>{esc(suite)}</h2><table><tr><th>result</th><th>check</th>"
                        f"<th>severity</th><th>observed</th><th>expected</th></tr>{rows}"
                        "</table>")
    reference = (f", drift reference <code>{esc(result.reference_id)}</code>"
                 if result.reference_id else "")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Validation "
            f"{esc(result.dataset_id)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Validation of dataset <code>{esc(result.dataset_id)}</code></h1>"
            f"<div class='verdict {'pass' if result.passed else 'fail'}'>{verdict}</div>"
            f"<p>{counts['checks']} checks: {counts['passed']} passed, {counts['failures']} "
            f"critical failures, {counts['warnings']} warnings{reference}. "
            f"Checksum <code>{esc(result.checksum)}</code>, Great Expectations "
            f"{esc(result.gx_version)}. The GX Data Docs are in "
            "<code>data_docs/index.html</code> next to this page.</p>"
            + (f"<h2>Problems</h2><ul class='problems'>{problems}</ul>" if problems else "")
            + "".join(sections) + "</body></html>\n")


def _row_class(check: Check) -> str:
    if check.success:
        return "pass"
    return "fail" if check.severity == CRITICAL else "warn"
