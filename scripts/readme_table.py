"""Print README's "what the embedded default produced" table from a build's report.json.

The README's figures come from the committed report of a fresh clone's default build (docs/results/); this
script turns it into the table, and tests/test_readme_numbers.py checks that README holds exactly this output.

  python scripts/readme_table.py docs/results/rpi5-default/report.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FORGETTING = ("mmlu", "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande")


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def vs_gpu(row: dict) -> str:
    v = row.get("vs_gpu")
    if not v or v.get("ci95") is None:
        return "–"
    lo, hi = v["ci95"]
    flips = f", {v['lost']} lost / {v['gained']} gained" if v.get("lost") is not None else ""
    return f"{pts(v['diff'])} pts [{pts(lo)}, {pts(hi)}]{flips}: **{v['verdict']}**"


def fidelity(row: dict) -> str:
    f = row.get("fidelity")
    return "–" if not f else f"{f['kld_mean']:.4f} / {100 * f['top1_agreement']:.1f}%"


def forgetting(row: dict) -> str:
    f = row.get("forgetting") or {}
    return " / ".join(pct((f.get(name) or {}).get("acc")) for name in FORGETTING)


def table(report: dict) -> str:
    rows = report["builds"]
    n = next((r["n"] for r in rows if r.get("n")), None)
    metric = next((r.get("metric") for r in rows if r.get("metric")), "label")
    out = [f"| build | size | held-out {metric} accuracy (n={n}) | vs GPU build (95% CI, verdict) | KLD vs GPU / "
           "top-1 | MMLU / ARC-E / ARC-C / HellaSwag / PIQA / WinoGrande |", "|---|---|---|---|---|---|"]
    for r in rows:
        size = f"{r['size_bytes'] / 1e6:.0f} MB" if r.get("size_bytes") else "–"
        label = f"GGUF {r['name']}" if r["kind"] == "GGUF" else r["kind"]
        out.append(f"| {label} | {size} | {pct(r.get('accuracy'))} | {vs_gpu(r)} | {fidelity(r)} "
                   f"| {forgetting(r)} |")
    rec = report.get("recommendation") or {}
    out.append("")
    out.append(f"Recommendation: **{rec.get('quant') or 'none'}**: {rec.get('reason', '')}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    print(table(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
