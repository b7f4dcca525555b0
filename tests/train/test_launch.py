"""Multi-process training through `accelerate launch`: the command line, the GPU-count refusal, FSDP selection,
and a real 2-process DDP run on the CPU (gloo) of the tiny Llama (~25 s on 2 cores)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from edgetune.artifacts import Store
from edgetune.config import TrainConfig
from edgetune.errors import ConfigError, ModelError
from edgetune.train import launch, stage

# 32 examples, batch 4: 8 steps an epoch in one process, 4 in two (each rank takes half of every batch set)
CFG = TrainConfig(method="lora", r=4, alpha=8, batch_size=4, max_steps=3, learning_rate=1e-2, warmup_ratio=0.0,
                  eval_items=0, save_steps=0)


@pytest.mark.parametrize("gpus, available, match", [
    (2, 0, "asked for 2 GPUs, but CUDA shows 0"),
    (4, 2, "asked for 4 GPUs, but CUDA shows 2"),
    (0, 8, "at least 1"),
])
def test_more_gpus_than_present_is_refused(gpus, available, match):
    with pytest.raises(ConfigError, match=match) as info:
        launch.check_gpus(gpus, available)
    assert info.value.exit_code == 2


def test_enough_gpus_pass():
    launch.check_gpus(2, 2)
    launch.check_gpus(1, 8)


def test_train_adapter_refuses_before_anything_starts(inputs, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base_art, data_art = inputs
    with pytest.raises(ConfigError, match="asked for 2 GPUs, but CUDA shows 0"):
        launch.train_adapter(CFG, base_art, data_art, Store(tmp_path / "store"), gpus=2)
    assert not (tmp_path / "store").exists()


def test_ddp_command_line(tmp_path):
    argv = launch.launch_argv(2, tmp_path / "req.json", fsdp=False, cpu=False)
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[argv.index("--num_processes") + 1] == "2" and "--multi_gpu" in argv
    assert argv[argv.index("--mixed_precision") + 1] == "bf16"
    assert argv[-3:] == ["-m", "edgetune.train.worker", str(tmp_path / "req.json")]
    assert "--use_fsdp" not in argv


def test_fsdp_command_line(tmp_path):
    argv = launch.launch_argv(8, tmp_path / "req.json", fsdp=True, cpu=False)
    assert "--use_fsdp" in argv and "--multi_gpu" not in argv  # accelerate allows one of them
    assert argv[argv.index("--fsdp_use_orig_params") + 1] == "true"
    assert argv[argv.index("--fsdp_auto_wrap_policy") + 1] == "TRANSFORMER_BASED_WRAP"


def test_the_command_line_parses_in_accelerate(tmp_path):
    """accelerate's own parser accepts every flag we pass (a renamed flag fails here, not on the GPU host)."""
    from accelerate.commands.launch import launch_command_parser

    for fsdp in (False, True):
        argv = launch.launch_argv(2, tmp_path / "req.json", fsdp=fsdp, cpu=False)
        args = launch_command_parser().parse_args(argv[3:])
        assert args.num_processes == 2 and args.module and args.training_script == "edgetune.train.worker"
        assert args.use_fsdp == fsdp and args.multi_gpu == (not fsdp)
    args = launch_command_parser().parse_args(launch.launch_argv(1, tmp_path / "r.json", fsdp=False, cpu=False)[3:])
    assert (args.num_processes, args.multi_gpu, args.use_fsdp) == (1, False, False)


def test_one_process_on_a_multi_gpu_host_is_pinned_to_one_gpu(tmp_path, monkeypatch):
    """A lone Trainer seeing several GPUs wraps the model in nn.DataParallel, which TRL refuses (2 x H200)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    argv = launch.launch_argv(1, tmp_path / "req.json", fsdp=False, cpu=False)
    assert argv[argv.index("--gpu_ids") + 1] == "0" and "--multi_gpu" not in argv
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    argv = launch.launch_argv(1, tmp_path / "req.json", fsdp=False, cpu=False)
    assert argv[argv.index("--gpu_ids") + 1] == "3"


def write_config(folder: Path, **shape) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 32000, **shape}))
    return folder


def test_fsdp_is_picked_for_bases_over_13b(tmp_path):
    llama_70b = write_config(tmp_path / "70b", hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                             num_key_value_heads=8, intermediate_size=28672)
    mistral_7b = write_config(tmp_path / "7b", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                              num_key_value_heads=8, intermediate_size=14336)
    assert launch.wants_fsdp(llama_70b, None) is True
    assert launch.wants_fsdp(mistral_7b, None) is False
    assert launch.wants_fsdp(mistral_7b, True) is True and launch.wants_fsdp(llama_70b, False) is False


def test_fsdp_on_the_cpu_is_refused_before_anything_starts(inputs, tmp_path):
    """accelerate's FSDP plugin refuses a CPU ("no available devices"): say so up front. The FSDP save itself is
    tested on real FSDP over gloo in test_sharded.py, the whole path on GPUs by train_launch_gpu.py --fsdp."""
    base_art, data_art = inputs
    with pytest.raises(ConfigError, match="FSDP needs GPUs"):
        launch.train_adapter(CFG, base_art, data_art, Store(tmp_path / "store"), gpus=2, fsdp=True, cpu=True)
    assert not (tmp_path / "store" / "train").exists()


@pytest.fixture(scope="module")
def ddp(inputs, tmp_path_factory):
    base_art, data_art = inputs
    store = Store(tmp_path_factory.mktemp("ddp") / "store")
    return launch.train_adapter(CFG, base_art, data_art, store, gpus=2, cpu=True, threads=1), store


def test_two_processes_train_one_adapter(ddp):
    """Rank 0 commits the artifact; 2 ranks of batch 4 take 8 of the 32 examples a step, so 3 steps are 0.75 of
    an epoch (one process would be at 0.375)."""
    trained, store = ddp
    art = trained.artifact
    assert (trained.processes, trained.strategy) == (2, "ddp")
    assert art.metrics["steps"] == 3
    rows = [json.loads(line) for line in art.file("log").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["epoch"] == pytest.approx(0.75)
    assert (art.file("adapter") / "adapter_model.safetensors").is_file()
    # one artifact, no temp folders and no checkpoints left in the store
    assert [p.name for p in (store.root / "train").iterdir()] == [art.path.name]


def test_a_cached_multi_process_run_starts_nothing(ddp, inputs):
    trained, store = ddp
    base_art, data_art = inputs
    again = launch.train_adapter(CFG, base_art, data_art, store, gpus=2, cpu=True, threads=1)
    assert again.strategy == "cached" and again.artifact.path == trained.artifact.path and again.artifact.cached
    # the stage finds it under the 2-process key; one process trains half the effective batch: another key
    assert stage.run(CFG, base_art, data_art, store, threads=1, processes=2).path == trained.artifact.path
    assert stage.cache_key(CFG, base_art, data_art) != stage.cache_key(CFG, base_art, data_art, processes=2)


def test_a_worker_error_is_repeated_word_for_word(inputs, tmp_path):
    """A bad target module fails in every rank; the launcher raises rank 0's own error (class, message, hint),
    not torchrun's summary."""
    base_art, data_art = inputs
    cfg = CFG.model_copy(update={"target_modules": ["q_prj"]})
    with pytest.raises(ModelError, match="q_prj -> q_proj"):
        launch.train_adapter(cfg, base_art, data_art, Store(tmp_path / "store"), gpus=2, cpu=True, threads=1)
