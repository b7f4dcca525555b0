"""The judge against a scripted, fault-injecting OpenAI-compatible server: retries (the openai client's own),
backoff, Retry-After, timeouts, garbage, fatal errors, the verdict cache, interruption, pairwise order swaps,
the JSON-schema response_format and key hygiene."""

from __future__ import annotations

import logging
import time

import pytest
from edgetune.errors import JudgeError
from edgetune.evals.judge import JudgeItem, judge_pairwise, judge_single
from edgetune.evals.judge_cache import VerdictCache
from edgetune.judge_config import JudgeConfig
from edgetune.evals.suites import load_rubric

from .fault_server import FaultServer, Garbage, Hang, Reply, Status, sequence, shown_answers

KEY_ENV = "EDGETUNE_TEST_JUDGE_KEY"
SENTINEL = "sk-edgetune-SENTINEL-5f1c2b9e7d"
ITEMS = [JudgeItem(f"q{i}", f"Question number {i}?") for i in range(5)]
ANSWERS = [f"Answer number {i}." for i in range(5)]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SENTINEL)


@pytest.fixture(scope="module")
def rubric():
    return load_rubric("helpfulness")


def cfg_for(server: FaultServer, **overrides) -> JudgeConfig:
    settings = {
        "base_url": server.base_url,
        "model": "fault-judge",
        "api_key_env": KEY_ENV,
        "concurrency": 1,
        "timeout_s": 2.0,
        "max_retries": 3,
    }
    return JudgeConfig(**{**settings, **overrides})


def test_429_retry_after_is_honoured(rubric, tmp_path):
    with FaultServer(sequence(Status(429, {"Retry-After": "1"}))) as srv:
        started = time.perf_counter()
        result = judge_single(cfg_for(srv), rubric, ITEMS[:1], ANSWERS[:1], tmp_path)
        waited = time.perf_counter() - started
    assert srv.count == 2 and result.items[0].rating == 7
    assert waited >= 0.95  # Retry-After: 1 beats the client's 0.5 s first backoff
    with FaultServer(sequence(Status(503, {"retry-after-ms": "900"}))) as srv:
        started = time.perf_counter()
        judge_single(cfg_for(srv), rubric, ITEMS[:1], ANSWERS[:1], tmp_path / "ms")
        waited = time.perf_counter() - started
    assert srv.count == 2 and waited >= 0.85  # retry-after-ms too


def test_5xx_retried_with_backoff_then_succeeds(rubric, tmp_path):
    with FaultServer(sequence(Status(500), Status(503), Status(502))) as srv:
        started = time.perf_counter()
        result = judge_single(cfg_for(srv), rubric, ITEMS[:1], ANSWERS[:1], tmp_path)
        waited = time.perf_counter() - started
    assert srv.count == 4 and result.n_valid == 1
    assert waited >= 0.75 * (0.5 + 1 + 2)  # the client's backoff: 0.5 s doubling, less at most 25% jitter
    assert VerdictCache(tmp_path).get(next(iter_keys(tmp_path)))["attempts"] == 4


def iter_keys(cache_dir):
    return (p.stem for p in cache_dir.glob("??/*.json"))


def test_hang_past_timeout_is_retried(rubric, tmp_path):
    with FaultServer(sequence(Hang(10.0))) as srv:
        started = time.perf_counter()
        result = judge_single(cfg_for(srv, timeout_s=0.3), rubric, ITEMS[:1], ANSWERS[:1], tmp_path)
    assert srv.count == 2 and result.n_valid == 1
    assert time.perf_counter() - started < 5


def test_retries_exhausted_is_a_clear_error(rubric, tmp_path):
    with FaultServer(lambda i, body: Hang(10.0)) as srv, pytest.raises(JudgeError) as info:
        judge_single(cfg_for(srv, timeout_s=0.2, max_retries=1), rubric, ITEMS[:1], ANSWERS[:1], tmp_path)
    assert srv.count == 2
    assert str(info.value).startswith(f"judge at {srv.base_url} failed 2 times; last: timed out after 0.2s")
    assert info.value.exit_code == 8 and "judge.concurrency" in info.value.hint
    with FaultServer(lambda i, body: Status(503)) as srv, pytest.raises(JudgeError, match="last: HTTP 503"):
        judge_single(cfg_for(srv, max_retries=2), rubric, ITEMS[:1], ANSWERS[:1], tmp_path / "503")
    assert srv.count == 3


