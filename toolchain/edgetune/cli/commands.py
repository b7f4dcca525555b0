"""Commands: each builds its config, calls one library function, and reports the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgetune.cli.group import State, cli, pass_state
from edgetune.cli.options import config_file_option, config_options, overrides, gpu_options
from edgetune.config import BuildConfig, load_config
from edgetune.constants import CONFIG_FILE, REPORT_HTML, Quant
from edgetune.errors import ConfigError


def _quiet_hf_libraries() -> None:
    """transformers/datasets draw their own tqdm bars and warnings; the CLI owns the terminal."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def build_config(config_path: Path | None, **flags: Any) -> BuildConfig:
    """The BuildConfig a command runs: the config file (./edgetune.yaml if present, else the embedded default)
    with the given config flags (cli/options.py, by their parameter names) on top. Raises ConfigError."""
    if config_path is None and Path(CONFIG_FILE).is_file():
        config_path = Path(CONFIG_FILE)
    return load_config(config_path).with_overrides(overrides(flags))


# The settings `build` takes as flags (cli/options.py names and types them from the config models)
BUILD_FLAGS = ("target", "model.source", "data.source", "export.quants", "train.r", "train.learning_rate",
               "train.epochs", "train.max_steps", "train.max_length", "out_dir", "threads", "eval.metric",
               "eval.context_length", "eval.over_context")


@cli.command()
@click.option("--sdist", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this llama-cpp-python sdist instead of downloading it.")
@pass_state
def setup(state: State, sdist: Path | None) -> None:
    """Unpack llama.cpp's converter for the installed llama-cpp-python into the cache."""
    from edgetune.llamacpp import setup_tools

    tools = setup_tools(state.home, sdist)
    state.emit({"root": tools.root, "version": tools.version, "revision": tools.revision},
               f"llama.cpp {tools.revision[:7]} tools ready in {tools.root}")


@cli.command()
@config_file_option
@config_options(*BUILD_FLAGS)
@click.option("--strict", is_flag=True, help="Exit 14 without a bundle when the report recommends no build (the "
              "fine-tune did not beat the base, or no GGUF is shown not worse than the GPU build).")
@gpu_options
@pass_state
def build(state: State, config_path: Path | None, strict: bool, gpus: int, fsdp: bool | None, **flags: Any) -> None:
    """Train, merge, export, quantize, bundle, evaluate and report, reusing every unchanged stage.

    \b
    Examples:
      edgetune build --target rpi5
      edgetune build -c edgetune.yaml --quant Q4_0 --quant Q8_0
      edgetune --json build --target rpi4-4gb --rank 8
      edgetune build --data mine.jsonl --strict   # exit 14 when there is nothing to ship
      edgetune build --data evals/tasks/extract-json.jsonl   # metric picked from the answers: json
      edgetune build -c edgetune.yaml --gpus 2   # trains as `edgetune train --gpus 2` does
    """
    from edgetune.cli.progress import RichProgress
    from edgetune.pipeline import build as run_build
    from edgetune.report.schema import Report

    cfg = build_config(config_path, **flags)
    _quiet_hf_libraries()
    result = run_build(cfg, state.home, progress=RichProgress(enabled=not state.as_json), strict=strict,
                       gpus=gpus, fsdp=fsdp)
    rows = [(r.name, r.accuracy) for r in Report.load(result.report).builds]
    state.emit(
        {"bundle": result.bundle_dir, "tarball": result.tarball, "report": result.report_md,
         "report_json": result.report_json, "report_html": result.run_dir / REPORT_HTML, "ran": result.ran,
         "reused": result.reused, "accuracy": dict(rows)},
        "\n".join([*(f"{n:>6}: accuracy {a:.1%}" for n, a in rows if a is not None),
                   f"ran {len(result.ran)} stages, reused {len(result.reused)}",
                   f"bundle: {result.bundle_dir}", f"tarball: {result.tarball}", f"report: {result.report_md}",
                   f"report (HTML): {result.run_dir / REPORT_HTML}"]),
    )


@cli.command()
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path), default=Path(CONFIG_FILE),
              show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_state
