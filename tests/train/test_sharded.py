"""The FSDP adapter save (edgetune.train.sharded) on real FSDP: torch's FullyShardedDataParallel on 2 CPU
processes (gloo) through torchrun, the tiny Llama with a LoRA / DoRA / IA3 adapter (~15 s each on 2 cores).
accelerate refuses FSDP on a CPU, so the whole `edgetune train --gpus 2 --fsdp` path runs on GPUs in
benchmarks/train_launch_gpu.py --fsdp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from edgetune.config import TrainConfig
from edgetune.train.adapters import peft_config
from edgetune.train.sharded import save_adapter

from tests.device.conftest import free_port

WORKER = Path(__file__).with_name("fsdp_worker.py")


@pytest.mark.parametrize("adapter, policy", [("lora", "layers"), ("lora", "peft"), ("dora", "layers"), ("ia3", "peft")])
def test_the_adapter_gathered_under_fsdp_is_whole_and_loads(adapter, policy, tiny_model_dir, tmp_path):
    from peft import PeftModel, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(WORKER), str(tiny_model_dir), adapter, policy,
                           str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["wrapped_names"] > 0  # the decoder layers really were FSDP units
    ours = load_file(tmp_path / "adapter.safetensors")
    full = torch.load(tmp_path / "full.pt")

    # the same keys as save_pretrained writes for the same adapter on an unsharded model
    cfg = TrainConfig(method="lora", adapter=adapter, r=4, alpha=8)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = get_peft_model(base, peft_config(cfg, base))
    expected = get_peft_model_state_dict(plain)
    assert set(ours) == set(expected) and all(ours[k].shape == expected[k].shape for k in expected)
    trainable = sum(p.numel() for p in plain.parameters() if p.requires_grad)
    assert sum(v.numel() for v in ours.values()) == trainable
    # trained: the step moved what starts constant (LoRA B at 0, IA3 vectors at 1)
    starts_constant = {k: v for k, v in ours.items() if "lora_B" in k or "ia3_l" in k}
    assert starts_constant and all(v.abs().max() > 0 if "lora_B" in k else not torch.all(v == 1)
                                   for k, v in starts_constant.items())
    # peft 0.21's own selection from the same gathered dict comes back empty (summary["peft_own"] is 0 here):
    # the reason train/sharded.py exists; not asserted, so a fixed peft does not fail this test

    # written as peft writes it, it loads back with the gathered values in place
    save_adapter(plain, ours, tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    state = loaded.state_dict()
    adapter_keys = [k for k in full if any(part in k for part in (".lora_", ".ia3_"))]
    assert adapter_keys and all(torch.equal(state[k], full[k]) for k in adapter_keys)
