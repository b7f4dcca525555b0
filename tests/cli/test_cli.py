"""The `edgetune` command line. Exit codes and stderr are checked through `main()` (the console script's entry
point, which alone maps errors to exit codes), run in-process under CliRunner's stream isolation; `--help` of
every command goes through CliRunner directly. Every test runs in its own folder with EDGETUNE_HOME there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

import edgetune.cli.commands as commands  # noqa: F401  (attaches the commands to `cli`)
import edgetune.cli.train_commands  # noqa: F401
from edgetune.cli.main import cli
from edgetune.config import STARTER, BuildConfig, load_config
from edgetune.constants import CONFIG_FILE, MANIFEST_FILE
from edgetune.errors import ConfigError
from edgetune.targets import TARGETS_DIR, list_targets
from tests.clirun import Result, run_edgetune  # noqa: F401  (Result: used by tests/cli modules)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def edgetune(monkeypatch):
    """Run `edgetune ARGV...` through main(), as the console script does; capture exit code, stdout, stderr."""
    return lambda *argv: run_edgetune(monkeypatch, *argv)


def one_error_line(result: Result, exit_code: int) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


# --- help and wiring -------------------------------------------------------------------------------------

def all_commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


COMMANDS = sorted(all_commands(), key=lambda c: c[0])


def test_every_command_is_registered():
    assert {" ".join(p) for p, _ in COMMANDS} >= {"build", "init", "inspect", "setup", "targets", "targets list",
                                                   "targets show", "bundle", "bundle verify", "bundle extract",
                                                   "plan", "report", "deploy", "eval", "train", "sweep", "export"}


@pytest.mark.parametrize("path, command", [((), cli), *COMMANDS], ids=["edgetune", *(" ".join(p) for p, _ in COMMANDS)])
def test_help(path, command):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {' '.join(path)}".rstrip() + " [OPTIONS]")
    first_line = (command.help or "").strip().splitlines()[0]
    assert first_line.split(".")[0][:40] in " ".join(result.output.split())


def test_help_through_main(edgetune):
    for flag in ("--help", "-h"):
        result = edgetune(flag)
        assert result.exit_code == 0 and "Commands:" in result.stdout and "build" in result.stdout


def test_version(edgetune):
    result = edgetune("--version")
    assert result.exit_code == 0 and result.stdout.startswith("edgetune, version ")


def test_help_does_not_import_torch():
    code = ("import sys; from edgetune.cli.main import main; sys.argv = ['edgetune', 'build', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("HEAVY []")


def test_console_script_exit_code(tmp_path):
    script = shutil.which("edgetune", path=str(Path(sys.executable).parent))
    assert script, "the edgetune console script is not installed in this environment"
    proc = subprocess.run([script, "targets", "show", "rpi9"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown target 'rpi9' (did you mean rpi5, "), lines


def test_usage_error_exits_2(edgetune):
    result = edgetune("nosuchcommand")
    assert result.exit_code == 2 and "No such command" in result.stderr


# --- init ------------------------------------------------------------------------------------------------

def test_init_writes_a_loadable_config(edgetune, isolated):
    result = edgetune("init")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"wrote {CONFIG_FILE}"
    path = isolated / CONFIG_FILE
    assert path.read_text() == STARTER
    assert load_config(path).model_dump(exclude={"out_dir"}) == BuildConfig().model_dump(exclude={"out_dir"})


def test_init_refuses_to_overwrite(edgetune, isolated):
    path = isolated / CONFIG_FILE
    path.write_text("target: rpi4\n")
    line = one_error_line(edgetune("init"), 2)
    assert line == f"error: {CONFIG_FILE} already exists (pass --force to overwrite it, or --path to write elsewhere)"
    assert path.read_text() == "target: rpi4\n"

    assert edgetune("init", "--force").exit_code == 0
    assert path.read_text() == STARTER


def test_init_path_and_json(edgetune, isolated):
    result = edgetune("--json", "init", "--path", "sub/my.yaml")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"config": "sub/my.yaml"}
    assert load_config(isolated / "sub" / "my.yaml").out_dir == isolated / "sub" / "edgetune-out"
    assert not (isolated / CONFIG_FILE).exists()


# --- targets ---------------------------------------------------------------------------------------------

def test_targets_list(edgetune):
    result = edgetune("targets", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == [t.name for t in list_targets()]
    assert any(line.startswith("rpi5-8gb") and "(alias: rpi5)" in line for line in lines)
    assert all(line.endswith("  [package]") for line in lines)


def test_targets_list_says_where_a_user_profile_came_from(edgetune, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    mine = tmp_path / "edgetune" / "targets"
    mine.mkdir(parents=True)
    shipped = Path(str(TARGETS_DIR / "rpi5-8gb.yaml")).read_text()
    (mine / "rpi5-8gb.yaml").write_text(shipped.replace("ram_gb: 8", "ram_gb: 7"))
    (mine / "board.yaml").write_text(shipped.replace("name: rpi5-8gb", "name: board").replace("[rpi5]", "[b]"))
    result = edgetune("targets", "list")
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.strip().splitlines()}
    assert lines["board"].endswith(f"  [{mine}/board.yaml]")
    assert lines["rpi5-8gb"].endswith(f"  [{mine}/rpi5-8gb.yaml]")
    assert lines["rpi4-4gb"].endswith("  [package]")
    found = json.loads(edgetune("--json", "targets", "list").stdout)["targets"]
    assert {t["name"]: t["source"] for t in found}["board"] == f"{mine}/board.yaml"
    assert {t["name"]: t["ram_gb"] for t in found}["rpi5-8gb"] == 7


def test_targets_list_json(edgetune):
    result = edgetune("--json", "targets", "list")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)["targets"]
    assert [t["name"] for t in found] == [t.name for t in list_targets()]
    assert next(t for t in found if t["name"] == "rpi5-8gb")["aliases"] == ["rpi5"]


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_targets_show_alias(edgetune, as_json):
    result = edgetune(*(["--json"] if as_json else []), "targets", "show", "rpi5")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout) if as_json else yaml.safe_load(result.stdout)
    assert shown["name"] == "rpi5-8gb"
    assert shown["cpu"]["mcpu"] == "cortex-a76"
    assert shown["quants"] == ["Q4_0", "Q8_0"]


def test_targets_show_unknown(edgetune):
    line = one_error_line(edgetune("targets", "show", "rpi5-32gb"), 2)
    assert line.startswith("error: unknown target 'rpi5-32gb' (did you mean rpi5-8gb")


# --- bundle verify ---------------------------------------------------------------------------------------

@pytest.fixture
def bundle_copy(tiny_bundle, isolated) -> Path:
    return Path(shutil.copytree(tiny_bundle.path / tiny_bundle.outputs["bundle"], isolated / "bundle"))


def test_bundle_verify_ok(edgetune, bundle_copy):
    n_files = len(json.loads((bundle_copy / MANIFEST_FILE).read_text())["files"])
    result = edgetune("bundle", "verify", bundle_copy)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"ok: {n_files} files match the manifest"
    result = edgetune("--json", "bundle", "verify", bundle_copy)
    assert json.loads(result.stdout) == {"ok": True, "files": n_files}


def test_bundle_verify_tampered(edgetune, bundle_copy):
    gguf = bundle_copy / "models" / "tiny-Q8_0.gguf"
    blob = bytearray(gguf.read_bytes())
    blob[-1] ^= 0xFF
    gguf.write_bytes(bytes(blob))
    line = one_error_line(edgetune("bundle", "verify", bundle_copy), 7)
    assert line.startswith("error: bundle file changed: models/tiny-Q8_0.gguf ")


def test_bundle_verify_corrupt_manifest(edgetune, bundle_copy):
    (bundle_copy / MANIFEST_FILE).write_text("{")
    line = one_error_line(edgetune("bundle", "verify", bundle_copy), 7)
    assert "is not readable JSON" in line


def test_bundle_verify_missing_folder(edgetune):
    result = edgetune("bundle", "verify", "nowhere")
    assert result.exit_code == 2 and "does not exist" in result.stderr


# --- inspect ---------------------------------------------------------------------------------------------

def test_inspect_json(edgetune, tiny_gguf):
    result = edgetune("--json", "inspect", tiny_gguf)
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["architecture"], info["file_type"], info["path"]) == ("llama", "F16", str(tiny_gguf))
    assert info["size_bytes"] == tiny_gguf.stat().st_size
    assert info["n_tensors"] == sum(info["tensor_types"].values()) > 0
    assert "<|im_start|>" in info["chat_template"]


def test_inspect_human(edgetune, tiny_gguf):
    result = edgetune("inspect", tiny_gguf)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "architecture: llama" in lines and "file_type: F16" in lines and lines[-1] == "chat_template: yes"


def test_inspect_not_a_gguf(edgetune, isolated):
    (isolated / "fake.gguf").write_bytes(b"not a gguf at all" * 10)
    line = one_error_line(edgetune("inspect", "fake.gguf"), 6)
    assert "is not a readable GGUF file" in line


# --- build: failures before any heavy work ----------------------------------------------------------------

def test_build_unknown_target(edgetune, isolated):
    line = one_error_line(edgetune("build", "--target", "nosuch", "--out", "out"), 2)
    assert line.startswith("error: unknown target 'nosuch' (")
    assert not (isolated / "out").exists()


def test_build_missing_data(edgetune, isolated, monkeypatch, edgetune_home, llama_tools):
    monkeypatch.setenv("EDGETUNE_HOME", str(edgetune_home))  # the real set-up llama.cpp tools
    line = one_error_line(edgetune("build", "--data", "missing.jsonl", "--out", "out"), 3)
    assert line.startswith("error: dataset file not found: missing.jsonl (")
    assert not (isolated / "out" / "store").exists()


@pytest.mark.parametrize("argv, exit_code, text", [
    (["--rank", "0"], 2, "error: command-line flags: train.r: "),
    (["--lr", "-1"], 2, "error: command-line flags: train.learning_rate: "),
    (["-c", "nope.yaml"], 2, "error: config file not found: nope.yaml"),
])
def test_build_bad_flags(edgetune, argv, exit_code, text):
    assert one_error_line(edgetune("build", *argv), exit_code).startswith(text)


@pytest.mark.parametrize("argv", [["--quant", "Q9_9"], ["--rank", "eight"], ["--bogus"]])
def test_build_usage_errors(edgetune, argv):
    result = edgetune("build", *argv)
    assert result.exit_code == 2 and result.stderr.startswith("Usage: ")


def test_build_bad_config_file(edgetune, isolated):
    (isolated / CONFIG_FILE).write_text("train: {rank: 8}\n")  # picked up from the current folder
    line = one_error_line(edgetune("build"), 2)
    assert line.startswith(f"error: {CONFIG_FILE}: train.rank: Extra inputs are not permitted")


# --- build: argv → BuildConfig ----------------------------------------------------------------------------

def config_for(argv: list[str]) -> BuildConfig:
    """Parse `edgetune build ARGV` with the real click command and map it as the command does."""
    params = dict(commands.build.make_context("build", list(argv)).params)
    params.pop("strict")  # --strict is how build ends (exit 14), not a setting: tests/cli/test_build_strict.py
    params.pop("gpus"), params.pop("fsdp")  # how training is launched, not settings: tests/test_pipeline_gpus.py
    return commands.build_config(params.pop("config_path"), **params)


def expected(changes: dict, base: BuildConfig | None = None) -> dict:
    dumped = (base or BuildConfig()).model_dump()
    for dotted, value in changes.items():
        node = dumped
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return dumped


ARGV_TABLE = [
    ([], {}),
    (["--target", "rpi4-4gb"], {"target": "rpi4-4gb"}),
    (["--target", "RPi5"], {"target": "rpi5"}),
    (["--model", "org/model"], {"model.source": "org/model"}),
    (["--model", "./base.gguf"], {"model.source": "./base.gguf"}),
    (["--data", "train.jsonl"], {"data.source": "train.jsonl"}),
    (["--quant", "Q4_0"], {"export.quants": ["Q4_0"]}),
    (["--quant", "Q8_0", "--quant", "Q4_K_M"], {"export.quants": ["Q8_0", "Q4_K_M"]}),
    (["--rank", "8"], {"train.r": 8}),
    (["--lr", "1e-3"], {"train.learning_rate": 1e-3}),
    (["--epochs", "2.5"], {"train.epochs": 2.5}),
    (["--max-steps", "10"], {"train.max_steps": 10}),
    (["--out", "runs/x"], {"out_dir": Path("runs/x")}),
    (["--threads", "2"], {"threads": 2}),
    (["--metric", "json"], {"eval.metric": {"name": "json", "pattern": None, "json_schema": None, "tolerance": 1e-6}}),
    (["--target", "rpi4", "--rank", "4", "--lr", "5e-5", "--max-steps", "3", "--threads", "1", "--quant", "Q4_0"],
     {"target": "rpi4", "train.r": 4, "train.learning_rate": 5e-5, "train.max_steps": 3, "threads": 1,
      "export.quants": ["Q4_0"]}),
]


@pytest.mark.parametrize("argv, changes", ARGV_TABLE, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_argv_to_config(argv, changes):
    assert config_for(argv).model_dump() == expected(changes)


def test_flags_override_the_config_file(isolated):
    (isolated / "cfg").mkdir()
    (isolated / "cfg" / "e.yaml").write_text("target: rpi4\ntrain: {r: 4, alpha: 64}\nout_dir: o\n")
    from_file = load_config(Path("cfg/e.yaml"))
    cfg = config_for(["-c", "cfg/e.yaml", "--rank", "8", "--quant", "Q8_0"])
    assert cfg.model_dump() == expected({"train.r": 8, "export.quants": ["Q8_0"]}, from_file)
    assert (cfg.target, cfg.train.alpha, cfg.out_dir) == ("rpi4", 64, Path("cfg/o"))
    assert config_for(["-c", "cfg/e.yaml", "--out", "elsewhere"]).out_dir == Path("elsewhere")  # relative to cwd


def test_config_file_in_the_current_folder_is_used(isolated):
    (isolated / CONFIG_FILE).write_text("train: {r: 4}\n")
    assert config_for([]).train.r == 4
    assert config_for(["--rank", "2"]).train.r == 2


def test_bad_flag_values_raise_config_error():
    with pytest.raises(ConfigError, match="command-line flags: threads: "):
        config_for(["--threads", "0"])


# --- build: what it prints -------------------------------------------------------------------------------

def test_build_prints_each_builds_accuracy_from_the_typed_report(edgetune, isolated, monkeypatch):
    from edgetune.pipeline import BuildResult

    report = {"title": "t", "builds": [{"name": "base", "accuracy": 0.5}, {"name": "gpu", "accuracy": 0.875},
                                       {"name": "Q4_0", "kind": "GGUF"}]}  # a row without a task score
    monkeypatch.setattr("edgetune.pipeline.build", lambda cfg, home, progress=None, *, strict=False, **launch: BuildResult(
        isolated, isolated / "b", isolated / "b.tar.gz", isolated / "r.md", isolated / "r.json", report))
    result = edgetune("build")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[:3] == ["  base: accuracy 50.0%", "   gpu: accuracy 87.5%", "ran 0 stages, reused 0"]
    payload = json.loads(edgetune("--json", "build").stdout)
    assert payload["accuracy"] == {"base": 0.5, "gpu": 0.875, "Q4_0": None}
