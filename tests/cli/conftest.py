"""Fixtures shared by every tests/cli module: the `edgetune` runner (through main(), as the console script) and
the per-test folder with EDGETUNE_HOME inside it. Both are defined in test_cli.py."""

from .test_cli import edgetune, isolated  # noqa: F401
