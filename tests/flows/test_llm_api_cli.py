"""`explain` and `score` with `openai:` backends as a user types them, against the fault-injecting
OpenAI-compatible server (real HTTP, real CLI processes, real Prefect): the Batch API (one batch
per stage, resumed by a rerun with no ordinary request), a budget in batch mode, Yes/No readouts
from `top_logprobs` and the probe that finds them, and an API key that appears nowhere."""

import json
import os
import re
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from neuronatlas.adapters.storage import Storage
from neuronatlas.core.prompts import JSON_EXCERPTS_PER_REQUEST
from neuronatlas.datasets import explanations as contract
from tests.fake_openai import FaultyServer, serve
from tests.integration.test_cli_bad_input import assert_clean_failure, run_cli
from tests.support import (
    is_json_simulation,
    json_request_excerpts,
    json_simulation_answer,
    read_only,
    small_jsonl_corpus,
)

SENTINEL = "sk-sentinel-7d3f0a9c41"
"""The API key of every run here: it must appear in no output and no file under the root."""
ENV = {"OPENAI_API_KEY": SENTINEL}
"""Every command's environment: the key, and the module's Prefect server (`shared_server`)."""


@pytest.fixture(scope="module", autouse=True)
def shared_server(module_prefect_server: dict[str, str]) -> None:
    """One Prefect server for every command here (each would start a temporary one)."""
    for name in ("PREFECT_API_URL", "PREFECT_HOME"):
        ENV[name] = module_prefect_server[name]


NEURONS = "3:7,3:100,3:200"
ONE = ["--samples", "1"]


def answer(messages: list[dict[str, str]]) -> str:
    last = messages[-1]["content"]
    if is_json_simulation(last):  # numbers fire
        return json_simulation_answer(last, lambda token: token.strip().isdigit())
    return "the main thing this neuron does is find numbers."


def yes_if_numbers(messages: list[dict[str, str]]) -> dict[str, float]:
    """Top alternatives of a Yes/No answer: Yes when the excerpt holds a digit (variants split)."""
    excerpt = messages[-1]["content"].rsplit("\nExcerpt: ", 1)[-1]
    yes = 0.9 if any(c.isdigit() for c in excerpt) else 0.15
    return {"Yes": 0.7 * yes, " yes": 0.3 * yes, "No": 0.8 * (1 - yes), "NO": 0.2 * (1 - yes), "Maybe": 0.001}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llm-api")
    source = small_jsonl_corpus(folder / "wiki.jsonl", documents=120)
    root = folder / "template"
    for args in (
        ["ingest", "--root", str(root), "--source", str(source)],
        ["extract", "--root", str(root), "--layers", "3", "--top-k", "8", "--random-k", "3", "--limit", "64"],
    ):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def root(extracted: Path, tmp_path: Path) -> str:
    import shutil

    shutil.copytree(extracted, tmp_path / "atlas")
    return str(tmp_path / "atlas")


@pytest.fixture
def server() -> Iterator[tuple[FaultyServer, str]]:
    fake = FaultyServer(answer)
    with serve(fake) as url:
        yield fake, url


def chat_requests(server: FaultyServer) -> int:
    """Ordinary (not batch) chat requests the server received."""
    return sum(1 for _, kind, body in server.requests if "messages" in body)


def assert_no_secret(root: str, *outputs: str) -> None:
    for output in outputs:
        assert SENTINEL not in output
    for path in Path(root).rglob("*"):
        if path.is_file():
            assert SENTINEL.encode() not in path.read_bytes(), path


def test_a_read_only_root_is_refused_before_any_llm_call(root: str, server: tuple[FaultyServer, str]) -> None:
    fake, url = server
    before = sorted(str(p) for p in Path(root).rglob("*"))
    with read_only(Path(root)):
        refused = run_cli(
            "explain", "--root", root, "--base-url", url, "--neurons", NEURONS, *ONE, "--explainer", "openai:m", env=ENV
        )
    assert_clean_failure(refused, f"--root {root}: cannot write in {root}")
    assert fake.requests == []  # nothing asked, nothing spent
    assert sorted(str(p) for p in Path(root).rglob("*")) == before


