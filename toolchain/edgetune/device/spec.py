"""Which device to talk to and how: `user@host[:port]` specs and the devices file for fleets.

A devices file is a YAML list (or a mapping with a `devices:` list) of entries
    - name: pi-kitchen            # used in errors, job folders and artifact folders
      spec: pi@192.168.1.40:22    # or a Host alias from ~/.ssh/config
      options: {identity_file: ~/.ssh/id_ed25519, remote_root: edgetune, connect_timeout_s: 10}
Raises ConfigError naming the entry and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgetune.errors import ConfigError

_SPEC = re.compile(r"^(?:(?P<user>[^@\s:/]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@\s:/\[\]]+)(?::(?P<port>\d{1,5}))?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Device:
    """One SSH-reachable device. Unset fields fall back to ~/.ssh/config (HostName, User, Port, IdentityFile,
    ProxyJump), then to asyncssh's defaults."""

    host: str
    user: str | None = None
    port: int | None = None
    name: str = ""
    identity_file: Path | None = None
    known_hosts: Path | None = field(default=None, metadata={"help": "default ~/.ssh/known_hosts"})
    ssh_config: Path | None = field(default=None, metadata={"help": "default ~/.ssh/config when it exists"})
    remote_root: str = field(default="edgetune", metadata={"help": "folder on the device, relative to home"})
    connect_timeout_s: float = 15.0
    keepalive_interval_s: float = 5.0
    keepalive_count_max: int = 3

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", safe_name(self.host if self.port is None else f"{self.host}-{self.port}"))

    @property
    def spec(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"{who}{self.host}" + (f":{self.port}" if self.port else "")

    def with_options(self, **options: Any) -> Device:
        known = set(self.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"device {self.name}: unknown option(s) {', '.join(unknown)}",
                              f"valid options: {', '.join(sorted(known - {'host', 'user', 'port'}))}")
        for key, value in options.items():  # checked here: asyncssh would fail on a wrong type mid-connect
            _check_option(self.name, key, value)
        for key in ("identity_file", "known_hosts", "ssh_config"):
            if options.get(key) is not None:
                options[key] = Path(options[key]).expanduser()
        return replace(self, **options)


_POSITIVE = {"connect_timeout_s": (int, float), "keepalive_interval_s": (int, float), "keepalive_count_max": (int,)}
_PATHS = {"identity_file", "known_hosts", "ssh_config", "remote_root", "name"}


def _check_option(device: str, key: str, value: Any) -> None:
    if key in _POSITIVE and (isinstance(value, bool) or not isinstance(value, _POSITIVE[key]) or value <= 0):
        raise ConfigError(f"device {device}: option {key} must be a positive number, not {value!r}",
                          f"e.g. {key}: 10")
    if key in _PATHS and value is not None and not (isinstance(value, (str, Path)) and str(value)):
        raise ConfigError(f"device {device}: option {key} must be a non-empty path or text, not {value!r}",
                          f"e.g. {key}: ~/.ssh/id_ed25519" if key == "identity_file" else "give it as text")


def safe_name(text: str) -> str:
    """A name usable as a folder: anything outside [A-Za-z0-9._-] becomes '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._") or "device"


def parse_device(spec: str, *, name: str | None = None, **options: Any) -> Device:
    """`user@host[:port]` (host may be an ~/.ssh/config alias or `[v6addr]`) → Device. Raises ConfigError."""
    m = _SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if not m:
        raise ConfigError(f"bad device spec {spec!r}", "write it as user@host or user@host:port")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"bad port in device spec {spec!r}", "ports are 1-65535")
    if name is not None and not (isinstance(name, str) and _NAME.match(name)):
        raise ConfigError(f"bad device name {name!r}", "use letters, digits, '.', '_' or '-' (at most 64)")
    device = Device(host=m["host"].strip("[]"), user=m["user"], port=port, name=name or "")
    return device.with_options(**options) if options else device


def load_devices(path: Path) -> list[Device]:
    """Read a devices file (see the module docstring). Raises ConfigError."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8 text
        mark = getattr(exc, "problem_mark", None)  # YAML's own message spans lines: keep its problem and line
        reason = f"{exc.problem}, line {mark.line + 1}" if mark and getattr(exc, "problem", None) else \
            str(exc).splitlines()[0]
        raise ConfigError(f"cannot read devices file {path}: {reason}", "give a YAML list of {name, spec, options}") \
            from exc
    if isinstance(data, dict):
        data = data.get("devices")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"devices file {path} holds no device list", "give a YAML list of {name, spec, options}")
    devices, names = [], set()
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or "spec" not in entry:
            raise ConfigError(f"devices file {path}: entry {n} has no 'spec'", "each entry needs spec: user@host")
        extra = sorted(set(entry) - {"name", "spec", "options"})
        if extra:
            raise ConfigError(f"devices file {path}: entry {n} has unknown field(s) {', '.join(extra)}",
                              "fields are name, spec, options")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError(f"devices file {path}: entry {n}: options must be a mapping", "options: {key: value}")
        device = parse_device(str(entry["spec"]), name=entry.get("name"), **options)
        if device.name in names:
            raise ConfigError(f"devices file {path}: device name {device.name!r} appears twice", "names must differ")
        names.add(device.name)
        devices.append(device)
    return devices
