"""The data stage: load a dataset, check its columns, split off a held-out set, write chat examples.

Reads jsonl, json, csv, an HF dataset folder (`save_to_disk`), a hub id (pinned to a commit: hub.py), or the
embedded SST-2 sentiment task; rows with input/output columns, chat messages, alpaca's instruction/input/output
or sharegpt's conversations (SHAPES); several sources mixed by weight (`data.mix`, `mix`). Writes `train.jsonl`
and `heldout.jsonl`, one `{"id", "messages"}` object per line, the last message being the assistant's answer
(a conversation keeps its earlier turns, each trained on: train/turns.py). The held-out part follows the data (`heldout_count`: a share with a floor and a cap, raised
toward the number of items the verdict needs when the caller says how many, up to 30% of the data) and, for
label tasks, keeps every label's share (`split`). Rendering to tokens happens later with the model's own chat
template, so the same examples serve every base model.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path
from typing import Any

from edgetune import assets, hub
from edgetune.artifacts import Builder, Store
from edgetune.config import DataConfig, DataSource
from edgetune.hash_memo import sha256_file_memo, sha256_tree_memo
from edgetune.errors import DataError
from edgetune.labels import normalise_label
from edgetune.outputs import DataSplit

log = logging.getLogger(__name__)

KIND = DataSplit.KIND
SST2_INSTRUCTION = "Is the sentiment of this movie review positive or negative? Answer with one word.\n\nReview: "
SST2_LABELS = ("negative", "positive")
SMALL_TRAIN = 300  # fewer training examples than this: warn (issue 22's 77-row run learned nothing)
MAX_LABELS = 20  # a label task: at most this many distinct answers...
MAX_LABEL_WORDS = 3  # ...each at most this many words


def _embedded_sst2() -> list[dict[str, Any]]:
    from datasets import load_from_disk

    ds = load_from_disk(str(assets.olmo_dataset("glue", "sst2", "validation")))
    return [
        {"id": f"sst2-{row['idx']}", "input": SST2_INSTRUCTION + row["sentence"].strip(), "output": SST2_LABELS[row["label"]]}
        for row in ds
    ]


def _read_source(src: str, split_name: str, pinned: hub.Pinned | None = None) -> list[dict[str, Any]]:
    if src == assets.EMBEDDED_DATA:
        return _embedded_sst2()
    path = Path(src).expanduser()
    suffix = path.suffix.lower()
    looks_like_file = suffix in {".jsonl", ".json", ".csv"} or src.startswith((".", "/", "~"))
    if looks_like_file and not path.exists():
        raise DataError(f"dataset file not found: {path}", "check data.source in edgetune.yaml or --data")
    if path.is_file():
        try:
            if suffix == ".jsonl":
                return _jsonl_rows(path)
            if suffix == ".json":
                rows = json.loads(path.read_text())
                rows = rows.get("data") if isinstance(rows, dict) else rows
                if not isinstance(rows, list):
                    raise DataError(f"{path}: expected a JSON list of rows (or {{\"data\": [...]}})",
                                    "write one object per example in a list")
                return _objects(rows, path, "item")
            if suffix == ".csv":
                with path.open(newline="") as fh:
                    return list(csv.DictReader(fh))
        except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: unreadable {suffix[1:]}: {exc}", "fix the file or export it again") from exc
        raise DataError(f"{path}: unsupported dataset format {suffix or '(no suffix)'}", "use .jsonl, .json or .csv")
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise DataError(f"{path} is not a dataset saved with save_to_disk", "point data.source at that folder") from exc
        if isinstance(ds, DatasetDict):
            if split_name not in ds:
                raise DataError(f"{path} has no split {split_name!r} (has {sorted(ds)})", "set data.split")
            ds = ds[split_name]
        return list(ds)
    from datasets import load_dataset  # a hub id: the real loading path, used when a hub is reachable

    try:  # at the pinned commit, so the rows are those the cache key names
        return list(load_dataset(src, split=split_name, revision=pinned.sha if pinned else None))
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        raise DataError(f"cannot load dataset {src!r}: {str(exc).splitlines()[0]}", "give a local file or folder, or check the hub id and network") from exc


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-blank line; an error names the file's line (json's own says "line 1")."""
    rows = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {n}: not JSON ({exc.msg}, column {exc.colno})",
                                "fix the line, or export the file again if it was cut short") from exc
            if not isinstance(rows[-1], dict):
                raise DataError(f"{path} line {n}: expected a JSON object, found {type(rows[-1]).__name__}",
                                "write one {\"input\": ..., \"output\": ...} object per line")
    return rows


