"""Crash isolation: a runtime whose process dies (a real SIGSEGV) raises one clear NativeCrash line, the caller
lives on, stages publish nothing, and errors raised inside the child come back with their hints."""

from __future__ import annotations

import pytest

from edgetune.artifacts import Store
from edgetune.errors import EvalError, ModelError, NativeCrash
from edgetune.runtimes.child import ChildRuntime

CRASHING = "tests.runtimes.crashing:CrashingRuntime"


@pytest.mark.parametrize(("crash_on", "what"), [("load", "loading"), ("generate", "generating with"),
                                                ("loglikelihood", "scoring with")])
def test_a_crash_in_the_child_is_one_line_with_signal_call_and_file(crash_on, what):
    def use() -> None:
        with ChildRuntime(CRASHING, subject="model-Q8_0.gguf (Q8_0)", crash_on=crash_on) as runtime:
            runtime.loglikelihood([([1], [2])])
            runtime.generate([1, 2], 2, [])

    with pytest.raises(NativeCrash) as err:
        use()
    message = str(err.value)
    assert err.value.exit_code == 9 and err.value.signal_name == "SIGSEGV"
    assert f"llama.cpp crashed (SIGSEGV) {what} model-Q8_0.gguf (Q8_0)" in message
    assert "\n" not in message and "edgetune doctor" in message


def test_the_parent_survives_and_a_new_child_works():
    with pytest.raises(NativeCrash):
        with ChildRuntime(CRASHING, subject="x") as runtime:
            runtime.generate([1], 1, [])
    with ChildRuntime(CRASHING, subject="x", crash_on="never") as runtime:
        assert runtime.generate([5, 6, 7], 2, []) == [5, 6]
        assert runtime.n_ctx == 64 and runtime.n_vocab == 100
        with pytest.raises(EvalError, match="no logits") as err:  # raised in the child, hint intact
            runtime.logits([1])
        assert err.value.hint == "use generate"
        assert runtime.loglikelihood([([1], [2])]) == [(-1.0, True)]  # still serving after an error
    with pytest.raises(EvalError, match="closed"):
        runtime.generate([1], 1, [])


def test_a_crash_inside_a_stage_names_the_stage_and_publishes_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(NativeCrash) as err:
        with store.build("eval-task", "k" * 64, {}, {}) as b:
            (b.path / "results.jsonl").write_text("half\n")
            with ChildRuntime(CRASHING, subject="m-Q4_0.gguf (Q4_0)") as runtime:
                runtime.generate([1], 1, [])
    assert "in stage eval-task" in str(err.value) and err.value.stage == "eval-task"
    assert store.lookup("eval-task", "k" * 64) is None
    assert not list((tmp_path / "eval-task").iterdir())  # no temp folder left behind
    with store.build("eval-task", "k" * 64, {}, {}) as b:  # a rerun builds it
        pass
    assert store.lookup("eval-task", "k" * 64) is not None


def test_llamacpp_load_errors_cross_the_process_boundary_with_their_hint(tmp_path, tiny_gguf):
    from edgetune.runtimes import LlamaCppRuntime

    bad = tmp_path / "half.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    with pytest.raises(ModelError, match="llama.cpp could not load") as err:
        LlamaCppRuntime(bad, n_threads=1)
    assert err.value.hint and err.value.exit_code == 4


def test_crash_messages_name_the_gguf_type_from_its_header(tmp_path, tiny_gguf):
    from edgetune.runtimes.llamacpp import describe_gguf

    assert describe_gguf(tiny_gguf) == f"{tiny_gguf} (F16)"
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\x00")
    assert describe_gguf(junk) == f"{junk} (type unknown)"
    assert describe_gguf(tiny_gguf, tmp_path / "a.gguf").endswith(f"with LoRA {tmp_path / 'a.gguf'}")
