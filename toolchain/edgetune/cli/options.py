"""Command-line flags generated from the config models: each sets one BuildConfig field, named by its dotted
path ("train.r"), and takes its type and help from that field. A field becomes a flag of a command by adding
its path to the command's list; its value is checked by the model, as a value from edgetune.yaml is.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edgetune.config import BuildConfig
from edgetune.constants import CONFIG_FILE

# Flags whose name is not their field's: the names the CLI has always had, kept so commands people wrote work.
FLAG_NAMES = {"model.source": "model", "data.source": "data", "export.quants": "quant", "train.r": "rank",
              "train.learning_rate": "lr", "out_dir": "out", "eval.metric": "metric"}

F = TypeVar("F", bound=Callable[..., Any])

config_file_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    help=f"Config file (default: ./{CONFIG_FILE} if present, else the embedded default).")


def field_info(path: str) -> FieldInfo:
    """The BuildConfig field at a dotted path, e.g. "train.r". Raises KeyError naming the path."""
    model: type[BaseModel] = BuildConfig
    *sections, leaf = path.split(".")
    for name in sections:
        section = model.model_fields[name].annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            raise KeyError(f"{path}: {name} is not a section")
        model = section
    if leaf not in model.model_fields:
        raise KeyError(f"{path}: no such setting")
    return model.model_fields[leaf]


def flag_name(path: str) -> str:
    return FLAG_NAMES.get(path, path.rsplit(".", 1)[-1]).replace("_", "-")


def dest(path: str) -> str:
    """The option's parameter name: click's names are identifiers, so the path's dots become double
    underscores (overrides() turns them back)."""
    return path.replace(".", "__")


def _not_none(annotation: Any) -> Any:
    """X for `X | None`, else the annotation itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _click_type(path: str, kind: Any) -> click.ParamType[Any]:
    if get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) in (Union, types.UnionType):  # an enum's value or a str form (a quant, auto:<QUANT>-size)
        enums = [a for a in get_args(kind) if isinstance(a, type) and issubclass(a, enum.Enum)]
        texts = [a for a in get_args(kind)
                 if isinstance(a, type) and issubclass(a, str) and not issubclass(a, enum.Enum)]
        if len(enums) == 1 and len(texts) == 1:
            return _EnumOrText(enums[0], texts[0])
        raise TypeError(f"{path}: no command-line flag for a field of type {kind!r}")
    if get_origin(kind) is Literal:
        return click.Choice([str(a) for a in get_args(kind)])
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return click.Choice([str(m.value) for m in kind])
    if kind is Path:  # names carry units: a *_dir field is a folder
        return click.Path(path_type=Path, file_okay=not path.endswith("_dir"))
    if isinstance(kind, type) and issubclass(kind, BaseModel):  # a model that also reads a bare string (metric)
        return click.STRING
    simple: dict[Any, click.ParamType[Any]] = {str: click.STRING, int: click.INT, float: click.FLOAT}
    if kind in simple:
        return simple[kind]
    raise TypeError(f"{path}: no command-line flag for a field of type {kind!r}")


class _EnumOrText(click.ParamType[Any]):
    """An enum's value, or a string another str type parses (its ValueError is the usage error)."""

    name = "choice"

    def __init__(self, choices: type[enum.Enum], text: type[str]):
        self.values = [str(m.value) for m in choices]
        self.text = text

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:  # noqa: ARG002
        return "[" + "|".join([*self.values, getattr(self.text, "METAVAR", "TEXT")]) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.values:
            return value
        try:
            return str(self.text(value))
        except ValueError as exc:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, self.values))}: {exc}", param, ctx)


def config_option(path: str) -> Callable[[F], F]:
    """A click option for one field: `--name VALUE` (`--name/--no-name` for a bool, repeatable for a list),
    default None so the file's value stays unless the flag is given."""
    info = field_info(path)
    name, kind = flag_name(path), _not_none(info.annotation)
    listed = get_origin(kind) is list
    help_text = " ".join(filter(None, [info.description, "Repeatable." if listed else "",
                                       f"(edgetune.yaml: {path})"]))
    if kind is bool:
        return click.option(f"--{name}/--no-{name}", dest(path), default=None, help=help_text)
    if listed:
        (item,) = get_args(kind)
        return click.option(f"--{name}", dest(path), type=_click_type(path, item), multiple=True, help=help_text)
    # a model field (the metric) takes its bare-name form on the command line
    metavar = "NAME" if isinstance(kind, type) and issubclass(kind, BaseModel) else None
    return click.option(f"--{name}", dest(path), type=_click_type(path, kind), default=None, metavar=metavar,
                        help=help_text)


def config_options(*paths: str) -> Callable[[F], F]:
    """Options for these fields, shown in --help in this order."""
    def decorate(fn: F) -> F:
        for path in reversed(paths):
            fn = config_option(path)(fn)
        return fn
    return decorate


def overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """The generated options' values keyed by dotted path, as BuildConfig.with_overrides takes them. A flag
    not given (None, or a repeatable one never given) is left out, so the file's or the default value stays."""
    return {name.replace("__", "."): list(v) if isinstance(v, tuple) else v
            for name, v in values.items() if v is not None and v != ()}


def gpu_options(fn: F) -> F:
    """--gpus and --fsdp, shared by `train` and `build` (both train through train/launch.py)."""
    fn = click.option("--fsdp/--no-fsdp", default=None, help="Force FSDP on or off when --gpus is over 1.")(fn)
    return click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
                        help="GPUs to train on (over 1: DDP through accelerate; FSDP for bases over 13B "
                             "parameters).")(fn)