def _objects(rows: list[Any], path: Path, what: str) -> list[dict[str, Any]]:
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: {what} {n} is a {type(row).__name__}, not an object",
                            "write one {\"input\": ..., \"output\": ...} object per example")
    return rows


def _text(value: Any) -> str:
    """A cell as text; a missing value (JSON null, a short CSV line) is empty, never the string "None"."""
    return "" if value is None else str(value)


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system"}
SHAPES = ("input/output columns (data.input_column, data.output_column), a messages column of {role, content}, "
          "alpaca's instruction/input/output, or sharegpt's conversations of {from, value}")


def _bad_row(row: dict[str, Any], cfg: DataConfig, why: str) -> DataError:
    return DataError(f"example {row.get('id', '?')}: {why}; found columns {sorted(row)}",
                     f"give {SHAPES}")


def _chat(row: dict[str, Any], column: str, cfg: DataConfig) -> list[dict[str, str]]:
    """A list of {role, content} (OpenAI style) or {from, value} (sharegpt) objects as chat messages."""
    raw = row[column]
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise _bad_row(row, cfg, f"{column!r} must be a list of {{\"role\", \"content\"}} objects")
    msgs = []
    for m in raw:
        if isinstance(m.get("role"), str) and "content" in m:
            msgs.append({"role": m["role"], "content": _text(m["content"])})
        elif isinstance(m.get("from"), str) and "value" in m and m["from"].lower() in SHAREGPT_ROLES:
            msgs.append({"role": SHAREGPT_ROLES[m["from"].lower()], "content": _text(m["value"])})
        else:
            raise _bad_row(row, cfg, f"{column!r} holds {sorted(m)}: each message needs role/content or "
                                     f"from/value (from one of {', '.join(sorted(SHAREGPT_ROLES))})")
    return msgs


def to_messages(row: dict[str, Any], cfg: DataConfig) -> list[dict[str, str]]:
    """One example as chat messages ending with the assistant's answer, from any of the shapes in SHAPES (the
    configured columns first). A conversation may hold several assistant turns: each is trained on
    (train/turns.py). Raises DataError on a bad row or an unknown shape."""
    if cfg.messages_column in row and row[cfg.messages_column]:
        msgs = _chat(row, cfg.messages_column, cfg)
    elif "instruction" in row and cfg.output_column in row and cfg.input_column != "instruction":
        # alpaca: the instruction, then the optional input, as one user message (as alpaca's own prompt joins them)
        extra = _text(row.get("input")).strip()
        prompt = _text(row["instruction"]) + (f"\n\n{extra}" if extra else "")
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row[cfg.output_column])}]
    elif cfg.input_column in row and cfg.output_column in row:
        msgs = [{"role": "user", "content": _text(row[cfg.input_column])},
                {"role": "assistant", "content": _text(row[cfg.output_column])}]
    elif "conversations" in row and row["conversations"]:
        msgs = _chat(row, "conversations", cfg)
    else:
        raise DataError(
            f"dataset rows need columns {cfg.input_column!r} and {cfg.output_column!r}, or {cfg.messages_column!r}, "
            f"or alpaca's 'instruction'/'input'/'output', or sharegpt's 'conversations'; found {sorted(row)}",
            "rename the columns or set data.input_column / data.output_column",
        )
    if cfg.system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": cfg.system_prompt})
    if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
        raise DataError("an example has an empty or missing assistant answer", "every row needs a non-empty output")
    return msgs


def sources(cfg: DataConfig) -> list[DataSource]:
    """data.mix, or data.source as the one source (weight 1)."""
    return list(cfg.mix) or [DataSource(source=cfg.source, split=cfg.split, revision=cfg.revision)]


def is_hub_id(src: str) -> bool:
    """Not the embedded set and not a local path: a hub dataset id."""
    path = Path(src).expanduser()
    return not (src == assets.EMBEDDED_DATA or path.exists() or src.startswith((".", "/", "~"))
                or path.suffix.lower() in {".jsonl", ".json", ".csv"})


