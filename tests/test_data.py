"""The data stage on real files: every input format, the embedded SST-2 task, the split, the cache, the errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from edgetune import data
from edgetune.artifacts import Store
from edgetune.config import DataConfig
from edgetune.errors import DataError

N_ROWS = 30
HELDOUT = 10


def qa_rows(n: int = N_ROWS) -> list[dict]:
    return [{"input": f"question {i}", "output": f"answer {i}"} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def cfg(source: Path | str, **kw) -> DataConfig:
    kw.setdefault("heldout_size", HELDOUT)
    kw.setdefault("train_size", None)
    return DataConfig(source=str(source), **kw)


def run(config: DataConfig, store_root: Path):
    art = data.run(config, Store(store_root))
    return art, data.read_examples(art.file("train")), data.read_examples(art.file("heldout"))


def pairs(examples: list[dict]) -> set[tuple[str, str]]:
    return {(ex["messages"][-2]["content"], ex["messages"][-1]["content"]) for ex in examples}


def store_entries(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


# --- formats ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json-list", "json-data"])
def test_file_formats(tmp_path, fmt):
    rows = qa_rows()
    if fmt == "jsonl":
        src = write_jsonl(tmp_path / "d.jsonl", rows)
    elif fmt == "csv":
        src = write_csv(tmp_path / "d.csv", rows)
    elif fmt == "json-list":
        src = tmp_path / "d.json"
        src.write_text(json.dumps(rows))
    else:
        src = tmp_path / "d.json"
        src.write_text(json.dumps({"data": rows}))
    art, train, heldout = run(cfg(src), tmp_path / "store")
    assert (len(train), len(heldout)) == (N_ROWS - HELDOUT, HELDOUT)
    assert art.metrics == {"n_train": N_ROWS - HELDOUT, "n_heldout": HELDOUT, "n_examples": N_ROWS,
                           "labels": None, "stratified": False}  # 30 distinct answers: not a label task
    assert pairs(train) | pairs(heldout) == {(r["input"], r["output"]) for r in rows}
    assert not pairs(train) & pairs(heldout)
    ex = train[0]
    assert set(ex) == {"id", "messages"}
    assert [m["role"] for m in ex["messages"]] == ["user", "assistant"]


def test_example_ids_come_from_the_rows(tmp_path):
    rows = [{"id": f"row-{i}", **r} for i, r in enumerate(qa_rows())]
    _, train, heldout = run(cfg(write_jsonl(tmp_path / "d.jsonl", rows)), tmp_path / "store")
    assert {ex["id"] for ex in train + heldout} == {r["id"] for r in rows}


def test_custom_columns_and_system_prompt(tmp_path):
    rows = [{"q": f"q{i}", "a": f"a{i}", "other": i} for i in range(N_ROWS)]
    config = cfg(write_jsonl(tmp_path / "d.jsonl", rows), input_column="q", output_column="a",
                 system_prompt="Be brief.")
    _, train, _ = run(config, tmp_path / "store")
    assert [m["role"] for m in train[0]["messages"]] == ["system", "user", "assistant"]
    assert train[0]["messages"][0]["content"] == "Be brief."


def test_hf_dataset_folder_with_split(tmp_path):
    from datasets import Dataset, DatasetDict

    train_rows = qa_rows()
    test_rows = [{"input": f"other {i}", "output": f"x {i}"} for i in range(N_ROWS + 5)]
    folder = tmp_path / "hf"
    DatasetDict({"train": Dataset.from_list(train_rows), "test": Dataset.from_list(test_rows)}).save_to_disk(folder)

    _, train, heldout = run(cfg(folder), tmp_path / "store")
    assert pairs(train) | pairs(heldout) == {(r["input"], r["output"]) for r in train_rows}

    _, train, heldout = run(cfg(folder, split="test"), tmp_path / "store")
    assert len(train) + len(heldout) == N_ROWS + 5
    assert pairs(train) | pairs(heldout) == {(r["input"], r["output"]) for r in test_rows}

    with pytest.raises(DataError) as exc:
        data.run(cfg(folder, split="validation"), Store(tmp_path / "store"))
    assert exc.value.message == f"{folder} has no split 'validation' (has ['test', 'train'])"


def test_hf_single_dataset_folder(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "hf"
    Dataset.from_list(qa_rows()).save_to_disk(folder)
    _, train, heldout = run(cfg(folder), tmp_path / "store")
    assert len(train) + len(heldout) == N_ROWS


def test_folder_that_is_not_a_dataset(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="is not a dataset saved with save_to_disk"):
        data.run(cfg(folder), Store(tmp_path / "store"))


def test_messages_format(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": f"u{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(N_ROWS)]
    _, train, heldout = run(cfg(write_jsonl(tmp_path / "d.jsonl", rows), system_prompt="ignored"), tmp_path / "s")
    assert all(ex["messages"][0] == {"role": "system", "content": "sys"} for ex in train + heldout)
    assert pairs(train) | pairs(heldout) == {(f"u{i}", f"a{i}") for i in range(N_ROWS)}


def test_messages_format_in_an_hf_folder(tmp_path):
    from datasets import Dataset

    rows = [{"messages": [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(N_ROWS)]
    folder = tmp_path / "hf"
    Dataset.from_list(rows).save_to_disk(folder)
    _, train, heldout = run(cfg(folder, system_prompt="Be brief."), tmp_path / "store")
    assert all([m["role"] for m in ex["messages"]] == ["system", "user", "assistant"] for ex in train + heldout)


def test_embedded_sst2(tmp_path):
    art, train, heldout = run(DataConfig(), tmp_path / "store")
    # 872 rows: 20% (174) held out since issue 22 (was a fixed 200), stratified by label; train capped at 384
    assert art.metrics == {"n_train": 384, "n_heldout": 174, "n_examples": 872, "labels": ["negative", "positive"],
                           "stratified": True}
    assert (len(train), len(heldout)) == (384, 174)
    ids = [ex["id"] for ex in train + heldout]
    assert len(set(ids)) == len(ids) and all(i.startswith("sst2-") for i in ids)
    assert {ex["messages"][-1]["content"] for ex in heldout} == {"negative", "positive"}
    assert heldout[0]["messages"][0]["content"].startswith(data.SST2_INSTRUCTION)

    uncapped = data.run(DataConfig(train_size=None), Store(tmp_path / "store"))
    assert (uncapped.metrics["n_train"], uncapped.metrics["n_heldout"]) == (872 - 174, 174)


# --- errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["missing.jsonl", "missing.csv", "missing.json", "./missing-folder"])
def test_missing_file_writes_nothing(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    store_root = tmp_path / "store"
    source = name
    with pytest.raises(DataError) as exc:
        data.run(cfg(source), Store(store_root))
    assert exc.value.message.startswith("dataset file not found: ")
    assert "--data" in exc.value.hint and exc.value.exit_code == 3
    assert store_entries(store_root) == []


def test_rows_without_the_columns(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(N_ROWS)]
    store_root = tmp_path / "store"
    with pytest.raises(DataError) as exc:
        data.run(cfg(write_jsonl(tmp_path / "d.jsonl", rows)), Store(store_root))
    assert exc.value.message == ("dataset rows need columns 'input' and 'output', or 'messages', or alpaca's "
                                 "'instruction'/'input'/'output', or sharegpt's 'conversations'; "
                                 "found ['completion', 'prompt']")
    assert "data.input_column" in exc.value.hint and "data.output_column" in exc.value.hint
    assert store_entries(store_root) == []


@pytest.mark.parametrize("bad", [
    {"input": "q", "output": ""},
    {"input": "q", "output": "   \n"},
    {"input": "q", "output": None},
    {"messages": [{"role": "user", "content": "q"}]},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]},
], ids=["empty", "blank", "null", "no-assistant-turn", "null-content"])
def test_empty_assistant_output(tmp_path, bad):
    rows = [*qa_rows(), bad]
    with pytest.raises(DataError, match="empty or missing assistant answer"):
        data.run(cfg(write_jsonl(tmp_path / "d.jsonl", rows)), Store(tmp_path / "store"))


def test_short_csv_line_is_an_empty_answer(tmp_path):
    src = write_csv(tmp_path / "d.csv", qa_rows())
    src.write_text(src.read_text() + "a question with no answer column\n")
    with pytest.raises(DataError, match="empty or missing assistant answer"):
        data.run(cfg(src), Store(tmp_path / "store"))


@pytest.mark.parametrize("n", [HELDOUT, HELDOUT - 3])
def test_too_few_rows_for_heldout(tmp_path, n):
    with pytest.raises(DataError) as exc:
        data.run(cfg(write_jsonl(tmp_path / "d.jsonl", qa_rows(n))), Store(tmp_path / "store"))
    assert exc.value.message == f"dataset has {n} examples, not more than heldout_size={HELDOUT}"
    assert "data.heldout_size" in exc.value.hint


def test_empty_dataset(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("\n")
    with pytest.raises(DataError, match="is empty"):
        data.run(cfg(src), Store(tmp_path / "store"))


def test_unreadable_jsonl(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text('{"input": "a", "output": "b"}\n{"input": \n')
    with pytest.raises(DataError, match=r"d.jsonl line 2: not JSON"):
        data.run(cfg(src), Store(tmp_path / "store"))


def test_unsupported_suffix(tmp_path):
    src = tmp_path / "d.parquet"
    src.write_bytes(b"PAR1")
    with pytest.raises(DataError, match="unsupported dataset format .parquet"):
        data.run(cfg(src), Store(tmp_path / "store"))


# --- split and cache -------------------------------------------------------------------------------------

def test_split_is_deterministic_by_seed(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", qa_rows(60))
    _, train_a, held_a = run(cfg(src, seed=1), tmp_path / "a")
    _, train_b, held_b = run(cfg(src, seed=1), tmp_path / "b")  # a separate store: computed again
    assert (train_a, held_a) == (train_b, held_b)
    _, train_c, held_c = run(cfg(src, seed=2), tmp_path / "a")
    assert pairs(held_c) != pairs(held_a)
    assert pairs(train_c) | pairs(held_c) == pairs(train_a) | pairs(held_a)


def test_train_size_caps_train_only(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", qa_rows(60))
    _, train, heldout = run(cfg(src, train_size=7), tmp_path / "store")
    assert (len(train), len(heldout)) == (7, HELDOUT)
    _, _, heldout_all = run(cfg(src), tmp_path / "store")
    assert heldout == heldout_all  # capping train never moves the held-out set


def test_second_run_is_a_cache_hit(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", qa_rows())
    store = Store(tmp_path / "store")
    first = data.run(cfg(src), store)
    second = data.run(cfg(src), store)
    assert not first.cached and second.cached
    assert (second.key, second.path) == (first.key, first.path)
    assert len(list((tmp_path / "store" / "data").iterdir())) == 1


def test_editing_the_source_changes_the_key(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", qa_rows())
    store = Store(tmp_path / "store")
    first = data.run(cfg(src), store)
    write_jsonl(src, [*qa_rows(), {"input": "new", "output": "row"}])
    second = data.run(cfg(src), store)
    assert second.key != first.key and not second.cached
    assert second.metrics["n_train"] == first.metrics["n_train"] + 1


def test_parameters_change_the_key(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", qa_rows())
    store = Store(tmp_path / "store")
    keys = {data.run(c, store).key for c in (cfg(src), cfg(src, seed=1), cfg(src, system_prompt="s"),
                                             cfg(src, heldout_size=11))}
    assert len(keys) == 4


def test_editing_an_hf_folder_changes_the_key(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "hf"
    Dataset.from_list(qa_rows()).save_to_disk(folder)
    store = Store(tmp_path / "store")
    first = data.run(cfg(folder), store)
    assert data.run(cfg(folder), store).cached
    Dataset.from_list(qa_rows(N_ROWS + 1)).save_to_disk(folder)
    second = data.run(cfg(folder), store)
    assert first.key != second.key and not second.cached
    assert second.metrics["n_train"] == first.metrics["n_train"] + 1