def test_batch_api_one_batch_per_stage_resumed_by_a_rerun(root: str, server: tuple[FaultyServer, str]) -> None:
    fake, url = server
    batch = ["--root", root, "--base-url", url, "--batch-api", "--poll-seconds", "0.05"]
    fake.polls_before_done = 10_000  # the first run gives up waiting
    waited = run_cli(
        "explain", *batch, "--max-wait-seconds", "1", "--neurons", NEURONS, *ONE, "--explainer", "openai:m", env=ENV
    )
    assert_clean_failure(waited, "still running after --max-wait-seconds 1; nothing committed; rerun")
    storage = Storage.open(root)
    assert not storage.list("explanations")  # nothing committed
    [state] = [name for name in storage.list("llm_batches") if name.startswith("batch-")]
    assert storage.read_json(f"llm_batches/{state}")["batch_id"] == "batch-0"

    fake.polls_before_done = 0  # the batch finishes; the rerun picks it up
    explained = run_cli("explain", *batch, "--neurons", NEURONS, *ONE, "--explainer", "openai:m", env=ENV)
    assert explained.returncode == 0, explained.stderr
    assert "3 explained, 0 failed" in explained.stdout
    kinds = [kind for _, kind, _ in fake.requests]
    assert kinds.count("upload") == 1 and kinds.count("create batch") == 1  # never submitted twice
    assert chat_requests(fake) == 0  # and nothing went out as an ordinary request
    assert len(fake.files["file-0"].decode().splitlines()) == 3  # one batch: every neuron's prompt

    run = re.search(r"run (e-\w+)", explained.stdout)[1]  # type: ignore[index]
    scored = run_cli(
        "score", *batch, "--explanations", run, "--simulator", "openai:m", "--scorers", "simulation", env=ENV
    )
    assert scored.returncode == 0, scored.stderr
    kinds = [kind for _, kind, _ in fake.requests]
    assert kinds.count("create batch") == 2  # the score stage: one more batch
    assert chat_requests(fake) == 0
    score_run = re.search(r"run (s-\w+)", scored.stdout)[1]  # type: ignore[index]
    simulations = storage.read_parquet(contract.simulations_path(score_run)).to_pandas()
    assert len(simulations) > 0 and simulations["failure_reason"].isna().all()
    control = storage.read_parquet(contract.control_path(score_run)).to_pandas()
    # one batch: every excerpt of the neurons and of their permutation partners, a few per request
    excerpts = set(simulations["sequence_id"]) | set(control["sequence_id"])
    lines = fake.files["file-2"].decode().splitlines()
    asked = [json_request_excerpts(json.loads(line)["body"]["messages"][-1]["content"]) for line in lines]
    assert all(1 <= len(request) <= JSON_EXCERPTS_PER_REQUEST for request in asked)
    assert {tuple(tokens) for request in asked for tokens in request} == {
        tuple(tokens_of(storage, sequence_id)) for sequence_id in excerpts
    }
    assert len(lines) < len(excerpts)

    again = run_cli(
        "score", *batch, "--explanations", run, "--simulator", "openai:m", "--scorers", "simulation", env=ENV
    )
    assert again.returncode == 0, again.stderr
    assert [kind for _, kind, _ in fake.requests].count("create batch") == 2 and chat_requests(fake) == 0
    assert_no_secret(root, waited.stdout + waited.stderr, explained.stdout + explained.stderr, scored.stdout)


def test_a_budget_in_batch_mode_refuses_with_a_reason_and_a_rerun_asks_only_for_the_rest(
    root: str, server: tuple[FaultyServer, str]
) -> None:
    fake, url = server
    batch = ["--root", root, "--base-url", url, "--batch-api", "--poll-seconds", "0.05", "--explainer", "openai:m"]
    tight = run_cli("explain", *batch, "--neurons", NEURONS, *ONE, "--budget-tokens", "6000", env=ENV)
    assert tight.returncode == 0, tight.stderr
    counts = re.search(r"(\d+) explained, (\d+) failed", tight.stdout)
    assert counts and int(counts[1]) >= 1 and int(counts[2]) >= 1, tight.stdout
    storage = Storage.open(root)
    [run] = storage.list("explanations")
    table = storage.read_parquet(contract.explanations_path(run)).to_pandas()
    refused = table[table["explanation"].isna()]
    assert refused["failure_reason"].str.startswith("budget exhausted").all()
    first = fake.files["file-0"].decode().splitlines()
    assert len(first) == int(counts[1])  # refused prompts were never submitted
    assert fake.tokens_served <= 6000

    more = run_cli("explain", *batch, "--neurons", NEURONS, *ONE, env=ENV)
    assert more.returncode == 0, more.stderr
    assert "3 explained, 0 failed" in more.stdout
    inputs = [submitted["input_file_id"] for submitted in fake.batches.values()]
    assert len(inputs) == 2
    asked = fake.files[inputs[1]].decode().splitlines()
    assert len(asked) == int(counts[2])  # the second batch: only the refused prompts
    assert chat_requests(fake) == 0
    assert_no_secret(root, tight.stdout + tight.stderr, more.stdout + more.stderr)