def init(state: State, path: Path, force: bool) -> None:
    """Write a commented starter edgetune.yaml (the embedded default's values)."""
    from edgetune.artifacts import atomic_write_text
    from edgetune.config import STARTER

    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", "pass --force to overwrite it, or --path to write elsewhere")
    atomic_write_text(path, STARTER)
    state.emit({"config": path}, f"wrote {path}")


@cli.group()
def targets() -> None:
    """Target board profiles: shipped in the package, plus ~/.config/edgetune/targets/*.yaml."""


@targets.command("list")
@pass_state
def targets_list(state: State) -> None:
    """List known targets and where each profile came from: [package], or the user's file that adds or
    overrides it ($XDG_CONFIG_HOME/edgetune/targets/, default ~/.config/edgetune/targets/).

      edgetune targets list
      edgetune --json targets list
    """
    from edgetune.resources import PACKAGE
    from edgetune.targets import list_profiles

    found = list_profiles()
    if not found:
        raise ConfigError("no target profiles found: the package's resources/targets folder is empty",
                          "reinstall edgetune, or add profiles to ~/.config/edgetune/targets/")
    source = {p.target.name: p.origin if p.origin == PACKAGE else f"{p.origin}/{p.file}" for p in found}
    width = max(len(p.target.name) for p in found)
    state.emit({"targets": [{**p.target.model_dump(mode="json"), "source": source[p.target.name]} for p in found]},
               "\n".join(f"{p.target.name:<{width}}  {p.target.description}"
                         + (f"  (alias: {', '.join(p.target.aliases)})" if p.target.aliases else "")
                         + f"  [{source[p.target.name]}]" for p in found))


@targets.command("show")
@click.argument("name")
@pass_state
def targets_show(state: State, name: str) -> None:
    """Show one target profile."""
    import yaml

    from edgetune.targets import get_target

    t = get_target(name)
    state.emit(t.model_dump(mode="json"), yaml.safe_dump(t.model_dump(mode="json"), sort_keys=False).rstrip())


@cli.group("bundle")
def bundle_group() -> None:
    """Inspect, check and unpack bundles."""


@bundle_group.command("verify")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@pass_state
def bundle_verify(state: State, path: Path) -> None:
    """Re-check every file of a bundle folder against its manifest's sha256."""
    from edgetune.bundle import verify_bundle

    manifest = verify_bundle(path)
    state.emit({"ok": True, "files": len(manifest["files"])}, f"ok: {len(manifest['files'])} files match the manifest")


@cli.command()
@click.argument("gguf", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_state
def inspect(state: State, gguf: Path) -> None:
    """Show a GGUF file's metadata, tensor types, size and chat template."""
    from edgetune.export.inspect import inspect_gguf

    info = inspect_gguf(gguf)
    general = info.get("general") or {}
    human = "\n".join(f"{k}: {v}" for k, v in info.items() if k not in ("chat_template", "general"))
    human += "".join(f"\ngeneral.{k}: {v}" for k, v in general.items())
    state.emit(info, human + f"\nchat_template: {'yes' if info.get('chat_template') else 'MISSING'}")


@cli.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "to", required=True, type=click.Path(path_type=Path), help="Folder to write (new or empty).")
@click.option("--force", is_flag=True, help="Replace a non-empty --to folder.")
@pass_state
def export_cmd(state: State, run: Path, to: Path, force: bool) -> None:
    """Copy a build's shareable set (merged model + card, adapter + card, GGUFs + Modelfiles) into one folder laid
    out as a Hugging Face model repository.

    \b
    Examples:
      edgetune export edgetune-out/runs/rpi5-8gb --to share/smollm2-sst2
      huggingface-cli upload USER/smollm2-sst2 share/smollm2-sst2
    """
    from edgetune.share import export_run

    shared = export_run(run, to, force=force)
    state.emit(shared.to_dict(), f"{len(shared.files)} files in {shared.folder} (upload: "
               f"huggingface-cli upload USER/NAME {shared.folder})")


