"""Target profiles: every shipped YAML validates, names and aliases resolve, typos get suggestions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgetune.constants import Quant
from edgetune.errors import ConfigError
from edgetune.resources import PACKAGE
from edgetune.targets import TARGETS_DIR, Target, get_target, list_profiles, list_targets

PROFILES = sorted(Path(str(TARGETS_DIR)).glob("*.yaml"))  # a checkout's package data is a folder
RPI5 = (TARGETS_DIR / "rpi5-8gb.yaml").read_text()


def test_profiles_exist():
    assert {p.stem for p in PROFILES} >= {
        "rpi5-4gb", "rpi5-8gb", "rpi5-16gb", "rpi4-4gb", "rpi4-8gb", "rpi-zero-2w", "jetson-orin-nano-8gb",
        "orange-pi-5", "generic-arm64", "x86_64-host"}


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
    ("x86_64-host", "x86_64-host"), ("rpi5-16gb", "rpi5-16gb"), ("rpi4-8gb", "rpi4-8gb"),
    ("zero2w", "rpi-zero-2w"), ("jetson-orin-nano", "jetson-orin-nano-8gb"), ("opi5", "orange-pi-5"),
    ("rk3588", "orange-pi-5"),
])
def test_names_and_aliases_resolve(name, expected):
    assert get_target(name).name == expected


def test_rpi5_profile_facts():
    t = get_target("rpi5")
    assert (t.arch, t.cpu.core, t.cpu.mcpu, t.cpu.cores) == ("aarch64", "cortex-a76", "cortex-a76", 4)
    assert "dotprod" in t.cpu.features and "i8mm" not in t.cpu.features and "sve" not in t.cpu.features
    assert t.quants == [Quant.Q4_0, Quant.Q8_0]


@pytest.mark.parametrize("name, suggested", [
    ("rpi6", "rpi5"), ("rpi5-32gb", "rpi5-8gb"), ("x86", "x86_64-host"), ("rpi-5", "rpi5"),
    ("orangepi5", "orange-pi-5"), ("jetson", "jetson-orin-nano-8gb"), ("zero 2w", "rpi-zero-2w"),
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

    src = Path(str(TARGETS_DIR / "rpi5-8gb.yaml"))
    shutil.copy(src, tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(src.read_text().replace("name: rpi5-8gb", "name: other"))
    with pytest.raises(ConfigError, match="claimed by both"):
        get_target("rpi5", root=tmp_path)


# --- the user's folder ------------------------------------------------------------------------------------

def test_user_folder_adds_and_overrides_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    mine = tmp_path / "config" / "edgetune" / "targets"
    write_profile(mine, "board", RPI5.replace("name: rpi5-8gb", "name: board").replace("[rpi5]", "[b]"))
    write_profile(mine, "rpi5-8gb", RPI5.replace("ram_gb: 8", "ram_gb: 7"))
    profiles = {p.target.name: p for p in list_profiles()}
    assert (profiles["board"].origin, profiles["board"].file) == (str(mine), "board.yaml")
    assert profiles["rpi5-8gb"].origin == str(mine) and get_target("rpi5").ram_gb == 7
    assert profiles["rpi4-4gb"].origin == PACKAGE
    assert get_target("b").name == "board"
    assert len(profiles) == len(PROFILES) + 1


def test_user_profile_claiming_a_shipped_alias_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    write_profile(tmp_path / "edgetune" / "targets", "board", RPI5.replace("name: rpi5-8gb", "name: board"))
    with pytest.raises(ConfigError, match="target name 'rpi5' is claimed by both rpi5-8gb and board.yaml"):
        get_target("board")


def test_without_a_user_folder_every_profile_is_the_package_s(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "absent"))
    assert {p.origin for p in list_profiles()} == {PACKAGE}
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    write_profile(tmp_path / ".config" / "edgetune" / "targets", "board",
                  RPI5.replace("name: rpi5-8gb", "name: board").replace("[rpi5]", "[b]"))
    assert get_target("board").name == "board"


# --- board facts ------------------------------------------------------------------------------------------

# name: (core, cores, mcpu, features, clock GHz, RAM GB, little cores)
FACTS = {
    "rpi5-4gb": ("cortex-a76", 4, "cortex-a76", {"neon", "dotprod", "fp16"}, 2.4, 4, 0),
    "rpi5-8gb": ("cortex-a76", 4, "cortex-a76", {"neon", "dotprod", "fp16"}, 2.4, 8, 0),
    "rpi5-16gb": ("cortex-a76", 4, "cortex-a76", {"neon", "dotprod", "fp16"}, 2.4, 16, 0),
    "rpi4-4gb": ("cortex-a72", 4, "cortex-a72", {"neon"}, 1.8, 4, 0),
    "rpi4-8gb": ("cortex-a72", 4, "cortex-a72", {"neon"}, 1.8, 8, 0),
    "rpi-zero-2w": ("cortex-a53", 4, "cortex-a53", {"neon"}, 1.0, 0.5, 0),
    "jetson-orin-nano-8gb": ("cortex-a78ae", 6, "cortex-a78ae", {"neon", "dotprod", "fp16"}, 1.5, 8, 0),
    "orange-pi-5": ("cortex-a76", 4, "cortex-a76", {"neon", "dotprod", "fp16"}, 2.4, 8, 4),
}


@pytest.mark.parametrize("name", sorted(FACTS))
def test_board_facts(name):
    t = get_target(name)
    core, cores, mcpu, features, clock, ram, little = FACTS[name]
    assert (t.arch, t.cpu.core, t.cpu.cores, t.cpu.mcpu) == ("aarch64", core, cores, mcpu)
    assert set(t.cpu.features) == features
    assert not {"i8mm", "sve", "sve2"} & set(t.cpu.features)  # none of these boards has them
    assert (t.cpu.clock_ghz, t.ram_gb, t.cpu.little_cores) == (clock, ram, little)
    assert t.mem_peak_gbs and t.mem_bandwidth_gbs < t.mem_peak_gbs


def test_orange_pi_5_uses_the_big_cluster_only():
    cpu = get_target("orange-pi-5").cpu
    assert (cpu.core, cpu.cores, cpu.little_core, cpu.little_cores) == ("cortex-a76", 4, "cortex-a55", 4)


def test_memory_grows_with_the_board():
    usable = [get_target(n).usable_ram_bytes for n in ("rpi-zero-2w", "rpi5-4gb", "rpi5-8gb", "rpi5-16gb")]
    assert usable == sorted(usable) and usable[0] == int(0.5 * 0.6 * 1e9)
    assert get_target("rpi5-8gb").usable_ram_bytes == 5_600_000_000


def test_rpi4_is_slower_than_rpi5():
    pi4, pi5 = get_target("rpi4-4gb"), get_target("rpi5-4gb")
    assert pi4.mem_bandwidth_gbs < pi5.mem_bandwidth_gbs and pi4.cpu.clock_ghz < pi5.cpu.clock_ghz


# What the cross-compiler itself says each -mcpu/-march provides (GCC's feature macros), per profile feature.
ARM_MACROS = {"dotprod": "__ARM_FEATURE_DOTPROD", "i8mm": "__ARM_FEATURE_MATMUL_INT8", "sve": "__ARM_FEATURE_SVE",
              "sve2": "__ARM_FEATURE_SVE2", "fp16": "__ARM_FEATURE_FP16_VECTOR_ARITHMETIC",
              "bf16": "__ARM_FEATURE_BF16_VECTOR_ARITHMETIC", "neon": "__ARM_NEON"}
X86_MACROS = {"avx2": "__AVX2__", "fma": "__FMA__", "f16c": "__F16C__", "avx": "__AVX__",
              "avx_vnni": "__AVXVNNI__", "avx512f": "__AVX512F__", "avx512_vnni": "__AVX512VNNI__"}


def compiler_macros(compiler: str, flag: str) -> set[str]:
    import subprocess

    out = subprocess.run([compiler, flag, "-dM", "-E", "-"], input="", capture_output=True, text=True, check=True)
    return {line.split()[1] for line in out.stdout.splitlines() if line.startswith("#define ")}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_features_match_what_the_compiler_enables(path):
    import platform
    import shutil

    t = Target.model_validate(yaml.safe_load(path.read_text()))
    if t.arch == "aarch64":
        compiler, flag, macros = "aarch64-linux-gnu-gcc", f"-mcpu={t.cpu.mcpu}", ARM_MACROS
    else:
        compiler, flag, macros = "gcc", f"-march={t.cpu.mcpu}", X86_MACROS
        if platform.machine() != "x86_64":
            pytest.skip("needs an x86_64 gcc")
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed (apt-get install gcc-aarch64-linux-gnu)")
    defined = compiler_macros(compiler, flag)
    assert {f for f, m in macros.items() if m in defined} == set(t.cpu.features), flag


def test_old_style_profile_still_validates():
    """Profiles written before the planner fields (soc, memory, mem_peak_gbs, swap_gb, little cores) load."""
    raw = yaml.safe_load(RPI5)
    for key in ("soc", "memory", "mem_peak_gbs", "swap_gb"):
        raw.pop(key)
    t = Target.model_validate(raw)
    assert (t.swap_gb, t.mem_peak_gbs, t.soc, t.cpu.little_cores, t.cpu.little_core) == (0, None, "", 0, None)


@pytest.mark.parametrize("old, new, problem", [
    ("features: [neon, dotprod, fp16]", "features: [neon, dotprd, fp16]", "['dotprd'] unknown for aarch64"),
    ("features: [neon, dotprod, fp16]", "features: [neon, avx2]", "['avx2'] unknown for aarch64"),
    ("clock_ghz: 2.4}", "clock_ghz: 2.4, little_cores: 4}", "little_core and little_cores go together"),
    ("mem_bandwidth_gbs: 12.9", "mem_bandwidth_gbs: 30", "mem_bandwidth_gbs 30.0 exceeds the bus peak"),
    ("quants: [Q4_0, Q8_0]", "quants: [Q4_0, Q8_0, Q4_0]", "quants: Value error, quants lists a type twice"),
    ("swap_gb: 0.5", "swap_gb: -1", "swap_gb: Input should be greater than or equal to 0"),
], ids=["feature-typo", "x86-feature-on-arm", "little-without-type", "bandwidth-over-peak", "quant-twice",
        "negative-swap"])
def test_invalid_planner_fields_name_the_problem(tmp_path, old, new, problem):
    assert old in RPI5
    root = write_profile(tmp_path, "broken", RPI5.replace(old, new))
    with pytest.raises(ConfigError) as exc:
        get_target("rpi5", root)
    assert exc.value.message.startswith("target profile broken.yaml is invalid: ")
    assert problem in exc.value.message and "\n" not in exc.value.message
