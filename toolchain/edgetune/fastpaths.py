"""Which of training's fast paths this machine will take, and why not where it won't (`edgetune doctor`).

The train stage picks them itself (train/base.py, train/liger.py, train/args.py): a CUDA torch, the `[cuda]` extra
(bitsandbytes for the NF4 base of QLoRA, liger-kernel's fused kernels), and torch's scaled-dot-product attention
(transformers' default, whose flash kernel runs on CUDA GPUs of compute capability 8.0 or newer). Each is reported
as active, or inactive with the reason, read from what is installed and visible here; nothing is loaded or run.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from importlib import metadata

CUDA_EXTRA = ("bitsandbytes", "liger-kernel")  # pyproject.toml's [cuda] extra
FLASH_SDPA_MIN_CAPABILITY = (8, 0)  # torch's flash-attention sdpa backend: Ampere or newer


@dataclass(frozen=True)
class FastPath:
    name: str
    active: bool
    detail: str  # what is used, or why not
    fix: str = ""  # how to turn it on, where it could be on here

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def fast_paths() -> list[FastPath]:
    """Every fast path with its state on this machine."""
    try:
        import torch
    except ImportError:
        return [FastPath("CUDA torch", False, "torch is not installed", "run scripts/setup.sh")]
    built_cuda = torch.version.cuda
    cuda = bool(built_cuda) and torch.cuda.is_available()
    paths = []
    if cuda:
        paths.append(FastPath("CUDA torch", True, f"torch {torch.__version__} (CUDA {built_cuda}), "
                                                  f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"))
    elif not built_cuda:
        paths.append(FastPath("CUDA torch", False, f"torch {torch.__version__} is a CPU build: training runs on the "
                                                   "CPU (fp32 LoRA)", "on a GPU host install a CUDA torch (README)"))
    else:
        paths.append(FastPath("CUDA torch", False, f"torch {torch.__version__} has CUDA {built_cuda} but sees no GPU",
                              "check the driver and CUDA_VISIBLE_DEVICES (nvidia-smi)"))
    no_gpu = "no CUDA GPU here"
    versions = {dist: _version(dist) for dist in CUDA_EXTRA}
    have = ", ".join(f"{d} {v}" if v else f"{d} missing" for d, v in versions.items())
    missing = [d for d, v in versions.items() if v is None]
    extra_fix = "pip install 'edgetune[cuda]' (scripts/setup.sh does it where torch has CUDA)"
    if cuda:
        paths.append(FastPath("[cuda] extra", not missing, have, extra_fix if missing else ""))
    else:
        paths.append(FastPath("[cuda] extra", False, f"{no_gpu}, so unused ({have}); scripts/setup.sh installs it "
                                                     "only where torch has CUDA"))
    bnb = versions["bitsandbytes"]
    if cuda:
        paths.append(FastPath("bitsandbytes NF4", bnb is not None,
                              f"bitsandbytes {bnb}: train.method auto trains QLoRA on an NF4 base" if bnb else
                              "bitsandbytes missing: train.method auto trains LoRA on a bf16 base (more memory)",
                              "" if bnb else extra_fix))
    else:
        paths.append(FastPath("bitsandbytes NF4", False, f"{no_gpu}: train.method auto trains fp32 LoRA (NF4 is "
                                                         "slower on a CPU; method qlora still runs it there)"))
    liger = importlib.util.find_spec("liger_kernel") is not None
    if cuda:
        paths.append(FastPath("Liger kernels", liger, "liger-kernel's fused RMSNorm/SwiGLU/RoPE/linear-cross-entropy "
                              "in every CUDA training run" if liger else "liger-kernel missing: stock transformers "
                              "kernels (1.6x slower, more memory on the Mistral-7B shape: docs/benchmarks.md)",
                              "" if liger else extra_fix))
    else:
        paths.append(FastPath("Liger kernels", False, f"{no_gpu}: its kernels are Triton, CUDA only"))
    flash_pkg = _version("flash-attn")
    pkg = f"; the flash-attn package ({flash_pkg or 'not installed'}) is not used: transformers' default sdpa is"
    if cuda:
        capability = torch.cuda.get_device_capability(0)
        fast = capability >= FLASH_SDPA_MIN_CAPABILITY and torch.backends.cuda.flash_sdp_enabled()
        paths.append(FastPath("flash attention (sdpa)", fast,
                              (f"torch sdpa's flash kernel on compute capability {capability[0]}.{capability[1]}"
                               if fast else f"compute capability {capability[0]}.{capability[1]} is below 8.0: "
                               "sdpa's memory-efficient kernel instead") + pkg))
    else:
        paths.append(FastPath("flash attention (sdpa)", False, f"{no_gpu}: sdpa runs torch's CPU kernel" + pkg))
    return paths