@cli.command()
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--compare", nargs=2, type=click.Path(file_okay=False, path_type=Path), metavar="RUN_A RUN_B",
              help="Compare two run folders (two fine-tunes, or two targets) instead.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: RUN itself; with --compare, RUN_A/../compare-A-vs-B).")
@pass_state
def report(state: State, run: Path | None, compare: tuple[Path, Path] | None, out_dir: Path | None) -> None:
    """Write a run's report as self-contained HTML, Markdown and JSON, or compare two runs.

    \b
    Examples:
      edgetune report edgetune-out/runs/rpi5-8gb
      edgetune report --compare edgetune-out/runs/rpi5-8gb edgetune-out/runs/rpi4-4gb
      edgetune --json report edgetune-out/runs/rpi5-8gb
    """
    from edgetune.report.publish import compare_runs, render_run

    if run is not None and not compare:
        done = render_run(run, out_dir=out_dir)
    elif run is None and compare:
        done = compare_runs(*compare, out_dir=out_dir)
    else:
        raise click.UsageError("give one RUN folder, or --compare RUN_A RUN_B (not both)")
    rec = done.recommendation
    paths = {"html": done.html_path, "markdown": done.md_path, "json": done.json_path}
    lines = [f"{k}: {v}" for k, v in paths.items()] + ([f"recommended: {rec['quant'] or 'none'}"] if rec else [])
    state.emit({**paths, "recommendation": rec}, "\n".join(lines))


@cli.command()
@click.option("--target", help="Target board profile, e.g. rpi5 (see `edgetune targets list`).")
@click.option("--gguf", "ggufs", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A GGUF file to plan with its real size (repeatable).")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A build's run folder (edgetune-out/runs/<target>): plan every GGUF it exported.")
@click.option("--hf-config", type=click.Path(exists=True, path_type=Path),
              help="An HF model folder or its config.json: estimate sizes from the model's shape.")
@click.option("--quant", "quants", multiple=True, type=click.Choice([q.value for q in Quant]),
              help="Quant to estimate (repeatable; default without --gguf/--run: the target's list).")
@click.option("--calibrate", "devices_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Refit the planner's efficiencies per board from the llama-bench runs `edgetune eval --out` "
                   "fetched into this folder; stored in ~/.config/edgetune/calibration/<target>.json.")
@click.option("--published", is_flag=True, help="Ignore a stored calibration: use the published fit.")
@pass_state
def plan(state: State, target: str | None, ggufs: tuple[Path, ...], run_dir: Path | None, hf_config: Path | None,
         quants: tuple[str, ...], devices_dir: Path | None, published: bool) -> None:
    """Check which quants fit a board's memory and predict their speed; print the pick.

    \b
    Examples:
      edgetune plan --target rpi5 --gguf model-Q4_0.gguf --gguf model-Q8_0.gguf
      edgetune plan --target rpi-zero-2w --run edgetune-out/runs/rpi5-8gb
      edgetune --json plan --target rpi4-4gb --hf-config ./my-model --quant Q4_0 --quant Q8_0
      edgetune plan --calibrate edgetune-out/runs/rpi5-8gb/devices
    """
    from edgetune.calibration import calibrate, efficiency_for
    from edgetune.planner import DEFAULT_EFFICIENCY, make_plan
    from edgetune.targets import get_target

    if devices_dir is not None:
        cals = calibrate(devices_dir)
        state.emit({"calibrations": [c.to_dict() for c in cals]},
                   "\n".join(f"{c.target}: gen_bw_efficiency {c.gen_bw_efficiency:g}, pp_efficiency "
                             f"{c.pp_efficiency:g} from {len(c.runs)} run(s) -> {c.path}" for c in cals))
        return
    if target is None:
        raise click.UsageError("give --target BOARD (or --calibrate RUN/devices)")
    if not (ggufs or run_dir or hf_config):
        raise click.UsageError("give a model: --gguf FILE, --run RUN_DIR or --hf-config PATH")
    board = get_target(target)
    result = make_plan(board, ggufs=ggufs, run_dir=run_dir, hf_config=hf_config, quants=[Quant(q) for q in quants],
                       efficiency=DEFAULT_EFFICIENCY if published else efficiency_for(board.name))
    result.require_pick()
    state.emit(result.to_dict(), result.table())


