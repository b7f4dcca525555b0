"""`edgetune deploy` and `edgetune eval` (formerly `device-eval`, still accepted) through main() (the console script's entry point) against the
real sshd: exit codes 0/11/12, --json on stdout, one error line on stderr."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.clirun import run_edgetune
from tests.device.conftest import free_port, write_suite


def edgetune(monkeypatch, *argv):
    result = run_edgetune(monkeypatch, *argv)
    return result.exit_code, result.stdout, result.stderr


def devices_file(sshd, path, *, extra=()):
    dev = sshd.device()
    entries = [{"name": dev.name, "spec": dev.spec,
                "options": {"identity_file": str(dev.identity_file), "known_hosts": str(dev.known_hosts),
                            "ssh_config": str(dev.ssh_config), "remote_root": dev.remote_root}}, *extra]
    path.write_text(yaml.safe_dump(entries))
    return path


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETUNE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def test_deploy_and_device_eval_json(sshd, device_bundle, tmp_path, monkeypatch):
    fleet = devices_file(sshd, tmp_path / "fleet.yaml")
    code, out, err = edgetune(monkeypatch, "--json", "deploy", device_bundle, "--devices", fleet)
    assert code == 0, err
    assert json.loads(out)["results"]["testdev"]["verified"] is True
    suite = write_suite(tmp_path / "s.jsonl", 2)
    code, out, err = edgetune(monkeypatch, "--json", "eval", device_bundle, "--devices", fleet,
                              "--suite", suite, "--out", tmp_path / "runs", "--timeout-s", 60, "--threads", 1)
    assert code == 0, err
    run = json.loads(out)["results"]["testdev"]
    assert run["status"] == "ran" and run["items"] == 2 and run["results_path"].startswith(str(tmp_path / "runs"))
    # the old name still works: the same job, collected
    code, out, err = edgetune(monkeypatch, "--json", "device-eval", device_bundle, "--devices", fleet,
                              "--suite", suite, "--out", tmp_path / "runs", "--timeout-s", 60, "--threads", 1)
    assert code == 0, err
    again = json.loads(out)["results"]["testdev"]
    assert again["status"] == "collected" and again["job_id"] == run["job_id"]


def test_eval_is_listed_and_device_eval_is_a_hidden_alias(monkeypatch):
    code, out, _ = edgetune(monkeypatch, "--help")
    assert code == 0 and "  eval  " in out and "device-eval" not in out
    for name in ("eval", "device-eval"):
        code, out, _ = edgetune(monkeypatch, name, "--help")
        assert code == 0 and "--device USER@HOST[:PORT]" in out and "--threads" in out and "--ctx-size" in out
    code, _, err = edgetune(monkeypatch, "eval", ".", "--device", "pi@h", "--threads", 0)
    assert code == 2 and "--threads" in err


def test_eval_recovery_of_a_bundle_without_one_is_a_usage_error(device_bundle, monkeypatch):
    code, out, _ = edgetune(monkeypatch, "eval", "--help")
    assert "--recovery" in out and "--lora" in out
    code, _, err = edgetune(monkeypatch, "eval", device_bundle, "--device", f"nobody@127.0.0.1:{free_port()}",
                            "--recovery")
    assert code == 2 and "carries no recovery adapter" in err and "export.recovery" in err


def test_deploy_exit_codes(sshd, device_bundle, tmp_path, monkeypatch):
    (sshd.folder / "known_hosts").write_text("")
    code, out, err = edgetune(monkeypatch, "deploy", device_bundle, "--devices", devices_file(sshd, tmp_path / "f.yaml"))
    assert code == 11 and out.strip().startswith("testdev: FAILED") and "unknown SSH host key" in err
    code, _, err = edgetune(monkeypatch, "deploy", device_bundle, "--device", f"nobody@127.0.0.1:{free_port()}")
    assert code == 12 and err.startswith("error: 127.0.0.1") and len(err.strip().splitlines()) == 1
    code, _, err = edgetune(monkeypatch, "deploy", device_bundle)
    assert code == 2 and "--device" in err


def test_eval_bench_then_plan_calibrate(sshd, device_bundle, tmp_path, monkeypatch):
    """`eval` runs the bundle's llama-bench (the real x86 build); `plan --calibrate RUN/devices` refits the
    target's efficiencies from it into $XDG_CONFIG_HOME/edgetune/calibration/<target>.json, and `plan` then
    predicts exactly the measured speeds for that same GGUF (one run: the fit has no error left)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    fleet = devices_file(sshd, tmp_path / "fleet.yaml")
    code, out, err = edgetune(monkeypatch, "--json", "eval", device_bundle, "--devices", fleet, "--suite",
                              write_suite(tmp_path / "s.jsonl", 1), "--out", tmp_path / "devices", "--timeout-s", 120,
                              "--threads", 1, "--bench-prompt", 64, "--bench-gen", 16)
    assert code == 0, err
    run = json.loads(out)["results"]["testdev"]
    measured_pp, measured_tg = run["bench"]["prompt_tokens_per_s"], run["bench"]["gen_tokens_per_s"]
    pred = run["predicted"]
    code, out, err = edgetune(monkeypatch, "--json", "plan", "--calibrate", tmp_path / "devices")
    assert code == 0, err
    (cal,) = json.loads(out)["calibrations"]
    stored = tmp_path / "config" / "edgetune" / "calibration" / "rpi5-8gb.json"
    assert cal["target"] == "rpi5-8gb" and cal["path"] == str(stored) and stored.is_file()
    assert cal["pp_efficiency"] == pytest.approx(pred["pp_efficiency"] * measured_pp / pred["prompt_tok_s"], rel=2e-3)
    assert cal["gen_bw_efficiency"] == pytest.approx(
        pred["gen_bw_efficiency"] * measured_tg / pred["gen_roofline_tok_s"], rel=2e-3)
    gguf = device_bundle / pred["model"]
    code, out, err = edgetune(monkeypatch, "--json", "plan", "--target", "rpi5", "--gguf", gguf)
    assert code == 0, err
    plan = json.loads(out)
    (row,) = plan["rows"]
    assert plan["assumptions"]["efficiency_source"].startswith("calibrated on 1 device run(s)")
    assert row["prompt_tok_s"] == pytest.approx(measured_pp, rel=0.01)
    assert row["gen_tok_s"] == pytest.approx(min(measured_tg, measured_pp), rel=0.01)
    code, out, _ = edgetune(monkeypatch, "--json", "plan", "--target", "rpi5", "--gguf", gguf, "--published")
    assert json.loads(out)["rows"][0]["prompt_tok_s"] == pytest.approx(pred["prompt_tok_s"], rel=0.01)


def test_plan_calibrate_without_bench_runs_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "devices" / "pi" / "job").mkdir(parents=True)
    (tmp_path / "devices" / "pi" / "job" / "device_run.json").write_text(json.dumps({"device": "pi", "bench": {}}))
    code, _, err = edgetune(monkeypatch, "plan", "--calibrate", tmp_path / "devices")
    assert code == 2 and "has a llama-bench result" in err and len(err.strip().splitlines()) <= 2
