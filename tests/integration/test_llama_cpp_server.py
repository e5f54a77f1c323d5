"""The `openai:` backend against a real OpenAI-compatible server process: llama-cpp-python's server
serving the shipped Qwen2.5-Coder-0.5B GGUF (built portable, `CMAKE_ARGS=-DGGML_NATIVE=OFF`).
Only chat completions are used (explanations, JSON simulation): its prompt log-probs are shifted
by one position, which is why all-at-once simulation never goes through a server here."""

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from neuronatlas.adapters.llm import GenerationParams
from neuronatlas.adapters.models import resolve_model
from neuronatlas.adapters.openai_llm import OpenAIBackend
from neuronatlas.core.explain import Record, json_simulations
from neuronatlas.core.parsing import parse_explanation
from neuronatlas.core.prompts import ActivationRecord, explainer_prompt, json_simulation_prompt
from tests.support import free_port


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    source = resolve_model("qwen2.5-coder-0.5b")  # assembled from its chunks, checksum-verified
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(source.folder / str(source.gguf_file)),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--model_alias", "qwen-0.5b"]  # fmt: skip
    log = tmp_path_factory.mktemp("llama-server") / "server.log"  # a file: llama.cpp logs would fill a pipe
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start within 120 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_explains_through_a_real_server(server_url: str) -> None:
    backend = OpenAIBackend("qwen-0.5b", base_url=server_url, concurrency=1, timeout_s=120)
    record = ActivationRecord([" in", " 1932", " and", " in", " 1987"], [0.0, 4.0, 0.0, 0.0, 3.5])
    params = GenerationParams(n=2, temperature=0.0, max_tokens=30)
    [answer] = backend.generate([explainer_prompt([record])], params)
    assert answer.failure is None, answer.failure
    assert len(answer.texts) == 2
    explanation = parse_explanation(answer.texts[0])
    assert isinstance(explanation, str), explanation  # greedy: a sentence, the prefix stripped
    assert not explanation.lower().startswith("the main thing")
    assert answer.prompt_tokens > 2 * 300 and answer.completion_tokens > 0  # the server's own accounting, 2 requests
    assert backend.usage.calls == 2


def test_json_simulation_through_a_real_server_aligns_or_fails_with_a_reason(server_url: str) -> None:
    import numpy as np

    backend = OpenAIBackend("qwen-0.5b", base_url=server_url, concurrency=1, timeout_s=120)
    tokens = (" The", " bridge", " opened", " in", " 1932", ".")
    prompt = json_simulation_prompt("years written as four-digit numbers.", tokens, 9)
    [answer] = backend.generate([prompt], GenerationParams(n=1, temperature=0.0, max_tokens=200))
    assert answer.failure is None, answer.failure
    record = Record("top", "valid", 0, 1, tokens, np.zeros(len(tokens), dtype=np.float32))
    [simulation] = json_simulations([(answer.texts[0], None)], [record], 9)
    if simulation.values is None:  # a small model may break the format: then a reason, never zeros
        assert simulation.failure
    else:
        assert len(simulation.values) == len(tokens)
        assert ((simulation.values >= 0) & (simulation.values <= 9)).all()
