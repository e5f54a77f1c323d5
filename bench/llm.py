"""The LLM stages over an OpenAI-compatible API: throughput, tokens per neuron for the default
settings and the `large-atlas` profile, their oracle results, and what an atlas of real size would
cost.

    .venv/bin/python bench/llm.py [--neurons 4] [--latency 0.2] [--slow-latency 1.0]
        [--server-neurons 1] [--usd-per-m-in 0.15] [--usd-per-m-out 0.6] [--tokens-per-second 20000]
        [--oracle-simulator local:qwen2.5-coder-1.5b] [--oracle-method line-by-line]
        [--stage-neurons 16] [--skip throughput,stage,oracles,server]

1. **Throughput** against a fake server answering after `--latency` seconds (an asyncio server in
   a process of its own, as real servers are): requests per second achieved by the `openai:`
   backend at several concurrency limits, against the ideal (concurrency / latency), and the
   client's CPU time per request, which bounds the rate a small machine can reach; side by side,
   the `openai` client's own transport (what the backend used before its aiohttp one) sending the
   same number of requests at the same limit; then at `--slow-latency` (a generation's latency)
   with higher limits. Target: 0.8 of the ideal.
2. **Tokens and requests per neuron**, per stage and scorer, for each profile (the default
   settings: 20 top and 15 random records; `large-atlas`: 12 and 9, the valid split simulated),
   on a real root: the explain and score flows run against the fake server, which counts tokens
   as a Qwen2.5 server would (its chat template and tokenizer) and reports prefix-cache hits as
   vLLM's automatic prefix caching would (16-token blocks seen before); the numbers are those
   the stages' usage manifests record from the server's `usage`.
   Then **the score stage's own rate**: `simulate_and_score` with fuzzing (one-token readouts) on
   `--stage-neurons` neurons at `--latency`, at concurrency limits 1, 8 and 32, a fresh copy of
   the root each time: a layer's neurons are scored in parallel threads, so the stage keeps the
   limit's requests in flight.
3. **Oracle neurons** (their correct explanation against the permutation null) under each
   profile's record counts and splits, simulated by `--oracle-simulator` in process: does the
   profile keep the score's power to tell a right explanation from a wrong one?
4. **A real server**: llama-cpp-python's server with the shipped Qwen2.5-Coder-0.5B GGUF on this
   machine's CPU: explanations and fuzzing readouts of `--server-neurons` neurons, timed, with
   the tokens the server reported.
5. **Projection** per profile: the cost of 1,000 neurons at the stated prices (and at Batch API
   prices, half), and the hours for all 46,080 neurons of SmolLM2-135M and 307,200
   GPT-2-XL-sized neurons at a stated server throughput (`--tokens-per-second`, computed tokens:
   uncached prompt + completion).

Results go to bench/results/llm-<time>.json.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fake server lives with the tests

NEURON_COUNTS = {"SmolLM2-135M (30 x 1,536)": 46_080, "GPT-2 XL (48 x 6,400)": 307_200}


LATENCY_SERVER = """
import asyncio, json, sys
import uvicorn
latency = float(sys.argv[2])
text = "the main thing this neuron does is find years."
choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
usage = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}
body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice],
    "usage": usage}).encode()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(latency)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
