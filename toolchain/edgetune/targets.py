"""Target boards as data: `targets/*.yaml` profiles, validated, found by name or alias.

The profiles ship inside the package (`edgetune/resources/targets/`, package data found through
`importlib.resources`); the user's `~/.config/edgetune/targets/` (XDG_CONFIG_HOME honoured) adds profiles and
overrides a shipped one of the same `name`. Nothing outside this module branches on a board name; stages read the
profile's fields (quant list, CPU features, memory) instead. `edgetune.planner` turns those fields into memory
fits and predicted speeds. Raises ConfigError for unknown names and invalid or clashing profiles.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgetune.constants import Quant
from edgetune.errors import ConfigError
from edgetune.resources import Folder, folders, packaged

# the shipped profiles (package data)
TARGETS_DIR = packaged("targets")


# ISA features a profile may name, per arch (the names of `/proc/cpuinfo` flags and GCC's +ext suffixes,
# lower case). A typo ("dotprd") would silently lose the feature in the planner, so unknown names are refused.
ARM_FEATURES = frozenset({"neon", "dotprod", "fp16", "i8mm", "bf16", "sve", "sve2"})
X86_FEATURES = frozenset({"avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512_vnni"})


class CPU(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    core: str = Field(description="Core type, e.g. cortex-a76 (the big core on big.LITTLE chips).")
    cores: int = Field(ge=1, description="Cores llama.cpp should use: on big.LITTLE chips the big cluster only.")
    mcpu: str = Field(description="-mcpu for the cross-build (-march for x86_64).")
    features: list[str] = Field(description="ISA features: neon, dotprod, fp16, i8mm, sve, avx2 ...")
    clock_ghz: float = Field(gt=0, description="Nominal clock of `core`, GHz.")
    little_core: str | None = Field(None, description="Efficiency core type on big.LITTLE chips, e.g. cortex-a55.")
    little_cores: int = Field(0, ge=0, description="Efficiency cores left out of `cores` (0: none).")

    @model_validator(mode="after")
    def _little_cluster_is_whole(self) -> CPU:
        if (self.little_core is None) != (self.little_cores == 0):
            raise ValueError("little_core and little_cores go together: name the core type and give its count")
        return self


class Target(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    description: str
    aliases: list[str] = []
    arch: Literal["aarch64", "x86_64"]
    cpu: CPU
    ram_gb: float = Field(gt=0, description="Installed RAM, GB.")
    usable_ram_share: float = Field(gt=0, le=1, description="Share of RAM the model may take (rest: OS, apps).")
    mem_bandwidth_gbs: float = Field(gt=0, description="Sustained memory bandwidth the CPU cores reach, GB/s "
                                                       "(below the bus peak; the planner's decode roofline).")
    os: str = Field(description="OS the bundle assumes.")
    quants: list[Quant] = Field(min_length=1, description="Quants to build, preferred first.")
    context_length: int = Field(2048, ge=128, description="Context the runner uses, tokens.")
    soc: str = Field("", description="System on chip, e.g. Broadcom BCM2712.")
    memory: str = Field("", description="Memory type and bus width, e.g. LPDDR4X-4267, 32-bit.")
    mem_peak_gbs: float | None = Field(None, gt=0, description="Bus peak bandwidth, GB/s: transfer rate × bus "
                                                              "width. Context for mem_bandwidth_gbs only.")
    swap_gb: float = Field(0, ge=0, description="Swap the stock OS image sets up, GB. Never counted as usable: "
                                                "weights paged to SD/eMMC or zram cut tok/s by orders of magnitude.")

    @field_validator("quants")
    @classmethod
    def _quants_unique(cls, quants: list[Quant]) -> list[Quant]:
        if len(set(quants)) != len(quants):
            raise ValueError(f"quants lists a type twice: {[q.value for q in quants]}")
        return quants

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        known = ARM_FEATURES if self.arch == "aarch64" else X86_FEATURES
        unknown = sorted(set(self.cpu.features) - known)
        if unknown:
            raise ValueError(f"cpu.features {unknown} unknown for {self.arch}; known: {', '.join(sorted(known))}")
        if self.mem_peak_gbs is not None and self.mem_bandwidth_gbs > self.mem_peak_gbs:
            raise ValueError(f"mem_bandwidth_gbs {self.mem_bandwidth_gbs} exceeds the bus peak mem_peak_gbs "
                             f"{self.mem_peak_gbs}")
        return self

    @property
    def usable_ram_bytes(self) -> int:
        """RAM the model may take. `ram_gb` is the marketed size (GiB chips) counted as 10^9 bytes: ~7% under
        the physical size, which the kernel's own reservations (firmware, CMA, GPU split) take anyway."""
        return int(self.ram_gb * self.usable_ram_share * 1e9)


@dataclass(frozen=True)
class Profile:
    """A loaded profile and where it came from: `origin` is "package" or the user folder's path."""

    target: Target
    origin: str
    file: str


def _folders(root: Path | None) -> list[Folder]:
    """`root` alone when given (tests, tools), else the package's profiles and the user's."""
    return [Folder(str(root), root)] if root is not None else folders("targets")


def _read(path: Traversable) -> Target:
    try:
        return Target.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ConfigError(f"target profile {path.name} is invalid: {_first_problem(exc)}",
                          "fix the YAML; see `edgetune targets show rpi5-8gb`") from exc


def _load_all(root: Path | None = None) -> dict[str, Profile]:
    """Every name and alias → its profile. A later folder's profile replaces an earlier one of the same name
    (the user's over the package's); two profiles claiming one name or alias otherwise are refused."""
    by_name: dict[str, Profile] = {}
    for folder in _folders(root):
        mine: dict[str, Profile] = {}
        for path in folder.yaml_files():
            target = _read(path)
            if target.name in mine:
                raise ConfigError(f"target name {target.name!r} is claimed by both {mine[target.name].file} and "
                                  f"{path.name} in {folder.origin}", "give each profile a unique name and aliases")
            mine[target.name] = Profile(target, folder.origin, path.name)
        by_name.update(mine)
    found: dict[str, Profile] = {}
    for profile in by_name.values():
        for name in (profile.target.name, *profile.target.aliases):
            if name in found and found[name].target.name != profile.target.name:
                raise ConfigError(f"target name {name!r} is claimed by both {found[name].target.name} and "
                                  f"{profile.file} ({profile.origin})", "give each profile a unique name and aliases")
            found[name] = profile
    return found


def _first_problem(exc: ValidationError | yaml.YAMLError) -> str:
    """One line: the field path and pydantic's message, or the YAML parser's first line."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return f"{where}: {err['msg']}" if where else err["msg"]
    return str(exc).splitlines()[0]


def list_profiles(root: Path | None = None) -> list[Profile]:
    """Each profile once, by name, with where it came from."""
    return sorted({p.target.name: p for p in _load_all(root).values()}.values(), key=lambda p: p.target.name)


def list_targets(root: Path | None = None) -> list[Target]:
    return [p.target for p in list_profiles(root)]


def get_target(name: str, root: Path | None = None) -> Target:
    """The profile for a name or alias; ConfigError with the nearest names otherwise."""
    known = _load_all(root)
    name = name.strip().lower()
    if name in known:
        return known[name].target
    near = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(near)}?" if near else f"known targets: {', '.join(sorted(known))}"
    raise ConfigError(f"unknown target {name!r}", hint + " (`edgetune targets list`)")
