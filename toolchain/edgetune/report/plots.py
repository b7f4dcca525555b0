"""The report's plots as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no display, no global
backend switch). Each function returns None when the report lacks what it plots. Reads and writes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from edgetune.constants import BASE_BUILD, GPU_BUILD
from edgetune.report.schema import BuildRow, Finetune, Report
from edgetune.report.sections import ReportLike, device_runs, per_build

DPI = 110
GPU_COLOR, GGUF_COLOR, BASE_COLOR, FAIL_COLOR = "#1f6feb", "#2da44e", "#8c959f", "#cf222e"


def _figure(width_in: float = 6.4, height_in: float = 3.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _plain_log_axis(ax, which: str) -> None:
    """Log-scale the x or y axis, labelled 100, 200, 500 rather than 10², 2×10²."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _color(name: str) -> str:
    return {GPU_BUILD: GPU_COLOR, BASE_BUILD: BASE_COLOR}.get(name, GGUF_COLOR)


def accuracy_vs_size(report: ReportLike) -> bytes | None:
    """Task accuracy (Wilson 95% CI as error bars) against file size, one point per build other than the base
    (whose low score would squash the quants together); the GPU build's CI is a shaded band."""
    rows: list[tuple[BuildRow, float, int]] = [
        (r, r.accuracy, r.size_bytes) for r in Report.load(report).builds
        if r.accuracy is not None and r.size_bytes and r.name != BASE_BUILD]
    if not rows:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for r, accuracy, size_bytes in rows:
        lo, hi = r.ci95 or (accuracy, accuracy)
        x, y = size_bytes / 1e6, 100 * accuracy
        err = [[max(0.0, y - 100 * lo)], [max(0.0, 100 * hi - y)]]
        ax.errorbar([x], [y], yerr=err, fmt="o", color=_color(r.name), capsize=4)
        ax.annotate(r.name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if r.name == GPU_BUILD:
            ax.axhspan(100 * lo, 100 * hi, color=GPU_COLOR, alpha=0.08, label="GPU build 95% CI")
    _plain_log_axis(ax, "x")
    ax.margins(x=0.12)  # room for the point labels at both ends
    ax.set_xlabel("size (MB, log scale)")
    ax.set_ylabel("task accuracy (%)")
    ax.set_title("Accuracy vs size (95% Wilson CI)", fontsize=10)
    ax.grid(alpha=0.3)
    if any(r.name == GPU_BUILD for r, _, _ in rows):
        ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def kld_per_build(report: ReportLike) -> bytes | None:
    """Mean KL divergence against the GPU build per build (bars), its 99th percentile (markers); failed gates
    in red."""
    rep = Report.load(report)
    fid = {n: f for n, f in per_build({r.name: r.fidelity for r in rep.builds}, rep.fidelity).items()
           if f.kld_mean is not None}
    if not fid:
        return None
    names = list(fid)
    means = [f.kld_mean or 0.0 for f in fid.values()]  # every one set (filtered above)
    fig = _figure()
    ax = fig.add_subplot()
    colors = [FAIL_COLOR if f.gate is not None and f.gate.passed is False else GGUF_COLOR for f in fid.values()]
    ax.bar(names, means, color=colors, label="mean")
    p99 = [(i, f.kld_p99) for i, f in enumerate(fid.values()) if f.kld_p99 is not None]
    if p99:
        ax.plot([i for i, _ in p99], [v for _, v in p99], "k_", markersize=18, mew=2, label="p99")
    values = means + [v for _, v in p99]
    if min(values) > 0 and max(values) / min(values) > 50:
        ax.set_yscale("log")
    ax.set_ylabel("KL(GPU build ‖ build) (nats)")
    ax.set_title("Next-token KL divergence per build (red: gate failed)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def measured_vs_predicted(report: ReportLike) -> bytes | None:
    """Measured against predicted tokens per second on the device, prompt and generation, with y = x."""
    pts = [(name, kind, predicted, measured) for name, d in device_runs(report).items()
           for kind, predicted, measured in (("prompt", d.predicted_prompt_tps, d.prompt_tps),
                                             ("gen", d.predicted_gen_tps, d.gen_tps))
           if measured and predicted]
    if not pts:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for kind, marker, label in (("prompt", "o", "prompt processing"), ("gen", "s", "generation")):
        sel = [p for p in pts if p[1] == kind]
        if sel:
            ax.scatter([p[2] for p in sel], [p[3] for p in sel], marker=marker, label=label)
            for name, _, x, y in sel:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=8)
    lo = min(min(p[2], p[3]) for p in pts) / 1.5
    hi = max(max(p[2], p[3]) for p in pts) * 1.5
    ax.plot([lo, hi], [lo, hi], color="#57606a", lw=1, ls="--", label="measured = predicted")
    _plain_log_axis(ax, "x")
    _plain_log_axis(ax, "y")
    ax.set_xlabel("predicted tok/s")
    ax.set_ylabel("measured tok/s")
    ax.set_title("Device throughput: measured vs predicted", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def compare_accuracy(rows: Sequence[Mapping[str, Any]], label_a: str, label_b: str) -> bytes | None:
    """Accuracy of run A and run B per matching build, with their 95% CIs, side by side."""
    rows = [r for r in rows if r.get("a") and r.get("b")]
    if not rows:
        return None
    fig = _figure(max(6.4, 1.1 * len(rows) + 2))
    ax = fig.add_subplot()
    for offset, side, label, color in ((-0.15, "a", label_a, GPU_COLOR), (0.15, "b", label_b, GGUF_COLOR)):
        xs = [i + offset for i in range(len(rows))]
        ys = [100 * r[side]["accuracy"] for r in rows]
        err = [[max(0.0, y - 100 * r[side]["ci95"][0]) for y, r in zip(ys, rows)],
               [max(0.0, 100 * r[side]["ci95"][1] - y) for y, r in zip(ys, rows)]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=4, color=color, label=label)
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows])
    ax.set_ylabel("task accuracy (%)")
    ax.set_title("Accuracy per build, A vs B (95% Wilson CI)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def training_curve(ft: Finetune) -> bytes | None:
    """The fine-tune's training loss by step, and each epoch's held-out exact match (right axis) where the
    train stage measured it; None without a logged loss (report.finetune's `training`)."""
    training = ft.training
    loss = training.loss if training is not None else []
    if training is None or not loss:
        return None
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    ax.plot([s for s, _ in loss], [v for _, v in loss], color=GPU_COLOR, label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    epochs = [(e.step, e.accuracy) for e in training.epochs if e.accuracy is not None]
    if epochs:
        right = ax.twinx()
        right.plot([step for step, _ in epochs], [100 * acc for _, acc in epochs], "o--", color=GGUF_COLOR,
                   label="held-out exact match")
        right.set_ylabel("held-out exact match (%)")
        right.set_ylim(0, 100)
    return _png(fig)


_KIND_MARKERS = {"plain": "o", "imatrix": "s", "searched mix": "D", "recovery adapter": "^"}


def pareto(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Accuracy and fidelity KLD against file size for the quantization variants (rows with `build`, `kind`,
    `size_mb`, `accuracy`, `kld_mean`; a `gpu` row without a size draws the GPU build's accuracy as a line),
    each panel with its Pareto front (no smaller file is better) drawn through the points."""
    pts = [r for r in rows if r.get("size_mb") and r.get("accuracy") is not None and r.get("kld_mean") is not None]
    if not pts:
        return None
    fig = _figure(9.6, 3.8)
    for ax, key, better_high, label in ((fig.add_subplot(1, 2, 1), "accuracy", True, "held-out accuracy"),
                                        (fig.add_subplot(1, 2, 2), "kld_mean", False, "mean KLD to GPU build")):
        for r in pts:
            ax.scatter(r["size_mb"], r[key], marker=_KIND_MARKERS.get(r["kind"], "o"), color=GGUF_COLOR, zorder=3,
                       label=r["kind"])
            ax.annotate(r["build"], (r["size_mb"], r[key]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        front, best = [], None
        for r in sorted(pts, key=lambda r: (r["size_mb"], -r[key] if better_high else r[key])):
            v = r[key]
            if best is None or (v > best if better_high else v < best):
                front.append(r)
                best = v
        ax.step([r["size_mb"] for r in front], [r[key] for r in front], where="post", color=GGUF_COLOR, alpha=0.5)
        gpu = next((r for r in rows if r.get("build") == GPU_BUILD), None)
        if key == "accuracy" and gpu is not None:
            ax.axhline(gpu["accuracy"], color=GPU_COLOR, linestyle="--", linewidth=1, label="GPU build")
        if key == "kld_mean":
            ax.set_yscale("log")
        ax.set_xlabel("file size (MB, base + adapter)")
        ax.set_ylabel(label)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    return _png(fig)


def pareto_rows(report: ReportLike) -> list[dict[str, Any]]:
    """A report's builds as `pareto`'s rows: every GGUF with a size, an accuracy and a fidelity KLD, kinds told
    from their names (auto:<QUANT>-size: a searched mix; +recovery: a quant with its recovery adapter), and the
    GPU build's accuracy for the reference line."""
    rows: list[dict[str, Any]] = []
    for r in Report.load(report).builds:
        if r.name == GPU_BUILD and r.accuracy is not None:
            rows.append({"build": GPU_BUILD, "kind": "GPU build", "size_mb": None, "accuracy": r.accuracy})
        elif r.fidelity is not None and r.size_bytes and r.accuracy is not None:
            kind = ("searched mix" if r.name.startswith("auto:") else
                    "recovery adapter" if r.name.endswith("+recovery") else "plain")
            rows.append({"build": r.name, "kind": kind, "size_mb": r.size_bytes / 1e6, "accuracy": r.accuracy,
                         "kld_mean": r.fidelity.kld_mean})
    return rows
