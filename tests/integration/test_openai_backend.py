"""The `openai:` backend over real HTTP against a local fault-injecting OpenAI-compatible server:
retries (429 with Retry-After, 500, timeouts, dropped connections), failures with reasons for
garbage bodies, bounded concurrency and a hard budget that stops cleanly."""

import json

import pytest

from neuronatlas.adapters.openai_llm import Budget, OpenAIBackend
from neuronatlas.core.llm import GenerationParams
from neuronatlas.core.prompts import ActivationRecord, explainer_prompt
from tests.fake_openai import FaultyServer, serve

PROMPT = explainer_prompt([ActivationRecord([" The", " 1932"], [0.0, 4.0])])
ONE = GenerationParams(n=1, temperature=0.0, max_tokens=20)


def answer(_messages: list[dict[str, str]]) -> str:
    return "the main thing this neuron does is find years."


def backend(url: str, **kwargs: object) -> OpenAIBackend:
    settings: dict = {"max_retries": 3, "timeout_s": 1.5, "concurrency": 4} | kwargs
    return OpenAIBackend("test-model", base_url=url, **settings)


@pytest.mark.parametrize("fault", ["429", "500", "slow", "reset", "cut"])
def test_transient_faults_are_retried(fault: str) -> None:
    server = FaultyServer(answer, [fault])
    with serve(server) as url:
        llm = backend(url)
        [result] = llm.generate([PROMPT], ONE)
    assert result.failure is None
    assert result.texts == ("the main thing this neuron does is find years.",)
    assert [behaviour for _, behaviour, _ in server.requests] == [fault, "ok"]
    if fault == "429":  # Retry-After: 1 was honoured
        assert server.requests[1][0] - server.requests[0][0] >= 0.9
    assert llm.usage.calls == 1 and llm.usage.failures == 0
    assert llm.usage.completion_tokens == 7


def test_chat_api_is_asked_for_the_answer_prefix() -> None:
    server = FaultyServer(answer)
    with serve(server) as url:
        backend(url).generate([PROMPT], ONE)
    last = server.requests[0][2]["messages"][-1]["content"]
    assert last.endswith('Answer with one sentence that begins "the main thing this neuron does is find".')


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("garbage", "JSONDecodeError"),
        ("not-chat", "ValueError: response has no choices"),
    ],
)
def test_garbage_bodies_are_failures_with_a_reason(fault: str, reason: str) -> None:
    server = FaultyServer(answer, [fault])
    with serve(server) as url:
        llm = backend(url)
        [result] = llm.generate([PROMPT], ONE)
    assert result.texts == ()
    assert result.failure is not None and reason in result.failure
    assert llm.usage.failures == 1


def test_persistent_errors_end_as_failures_after_the_retries() -> None:
    server = FaultyServer(answer, ["500"] * 10)
    with serve(server) as url:
        [result] = backend(url, max_retries=2).generate([PROMPT], ONE)
    assert result.failure is not None and result.failure.startswith("InternalServerError 500")
    assert len(server.requests) == 3  # the first try and two retries


def test_a_request_the_server_refuses_is_not_retried() -> None:
    server = FaultyServer(answer, ["400"])
    with serve(server) as url:
        [result] = backend(url).generate([PROMPT], ONE)
    assert result.failure == "BadRequestError 400: max_tokens is too large"
    assert len(server.requests) == 1


def test_the_token_budget_is_never_exceeded_and_stops_cleanly() -> None:
    server = FaultyServer(answer)
    prompts = [PROMPT] * 10
    with serve(server) as url:
        llm = backend(url, budget=Budget(max_tokens=3_000), concurrency=1)
        results = llm.generate(prompts, ONE)
    done = [r for r in results if r.failure is None]
    refused = [r for r in results if r.failure is not None]
    assert done and refused
    assert all(r.failure.startswith("budget exhausted") for r in refused)  # type: ignore[union-attr]
    assert len(server.requests) == len(done)  # refused requests were never sent
    assert llm.usage.prompt_tokens + llm.usage.completion_tokens <= 3_000


def test_the_dollar_budget_counts_cost() -> None:
    server = FaultyServer(answer)
    with serve(server) as url:
        budget = Budget(max_usd=0.01, usd_per_million_prompt=5.0, usd_per_million_completion=15.0)
        llm = backend(url, budget=budget, concurrency=2)
        results = llm.generate([PROMPT] * 40, ONE)
    assert any(r.failure and r.failure.startswith("budget exhausted ($") for r in results)
    assert 0 < llm.usage.cost_usd <= 0.01


def test_concurrency_is_bounded() -> None:
    server = FaultyServer(answer, ["slow"] * 6)
    server.slow_seconds = 0.5
    with serve(server) as url:
        llm = backend(url, concurrency=2, timeout_s=5.0)
        results = llm.generate([PROMPT] * 6, ONE)
    assert all(r.failure is None for r in results)
    assert server.max_in_flight == 2


def test_no_key_and_no_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from neuronatlas.errors import InputError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InputError, match="set OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")


def test_batch_mode_submits_once_and_resumes_by_stored_id(tmp_path: object) -> None:
    from pathlib import Path

    from neuronatlas.adapters.storage import Storage

    store = Storage.open(str(Path(str(tmp_path)) / "atlas"))
    server = FaultyServer(answer)
    server.polls_before_done = 1_000  # stays in progress for the first backend
    prompts = [PROMPT, explainer_prompt([ActivationRecord([" of"], [2.0])])]
    params = GenerationParams(n=2, temperature=1.0, max_tokens=20, seed=3)
    with serve(server) as url:
        first = OpenAIBackend("test-model", base_url=url, batch=True, store=store, poll_s=0.05, max_wait_s=0.3)
        waiting = first.generate(prompts, params)
        assert all(r.failure and "still in_progress; rerun to resume it" in r.failure for r in waiting)
        [state] = store.list("llm_batches")
        assert store.read_json(f"llm_batches/{state}")["batch_id"] == "batch-0"

        server.polls_before_done = 0  # the batch finishes; a new backend (a new process) picks it up
        second = OpenAIBackend("test-model", base_url=url, batch=True, store=store, poll_s=0.05)
        results = second.generate(prompts, params)
    assert [r.failure for r in results] == [None, None]
    assert all(len(r.texts) == 2 for r in results)
    assert second.usage.completion_tokens == 4 * 7  # 2 prompts x 2 samples
    kinds = [behaviour for _, behaviour, _ in server.requests]
    assert kinds.count("upload") == 1 and kinds.count("create batch") == 1  # never submitted twice
    uploaded = server.files["file-0"].decode().splitlines()
    assert len(uploaded) == 4  # one request line per sample
    assert {json.loads(line)["body"]["seed"] for line in uploaded} == {3, 4}


def test_batch_mode_without_a_store_is_refused() -> None:
    from neuronatlas.errors import InputError

    with pytest.raises(InputError, match="batch mode needs a storage root"):
        OpenAIBackend("test-model", base_url="http://127.0.0.1:9/v1", batch=True)
