"""Every benchmark figure in README and docs/ comes from a committed log: the logs and reports they name exist and
are committed, every section of the benchmark pages that states a measured figure names one (a heading's log
covers its subsections), and every figure in their tables is found in those logs at the precision printed.

README's default-build table and docs/task-metrics.md's tables are rendered from committed reports and checked
exactly by tests/test_readme_numbers.py and tests/test_docs_numbers.py; this file covers the rest."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BENCHMARK_PAGES = [ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "planner.md"]

LOG = re.compile(r"benchmarks/results-[\w.-]+\.log|docs/(?:results|runs)/[\w.-]+")
# a measured figure: a number with a decimal point, or a thousands separator (7,859)
FIGURE = re.compile(r"(?<![\w.])[-−+]?\d[\d,]*\.\d+(?![\d.])|(?<![\w.,])\d{1,3}(?:,\d{3})+(?![\d,])")
# not figures: versions (2.11.0, torch 2.11), hashes, links, code spans, file names
NOT_FIGURES = [re.compile(p) for p in (
    r"\]\([^)]*\)", r"`[^`]*`", r"\d+(?:\.\d+){2,}[\w+.]*", r"[A-Za-z]+-\d+(?:\.\d+)*(?:-\w+)*",
    r"(?:torch|transformers|peft|trl|bitsandbytes|liger-kernel|triton|accelerate|llama-cpp-python|gguf|Python)"
    r" \d+\.\d+", r"\b(?:issue|issues|PR|#)\s*\d+")]
# table columns that are derived from other columns (ratios, changes), not read from a log
DERIVED_COLUMN = re.compile(r"×|ratio|/ tutorial|change|→|vs")


def strip_non_figures(text: str) -> str:
    for pattern in NOT_FIGURES:
        text = pattern.sub(" ", text)
    return text


def sections(path: Path) -> list[tuple[str, str, set[str]]]:
    """(heading, body, logs) per section; a section's logs include those named under its parent headings."""
    out: list[tuple[str, str, set[str]]] = []
    stack: list[tuple[int, set[str]]] = []  # (heading level, logs named in that section's own body)
    heading, level, body = "(top)", 0, []

    def close() -> None:
        own = set(LOG.findall("\n".join(body)))
        inherited = set().union(*(logs for lvl, logs in stack if lvl < level)) if stack else set()
        out.append((heading, "\n".join(body), own | inherited))
        stack[:] = [(lvl, logs) for lvl, logs in stack if lvl < level] + [(level, own)]

    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if line.startswith("#") and not in_code:
            close()
            heading, level, body = line, len(line) - len(line.lstrip("#")), []
        else:
            body.append(line)
    close()
    return out


def log_numbers(logs: set[str]) -> list[float]:
    numbers: list[float] = []
    for name in logs:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(path.glob("*.json")) if path.is_dir() else []
        for f in files:
            numbers += [float(m) for m in re.findall(r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?", f.read_text())]
    return numbers


def in_logs(figure: str, numbers: list[float]) -> bool:
    """`figure` as printed (7,859 / 0.64 / −7.4 / 95.6) equals some logged number rounded to its precision,
    directly or as a percentage of a fraction."""
    text = figure.replace(",", "").replace("−", "-").lstrip("+")
    decimals = len(text.split(".")[1]) if "." in text else 0
    value = abs(float(text))
    return any(round(abs(n) * scale, decimals) == value for n in numbers for scale in (1, 100))


def tracked(path: Path) -> bool:
    done = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True)
    return done.returncode == 0


def test_named_logs_exist_and_are_committed():
    in_git = subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode == 0
    named = {(doc.name, name) for doc in DOCS for name in LOG.findall(doc.read_text())}
    assert len(named) > 10
    for doc, name in sorted(named):
        path = ROOT / name
        assert path.exists(), f"{doc} names {name}, which does not exist"
        if in_git:
            files = [path] if path.is_file() else list(path.iterdir())
            assert files and all(tracked(f) for f in files), f"{doc} names {name}, which is not committed"


def test_every_log_is_cited():
    """A committed log no page cites is a measurement nobody can find (or a figure that lost its citation)."""
    cited = "\n".join(doc.read_text() for doc in DOCS)
    for log in sorted((ROOT / "benchmarks").glob("results-*.log")):
        assert f"benchmarks/{log.name}" in cited, f"no page in README/docs cites {log.name}"


@pytest.mark.parametrize("page", BENCHMARK_PAGES, ids=lambda p: p.name)
def test_sections_with_figures_name_their_log(page):
    for heading, body, logs in sections(page):
        figures = FIGURE.findall(strip_non_figures(body))
        assert not figures or logs, f"{page.name} {heading!r} states {figures[:5]} but names no committed log"


def tables(body: str) -> list[list[list[str]]]:
    rows: list[list[str]] = []
    out = []
    for line in body.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            out.append(rows)
            rows = []
    return out


@pytest.mark.parametrize("page", BENCHMARK_PAGES, ids=lambda p: p.name)
def test_table_figures_are_in_their_logs(page):
    """Each measured cell (not a ratio or change column) is in the section's logs at the precision printed."""
    checked = 0
    for heading, body, logs in sections(page):
        numbers = log_numbers(logs)
        for table in tables(body):
            header = table[0]
            for row in table[2:]:
                for column, cell in zip(header, row):
                    if DERIVED_COLUMN.search(column):
                        continue
                    for figure in FIGURE.findall(strip_non_figures(cell)):
                        checked += 1
                        assert in_logs(figure, numbers), \
                            f"{page.name} {heading!r}: {column} {figure} is in none of {sorted(logs)}"
    assert page.name != "benchmarks.md" or checked > 80, checked


def test_the_check_finds_a_figure_missing_from_its_log(tmp_path, monkeypatch):
    """The control case: a figure edited in a table no longer matches its log."""
    page = tmp_path / "page.md"
    page.write_text("## s\n\nlog: `benchmarks/results-mc-throughput-2026-11-30.log`\n\n| scorer | s |\n|---|---|\n"
                    "| a | 31.71 |\n| b | 31.72 |\n")
    (_, body, logs), = [s for s in sections(page) if s[0] == "## s"]
    numbers = log_numbers(logs)
    assert in_logs("31.71", numbers) and not in_logs("31.72", numbers)


def test_cited_sections_exist():
    """`docs/benchmarks.md, "Run-to-run noise"` and `see "..." below` point at a heading that exists."""
    headings = {doc: {line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")}
                for doc in DOCS}
    cited = 0
    for doc in DOCS:
        text = " ".join(doc.read_text().split())
        for page, name in re.findall(r"(docs/[\w-]+\.md), \"([^\"]+)\"", text):
            cited += 1
            assert any(h.startswith(name) for h in headings[ROOT / page]), f"{doc.name} cites {page}, {name!r}"
        for name in re.findall(r"\"([^\"]+)\" (?:below|above)", text):
            cited += 1
            assert any(h.startswith(name) for h in headings[doc]), f"{doc.name} cites {name!r} below/above"
    assert cited >= 3
