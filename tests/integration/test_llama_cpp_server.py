"""The `openai:` backend against a real OpenAI-compatible server process: llama-cpp-python's server
serving the shipped Qwen2.5-Coder-0.5B GGUF (built portable, `CMAKE_ARGS=-DGGML_NATIVE=OFF`).
Only chat completions are used (explanations, JSON simulation): its prompt log-probs are shifted
by one position, which is why all-at-once simulation never goes through a server here."""

from neuronatlas.adapters.openai_llm import OpenAIBackend
from neuronatlas.core.explain import Record, json_simulations
from neuronatlas.core.llm import GenerationParams
from neuronatlas.core.parsing import parse_explanation
from neuronatlas.core.prompts import ActivationRecord, explainer_prompt, json_simulation_prompt


def test_explains_through_a_real_server(llama_server: str) -> None:
    backend = OpenAIBackend("qwen-0.5b", base_url=llama_server, concurrency=1, timeout_s=120)
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


def test_json_simulation_through_a_real_server_aligns_or_fails_with_a_reason(llama_server: str) -> None:
    import numpy as np

    backend = OpenAIBackend("qwen-0.5b", base_url=llama_server, concurrency=1, timeout_s=120)
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
