"""Packing log-likelihood requests into shared-prefix batches (pure), and the llama.cpp scorer built on it
checked against one fresh single-sequence evaluation per request on the tiny F16 GGUF."""

from __future__ import annotations

import pytest
from edgetune.runtimes.prefix_batch import Limits, plan

WIDE = Limits(tokens=10_000, seqs=64, outputs=10_000)


def fed_sequence(pack, index):
    """The tokens a request's sequence id is fed with, in batch order."""
    return [n.token for n in pack.nodes() if pack.seq_of[index] in n.seq_ids]


def test_choices_share_their_context_once():
    ctx = [5, 6, 7, 8]
    requests = [(ctx, [1, 2, 3]), (ctx, [1, 9]), (ctx, [4])]
    [pack] = plan(requests, WIDE)
    nodes = pack.nodes()
    # context once, then " 1" shared by two choices, then each tail: 4 + 1 + 1 (2) + 0 (9 is never fed) + 0 (4)
    assert [n.token for n in nodes] == [5, 6, 7, 8, 1, 2]
    assert nodes[3].seq_ids == [0, 1, 2] and nodes[3].output  # the context's last row predicts every first token
    assert not any(n.output for n in nodes[:3])  # no logits for context positions nobody reads
    assert [n.pos for n in nodes] == [0, 1, 2, 3, 4, 5]
    for i, (c, cont) in enumerate(requests):
        assert len(pack.reads[i]) == len(cont)
        assert [nodes[n].pos for n in pack.reads[i]] == list(range(len(c) - 1, len(c) - 1 + len(cont)))
        assert fed_sequence(pack, i) == c + cont[:-1]


def test_partial_contexts_share_their_common_part():
    # WinoGrande: two contexts that differ at the blank, one shared continuation
    requests = [([1, 2, 3, 10], [7, 8, 9]), ([1, 2, 3, 11, 12], [7, 8, 9])]
    [pack] = plan(requests, WIDE)
    assert len(pack.nodes()) == 3 + (1 + 2) + (2 + 2)
    for i, (c, cont) in enumerate(requests):
        assert fed_sequence(pack, i) == c + cont[:-1]


def test_parents_come_before_children_and_ids_are_in_range():
    requests = [([3, 1], [2, 2]), ([1], [5, 6, 7]), ([3, 1, 2], [9]), ([1, 5], [6])]
    packs = plan(requests, WIDE)
    for pack in packs:
        nodes = pack.nodes()
        for k, node in enumerate(nodes):
            assert all(0 <= s < len(pack) for s in node.seq_ids)
            # every sequence through this node has its whole prefix earlier in the batch, one node per position
            for s in node.seq_ids:
                before = [x.pos for x in nodes[:k] if s in x.seq_ids]
                assert before == list(range(node.pos))
    assert sorted(i for pack in packs for i in pack.reads) == [0, 1, 2, 3]


@pytest.mark.parametrize("limits", [Limits(tokens=6, seqs=64, outputs=1000), Limits(tokens=1000, seqs=2, outputs=1000),
                                    Limits(tokens=1000, seqs=64, outputs=3)])
def test_limits_split_batches(limits):
    requests = [([k, 1, 2], [3, 4]) for k in range(6)]
    packs = plan(requests, limits)
    assert len(packs) > 1
    for pack in packs:
        assert len(pack) <= limits.seqs
        assert len(pack.nodes()) <= limits.tokens or len(pack) == 1
        assert pack.n_outputs <= limits.outputs or len(pack) == 1
        assert pack.n_outputs == sum(n.output for n in pack.nodes())
    assert sorted(i for pack in packs for i in pack.reads) == list(range(6))


def test_identical_requests_read_the_same_rows():
    [pack] = plan([([1, 2], [3, 4]), ([1, 2], [3, 4])], WIDE)
    assert pack.reads[0] == pack.reads[1] and len(pack.nodes()) == 3


def test_llamacpp_scorer_equals_fresh_single_sequence_evaluation(tiny_gguf, tokenizer):
    """Many requests per decode (shared prefixes, partial contexts, duplicates, several batches) give what one
    Llama.eval of each request alone gives."""
    import numpy as np
    from edgetune.runtimes import llamacpp as backend
    from llama_cpp import Llama

    enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
    q = enc("Question: Which colour is the sky on a clear day?\nAnswer:")
    requests = [(q, enc(" blue")), (q, enc(" green as grass")), (q, enc(" blue")), (q, enc(" red, at dusk")),
                (enc("The cat sat on the mat because it"), enc(" was warm.")),
                (enc("The cat sat on the mat because the dog"), enc(" was warm.")), (enc("Hi"), enc("!"))]
    llm = Llama(str(tiny_gguf), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    fresh = []
    for ctx, cont in requests:
        llm.reset()
        llm.eval(ctx + cont[:-1])
        rows = np.asarray(llm.scores[len(ctx) - 1 : len(ctx) - 1 + len(cont)], dtype=np.float64)
        lp = rows - rows.max(axis=1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(axis=1, keepdims=True))
        fresh.append(float(lp[np.arange(len(cont)), cont].sum()))
    llm.close()
    # the in-process engine: SCORE_TOKENS is patched below, which a child process would not see
    with backend.LlamaCppEngine(tiny_gguf, n_ctx=256, n_threads=1) as runtime:
        together = runtime.loglikelihood(requests)
        saved = backend.SCORE_TOKENS
        backend.SCORE_TOKENS = 20  # force several batches
        try:
            split = runtime.loglikelihood(requests)
        finally:
            backend.SCORE_TOKENS = saved
    assert [lp for lp, _ in together] == pytest.approx(fresh, abs=1e-4)
    assert [lp for lp, _ in split] == pytest.approx(fresh, abs=1e-4)
    assert together[0] == together[2]
