"""The config flags cli/options.py generates from the config models: the names the CLI always had, help from the
field's description, values set by path onto the config file's, bad values one error line."""

from __future__ import annotations

import click
import pytest
import yaml
from click.testing import CliRunner

from edgetune.cli import commands, train_commands
from edgetune.cli.main import cli
from edgetune.cli.options import FLAG_NAMES, config_option, config_options, field_info, overrides
from edgetune.config import BuildConfig, load_config
from edgetune.constants import CONFIG_FILE

from .test_cli import one_error_line

COMMANDS = {"build": (commands.build, commands.BUILD_FLAGS), "train": (train_commands.train_cmd,
            train_commands.TRAIN_FLAGS), "sweep": (train_commands.sweep_cmd, train_commands.SHARED_FLAGS)}


def squeezed(text: str) -> str:
    """Text without whitespace: click wraps help lines (and may break after a hyphen)."""
    return "".join(text.split())


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_each_flags_field_description(name):
    output = squeezed(CliRunner().invoke(cli, [name, "--help"]).output)
    for path in COMMANDS[name][1]:
        assert squeezed(field_info(path).description or "") in output, path
        assert squeezed(f"(edgetune.yaml: {path})") in output


def test_flag_names_are_the_ones_the_cli_always_had():
    def flags(command: click.Command) -> set[str]:
        return {o for p in command.params for o in (*p.opts, *p.secondary_opts)}

    common = {"-c", "--config", "--model", "--data", "--lr", "--epochs", "--max-steps", "--max-length", "--out",
              "--threads"}
    assert flags(commands.build) == common | {"--target", "--quant", "--rank", "--metric", "--strict",
                                              "--context-length", "--over-context", "--gpus", "--fsdp", "--no-fsdp"}
    assert flags(train_commands.train_cmd) == common | {"--rank", "--adapter", "--gpus", "--fsdp", "--no-fsdp",
                                                        "--packing", "--no-packing", "--chat-template-fallback",
                                                        "--micro-batch-tokens"}
    assert flags(train_commands.sweep_cmd) == common | {"--ranks", "--fraction", "--metric"}
    for path in FLAG_NAMES:  # every short name names a real field
        field_info(path)


def train_config(argv: list[str]) -> BuildConfig:
    """Parse `edgetune train ARGV` with the real click command and build the config as the command does."""
    params = dict(train_commands.train_cmd.make_context("train", list(argv)).params)
    for own in ("gpus", "fsdp"):  # how to train, not settings
        params.pop(own)
    return commands.build_config(params.pop("config_path"), **params)


@pytest.mark.parametrize("argv, changes", [
    (["--adapter", "dora"], {"adapter": "dora"}),
    (["--packing"], {"packing": True}),
    (["--chat-template-fallback", "chatml"], {"chat_template_fallback": "chatml"}),
    (["--micro-batch-tokens", "512"], {"micro_batch_tokens": 512}),
    (["--rank", "4", "--lr", "0.01", "--epochs", "2", "--max-steps", "3"],
     {"r": 4, "learning_rate": 0.01, "epochs": 2.0, "max_steps": 3}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_train_flag_sets_its_field(argv, changes):
    assert train_config(argv).train.model_dump() == {**BuildConfig().train.model_dump(), **changes}


def test_the_length_flags_set_their_fields():
    params = dict(commands.build.make_context("build", ["--max-length", "512", "--context-length", "1024",
                                                        "--over-context", "fail"]).params)
    for own in ("strict", "gpus", "fsdp"):  # how build runs and ends, not settings
        params.pop(own)
    cfg = commands.build_config(params.pop("config_path"), **params)
    assert (cfg.train.max_length, cfg.eval.context_length, cfg.eval.over_context) == (512, 1024, "fail")
    with pytest.raises(click.BadParameter):
        commands.build.make_context("build", ["--over-context", "drop"])


def test_flags_not_given_leave_the_files_values(isolated):
    (isolated / CONFIG_FILE).write_text(yaml.safe_dump({
        "target": "rpi4", "threads": 3, "export": {"quants": ["Q8_0"]}, "eval": {"metric": "json"},
        "train": {"r": 4, "adapter": "dora", "packing": True, "chat_template_fallback": "chatml",
                  "micro_batch_tokens": 256, "max_steps": 9}}))
    from_file = load_config(isolated / CONFIG_FILE).model_dump(exclude={"out_dir"})
    assert train_config([]).model_dump(exclude={"out_dir"}) == from_file
    params = dict(commands.build.make_context("build", []).params)
    for own in ("strict", "gpus", "fsdp"):  # how build runs and ends, not settings
        params.pop(own)
    assert commands.build_config(params.pop("config_path"), **params).model_dump(exclude={"out_dir"}) == from_file
    # a given flag wins over the file, the others keep it
    cfg = train_config(["--no-packing", "--rank", "8"])
    assert (cfg.train.packing, cfg.train.r, cfg.train.adapter, cfg.train.max_steps) == (False, 8, "dora", 9)


@pytest.mark.parametrize("argv, where", [
    (["train", "--micro-batch-tokens", "0"], "train.micro_batch_tokens: "),
    (["train", "--chat-template-fallback", "vicuna"], "train.chat_template_fallback: "),
    (["sweep", "--epochs", "0"], "train.epochs: "),
    (["build", "--threads", "0"], "threads: "),
    (["build", "--metric", "bleu"], "eval.metric.name: "),
])
def test_a_bad_value_is_one_error_line_naming_the_field(edgetune, isolated, argv, where):
    line = one_error_line(edgetune(*argv, "--out", "out"), 2)
    assert line.startswith(f"error: command-line flags: {where}"), line
    assert not (isolated / "out").exists()


@pytest.mark.parametrize("argv", [["train", "--adapter", "prefix"], ["train", "--rank", "x"],
                                  ["sweep", "--lr", "fast"], ["build", "--quant", "Q1"]])
def test_a_value_of_the_wrong_type_is_a_usage_error(edgetune, argv):
    result = edgetune(*argv)
    assert result.exit_code == 2 and result.stderr.startswith("Usage: ") and result.stdout == ""


def test_a_fields_path_is_all_a_new_flag_needs():
    @click.command()
    @config_options("data.seed", "train.target_modules", "export.imatrix", "export.gates.prompts")
    def command(**flags):
        return flags

    help_text = squeezed(CliRunner().invoke(command, ["--help"]).output)
    assert squeezed("--seed INTEGER Seed of the train/held-out split.") in help_text
    assert "--imatrix/--no-imatrix" in help_text and "--target-modules" in help_text and "--prompts" in help_text
    argv = ["--seed", "3", "--target-modules", "q_proj", "--target-modules", "v_proj", "--no-imatrix"]
    given = overrides(command.make_context("command", argv).params)
    assert given == {"data.seed": 3, "train.target_modules": ["q_proj", "v_proj"], "export.imatrix": False}
    cfg = BuildConfig().with_overrides(given)
    assert (cfg.data.seed, cfg.train.target_modules, cfg.export.imatrix) == (3, ["q_proj", "v_proj"], False)
    assert cfg.export.gates.prompts == BuildConfig().export.gates.prompts  # not given: unchanged


def test_no_flag_for_a_field_the_command_line_cannot_spell():
    with pytest.raises(TypeError, match="export.gates.kld_max: no command-line flag"):
        config_option("export.gates.kld_max")
    with pytest.raises(KeyError, match="train.rank: no such setting"):
        config_option("train.rank")