"""
"""An OpenAI-compatible chat answer after a fixed latency, from an asyncio server in a process of
its own (as vLLM and llama.cpp answer: not competing with the client for one interpreter)."""


def throughput(latency: float, limits: list[int]) -> list[dict[str, Any]]:
    """Per concurrency limit: the backend's rate (its aiohttp transport) and, side by side in
    the same run, the `openai` client's own transport sending the same bodies at the same limit."""
    import httpx

    from neuronatlas.adapters.openai_llm import OpenAIBackend
    from neuronatlas.core.llm import GenerationParams
    from neuronatlas.core.prompts import ActivationRecord, explainer_prompt
    from tests.support import free_port

    prompt = explainer_prompt([ActivationRecord([" The", " 1932"], [0.0, 4.0])])
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", LATENCY_SERVER, str(port), str(latency)])
    url = f"http://127.0.0.1:{port}/v1"
    rows = []
    try:
        for _ in range(100):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        for limit in limits:
            requests = 6 * limit
            backend = OpenAIBackend("m", base_url=url, concurrency=limit, timeout_s=30 + latency)
            # warm: imports, and the pool's connections (kept across calls, as a stage's are)
            backend.generate([prompt] * limit, GenerationParams(max_tokens=20))
            started, cpu = time.perf_counter(), time.process_time()
            answers = backend.generate([prompt] * requests, GenerationParams(max_tokens=20))
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert all(a.failure is None for a in answers), [a.failure for a in answers if a.failure][:3]
            client_seconds, client_cpu = openai_client_rate(url, limit, requests)
            achieved, ideal = requests / seconds, limit / latency
            rows.append(
                {
                    "concurrency": limit,
                    "requests": requests,
                    "achieved_rps": achieved,
                    "ideal_rps": ideal,
                    "ratio": achieved / ideal,
                    "client_cpu_ms_per_request": 1000 * cpu / requests,
                    "openai_client_ratio": requests / client_seconds / ideal,
                    "openai_client_cpu_ms_per_request": 1000 * client_cpu / requests,
                }
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def openai_client_rate(url: str, limit: int, requests: int) -> tuple[float, float]:
    """Seconds and CPU seconds for the `openai` client (its low-level post, no body validation)
    to send `requests` chat bodies at most `limit` at a time: the transport the backend used
    before its own."""
    import asyncio

    from openai import AsyncOpenAI

    body = {"model": "m", "messages": [{"role": "user", "content": "x " * 400}], "max_tokens": 20}

    async def send() -> tuple[float, float]:
        async with AsyncOpenAI(api_key="unused", base_url=url, timeout=60.0) as client:
            semaphore = asyncio.Semaphore(limit)

            async def one() -> None:
                async with semaphore:
                    await client.post("/chat/completions", body=body, cast_to=object)

            await asyncio.gather(*(one() for _ in range(limit)))  # warm, as the backend is
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one() for _ in range(requests)))
            return time.perf_counter() - started, time.process_time() - cpu

    return asyncio.run(send())


def fake_answer(messages: list[dict[str, str]]) -> str:
    from tests.support import is_json_simulation, json_simulation_answer

    last = messages[-1]["content"]
    if is_json_simulation(last):
        return json_simulation_answer(last, lambda token: token.strip().isdigit())
    strongest = re.search(r'^"(.+?)"\t', last, re.MULTILINE)  # each neuron's own explanation
    return f"the main thing this neuron does is find numbers, years and {strongest[1] if strongest else 'dates'}."


def yes_no(messages: list[dict[str, str]]) -> dict[str, float]:
    excerpt = messages[-1]["content"].rsplit("\nExcerpt: ", 1)[-1]
    yes = 0.9 if any(c.isdigit() for c in excerpt) else 0.2
    return {"Yes": yes, "No": 1 - yes}


def qwen_ids() -> Any:
    """Token ids as a Qwen2.5 server counts them: chat messages through its chat template, texts
    (completions prompts, answers) as they are."""
    from neuronatlas.adapters.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("qwen2.5-coder-0.5b"))

    def ids(prompt: str | list[dict[str, str]]) -> list[int]:
        if isinstance(prompt, str):
            return list(tokenizer.encode(prompt))
        return list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False))

    return ids


def profile_root(workdir: Path, name: str, config: Any) -> str:
    """A root with the bench corpus and layer 3 extracted with the profile's record counts."""
    from neuronatlas.flows.extract import extract_activations
    from neuronatlas.flows.ingest import ingest_corpus
    from tests.support import small_jsonl_corpus

    root = str(workdir / name)
    source = small_jsonl_corpus(workdir / f"{name}.jsonl", documents=300)
    ingest_corpus(root=root, source=str(source))
    extract_activations(root=root, layers="3", limit=512, top_k=config.extract.top_k, random_k=config.extract.random_k)
    return root


