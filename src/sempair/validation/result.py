"""What a validation returns: one `Check` per expectation or file check, gathered in a
`ValidationResult` that renders the Markdown summary and decides the gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sempair import SempairError

CRITICAL, WARNING = "critical", "warning"


class ValidationFailed(SempairError):
    """Critical validation failures (or a folder that is no dataset); the message lists them."""


@dataclass(frozen=True)
class Check:
    suite: str         # recordings, clips, annotations, integrity or drift
    name: str
    severity: str      # critical or warning
    success: bool
    observed: str
    expected: str
    problem: str       # what failed, by how much, and the fix; "" on success


@dataclass(frozen=True)
class ValidationResult:
    dataset_id: str
    checksum: str
    reference_id: str | None
    checks: tuple[Check, ...]
    gx_version: str

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.success and c.severity == CRITICAL)

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.success and c.severity != CRITICAL)

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        """Raise ValidationFailed listing every critical problem; return if there is none."""
        if self.failures:
            n = len(self.failures)
            raise ValidationFailed(
                f"validation failed for dataset {self.dataset_id}: {n} critical "
                f"problem{'s' if n > 1 else ''}:\n"
                + "\n".join(f"  - {c.suite}: {c.problem}" for c in self.failures))

    def to_dict(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "checksum": self.checksum,
                "reference_id": self.reference_id, "gx_version": self.gx_version,
                "passed": self.passed, "counts": self._counts(),
                "checks": [asdict(c) for c in self.checks]}

    def summary_markdown(self) -> str:
        """Verdict, failed critical checks, then warnings (observed vs expected), counts."""
        counts = self._counts()
        lines = [f"## Validation: dataset `{self.dataset_id}` — "
                 f"{'PASSED' if self.passed else 'FAILED'}", "",
                 f"{counts['checks']} checks in {', '.join(suite_names(self.checks))}: "
                 f"{counts['passed']} passed, {counts['failures']} critical failures, "
                 f"{counts['warnings']} warnings."
                 + (f" Drift reference: `{self.reference_id}`." if self.reference_id else ""),
                 ""]
        for title, checks in (("Critical failures", self.failures), ("Warnings", self.warnings)):
            if checks:
                lines += [f"### {title}", "", "| suite | check | observed | expected |",
                          "|---|---|---|---|"]
                lines += [f"| {c.suite} | {_md(c.name)} | {_md(c.observed)} | {_md(c.expected)} |"
                          for c in checks]
                lines += [""] + [f"- **{c.suite}: {_md(c.name)}**: {c.problem}" for c in checks]
                lines.append("")
        if not self.failures and not self.warnings:
            lines += ["Every check passed.", ""]
        lines.append(f"Great Expectations {self.gx_version}; every check and its result are in "
                     "validation.html, the GX Data Docs in data_docs/index.html.")
        return "\n".join(lines) + "\n"

    def summary_html(self) -> str:
        """One self-contained HTML page listing every check (the Kubeflow HTML artifact)."""
        from sempair.validation.report import html_page  # report imports this module

        return html_page(self)

    def _counts(self) -> dict[str, int]:
        return {"checks": len(self.checks), "passed": sum(c.success for c in self.checks),
                "failures": len(self.failures), "warnings": len(self.warnings)}


def suite_names(checks) -> list[str]:
    """The suites of `checks`, in order of first appearance."""
    return list(dict.fromkeys(c.suite for c in checks))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