def test_yes_no_scorers_read_top_logprobs_and_auto_says_why(root: str, server: tuple[FaultyServer, str]) -> None:
    fake, url = server
    api = ["--root", root, "--base-url", url]
    explained = run_cli("explain", *api, "--neurons", NEURONS, *ONE, "--explainer", "openai:m", env=ENV)
    assert explained.returncode == 0, explained.stderr
    run = re.search(r"run (e-\w+)", explained.stdout)[1]  # type: ignore[index]
    storage = Storage.open(root)

    # a server without logprobs: naming a Yes/No scorer is one clear line; auto leaves them out and says why
    named = run_cli("score", *api, "--explanations", run, "--simulator", "openai:m", "--scorers", "fuzzing", env=ENV)
    assert_clean_failure(named, "--scorers fuzzing: openai:m@")
    assert "no usable top_logprobs" in named.stderr
    auto = run_cli("score", *api, "--explanations", run, "--simulator", "openai:m", env=ENV)
    assert auto.returncode == 0, auto.stderr
    score_run = re.search(r"run (s-\w+)", auto.stdout)[1]  # type: ignore[index]
    manifest = storage.read_json(f"{contract.scores_path(score_run)}/_manifest.json")
    assert manifest["parameters"]["scorers"] == ["simulation", "embedding"]
    assert "auto, without fuzzing" in manifest["scorer_choice"] and "top_logprobs" in manifest["scorer_choice"]

    # a server with them: detection and fuzzing read P(Yes), variants summed
    fake.choice_logprobs = yes_if_numbers
    before = chat_requests(fake)
    both = run_cli(
        "score", *api, "--explanations", run, "--simulator", "openai:m", "--scorers", "detection,fuzzing", env=ENV
    )
    assert both.returncode == 0, both.stderr
    score_run = re.search(r"run (s-\w+)", both.stdout)[1]  # type: ignore[index]
    scores = storage.read_parquet(contract.scores_path(score_run)).to_pandas()
    assert scores["detection_auc"].notna().any() and scores["fuzzing_auc"].notna().any()
    assert scores["detection_auc"].dropna().between(0, 1).all()
    asked = [body for _, _, body in fake.requests[before:] if body.get("logprobs")]
    assert asked and all(b["max_tokens"] == 1 and b["top_logprobs"] == 20 for b in asked)
    manifest = storage.read_json(f"{contract.scores_path(score_run)}/_manifest.json")
    assert "returns top_logprobs" in manifest["scorer_choice"]
    auto_again = run_cli("score", *api, "--explanations", run, "--simulator", "openai:m", env=ENV)
    assert auto_again.returncode == 0, auto_again.stderr
    score_run = re.search(r"run (s-\w+)", auto_again.stdout)[1]  # type: ignore[index]
    manifest = storage.read_json(f"{contract.scores_path(score_run)}/_manifest.json")
    assert manifest["parameters"]["scorers"] == ["simulation", "embedding", "fuzzing"]
    assert_no_secret(root, explained.stdout, auto.stdout, both.stdout, named.stderr)


def test_run_with_the_batch_api_sends_one_batch_per_llm_stage(
    extracted: Path, root: str, server: tuple[FaultyServer, str]
) -> None:
    fake, url = server
    run = [
        "run", "--root", root, "--source", str(extracted.parent / "wiki.jsonl"), "--extract-layers", "3",
        "--limit", "64", "--top-k", "8", "--random-k", "3", "--layers", "3", "--neurons", "3", "--samples", "1",
        "--explainer", "openai:m", "--simulator", "openai:m", "--scorers", "simulation", "--base-url", url,
        "--batch-api", "--poll-seconds", "0.05",
    ]  # fmt: skip
    first = run_cli(*run, env=ENV)
    assert first.returncode == 0, first.stderr
    assert "table:" in first.stdout  # published
    kinds = [kind for _, kind, _ in fake.requests]
    assert kinds.count("create batch") == 2 and chat_requests(fake) == 0  # explain, then score: a batch each
    again = run_cli(*run, env=ENV)  # everything done: no batch, no request
    assert again.returncode == 0, again.stderr
    assert [kind for _, kind, _ in fake.requests].count("create batch") == 2 and chat_requests(fake) == 0
    assert_no_secret(root, first.stdout + first.stderr, again.stdout + again.stderr)


