"""build_report over real (synthetic) eval artifacts, and the JSON/Markdown/HTML writers. Every expected value
is computed here from the fixture's per-item outcomes, independently of the code under test."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import struct
from html.parser import HTMLParser

import pytest

from edgetune.constants import REPORT_HTML, REPORT_JSON, REPORT_MD, RUN_RECORD
from edgetune.report import compare as compare_mod
from edgetune.report.html import to_html
from edgetune.report.markdown import to_markdown
from edgetune.report.publish import compare_runs, render_run
from edgetune.report.render import MAX_FLIP_DETAILS, complete, load_report, write_report
from edgetune.report.sections import pct
from edgetune.report.stats import mcnemar_exact_p, newcombe_diff_interval, wilson_interval

from .conftest import PREFIX, SUBJECTS, add_optional, make_run


def rows_by_name(report):
    return {r["name"]: r for r in report["builds"]}


def test_build_report_statistics_come_from_the_items(synthetic_run):
    rows = rows_by_name(synthetic_run.report)
    gpu = synthetic_run.correct["gpu"]
    for name, correct in synthetic_run.correct.items():
        r = rows[name]
        hits = sum(correct.values())
        assert (r["accuracy"], r["n"]) == (hits / len(correct), len(correct))
        assert r["ci95"] == pytest.approx(wilson_interval(hits, len(correct)))
        if name == "gpu":
            assert "delta_vs_gpu" not in r
            continue
        lost = sorted(i for i in gpu if gpu[i] and not correct[i])
        gained = sorted(i for i in gpu if correct[i] and not gpu[i])
        assert (r["flips_lost"], r["flips_gained"]) == (lost, gained)
        assert r["mcnemar_p"] == pytest.approx(mcnemar_exact_p(len(lost), len(gained)))
        delta = (len(gained) - len(lost)) / len(gpu)
        assert r["delta_vs_gpu"] == pytest.approx(delta)
        lo, hi = r["delta_vs_gpu_ci95"]
        assert lo <= delta <= hi and r["n_paired"] == len(gpu)
        for side, ids in (("lost", lost), ("gained", gained)):
            details = r["flipped_items"][side]
            assert [d["id"] for d in details] == ids[:MAX_FLIP_DETAILS]
            for d in details:
                assert d["text"] == synthetic_run.texts[d["id"]]
                assert d["output"] == synthetic_run.outputs[name][d["id"]]
                assert d["gpu_output"] == synthetic_run.outputs["gpu"][d["id"]]
    assert rows["F16"]["flips_lost"] == [] and rows["F16"]["delta_vs_gpu_ci95"] == [0.0, 0.0]
    assert len(rows["base"]["flips_lost"]) > MAX_FLIP_DETAILS  # the bound is exercised


def test_forgetting_per_subject_deltas_against_the_base(synthetic_run):
    rows = rows_by_name(synthetic_run.report)
    mmlu, subject_of = synthetic_run.mmlu, synthetic_run.subject_of

    def acc(build, subject):
        mine = [c for i, c in mmlu[build].items() if subject_of[i] == subject]
        return sum(mine) / len(mine)

    for name in ("gpu", "Q4_0"):
        m = rows[name]["forgetting"]["mmlu"]
        assert m["delta_vs_base"] == pytest.approx(sum(mmlu[name].values()) / len(mmlu[name])
                                                   - sum(mmlu["base"].values()) / len(mmlu["base"]))
        for s in SUBJECTS:
            assert m["per_subject"][s]["delta_vs_base"] == pytest.approx(acc(name, s) - acc("base", s))
    assert all("delta_vs_base" not in v for v in rows["base"]["forgetting"]["mmlu"]["per_subject"].values())


def test_every_forgetting_set_is_paired_with_the_gpu_build(synthetic_run):
    rows = rows_by_name(synthetic_run.report)
    arc = synthetic_run.arc
    assert list(rows["Q4_0"]["forgetting"]) == ["mmlu", "arc_easy"]
    q4 = rows["Q4_0"]["forgetting"]["arc_easy"]
    expected_lost = [i for k, (i, c) in enumerate(arc["gpu"].items()) if c and k % 3 == 0]
    assert sorted(q4["flips_lost"]) == sorted(expected_lost) and q4["flips_gained"] == []
    assert q4["mcnemar_p"] == pytest.approx(mcnemar_exact_p(len(expected_lost), 0))
    assert q4["delta_vs_gpu"] == pytest.approx(-len(expected_lost) / 30)
    assert q4["acc"] == pytest.approx(sum(arc["Q4_0"].values()) / 30)
    assert q4["acc_norm"] == pytest.approx(1 - q4["acc"])  # acc_norm read from the per-item results
    hits = sum(arc["Q4_0"].values())
    assert q4["ci95"] == pytest.approx(list(wilson_interval(hits, 30)))
    assert q4["ci95_norm"] == pytest.approx(list(wilson_interval(30 - hits, 30)))
    assert rows["F16"]["forgetting"]["arc_easy"]["flips_lost"] == []
    assert "flips_lost" not in rows["gpu"]["forgetting"]["arc_easy"]
    assert "per_subject" not in q4  # one subject per set outside MMLU: nothing to break down


def test_forgetting_sets_are_rendered(synthetic_run):
    report = complete(synthetic_run.report)
    q4 = rows_by_name(report)["Q4_0"]["forgetting"]["arc_easy"]
    md = to_markdown(report)
    assert "## Forgetting check (log-likelihood multiple choice; acc, change vs the base)" in md
    assert "| build | MMLU (n=30) | ARC-Easy (n=30) |" in md
    assert "### Forgetting: MMLU" in md and "### Forgetting: ARC-Easy" in md
    lost = f"{len(q4['flips_lost'])} / 0"
    q4_line = next(line for line in md.split("### Forgetting: ARC-Easy")[1].splitlines() if line.startswith("| Q4_0 |"))
    assert lost in q4_line and f"{q4['mcnemar_p']:.3f}" in q4_line
    assert "**Forgetting (GPU build vs the base, acc):** MMLU " in md and "ARC-Easy " in md
    page = to_html(report)
    assert 'id="forgetting-arc_easy"' in page and 'id="forgetting-mmlu"' in page
    section = page.split('id="forgetting-arc_easy"')[1].split("</section>")[0]
    assert '<tr class="worse"><td>Q4_0</td>' in section  # a significant loss is shaded


def test_write_report_writes_three_files_and_keeps_its_two_path_return(tmp_path, synthetic_run):
    json_path, md_path = write_report(synthetic_run.report, tmp_path / "r")
    assert (json_path.name, md_path.name) == (REPORT_JSON, REPORT_MD)
    assert (tmp_path / "r" / REPORT_HTML).is_file()
    written = load_report(json_path)
    assert written["recommendation"]["source"] == "computed"
    assert written["builds"] == json.loads(json.dumps(complete(synthetic_run.report)))["builds"]


def test_markdown_shows_accuracies_flips_and_no_absent_sections(synthetic_run):
    md = to_markdown(complete(synthetic_run.report))
    for r in synthetic_run.report["builds"]:
        assert f"| {r['name']} | {r['kind']} |" in md and pct(r["accuracy"]) in md
    for heading in ("Fidelity", "LLM judge", "On the device"):
        assert f"## {heading}" not in md
    assert "## Flipped items" in md and PREFIX.split()[0] in md  # the shared prefix is named once…
    q4 = rows_by_name(synthetic_run.report)["Q4_0"]
    first = q4["flipped_items"]["lost"][0]
    assert f"| {first['id']} | {first['text'][len(PREFIX):]} |" in md  # …and cut from each item's text
    assert "**Recommended build:" in md


def test_optional_sections_render_when_present(synthetic_run):
    full = complete(add_optional(synthetic_run.report))
    md = to_markdown(full)
    for heading in ("## Fidelity to the GPU build", "## LLM judge", "## On the device"):
        assert heading in md
    assert "FAILED" in md and "kld_mean above 0.02" in md
    assert full["recommendation"]["excluded"]["Q4_0"].startswith("fidelity gate failed")
    q8 = rows_by_name(full)["Q8_0"]["device"]
    assert f"{q8['prompt_tps']:.3g} / {q8['predicted_prompt_tps']:.3g}" in md


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(("optional", "n_plots"), [(False, 1), (True, 3)])
def test_html_is_self_contained(synthetic_run, optional, n_plots):
    from edgetune.report.html import to_html

    report = complete(add_optional(synthetic_run.report) if optional else synthetic_run.report)
    page = to_html(report)
    parser = Collect()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(tags)
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len(imgs) == n_plots
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        w, h = png_size(base64.b64decode(a["src"].split(",", 1)[1]))
        assert w > 100 and h > 100
    assert not any(k in ("href", "srcset", "action") for _, a in parser.tags for k in a)
    assert "http:" not in page and "https:" not in page and "url(" not in page and "@import" not in page


def test_item_text_is_escaped(synthetic_run):
    from edgetune.report.html import to_html

    report = complete(synthetic_run.report)
    row = rows_by_name(report)["Q4_0"]
    row["flipped_items"]["lost"][0]["text"] = "<img src=x onerror=alert(1)> a | b"
    page, md = to_html(report), to_markdown(report)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt; a | b" in page
    assert "a \\| b" in md


def test_render_run_upgrades_an_older_report_from_the_run_record(synthetic_run, tmp_path):
    old = json.loads((synthetic_run.run_dir / REPORT_JSON).read_text())
    for r in old["builds"]:
        for key in ("delta_vs_gpu_ci95", "flipped_items", "n_paired"):
            r.pop(key, None)
        r.pop("forgetting", None)
        r["mmlu"] = {"acc": 0.0, "n": 1}  # as an edgetune before the other forgetting sets wrote it
    old.pop("recommendation")
    old = add_optional(old)
    (synthetic_run.run_dir / REPORT_JSON).write_text(json.dumps(old))
    done = render_run(synthetic_run.run_dir, tmp_path / "again")
    new = rows_by_name(load_report(done.json_path))
    expected = rows_by_name(complete(synthetic_run.report))
    for name, r in new.items():
        for key in ("delta_vs_gpu_ci95", "flipped_items"):
            assert r.get(key) == expected[name].get(key)
        assert r["forgetting"] == expected[name]["forgetting"]  # every set rebuilt from the run's artifacts
    assert new["Q4_0"]["fidelity"]["gate"]["passed"] is False  # other stages' keys survive the refresh
    assert done.recommendation["quant"] != "Q4_0"
    assert done.html_path.read_text().count("<img ") == 3


def test_render_run_keeps_the_stored_training_curve(synthetic_run, tmp_path):
    """The refresh rebuilds the fine-tune check from the run's artifacts with the training curve the report
    stored (its loss check feeds the likely causes when the fine-tune did not work)."""
    from edgetune.report.finetune import training_curve

    training = training_curve({"epochs": [{"epoch": 1.0, "step": 2, "eval_loss": 1.9, "accuracy": 0.0, "n": 16}],
                               "loss_check": {"judged": True, "falling": False, "first": 2.0, "last": 2.0,
                                              "steps": 8}, "steps": 2, "n_examples": 32},
                              [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 2.0}], 2e-4)
    old = json.loads((synthetic_run.run_dir / REPORT_JSON).read_text())
    old["finetune"]["training"] = training
    (synthetic_run.run_dir / REPORT_JSON).write_text(json.dumps(old))
    done = render_run(synthetic_run.run_dir, tmp_path / "again")
    new = load_report(done.json_path)
    assert new["finetune"]["training"] == json.loads(json.dumps(training))
    if not new["finetune"]["worked"]:
        assert any("did not fall (2.000 → 2.000)" in c for c in new["finetune"]["causes"])


def test_render_run_keeps_the_stored_report_when_artifacts_disagree(synthetic_run, tmp_path, caplog):
    old = json.loads((synthetic_run.run_dir / REPORT_JSON).read_text())
    old["builds"][2]["accuracy"] = 0.123
    for r in old["builds"]:
        r.pop("flipped_items", None)
    (synthetic_run.run_dir / REPORT_JSON).write_text(json.dumps(old))
    with caplog.at_level(logging.WARNING, logger="edgetune.report.publish"):
        done = render_run(synthetic_run.run_dir, tmp_path / "kept")
    assert "keeping the stored report" in caplog.text
    rows = rows_by_name(load_report(done.json_path))
    assert rows[old["builds"][2]["name"]]["accuracy"] == 0.123 and "flipped_items" not in rows["Q4_0"]


def test_compare_pairs_items_when_both_runs_scored_the_same_ids(tmp_path):
    a, b = make_run(tmp_path / "a", seed=1), make_run(tmp_path / "b", seed=2, target="rpi4-4gb")
    done = compare_runs(a.run_dir, b.run_dir, tmp_path / "cmp")
    cmp = json.loads(done.json_path.read_text())
    rows = {r["name"]: r for r in cmp["builds"]}
    assert set(rows) == set(a.correct)
    for name, r in rows.items():
        ca, cb = a.correct[name], b.correct[name]
        lost = sum(ca[i] and not cb[i] for i in ca)
        gained = sum(cb[i] and not ca[i] for i in ca)
        assert r["method"] == compare_mod.PAIRED and (r["lost"], r["gained"]) == (lost, gained)
        assert r["diff"] == pytest.approx((sum(cb.values()) - sum(ca.values())) / len(ca))
        assert r["mcnemar_p"] == pytest.approx(mcnemar_exact_p(lost, gained))
        assert r["diff_ci95"][0] <= r["diff"] <= r["diff_ci95"][1]
    assert "rpi4-4gb" in done.md_path.read_text() and done.html_path.read_text().count("<img ") == 1


def test_compare_falls_back_to_unpaired_and_lists_unmatched_builds(tmp_path):
    a = make_run(tmp_path / "a", seed=1)
    b = make_run(tmp_path / "b", seed=2, n=50)  # different item sets: not paired
    report_b = json.loads((b.run_dir / REPORT_JSON).read_text())
    report_b["builds"] = [r for r in report_b["builds"] if r["name"] != "Q8_0"]
    (b.run_dir / REPORT_JSON).write_text(json.dumps(report_b))
    (b.run_dir / RUN_RECORD).unlink()
    shutil.rmtree(tmp_path / "a" / "store")  # A's artifacts are gone too: only the reports remain
    cmp = json.loads(compare_runs(a.run_dir, b.run_dir).json_path.read_text())
    assert cmp["only_in_a"] == ["Q8_0"] and cmp["only_in_b"] == []
    for r in cmp["builds"]:
        hits_a, hits_b = sum(a.correct[r["name"]].values()), sum(b.correct[r["name"]].values())
        assert r["method"] == compare_mod.UNPAIRED
        assert r["diff_ci95"] == pytest.approx(newcombe_diff_interval(hits_a, 80, hits_b, 50))
    assert (a.run_dir.parent / f"compare-{a.run_dir.name}-vs-{b.run_dir.name}" / "compare.html").is_file()
