"""Print README's "what the embedded default produced" table from a build's report.json.

The README's figures come from the committed report of a fresh clone's default build (docs/results/); this
script turns it into the table, and tests/test_readme_numbers.py checks that README holds exactly this output.

  python scripts/readme_table.py docs/results/rpi5-default/report.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from edgetune.report.schema import BuildRow, Report

FORGETTING = ("mmlu", "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande")


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def vs_gpu(row: BuildRow) -> str:
    v = row.vs_gpu
    if v is None or v.ci95 is None or v.diff is None:
        return "–"
    lo, hi = v.ci95
    flips = f", {v.lost} lost / {v.gained} gained" if v.lost is not None else ""
    return f"{pts(v.diff)} pts [{pts(lo)}, {pts(hi)}]{flips}: **{v.verdict}**"


def fidelity(row: BuildRow) -> str:
    f = row.fidelity
    if f is None or f.kld_mean is None or f.top1_agreement is None:
        return "–"
    return f"{f.kld_mean:.4f} / {100 * f.top1_agreement:.1f}%"


def forgetting(row: BuildRow) -> str:
    f = row.forgetting or {}
    return " / ".join(pct(f[name].acc if name in f else None) for name in FORGETTING)


def table(report: Report) -> str:
    rows = report.builds
    n = next((r.n for r in rows if r.n), None)
    metric = next((r.metric for r in rows if r.metric), "label")
    out = [f"| build | size | held-out {metric} accuracy (n={n}) | vs GPU build (95% CI, verdict) | KLD vs GPU / "
           "top-1 | MMLU / ARC-E / ARC-C / HellaSwag / PIQA / WinoGrande |", "|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r.size_bytes / 1e6:.0f} MB" if r.size_bytes else "–"
        label = f"GGUF {r.name}" if r.kind == "GGUF" else r.kind
        out.append(f"| {label} | {size} | {pct(r.accuracy)} | {vs_gpu(r)} | {fidelity(r)} "
                   f"| {forgetting(r)} |")
    rec = report.recommendation
    out.append("")
    out.append(f"Recommendation: **{(rec.quant if rec else None) or 'none'}**: {(rec.reason if rec else '') or ''}")
    return "\n".join(out)


# How each figure of the table may differ between two builds of the same config (benchmarks/report_noise.py
# measures it; docs/benchmarks.md states it): "exact" or an absolute tolerance. Build time and tok/s are not in
# the table and never compared.
TOLERANCE: dict[str, float | str] = {"size_mb": "exact", "accuracy": "exact", "vs_gpu": "exact", "lost": "exact",
                                     "gained": "exact", "verdict": "exact", "kld": 0.002, "top1": 0.01,
                                     "forgetting": "exact", "recommendation": "exact", "n": "exact"}


def metrics(report: Report) -> dict[str, float | str | None]:
    """Every figure the table shows, by name ("<build>.<metric>"), at the precision the table prints it."""
    out: dict[str, float | str | None] = {}
    for r in report.builds:
        name = r.name
        out[f"{name}.n"] = r.n
        out[f"{name}.size_mb"] = round(r.size_bytes / 1e6) if r.size_bytes else None
        out[f"{name}.accuracy"] = None if r.accuracy is None else round(100 * r.accuracy, 1)
        v = r.vs_gpu
        if v is not None and v.diff is not None and v.ci95 is not None:
            out[f"{name}.vs_gpu"] = f"{100 * v.diff:+.1f} [{100 * v.ci95[0]:+.1f}, {100 * v.ci95[1]:+.1f}]"
            out[f"{name}.lost"], out[f"{name}.gained"], out[f"{name}.verdict"] = v.lost, v.gained, v.verdict
        f = r.fidelity
        if f is not None and f.kld_mean is not None and f.top1_agreement is not None:
            out[f"{name}.kld"], out[f"{name}.top1"] = round(f.kld_mean, 4), round(f.top1_agreement, 3)
        for suite, fg in (r.forgetting or {}).items():
            if suite in FORGETTING:
                out[f"{name}.forgetting.{suite}"] = None if fg.acc is None else round(100 * fg.acc, 1)
    out["recommendation"] = report.recommendation.quant if report.recommendation else None
    return out


# Across hosts: CI's CPU is not always the one that made the committed report, and llama.cpp's CPU kernels differ
# by instruction set (AVX-512 VNNI or AVX-VNNI dot products, ...), so they round differently and a GGUF build's
# answer on an item near a tie can flip. Measured between the committed report's AMD EPYC and an Intel Xeon with
# AMX (built with AMX off, as set-up does there): at most 2 items moved per figure; KLD by 0.0102 (2%) on Q4_0 and
# 0.0005 (6%) on Q8_0; top-1 by 0.012 (benchmarks/results-cross-host-default-2026-12-07.log). Allowed:
# ACROSS_HOSTS_ITEMS items of the figure's n (one more than measured), an adjacent verdict (the CI straddling the
# margin moved with those items), KLD 5% or 0.002 (the same-host allowance), whichever is larger, top-1 0.03.
# Sizes, n and the recommendation stay exact.
ACROSS_HOSTS_ITEMS = 3
ACROSS_HOSTS: dict[str, float | str] = {**TOLERANCE, "accuracy": "items", "vs_gpu": "items", "lost": "items",
                                        "gained": "items", "forgetting": "items", "verdict": "adjacent",
                                        "kld": "5% or 0.002", "top1": 0.03}
VERDICT_ORDER = ("worse", "inconclusive", "not worse")


def tolerance(name: str, rules: dict[str, float | str] = TOLERANCE) -> float | str:
    return rules[name.split(".")[1] if "." in name else name]


def item_counts(report: Report) -> dict[str, int]:
    """The number of items behind each figure that counts items: a build's held-out n, a forgetting suite's n."""
    out: dict[str, int] = {}
    for r in report.builds:
        if r.n:
            for figure in ("accuracy", "vs_gpu", "lost", "gained"):
                out[f"{r.name}.{figure}"] = r.n
        for suite, fg in (r.forgetting or {}).items():
            if fg.n:
                out[f"{r.name}.forgetting.{suite}"] = fg.n
    return out


def _within(a: object, b: object, tol: float | str, n: int | None) -> bool:
    if tol == "exact" or a is None or b is None:
        return False
    if tol == "adjacent":
        return a in VERDICT_ORDER and b in VERDICT_ORDER and \
            abs(VERDICT_ORDER.index(str(a)) - VERDICT_ORDER.index(str(b))) == 1
    if tol == "items":
        if n is None:
            return False
        if isinstance(a, int) and isinstance(b, int):  # lost, gained: item counts
            return abs(a - b) <= ACROSS_HOSTS_ITEMS
        allowed = 100 * ACROSS_HOSTS_ITEMS / n + 0.05  # points, plus the table's rounding
        if isinstance(a, str) and isinstance(b, str):  # vs_gpu: "+d [lo, hi]", each within the allowance
            xs, ys = re.findall(r"[+-]\d+\.\d", a), re.findall(r"[+-]\d+\.\d", b)
            return len(xs) == len(ys) == 3 and all(abs(float(x) - float(y)) <= allowed for x, y in zip(xs, ys))
        return isinstance(a, float) and isinstance(b, float) and abs(a - b) <= allowed
    if not (isinstance(a, float) and isinstance(b, float)):
        return False
    if isinstance(tol, str) and "%" in tol:  # "P% or A": relative or absolute, whichever allows more
        share, _, absolute = tol.partition("% or ")
        return abs(a - b) <= max(float(share) / 100 * abs(b), float(absolute or 0))
    return abs(a - b) <= float(tol)


def differences(current: Report, committed: Report, rules: dict[str, float | str] = TOLERANCE) -> list[str]:
    """The figures of `current` that differ from `committed` beyond `rules` (TOLERANCE: the same host;
    ACROSS_HOSTS: another CPU), one line each."""
    now, then, counts = metrics(current), metrics(committed), item_counts(committed)
    out = []
    for name in sorted(set(now) | set(then)):
        a, b, tol = now.get(name), then.get(name), tolerance(name, rules)
        if a == b or _within(a, b, tol, counts.get(name)):
            continue
        shown = f"{ACROSS_HOSTS_ITEMS} items of {counts[name]}" if tol == "items" and name in counts else tol
        out.append(f"{name}: {a} now, {b} in the committed report (allowed: {shown})")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    print(table(Report.load(json.loads(Path(argv[0]).read_text()))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
