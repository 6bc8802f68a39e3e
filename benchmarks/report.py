"""benchmarks/results.md: each benchmark owns one `## Title` section and rewrites only it."""

from pathlib import Path

RESULTS = Path(__file__).with_name("results.md")


def write_section(section: str) -> None:
    """Replace the section whose `## ` heading starts `section`, keeping the others."""
    heading = section.splitlines()[0]
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = text.find(heading + "\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end + 1:] if end >= 0 else "")
    RESULTS.write_text(text.rstrip() + "\n\n" + section.rstrip() + "\n")
    print(f"wrote {RESULTS}")