def test_all_at_once_over_an_api_reads_echoed_prompt_logprobs_and_refuses_shifted_ones(
    root: str, server: tuple[FaultyServer, str]
) -> None:
    fake, url = server
    api = ["--root", root, "--base-url", url]
    explained = run_cli("explain", *api, "--neurons", NEURONS, *ONE, "--explainer", "openai:m", env=ENV)
    assert explained.returncode == 0, explained.stderr
    run = re.search(r"run (e-\w+)", explained.stdout)[1]  # type: ignore[index]
    score = ["score", *api, "--explanations", run, "--simulator", "openai:m", "--scorers", "simulation"]
    template = ["--llm-tokenizer", "qwen2.5-coder-0.5b"]

    untemplated = run_cli(*score, "--method", "all-at-once", env=ENV)
    assert_clean_failure(untemplated, "--method all-at-once: openai:m: needs the model's chat template")
    fake.prompt_logprobs = "shifted"  # as llama.cpp's server echoes them: refused, never scored
    shifted = run_cli(*score, "--method", "all-at-once", *template, env=ENV)
    assert_clean_failure(shifted, "shifted by one position")
    storage = Storage.open(root)
    assert not storage.list("scores")

    fake.prompt_logprobs = "aligned"
    before = len(fake.requests)
    scored = run_cli(*score, *template, env=ENV)  # --method auto: all-at-once, the server allows it
    assert scored.returncode == 0, scored.stderr
    score_run = re.search(r"run (s-\w+)", scored.stdout)[1]  # type: ignore[index]
    manifest = storage.read_json(f"{contract.scores_path(score_run)}/_manifest.json")
    assert manifest["parameters"]["method"] == "all-at-once"
    assert "method all-at-once (auto" in manifest["scorer_choice"]
    simulations = storage.read_parquet(contract.simulations_path(score_run)).to_pandas()
    assert simulations["failure_reason"].isna().all()
    # the fake gives 9 (p .8) or 0 (p .8) beside 5 (p .1): expected 8.56 on a token with a digit, else 0.56
    for _, row in simulations.iterrows():
        tokens = tokens_of(storage, row["sequence_id"])
        wanted = [(9 * 0.8 + 5 * 0.1) / 0.9 if any(c.isdigit() for c in t) else 0.5 / 0.9 for t in tokens]
        assert row["simulated_activations"] == pytest.approx(wanted, abs=1e-4)
    asked = [body for _, kind, body in fake.requests[before:] if kind == "completions"]
    readouts = [body for body in asked if isinstance(body["prompt"], list)]
    control = storage.read_parquet(contract.control_path(score_run)).to_pandas()
    excerpts = set(simulations["sequence_id"]) | set(control["sequence_id"])
    asked_excerpts = sum(len(body["prompt"]) for body in readouts)
    # every scored excerpt read, none twice (one explanation text here: the cache has the repeats)
    assert len(excerpts) <= asked_excerpts <= len(simulations) + len(control)
    assert len(readouts) < asked_excerpts  # excerpts go as lists of prompts: one request per call
    assert chat_requests(fake) == 3  # the explanations only: nothing went out as a chat request for simulation
    assert_no_secret(root, scored.stdout + scored.stderr)


def tagged_answer(messages: list[dict[str, str]]) -> str:
    """An explanation that names the prompt it answers (so each neuron's simulation requests are
    told apart at the server); simulations as `answer`'s."""
    last = messages[-1]["content"]
    if is_json_simulation(last):
        return answer(messages)
    return f"the main thing this neuron does is find numbers ({zlib.crc32(last.encode()):08x})."