def _local_fingerprint(src: str) -> str:
    path = Path(src).expanduser()
    if path.is_file():
        return sha256_file_memo(path)
    if path.is_dir():
        return sha256_tree_memo(path)
    if src == assets.EMBEDDED_DATA:
        return sha256_tree_memo(assets.olmo_dataset("glue", "sst2", "validation"))
    return src


def source_fingerprint(cfg: DataConfig) -> str:
    """Content hash of a local source (so editing the file invalidates the cache); a hub id at its commit."""
    if is_hub_id(cfg.source):
        return hub.pin(cfg.source, cfg.revision, "dataset", DataError).fingerprint
    return _local_fingerprint(cfg.source)


def run(cfg: DataConfig, store: Store, *, verdict_items: int | None = None) -> DataSplit:
    """Write train.jsonl and heldout.jsonl. `verdict_items`: held-out items the report's verdict needs (the
    pipeline passes report.verdict.heldout_needed for eval.margin); the share is raised toward it. A hub id is
    pinned to its commit first (hub.py): the key holds the commit, the record names it. Raises DataError for
    missing files, columns or too few rows, or a hub revision that cannot be resolved."""
    params = {**cfg.model_dump(), "verdict_items": verdict_items}
    for unset in ("revision", "mix"):  # settings added later enter the key only when set: old keys stay valid
        if not params[unset]:
            del params[unset]
    srcs = sources(cfg)
    pins = {k: hub.pin(s.source, s.revision or cfg.revision, "dataset", DataError)
            for k, s in enumerate(srcs) if is_hub_id(s.source)}
    names = [f"{s.source}@{pins[k].sha} ({pins[k].revision}, resolved {pins[k].how})" if k in pins else s.source
             for k, s in enumerate(srcs)]
    prints = [pins[k].fingerprint if k in pins else _local_fingerprint(s.source) for k, s in enumerate(srcs)]
    if cfg.mix:
        inputs = {f"source{k}": fp for k, fp in enumerate(prints)}
        record = {f"source{k}": name for k, name in enumerate(names)}
    else:  # the key holds the source's content hash, the record its name
        inputs, record = {"source": prints[0]}, {"source": names[0]}
    art = store.stage(KIND, params, inputs, lambda b: _build(cfg, verdict_items, b, pins), record_inputs=record)
    return DataSplit.of(art)


def _examples(cfg: DataConfig, pins: dict[int, hub.Pinned]) -> list[dict[str, Any]]:
    """Every source's rows as chat examples; several sources mixed by weight (`mix`)."""
    parts = []
    for k, s in enumerate(sources(cfg)):
        rows = _read_source(s.source, s.split or cfg.split, pins.get(k))
        if not rows:
            raise DataError(f"dataset {s.source} is empty", "check the file or split")
        prefix = f"{k}:" if cfg.mix else ""  # ids stay unique across sources
        parts.append([{"id": prefix + str(r.get("id", i)), "messages": to_messages(r, cfg)}
                      for i, r in enumerate(rows)])
    if not cfg.mix:
        return parts[0]
    return mix(parts, [s.weight for s in cfg.mix], seed=cfg.seed,
               names=[s.source for s in cfg.mix])


def mix(parts: list[list[dict[str, Any]]], weights: list[float], *, seed: int,
        names: list[str] | None = None) -> list[dict[str, Any]]:
    """The largest mixture whose shares follow `weights` without repeating a row: the source that runs out
    first at its share sets the size; each source's rows are a seeded sample (the same seed, the same rows).
    Shares are met to the nearest row (largest remainders)."""
    total_w = sum(weights)
    shares = [w / total_w for w in weights]
    size = min(int(len(p) / sh + 1e-9) for p, sh in zip(parts, shares))
    quota = [sh * size for sh in shares]
    take = [min(int(q), len(p)) for q, p in zip(quota, parts)]
    for k in sorted(range(len(parts)), key=lambda j: (int(quota[j]) - quota[j], j))[: size - sum(take)]:
        if take[k] < len(parts[k]):
            take[k] += 1
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for k, (part, n) in enumerate(zip(parts, take)):
        chosen = sorted(rng.sample(range(len(part)), n))
        out.extend(part[j] for j in chosen)
        log.info("data: %d of %d rows from %s (weight %.3g, %.1f%% of the mixture)", n, len(part),
                 names[k] if names else k, weights[k], 100 * n / max(1, size))
    return out


