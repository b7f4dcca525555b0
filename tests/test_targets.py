"""Target profiles: every shipped YAML validates, names and aliases resolve, typos get suggestions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgetune.constants import Quant
from edgetune.errors import ConfigError
from edgetune.targets import TARGETS_DIR, Target, get_target, list_targets

PROFILES = sorted(TARGETS_DIR.glob("*.yaml"))
RPI5 = (TARGETS_DIR / "rpi5-8gb.yaml").read_text()


def test_profiles_exist():
    assert {p.stem for p in PROFILES} >= {"rpi5-8gb", "rpi5-4gb", "rpi4-4gb", "generic-arm64", "x86_64-host"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_validates(path):
    target = Target.model_validate(yaml.safe_load(path.read_text()))
    assert target.name == path.stem  # the file is named after the profile
    assert target.quants and len(set(target.quants)) == len(target.quants)
    assert target.cpu.cores >= 1 and 0 < target.usable_ram_share <= 1


def test_names_and_aliases_are_unique():
    seen: list[str] = []
    for path in PROFILES:
        raw = yaml.safe_load(path.read_text())
        seen += [raw["name"], *raw.get("aliases", [])]
    assert len(seen) == len(set(seen)), "two profiles claim the same name or alias"


def test_list_targets_has_each_profile_once():
    names = [t.name for t in list_targets()]
    assert names == sorted(p.stem for p in PROFILES)


@pytest.mark.parametrize("name, expected", [
    ("rpi5", "rpi5-8gb"), ("rpi5-8gb", "rpi5-8gb"), ("rpi4", "rpi4-4gb"), ("rpi5-4gb", "rpi5-4gb"),
    ("x86_64-host", "x86_64-host"),
])
def test_names_and_aliases_resolve(name, expected):
    assert get_target(name).name == expected


def test_rpi5_profile_facts():
    t = get_target("rpi5")
    assert (t.arch, t.cpu.core, t.cpu.mcpu, t.cpu.cores) == ("aarch64", "cortex-a76", "cortex-a76", 4)
    assert "dotprod" in t.cpu.features and "i8mm" not in t.cpu.features and "sve" not in t.cpu.features
    assert t.quants == [Quant.Q4_0, Quant.Q8_0]


@pytest.mark.parametrize("name, suggested", [
    ("rpi6", "rpi5"), ("rpi5-16gb", "rpi5-8gb"), ("x86", "x86_64-host"), ("rpi-5", "rpi5"),
])
def test_unknown_target_suggests_nearest(name, suggested):
    with pytest.raises(ConfigError) as exc:
        get_target(name)
    assert exc.value.message == f"unknown target {name!r}"
    assert exc.value.hint.startswith("did you mean ") and suggested in exc.value.hint
    assert "edgetune targets list" in exc.value.hint
    assert exc.value.exit_code == 2


def test_unknown_target_without_near_name_lists_all():
    with pytest.raises(ConfigError) as exc:
        get_target("zzzzzzzzzzzz")
    assert exc.value.hint.startswith("known targets: ")
    assert all(t.name in exc.value.hint for t in list_targets())


def write_profile(root: Path, name: str, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.yaml").write_text(text)
    return root


def test_custom_root(tmp_path):
    root = write_profile(tmp_path, "board", RPI5.replace("name: rpi5-8gb", "name: board").replace("[rpi5]", "[b]"))
    assert [t.name for t in list_targets(root)] == ["board"]
    assert get_target("b", root).name == "board"
    with pytest.raises(ConfigError, match="unknown target 'rpi5'"):
        get_target("rpi5", root)


@pytest.mark.parametrize("edit", [
    ("quants: [Q4_0, Q8_0]", "quants: [Q4_0, Q9_9]"),
    ("quants: [Q4_0, Q8_0]", "quants: []"),
    ("arch: aarch64", "arch: riscv64"),
    ("ram_gb: 8", "ram_gb: 8\nram_mb: 8192"),
    ("usable_ram_share: 0.7", "usable_ram_share: 1.5"),
    ("name: rpi5-8gb\n", "name: [\n"),
], ids=["bad-quant", "no-quants", "bad-arch", "unknown-key", "share-over-1", "bad-yaml"])
def test_invalid_profile_names_the_file(tmp_path, edit):
    old, new = edit
    assert old in RPI5
    root = write_profile(tmp_path, "broken", RPI5.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        get_target("rpi5", root)
    assert exc.value.message.startswith("target profile broken.yaml is invalid: ")
    assert "\n" not in str(exc.value)


def test_lookup_ignores_case_and_spaces():
    assert get_target(" RPI5 ").name == "rpi5-8gb"


def test_duplicate_names_are_refused(tmp_path):
    import shutil

    src = TARGETS_DIR / "rpi5-8gb.yaml"
    shutil.copy(src, tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(src.read_text().replace("name: rpi5-8gb", "name: other"))
    with pytest.raises(ConfigError, match="claimed by both"):
        get_target("rpi5", root=tmp_path)