def test_an_api_simulator_scores_neurons_in_parallel_within_its_concurrency_limit(root: str, tmp_path: Path) -> None:
    """At --concurrency 1 a layer's neurons are scored one by one; at 8 several at once, their
    requests overlapping at the server and never more than 8 in flight; the scores are the same."""
    fake = FaultyServer(tagged_answer)
    fake.latency = 0.2
    with serve(fake) as url:
        api = ["--base-url", url]
        explained = run_cli(
            "explain", "--root", root, *api, "--neurons", NEURONS, *ONE, "--explainer", "openai:m", env=ENV
        )
        assert explained.returncode == 0, explained.stderr
        run = re.search(r"run (e-\w+)", explained.stdout)[1]  # type: ignore[index]
        copy = str(tmp_path / "copy")
        shutil.copytree(root, copy)  # the same explanations; an LLM cache of none of the scoring
        tables, overlaps = [], []
        for folder, limit in ((root, "1"), (copy, "8")):
            fake.spans, fake.max_in_flight = [], 0
            scored = run_cli(
                "score", "--root", folder, *api, "--explanations", run, "--simulator", "openai:m",
                "--scorers", "simulation", "--method", "json", "--concurrency", limit, env=ENV,
            )  # fmt: skip
            assert scored.returncode == 0, scored.stderr
            assert 1 <= fake.max_in_flight <= int(limit)
            tag = [re.search(r"\(([0-9a-f]{8})\)", text)[1] for _, _, text in fake.spans]  # type: ignore[index]
            overlaps.append(
                any(a[0] < b[1] and b[0] < a[1] and tag[i] != tag[j]
                    for i, a in enumerate(fake.spans) for j, b in enumerate(fake.spans) if i < j)
            )  # fmt: skip
            score_run = re.search(r"run (s-\w+)", scored.stdout)[1]  # type: ignore[index]
            scores = Storage.open(folder).read_parquet(contract.scores_path(score_run)).to_pandas()
            tables.append(scores.sort_values(["layer", "neuron", "explanation_id"]).reset_index(drop=True))
    assert overlaps == [False, True]  # one by one, then two neurons' requests in flight at once
    assert tables[0].equals(tables[1])


def tokens_of(storage: Storage, sequence_id: int) -> list[str]:
    from neuronatlas.datasets import corpus

    [name] = storage.list("corpus")
    table = storage.read_parquet(corpus.corpus_path(name)).to_pandas()
    return list(table.loc[table["sequence_id"] == sequence_id, "tokens"].iloc[0])


def test_the_large_atlas_profile_simulates_the_valid_split_within_its_token_budget(
    extracted: Path, root: str, server: tuple[FaultyServer, str]
) -> None:
    """`run --config large-atlas` over a server with a prefix cache (tokens counted as Qwen2.5's
    server counts them): only valid records simulated, all at once; the headline score and its null
    exist, the calibrated and test scores are null; what the server reported as cached is in the
    run record, and the tokens it computed stay under 4,000 per neuron."""
    from neuronatlas.adapters.models import load_tokenizer, resolve_model

    fake, url = server
    tokenizer = load_tokenizer(resolve_model("qwen2.5-coder-0.5b"))
    fake.tokenize = lambda prompt: (
        tokenizer.encode(prompt)
        if isinstance(prompt, str)
        else tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    )
    fake.prompt_logprobs = "aligned"
    run = [
        "run", "--config", "large-atlas", "--root", root, "--source", str(extracted.parent / "wiki.jsonl"),
        "--extract-layers", "3", "--limit", "64", "--layers", "3", "--neurons", "3", "--explainer", "openai:m",
        "--simulator", "openai:m", "--base-url", url, "--llm-tokenizer", "qwen2.5-coder-0.5b",
    ]  # fmt: skip
    result = run_cli(*run, env=ENV)
    assert result.returncode == 0, result.stderr
    storage = Storage.open(root)
    [record] = [storage.read_json(f"runs/{name}") for name in storage.list("runs") if name.endswith(".json")]
    stages = {stage["stage"]: stage for stage in record["stages"]}
    score_run = stages["score"]["run_id"]
    manifest = storage.read_json(f"{contract.scores_path(score_run)}/_manifest.json")
    assert manifest["parameters"]["splits"] == "valid" and manifest["parameters"]["method"] == "all-at-once"
    simulations = storage.read_parquet(contract.simulations_path(score_run)).to_pandas()
    assert set(simulations["split"]) == {"valid"} and simulations["failure_reason"].isna().all()
    scores = storage.read_parquet(contract.scores_path(score_run)).to_pandas()
    assert len(scores) == 3 and scores["top_and_random_score"].notna().all() and scores["null_score"].notna().all()
    assert scores["test_score"].isna().all() and scores["calibration_score"].isna().all()
    usage = [stages[stage]["llm"] for stage in ("explain", "score")]
    assert sum(u["cached_prompt_tokens"] for u in usage) == fake.cached_served > 0
    computed = sum(u["prompt_tokens"] - u["cached_prompt_tokens"] for u in usage)
    assert computed / 3 <= 4000
    assert_no_secret(root, result.stdout + result.stderr)