@bundle_group.command("extract")
@click.argument("tarball", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@pass_state
def bundle_extract(state: State, tarball: Path, dest: Path) -> None:
    """Unpack a bundle tarball safely into DEST/<bundle>, then verify every file against its manifest.

    \b
    Examples:
      edgetune bundle extract smollm2-rpi5-8gb.tar.gz ~/models
      edgetune --json bundle extract bundle.tar.gz /opt/edgetune
    """
    from edgetune.bundle_archive import extract_bundle

    root = extract_bundle(tarball, dest)
    state.emit({"bundle": root}, f"extracted and verified: {root}")


def _devices(specs: tuple[str, ...], devices_file: Path | None) -> list:
    """--device specs and/or a --devices file → Devices. Raises UsageError when neither is given."""
    from edgetune.device import load_devices, parse_device

    if not specs and devices_file is None:
        raise click.UsageError("give --device user@host[:port] (repeatable) or --devices FILE")
    return [parse_device(s) for s in specs] + (load_devices(devices_file) if devices_file else [])


def _finish_fleet(state: State, fleet, human) -> None:
    """Emit every device's outcome, then fail with the device's own error (exit 11-13) if any failed."""
    from edgetune.errors import DeviceError

    lines = [human(n, r) for n, r in fleet.results.items()] + [f"{n}: FAILED: {e}" for n, e in fleet.errors.items()]
    state.emit(fleet.to_dict(), "\n".join(lines))
    if len(fleet.errors) == 1 and not fleet.results:
        raise next(iter(fleet.errors.values()))
    if fleet.errors:
        first = next(iter(fleet.errors.values()))
        raise DeviceError(f"{len(fleet.errors)} of {len(fleet.errors) + len(fleet.results)} devices failed: "
                          f"{', '.join(fleet.errors)}", "see each device's line above", exit_code=first.exit_code)


_device_opts = [
    click.option("--device", "specs", multiple=True, metavar="USER@HOST[:PORT]", help="Device (repeatable)."),
    click.option("--devices", "devices_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 help="YAML list of devices: name, spec, options."),
    click.option("--accept-new-host-key", is_flag=True, help="Record an unknown host key in known_hosts "
                 "(a changed key is always refused)."),
]


def _with_device_opts(fn):
    for opt in reversed(_device_opts):
        fn = opt(fn)
    return fn


@cli.command("deploy")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_with_device_opts
@pass_state
def deploy_cmd(state: State, bundle: Path, specs: tuple[str, ...], devices_file: Path | None,
               accept_new_host_key: bool) -> None:
    """Copy a bundle to devices over SSH (resumable; every file verified by sha256 on the device).

    \b
    Examples:
      edgetune deploy edgetune-out/store/bundle/KEY/tiny-rpi5 --device pi@raspberrypi.local
      edgetune --json deploy BUNDLE --devices fleet.yaml --accept-new-host-key
    """
    from edgetune.aio import run_sync
    from edgetune.cli.progress import RichProgress
    from edgetune.device import deploy_fleet

    fleet = run_sync(deploy_fleet(bundle, _devices(specs, devices_file), accept_new_host_key=accept_new_host_key,
                                  progress=RichProgress(enabled=not state.as_json)))
    _finish_fleet(state, fleet, lambda n, r: f"{n}: {r.remote_dir} verified ({r.files} files, "
                                             f"{len(r.sent_files)} sent, {r.bytes_sent} bytes)")


@cli.command("eval")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_with_device_opts
@click.option("--suite", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Suite JSONL (default: the bundle's suite/heldout.jsonl).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("edgetune-out/device-runs"), show_default=True, help="Local artifact folder.")
@click.option("--model", help="Bundle-relative GGUF (default: the manifest's default_model).")
@click.option("--lora", help="Bundle-relative LoRA GGUF applied on top of the model by llama-server.")
@click.option("--recovery", is_flag=True, help="Apply the bundle's recovery adapter (export.recovery) on the quant "
                                               "it was trained for: measures <QUANT>+recovery on the device.")
@click.option("--threads", type=click.IntRange(min=1), help="llama.cpp threads on the device (default: its cores).")
@click.option("--ctx-size", type=click.IntRange(min=64), help="Context size in tokens (default: the bundle's).")
@click.option("--timeout-s", type=float, default=3600.0, show_default=True, help="Wait for the job this long.")
@click.option("--bench-prompt", type=click.IntRange(min=0), default=512, show_default=True,
              help="Tokens of the llama-bench prompt test run on the device after the suite (0: none).")
@click.option("--bench-gen", type=click.IntRange(min=0), default=128, show_default=True,
              help="Tokens of the llama-bench generation test (0: none; both 0: no llama-bench).")
@pass_state
def device_eval(state: State, bundle: Path, specs: tuple[str, ...], devices_file: Path | None,
                accept_new_host_key: bool, suite: Path | None, out_dir: Path, model: str | None, lora: str | None,
                recovery: bool, threads: int | None, ctx_size: int | None, timeout_s: float, bench_prompt: int,
                bench_gen: int) -> None:
    """Deploy a bundle, evaluate it on devices with its runner, fetch results and device facts.

    Re-running after a lost connection collects the finished job or resumes it; a job never runs twice at once.
    After the suite the bundle's own llama-bench measures the model (pp512/tg128), recorded beside the planner's
    prediction; `edgetune plan --calibrate OUT` refits the planner from those runs.

    \b
    Examples:
      edgetune eval BUNDLE --device pi@192.168.1.40 --out runs/pi
      edgetune --json eval BUNDLE --devices fleet.yaml --suite heldout.jsonl --timeout-s 7200
      edgetune eval BUNDLE --device pi@192.168.1.40 --recovery
    """
    from edgetune.aio import run_sync
    from edgetune.cli.progress import RichProgress
    from edgetune.device import run_fleet

    fleet = run_sync(run_fleet(bundle, _devices(specs, devices_file), suite, out_dir=out_dir, timeout_s=timeout_s,
                               model=model, lora=lora, recovery=recovery, threads=threads, ctx_size=ctx_size,
                               bench=(bench_prompt, bench_gen),
                               accept_new_host_key=accept_new_host_key,
                               progress=RichProgress(enabled=not state.as_json)))
    _finish_fleet(state, fleet, lambda n, r: f"{n}: {r.status}: {r.items} items → {r.results_path}"
                                             + _bench_line(r.bench, r.predicted))


def _bench_line(bench: dict, predicted: dict | None) -> str:
    """'; llama-bench pp 41.2 tok/s (predicted 39.0), tg 9.1 (8.8)', or why there is none."""
    if not bench or bench.get("skipped") or bench.get("error"):
        return f"; llama-bench: {bench.get('skipped') or bench.get('error') or 'not run'}"
    pred = predicted or {}
    parts = [f"{kind} {bench[key]:.1f} tok/s" + (f" (predicted {pred[p]:.1f})" if pred.get(p) else "")
             for kind, key, p in (("pp", "prompt_tokens_per_s", "prompt_tok_s"), ("tg", "gen_tokens_per_s",
                                                                                    "gen_tok_s")) if bench.get(key)]
    return "; llama-bench " + ", ".join(parts)


# `device-eval`, the command's first name, still works (hidden from --help)
cli.add_command(click.Command("device-eval", params=device_eval.params, callback=device_eval.callback,
                              help=device_eval.help, hidden=True))
