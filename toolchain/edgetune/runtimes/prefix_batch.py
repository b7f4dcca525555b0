"""Pack log-likelihood requests into multi-sequence batches in which shared prefixes are evaluated once.

A request (context, continuation) needs the model fed `context + continuation[:-1]` and the logits at the
last `len(continuation)` of those positions. Requests that start alike (the choices of one question, the
two fillings of a WinoGrande sentence, questions with the same preamble) form a prefix tree: every tree node
is one token at one position, fed once and tagged with the sequence id of every request passing through it,
so in one `llama_decode` each request attends to exactly its own tokens. Logits are asked only where some
request reads them. This is what llama.cpp's `llama-perplexity --hellaswag` does for one task's four
endings; here any number of requests, shared in any way, fill a batch up to the limits given.

Pure Python: no llama.cpp import. `Pack.nodes()` is in an order where every token follows its prefix, so
llama.cpp may split the batch into micro-batches anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Caps on one batch: tokens fed (KV cells used), sequences (requests) and logit rows returned."""

    tokens: int
    seqs: int
    outputs: int


@dataclass
class Node:
    token: int
    pos: int
    seq_ids: list[int] = field(default_factory=list)
    output: bool = False


@dataclass
class Pack:
    """One batch being filled: a prefix tree of token nodes and, per request, the nodes whose logits score
    its continuation."""

    _nodes: list[Node] = field(default_factory=list)
    _children: dict[tuple[int, int], int] = field(default_factory=dict)  # (parent node or -1, token) → node
    reads: dict[int, list[int]] = field(default_factory=dict)  # request index → node per continuation token
    seq_of: dict[int, int] = field(default_factory=dict)  # request index → its sequence id in the batch
    n_outputs: int = 0

    def __len__(self) -> int:
        return len(self.reads)

    def nodes(self) -> list[Node]:
        return self._nodes

    def cost(self, fed: Sequence[int], first: int) -> tuple[int, int]:
        """(new tokens, new logit rows) adding a request fed `fed` and read from position `first` would take."""
        parent, shared = -1, 0
        for tok in fed:
            child = self._children.get((parent, tok))
            if child is None:
                break
            parent, shared = child, shared + 1
        new_outputs = len(fed) - max(shared, first)
        if shared > first:  # shared nodes read by this request but not yet asked for logits
            path = self._path(fed[:shared])
            new_outputs += sum(not self._nodes[n].output for n in path[first:shared])
        return len(fed) - shared, new_outputs

    def fits(self, fed: Sequence[int], first: int, limits: Limits) -> bool:
        """Whether the request fits under `limits`; an empty pack takes any request (the caller checks that
        one request fits the context)."""
        if not self.reads:
            return True
        tokens, outputs = self.cost(fed, first)
        return (
            len(self.reads) < limits.seqs
            and len(self._nodes) + tokens <= limits.tokens
            and self.n_outputs + outputs <= limits.outputs
        )

    def add(self, index: int, fed: Sequence[int], first: int) -> None:
        """Add request `index` fed `fed`, whose continuation is read at positions first..len(fed)-1."""
        seq_id = len(self.reads)
        parent = -1
        path = []
        for pos, tok in enumerate(fed):
            child = self._children.get((parent, tok))
            if child is None:
                child = len(self._nodes)
                self._nodes.append(Node(tok, pos))
                self._children[(parent, tok)] = child
            node = self._nodes[child]
            node.seq_ids.append(seq_id)
            if pos >= first and not node.output:
                node.output = True
                self.n_outputs += 1
            path.append(child)
            parent = child
        self.reads[index] = path[first:]
        self.seq_of[index] = seq_id

    def _path(self, fed: Sequence[int]) -> list[int]:
        parent, path = -1, []
        for tok in fed:
            parent = self._children[(parent, tok)]
            path.append(parent)
        return path


def plan(requests: Sequence[tuple[Sequence[int], Sequence[int]]], limits: Limits) -> list[Pack]:
    """Requests packed into batches under `limits`, in lexicographic order of their tokens so requests with
    long shared prefixes land in the same batch. Every request appears in exactly one pack."""
    order = sorted(range(len(requests)), key=lambda i: (list(requests[i][0]) + list(requests[i][1])))
    packs: list[Pack] = []
    pack = Pack()
    for i in order:
        ctx, cont = requests[i]
        fed = list(ctx) + list(cont[:-1])
        first = len(ctx) - 1
        if not pack.fits(fed, first, limits):
            packs.append(pack)
            pack = Pack()
        pack.add(i, fed, first)
    if len(pack):
        packs.append(pack)
    return packs
