"""Evaluate a bundle on a device: one remote job folder per (bundle, suite, params), run at most once at a time,
collected after a lost connection, never reported as success unless its results came back.

Reads the bundle folder (its runner/edgetune_runner.py and suite/heldout.jsonl, or the given suite file).
Deploys it first (idempotent), uploads the suite when one is given, then runs the on-device runner detached in
`<remote_root>/jobs/<job id>/` (see device/remote.py). The job id hashes the manifest, the suite and the params,
so re-running the same evaluation finds the same folder: a finished job is collected without running again, a
running one is waited on (never started twice), an interrupted one is resumed by the runner from its progress.
Writes `OUT/<device>/<job id>/`: results.jsonl, summary.json (device facts: CPU, RAM, OS, temperature,
throttling; "bench": the bundle's llama-bench run on the device) and device_run.json (with "bench" and "predicted":
the planner's speeds for the model on the bundle's target, edgetune.calibration). Raises DeviceLost (connection dropped, or the job outlived timeout_s: re-run to
collect), DeviceError (the runner failed: its own error line and stderr tail), ConfigError (no runner or suite).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgetune.artifacts import sha256_file, write_json
from edgetune.bundle import RUNNER_FILE, SUITE_FILE
from edgetune.constants import MANIFEST_FILE
from edgetune.device import remote
from edgetune.device.spec import Device
from edgetune.device.ssh import Session, connect
from edgetune.device.transfer import DeployResult, deploy_session, remote_bundle_dir
from edgetune.errors import ConfigError, DeviceError, DeviceLost
from edgetune.progress import Progress

log = logging.getLogger(__name__)

RESULTS, SUMMARY, RECORD = "results.jsonl", "summary.json", "device_run.json"
CONTROL_TIMEOUT_S = 60.0
# llama-bench's own defaults (pp512, tg128): the planner predicts for a 512-token prompt. (0, 0): no bench.
BENCH_TOKENS = (512, 128)


@dataclass
class DeviceRunResult:
    device: str
    job_id: str
    remote_job_dir: str
    status: str  # "ran": started here; "collected": already finished; "joined": a run already in progress
    items: int
    results_path: Path
    summary_path: Path
    ran_items: int | None = None
    device_facts: dict[str, Any] = field(default_factory=dict)
    deploy: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)  # llama-bench on the device (the runner's bench.json)
    predicted: dict[str, Any] | None = None  # the planner's speeds for the same GGUF and target

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def job_id(manifest_sha256: str, suite_sha256: str, params: dict[str, Any]) -> str:
    blob = json.dumps({"bundle": manifest_sha256, "suite": suite_sha256, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def runner_argv(bundle: str, job_dir: str, suite: str, *, model: str | None, threads: int | None,
                ctx_size: int | None, item_timeout_s: float | None, server_args: Sequence[str] = (),
                bench: tuple[int, int] = BENCH_TOKENS, lora: str | None = None) -> list[str]:
    """The on-device runner's command line (toolchain/edgetune/device_runner/edgetune_runner.py). Paths are
    relative to the device user's home, where both the SSH session and the job start."""
    argv = [remote.PYTHON, f"{bundle}/{RUNNER_FILE}", "--job-dir", job_dir, "--suite", suite]
    if model:
        argv += ["--model", f"{bundle}/{model}"]
    if lora:
        argv += ["--lora", f"{bundle}/{lora}"]
    if threads:
        argv += ["--threads", str(threads)]
    if ctx_size:
        argv += ["--ctx-size", str(ctx_size)]
    if item_timeout_s:
        argv += ["--item-timeout-s", f"{item_timeout_s:g}"]
    argv += [f"--server-arg={a}" for a in server_args]
    argv += ["--bench-prompt", str(bench[0]), "--bench-gen", str(bench[1])]
    return argv


async def _suite(session: Session, bundle_dir: Path, manifest: dict[str, Any], suite_path: Path | None,
                 remote_bundle: str) -> tuple[str, str]:
    """(remote suite path, its sha256); a local suite file is uploaded (verified, skipped when there)."""
    if suite_path is None:
        meta = manifest["files"].get(SUITE_FILE)
        if meta is None:
            raise ConfigError(f"bundle {bundle_dir.name} carries no {SUITE_FILE}", "pass --suite FILE.jsonl")
        return f"{remote_bundle}/{SUITE_FILE}", meta["sha256"]
    suite_path = Path(suite_path)
    if not suite_path.is_file():
        raise ConfigError(f"suite file {suite_path} does not exist", "give a JSONL file of suite items")
    sha = sha256_file(suite_path)
    root, rel = f"{session.device.remote_root.rstrip('/')}/suites", f"{sha}.jsonl"
    meta = {"sha256": sha, "size_bytes": suite_path.stat().st_size}
    inv = await remote.inventory(session, root, {rel: meta}, timeout_s=CONTROL_TIMEOUT_S)
    if not inv["files"][rel]["ok"]:
        await session.upload(suite_path, f"{root}/{rel}", offset=0, on_bytes=lambda n: None)
        if not (await remote.inventory(session, root, {rel: meta}, timeout_s=CONTROL_TIMEOUT_S))["files"][rel]["ok"]:
            raise DeviceError(f"{session.device.name}: the suite file does not match after upload", "re-run")
    return f"{root}/{rel}", sha