def tokens_per_neuron(root: str, config: Any, neurons: int, stages: list[tuple[str, str]]) -> dict[str, Any]:
    """Explain `neurons` neurons with the profile's settings, then score them with each (scorer,
    method) of `stages`, against the fake server counting tokens as a Qwen2.5 server with a
    prefix cache would; per neuron, what each stage's usage manifest says the server reported."""
    from neuronatlas.config import LLMOptions
    from neuronatlas.flows.explain import explain_neurons
    from neuronatlas.flows.score import simulate_and_score
    from tests.fake_openai import FaultyServer, serve

    server = FaultyServer(fake_answer)
    server.choice_logprobs = yes_no
    server.prompt_logprobs = "aligned"
    server.tokenize = qwen_ids()
    rows: dict[str, Any] = {}
    with serve(server) as url:
        options = LLMOptions(base_url=url, concurrency=16, tokenizer="qwen2.5-coder-0.5b")

        def measure(name: str, result: Any) -> Any:
            usage = result.llm_usage
            rows[name] = {
                "requests": usage["calls"] / neurons,
                "prompt_tokens": usage["prompt_tokens"] / neurons,
                "cached_prompt_tokens": usage["cached_prompt_tokens"] / neurons,
                "uncached_prompt_tokens": (usage["prompt_tokens"] - usage["cached_prompt_tokens"]) / neurons,
                "completion_tokens": usage["completion_tokens"] / neurons,
            }
            return result

        explained = measure(
            f"explain ({config.explain.samples} sample)",
            explain_neurons(
                root=root,
                neurons=str(neurons),
                samples=config.explain.samples,
                prompt_format=config.explain.prompt_format,
                explainer="openai:m",
                options=options,
            ),
        )
        for scorer, method in stages:
            measure(
                f"score: {scorer}" + (f" ({method})" if scorer == "simulation" else ""),
                simulate_and_score(
                    root=root,
                    explanations=explained.run_id,
                    simulator="openai:m",
                    scorers=scorer,
                    method=method,
                    splits=config.score.splits,
                    options=options,
                ),
            )
    return rows


def stage_rate(workdir: Path, root: str, neurons: int, latency: float, limits: list[int]) -> list[dict[str, Any]]:
    """The score stage end to end (`simulate_and_score`, fuzzing: one-token readouts) on `neurons`
    neurons against the fake server answering after `latency`, at each concurrency limit, on a
    fresh copy of the root each time (no answer cached): neurons and requests per second."""
    from neuronatlas.config import LLMOptions
    from neuronatlas.flows.explain import explain_neurons
    from neuronatlas.flows.score import simulate_and_score
    from tests.fake_openai import FaultyServer, serve

    server = FaultyServer(fake_answer)
    server.choice_logprobs = yes_no
    rows = []
    with serve(server) as url:
        explained = explain_neurons(
            root=root, neurons=str(neurons), samples=1, explainer="openai:m", options=LLMOptions(base_url=url)
        )
        server.latency = latency
        for limit in limits:
            copy = workdir / f"stage-{limit}"
            shutil.copytree(root, copy)
            started = time.perf_counter()
            result = simulate_and_score(
                root=str(copy),
                explanations=explained.run_id,
                simulator="openai:m",
                scorers="fuzzing",
                options=LLMOptions(base_url=url, concurrency=limit),
            )
            seconds = time.perf_counter() - started
            requests = result.llm_usage["calls"]
            rows.append(
                {
                    "concurrency": limit,
                    "neurons": neurons,
                    "requests": requests,
                    "seconds": seconds,
                    "neurons_per_s": neurons / seconds,
                    "requests_per_s": requests / seconds,
                    "ratio": requests / seconds / (limit / latency),
                }
            )
            shutil.rmtree(copy, ignore_errors=True)
    return rows


