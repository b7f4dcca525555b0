"""`edgetune deploy` and `edgetune eval` over SSH into the emulated Raspberry Pi 5: the rootfs's own arm64 sshd
at its own address (pi_sshd.py), the user's ~/.ssh as a real user's would be (a key and known_hosts, no config),
through main() as the console script runs it. The bundle is the tier's real rpi5 bundle (tiny GGUFs, the
cross-built static llama.cpp, the stdlib runner). Functional only: no speed is asserted."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.clirun import run_edgetune

from .conftest import read_jsonl

pytestmark = pytest.mark.pi


def edgetune(monkeypatch, *argv) -> tuple[int, str, str]:
    result = run_edgetune(monkeypatch, *argv)
    return result.exit_code, result.stdout, result.stderr


def only(out: str) -> tuple[str, dict]:
    results = json.loads(out)["results"]
    assert len(results) == 1, results
    return next(iter(results.items()))


def test_deploy_then_eval_on_the_emulated_pi(pi_sshd, pi_bundle, pi_jobs, pi_suite_rows, home, tmp_path,
                                              monkeypatch):
    from edgetune.artifacts import sha256_file

    manifest = json.loads((pi_bundle / "manifest.json").read_text())
    # a first deployment: the session's board may already hold this bundle (test_pi_bench's `bench --device`)
    shutil.rmtree(pi_sshd.root / "root" / "edgetune" / "bundles" / manifest["name"], ignore_errors=True)
    code, out, err = edgetune(monkeypatch, "--json", "deploy", pi_bundle, "--device", pi_sshd.spec)
    assert code == 0, err
    name, first = only(out)
    assert first["verified"] and first["bytes_sent"] > 0
    assert sorted(first["sent_files"]) == sorted([*manifest["files"], "manifest.json", "SHA256SUMS"])
    remote = pi_sshd.device_path(first["remote_dir"])
    assert remote == pi_sshd.root / "root" / "edgetune" / "bundles" / manifest["name"]
    for rel, meta in manifest["files"].items():
        assert sha256_file(remote / rel) == meta["sha256"], rel
    assert os.access(remote / "bin" / "llama-server", os.X_OK)

    code, out, err = edgetune(monkeypatch, "--json", "deploy", pi_bundle, "--device", pi_sshd.spec)
    assert code == 0, err
    assert only(out)[1] | {"remote_dir": None} == {"device": name, "remote_dir": None, "files": first["files"],
                                                   "sent_files": [], "bytes_sent": 0, "resumed": [],
                                                   "verified": True}  # hashed on the board, nothing re-sent

    code, out, err = edgetune(monkeypatch, "--json", "eval", pi_bundle, "--device", pi_sshd.spec, "--out",
                              tmp_path / "runs", "--threads", 1, "--ctx-size", 512, "--timeout-s", 600,
                              "--bench-prompt", 32, "--bench-gen", 8)
    assert code == 0, err
    _, run = only(out)
    # the bundle's own aarch64 llama-bench ran on the board after the suite (speeds under qemu mean nothing)
    bench, predicted = run["bench"], run["predicted"]
    assert bench["exit_code"] == 0 and [t["test"] for t in bench["tests"]] == ["pp32", "tg8"], bench
    assert bench["argv"][0].endswith("/bin/llama-bench") and all(t["avg_ts"] > 0 for t in bench["tests"])
    assert predicted["target"] == manifest["target"]["name"] and predicted["prompt_tok_s"] > 0
    assert run["status"] == "ran" and run["items"] == len(pi_suite_rows) and run["deploy"]["bytes_sent"] == 0
    assert Path(run["results_path"]).parent == tmp_path / "runs" / name / run["job_id"]
    assert (pi_sshd.device_path(run["remote_job_dir"]) / "results.jsonl").is_file()

    rows = read_jsonl(Path(run["results_path"]))
    assert [r["id"] for r in rows] == [r["id"] for r in pi_suite_rows]
    quant = next(m["quant"] for m in manifest["models"] if m["file"] == manifest["default_model"])
    direct = {r["id"]: r for r in read_jsonl(pi_jobs[quant][0] / "results.jsonl")}  # same model, in the chroot
    for row in rows:
        assert row["output_token_ids"] == direct[row["id"]]["output_token_ids"], row["id"]
        assert row["output"] == direct[row["id"]]["output"] and row["output_tokens"] >= 1
        assert row["latency_s"] > 0 and row["ttft_ms"] > 0 and row["gen_ms"] > 0 and row["peak_rss_mb"] > 1
    facts = run["device_facts"]
    assert facts["machine"] == "aarch64" and facts["cpu_model"] == "Cortex-A76"
    assert facts["os"].startswith("Debian GNU/Linux 12") and facts["ram_mb"] > 0
    summary = json.loads(Path(run["summary_path"]).read_text())
    assert summary["items"] == len(rows) and summary["device"] == facts
    assert summary["job"]["model"].endswith(manifest["default_model"])


def test_sessions_run_as_a_cortex_a76(pi_sshd, pi_probes, home):
    """What a session starts (the runner, llama-server) is emulated as a Cortex-A76 too: sshd hands QEMU_CPU to
    each session, so an i8mm or SVE instruction dies with SIGILL over SSH as on the board."""
    from edgetune.device import parse_device
    from edgetune.device.ssh import connect
    from edgetune.errors import DeviceError

    async def on_the_board():
        async with connect(parse_device(pi_sshd.spec)) as session:
            cpuinfo = await session.run(["cat", "/proc/cpuinfo"])
            dotprod = await session.run([pi_probes["dotprod"]])
            crashes = {}
            for feature in ("i8mm", "sve"):
                with pytest.raises(DeviceError, match="killed by signal ILL") as err:
                    await session.run([pi_probes[feature]], doing=f"probing {feature}")
                crashes[feature] = str(err.value)
            return cpuinfo, dotprod, crashes

    cpuinfo, dotprod, crashes = asyncio.run(on_the_board())
    assert "CPU part\t: 0xd0b" in cpuinfo.stdout and "asimddp" in cpuinfo.stdout and "i8mm" not in cpuinfo.stdout
    assert dotprod.exit_status == 0
    assert all(msg.startswith(pi_sshd.spec.split("@")[1].replace(":", "-")) for msg in crashes.values())


def test_unknown_host_key_is_refused_without_the_flag(pi_sshd, pi_bundle, home, monkeypatch):
    known = home / ".ssh" / "known_hosts"
    known.write_text("")
    code, out, err = edgetune(monkeypatch, "deploy", pi_bundle, "--device", pi_sshd.spec)
    assert code == 11 and "FAILED" in out
    assert "unknown SSH host key" in err and "--accept-new-host-key" in err and pi_sshd.host in err
    assert known.read_text() == ""  # nothing recorded
    code, out, err = edgetune(monkeypatch, "--json", "deploy", pi_bundle, "--device", pi_sshd.spec,
                              "--accept-new-host-key")
    assert code == 0, err
    assert only(out)[1]["verified"] and known.read_text() == pi_sshd.known_hosts_line()


@pytest.fixture
def no_python3(pi_sshd):
    """The board without python3 (the rootfs's /usr/bin/python3 moved away, put back afterwards)."""
    python3 = pi_sshd.root / "usr" / "bin" / "python3"
    hidden = python3.with_name("python3.hidden-by-test")
    python3.rename(hidden)
    try:
        yield
    finally:
        hidden.rename(python3)


CASES = {  # case: (exit code, what the one error line must say, the fix it must name)
    "unreachable": (12, "cannot connect: [Errno 111]", "check that the device is on"),
    "no answer": (12, "cannot connect: no answer within 2s", "check that the device is on"),
    "wrong key": (11, "SSH authentication failed", "authorized_keys"),
    "changed host key": (11, "HOST KEY CHANGED", "ssh-keygen -f"),
    "no space": (11, "no space left on the device", "remote_root"),
    "no python3": (11, "the device has no python3", "install Python 3"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_device_is_one_clear_error(case, pi_sshd, pi_bundle, home, tmp_path, monkeypatch, request):
    """Each failure the issue names, against the emulated board: its exit code, one line on stderr naming the
    device and the fix, and nothing sent."""
    options, spec = {}, pi_sshd.spec
    if case == "unreachable":
        spec = f"root@{pi_sshd.host}:{pi_sshd.port + 1}"  # the board is up, nothing listens there
        options["connect_timeout_s"] = 10
    elif case == "no answer":
        if pi_sshd.netns is None:
            pytest.skip("needs the board's own subnet (network namespace)")
        spec = f"root@{pi_sshd.host.rsplit('.', 1)[0]}.99"  # on the board's subnet, no such host
        options["connect_timeout_s"] = 2
    elif case == "wrong key":
        options["identity_file"] = str(pi_sshd.other_host_key)  # a key the board does not authorize
    elif case == "changed host key":
        (home / ".ssh" / "known_hosts").write_text(pi_sshd.known_hosts_line(pi_sshd.other_host_key))
    elif case == "no space":
        options["remote_root"] = "/mnt/edgetune"  # a 4 MB disk (pi_sshd.py); the bundle is bigger
    elif case == "no python3":
        request.getfixturevalue("no_python3")
    devices = tmp_path / "board.yaml"
    devices.write_text(yaml.safe_dump([{"name": "pi5-emulated", "spec": spec, "options": options}]))
    code, out, err = edgetune(monkeypatch, "deploy", pi_bundle, "--devices", devices, "--accept-new-host-key")
    want_code, what, fix = CASES[case]
    assert code == want_code, err
    assert out.startswith("pi5-emulated: FAILED")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pi5-emulated"), err
    assert what in lines[0] and fix in lines[0], lines[0]


def test_disk_filling_up_mid_transfer_is_no_space(pi_sshd, pi_bundle, home, tmp_path, monkeypatch):
    """A real ENOSPC from the board's 4 MB disk while writing (the up-front check switched off, as when the disk
    fills during the transfer): the same clear error, naming the file."""
    from edgetune.device import transfer

    monkeypatch.setattr(transfer, "SPACE_MARGIN_BYTES", -(1 << 40))
    devices = tmp_path / "board.yaml"
    devices.write_text(yaml.safe_dump([{"name": "pi5-small", "spec": pi_sshd.spec,
                                        "options": {"remote_root": "/mnt/edgetune"}}]))
    code, out, err = edgetune(monkeypatch, "--json", "deploy", pi_bundle, "--devices", devices)  # no progress bar
    assert code == 11, err
    assert err.startswith("error: pi5-small: no space left on the device while writing ") and "remote_root" in err
    assert json.loads(out)["errors"]["pi5-small"]["exit_code"] == 11
