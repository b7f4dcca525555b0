"""edgetune as a wheel: built from the checkout, installed into a fresh venv and run from a folder outside the
checkout, it finds its target profiles, suites and rubrics as package data (issue 21).

The venv's dependencies come from the environment running the tests (a .pth line naming its site-packages, so
nothing is downloaded); edgetune itself is the wheel, installed with --no-deps, and PYTHONPATH is cleared, so a
file the wheel lacks is missing for real. About 10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from edgetune.resources import ROOT
from edgetune.targets import list_targets

CHECKOUT = Path(__file__).resolve().parents[1]
SHIPPED = {kind: sorted(p.name for p in (ROOT / kind).iterdir() if p.name.endswith((".yaml", ".json")))
           for kind in ("targets", "suites", "judge")}


def run(argv: list, cwd: Path, env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of what it is built from (the checkout stays untouched)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(CHECKOUT / "pyproject.toml", src)
    shutil.copy(CHECKOUT / "README.md", src)
    shutil.copytree(CHECKOUT / "toolchain", src / "toolchain",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", ".", "-w", dist], src,
        dict(os.environ))
    (found,) = dist.glob("edgetune-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv holding the wheel; its dependencies are this environment's site-packages."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root], check=True)
    python = root / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_edgetune_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "-q", "--python", python, "install", "--no-deps", "--no-index", wheel], root,
        dict(os.environ))
    return root


@pytest.fixture
def outside(tmp_path, venv) -> tuple[Path, dict[str, str]]:
    """A working folder outside the checkout, and an environment without PYTHONPATH or user profiles."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cwd = tmp_path / "work"
    cwd.mkdir()
    return cwd, env


def test_wheel_holds_the_profiles_suites_and_rubrics(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind, files in SHIPPED.items():
        assert files and {f"edgetune/resources/{kind}/{f}" for f in files} <= names, kind
    assert "edgetune/device_runner/edgetune_runner.py" in names


def test_installed_package_is_the_wheel(venv, outside):
    cwd, env = outside
    found = run([venv / "bin" / "python", "-c", "import edgetune; print(edgetune.__file__)"], cwd, env).stdout
    assert Path(found.strip()).is_relative_to(venv)


def test_targets_list_from_the_wheel(venv, outside):
    cwd, env = outside
    lines = run(["edgetune", "targets", "list"], cwd, env).stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == [t.name for t in list_targets()]
    assert all(line.endswith("  [package]") for line in lines)
    mine = Path(env["XDG_CONFIG_HOME"]) / "edgetune" / "targets"
    mine.mkdir(parents=True)
    shipped = (ROOT / "targets" / "rpi5-8gb.yaml").read_text()
    (mine / "board.yaml").write_text(shipped.replace("name: rpi5-8gb", "name: board").replace("[rpi5]", "[b]"))
    found = json.loads(run(["edgetune", "--json", "targets", "list"], cwd, env).stdout)["targets"]
    assert {t["name"]: t["source"] for t in found}["board"] == str(mine / "board.yaml")


def test_plan_and_inspect_from_the_wheel(venv, outside, smollm2_gguf):
    cwd, env = outside
    lines = run(["edgetune", "plan", "--target", "rpi5", "--gguf", smollm2_gguf], cwd, env).stdout.splitlines()
    assert lines[0].startswith("rpi5-8gb: 4x cortex-a76 @ 2.4 GHz")
    assert lines[2].split()[:2] == ["Q4_1", "file"] and lines[2].split()[7] == "fits"
    info = json.loads(run(["edgetune", "--json", "inspect", smollm2_gguf], cwd, env).stdout)
    assert info["architecture"] == "llama"


def test_report_from_the_wheel(venv, outside):
    cwd, env = outside
    shutil.copy(CHECKOUT / "docs" / "runs" / "extract-json-rpi5" / "report.json", cwd / "report.json")
    paths = json.loads(run(["edgetune", "--json", "report", cwd], cwd, env).stdout)
    assert Path(paths["html"]).read_text().lstrip().lower().startswith("<!doctype html")
    assert Path(paths["markdown"]).is_file()


# --- extras ----------------------------------------------------------------------------------------------

def project() -> dict:
    import tomllib

    return tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_core_leaves_gpu_server_and_test_packages_to_extras():
    core, extras = names(project()["dependencies"]), project()["optional-dependencies"]
    assert not core & {"bitsandbytes", "liger-kernel", "mlflow", "mlflow-skinny", "pytest", "playwright", "scipy",
                       "mypy", "fastapi", "uvicorn"}
    assert "llama-cpp-python[server]==0.3.36" not in project()["dependencies"]
    assert {"bitsandbytes", "liger-kernel"} <= names(extras["cuda"])
    assert names(extras["mlflow"]) == {"mlflow-skinny"}
    assert {"pytest", "playwright", "mlflow-skinny", "scipy", "mypy"} <= names(extras["test"])
    assert "protobuf" in core


def test_no_extra_brings_a_python_judge_server():
    # the local judge is the native llama-server that set-up builds; no extra pulls fastapi/uvicorn for it
    extras = project()["optional-dependencies"]
    assert "judge" not in extras
    for name, requirements in extras.items():
        assert not any("[server]" in r for r in requirements), name
        assert not names(requirements) & {"fastapi", "uvicorn", "sse-starlette"}, name
    # and scripts/setup.sh installs the core, plus [cuda] only with a CUDA torch: no server, no test packages
    import re

    setup = (CHECKOUT / "scripts" / "setup.sh").read_text()
    assert re.findall(r"^\s*TARGET=(\S+)$", setup, re.MULTILINE) == [".", '".[cuda]"']
    assert re.findall(r'pip.*install.* -e "\$TARGET"', setup.replace("${PIP[@]}", "pip"))


def test_missing_llama_server_says_how_to_build_it(tmp_path, monkeypatch):
    from edgetune.errors import JudgeError
    from edgetune.evals.judge_server import local_judge_server

    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "empty-home"))  # no llama.cpp tools set up there
    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(JudgeError) as exc, local_judge_server(gguf):
        pass
    assert exc.value.message.startswith("the local judge needs llama.cpp's llama-server: ")
    assert "scripts/build-llama-tools.sh" in exc.value.hint and "judge.base_url" in exc.value.hint
    assert "edgetune[judge]" not in exc.value.hint


def test_every_tight_pin_says_why():
    # issue 21: an exact pin (==) or a bound inside a 0.x series (<0.N) holds a dependency to releases the tests
    # have seen, and the reason must sit with it: a comment on its line, the comment block right above it, or a
    # comment block above its group that names it
    import re

    lines = (CHECKOUT / "pyproject.toml").read_text().splitlines()
    tight = re.compile(r'"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?[^"]*(?:==|<0\.)[^"]*"')
    checked = []
    for i, line in enumerate(lines):
        for match in tight.finditer(line.split("#", 1)[0]):
            name = match.group(1)
            checked.append(name)
            if "#" in line:
                continue
            j, adjacent = i - 1, True
            while j >= 0 and not lines[j].lstrip().startswith("#"):
                if lines[j].strip().endswith("[") or "=" not in lines[j] and not lines[j].strip().startswith('"'):
                    break  # the start of the list: no comment above its group
                adjacent = False
                j -= 1
            block = []
            while j >= 0 and lines[j].lstrip().startswith("#"):
                block.append(lines[j])
                j -= 1
            assert block and (adjacent or name in " ".join(block)), f"{name}: a tight pin without a reason"
    assert {"llama-cpp-python", "peft", "gguf", "rouge-score", "liger-kernel"} <= set(checked)