def adapter_files(bundle_dir: Path, manifest: dict[str, Any], *, model: str | None, lora: str | None,
                  recovery: bool) -> tuple[str | None, str | None]:
    """(model, LoRA) files the runner gets. `recovery`: the manifest's recovery adapter (bundle.py's
    `recovery_adapters`) and the quant it applies to, which must be `model` when that is given. Raises ConfigError
    for no recovery adapter (or none for `model`), both `lora` and `recovery`, or a `lora` not in the bundle."""
    if recovery and lora:
        raise ConfigError("--lora and --recovery both name an adapter", "give one of them")
    if recovery:
        entries = manifest.get("recovery_adapters") or []
        found = [e for e in entries if model is None or e["applies_to"] == model]
        if not found:
            raise ConfigError(f"bundle {bundle_dir.name} carries no recovery adapter"
                              + (f" for {model}" if model and entries else ""),
                              "build with export.recovery: <QUANT> (one of export.quants)" if not entries else
                              f"its recovery adapters apply to: {', '.join(e['applies_to'] for e in entries)}")
        return found[0]["applies_to"], found[0]["file"]
    if lora is not None and lora not in manifest["files"]:
        raise ConfigError(f"bundle {bundle_dir.name} has no file {lora}",
                          "give a bundle-relative LoRA GGUF, e.g. one of its adapters/ files")
    return model, lora


def check_inputs(bundle_dir: Path, suite_path: Path | None, *, model: str | None = None,
                 ctx_size: int | None = None, lora: str | None = None, recovery: bool = False) -> dict[str, Any]:
    """The bundle's manifest once it and the suite are fit to run, checked here before any connection: a bad
    manifest raises BundleError (7), a bundle without the runner, `model` or the adapter (adapter_files) and a bad
    suite line ConfigError (2)."""
    from edgetune.bundle_manifest import read_manifest
    from edgetune.device_runner import edgetune_runner as runner

    manifest = read_manifest(bundle_dir)
    if RUNNER_FILE not in manifest["files"]:
        raise ConfigError(f"bundle {bundle_dir.name} carries no {RUNNER_FILE}",
                          "rebuild the bundle with its runtime (bundle.run(runtime=True))")
    if model is not None and model not in manifest["files"]:
        raise ConfigError(f"bundle {bundle_dir.name} has no file {model}",
                          f"pick one of: {', '.join(m['file'] for m in manifest['models'])}")
    adapter_files(bundle_dir, manifest, model=model, lora=lora, recovery=recovery)
    if suite_path is not None:  # the runner's own check, so the device never sees a suite it would refuse
        if not Path(suite_path).is_file():
            raise ConfigError(f"suite file {suite_path} does not exist", "give a JSONL file of suite items")
        n_ctx = ctx_size or manifest["target"].get("context_length") or 2048
        try:
            runner.load_suite(str(suite_path), n_ctx)
        except runner.RunnerError as exc:
            raise ConfigError(str(exc), "one JSON object per line: id, prompt or prompt_ids, max_tokens") from exc
    return manifest


