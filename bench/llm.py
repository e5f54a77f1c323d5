"""The LLM stages over an OpenAI-compatible API: throughput, tokens per neuron, and what an atlas
of real size would cost.

    .venv/bin/python bench/llm.py [--neurons 4] [--latency 0.2] [--server-neurons 1]
        [--usd-per-m-in 0.15] [--usd-per-m-out 0.6] [--tokens-per-second 20000]

1. **Throughput** against a fake OpenAI-compatible server answering after `--latency` seconds (an
   asyncio server in a process of its own, as real servers are): requests per second achieved by
   the `openai:` backend at several concurrency limits, against the ideal (concurrency /
   latency), and the client's CPU time per request, which bounds the rate a small machine can
   reach. Target: at least 0.8 of the ideal.
2. **Tokens and requests per neuron**, per stage and scorer, with the default extraction settings
   (20 top and 15 random records per neuron) on a real root: the explain and score flows run
   against the fake server (answers of the right shape), every request body is recorded, and its
   prompt tokens are counted with the shipped Qwen2.5 tokenizer's chat template (what a Qwen
   server would bill); completion tokens are the answers' tokens.
3. **A real server**: llama-cpp-python's server with the shipped Qwen2.5-Coder-0.5B GGUF on this
   machine's CPU: explanations and fuzzing readouts of `--server-neurons` neurons, timed, with
   the tokens the server reported.
4. **Projection**: the cost of 1,000 neurons at the stated prices (and at Batch API prices, half),
   and the hours for all 46,080 neurons of SmolLM2-135M and 307,200 GPT-2-XL-sized neurons at a
   stated server throughput (`--tokens-per-second`, prompt + completion).

Results go to bench/results/llm-<time>.json.
"""

