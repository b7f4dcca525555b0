"""Many devices at once: every device runs concurrently, and one device failing never loses the others' results.

Each device's EdgetuneError (unreachable, lost, host key, ...) is captured in FleetResult.errors under its name;
anything else is a bug and is raised once all devices have finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune.device.jobs import run_eval
from edgetune.device.spec import Device
from edgetune.device.transfer import deploy
from edgetune.errors import EdgetuneError


@dataclass
class FleetResult:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, EdgetuneError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"results": {k: v.to_dict() for k, v in self.results.items()},
                "errors": {k: {"error": str(e), "type": type(e).__name__, "exit_code": e.exit_code}
                           for k, e in self.errors.items()}}


async def _gather(devices: Sequence[Device], work: Callable[[Device], Awaitable[Any]]) -> FleetResult:
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        from edgetune.errors import ConfigError

        raise ConfigError("two devices share a name", "give each device a distinct name in the devices file")
    outcomes = await asyncio.gather(*(work(d) for d in devices), return_exceptions=True)
    fleet, unexpected = FleetResult(), None
    for device, outcome in zip(devices, outcomes):
        if isinstance(outcome, EdgetuneError):
            fleet.errors[device.name] = outcome
        elif isinstance(outcome, BaseException):
            unexpected = unexpected or outcome
        else:
            fleet.results[device.name] = outcome
    if unexpected is not None:
        raise unexpected
    return fleet


async def deploy_fleet(bundle_dir: Path, devices: Sequence[Device], *, accept_new_host_key: bool = False,
                       progress: Any = None) -> FleetResult:
    """deploy() to every device concurrently; FleetResult.results holds DeployResults. A damaged manifest raises
    BundleError once, before any device is contacted."""
    from edgetune.bundle_manifest import read_manifest

    read_manifest(Path(bundle_dir))
    return await _gather(devices, lambda d: deploy(bundle_dir, d, accept_new_host_key=accept_new_host_key,
                                                   progress=progress))


async def run_fleet(bundle_dir: Path, devices: Sequence[Device], suite_path: Path | None = None, *, out_dir: Path,
                    timeout_s: float = 3600.0, accept_new_host_key: bool = False, progress: Any = None,
                    **eval_options: Any) -> FleetResult:
    """run_eval() on every device concurrently; FleetResult.results holds DeviceRunResults. A damaged manifest or
    suite raises once (jobs.check_inputs), before any device is contacted."""
    from edgetune.device.jobs import check_inputs

    check_inputs(Path(bundle_dir), suite_path, model=eval_options.get("model"), ctx_size=eval_options.get("ctx_size"),
                 lora=eval_options.get("lora"), recovery=eval_options.get("recovery", False))
    return await _gather(devices, lambda d: run_eval(bundle_dir, d, suite_path, out_dir=out_dir, timeout_s=timeout_s,
                                                     accept_new_host_key=accept_new_host_key, progress=progress,
                                                     **eval_options))