async def run_eval(bundle_dir: Path, device: Device, suite_path: Path | None = None, *, out_dir: Path,
                   timeout_s: float = 3600.0, model: str | None = None, threads: int | None = None,
                   ctx_size: int | None = None, item_timeout_s: float | None = None,
                   bench: tuple[int, int] = BENCH_TOKENS, accept_new_host_key: bool = False,
                   progress: Progress | None = None, lora: str | None = None,
                   recovery: bool = False) -> DeviceRunResult:
    """Deploy, run the bundle's runner on `device` (or join / collect the same job), fetch its results; the
    runner then runs the bundle's llama-bench (pp`bench[0]`, tg`bench[1]`) on the same model. `lora` (a
    bundle-relative LoRA GGUF) or `recovery` (the manifest's recovery adapter, on the quant it applies to) runs
    the model with that adapter applied by llama-server; llama-bench cannot apply one, so such a job's speeds
    are llama-server's per-item timings."""
    from edgetune.calibration import predict_for_bundle

    bundle_dir = Path(bundle_dir)
    manifest = check_inputs(bundle_dir, suite_path, model=model, ctx_size=ctx_size, lora=lora, recovery=recovery)
    model, lora = adapter_files(bundle_dir, manifest, model=model, lora=lora, recovery=recovery)
    predicted = predict_for_bundle(bundle_dir, manifest, model) if any(bench) else None
    async with connect(device, accept_new_host_key=accept_new_host_key) as session:
        deployed = await deploy_session(session, bundle_dir, progress=progress)
        bundle = remote_bundle_dir(device, manifest)
        suite, suite_sha = await _suite(session, bundle_dir, manifest, suite_path, bundle)
        params = {"model": model, "threads": threads, "ctx_size": ctx_size,
                  **({"bench": list(bench)} if bench != BENCH_TOKENS else {}), **({"lora": lora} if lora else {})}
        jid = job_id(sha256_file(bundle_dir / MANIFEST_FILE), suite_sha, params)
        job_dir = f"{device.remote_root.rstrip('/')}/jobs/{jid}"
        argv = runner_argv(bundle, job_dir, suite, model=model, threads=threads, ctx_size=ctx_size,
                           item_timeout_s=item_timeout_s, bench=bench, lora=lora)
        return await run_job(session, jid, job_dir, argv, out_dir=Path(out_dir), timeout_s=timeout_s,
                             deployed=deployed, predicted=predicted)


async def run_job(session: Session, jid: str, job_dir: str, argv: Sequence[str], *, out_dir: Path,
                  timeout_s: float, deployed: DeployResult | None = None,
                  predicted: dict[str, Any] | None = None) -> DeviceRunResult:
    """Start (or join, or collect) the detached job `argv` in `job_dir`, wait for it, fetch its results."""
    name = session.device.name
    started = await remote.job(session, "start", job_dir, argv, timeout_s=CONTROL_TIMEOUT_S)
    status = {"done": "collected", "started": "ran", "running": "joined"}[started["state"]]
    log.info("%s: job %s %s", name, jid, {"ran": "started", "joined": "already running: waiting for it",
                                         "collected": "already finished: collecting"}[status])
    outcome: dict[str, Any] = {}
    if started["state"] != "done":
        waited = await remote.job(session, "wait", job_dir, wait_s=timeout_s, timeout_s=timeout_s + CONTROL_TIMEOUT_S)
        if waited["state"] == "running":
            raise DeviceLost(f"{name}: job {jid} still running on the device after {timeout_s:g}s",
                             "it keeps running there: re-run the same command later to collect it, or raise "
                             "the timeout")
        if not waited["results"]:
            outcome = json.loads(waited["outcome"]) if waited.get("outcome") else {}
            why = outcome.get("error") or f"exit code {waited['exit_code']}"
            stderr = (waited.get("stderr") or "").strip().splitlines()[-3:]
            raise DeviceError(f"{name}: the runner failed in {job_dir}: {why}"
                              + (f"; stderr: {' | '.join(stderr)}" if stderr else ""),
                              "fix the cause and re-run: finished items are kept and not run again")
        outcome = json.loads(waited["outcome"]) if waited.get("outcome") else {}
    return await _collect(session, jid, job_dir, out_dir, status, outcome, deployed, predicted)


async def _collect(session: Session, jid: str, job_dir: str, out_dir: Path, status: str, outcome: dict[str, Any],
                   deployed: DeployResult | None, predicted: dict[str, Any] | None) -> DeviceRunResult:
    dest = out_dir / session.device.name / jid
    dest.mkdir(parents=True, exist_ok=True)
    for name in (RESULTS, SUMMARY):
        tmp = dest / f".{name}.part"
        await session.download(f"{job_dir}/{name}", tmp)
        tmp.replace(dest / name)
    rows = [json.loads(line) for line in (dest / RESULTS).read_text().splitlines() if line.strip()]
    ids = [str(r.get("id")) for r in rows]
    if len(set(ids)) != len(ids):
        raise DeviceError(f"{session.device.name}: job {jid} returned duplicate result ids",
                          "the job folder on the device is damaged; delete it and re-run")
    summary = json.loads((dest / SUMMARY).read_text())
    result = DeviceRunResult(session.device.name, jid, job_dir, status, len(rows), dest / RESULTS, dest / SUMMARY,
                             ran_items=outcome.get("ran"), device_facts=summary.get("device") or {},
                             deploy=deployed.to_dict() if deployed else {}, bench=summary.get("bench") or {},
                             predicted=predicted)
    if result.bench.get("error"):
        log.warning("%s: llama-bench failed on the device: %s", session.device.name, result.bench["error"])
    write_json(dest / RECORD, result.to_dict())
    return result
