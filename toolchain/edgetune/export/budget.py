"""The byte budget of a per-tensor precision search (export/mix.py): the tightest of its caps.

  size   the plain <QUANT> file named by `auto:<QUANT>-size`
  ram    the largest file that still fits the target's usable RAM beside the KV cache and runtime overhead at the
         planned context (the planner's own memory model: planner.max_file_bytes)
  speed  with a floor on predicted generation tok/s (export.min_tok_s), the largest file whose bytes read per
         token keep the planner's bandwidth roofline at or above it (planner.max_read_bytes). Generation reads
         every tensor of a tied-embedding model (the only kind the search takes), so the file may be that many
         bytes plus its header.

Each cap says why it has its size and how to relax it; the search records which one bound it, and a budget no
mix fits raises ExportError naming that cap. Reads and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgetune.errors import ExportError
from edgetune.modelshape import ModelShape
from edgetune.planner import DEFAULT_EFFICIENCY, Efficiency, max_file_bytes, max_read_bytes, plan_context
from edgetune.targets import Target

SIZE, RAM, SPEED = "size", "ram", "speed"


@dataclass(frozen=True)
class Cap:
    """One limit on the searched file's size: its name (size, ram, speed), bytes, why, and how to relax it."""

    name: str
    bytes: float
    why: str
    hint: str


@dataclass(frozen=True)
class Budget:
    """Every cap on the searched file; the tightest binds."""

    caps: tuple[Cap, ...]

    def __post_init__(self) -> None:
        if not self.caps:
            raise ValueError("a budget needs at least one cap")

    @classmethod
    def of_size(cls, size_bytes: float, why: str = "the size given") -> Budget:
        return cls((Cap(SIZE, size_bytes, why, "raise the size budget"),))

    @property
    def binding(self) -> Cap:
        """The tightest cap (the first named, on a tie)."""
        return min(self.caps, key=lambda c: c.bytes)

    @property
    def bytes(self) -> float:
        return self.binding.bytes

    def refuse(self, smallest_bytes: float, *, at_least: bool = False) -> ExportError:
        """The error for a search whose smallest mix (`smallest_bytes`, or a lower bound of it) is over this
        budget: names every cap it breaks, the binding one first, with how to relax each."""
        over = sorted((c for c in self.caps if c.bytes < smallest_bytes), key=lambda c: c.bytes)
        b = over[0] if over else self.binding
        also = "".join(f"; also over the {c.name} cap {_mb(c.bytes)} ({c.why})" for c in over[1:])
        return ExportError(f"no mix fits the {b.name} cap of {_mb(b.bytes)} ({b.why}): the smallest is "
                           f"{'at least ' if at_least else ''}{_mb(smallest_bytes)}{also}", "; ".join(c.hint for c in (over or [b])))

    def to_dict(self) -> dict[str, Any]:
        return {"binding": self.binding.name, "caps": {c.name: {"bytes": int(c.bytes), "why": c.why}
                                                       for c in self.caps}}


def target_caps(target: Target, shape: ModelShape, quant: str, *, min_tok_s: float | None = None,
                efficiency: Efficiency = DEFAULT_EFFICIENCY) -> tuple[Cap, ...]:
    """The ram cap (always) and the speed cap (with a floor) for a file of `shape` whose file type is `quant` (the
    prompt roofline depends on it: Q4_0 is repacked on ARM) on `target`."""
    n_ctx = plan_context(target, shape)
    caps = [Cap(RAM, max_file_bytes(target, shape),
                f"{target.name}'s usable RAM {_mb(target.usable_ram_bytes)} less the KV cache and runtime at "
                f"{n_ctx:,} tokens", f"pick a board with more RAM or shorten the context (eval.context_length, "
                                     f"now {n_ctx:,})")]
    if min_tok_s is not None:
        read = max_read_bytes(target, shape, quant, min_tok_s, efficiency)
        caps.append(Cap(SPEED, read + shape.metadata_bytes if read >= 0 else 0.0,
                        f"predicted generation of at least {min_tok_s:g} tok/s on {target.name} "
                        f"({efficiency.source})", f"lower export.min_tok_s (now {min_tok_s:g})"))
    return tuple(caps)


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB"