def oracle_results(root: str, config: Any, simulator: str, method: str) -> list[dict[str, Any]]:
    """The oracle neurons' correct explanations against their nulls, with the profile's record
    counts and simulated splits, simulated by `simulator` in process."""
    import numpy as np
    import pyarrow.compute as pc

    from neuronatlas.adapters.llm import make_backend
    from neuronatlas.adapters.storage import Storage
    from neuronatlas.config import LLMOptions
    from neuronatlas.core.oracle import score_oracles
    from neuronatlas.core.scorers.simulation import SimulationScorer, simulated_splits
    from neuronatlas.datasets import corpus as corpus_contract
    from neuronatlas.flows.validity import ORACLE_WINDOWS

    storage = Storage.open(root)
    [corpus_id] = storage.list("corpus")
    corpus = storage.read_parquet(corpus_contract.corpus_path(corpus_id), schema=corpus_contract.SCHEMA)
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(corpus.num_rows, size=min(ORACLE_WINDOWS, corpus.num_rows), replace=False))
    sample = corpus.select(["sequence_id", "tokens"]).take(pc.cast(picked, "int64")).to_pydict()
    windows = [(int(s), tuple(t)) for s, t in zip(sample["sequence_id"], sample["tokens"], strict=True)]
    llm = make_backend(simulator, "--simulator", LLMOptions())
    try:
        scorer = SimulationScorer(llm, method, config.score.scale, splits=simulated_splits(config.score.splits))
        return score_oracles([scorer], windows, rng, config.extract.top_k, config.extract.random_k)
    finally:
        release = getattr(llm, "release", None)
        if release is not None:
            release()