def test_garbage_body_is_retried_then_reported(rubric, tmp_path):
    with FaultServer(sequence(Garbage(b"{not json"), Garbage(b'{"foo": 1}'))) as srv:
        assert judge_single(cfg_for(srv), rubric, ITEMS[:1], ANSWERS[:1], tmp_path).n_valid == 1
    assert srv.count == 3
    assert VerdictCache(tmp_path).get(next(iter_keys(tmp_path)))["attempts"] == 3
    # malformed replies and HTTP retries share one budget: 1 + max_retries requests in all
    with (
        FaultServer(sequence(Status(503), Garbage(b"{not json"), Status(500), Garbage(b"[]"))) as srv,
        pytest.raises(JudgeError, match="failed 4 times; last: "),
    ):
        judge_single(cfg_for(srv), rubric, ITEMS[:1], ANSWERS[:1], tmp_path / "mixed")
    assert srv.count == 4
    with (
        FaultServer(lambda i, body: Garbage(b"<html>proxy</html>", "text/html")) as srv,
        pytest.raises(JudgeError, match="not a chat completion"),
    ):
        judge_single(cfg_for(srv, max_retries=1), rubric, ITEMS[:1], ANSWERS[:1], tmp_path / "html")
    assert srv.count == 2


def test_unparseable_verdict_is_invalid_and_cached(rubric, tmp_path):
    script = sequence(Reply("Looks fine to me, maybe a 7?"), Reply("Rating: 12"), Reply("Rating: 3"))
    with FaultServer(script) as srv:
        result = judge_single(cfg_for(srv), rubric, ITEMS[:3], ANSWERS[:3], tmp_path)
        again = judge_single(cfg_for(srv), rubric, ITEMS[:3], ANSWERS[:3], tmp_path)
    assert [i.rating for i in result.items] == [None, None, 3]
    assert [i.reason for i in result.items] == ['no "Rating: N" line', "rating 12 outside 1-10", ""]
    assert (result.n_valid, result.n_invalid, result.mean_rating) == (1, 2, 3.0)
    assert srv.count == 3 and again.calls == 0 and again.cached == 3 and again.items == result.items


@pytest.mark.parametrize(
    ("status", "message", "hint"),
    [
        (401, "rejected the API key (HTTP 401)", f"check the key in ${KEY_ENV}"),
        (403, "refused access to model 'fault-judge' (HTTP 403)", "pick another judge.model"),
        (404, "has no model 'fault-judge' or no chat endpoint (HTTP 404)", "ends with /v1"),
        (400, "rejected the request (HTTP 400): ", "check judge.model"),
    ],
)
def test_fatal_statuses_fail_at_once(rubric, tmp_path, status, message, hint):
    with FaultServer(lambda i, body: Status(status)) as srv, pytest.raises(JudgeError) as info:
        judge_single(cfg_for(srv, concurrency=4), rubric, ITEMS, ANSWERS, tmp_path)
    assert message in str(info.value) and hint in info.value.hint
    assert srv.count <= 4  # no retries: only the requests already in flight were sent
    assert SENTINEL not in str(info.value)


def test_rerun_makes_zero_calls(rubric, tmp_path):
    with FaultServer(lambda i, body: Reply("Rating: 8")) as srv:
        first = judge_single(cfg_for(srv, concurrency=3), rubric, ITEMS, ANSWERS, tmp_path)
        assert srv.count == 5 and first.calls == 5 and len(VerdictCache(tmp_path)) == 5
        second = judge_single(cfg_for(srv, concurrency=3), rubric, ITEMS, ANSWERS, tmp_path)
        assert srv.count == 5 and second.calls == 0 and second.cached == 5
        # anything that changes the verdict changes the key: another model, another answer
        judge_single(cfg_for(srv, model="other-judge"), rubric, ITEMS[:1], ANSWERS[:1], tmp_path)
        judge_single(cfg_for(srv), rubric, ITEMS[:1], ["A different answer."], tmp_path)
        assert srv.count == 7


def test_interrupted_run_keeps_finished_verdicts(rubric, tmp_path):
    def script(i, body):
        return Status(400) if "number 2?" in body["messages"][-1]["content"] else Reply("Rating: 6")

    with FaultServer(script) as srv, pytest.raises(JudgeError, match="HTTP 400"):
        judge_single(cfg_for(srv), rubric, ITEMS, ANSWERS, tmp_path)
    finished = srv.count - 1
    assert finished >= 1 and len(VerdictCache(tmp_path)) == finished
    with FaultServer(lambda i, body: Reply("Rating: 6")) as healthy:
        result = judge_single(cfg_for(healthy), rubric, ITEMS, ANSWERS, tmp_path)
    assert healthy.count == len(ITEMS) - finished and result.cached == finished and result.n_valid == 5


