"""Where the train stage runs: one process (with the OOM fallback), or N GPUs through `accelerate launch`.

`train_adapter(cfg, base, data, store, gpus=N)`:
- N = 1: `train.run` in this process (which steps through train/oom.py's fixes on a CUDA OOM); on a host
  with several GPUs, in one `accelerate launch` process pinned to the first (see `launch_argv`).
- N > 1: refuses more GPUs than CUDA shows, then re-executes the same stage as
  `accelerate launch --multi_gpu --num_processes N -m edgetune.train.worker REQUEST` (DDP; FSDP instead when the
  base has more than FSDP_MIN_PARAMS parameters or `fsdp=True`, the adapter gathered by train/sharded.py). Rank 0
  writes the artifact into `store`; the other ranks write to scratch. This process then reads the artifact back
  through `train.run` (a cache hit). The OOM fallback is off there: ranks cannot change settings independently
  without deadlocking. `cpu=True` runs the N processes on the CPU (gloo), which is how the launch path is tested
  without a GPU.
Note: DDP trains N x batch_size x grad_accum examples per step, so N is part of the stage's cache key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgetune import errors
from edgetune.artifacts import Store, write_json
from edgetune.config import TrainConfig
from edgetune.errors import ConfigError, TrainError
from edgetune.outputs import Adapter, BaseModel, DataSplit
from edgetune.progress import Progress
from edgetune.train import stage as train_stage

log = logging.getLogger("edgetune.train")

FSDP_MIN_PARAMS = 13_000_000_000  # the tutorial's single-A100 ceiling for 4-bit LoRA
WORKER_MODULE = "edgetune.train.worker"
RANK_ERROR = re.compile(r"^\[rank\d+\]: [\w.]*(Error|Exception)\b")
# FSDP for peft adapters: wrap decoder layers, keep the original (unflattened) parameters so only the LoRA
# ones train, load weights on rank 0 and broadcast them, gather a full state dict for saving.
FSDP_ARGS = ["--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
             "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_use_orig_params", "true",
             "--fsdp_cpu_ram_efficient_loading", "true", "--fsdp_sync_module_states", "true",
             "--fsdp_state_dict_type", "FULL_STATE_DICT"]


@dataclass
class Trained:
    artifact: Adapter
    fallbacks: list[str] = field(default_factory=list)  # the OOM fixes applied, in order
    processes: int = 1
    strategy: str = "single"  # single | ddp | fsdp | cached (found in the store, nothing launched)


def available_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(gpus: int, available: int) -> None:
    """Refuse a GPU count the machine cannot give. Raises ConfigError."""
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {gpus}")
    if gpus > available:
        raise ConfigError(f"asked for {gpus} GPUs, but CUDA shows {available} on this machine",
                          f"use --gpus {max(1, available)} or fewer" if available else "drop --gpus (CPU training)")


def wants_fsdp(base_dir: Path, fsdp: bool | None) -> bool:
    """FSDP when asked, or when the base is larger than FSDP_MIN_PARAMS (from its config.json)."""
    if fsdp is not None:
        return fsdp
    from edgetune.modelshape import shape_from_hf_config

    return shape_from_hf_config(base_dir).n_params > FSDP_MIN_PARAMS


def launch_argv(processes: int, request: Path, *, fsdp: bool, cpu: bool) -> list[str]:
    """The `accelerate launch` command line (through this interpreter, so the same environment runs it). One
    process is pinned to the first visible GPU (--gpu_ids): on a host with several, a lone Trainer would wrap
    the model in nn.DataParallel, which TRL's SFTTrainer refuses (found on a 2 x H200 host)."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
            "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no" if cpu else "bf16"]
    if processes == 1:
        first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
        argv += ["--gpu_ids", first]
    else:  # --multi_gpu is the torchrun launcher; --cpu would start one process (multi-CPU needs MPI)
        argv += FSDP_ARGS if fsdp else ["--multi_gpu"]
    return [*argv, "-m", WORKER_MODULE, str(request)]


def train_adapter(cfg: TrainConfig, base: BaseModel, data: DataSplit, store: Store, *, gpus: int = 1,
                  fsdp: bool | None = None, cpu: bool = False, threads: int | None = None,
                  progress: Progress | None = None) -> Trained:
    """Train (or reuse) the adapter. Raises ConfigError for a GPU count the machine lacks, TrainError when
    training fails or does not fit in memory, ModelError for bad target modules."""
    available = 0 if cpu else available_gpus()
    if gpus <= 1 and available <= 1:  # the stage applies oom.run_with_fallback itself and records the fixes
        art = train_stage.run(cfg, base, data, store, threads=threads, progress=progress)
        return Trained(art, list(art.training.oom_fallback))
    if not cpu:
        check_gpus(gpus, available)
    if hit := store.lookup(train_stage.KIND, train_stage.cache_key(cfg, base, data, gpus)):  # nothing to start
        cached = Adapter.of(hit)
        return Trained(cached, list(cached.training.oom_fallback), gpus, "cached")
    strategy = "single" if gpus == 1 else "fsdp" if wants_fsdp(base.model_dir, fsdp) else "ddp"
    if cpu and strategy == "fsdp":  # accelerate's FSDP plugin: "no available devices found" on a CPU
        raise ConfigError("FSDP needs GPUs (accelerate refuses it on the CPU)", "drop --fsdp or run on GPUs")
    with tempfile.TemporaryDirectory(prefix="edgetune-launch-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        write_json(request, {"train": cfg.model_dump(mode="json"), "base": str(base.path), "data": str(data.path),
                             "store": str(store.root), "threads": threads, "result": str(result),
                             "oom_fallback": gpus == 1})
        argv = launch_argv(gpus, request, fsdp=strategy == "fsdp", cpu=cpu)
        log.info("training on %d %s processes (%s): %s", gpus, "CPU" if cpu else "GPU", strategy, " ".join(argv))
        _run_launch(argv, result)
    art = train_stage.run(cfg, base, data, store, threads=threads, progress=progress,
                          processes=gpus)  # rank 0's artifact
    if not art.cached:
        log.warning("the %d-process run's artifact was not found under the stage's key; trained again in this "
                    "process (check edgetune.train.worker against the train stage)", gpus)
    # read back from the store, but made by this call: a build lists it as run, not reused
    return Trained(dataclasses.replace(art, cached=False), list(art.training.oom_fallback), gpus, strategy)


def _run_launch(argv: list[str], result: Path) -> None:
    import subprocess

    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    outcome = json.loads(result.read_text()) if result.is_file() else None
    if outcome and outcome.get("error"):  # the worker's own EdgetuneError, word for word, same class
        err = outcome["error"]
        cls = getattr(errors, err.get("type", ""), TrainError)
        cls = cls if isinstance(cls, type) and issubclass(cls, errors.EdgetuneError) else TrainError
        raise cls(err["message"], err.get("hint"))
    if done.returncode != 0:
        # a rank's own exception line ("[rank1]: RuntimeError: ..."), not torchrun's ChildFailedError summary
        raised = [line for line in done.stderr.splitlines() if RANK_ERROR.match(line)]
        tail = raised[-1] if raised else " | ".join(
            line for line in done.stderr.strip().splitlines()[-40:] if "Error" in line)[-600:]
        raise TrainError(f"`accelerate launch` failed (exit {done.returncode}): {tail or done.stderr[-600:]}",
                         "run with -vv to see the command; check every GPU is free")
