"""Fit the planner's speed constants on one set of published measurements and check them on another.

Reads benchmarks/data/published_speeds.yaml (numbers copied from the sources it names; each source is in the
`fit` set or the held-out `test` set, never both). From the fit rows only it derives
  - PP_EFFICIENCY: the geometric mean of measured / predicted prompt tok/s at efficiency 1 (the prompt roofline
    is linear in it), and
  - each board's sustained bandwidth (mem_bandwidth_gbs) at the planner's GEN_BW_EFFICIENCY: the geometric mean
    of measured decode tok/s x bytes read per token / GEN_BW_EFFICIENCY over that board's rows,
then predicts every row with the planner itself (planner.predict_speeds) and the refitted values, and prints a
table of measured vs predicted and one JSON line: the fitted values, the profiles' values, and the held-out
error (predicted / measured per figure; the worst and the geometric-mean factor).

  python benchmarks/planner_fit.py            (log: benchmarks/results-planner-fit-2026-12-07.log)
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from edgetune import planner
from edgetune.constants import Quant
from edgetune.modelshape import ModelShape, shape_from_hf_config
from edgetune.planner import Efficiency, predict_speeds
from edgetune.targets import Target, get_target

DATA = Path(__file__).resolve().parent / "data" / "published_speeds.yaml"
NON_EDGETUNE_BPW = {"IQ4_XS": 4.25}  # types edgetune does not write: read at the published file size


def load(path: Path = DATA) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    for row in data["rows"]:
        row["set"] = data["sources"][row["source"]]["set"]
    return data


def shape_of(config: dict[str, Any]) -> ModelShape:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        return shape_from_hf_config(path)


def read_bytes(shape: ModelShape, row: dict[str, Any]) -> int:
    """Weight bytes read per generated token: the planner's estimate for its own types, else the published file
    size less the untied input embedding (looked up, not read)."""
    if row["quant"] in NON_EDGETUNE_BPW:
        return int(row["file_gb"] * 1e9 - shape.lookup_params * NON_EDGETUNE_BPW[row["quant"]] / 8)
    return shape.estimate(Quant(row["quant"]))[1]


def predict(row: dict[str, Any], shapes: dict[str, ModelShape], target: Target, eff: Efficiency) -> tuple[float, float]:
    shape = shapes[row["shape"]]
    speeds = predict_speeds(target, shape, row["quant"], read_bytes(shape, row), eff)
    prompt = speeds.prompt
    if row.get("repacked") is False and target.arch == "aarch64" and row["quant"] in planner.REPACKED_ON_ARM \
            and set(target.cpu.features) & {"dotprod", "i8mm"}:
        prompt /= planner.REPACK_SPEEDUP  # measured before llama.cpp repacked Q4_0 at load
    return prompt, min(speeds.gen_roofline, prompt)


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def fit(data: dict[str, Any]) -> dict[str, Any]:
    shapes = {name: shape_of(cfg) for name, cfg in data["shapes"].items()}
    rows = [r for r in data["rows"] if r["set"] == "fit"]
    unit = Efficiency(gen_bw=1.0, pp=1.0, source="unit")
    pp = [r["prompt"] / predict(r, shapes, get_target(r["target"]), unit)[0] for r in rows if r.get("prompt")]
    bandwidth: dict[str, list[float]] = {}
    for r in rows:
        if r.get("gen"):
            shape = shapes[r["shape"]]
            streamed = r["gen"] * (read_bytes(shape, r) + shape.kv_bytes(planner.BENCH_CONTEXT_TOKENS))
            bandwidth.setdefault(r["target"], []).append(streamed / planner.GEN_BW_EFFICIENCY / 1e9)
    return {"pp_efficiency": round(geomean(pp), 3), "fit_rows": len(rows),
            "mem_bandwidth_gbs": {t: round(geomean(v), 1) for t, v in sorted(bandwidth.items())}}


def evaluate(data: dict[str, Any], fitted: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row predicted with the fitted values (the profile's bandwidth for a board the fit set lacks)."""
    shapes = {name: shape_of(cfg) for name, cfg in data["shapes"].items()}
    eff = Efficiency(gen_bw=planner.GEN_BW_EFFICIENCY, pp=fitted["pp_efficiency"], source="fit")
    out = []
    for r in data["rows"]:
        target = get_target(r["target"])
        bw = fitted["mem_bandwidth_gbs"].get(r["target"], target.mem_bandwidth_gbs)
        prompt, gen = predict(r, shapes, target.model_copy(update={"mem_bandwidth_gbs": bw}), eff)
        out.append({**r, "predicted_prompt": round(prompt, 2), "predicted_gen": round(gen, 2),
                    "prompt_ratio": round(prompt / r["prompt"], 3) if r.get("prompt") else None,
                    "gen_ratio": round(gen / r["gen"], 3) if r.get("gen") else None})
    return out


def held_out_error(rows: list[dict[str, Any]]) -> dict[str, float]:
    ratios = [r[k] for r in rows if r["set"] == "test" for k in ("prompt_ratio", "gen_ratio") if r[k]]
    factors = [max(x, 1 / x) for x in ratios]
    return {"figures": len(ratios), "worst_factor": round(max(factors), 3),
            "geomean_factor": round(geomean(factors), 3)}


def main() -> int:
    data = load()
    overlap = {s for s, v in data["sources"].items() if v["set"] not in ("fit", "test")}
    if overlap:
        raise SystemExit(f"sources in neither set: {sorted(overlap)}")
    fitted = fit(data)
    rows = evaluate(data, fitted)
    fmt = "{:<5} {:<19} {:<12} {:<15} {:<7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7}".format
    print(fmt("set", "source", "board", "model", "quant", "pp meas", "pp pred", "ratio", "tg meas", "tg pred",
              "ratio"))
    for r in rows:
        print(fmt(r["set"], r["source"], r["target"], r["shape"], r["quant"], r.get("prompt") or "-",
                  r["predicted_prompt"] if r.get("prompt") else "-", r["prompt_ratio"] or "-", r.get("gen") or "-",
                  r["predicted_gen"] if r.get("gen") else "-", r["gen_ratio"] or "-"))
    profiles = {t: get_target(t).mem_bandwidth_gbs for t in fitted["mem_bandwidth_gbs"]}
    error = held_out_error(rows)
    print(f"fitted on {fitted['fit_rows']} rows: PP_EFFICIENCY {fitted['pp_efficiency']} "
          f"(planner.py: {planner.PP_EFFICIENCY}); mem_bandwidth_gbs at GEN_BW_EFFICIENCY "
          f"{planner.GEN_BW_EFFICIENCY}: {fitted['mem_bandwidth_gbs']} (profiles: {profiles})")
    print(f"held out: {error['figures']} figures, worst factor {error['worst_factor']}, "
          f"geometric-mean factor {error['geomean_factor']}")
    print(json.dumps({"bench": "planner_fit", **fitted, "gen_bw_efficiency": planner.GEN_BW_EFFICIENCY,
                      "planner_pp_efficiency": planner.PP_EFFICIENCY, "profile_mem_bandwidth_gbs": profiles,
                      "held_out": error, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