def _is_probe(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or [{}]
    return "Is Paris in France?" in str(messages[-1].get("content", ""))


def real_server(workdir: Path, root: str, neurons: int) -> dict[str, Any]:
    """Explanations and fuzzing readouts through llama-cpp-python's server on this CPU."""
    import httpx

    from neuronatlas.adapters.models import resolve_model
    from neuronatlas.config import LLMOptions
    from neuronatlas.flows.explain import explain_neurons
    from neuronatlas.flows.score import simulate_and_score
    from tests.support import free_port

    source = resolve_model("qwen2.5-coder-0.5b")
    port = free_port()
    log = (workdir / "llama-server.log").open("w")
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(source.folder / str(source.gguf_file)),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--model_alias", "qwen-0.5b"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        options = LLMOptions(base_url=url, concurrency=1, timeout_s=600)
        rows = {}
        started = time.perf_counter()
        explained = explain_neurons(
            root=root, neurons=str(neurons), samples=1, explainer="openai:qwen-0.5b", seed=7, options=options
        )
        rows["explain"] = {"seconds": time.perf_counter() - started, **explained.llm_usage}
        started = time.perf_counter()
        scored = simulate_and_score(
            root=root, explanations=explained.run_id, simulator="openai:qwen-0.5b", scorers="fuzzing", options=options
        )
        rows["score: fuzzing"] = {"seconds": time.perf_counter() - started, **scored.llm_usage}
        for row in rows.values():
            row["requests_per_s"] = row["calls"] / row["seconds"]
            row["tokens_per_s"] = (row["prompt_tokens"] + row["completion_tokens"]) / row["seconds"]
        return rows
    finally:
        process.terminate()
        process.wait(timeout=30)


def table(header: list[str], rows: list[list[Any]]) -> None:
    """A markdown table, indented under its heading."""
    print("   | " + " | ".join(header) + " |")
    print("   |" + "---|" * len(header))
    for row in rows:
        print("   | " + " | ".join(str(cell) for cell in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--slow-latency", type=float, default=1.0)
    parser.add_argument("--server-neurons", type=int, default=1)
    parser.add_argument("--usd-per-m-in", type=float, default=0.15)
    parser.add_argument("--usd-per-m-out", type=float, default=0.60)
    parser.add_argument("--tokens-per-second", type=float, default=20_000.0)
    parser.add_argument("--stage-neurons", type=int, default=16, help="neurons the score stage's rate is measured on")
    parser.add_argument("--oracle-simulator", default="local:qwen2.5-coder-1.5b")
    parser.add_argument("--oracle-method", default="line-by-line")
    parser.add_argument("--oracle-profiles", default="default,large-atlas", help="profiles whose oracles are scored")
    parser.add_argument("--skip", default="", help="sections to leave out: throughput,stage,server,oracles")
    args = parser.parse_args()
    skip = set(args.skip.split(","))

    from neuronatlas.config import AtlasConfig
    from neuronatlas.runtime import configure_environment

    configure_environment()
    results: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(), "arguments": vars(args)}
    profiles = {"default": AtlasConfig(), "large-atlas": AtlasConfig.load("large-atlas")}
    if "throughput" not in skip:
        results["throughput"] = print_throughput(args.latency, args.slow_latency)
    workdir = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    try:
        roots = {name: profile_root(workdir, name, config) for name, config in profiles.items()}
        results["per_neuron"], totals = print_per_neuron(roots, profiles, args.neurons)
        if "stage" not in skip:
            results["stage"] = print_stage(workdir, roots["default"], args.stage_neurons, args.latency)
        if "oracles" not in skip:
            chosen = {name: profiles[name] for name in args.oracle_profiles.split(",")}
            results["oracles"] = print_oracles(roots, chosen, args.oracle_simulator, args.oracle_method)
        if "server" not in skip:
            results["llama_cpp_server"] = print_real_server(workdir, roots["default"], args.server_neurons)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["projection"] = print_projection(totals, args)
    out = ROOT / "bench" / "results" / f"llm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out}")


def print_throughput(latency: float, slow_latency: float) -> list[dict[str, Any]]:
    """Section 1: at the stated latency, then at a slower one where the ideal rate of a high
    concurrency limit stays within what this machine's CPUs can send."""
    results = []
    for seconds, limits in ((latency, [4, 16, 64, 128]), (slow_latency, [64, 128, 256])):
        print(f"1. throughput against the fake server, {seconds * 1000:.0f} ms per answer")
        rows = throughput(seconds, limits)
        results += [{"latency_s": seconds, **row} for row in rows]
        table(
            ["concurrency", "requests", "achieved req/s", "ideal req/s", "ratio", "client CPU ms/request",
             "openai client: ratio", "CPU ms/request"],
            [[r["concurrency"], r["requests"], f"{r['achieved_rps']:.1f}", f"{r['ideal_rps']:.1f}",
              f"{r['ratio']:.2f}", f"{r['client_cpu_ms_per_request']:.2f}", f"{r['openai_client_ratio']:.2f}",
              f"{r['openai_client_cpu_ms_per_request']:.2f}"] for r in rows],
        )  # fmt: skip
    print()
    return results


def print_stage(workdir: Path, root: str, neurons: int, latency: float) -> list[dict[str, Any]]:
    """Section 2b: the score stage's own rate, a layer's neurons scored in parallel."""
    print(f"2b. the score stage (fuzzing) on {neurons} neurons, {latency * 1000:.0f} ms per answer, a fresh root each")
    rows = stage_rate(workdir, root, neurons, latency, [1, 8, 32])
    table(
        ["concurrency", "requests", "seconds", "neurons/s", "requests/s", "of the ideal"],
        [[r["concurrency"], r["requests"], f"{r['seconds']:.1f}", f"{r['neurons_per_s']:.2f}",
          f"{r['requests_per_s']:.1f}", f"{r['ratio']:.2f}"] for r in rows],
    )  # fmt: skip
    print()
    return rows


def print_per_neuron(
    roots: dict[str, str], profiles: dict[str, Any], neurons: int
) -> tuple[dict[str, Any], dict[str, tuple[float, float, float]]]:
    """Section 2: each profile's stages per neuron, and (prompt, uncached prompt, completion)
    tokens of all its stages."""
    results, totals = {}, {}
    for name, config in profiles.items():
        default = name == "default"
        stages = [("simulation", "all-at-once"), ("simulation", "json")]
        stages += [("fuzzing", "auto"), ("detection", "auto")] if default else []
        print(
            f"2. per neuron, profile {name} ({config.extract.top_k} top and {config.extract.random_k} random "
            f"records, {config.explain.samples} sample, splits {config.score.splits}), {neurons} neurons, "
            "Qwen2.5 tokens and prefix cache as the server reports them"
        )
        rows = tokens_per_neuron(roots[name], config, neurons, stages)
        results[name] = rows
        table(
            ["stage", "requests", "prompt tokens", "of which cached", "uncached", "completion tokens"],
            [[stage, f"{r['requests']:.1f}", f"{r['prompt_tokens']:,.0f}", f"{r['cached_prompt_tokens']:,.0f}",
              f"{r['uncached_prompt_tokens']:,.0f}", f"{r['completion_tokens']:,.0f}"] for stage, r in rows.items()],
        )  # fmt: skip
        parts = [stage for stage in rows if stage.startswith("explain") or "all-at-once" in stage]
        parts += ["score: fuzzing"] if default else []  # what auto runs over a server with logprobs
        prompt, uncached = (sum(rows[p][key] for p in parts) for key in ("prompt_tokens", "uncached_prompt_tokens"))
        totals[name] = (prompt, uncached, sum(rows[p]["completion_tokens"] for p in parts))
        print(
            f"   all stages ({', '.join(parts)}): {prompt:,.0f} prompt tokens per neuron, {uncached:,.0f} not read "
            "from the prefix cache (target for large-atlas: <= 4,000)\n"
        )
    return results, totals


def print_oracles(roots: dict[str, str], profiles: dict[str, Any], simulator: str, method: str) -> dict[str, Any]:
    """Section 3: the oracle neurons under each profile's record counts and splits."""
    results = {}
    print(f"3. oracle neurons, simulated by {simulator} ({method}), real / null")
    for name, config in profiles.items():
        started = time.perf_counter()
        rows = oracle_results(roots[name], config, simulator, method)
        results[name] = {"seconds": time.perf_counter() - started, "rows": rows}
        print(f"   profile {name} ({time.perf_counter() - started:.0f} s):")
        table(
            ["oracle", "explanation", "simulation real", "null"],
            [[r["oracle"], r["explanation"], _fmt(r.get("simulation")), _fmt(r.get("simulation_null"))]
             for r in rows],
        )  # fmt: skip
    print()
    return results


def print_real_server(workdir: Path, root: str, neurons: int) -> dict[str, Any]:
    """Section 4: llama-cpp-python's server on this CPU."""
    print(f"4. llama-cpp-python's server, Qwen2.5-Coder-0.5B Q4_K_M, this CPU, {neurons} neuron(s)")
    served = real_server(workdir, root, neurons)
    table(
        ["stage", "requests", "prompt tokens", "completion tokens", "seconds", "req/s", "tokens/s"],
        [[name, r["calls"], f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}", f"{r['seconds']:.0f}",
          f"{r['requests_per_s']:.2f}", f"{r['tokens_per_s']:.0f}"] for name, r in served.items()],
    )  # fmt: skip
    print()
    return served