def _build(cfg: DataConfig, verdict_items: int | None, b: Builder, pins: dict[int, hub.Pinned]) -> None:
    examples = _examples(cfg, pins)
    if not examples:
        raise DataError(f"dataset {cfg.source} is empty", "check the file or split")
    for pinned in pins.values():  # the commit the rows came from, beside them
        log.info("data: %s@%s is commit %s (%s)", pinned.repo_id, pinned.revision, pinned.sha, pinned.how)
    n_heldout = heldout_count(cfg, len(examples), verdict_items)
    if len(examples) <= n_heldout:
        raise DataError(
            f"dataset has {len(examples)} examples, not more than heldout_size={n_heldout}",
            "add data or lower data.heldout_size",
        )
    heldout, train, labels = split(examples, n_heldout, seed=cfg.seed, stratify=cfg.stratify)
    if cfg.train_size is not None:
        train = train[: cfg.train_size]
    if len(train) < SMALL_TRAIN:
        log.warning("data: %d training examples (%d held out of %d): a fine-tune on fewer than %d rarely learns "
                    "a new task; add data%s", len(train), len(heldout), len(examples), SMALL_TRAIN,
                    " or lower data.heldout_share" if cfg.heldout_size is None else " or lower data.heldout_size")
    for name, part in ((DataSplit.TRAIN_FILE, train), (DataSplit.HELDOUT_FILE, heldout)):
        with (b.path / name).open("w") as fh:
            for ex in part:
                fh.write(json.dumps(ex) + "\n")
    DataSplit.write(b, n_train=len(train), n_heldout=len(heldout), n_examples=len(examples), labels=labels)
    log.info("data: %d train, %d held-out examples%s", len(train), len(heldout),
             f" (stratified by {len(labels)} labels)" if labels else "")


VERDICT_SHARE_MAX = 0.3  # the most of the data held out to reach the verdict's item count


def heldout_count(cfg: DataConfig, n_examples: int, verdict_items: int | None = None) -> int:
    """data.heldout_size when set; else heldout_share of the examples, raised toward `verdict_items` (but to no
    more than 30% of the data: training needs the rest), within [heldout_min, heldout_max], and never more than
    half of them (a small set still trains on half). On 872 SST-2 rows at a 2-point margin: 230, not 174."""
    if cfg.heldout_size is not None:
        return cfg.heldout_size
    share = round(cfg.heldout_share * n_examples)
    if verdict_items:
        share = max(share, min(verdict_items, int(VERDICT_SHARE_MAX * n_examples)))
    wanted = min(max(share, cfg.heldout_min), cfg.heldout_max)
    return max(1, min(wanted, n_examples // 2))


def answer_labels(examples: list[dict[str, Any]]) -> dict[str, list[int]]:
    """label → indices of its examples when the answers look like labels (at most MAX_LABELS distinct short
    answers, and no more than half as many as examples), else {}."""
    groups: dict[str, list[int]] = {}
    for k, ex in enumerate(examples):
        groups.setdefault(normalise_label(ex["messages"][-1]["content"]), []).append(k)
    short = all(len(label.split()) <= MAX_LABEL_WORDS for label in groups)
    if "" in groups or not short or len(groups) > MAX_LABELS or len(groups) > max(2, len(examples) // 2):
        return {}
    return groups


def split(examples: list[dict[str, Any]], n_heldout: int, *, seed: int, stratify: bool = True
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(held-out, train, labels) after a seeded shuffle. For a label task with `stratify`, each label is held
    out in its share of the data (largest remainders fill the rounding), so a rare label is in both parts."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    groups = answer_labels(examples) if stratify else {}
    if not groups:
        return [examples[k] for k in order[:n_heldout]], [examples[k] for k in order[n_heldout:]], []
    position = {k: p for p, k in enumerate(order)}
    quota = {label: n_heldout * len(ids) / len(examples) for label, ids in groups.items()}
    take = {label: int(q) for label, q in quota.items()}
    for label in sorted(quota, key=lambda lb: (take[lb] - quota[lb], lb))[: n_heldout - sum(take.values())]:
        take[label] += 1
    held = set()
    for label, ids in groups.items():
        held.update(sorted(ids, key=position.__getitem__)[: take[label]])
    heldout = [examples[k] for k in order if k in held]
    train = [examples[k] for k in order if k not in held]
    return heldout, train, sorted(groups)


def read_examples(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]