def pairwise_judge(i, body):
    """Prefers the answer containing "good"; says A whenever both say "biased"; tie for "even"; rambles for
    "garbage"."""
    first, _ = shown_answers(body)
    if "biased" in first:
        return Reply("Verdict: A")
    if "even" in first:
        return Reply("They are equally good.\nVerdict: tie")
    if "garbage" in first:
        return Reply("Both have merit.")
    return Reply("Verdict: A" if "good" in first else "Verdict: B")


def test_pairwise_both_orders_and_flip_rate(rubric, tmp_path):
    pairs = [
        ("good 0", "bad 0"),
        ("bad 1", "good 1"),
        ("biased 2", "biased two"),
        ("same", " same "),
        ("even 4", "even four"),
        ("garbage 5", "garbage five"),
    ]
    items = [JudgeItem(f"p{i}", f"Pairwise question {i}?") for i in range(len(pairs))]
    with FaultServer(pairwise_judge) as srv:
        result = judge_pairwise(
            cfg_for(srv, concurrency=4),
            rubric,
            items,
            [a for a, _ in pairs],
            [b for _, b in pairs],
            tmp_path,
            names=("gpu", "Q4_0"),
        )
        shown = sorted(shown_answers(r["body"]) for r in srv.requests)
        again = judge_pairwise(
            cfg_for(srv),
            rubric,
            items,
            [a for a, _ in pairs],
            [b for _, b in pairs],
            tmp_path,
            names=("gpu", "Q4_0"),
        )
    assert srv.count == 10  # 5 pairs x 2 orders; identical answers are never sent
    assert ("good 0", "bad 0") in shown and ("bad 0", "good 0") in shown  # both orders of every pair
    assert [i.outcome for i in result.items] == ["a", "b", "tie", "tie", "tie", "invalid"]
    assert [i.flipped for i in result.items] == [False, False, True, False, False, False]
    assert result.win_tie_loss == (1, 3, 1) and result.invalid == 1 and result.identical == 1
    assert result.flips == 1 and result.flip_rate == pytest.approx(1 / 4)
    assert result.first_position_rate == pytest.approx(4 / 6)
    assert again.calls == 0 and again.cached == 10 and again.win_tie_loss == result.win_tie_loss


def test_json_verdict_asked_with_the_standard_response_format(rubric, tmp_path):
    with FaultServer(sequence(then=Reply('{"rating": 9}'))) as srv:
        result = judge_single(cfg_for(srv, json_schema_grammar=True), rubric, ITEMS[:1], ANSWERS[:1], tmp_path)
    fmt = srv.requests[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "single_verdict"
    assert fmt["json_schema"]["schema"]["required"] == ["rating"] and result.items[0].rating == 9
    with FaultServer(sequence(then=Reply("Rating: 4"))) as srv:
        judge_single(cfg_for(srv), rubric, ITEMS[:1], ANSWERS[:1], tmp_path / "text")
    assert "response_format" not in srv.requests[0]["body"]


def test_api_key_never_logged_nor_cached(rubric, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and httpx's included
    with FaultServer(sequence(Status(429, {"Retry-After": "0"}), Status(500), Reply("junk"))) as srv:
        judge_single(cfg_for(srv), rubric, ITEMS[:2], ANSWERS[:2], tmp_path)
    with FaultServer(lambda i, body: Status(401)) as bad, pytest.raises(JudgeError) as info:
        judge_single(cfg_for(bad), rubric, ITEMS[2:3], ANSWERS[2:3], tmp_path)
    assert srv.requests[0]["headers"]["authorization"] == f"Bearer {SENTINEL}"  # it was sent...
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2
    for path in files:  # ...but is nowhere on disk, in the logs or in the error
        assert SENTINEL not in path.read_text()
    assert caplog.records and SENTINEL not in caplog.text
    assert SENTINEL not in str(info.value) and SENTINEL not in (info.value.hint or "")


def test_input_errors(rubric, tmp_path):
    cfg = JudgeConfig(base_url="http://127.0.0.1:9/v1", model="m", api_key_env=None)
    with pytest.raises(JudgeError, match="2 answers for 1 items"):
        judge_single(cfg, rubric, ITEMS[:1], ANSWERS[:2], tmp_path)
    with pytest.raises(JudgeError, match="'q0' appears more than once"):
        judge_single(cfg, rubric, [ITEMS[0], ITEMS[0]], ANSWERS[:2], tmp_path)
    with pytest.raises(JudgeError, match="no items"):
        judge_pairwise(cfg, rubric, [], [], [], tmp_path)
    with pytest.raises(JudgeError, match="connection failed"):
        judge_single(cfg.model_copy(update={"max_retries": 0}), rubric, ITEMS[:1], ANSWERS[:1], tmp_path)
