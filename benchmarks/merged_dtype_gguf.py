"""Does issue 19 change the default build's GGUFs? The F16 GGUF converted the new way (llama.cpp general.* metadata,
a model card in the merged folder, the merge saved in the base's dtype) against the run's own F16 GGUF, tensor by
tensor; and, for comparison, what converting from a bf16 copy of the merge would change (why edgetune converts from
the fp32 merge).

Needs a finished `edgetune build` of the embedded default (its merge and gguf-F16 artifacts, through run.json).
Prints a table and a JSON line.

  python benchmarks/merged_dtype_gguf.py [--run edgetune-out/runs/rpi5-8gb]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def compare(a: Path, b: Path) -> dict:
    import numpy as np

    from edgetune.export.inspect import read_gguf

    ra, rb = read_gguf(a), read_gguf(b)
    ta, tb = {t.name: t for t in ra.tensors}, {t.name: t for t in rb.tensors}
    differ, max_diff = [], 0.0
    for name, t in ta.items():
        other = tb[name]
        if t.tensor_type != other.tensor_type or not np.array_equal(t.data, other.data):
            differ.append(name)
            if t.data.dtype == other.data.dtype and t.data.dtype.kind == "f":
                max_diff = max(max_diff, float(np.abs(t.data.astype("f4") - other.data.astype("f4")).max()))
    return {"tensors": len(ta), "same_names": set(ta) == set(tb), "differ": len(differ), "max_abs_diff": max_diff}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("edgetune-out/runs/rpi5-8gb"))
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from edgetune.assets import EMBEDDED_DATA, EMBEDDED_MODEL, smollm2_gguf
    from edgetune.export.convert import convert_to_gguf
    from edgetune.export.naming import naming_for
    from edgetune.home import edgetune_home
    from edgetune.llamacpp import load_tools
    from edgetune.merge import base_dtype
    from edgetune.model_card import CardInfo, card_text
    from edgetune.outputs import GGUFFile, MergedModel
    from edgetune.report.publish import run_artifacts

    arts = run_artifacts(args.run)
    merged, f16 = MergedModel.of(arts["merge"]), GGUFFile.of(arts["gguf-F16"])
    base_dir = Path(arts["base"].path) / arts["base"].outputs["model_dir"]
    tools = load_tools(edgetune_home())
    naming = naming_for(EMBEDDED_MODEL, EMBEDDED_DATA, method="lora", gguf_source=smollm2_gguf())
    meta = {"general.name": "smollm2-135m-instruct-sst2", **naming.metadata()}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(merged.model_dir, Path(tmp) / "model"))
        (folder / "README.md").write_text(card_text(CardInfo(base_model=naming.base_model["name"],
                                                             datasets=("sst2",), license="apache-2.0"),
                                                    relation="finetune"))
        new = convert_to_gguf(folder, Path(tmp) / "new.gguf", tools, metadata=meta)
        rows["new metadata + card, fp32 merge"] = compare(f16.gguf_path, new)
        bf16 = Path(tmp) / "bf16"
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).save_pretrained(bf16)
        for path in folder.iterdir():
            if path.suffix != ".safetensors" and path.name != "config.json":
                shutil.copy2(path, bf16 / path.name)
        rows["from a bf16 copy of the merge"] = compare(f16.gguf_path, convert_to_gguf(bf16, Path(tmp) / "bf16.gguf",
                                                                                       tools, metadata=meta))
    print(f"base dtype (config.json of the base artifact): {base_dtype(base_dir)} -> merged saved as that")
    print(f"{'F16 GGUF vs the run F16':34} {'tensors':>8} {'differ':>7} {'max |diff|':>11}")
    for name, r in rows.items():
        print(f"{name:34} {r['tensors']:>8} {r['differ']:>7} {r['max_abs_diff']:>11.3g}")
    print(json.dumps({"base_dtype": base_dtype(base_dir), **rows}))


if __name__ == "__main__":
    main()
