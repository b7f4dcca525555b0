"""The quantization Pareto plot (report/plots.pareto): a real PNG from matplotlib, None without points."""

from __future__ import annotations

import io

import pytest

from edgetune.report.plots import pareto

ROWS = [
    {"build": "gpu", "kind": "GPU build", "size_mb": None, "accuracy": 0.85},
    {"build": "Q8_0", "kind": "plain", "size_mb": 144.8, "accuracy": 0.86, "kld_mean": 0.008},
    {"build": "Q4_0+imatrix", "kind": "imatrix", "size_mb": 91.9, "accuracy": 0.77, "kld_mean": 0.52},
    {"build": "auto:Q4_0-size", "kind": "searched mix", "size_mb": 91.5, "accuracy": 0.82, "kld_mean": 0.2},
    {"build": "Q4_0+recovery", "kind": "recovery adapter", "size_mb": 96.0, "accuracy": 0.83, "kld_mean": 0.15},
]


def test_pareto_plot_is_a_png_with_both_panels():
    from PIL import Image

    png = pareto(ROWS)
    assert png is not None and png.startswith(b"\x89PNG")
    width, height = Image.open(io.BytesIO(png)).size
    assert width > 1.5 * height  # two panels side by side


def test_no_points_no_plot():
    assert pareto(ROWS[:1]) is None
    assert pareto([]) is None


def test_a_report_with_a_searched_mix_shows_the_pareto_plot(tmp_path):
    """A build with a searched mix (auto:Q4_0-size beside the plain quants, on the same items): the HTML report
    gains the Pareto figure, with the mix as a 'searched mix' point; the default report's figures stay as they were."""
    from edgetune.report.html import to_html
    from edgetune.report.plots import pareto_rows
    from edgetune.report.render import complete
    from tests.report.conftest import BUILDS, add_optional, make_run

    plain = complete(add_optional(make_run(tmp_path / "plain").report))
    assert "accuracy and KLD vs file size" not in to_html(plain)
    builds = [*BUILDS, ("auto:Q4_0-size", "GGUF", 91_000_000, None, 0.1)]
    report = complete(add_optional(make_run(tmp_path / "mix", builds=builds).report))
    rows = {r["build"]: r for r in pareto_rows(report)}
    assert rows["auto:Q4_0-size"]["kind"] == "searched mix" and rows["Q4_0"]["kind"] == "plain"
    assert rows["auto:Q4_0-size"]["size_mb"] == pytest.approx(91.0)
    assert rows["gpu"]["size_mb"] is None and "base" not in rows
    page = to_html(report)
    assert 'alt="accuracy and KLD vs file size"' in page


def test_winback_table_states_the_share_of_the_quant_loss_won_back(tmp_path):
    from edgetune.report.markdown import to_markdown
    from edgetune.report.render import complete
    from edgetune.report.schema import Report
    from edgetune.report.winback import winback_table, won_back
    from tests.report.conftest import BUILDS, add_optional, make_run

    assert winback_table(complete(make_run(tmp_path / "plain").report)) is None  # the default report: no table
    builds = [*BUILDS, ("auto:Q4_0-size", "GGUF", 91_000_000, None, 0.1),
              ("Q4_0+recovery", "GGUF", 96_000_000, None, 0.05)]
    report = complete(add_optional(make_run(tmp_path / "mix", builds=builds).report))
    t = winback_table(report)
    assert t is not None
    assert [r[0] for r in t.rows] == ["gpu", "Q4_0", "auto:Q4_0-size", "Q4_0+recovery"]
    rows = {r.name: r for r in Report.load(report).builds}
    share = won_back(rows["gpu"], rows["Q4_0"], rows["Q4_0+recovery"])
    gpu, q4, rec = rows["gpu"].accuracy, rows["Q4_0"].accuracy, rows["Q4_0+recovery"].accuracy
    assert share == pytest.approx((rec - q4) / (gpu - q4)) if gpu > q4 else share is None
    recovery_row = t.rows[3]
    assert recovery_row[1] == "96.0 MB" and recovery_row[4] == ("–" if share is None else f"{100 * share:.0f}%")
    assert "## Winning back quantization's cost" in to_markdown(report)


def test_winback_table_says_which_cap_bound_a_searched_mix(tmp_path):
    """The build records the cap that bound the search on the mix's plan row (export/budget.py); the table's note
    says it, and says nothing of caps for a report without one."""
    from edgetune.report.render import complete
    from edgetune.report.winback import winback_table
    from tests.report.conftest import BUILDS, add_optional, make_run

    builds = [*BUILDS, ("auto:Q4_0-size", "GGUF", 91_000_000, None, 0.1)]
    report = complete(add_optional(make_run(tmp_path / "mix", builds=builds).report))
    t = winback_table(report)
    assert t is not None and "bound by" not in t.note
    for row in report["builds"]:
        if row["name"] == "auto:Q4_0-size":
            row["plan"] = {"need_bytes": 300_000_000, "status": "fits", "budget": "ram"}
    t = winback_table(complete(report))
    assert t is not None and "auto:Q4_0-size's search was bound by its ram cap." in t.note


def test_winback_table_shows_board_speed_from_edgetune_eval(tmp_path):
    """`edgetune eval` results sit in the report's top-level device mapping ("<build> @ <device>", report/device.py):
    the win-back table's board column reads each build's run there, the recovered quant's too."""
    from edgetune.report.render import complete
    from edgetune.report.winback import winback_table
    from tests.report.conftest import BUILDS, add_optional, make_run

    builds = [*BUILDS, ("Q4_0+recovery", "GGUF", 96_000_000, None, 0.05)]
    report = complete(add_optional(make_run(tmp_path / "rec", builds=builds).report))
    for row in report["builds"]:  # add_optional puts a device section on every GGUF row: as if none were there
        row.pop("device", None)
    report["device"] = {"Q4_0 @ pi": {"device": "pi", "quant": "Q4_0", "gen_tps": 21.5},
                        "Q4_0+recovery @ pi": {"device": "pi", "quant": "Q4_0+recovery", "gen_tps": 17.3}}
    t = winback_table(complete(report))
    assert t is not None
    speed = {r[0]: r[-1] for r in t.rows}
    assert speed == {"gpu": "–", "Q4_0": "21.5", "Q4_0+recovery": "17.3"}