FAULTS = {"429": 0.1, "500": 0.1, "slow": 0.1, "reset": 0.1, "cut": 0.1, "garbage": 0.1}
"""Each way a request can fail, on 10% of requests each (seeded): 429 with Retry-After, 500, a
timeout, a dropped connection, an answer cut mid-body, a body that is not JSON."""


def answered_twice(fake: FaultyServer) -> list[str]:
    """Requests sent again after the same body had been answered (the start of their last message)."""
    answered: set[str] = set()
    again = []
    for _, behaviour, body in sorted(fake.requests, key=lambda r: r[0]):
        key = json.dumps(body, sort_keys=True)
        if key in answered:
            again.append(str(body.get("messages", [{}])[-1].get("content", ""))[:200])
        if behaviour == "ok":
            answered.add(key)
    return again


BATTERY_NEURONS = 100 if os.environ.get("NEURONATLAS_BATTERY") == "full" else 12
"""The full battery (`make bench`) runs 100 neurons; the test suite a seeded subset."""


def test_llm_faults_at_scale_end_in_answers_or_reasons_and_reruns_converge(root: str) -> None:
    """Neurons explained and scored over a server failing 60% of requests (10% each way):
    every neuron ends explained or a failure row with its reason, reruns converge, nothing is
    asked again once answered, and a run's budget is never exceeded."""
    fake = FaultyServer(answer)
    fake.fault_rates, fake.slow_seconds = FAULTS, 5.0  # past --timeout-s 4: a busy machine's answers are not
    storage = Storage.open(root)
    with serve(fake) as url:
        api = ["--root", root, "--base-url", url, "--timeout-s", "4", "--max-retries", "3", "--concurrency", "16"]
        explain = ["explain", *api, "--layers", "3", "--neurons", str(BATTERY_NEURONS), *ONE, "--explainer", "openai:m"]
        runs = []
        for _ in range(8):
            runs.append(run_cli(*explain, env=ENV, timeout=600))
            assert runs[-1].returncode == 0, runs[-1].stderr
            run = re.search(r"run (e-\w+)", runs[-1].stdout)[1]  # type: ignore[index]
            table = storage.read_parquet(contract.explanations_path(run)).to_pandas()
            assert len(table) == BATTERY_NEURONS
            failed = table[table["explanation"].isna()]
            assert (failed["failure_reason"].str.len() > 0).all()  # a reason, never a placeholder
            assert not table["explanation"].fillna("").str.contains("error|Error|{", regex=True).any()
            if failed.empty:
                break
        assert failed.empty, f"{len(failed)} neurons still failing after {len(runs)} runs"
        assert len(runs) > 1 and re.search(r"[1-9]\d* failed", runs[0].stdout)  # the faults did make failures
        assert answered_twice(fake) == []

        score = ["score", *api, "--explanations", run, "--simulator", "openai:m", "--scorers", "simulation"]
        score += ["--method", "json"]
        for attempt in range(12):
            budget = 100_000 if attempt == 0 else 2_000_000  # the first run runs out of it
            scored = run_cli(*score, "--budget-tokens", str(budget), env=ENV, timeout=600)
            assert scored.returncode == 0, scored.stderr
            score_run = re.search(r"run (s-\w+)", scored.stdout)[1]  # type: ignore[index]
            manifest = storage.read_json(f"{contract.scores_path(score_run)}/_manifest.json")
            usage = manifest["llm_last_run"]
            assert usage["prompt_tokens"] + usage["completion_tokens"] <= budget
            simulations = storage.read_parquet(contract.simulations_path(score_run)).to_pandas()
            missing = simulations[simulations["simulated_activations"].isna()]
            assert (missing["failure_reason"].str.len() > 0).all()
            if attempt == 0:
                assert missing["failure_reason"].str.startswith("budget exhausted").any()
            if missing.empty:
                break
        assert missing.empty, f"{len(missing)} excerpts still failing"
        assert answered_twice(fake) == []
        scores = storage.read_parquet(contract.scores_path(score_run)).to_pandas()
        assert scores["top_and_random_score"].notna().sum() > 0
        assert (scores["top_and_random_score"].isna() == scores["failure_reason"].notna()).all()
