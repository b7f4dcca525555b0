"""Deploy bundles to edge devices over SSH and evaluate them there (asyncssh; see device/ssh.py).

Async API (call it from one `asyncio.run`, as the CLI does):
    deploy(bundle_dir, device, *, accept_new_host_key=False, progress=None) -> DeployResult
    run_eval(bundle_dir, device, suite_path=None, *, out_dir, timeout_s=3600, ...) -> DeviceRunResult
    run_fleet(bundle_dir, devices, suite_path=None, *, out_dir, ...) / deploy_fleet(...) -> FleetResult
Devices: parse_device("user@host[:port]"), load_devices(devices.yaml).

Errors (edgetune.errors) and exit codes: DeviceError 11 (needs a fix: auth DeviceAuthError, host key
HostKeyError, no space, no python3, runner failure), DeviceUnreachable 12 (retry later), DeviceLost 13 (connection
dropped mid-operation or job timed out: outcome unknown, re-run resumes or collects).
"""

from edgetune.device.fleet import FleetResult, deploy_fleet, run_fleet
from edgetune.device.jobs import DeviceRunResult, run_eval
from edgetune.device.spec import Device, load_devices, parse_device
from edgetune.device.transfer import DeployResult, deploy

__all__ = [
           "DeployResult",
           "Device",
           "DeviceRunResult",
           "FleetResult",
           "deploy",
           "deploy_fleet",
           "load_devices",
           "parse_device",
           "run_eval",
           "run_fleet",
]
