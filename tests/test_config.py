"""BuildConfig: defaults, the starter file, strict validation with field paths, and CLI-style overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgetune.config import STARTER, BuildConfig, load_config
from edgetune.constants import Quant
from edgetune.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_equal_the_starter_file(tmp_path):
    cfg = load_config(write(tmp_path / "edgetune.yaml", STARTER))
    default = BuildConfig()
    assert cfg.out_dir == tmp_path / default.out_dir  # relative paths resolve against the file's folder
    assert cfg.model_dump(exclude={"out_dir"}) == default.model_dump(exclude={"out_dir"})


def test_no_file_is_the_embedded_default():
    assert load_config(None) == BuildConfig()


def test_empty_file_is_the_default(tmp_path):
    cfg = load_config(write(tmp_path / "edgetune.yaml", "# nothing set\n"))
    assert cfg.model_dump(exclude={"out_dir"}) == BuildConfig().model_dump(exclude={"out_dir"})


def test_file_values_are_read(tmp_path):
    cfg = load_config(write(tmp_path / "e.yaml", "target: RPi4-4GB\ntrain: {r: 4, target_modules: [q_proj]}\n"
                                                   "export: {quants: [Q8_0]}\ndata: {source: d.csv}\n"))
    assert cfg.target == "rpi4-4gb"  # normalised
    assert (cfg.train.r, cfg.train.target_modules, cfg.train.alpha) == (4, ["q_proj"], 32)
    assert cfg.export.quants == [Quant.Q8_0]
    assert cfg.data.source == "d.csv"


@pytest.mark.parametrize("text, where", [
    ("tarket: rpi5\n", "tarket"),
    ("train: {rr: 8}\n", "train.rr"),
    ("data: {source: x.jsonl, input_col: q}\n", "data.input_col"),
    ("eval: {max_new_tokens: 4, extra: 1}\n", "eval.extra"),
], ids=["top-level", "train", "data", "eval"])
def test_unknown_key_names_the_field_path(tmp_path, text, where):
    path = write(tmp_path / "edgetune.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.message == f"{path}: {where}: Extra inputs are not permitted"
    assert "edgetune init" in exc.value.hint
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("text, where", [
    ("train: {r: sixteen}\n", "train.r"),
    ("train: {r: 0}\n", "train.r"),
    ("train: {dropout: 1.0}\n", "train.dropout"),
    ("train: {method: full}\n", "train.method"),
    ("train: {target_modules: q_proj}\n", "train.target_modules"),
    ("threads: 0\n", "threads"),
    ("export: {quants: [Q9_9]}\n", "export.quants.0"),
    ("data: {heldout_size: 5}\n", "data.heldout_size"),
    ("model: [a, b]\n", "model"),
    ("model: {trust_remote_code: maybe}\n", "model.trust_remote_code"),
])
def test_bad_value_names_the_field_path(tmp_path, text, where):
    path = write(tmp_path / "edgetune.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.message.startswith(f"{path}: {where}: ")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml")
    assert exc.value.message == f"config file not found: {tmp_path / 'nope.yaml'}"
    assert "edgetune init" in exc.value.hint


def test_invalid_yaml_is_one_line(tmp_path):
    path = write(tmp_path / "edgetune.yaml", "train:\n  r: [8\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.message.startswith(f"{path}: not valid YAML: ")
    assert "\n" not in str(exc.value)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path / "edgetune.yaml", "- target\n- rpi5\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


@pytest.mark.parametrize("out_dir, expected", [
    ("edgetune-out", "cfgdir/edgetune-out"),
    ("../elsewhere", "cfgdir/../elsewhere"),
    ("sub/dir", "cfgdir/sub/dir"),
])
def test_relative_out_dir_is_against_the_file_folder(tmp_path, monkeypatch, out_dir, expected):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "cfgdir" / "edgetune.yaml", f"out_dir: {out_dir}\n")
    assert load_config(path).out_dir == tmp_path / expected
    assert load_config(Path("cfgdir/edgetune.yaml")).out_dir == Path(expected)


def test_absolute_out_dir_is_kept(tmp_path):
    path = write(tmp_path / "cfgdir" / "edgetune.yaml", f"out_dir: {tmp_path / 'abs'}\n")
    assert load_config(path).out_dir == tmp_path / "abs"


def test_config_is_frozen():
    cfg = BuildConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.r = 4  # type: ignore[misc]


class TestWithOverrides:
    def test_dotted_keys(self):
        cfg = BuildConfig().with_overrides({"train.r": 8, "target": "RPI4-4GB", "data.source": "x.jsonl",
                                            "export.quants": ["Q4_0"], "out_dir": Path("o")})
        assert (cfg.train.r, cfg.target, cfg.data.source) == (8, "rpi4-4gb", "x.jsonl")
        assert cfg.export.quants == [Quant.Q4_0]
        assert cfg.out_dir == Path("o")

    def test_none_is_ignored(self):
        base = BuildConfig().with_overrides({"train.r": 4})
        assert base.with_overrides({"train.r": None, "target": None, "export.quants": None}) == base

    def test_returns_a_new_config(self):
        base = BuildConfig()
        base.with_overrides({"train.r": 4})
        assert base.train.r == 16

    def test_other_fields_kept(self, tmp_path):
        base = load_config(write(tmp_path / "e.yaml", "train: {alpha: 64, r: 4}\ntarget: rpi4\n"))
        cfg = base.with_overrides({"train.r": 8})
        assert (cfg.train.r, cfg.train.alpha, cfg.target, cfg.out_dir) == (8, 64, "rpi4", base.out_dir)

    @pytest.mark.parametrize("overrides, message", [
        ({"train.r": 0}, "command-line flags: train.r: "),
        ({"train.learning_rate": -1.0}, "command-line flags: train.learning_rate: "),
        ({"export.quants": ["Q9_9"]}, "command-line flags: export.quants.0: "),
        ({"train.rr": 8}, "command-line flags: train.rr: Extra inputs are not permitted"),
        ({"trian.r": 8}, "command-line flags: trian.r: no such setting"),
        ({"target.name": "x"}, "command-line flags: target.name: no such setting"),
    ])
    def test_revalidated(self, overrides, message):
        with pytest.raises(ConfigError) as exc:
            BuildConfig().with_overrides(overrides)
        assert exc.value.message.startswith(message)


def test_relative_sources_resolve_against_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "train.jsonl").write_text('{"input": "a", "output": "b"}\n')
    cfg_path = tmp_path / "proj" / "edgetune.yaml"
    cfg_path.write_text("data:\n  source: train.jsonl\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(cfg_path)
    assert cfg.data.source == str(tmp_path / "proj" / "train.jsonl")


@pytest.mark.parametrize("text, message", [
    ("eval: {forgetting: {mmlu2: 5}}\n", ("eval.forgetting: Value error, unknown forgetting set 'mmlu2'; choose "
                                          "from mmlu, arc_easy, arc_challenge, hellaswag, piqa, winogrande")),
    ("eval: {forgetting: {piqa: -1}}\n", ("eval.forgetting: Value error, piqa: items must be a whole number >= 0, "
                                          "got -1")),
    ("eval: {forgetting: {piqa: many}}\n", "eval.forgetting.piqa: Input should be a valid integer"),
])
def test_bad_forgetting_sets_are_one_line_errors(tmp_path, text, message):
    path = write(tmp_path / "edgetune.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.message.startswith(f"{path}: {message}")


def test_forgetting_sets_replace_the_defaults(tmp_path):
    cfg = load_config(write(tmp_path / "edgetune.yaml", "eval: {forgetting: {mmlu: 10, winogrande: 5}}\n"))
    assert cfg.eval.forgetting == {"mmlu": 10, "winogrande": 5}


def test_mmlu_items_of_older_configs_still_sets_the_mmlu_size(tmp_path, caplog):
    cfg = load_config(write(tmp_path / "edgetune.yaml", "eval: {mmlu_items: 0}\n"))
    assert cfg.eval.forgetting == {**BuildConfig().eval.forgetting, "mmlu": 0}
    assert "eval.mmlu_items is deprecated" in caplog.text and "forgetting: {mmlu: 0}" in caplog.text
    both = load_config(write(tmp_path / "b.yaml", "eval: {mmlu_items: 7, forgetting: {piqa: 3}}\n"))
    assert both.eval.forgetting == {"piqa": 3, "mmlu": 7}
    assert BuildConfig().with_overrides({"eval.mmlu_items": 12}).eval.forgetting["mmlu"] == 12


# config.py is the vocabulary every stage imports: it imports no stage, nor the evals or train packages
CONFIG_IMPORTS = {"edgetune", "edgetune.config", "edgetune.assets", "edgetune.constants", "edgetune.errors",
                  "edgetune.chat_templates", "edgetune.judge_config", "edgetune.metric_spec"}


def test_config_sits_at_the_bottom_of_the_import_graph(tmp_path):
    """In a fresh interpreter, loading and validating a config (every validator runs) imports only leaves."""
    import subprocess
    import sys

    path = write(tmp_path / "edgetune.yaml",
                 "train: {chat_template_fallback: chatml}\n"
                 "eval: {forgetting: {mmlu: 5, piqa: 3}, metric: {name: regex, pattern: 'A: (.+)'}}\n"
                 "judge: {base_url: 'http://x/v1', model: m}\n")
    code = ("import json, sys; from pathlib import Path; from edgetune.config import load_config\n"
            f"load_config(Path({str(path)!r})).with_overrides({{'train.r': 8}})\n"
            "print(json.dumps([m for m in sys.modules if m.split('.')[0] == 'edgetune']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == CONFIG_IMPORTS


def test_the_starter_file_has_every_field_with_its_description():
    """STARTER is generated from the models: every key of every section appears, with its description above it."""
    import yaml
    from pydantic import BaseModel

    def keys(model_cls, data, prefix=""):
        for name, info in model_cls.model_fields.items():
            assert name in data, f"{prefix}{name} is missing from the starter file"
            assert info.description is None or info.description.split()[0] in STARTER
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(data[name], dict) \
                    and sub.__name__.endswith("Config"):
                keys(sub, data[name], f"{prefix}{name}.")

    keys(BuildConfig, yaml.safe_load(STARTER))
    assert "micro_batch_tokens: null" in STARTER  # a field the hand-written file had missed
    assert "# judge:\n#   base_url: https://api.openai.com/v1" in STARTER  # the unset judge, shown commented
