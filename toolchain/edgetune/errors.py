"""The error hierarchy. `__str__` is the one line the user sees; `hint` says how to fix it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class EdgetuneError(Exception):
    """Root of every error edgetune raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def __reduce__(self) -> tuple[Callable[..., EdgetuneError], tuple[Any, ...]]:
        # errors cross process boundaries (llama.cpp runs in a child process): keep the hint and exit code
        return _rebuild, (type(self), self.message, self.hint, self.exit_code, self.__dict__)


def _rebuild(cls: type[EdgetuneError], message: str, hint: str | None, exit_code: int,
             state: dict[str, Any]) -> EdgetuneError:
    err = cls.__new__(cls)
    EdgetuneError.__init__(err, message, hint, exit_code)
    err.__dict__.update(state)
    return err


class ConfigError(EdgetuneError):
    """Invalid config file, flag, target or path given by the user."""

    exit_code = 2


class DataError(EdgetuneError):
    """A dataset that is missing, unreadable or lacks the needed columns, or is too long for the limits that
    apply to it (train.max_length, the board's context)."""

    exit_code = 3


class ModelError(EdgetuneError):
    """A base model that cannot be loaded or targeted."""

    exit_code = 4


class TrainError(EdgetuneError):
    exit_code = 5


class ExportError(EdgetuneError):
    """Merge, GGUF conversion or quantization failed."""

    exit_code = 6


class BundleError(EdgetuneError):
    exit_code = 7


class EvalError(EdgetuneError):
    exit_code = 8


class JudgeError(EvalError):
    """The LLM judge could not be reached, refused the request (bad key, unknown model) or kept failing after
    its retries; or the local judge server would not start. Shares evaluation's exit code 8."""

    exit_code = 8


class ToolError(EdgetuneError):
    """An external tool (llama.cpp converter, compiler) failed or is not set up."""

    exit_code = 9


class NativeCrash(ToolError):
    """A native tool or library (llama.cpp) died on a signal (SIGSEGV, SIGILL, ...) while working on a file. The
    work ran in a child process, so edgetune reports it in one line instead of dying with it. Exit code 9.
    `stage` is filled in by the stage that was running (`Store.build`)."""

    exit_code = 9

    def __init__(self, what: str, signal_name: str, subject: str, hint: str | None = None,
                 stage: str | None = None):
        self.what, self.signal_name, self.subject, self.stage = what, signal_name, subject, stage
        where = f" in stage {stage}" if stage else ""
        super().__init__(f"llama.cpp crashed ({signal_name}) {what} {subject}{where}",
                         hint or "run `edgetune doctor` to see which llama.cpp paths this build enables; "
                                 "scripts/setup.sh rebuilds llama.cpp with AMX off, or portable if that still crashes")

    def in_stage(self, stage: str) -> NativeCrash:
        return NativeCrash(self.what, self.signal_name, self.subject, self.hint, stage)


class GateError(EdgetuneError):
    """A build failed a fidelity gate in block mode: the report is written, the bundle is not."""

    exit_code = 10


class NothingToShip(EdgetuneError):
    """`edgetune build --strict` ends with no build to recommend: the fine-tune did not beat the base on the
    held-out task, or no GGUF build is shown "not worse" than the GPU build. The report is written, the bundle
    is not. Exit code 14 (a quality verdict, like GateError's 10, but about the fine-tune and the evidence)."""

    exit_code = 14


class PlanError(ConfigError):
    """No quant of the model fits the target's usable RAM (the planner's refusal). A config problem: pick another
    board, model or context length. Shares ConfigError's exit code 2."""

    exit_code = 2


class DeviceError(EdgetuneError):
    """A device refused or failed the work and a person must act: wrong key or user (auth), a changed or unknown
    host key, no space left, no python3, a remote command or the on-device runner failed. Exit code 11.
    Device errors (device/) use three exit codes: 11 the device needs a fix (this class); 12 the device could
    not be reached (DeviceUnreachable: retry later); 13 the connection was lost mid-operation or the job did not
    finish in time, so its outcome is not known yet (DeviceLost: re-run to resume or collect)."""

    exit_code = 11


class HostKeyError(DeviceError):
    """The device's SSH host key is not in known_hosts (unknown) or differs from the one recorded (changed)."""

    exit_code = 11


class DeviceAuthError(DeviceError):
    """The device refused our SSH credentials (wrong user, key not in authorized_keys, no usable key)."""

    exit_code = 11


class DeviceUnreachable(DeviceError):
    """No SSH connection could be made: name not resolved, connection refused, no route, connect timeout."""

    exit_code = 12


class DeviceLost(DeviceError):
    """The connection dropped during a transfer or a remote job, or the job outlived its timeout: the outcome is
    unknown, never success. Remote jobs keep running; re-running resumes or collects the finished result."""

    exit_code = 13
