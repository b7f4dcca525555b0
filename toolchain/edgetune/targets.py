"""Target boards as data: `targets/*.yaml` profiles, validated, found by name or alias.

Nothing outside this module branches on a board name; stages read the profile's fields (quant list, CPU
features, memory) instead.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgetune.constants import Quant
from edgetune.errors import ConfigError

# Repo checkouts (the supported install is editable) keep profiles beside toolchain/.
TARGETS_DIR = Path(__file__).resolve().parents[2] / "targets"


class CPU(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    core: str = Field(description="Core type, e.g. cortex-a76.")
    cores: int = Field(ge=1, description="Cores usable by llama.cpp.")
    mcpu: str = Field(description="-mcpu for the cross-build.")
    features: list[str] = Field(description="ISA features: neon, dotprod, i8mm, sve, avx2 ...")
    clock_ghz: float = Field(gt=0, description="Nominal clock, GHz.")


class Target(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    description: str
    aliases: list[str] = []
    arch: Literal["aarch64", "x86_64"]
    cpu: CPU
    ram_gb: float = Field(gt=0, description="Installed RAM, GB.")
    usable_ram_share: float = Field(gt=0, le=1, description="Share of RAM the model may take (rest: OS, apps).")
    mem_bandwidth_gbs: float = Field(gt=0, description="Sustained memory bandwidth, GB/s.")
    os: str = Field(description="OS the bundle assumes.")
    quants: list[Quant] = Field(min_length=1, description="Quants to build, preferred first.")
    context_length: int = Field(2048, ge=128, description="Context the runner uses, tokens.")


def _load_all(root: Path = TARGETS_DIR) -> dict[str, Target]:
    found: dict[str, Target] = {}
    for path in sorted(root.glob("*.yaml")):
        try:
            target = Target.model_validate(yaml.safe_load(path.read_text()))
        except (ValidationError, yaml.YAMLError) as exc:
            raise ConfigError(f"target profile {path.name} is invalid: {str(exc).splitlines()[0]}",
                              "fix the YAML; see targets/rpi5-8gb.yaml") from exc
        for name in (target.name, *target.aliases):
            if name in found and found[name].name != target.name:
                raise ConfigError(f"target name {name!r} is claimed by both {found[name].name} and {path.name}",
                                  "give each profile a unique name and aliases")
            found[name] = target
    return found


def list_targets(root: Path = TARGETS_DIR) -> list[Target]:
    return sorted({t.name: t for t in _load_all(root).values()}.values(), key=lambda t: t.name)


def get_target(name: str, root: Path = TARGETS_DIR) -> Target:
    """The profile for a name or alias; ConfigError with the nearest names otherwise."""
    known = _load_all(root)
    name = name.strip().lower()
    if name in known:
        return known[name]
    near = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(near)}?" if near else f"known targets: {', '.join(sorted(known))}"
    raise ConfigError(f"unknown target {name!r}", hint + " (`edgetune targets list`)")