import argparse
import json
import os
import platform
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
            backend.generate([prompt], GenerationParams(max_tokens=20))  # warm: client, pool
            started, cpu = time.perf_counter(), time.process_time()
            answers = backend.generate([prompt] * requests, GenerationParams(max_tokens=20))
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert all(a.failure is None for a in answers), [a.failure for a in answers if a.failure][:3]
            achieved, ideal = requests / seconds, limit / latency
            rows.append(
                {
                    "concurrency": limit,
                    "requests": requests,
                    "achieved_rps": achieved,
                    "ideal_rps": ideal,
                    "ratio": achieved / ideal,
                    "client_cpu_ms_per_request": 1000 * cpu / requests,
                }
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def fake_answer(messages: list[dict[str, str]]) -> str:
    last = messages[-1]["content"]
    if last.startswith("Explanation:") and "\nTokens: " in last:
        tokens = json.loads(last.split("\nTokens: ", 1)[1])
        return json.dumps([{"token": t, "activation": 9 if t.strip().isdigit() else 0} for t in tokens])
    return "the main thing this neuron does is find numbers and years."


def yes_no(messages: list[dict[str, str]]) -> dict[str, float]:
    excerpt = messages[-1]["content"].rsplit("\nExcerpt: ", 1)[-1]
    yes = 0.9 if any(c.isdigit() for c in excerpt) else 0.2
    return {"Yes": yes, "No": 1 - yes}


def tokens_per_neuron(workdir: Path, neurons: int) -> dict[str, Any]:
    """Run explain and every scoring mode against the fake server; count what each sent."""
    from neuronatlas.adapters.models import load_tokenizer, resolve_model
    from neuronatlas.adapters.openai_llm import PROBE_TEXT
    from neuronatlas.config import LLMOptions
    from neuronatlas.flows.explain import explain_neurons
    from neuronatlas.flows.extract import extract_activations
    from neuronatlas.flows.ingest import ingest_corpus
    from neuronatlas.flows.score import simulate_and_score
    from tests.fake_openai import FaultyServer, serve
    from tests.support import small_jsonl_corpus

    tokenizer = load_tokenizer(resolve_model("qwen2.5-coder-0.5b"))

    def prompt_tokens(body: dict[str, Any]) -> int:
        if "prompt" in body:  # completions: raw texts, the template already in them
            return sum(len(tokenizer.encode(text)) for text in body["prompt"])
        ids = tokenizer.apply_chat_template(
            body["messages"], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return len(ids)

    def completion_tokens(body: dict[str, Any]) -> int:
        if "prompt" in body:
            return len(body["prompt"])
        return 1 if body.get("logprobs") else len(tokenizer.encode(fake_answer(body["messages"])))

    root = str(workdir / "atlas")
    source = small_jsonl_corpus(workdir / "wiki.jsonl", documents=300)
    ingest_corpus(root=root, source=str(source))
    extract_activations(root=root, layers="3", limit=512)
    server = FaultyServer(fake_answer)
    server.choice_logprobs = yes_no
    server.prompt_logprobs = "aligned"
    stages: dict[str, Any] = {}
    with serve(server) as url:
        options = LLMOptions(base_url=url, concurrency=16)
        with_template = options.model_copy(update={"tokenizer": "qwen2.5-coder-0.5b"})

        def measure(name: str, run: Any) -> Any:
            before = len(server.requests)
            result = run()
            bodies = [body for _, _, body in server.requests[before:] if "messages" in body or "prompt" in body]
            bodies = [body for body in bodies if body.get("prompt") != PROBE_TEXT and not _is_probe(body)]
            stages[name] = {
                "requests": len(bodies) / neurons,
                "prompt_tokens": sum(prompt_tokens(b) for b in bodies) / neurons,
                "completion_tokens": sum(completion_tokens(b) for b in bodies) / neurons,
            }
            return result

        selection = f"{neurons}"
        explained = measure(
            "explain (1 sample)",
            lambda: explain_neurons(root=root, neurons=selection, samples=1, explainer="openai:m", options=options),
        )
        for scorer, method in (("simulation", "json"), ("simulation", "all-at-once"), ("detection", "auto"),
                               ("fuzzing", "auto")):  # fmt: skip
            measure(
                f"score: {scorer}" + (f" ({method})" if scorer == "simulation" else ""),
                lambda scorer=scorer, method=method: simulate_and_score(
                    root=root,
                    explanations=explained.run_id,
                    simulator="openai:m",
                    scorers=scorer,
                    method=method,
                    options=with_template,
                ),
            )
    return stages


def _is_probe(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or [{}]
    return "Is Paris in France?" in str(messages[-1].get("content", ""))


def real_server(workdir: Path, neurons: int) -> dict[str, Any]:
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
        root = str(workdir / "atlas")
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
    parser.add_argument("--server-neurons", type=int, default=1)
    parser.add_argument("--usd-per-m-in", type=float, default=0.15)
    parser.add_argument("--usd-per-m-out", type=float, default=0.60)
    parser.add_argument("--tokens-per-second", type=float, default=20_000.0)
    args = parser.parse_args()

    from neuronatlas.runtime import configure_environment

    configure_environment()
    results: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count(), "arguments": vars(args)}

    print(f"1. throughput against the fake server, {args.latency * 1000:.0f} ms per answer")
    rows = throughput(args.latency, [4, 16, 64, 128])
    results["throughput"] = rows
    table(
        ["concurrency", "requests", "achieved req/s", "ideal req/s", "ratio", "client CPU ms/request"],
        [[r["concurrency"], r["requests"], f"{r['achieved_rps']:.1f}", f"{r['ideal_rps']:.1f}", f"{r['ratio']:.2f}",
          f"{r['client_cpu_ms_per_request']:.1f}"] for r in rows],
    )  # fmt: skip

    workdir = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    try:
        print(f"\n2. per neuron (default records: 20 top, 15 random), {args.neurons} neurons, Qwen2.5 tokenizer")
        stages = tokens_per_neuron(workdir, args.neurons)
        results["per_neuron"] = stages
        table(
            ["stage", "requests", "prompt tokens", "completion tokens"],
            [[name, f"{r['requests']:.1f}", f"{r['prompt_tokens']:,.0f}", f"{r['completion_tokens']:,.0f}"]
             for name, r in stages.items()],
        )  # fmt: skip
        profiles = {
            "explain, JSON simulation, fuzzing": ["explain (1 sample)", "score: simulation (json)", "score: fuzzing"],
            "explain, all-at-once simulation, fuzzing": [
                "explain (1 sample)", "score: simulation (all-at-once)", "score: fuzzing"
            ],
        }  # fmt: skip
        totals = {
            name: (sum(stages[s]["prompt_tokens"] for s in parts), sum(stages[s]["completion_tokens"] for s in parts))
            for name, parts in profiles.items()
        }

        print(f"\n3. llama-cpp-python's server, Qwen2.5-Coder-0.5B Q4_K_M, this CPU, {args.server_neurons} neuron(s)")
        served = real_server(workdir, args.server_neurons)
        results["llama_cpp_server"] = served
        table(
            ["stage", "requests", "prompt tokens", "completion tokens", "seconds", "req/s", "tokens/s"],
            [[name, r["calls"], f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}", f"{r['seconds']:.0f}",
              f"{r['requests_per_s']:.2f}", f"{r['tokens_per_s']:.0f}"] for name, r in served.items()],
        )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n4. projection")
    results["projection"] = {}
    for name, (prompt, completion) in totals.items():
        usd = (prompt * args.usd_per_m_in + completion * args.usd_per_m_out) / 1e6
        tokens = prompt + completion
        print(f"   {name}: {prompt:,.0f} prompt + {completion:,.0f} completion tokens per neuron")
        print(f"     1,000 neurons at ${args.usd_per_m_in}/M in, ${args.usd_per_m_out}/M out: ${1000 * usd:,.2f} "
              f"(Batch API, half price: ${500 * usd:,.2f})")  # fmt: skip
        hours = {model: count * tokens / args.tokens_per_second / 3600 for model, count in NEURON_COUNTS.items()}
        results["projection"][name] = {"tokens_per_neuron": tokens, "usd_per_1000": 1000 * usd, "hours": hours}
        for model, count in NEURON_COUNTS.items():
            print(f"     {model}: {count * tokens / 1e9:.2f} billion tokens, {hours[model]:,.1f} h at "
                  f"{args.tokens_per_second:,.0f} tokens/s, ${count * usd:,.0f}")  # fmt: skip

    out = ROOT / "bench" / "results" / f"llm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
