"""The planner's speed prediction for a device run, and per-board calibrations refitted from llama-bench runs.

`edgetune eval` runs the bundle's own llama-bench on the device (the runner's bench.json, copied into the job's
summary.json as "bench") and records next to it what the planner predicted for that GGUF on the bundle's target
(`predict_for_bundle`, written into device_run.json as "predicted"). `calibrate(RUN/devices)` reads those pairs
and refits the two efficiencies of the rooflines per target:

    gen_bw  = the efficiency used × geometric mean over runs of (measured tg tok/s / predicted bandwidth roofline)
    pp      = the efficiency used × geometric mean over runs of (measured pp tok/s / predicted prompt tok/s)

(both rooflines are linear in their efficiency, so this is the least-squares fit in log space). The result is
written to `$XDG_CONFIG_HOME/edgetune/calibration/<target>.json` (else ~/.config/edgetune/...), which
`edgetune plan --target <target>` then uses (`efficiency_for`). Raises ConfigError for a folder with no
measurement to fit.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgetune.artifacts import write_json
from edgetune.errors import ConfigError, EdgetuneError
from edgetune.home import user_config_dir
from edgetune.planner import DEFAULT_EFFICIENCY, Efficiency, predict_speeds

log = logging.getLogger(__name__)

CALIBRATION_DIR = "calibration"
RECORD = "device_run.json"


def calibration_path(target_name: str) -> Path:
    return user_config_dir() / CALIBRATION_DIR / f"{target_name}.json"


def efficiency_for(target_name: str) -> Efficiency:
    """The board's stored calibration, else the published fit. A damaged file is ConfigError, never skipped."""
    path = calibration_path(target_name)
    if not path.is_file():
        return DEFAULT_EFFICIENCY
    try:
        data = json.loads(path.read_text())
        return Efficiency(float(data["gen_bw_efficiency"]), float(data["pp_efficiency"]),
                          f"calibrated on {len(data['runs'])} device run(s): {path}")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"calibration file {path} is not readable ({exc})",
                          f"re-run `edgetune plan --calibrate RUN/devices` or delete {path}") from exc


def predict_for_bundle(bundle_dir: Path, manifest: dict[str, Any], model: str | None) -> dict[str, Any] | None:
    """What the planner predicts for the bundle's model on its target, with the efficiencies used (the stored
    calibration of that target, if any, else the published fit). None, with a warning, when the target is not
    a known profile or the GGUF cannot be read (the device run itself does not depend on it)."""
    from edgetune.modelshape import read_model_file
    from edgetune.targets import get_target

    rel = model or manifest.get("default_model")
    name = (manifest.get("target") or {}).get("name")
    try:
        target = get_target(str(name))
        gguf = read_model_file(Path(bundle_dir) / str(rel))
        eff = efficiency_for(target.name)
    except EdgetuneError as exc:
        log.warning("no speed prediction for %s on %s: %s", rel, name, exc.message)
        return None
    speeds = predict_speeds(target, gguf.shape, gguf.quant, gguf.read_bytes, eff)
    return {"target": target.name, "quant": gguf.quant, "model": rel, "prompt_tok_s": round(speeds.prompt, 3),
            "gen_tok_s": round(speeds.gen, 3), "gen_roofline_tok_s": round(speeds.gen_roofline, 3),
            "gen_bw_efficiency": eff.gen_bw, "pp_efficiency": eff.pp, "efficiency_source": eff.source}


@dataclass(frozen=True)
class Pair:
    """One device run's llama-bench result next to the planner's prediction for it."""

    device: str
    job: str
    target: str
    quant: str
    measured_prompt_tok_s: float | None
    measured_gen_tok_s: float | None
    predicted_prompt_tok_s: float
    predicted_gen_roofline_tok_s: float
    gen_bw_efficiency: float
    pp_efficiency: float


def measured_pairs(devices_dir: Path) -> list[Pair]:
    """Every `<device>/<job>/device_run.json` under `devices_dir` whose run has both a bench result and a
    prediction."""
    pairs = []
    for record_path in sorted(Path(devices_dir).glob(f"*/*/{RECORD}")):
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            log.warning("skipping %s: not JSON", record_path)
            continue
        bench, pred = record.get("bench") or {}, record.get("predicted") or {}
        if not pred or not (bench.get("prompt_tokens_per_s") or bench.get("gen_tokens_per_s")):
            continue
        pairs.append(Pair(str(record.get("device")), record_path.parent.name, pred["target"], pred["quant"],
                          bench.get("prompt_tokens_per_s"), bench.get("gen_tokens_per_s"), pred["prompt_tok_s"],
                          pred["gen_roofline_tok_s"], pred["gen_bw_efficiency"], pred["pp_efficiency"]))
    return pairs


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass(frozen=True)
class Calibration:
    target: str
    gen_bw_efficiency: float
    pp_efficiency: float
    runs: list[dict[str, Any]]
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def fit(pairs: list[Pair]) -> tuple[float, float]:
    """(gen_bw, pp) efficiencies that make the geometric-mean prediction error of `pairs` zero; a side without
    any measurement keeps the efficiency its predictions were made with."""
    gen = [p.gen_bw_efficiency * p.measured_gen_tok_s / p.predicted_gen_roofline_tok_s
           for p in pairs if p.measured_gen_tok_s]
    pp = [p.pp_efficiency * p.measured_prompt_tok_s / p.predicted_prompt_tok_s
          for p in pairs if p.measured_prompt_tok_s]
    return (_geomean(gen) if gen else pairs[0].gen_bw_efficiency, _geomean(pp) if pp else pairs[0].pp_efficiency)


def calibrate(devices_dir: Path) -> list[Calibration]:
    """Refit and store one calibration per target found under `devices_dir` (what `edgetune eval --out` wrote).
    Raises ConfigError when no run there has a llama-bench result and a prediction."""
    pairs = measured_pairs(devices_dir)
    if not pairs:
        raise ConfigError(f"no device run under {devices_dir} has a llama-bench result and a speed prediction",
                          "run `edgetune eval BUNDLE --device ... --out RUN/devices` with a bundle that ships "
                          "bin/llama-bench (and without --no-bench), then calibrate from RUN/devices")
    out = []
    for target in sorted({p.target for p in pairs}):
        mine = [p for p in pairs if p.target == target]
        gen_bw, pp = fit(mine)
        cal = Calibration(target, round(gen_bw, 4), round(pp, 4), [asdict(p) for p in mine],
                          calibration_path(target))
        write_json(cal.path, {**cal.to_dict(), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "source": str(Path(devices_dir).resolve())})
        log.info("calibrated %s from %d run(s): gen_bw %.4f, pp %.4f -> %s", target, len(mine), gen_bw, pp, cal.path)
        out.append(cal)
    return out
