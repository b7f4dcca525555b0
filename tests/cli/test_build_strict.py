"""`edgetune build --strict`: the flag reaches the pipeline, and NothingToShip is one error line and exit 14."""

from __future__ import annotations

import pytest

from edgetune.errors import NothingToShip

from tests.clirun import run_edgetune
from .test_cli import one_error_line


@pytest.fixture
def fake_build(monkeypatch):
    seen = {}

    def build(cfg, home, progress=None, *, strict=False, **launch):
        seen["strict"] = strict
        raise NothingToShip("nothing to ship: the GPU build does not beat the base (report: r.md)", "see the report")

    monkeypatch.setattr("edgetune.pipeline.build", build)
    return seen


@pytest.mark.parametrize("strict", [True, False])
def test_strict_flag_reaches_the_pipeline_and_maps_to_exit_14(monkeypatch, fake_build, isolated, strict):
    result = run_edgetune(monkeypatch, "build", "--target", "rpi5", *(["--strict"] if strict else []))
    line = one_error_line(result, 14)
    assert fake_build["strict"] is strict
    assert line == "error: nothing to ship: the GPU build does not beat the base (report: r.md) (see the report)"
