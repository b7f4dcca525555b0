"""What winning back quantization's cost bought (issue 20): for each plain quant that has a searched mix
(`auto:<QUANT>-size`) or a recovery adapter (`<QUANT>+recovery`) beside it, the GPU build, the quant alone and
each variant on the same held-out items: size, accuracy, the share of the quant's accuracy loss won back, mean
KLD to the GPU build and its change, and generation speed on the board where the device eval ran. Reads the
report through its schema; reads and writes nothing else.
"""

from __future__ import annotations

from edgetune.constants import GPU_BUILD
from edgetune.report.schema import BuildRow, DeviceRun, Report
from edgetune.report.sections import ReportLike, Table, mb, pct, signed_pts

AUTO_PREFIX, AUTO_SUFFIX, RECOVERY_SUFFIX = "auto:", "-size", "+recovery"


def _variant_of(name: str) -> str | None:
    """The plain quant a build wins back for, or None for any other build."""
    if name.startswith(AUTO_PREFIX) and name.endswith(AUTO_SUFFIX):
        return name[len(AUTO_PREFIX): -len(AUTO_SUFFIX)]
    if name.endswith(RECOVERY_SUFFIX):
        return name[: -len(RECOVERY_SUFFIX)]
    return None


def won_back(gpu: BuildRow, plain: BuildRow, variant: BuildRow) -> float | None:
    """The share of the plain quant's accuracy loss against the GPU build that the variant recovers (1: all of
    it, 0: none, negative: worse than the quant alone); None where the quant lost nothing."""
    if gpu.accuracy is None or plain.accuracy is None or variant.accuracy is None:
        return None
    loss = gpu.accuracy - plain.accuracy
    return None if loss <= 0 else (variant.accuracy - plain.accuracy) / loss


def winback_table(report: ReportLike) -> Table | None:
    rep = Report.load(report)
    rows = {r.name: r for r in rep.builds}
    gpu = rows.get(GPU_BUILD)
    variants: dict[str, list[BuildRow]] = {}
    for r in rep.builds:
        quant = _variant_of(r.name)
        if quant is not None and quant in rows:
            variants.setdefault(quant, []).append(r)
    if gpu is None or not variants:
        return None
    # `edgetune eval` results (report.device, "<build> @ <device>"): the first device's run of each build
    board: dict[str, DeviceRun] = {}
    for run in (rep.device or {}).values():
        if run.quant is not None:
            board.setdefault(run.quant, run)
    out: list[list[str]] = [[GPU_BUILD, mb(gpu.size_bytes), pct(gpu.accuracy), "–", "–", "–", "–", "–"]]
    for quant, found in variants.items():
        plain = rows[quant]
        for r in [plain, *found]:
            kld = r.fidelity.kld_mean if r.fidelity is not None else None
            plain_kld = plain.fidelity.kld_mean if plain.fidelity is not None else None
            change = (f"{100 * (kld - plain_kld) / plain_kld:+.0f}%" if r is not plain and kld is not None
                      and plain_kld else "–")
            share = won_back(gpu, plain, r) if r is not plain else None
            dev = r.device or board.get(r.name)
            speed = f"{dev.gen_tps:.1f}" if dev is not None and dev.gen_tps is not None else "–"
            out.append([r.name, mb(r.size_bytes), pct(r.accuracy), signed_pts(r.delta_vs_gpu),
                        "–" if share is None else f"{100 * share:.0f}%",
                        "–" if kld is None else f"{kld:.4f}", change, speed])
    bound = " ".join(f"{r.name}'s search was bound by its {r.plan.budget} cap." for found in variants.values()
                     for r in found if r.plan is not None and r.plan.budget)
    return Table("winback", "Winning back quantization's cost",
                 ["build", "size", "accuracy", "vs GPU", "loss won back", "mean KLD", "KLD vs quant alone",
                  "board gen tok/s"], out,
                 note="Same held-out items for every build. Loss won back: the variant's accuracy gain over the quant "
                      "alone, as a share of the quant's loss against the GPU build. auto:<QUANT>-size: a per-tensor "
                      "precision mix no larger than the plain file; <QUANT>+recovery: the quant with its recovery "
                      "LoRA applied by llama.cpp (size: both files). Board gen tok/s: llama-server's median per item on the "
                      "device, once `edgetune eval` ran that build (`--recovery` for <QUANT>+recovery)."
                      + (f" {bound} (export/budget.py: size is the plain file, ram the target's usable RAM, speed "
                         "export.min_tok_s.)" if bound else ""))