def print_projection(totals: dict[str, tuple[float, float, float]], args: argparse.Namespace) -> dict[str, Any]:
    """Section 5: cost of 1,000 neurons and hours for whole models, per profile."""
    print("5. projection (all stages per neuron; uncached prompt tokens are what a prefix-caching server computes)")
    results = {}
    for name, (prompt, uncached, completion) in totals.items():
        usd = (prompt * args.usd_per_m_in + completion * args.usd_per_m_out) / 1e6
        computed = uncached + completion
        print(f"   {name}: {prompt:,.0f} prompt ({uncached:,.0f} uncached) + {completion:,.0f} completion tokens")
        print(f"     1,000 neurons at ${args.usd_per_m_in}/M in, ${args.usd_per_m_out}/M out: ${1000 * usd:,.2f} "
              f"(Batch API, half price: ${500 * usd:,.2f}; before any cached-token discount)")  # fmt: skip
        hours = {model: count * computed / args.tokens_per_second / 3600 for model, count in NEURON_COUNTS.items()}
        results[name] = {
            "prompt_tokens": prompt, "uncached_prompt_tokens": uncached, "completion_tokens": completion,
            "usd_per_1000": 1000 * usd, "hours": hours,
        }  # fmt: skip
        for model, count in NEURON_COUNTS.items():
            print(f"     {model}: {count * prompt / 1e9:.2f} billion prompt tokens ({count * uncached / 1e9:.2f} "
                  f"uncached), {hours[model]:,.1f} h at {args.tokens_per_second:,.0f} computed tokens/s, "
                  f"${count * usd:,.0f}")  # fmt: skip
    return results


def _fmt(value: Any) -> str:
    return "null" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
